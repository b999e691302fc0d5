//! Writing a subcommand's result to standard output the way command-line tools do.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE and `println!`
//! panics. The subcommands write through [`print_stdout`] instead:
//! - a closed pipe (`cloister verify ... | head -c 10`) ends the command quietly with
//!   status 141 (128 + SIGPIPE), the status the shell shows for `ls | head`;
//! - any other write error (a full disk: `> /dev/full`) prints one line naming the error
//!   and ends with the monitor's error status 1.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Exit status after a write to a closed pipe: 128 + SIGPIPE.
pub const EXIT_BROKEN_PIPE: u8 = 128 + 13;

/// Exit status for an output that cannot be written (full disk, I/O error).
pub const EXIT_WRITE_ERROR: u8 = 1;

/// Writes `text` to standard output and flushes it. On failure returns the exit status
/// the command must end with, having said why on stderr when the reason is not a closed
/// pipe.
pub fn print_stdout(command: &str, text: &str) -> Result<(), ExitCode> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    written.map_err(|e| exit_for(command, &e))
}

fn exit_for(command: &str, e: &std::io::Error) -> ExitCode {
    if e.kind() == ErrorKind::BrokenPipe {
        ExitCode::from(EXIT_BROKEN_PIPE)
    } else {
        // stderr may be closed too; there is nowhere else to say it.
        let _ = writeln!(
            std::io::stderr(),
            "cloister {command}: cannot write the output: {e}"
        );
        ExitCode::from(EXIT_WRITE_ERROR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_quiet_141_and_other_errors_are_1() {
        let pipe = std::io::Error::from(ErrorKind::BrokenPipe);
        assert_eq!(exit_for("verify", &pipe), ExitCode::from(141));
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(exit_for("verify", &full), ExitCode::from(1));
    }
}
