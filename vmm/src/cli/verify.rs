//! `cloister verify`.

use std::process::ExitCode;

/// Arguments of `cloister verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

/// Runs `cloister verify`.
pub fn main(_args: VerifyArgs) -> ExitCode {
    eprintln!("cloister verify: not implemented yet");
    ExitCode::from(2)
}
