//! Every `cloister` subcommand whose standard output is a closed pipe or a full disk
//! ends quietly: no panic, no backtrace, the conventional status (141 = 128 + SIGPIPE for
//! a closed pipe, 1 with one line naming the error for a full disk). `run` keeps the guest
//! running when its console cannot be written and ends with the guest's status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cloister_tests::{cloister, workspace_root};

fn vector(rel: &str) -> String {
    workspace_root()
        .join("../shared/vectors/snp")
        .join(rel)
        .display()
        .to_string()
}

fn ovmf() -> PathBuf {
    PathBuf::from("/usr/share/ovmf/OVMF.fd")
}

/// The argument lists of each subcommand's normal use (each writes to stdout).
fn subcommands() -> Vec<Vec<String>> {
    let verify: Vec<String> = [
        "verify",
        "--report",
        &vector("milan-v2-vcek/report.bin"),
        "--vek",
        &vector("milan-v2-vcek/vek.der"),
        "--chain",
        &vector("milan-v2-vcek/chain.pem"),
        "--at",
        "2025-06-01T00:00:00Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut verify_json = verify.clone();
    verify_json.push("--json".into());
    assert!(
        ovmf().exists(),
        "Debian's OVMF is missing: run scripts/install-deps.sh"
    );
    let measure = vec![
        "measure".to_string(),
        "--mode".into(),
        "snp".into(),
        "--vcpus".into(),
        "1".into(),
        "--vcpu-type".into(),
        "EPYC-Milan".into(),
        "--ovmf".into(),
        ovmf().display().to_string(),
    ];
    let help = vec!["--help".to_string()];
    vec![verify, verify_json, measure, help]
}

fn with_stdout(args: &[String], stdout: Stdio) -> Output {
    Command::new(cloister())
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn dev_full() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open(Path::new("/dev/full"))
        .unwrap()
        .into()
}

#[test]
fn a_closed_pipe_ends_each_subcommand_quietly_with_141() {
    for args in subcommands() {
        let out = with_stdout(&args, closed_pipe());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        // clap's help ignores write errors (status 0); our own output says 141.
        let expected = if args[0] == "--help" { 0 } else { 141 };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {stderr}");
        assert!(
            stderr.is_empty(),
            "{args:?}: a closed pipe is not an error to report: {stderr}"
        );
    }
}

#[test]
fn a_full_disk_is_one_line_and_status_1() {
    for args in subcommands().into_iter().filter(|a| a[0] != "--help") {
        let out = with_stdout(&args, dev_full());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write the output") && stderr.contains("No space left"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// `run` with its serial console on a closed pipe or a full disk: the failure is reported
/// once, the guest runs on and ends the VM with its own status (here 7).
#[test]
fn run_with_a_broken_console_keeps_the_guest_and_its_status() {
    for (what, stdout) in [("closed pipe", closed_pipe()), ("full disk", dev_full())] {
        let args: Vec<String> = [
            "run",
            "--debug-exit",
            "--cmdline",
            "console=ttyS0 cloister_test.exit=7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = with_stdout(&args, stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(out.status.code(), Some(7), "{what}: {stderr}");
        assert_eq!(
            stderr.matches("serial console output failed").count(),
            1,
            "{what}: {stderr}"
        );
    }
}
