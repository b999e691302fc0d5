//! The running monitor's seccomp filters (`vmm/src/seccomp.rs`): every boot of the test
//! suite runs under them (they are on by default); here, the filters' teeth. A thread
//! that makes a system call its filter does not allow kills the whole process with
//! SIGSYS, whether it is a vCPU thread or the main (event loop) thread; a boot that
//! exercises the most system calls (simulated SNP, a disk written and flushed) runs to
//! completion under the filters; `--seccomp off` runs without them and says so.
//! Needs /dev/kvm (fails loudly without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};

use cloister_tests::{cloister, sim_root};

fn run(args: &[&str]) -> Output {
    Command::new(cloister())
        .arg("run")
        .arg("--debug-exit")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start cloister")
}

#[test]
fn a_forbidden_system_call_kills_the_process() {
    for kind in ["vcpu", "vmm"] {
        let out = run(&[
            "--serial",
            "off",
            "--seccomp-violation",
            kind,
            "--cmdline",
            "cloister_test.exit=0",
        ]);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{kind} thread: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Without the filters the same system call is harmless.
    let out = run(&[
        "--serial",
        "off",
        "--seccomp",
        "off",
        "--seccomp-violation",
        "vcpu",
        "--cmdline",
        "cloister_test.exit=0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seccomp filters are off"), "{stderr}");
}

#[test]
fn a_busy_boot_runs_under_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let console = dir.path().join("console.log");
    let out = run(&[
        "--platform",
        "sim",
        "--sim-root",
        sim_root().to_str().unwrap(),
        "--disk",
        &format!("path={}", disk.display()),
        "--serial",
        &format!("file={}", console.display()),
        "--cmdline",
        "console=ttyS0 cloister_test.write=1:seccomp cloister_test.string_io=on",
    ]);
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}\n{}\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "CLOISTER-ATTEST: ok",
        "DISK READBACK OK",
        "STRING IO in ok",
        "CLOISTER-GUEST: PASS",
    ] {
        assert!(log.contains(want), "no {want:?}:\n{log}");
    }
}
