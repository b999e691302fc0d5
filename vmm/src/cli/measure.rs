//! `cloister measure`.

use std::process::ExitCode;

/// Arguments of `cloister measure`.
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {}

/// Runs `cloister measure`.
pub fn main(_args: MeasureArgs) -> ExitCode {
    eprintln!("cloister measure: not implemented yet");
    ExitCode::from(2)
}
