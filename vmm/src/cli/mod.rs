//! Front ends of the `cloister` subcommands. Each file owns one subcommand: its clap
//! arguments and its `main`, which turns errors into a message and an exit status.

pub mod id_block;
pub mod measure;
pub mod output;
pub mod probe;
pub mod run;
pub mod verify;
