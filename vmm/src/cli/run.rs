//! `cloister run`.

use std::process::ExitCode;

/// Arguments of `cloister run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs `cloister run`.
pub fn main(_args: RunArgs) -> ExitCode {
    eprintln!("cloister run: not implemented yet");
    ExitCode::from(2)
}
