//! `cloister run --jail DIR --uid U --gid G` (`vmm/src/jail.rs`) with the built binary:
//! the jailed monitor boots the test guest as `nobody` (65534:65534), with a disk and on
//! the simulated SNP platform; inside the jail a host file it was not given does not
//! exist and no capability is left (the hidden `--jail-probe PATH` hook reports both);
//! the cgroup limits it prints are the ones the host's cgroup files hold while the VM
//! runs, and the cgroups are gone when it ends; SIGTERM reaches the jailed monitor
//! through its parent; bad input is refused naming the problem.
//!
//! Needs root (the jailer creates namespaces, mounts and cgroups) and /dev/kvm; fails
//! loudly without them, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cloister_tests::{cloister, workspace_root};

/// `nobody`.
const NOBODY: u32 = 65534;
/// Prefix of the `--jail-probe` lines.
const PROBE: &str = "cloister-jail-probe: ";
/// The monitor's exit status for its own failures.
const VMM_ERROR: i32 = cloister_vmm::cli::run::EXIT_VMM_ERROR as i32;
/// Longest a jailed run may take before a test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(120);

fn require_root_and_kvm() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the jail tests need root (the jailer creates namespaces, mounts and cgroups)"
    );
    assert!(
        Path::new("/dev/kvm").exists(),
        "the jail tests boot a VM and need /dev/kvm"
    );
}

/// `cloister run --jail DIR --uid 65534 --gid 65534 ARGS`.
fn jailed(dir: &Path, args: &[&str]) -> Command {
    require_root_and_kvm();
    let mut cmd = Command::new(cloister());
    cmd.arg("run")
        .arg("--debug-exit")
        .arg("--jail")
        .arg(dir)
        .args(["--uid", &NOBODY.to_string(), "--gid", &NOBODY.to_string()])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Output {
    cmd.output().expect("cannot start cloister")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `key=value` fields of the probe line starting `PROBE` + `first` (`path=` takes the
/// rest of the line).
fn probe_fields(stderr: &str, first: &str) -> BTreeMap<String, String> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(PROBE).filter(|l| l.starts_with(first)))
        .unwrap_or_else(|| panic!("no {PROBE}{first}... line in:\n{stderr}"));
    let (line, path) = match line.split_once(" path=") {
        Some((head, path)) => (head, Some(path)),
        None => (line, None),
    };
    let mut fields: BTreeMap<String, String> = line
        .split_whitespace()
        .filter_map(|f| f.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(path) = path {
        fields.insert("path".into(), path.to_string());
    }
    fields
}

/// A file owned by the jailed user, as a disk or console the monitor may write.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn a_jailed_monitor_boots_the_test_guest_as_nobody() {
    let jail = tempfile::tempdir().unwrap();
    let out = output(jailed(
        jail.path(),
        &[
            "--serial",
            "stdio",
            "--cmdline",
            "cloister_test.exit=0",
            "--jail-probe",
            "/dev/kvm",
        ],
    ));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    assert!(stdout.contains("CLOISTER-GUEST: PASS"), "{stdout}");
    let probe = probe_fields(&stderr, "open=");
    assert_eq!(probe["uid"], NOBODY.to_string(), "{stderr}");
    assert_eq!(probe["gid"], NOBODY.to_string(), "{stderr}");
    // The KVM node the jail made is the jailed user's.
    assert_eq!(probe["open"], "ok", "{stderr}");
    // Nothing was left in the host's DIR: the jail's root was a tmpfs mounted over it.
    assert_eq!(fs::read_dir(jail.path()).unwrap().count(), 0);
}

#[test]
fn a_jailed_monitor_writes_its_disk_and_not_a_read_only_one() {
    let files = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let disk = files.path().join("disk.img");
    let before: Vec<u8> = (0..8 * 512).map(|i| (i % 251) as u8).collect();
    fs::write(&disk, &before).unwrap();
    give_to_nobody(&disk);
    let out = output(jailed(
        jail.path(),
        &[
            "--disk",
            &format!("path={}", disk.display()),
            "--cmdline",
            "cloister_test.write=3:jailed! cloister_test.exit=0",
        ],
    ));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{stdout}");
    for want in [
        "CLOISTER-GUEST: DISK WRITE sector 3 OK",
        "CLOISTER-GUEST: DISK READBACK OK",
        "CLOISTER-GUEST: PASS",
    ] {
        assert!(stdout.contains(want), "no {want:?}:\n{stdout}");
    }
    let after = fs::read(&disk).unwrap();
    let pattern: Vec<u8> = b"jailed!".iter().copied().cycle().take(512).collect();
    assert_eq!(
        &after[3 * 512..4 * 512],
        &pattern[..],
        "sector 3 not written"
    );
    assert_eq!(&after[..3 * 512], &before[..3 * 512]);

    // readonly=on: the jail's bind mount is read-only too, whatever the file's mode.
    let out = output(jailed(
        jail.path(),
        &[
            "--disk",
            &format!("path={},readonly=on", disk.display()),
            "--cmdline",
            "cloister_test.write=1:nope cloister_test.exit=0",
        ],
    ));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("CLOISTER-GUEST: DISK WRITE sector 1 IOERR"),
        "{stdout}"
    );
    assert_eq!(fs::read(&disk).unwrap(), after, "a read-only disk changed");
}

#[test]
fn inside_the_jail_host_files_do_not_exist_and_no_capability_is_left() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    fs::write(secret.path(), b"host secret").unwrap();
    let jail = tempfile::tempdir().unwrap();
    let out = output(jailed(
        jail.path(),
        &[
            "--serial",
            "off",
            "--cmdline",
            "cloister_test.exit=0",
            "--jail-probe",
            secret.path().to_str().unwrap(),
        ],
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let probe = probe_fields(&stderr, "open=");
    assert_eq!(probe["path"], secret.path().to_str().unwrap());
    assert_eq!(
        probe["open"],
        format!("errno:{}", libc::ENOENT),
        "the jailed monitor reached a host file:\n{stderr}"
    );
    for set in [
        "cap_effective",
        "cap_permitted",
        "cap_inheritable",
        "cap_ambient",
        "cap_bounding",
    ] {
        assert_eq!(probe[set], "0x0", "{set}:\n{stderr}");
    }
    assert_eq!(probe["no_new_privs"], "1", "{stderr}");
    assert_eq!(probe["groups"], "0", "{stderr}");
    // Nor does /proc (nothing is mounted but what the VM needs).
    let out = output(jailed(
        jail.path(),
        &[
            "--serial",
            "off",
            "--cmdline",
            "cloister_test.exit=0",
            "--jail-probe",
            "/proc/self/status",
        ],
    ));
    let stderr = text(&out.stderr);
    let probe = probe_fields(&stderr, "open=");
    assert_eq!(probe["open"], format!("errno:{}", libc::ENOENT), "{stderr}");
}

/// A FIFO owned by the jailed user: as `--serial file=`, the monitor blocks opening it
/// (after the jail is set up, before the guest runs) until the test opens it to read.
fn console_fifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("console.fifo");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path alive across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    give_to_nobody(&fifo);
    fifo
}

/// Starts a jailed run whose console is `fifo`, and returns it with the `--jail-probe`
/// cgroup line once printed (stderr is read on a thread; the rest comes with `rest`).
fn start_blocked(jail: &Path, fifo: &Path) -> (Child, String, mpsc::Receiver<String>) {
    let mut cmd = jailed(
        jail,
        &[
            "--serial",
            &format!("file={}", fifo.display()),
            "--cmdline",
            "cloister_test.exit=0",
            "--jail-probe",
            "/nonexistent",
        ],
    );
    let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(TIMEOUT) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.starts_with(&format!("{PROBE}cgroup=")) {
                    return (child, seen, rx);
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no cgroup probe line from the jailed monitor:\n{seen}");
            }
        }
    }
}

/// Each `FILE=VALUE` of the cgroup probe line.
fn cgroup_limits(stderr: &str) -> Vec<(PathBuf, String)> {
    let fields = probe_fields(stderr, "cgroup=");
    fields
        .into_iter()
        .filter(|(k, _)| k != "cgroup")
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect()
}

fn wait(child: &mut Child) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the jailed monitor did not end within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_cgroup_limits_hold_while_the_vm_runs_and_go_when_it_ends() {
    let files = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let fifo = console_fifo(files.path());
    let (mut child, stderr, rest) = start_blocked(jail.path(), &fifo);
    let limits = cgroup_limits(&stderr);
    let version = probe_fields(&stderr, "cgroup=")["cgroup"].clone();
    // The defaults for 128 MiB and 1 vCPU: memory 128 MiB + 128 MiB + 2 MiB (no kernel
    // file), CPU 2 CPUs, 1 + 1 + 8 tasks.
    let memory = (258u64 << 20).to_string();
    let expected: Vec<(&str, String)> = if version == "v1" {
        vec![
            ("memory.limit_in_bytes", memory),
            ("cpu.cfs_period_us", "100000".into()),
            ("cpu.cfs_quota_us", "200000".into()),
            ("pids.max", "10".into()),
        ]
    } else {
        vec![
            ("memory.max", memory),
            ("cpu.max", "200000 100000".into()),
            ("pids.max", "10".into()),
        ]
    };
    for (name, value) in &expected {
        let (file, printed) = limits
            .iter()
            .find(|(f, _)| f.file_name().unwrap() == *name)
            .unwrap_or_else(|| panic!("{name} not in the probe line:\n{stderr}"));
        assert_eq!(printed, value, "{name}:\n{stderr}");
        // Read back from the host while the jailed monitor runs.
        let on_host = fs::read_to_string(file).unwrap();
        assert_eq!(on_host.trim(), value.as_str(), "{}", file.display());
    }
    // The jailed monitor is in every job cgroup.
    let dirs: Vec<PathBuf> = limits
        .iter()
        .map(|(f, _)| f.parent().unwrap().to_path_buf())
        .collect();
    for dir in &dirs {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(procs.lines().count(), 1, "{}: {procs:?}", dir.display());
    }
    // Let the guest run: read its console to the end.
    let mut console = String::new();
    fs::File::open(&fifo)
        .unwrap()
        .read_to_string(&mut console)
        .unwrap();
    assert_eq!(
        wait(&mut child),
        Some(0),
        "{stderr}{}",
        rest.try_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(console.contains("CLOISTER-GUEST: PASS"), "{console}");
    for dir in &dirs {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

#[test]
fn sigterm_reaches_the_jailed_monitor_through_its_parent() {
    let files = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let fifo = console_fifo(files.path());
    let (mut child, stderr, _rest) = start_blocked(jail.path(), &fifo);
    let dirs: Vec<PathBuf> = cgroup_limits(&stderr)
        .iter()
        .map(|(f, _)| f.parent().unwrap().to_path_buf())
        .collect();
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill only sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(wait(&mut child), Some(128 + libc::SIGTERM), "{stderr}");
    for dir in &dirs {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

#[test]
fn a_jailed_sim_launch_attests_with_a_copy_of_the_simulation_root() {
    let files = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let sim_root = workspace_root().join("target/test-sim-root");
    let console = files.path().join("console.log");
    let out = output(jailed(
        jail.path(),
        &[
            "--platform",
            "sim",
            "--sim-root",
            sim_root.to_str().unwrap(),
            "--serial",
            &format!("file={}", console.display()),
            "--cmdline",
            "console=ttyS0",
        ],
    ));
    let stderr = text(&out.stderr);
    let log = fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{log}");
    for want in ["CLOISTER-ATTEST: ok", "CLOISTER-GUEST: PASS"] {
        assert!(log.contains(want), "no {want:?}:\n{log}");
    }
    // The measurement agrees, and the user is pointed at the host's certificates.
    assert!(stderr.contains("equal to the prediction"), "{stderr}");
    assert!(
        stderr.contains(&format!("--certs {}/certs", sim_root.display())),
        "{stderr}"
    );
    // The console file the jail created is the jailed user's.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&console).unwrap().uid(), NOBODY);
}

#[test]
fn bad_jail_input_is_refused_naming_the_problem() {
    let files = tempfile::tempdir().unwrap();
    let jail = tempfile::tempdir().unwrap();
    let not_dir = files.path().join("plain-file");
    fs::write(&not_dir, b"x").unwrap();
    let root_disk = files.path().join("root.img");
    fs::write(&root_disk, vec![0u8; 4096]).unwrap();
    fs::set_permissions(
        &root_disk,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let inside = jail.path().join("vmlinux");
    fs::write(&inside, b"x").unwrap();
    let missing_kernel = files.path().join("no-such-vmlinux");
    let refused = |cmd: Command, needle: &str| {
        let out = output(cmd);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(VMM_ERROR), "{needle}: {stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!text(&out.stdout).contains("CLOISTER-GUEST"), "{needle}");
    };
    let missing = files.path().join("no-such-dir");
    refused(
        jailed(&missing, &[]),
        &format!("--jail {}: does not exist", missing.display()),
    );
    refused(
        jailed(&not_dir, &[]),
        &format!(
            "--jail {}: is a regular file, not a directory",
            not_dir.display()
        ),
    );
    let mut as_root = Command::new(cloister());
    as_root
        .arg("run")
        .arg("--debug-exit")
        .arg("--jail")
        .arg(jail.path())
        .args(["--uid", "0", "--gid", "65534"])
        .stdin(Stdio::null());
    refused(as_root, "--uid 0: the jailed monitor must not run as root");
    refused(
        jailed(jail.path(), &["--kernel", missing_kernel.to_str().unwrap()]),
        &format!("--kernel {}: does not exist", missing_kernel.display()),
    );
    refused(
        jailed(jail.path(), &["--kernel", inside.to_str().unwrap()]),
        "is inside the jail directory",
    );
    refused(
        jailed(
            jail.path(),
            &["--disk", &format!("path={}", root_disk.display())],
        ),
        &format!(
            "the jailed user 65534:65534 cannot read and write the disk image {} (/disk0 in the jail)",
            root_disk.display()
        ),
    );
    refused(
        jailed(jail.path(), &["--jail-memory", "64M"]),
        "--jail-memory 64M is not more than the guest's memory",
    );
    refused(jailed(jail.path(), &["--jail-cpus", "lots"]), "--jail-cpus");
    // --jail without --uid/--gid is a usage error.
    let out = Command::new(cloister())
        .arg("run")
        .arg("--debug-exit")
        .arg("--jail")
        .arg(jail.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--uid"), "{}", text(&out.stderr));
    // Nothing was left behind in DIR but the test's own file.
    assert_eq!(fs::read_dir(jail.path()).unwrap().count(), 1);
}
