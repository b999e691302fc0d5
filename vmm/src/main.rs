//! `cloister`: launch, measure and verify SEV-SNP confidential VMs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cloister_vmm::cli;

/// Cloister: a minimal KVM monitor for AMD SEV-SNP confidential VMs.
#[derive(Debug, Parser)]
#[command(name = "cloister", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a guest (the built-in test guest when no --kernel is given).
    Run(cli::run::RunArgs),
    /// Predict the SEV-SNP launch measurement of a guest, offline.
    Measure(cli::measure::MeasureArgs),
    /// Sign an ID block for a launch (for `run --id-block`), offline.
    IdBlock(cli::id_block::IdBlockArgs),
    /// Verify an SEV-SNP attestation report and apply a tenant policy.
    Verify(cli::verify::VerifyArgs),
    Probe(cli::probe::ProbeArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => cli::run::main(args),
        Command::Measure(args) => cli::measure::main(args),
        Command::IdBlock(args) => cli::id_block::main(args),
        Command::Verify(args) => cli::verify::main(args),
        Command::Probe(args) => cli::probe::main(args),
    }
}
