//! `cloister run` on bad input: every case must end with exit status 1 (the monitor's
//! own failures), a message on stderr that names the problem, and no panic.
//!
//! Which binary: `$CLOISTER_BIN` when set, else `cloister` in the same target directory
//! and profile as this test executable (`target/<profile>/cloister`), built first with
//! `cargo build -p cloister-vmm --bin cloister` for that profile (a no-op when it is up to
//! date), as `run_guest.rs` does.
//!
//! The permission case opens /dev/kvm (or, where that is world-accessible, a mode-000
//! stand-in) as a user who may not: `nobody` through `setpriv`, running a copy of the
//! monitor from a world-readable temporary directory, when the tests run as root;
//! otherwise the current user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cloister_tests::cloister;

/// The monitor's exit status for its own failures (vmm/src/cli/run.rs).
const VMM_ERROR: i32 = cloister_vmm::cli::run::EXIT_VMM_ERROR as i32;

fn run(args: &[&str]) -> Output {
    Command::new(cloister())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot start cloister")
}

/// Asserts a clean refusal: status 1, `needle` in stderr, no panic, no guest output.
fn assert_refused(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(VMM_ERROR),
        "args {args:?}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "args {args:?}: expected {needle:?} in stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "args {args:?} panicked:\n{stderr}"
    );
    assert!(
        !stdout.contains("CLOISTER-GUEST"),
        "args {args:?} booted a guest:\n{stdout}"
    );
}

fn temp_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn kernel_that_is_not_elf_or_bzimage() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = temp_file(dir.path(), "kernel.txt", &[b'x'; 4096]);
    assert_refused(
        &["--kernel", &kernel],
        &format!("kernel image {kernel} is neither an ELF vmlinux nor a bzImage"),
    );
    let empty = temp_file(dir.path(), "empty", b"");
    assert_refused(
        &["--kernel", &empty],
        "is neither an ELF vmlinux nor a bzImage",
    );
    // A truncated ELF header is a loader error, not a panic.
    let elf = temp_file(dir.path(), "cut.elf", b"\x7fELF\x02\x01\x01");
    assert_refused(
        &["--kernel", &elf],
        &format!("cannot load kernel image {elf}"),
    );
}

#[test]
fn unreadable_kernel_initrd_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope").to_str().unwrap().to_string();
    assert_refused(
        &["--kernel", &missing],
        &format!("cannot read kernel image {missing}: No such file or directory"),
    );
    assert_refused(
        &["--initrd", &missing],
        &format!("cannot read initrd {missing}: No such file or directory"),
    );
    let dir_path = dir.path().to_str().unwrap();
    assert_refused(
        &["--kernel", dir_path],
        &format!("cannot read kernel image {dir_path}"),
    );
    assert_refused(
        &["--disk", &format!("path={missing}")],
        &format!("cannot open disk image {missing}"),
    );
}

#[test]
fn initrd_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let initrd = temp_file(dir.path(), "big.cpio", &vec![0u8; 17 << 20]);
    assert_refused(
        &["--memory", "16M", "--initrd", &initrd],
        &format!("initrd {initrd} (17825792 bytes) does not fit in guest memory"),
    );
}

#[test]
fn memory_sizes() {
    assert_refused(
        &["--memory", "8M"],
        "memory size 8 MiB is too small: a guest needs at least 16 MiB",
    );
    assert_refused(&["--memory", "0"], "is too small");
    assert_refused(&["--memory", "65G"], "memory size 65 GiB is too large");
    assert_refused(&["--memory", "lots"], "memory size \"lots\" is not a size");
    assert_refused(&["--memory", "1.5G"], "is not a size");
    assert_refused(
        &["--memory", "99999999999999999999"],
        "too large to represent",
    );
    assert_refused(&["--memory", "16777217"], "is not a multiple of 4 KiB");
}

#[test]
fn cpu_counts() {
    for n in ["0", "255", "256", "100000"] {
        assert_refused(
            &["--cpus", n],
            &format!("--cpus {n} is out of range: give 1 to 254 vCPUs"),
        );
    }
}

#[test]
fn disk_and_serial_syntax() {
    assert_refused(
        &["--disk", "/tmp/x.img"],
        "--disk \"/tmp/x.img\": \"/tmp/x.img\" is not key=value",
    );
    assert_refused(
        &["--disk", "path=/tmp/x,readonly=maybe"],
        "readonly=maybe is not on or off",
    );
    assert_refused(&["--disk", "readonly=on"], "path=PATH is missing");
    assert_refused(
        &["--serial", "pty"],
        "--serial \"pty\" is not one of stdio, off, file=PATH",
    );
    assert_refused(
        &["--serial", "file="],
        "is not one of stdio, off, file=PATH",
    );
}

#[test]
fn cmdline_too_long() {
    let long = "x".repeat(5000);
    assert_refused(
        &["--cmdline", &long],
        "kernel command line is 5000 bytes long; this kernel accepts at most 2047",
    );
}

#[test]
fn kvm_device_missing_or_not_kvm() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("kvm").to_str().unwrap().to_string();
    assert_refused(
        &["--kvm-device", &missing],
        &format!("{missing} does not exist: this host has no KVM"),
    );
    let not_kvm = temp_file(dir.path(), "not-kvm", b"");
    assert_refused(
        &["--kvm-device", &not_kvm],
        &format!("{not_kvm} is not a KVM device"),
    );
}

#[test]
fn kvm_device_without_permission() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A device node nobody but its owner may open: /dev/kvm itself when it is not
    // world-accessible (as here), else a stand-in file with mode 000.
    let locked = dir.path().join("kvm-locked");
    std::fs::write(&locked, b"").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let kvm_mode = std::fs::metadata("/dev/kvm").map(|m| m.permissions().mode());
    let device = match kvm_mode {
        Ok(mode) if mode & 0o006 == 0 => PathBuf::from("/dev/kvm"),
        _ => locked,
    };
    let device = device.to_str().unwrap().to_string();
    // /proc/self belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0;
    if !root {
        assert_refused(
            &["--kvm-device", &device],
            &format!("no permission to open {device}"),
        );
        return;
    }
    // As root, drop to `nobody` with a copy of the binary it can execute, wherever the
    // checkout lives.
    let bin = dir.path().join("cloister");
    std::fs::copy(cloister(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["run", "--serial", "off", "--kvm-device", &device])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(VMM_ERROR), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("no permission to open {device}")),
        "stderr: {stderr}"
    );
}
