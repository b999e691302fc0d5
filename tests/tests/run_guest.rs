//! Boots the project's test guest (`tests/guest`) with the real `cloister` binary on this
//! machine's /dev/kvm and checks what the guest reports on its serial console and the
//! exit status the monitor passes out.
//!
//! Which binary: `$CLOISTER_BIN` when set, else `cloister` in the same target directory
//! and profile as this test executable (`target/<profile>/cloister`). Before the first
//! boot the test runs `cargo build -p cloister-vmm --bin cloister` for that profile, so
//! the binary is never missing or stale (cargo releases its build lock while tests run;
//! the build is a no-op when the binary is up to date).
//!
//! The tests need /dev/kvm and fail, saying so, when it is missing or not usable; they
//! never skip. The guest's own pure code (SHA-256, command-line parsing, e820 checks, MP
//! table and MADT parsing) is compiled here too, from the same files, and unit-tested at
//! the bottom.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_tests::cloister;
use sha2::{Digest, Sha256};

/// Longest a single guest run may take (a boot takes well under a second normally; the
/// build machine's emulated KVM and a loaded CI box need headroom).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Prefix of every line the guest prints.
const PREFIX: &str = "CLOISTER-GUEST: ";
/// Exit code of the guest when one of its checks failed (tests/guest/src/main.rs).
const GUEST_FAILURE: i32 = cloister_vmm::test_guest::FAILURE_EXIT_CODE as i32;

/// Fails the test, loudly, when /dev/kvm is missing or cannot be opened read-write.
fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "these tests boot a VM and need /dev/kvm, which cannot be opened read-write: {e} \
             (load kvm_intel/kvm_amd, or run as a user in the kvm group)"
        );
    }
}

/// What one `cloister run` produced.
struct Run {
    /// Exit status (`None`: killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The guest's lines, without the prefix.
    fn guest_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))
            .collect()
    }

    fn has_line(&self, line: &str) -> bool {
        self.guest_lines().contains(&line)
    }

    fn has_line_starting(&self, start: &str) -> bool {
        self.guest_lines().iter().any(|l| l.starts_with(start))
    }

    /// Panics with the whole output unless `cond`.
    fn check(&self, cond: bool, what: &str) {
        assert!(
            cond,
            "{what}\n--- exit status: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        );
    }

    fn expect_line(&self, line: &str) {
        self.check(
            self.has_line(line),
            &format!("guest did not print {PREFIX}{line}"),
        );
    }

    fn expect_code(&self, code: i32) {
        self.check(
            self.code == Some(code),
            &format!("expected cloister to exit with status {code}"),
        );
    }

    /// The guest booted, found nothing wrong, and the VM ended with `code`.
    fn expect_pass(&self, code: i32) {
        self.check(
            self.has_line_starting("boot ("),
            "no boot marker (CLOISTER-GUEST: boot) on the serial console",
        );
        self.check(
            !self.has_line_starting("FAIL"),
            "the guest reported a failed check",
        );
        self.expect_line("PASS");
        self.expect_code(code);
    }
}

/// Runs `cloister run ARGS` with the serial console on stdout.
fn run(args: &[&str]) -> Run {
    require_kvm();
    let mut child = Command::new(cloister())
        .arg("run")
        // The guest ends itself with cloister_test.exit=N through port 0xf4.
        .arg("--debug-exit")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start cloister");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for cloister") {
            break Some(status);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
    };
    run.check(
        status.is_some(),
        &format!("cloister run {args:?} did not end within {RUN_TIMEOUT:?}"),
    );
    run
}

/// A disk image of `sectors` 512-byte sectors of deterministic, non-repeating bytes.
fn disk_image(sectors: usize, seed: u64) -> tempfile::NamedTempFile {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let bytes: Vec<u8> = (0..sectors * 512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let file = tempfile::NamedTempFile::new().expect("temporary disk");
    fs::write(file.path(), bytes).expect("writing the disk image");
    file
}

fn path_arg(file: &tempfile::NamedTempFile, readonly: bool) -> String {
    let mut arg = format!("path={}", file.path().display());
    if readonly {
        arg.push_str(",readonly=on");
    }
    arg
}

/// A kernel image written to a temporary file, for `--kernel`.
fn kernel_file(image: &[u8]) -> tempfile::NamedTempFile {
    assert!(
        !image.is_empty(),
        "the test guest is not built into cloister-vmm"
    );
    let file = tempfile::NamedTempFile::new().expect("temporary kernel");
    fs::write(file.path(), image).expect("writing the kernel");
    file
}

/// `after` is `before` with sector `sector` filled with `text` repeated, and nothing else
/// changed (the file's size included).
fn assert_only_sector_written(before: &[u8], after: &[u8], sector: usize, text: &[u8]) {
    let pattern: Vec<u8> = text.iter().copied().cycle().take(512).collect();
    let (start, end) = (sector * 512, (sector + 1) * 512);
    assert_eq!(after.len(), before.len(), "the disk file changed size");
    assert_eq!(
        &after[start..end],
        &pattern[..],
        "sector {sector} not written"
    );
    assert_eq!(
        &after[..start],
        &before[..start],
        "sectors before {sector} changed"
    );
    assert_eq!(
        &after[end..],
        &before[end..],
        "sectors after {sector} changed"
    );
}

#[test]
fn builtin_guest_boots_and_powers_off_with_status_0() {
    let run = run(&[]);
    run.expect_pass(0);
    run.check(
        run.has_line("boot (linux 64-bit entry)"),
        "the built-in guest should enter through the Linux 64-bit boot protocol",
    );
    run.expect_line("power off");
}

#[test]
fn e820_map_matches_64m() {
    let run = run(&[
        "--memory",
        "64M",
        "--cmdline",
        "cloister_test.mem=64M cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        run.has_line_starting("E820 OK ") && run.stdout.contains("expected=67108864"),
        "e820 check did not pass for 64 MiB",
    );
}

#[test]
fn e820_map_matches_128m() {
    let run = run(&[
        "--memory",
        "128M",
        "--cmdline",
        "cloister_test.mem=128M cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        run.has_line_starting("E820 OK ") && run.stdout.contains("expected=134217728"),
        "e820 check did not pass for 128 MiB",
    );
}

#[test]
fn e820_check_fails_when_memory_differs() {
    // The same check must be able to fail: 64 MiB given, 128 MiB expected.
    let run = run(&[
        "--memory",
        "64M",
        "--cmdline",
        "cloister_test.mem=128M cloister_test.exit=0",
    ]);
    run.check(
        run.has_line_starting("FAIL e820: RAM is "),
        "the guest should report the RAM size mismatch",
    );
    run.expect_code(GUEST_FAILURE);
}

#[test]
fn cmdline_is_echoed() {
    let word = format!("cloister.echo.{}", std::process::id());
    let cmdline = format!("console=ttyS0 {word} cloister_test.exit=0");
    let run = run(&["--cmdline", &cmdline]);
    run.expect_pass(0);
    run.check(
        run.guest_lines()
            .iter()
            .any(|l| l.starts_with("cmdline: ") && l.contains(&cmdline)),
        "the command line was not echoed as given",
    );
}

/// `rep outsb` / `rep insb` reach the device one element at a time: a whole line written
/// with one instruction appears on the console, and eight reads of the line status
/// register each see the register (a single wide access would be unclaimed: all ones).
#[test]
fn string_port_io_is_split_into_element_accesses() {
    let run = run(&[
        "--cmdline",
        "console=ttyS0 cloister_test.string_io=on cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    for want in ["STRING IO out ok", "STRING IO in ok"] {
        run.check(
            run.guest_lines().iter().any(|l| l.starts_with(want)),
            &format!("no {want:?} line"),
        );
    }
}

#[test]
fn disk_hash_matches_file() {
    let disk = disk_image(11, 1);
    let expected = hex::encode(Sha256::digest(fs::read(disk.path()).unwrap()));
    let run = run(&[
        "--disk",
        &path_arg(&disk, false),
        "--cmdline",
        "cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        run.has_line_starting("DISK at ") && run.stdout.contains("capacity 11 sectors rw"),
        "the guest did not find an 11-sector read-write disk",
    );
    run.expect_line(&format!("DISK SHA256 {expected}"));
}

#[test]
fn disk_write_persists() {
    let disk = disk_image(8, 2);
    let before = fs::read(disk.path()).unwrap();
    let run = run(&[
        "--disk",
        &path_arg(&disk, false),
        "--cmdline",
        "cloister_test.write=5:Cloister! cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.expect_line(&format!(
        "DISK SHA256 {}",
        hex::encode(Sha256::digest(&before))
    ));
    run.expect_line("DISK WRITE sector 5 OK");
    run.expect_line("DISK READBACK OK");
    assert_only_sector_written(&before, &fs::read(disk.path()).unwrap(), 5, b"Cloister!");
}

#[test]
fn readonly_disk_refuses_write() {
    let disk = disk_image(8, 3);
    let before = fs::read(disk.path()).unwrap();
    let run = run(&[
        "--disk",
        &path_arg(&disk, true),
        "--cmdline",
        "cloister_test.write=1:nope cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        run.stdout.contains("capacity 8 sectors ro"),
        "the device did not offer VIRTIO_BLK_F_RO",
    );
    run.expect_line("DISK WRITE sector 1 IOERR");
    run.expect_line("DISK READBACK OK");
    assert_eq!(
        fs::read(disk.path()).unwrap(),
        before,
        "a read-only disk file changed"
    );
}

#[test]
fn write_past_the_end_is_refused_by_the_device() {
    let disk = disk_image(8, 4);
    let before = fs::read(disk.path()).unwrap();
    let run = run(&[
        "--disk",
        &path_arg(&disk, false),
        "--cmdline",
        "cloister_test.write=8:past cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.expect_line("DISK WRITE sector 8 IOERR");
    assert_eq!(
        fs::read(disk.path()).unwrap(),
        before,
        "the disk file changed"
    );
}

#[test]
fn two_disks_are_read_in_order() {
    let first = disk_image(4, 5);
    let second = disk_image(6, 6);
    let run = run(&[
        "--disk",
        &path_arg(&first, false),
        "--disk",
        &path_arg(&second, true),
        "--cmdline",
        "cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    let hashes: Vec<String> = run
        .guest_lines()
        .iter()
        .filter_map(|l| l.strip_prefix("DISK SHA256 "))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = [&first, &second]
        .iter()
        .map(|f| hex::encode(Sha256::digest(fs::read(f.path()).unwrap())))
        .collect();
    run.check(hashes == expected, "disk hashes differ from the files'");
}

/// The disk as a modern virtio-pci function (00:01.0): the guest finds it by scanning bus
/// 0, reaches its structures through the capabilities and BAR0, hashes the whole disk,
/// writes a sector and reads it back, and the file holds what it wrote.
#[test]
fn virtio_pci_disk_is_read_and_written_through_pci() {
    let disk = disk_image(9, 7);
    let before = fs::read(disk.path()).unwrap();
    let run = run(&[
        "--virtio",
        "pci",
        "--disk",
        &path_arg(&disk, false),
        "--cmdline",
        "cloister_test.write=4:over-PCI cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        !run.stdout.contains("virtio_mmio.device="),
        "a virtio-pci machine announced a virtio-mmio device on the command line",
    );
    run.expect_line("DISK at PCI 00:01.0 capacity 9 sectors rw flush");
    run.expect_line(&format!(
        "DISK SHA256 {}",
        hex::encode(Sha256::digest(&before))
    ));
    run.expect_line("DISK WRITE sector 4 OK");
    run.expect_line("DISK FLUSH OK");
    run.expect_line("DISK READBACK OK");
    assert_only_sector_written(&before, &fs::read(disk.path()).unwrap(), 4, b"over-PCI");
}

/// Disk i is PCI device i + 1: two functions, found in slot order, the second read-only.
#[test]
fn virtio_pci_disks_are_found_in_slot_order() {
    let first = disk_image(4, 8);
    let second = disk_image(6, 9);
    let run = run(&[
        "--virtio",
        "pci",
        "--disk",
        &path_arg(&first, false),
        "--disk",
        &path_arg(&second, true),
        "--cmdline",
        "cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    let disks: Vec<&str> = run
        .guest_lines()
        .into_iter()
        .filter(|l| l.starts_with("DISK at "))
        .collect();
    run.check(
        disks
            == [
                "DISK at PCI 00:01.0 capacity 4 sectors rw flush",
                "DISK at PCI 00:02.0 capacity 6 sectors ro flush",
            ],
        "the guest did not find the two disks at 00:01.0 and 00:02.0",
    );
    let hashes: Vec<String> = run
        .guest_lines()
        .iter()
        .filter_map(|l| l.strip_prefix("DISK SHA256 "))
        .map(str::to_string)
        .collect();
    let expected: Vec<String> = [&first, &second]
        .iter()
        .map(|f| hex::encode(Sha256::digest(fs::read(f.path()).unwrap())))
        .collect();
    run.check(hashes == expected, "disk hashes differ from the files'");
}

/// `--virtio mmio`: no PCI bus, so the guest's PCI scan finds nothing and the disk is the
/// virtio-mmio window the command line announces.
#[test]
fn virtio_mmio_disk_has_no_pci_bus() {
    let disk = disk_image(5, 10);
    let run = run(&[
        "--virtio",
        "mmio",
        "--disk",
        &path_arg(&disk, false),
        "--cmdline",
        "cloister_test.exit=0",
    ]);
    run.expect_pass(0);
    run.check(
        run.has_line_starting("DISK at 0x") && run.stdout.contains("capacity 5 sectors rw"),
        "the guest did not find the 5-sector virtio-mmio disk",
    );
    run.check(
        !run.stdout.contains("PCI"),
        "the guest reported PCI on a machine without a PCI bus",
    );
    run.expect_line(&format!(
        "DISK SHA256 {}",
        hex::encode(Sha256::digest(fs::read(disk.path()).unwrap()))
    ));
}

#[test]
fn guest_reports_a_parameter_it_cannot_parse() {
    let run = run(&["--cmdline", "cloister_test.exit=300"]);
    run.expect_line("FAIL cannot parse command-line parameter: cloister_test.exit=300");
    run.expect_code(GUEST_FAILURE);
}

#[test]
fn guest_exceptions_are_reported() {
    for (fault, line) in [
        ("ud", "FAIL exception 6 (#UD invalid opcode) at rip "),
        ("pf", "FAIL exception 14 (#PF page fault) at rip "),
    ] {
        let run = run(&["--cmdline", &format!("cloister_test.fault={fault}")]);
        run.check(run.has_line_starting(line), &format!("expected {line}..."));
        run.expect_code(GUEST_FAILURE);
    }
}

fn check_cpus(cpus: u32) {
    let n = cpus.to_string();
    let cmdline = format!("cloister_test.cpus={cpus} cloister_test.exit=0");
    let run = run(&["--cpus", &n, "--cmdline", &cmdline]);
    run.expect_pass(0);
    let seen: Vec<&str> = run
        .guest_lines()
        .into_iter()
        .filter(|l| l.starts_with("CPUS ") && !l.ends_with(" none"))
        .collect();
    run.check(!seen.is_empty(), "no MP table and no MADT found");
    for line in &seen {
        run.check(
            line.ends_with(&format!(" {cpus}")),
            &format!("{line}: expected {cpus} CPUs"),
        );
    }
}

#[test]
fn one_vcpu_is_seen() {
    check_cpus(1);
}

#[test]
fn two_vcpus_are_seen() {
    check_cpus(2);
}

#[test]
fn cpu_check_fails_when_the_count_differs() {
    // The CPU check must be able to fail: 1 vCPU given, 2 expected.
    let run = run(&["--cpus", "1", "--cmdline", "cloister_test.cpus=2"]);
    run.check(
        run.has_line_starting("FAIL MPTABLE lists 1 CPUs, expected 2")
            || run.has_line_starting("FAIL MADT lists 1 CPUs, expected 2"),
        "the guest should report the CPU count mismatch",
    );
    run.expect_code(GUEST_FAILURE);
}

#[test]
fn exit_codes_are_passed_out() {
    for code in [0, 7, 42] {
        let cmdline = format!("cloister_test.exit={code}");
        let run = run(&["--cmdline", &cmdline]);
        run.expect_pass(code);
        run.expect_line(&format!("exit {code}"));
    }
}

/// Without `--debug-exit` there is no port 0xf4: a guest cannot choose the monitor's
/// status (the test guest then halts, which the monitor reports as its own failure, 1);
/// with it, codes that would read as the monitor's or the shell's become 125, named.
#[test]
fn the_debug_exit_port_is_opt_in_and_kept_apart_from_the_monitors_codes() {
    require_kvm();
    let out = Command::new(cloister())
        .args([
            "run",
            "--serial",
            "off",
            "--cmdline",
            "cloister_test.exit=7",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    for (code, status) in [(1u8, 125), (2, 125), (130, 125), (124, 124)] {
        let out = Command::new(cloister())
            .args(["run", "--debug-exit", "--serial", "off", "--cmdline"])
            .arg(format!("cloister_test.exit={code}"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(status), "code {code}: {out:?}");
        if status == 125 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("the guest wrote exit code {code}")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn elf_kernel_file_boots() {
    let kernel = kernel_file(cloister_vmm::test_guest::ELF);
    let kernel_path = kernel.path().to_str().unwrap().to_string();
    let run = run(&["--kernel", &kernel_path, "--cmdline", "console=ttyS0"]);
    run.expect_pass(0);
    run.expect_line("boot (linux 64-bit entry)");
    run.expect_line("power off");
}

#[test]
fn bzimage_kernel_file_boots() {
    let kernel = kernel_file(cloister_vmm::test_guest::BZIMAGE);
    let kernel_path = kernel.path().to_str().unwrap().to_string();
    let run = run(&[
        "--kernel",
        &kernel_path,
        "--cmdline",
        "cloister_test.mem=64M cloister_test.exit=3",
        "--memory",
        "64M",
    ]);
    run.expect_pass(3);
    run.expect_line("boot (linux 64-bit entry)");
}

#[test]
fn embedded_images_have_the_documented_layout() {
    use cloister_vmm::test_guest::{BZIMAGE, ELF};
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    // ELF64, x86-64, executable, entry = the Linux 64-bit entry at 1 MiB + 0x200.
    assert_eq!(&ELF[..4], b"\x7fELF");
    assert_eq!(ELF[4], 2, "ELFCLASS64");
    assert_eq!(u16_at(ELF, 0x12), 62, "EM_X86_64");
    assert_eq!(u64_at(ELF, 0x18), 0x10_0200, "entry");
    // A PT_NOTE with the Xen PVH entry note pointing into the image.
    let (phoff, phnum) = (u64_at(ELF, 0x20) as usize, u16_at(ELF, 0x38) as usize);
    let note = (0..phnum)
        .map(|i| phoff + i * 56)
        .find(|&ph| u32_at(ELF, ph) == 4)
        .expect("PT_NOTE");
    let off = u64_at(ELF, note + 8) as usize;
    assert_eq!(
        (u32_at(ELF, off), u32_at(ELF, off + 8)),
        (4, 18),
        "namesz, type"
    );
    assert_eq!(&ELF[off + 12..off + 16], b"Xen\0");
    let pvh_entry = u64_at(ELF, off + 16);
    assert!(
        (0x10_0000..0x20_0000).contains(&pvh_entry),
        "{pvh_entry:#x}"
    );
    // bzImage: boot protocol 2.15 header, 64-bit kernel, protected-mode code = the ELF's.
    assert_eq!(u16_at(BZIMAGE, 0x1fe), 0xaa55);
    assert_eq!(&BZIMAGE[0x202..0x206], b"HdrS");
    assert!(u16_at(BZIMAGE, 0x206) >= 0x020c, "version");
    assert_eq!(u16_at(BZIMAGE, 0x236) & 1, 1, "XLF_KERNEL_64");
    assert_eq!(BZIMAGE[0x211] & 1, 1, "LOADED_HIGH");
    let setup = (usize::from(BZIMAGE[0x1f1]) + 1) * 512;
    let text = u64_at(ELF, phoff + 8) as usize; // the PT_LOAD's file offset
    assert_eq!(
        &BZIMAGE[setup..setup + 0x400],
        &ELF[text..text + 0x400],
        "the bzImage's protected-mode code is not the ELF's"
    );
}

// The guest's pure modules, compiled for the host from the very files the guest uses.
#[allow(dead_code)]
#[path = "../guest/src/cmdline.rs"]
mod guest_cmdline;
#[allow(dead_code)]
#[path = "../guest/src/e820.rs"]
mod guest_e820;
#[allow(dead_code)]
#[path = "../guest/src/sha256.rs"]
mod guest_sha256;
#[allow(dead_code)]
#[path = "../guest/src/tables.rs"]
mod guest_tables;

mod guest_units {
    use super::guest_cmdline::{MmioDevice, TestParams};
    use super::guest_e820::{check, normalize, E820Entry, E820Error, E820_RAM};
    use super::guest_sha256 as sha256;
    use super::guest_tables::{self as tables, CpuCount, PhysMem};
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_known_vectors() {
        let vectors: [(&[u8], &str); 3] = [
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
        ];
        for (input, expected) in vectors {
            assert_eq!(hex::encode(sha256::digest(input)), expected);
        }
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex::encode(sha256::digest(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn sha256_matches_sha2_for_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            let want = Sha256::digest(&data[..len]);
            assert_eq!(sha256::digest(&data[..len])[..], want[..], "length {len}");
            let split = len / 3;
            let mut h = sha256::Sha256::new();
            h.update(&data[..split]);
            h.update(&data[split..len]);
            assert_eq!(h.finish()[..], want[..], "length {len} split at {split}");
        }
    }

    #[test]
    fn cmdline_parameters_parse() {
        let line = b"console=ttyS0 cloister_test.mem=64M cloister_test.exit=42 \
            cloister_test.write=7:abc cloister_test.cpus=2 \
            virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=512@0xd0001000:6:3";
        let (p, bad) = TestParams::parse(line);
        assert_eq!(bad, None);
        assert_eq!(p.mem, Some(64 << 20));
        assert_eq!(p.exit, Some(42));
        assert_eq!(p.write, Some((7, b"abc".as_slice())));
        assert_eq!(p.cpus, Some(2));
        assert_eq!(
            p.devices[0],
            Some(MmioDevice {
                base: 0xd000_0000,
                size: 4096,
                irq: 5
            })
        );
        assert_eq!(p.devices[1].map(|d| d.base), Some(0xd000_1000));
        assert_eq!(p.devices[2], None);
    }

    #[test]
    fn cmdline_bad_values_are_reported_not_used() {
        for word in [
            "cloister_test.exit=256",
            "cloister_test.exit=",
            "cloister_test.mem=12Q",
            "cloister_test.mem=99999999999999999999",
            "cloister_test.write=3",
            "cloister_test.write=x:abc",
            "cloister_test.write=3:",
            "virtio_mmio.device=4K@zz:5",
            "virtio_mmio.device=0@0x1000:5",
            "virtio_mmio.device=4K@0x1000",
            "virtio_mmio.device=4K@0x1000:5:1:2",
        ] {
            let (p, bad) = TestParams::parse(word.as_bytes());
            assert_eq!(bad.map(|b| b.word), Some(word.as_bytes()), "{word}");
            assert_eq!(p.exit, None);
            assert_eq!(p.write, None);
            assert_eq!(p.devices[0], None);
        }
        // Unknown words and flags without values are ignored, as Linux does.
        let (p, bad) = TestParams::parse(b"quiet foo=bar\0garbage-after-nul");
        assert_eq!(bad, None);
        assert_eq!(p, TestParams::default());
    }

    fn ram(addr: u64, size: u64) -> E820Entry {
        E820Entry {
            addr,
            size,
            kind: E820_RAM,
        }
    }

    #[test]
    fn e820_checks() {
        let mem = 64u64 << 20;
        let good = [
            ram(0, 0x9fc00),
            E820Entry {
                addr: 0x9fc00,
                size: 0x400,
                kind: 2,
            },
            ram(0x10_0000, mem - 0x10_0000),
        ];
        let summary = check(&good, Some(mem)).unwrap();
        assert_eq!(summary.ram, mem - 0x10_0000 + 0x9fc00);
        assert_eq!(summary.ram_top, mem);
        assert_eq!(
            check(&good, Some(128 << 20)),
            Err(E820Error::RamSize {
                expected: 128 << 20,
                found: summary.ram
            })
        );
        assert_eq!(
            check(&good, Some(32 << 20)).map(|_| ()),
            Err(E820Error::RamSize {
                expected: 32 << 20,
                found: summary.ram
            })
        );
        let unsorted = [good[2], good[0]];
        assert_eq!(
            check(&unsorted, None),
            Err(E820Error::NotSorted { index: 1 })
        );
        let overlap = [ram(0, 0x2000), ram(0x1000, 0x2000)];
        assert_eq!(check(&overlap, None), Err(E820Error::Overlap { index: 1 }));
        assert_eq!(
            check(&[ram(u64::MAX, 2)], None),
            Err(E820Error::BadEntry { index: 0 })
        );
        assert_eq!(check(&[], None), Err(E820Error::Empty));
        let mut messy = [good[2], ram(0, 0), good[0], good[1]];
        assert_eq!(normalize(&mut messy), &good[..]);
    }

    /// Guest-physical memory as a byte array.
    struct Memory(Vec<u8>);

    impl PhysMem for Memory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let start = addr as usize;
            match self.0.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl Memory {
        fn put(&mut self, addr: usize, bytes: &[u8]) {
            self.0[addr..addr + bytes.len()].copy_from_slice(bytes);
        }

        /// Sets byte `at` so that `len` bytes from `start` sum to zero.
        fn fix_checksum(&mut self, start: usize, len: usize, at: usize) {
            self.0[at] = 0;
            let sum = self.0[start..start + len]
                .iter()
                .fold(0u8, |s, b| s.wrapping_add(*b));
            self.0[at] = sum.wrapping_neg();
        }
    }

    /// An MP table at 0x9fc00 with `cpus` processors (one disabled extra) and a bus entry.
    fn mp_table(cpus: u8) -> Memory {
        let mut m = Memory(vec![0; 0x10_0000]);
        let floating = 0x9fc00;
        let config = floating + 16;
        m.put(floating, b"_MP_");
        m.put(floating + 4, &(config as u32).to_le_bytes());
        m.0[floating + 8] = 1;
        m.0[floating + 9] = 4;
        m.fix_checksum(floating, 16, floating + 10);
        let mut at = config + 44;
        for i in 0..=cpus {
            m.0[at] = 0;
            m.0[at + 1] = i;
            m.0[at + 3] = if i < cpus { 1 } else { 0 };
            at += 20;
        }
        m.0[at] = 1; // bus
        at += 8;
        let len = at - config;
        m.put(config, b"PCMP");
        m.put(config + 4, &(len as u16).to_le_bytes());
        m.fix_checksum(config, len, config + 7);
        m
    }

    #[test]
    fn mp_table_cpus_are_counted() {
        for cpus in [1, 2, 5] {
            assert_eq!(
                tables::mp_table_cpus(&mp_table(cpus)),
                CpuCount::Found(u32::from(cpus))
            );
        }
        let mut bad = mp_table(2);
        bad.0[0x9fc10 + 50] ^= 1; // break the configuration table's checksum
        assert!(matches!(tables::mp_table_cpus(&bad), CpuCount::Invalid(_)));
        assert_eq!(
            tables::mp_table_cpus(&Memory(vec![0; 0x10_0000])),
            CpuCount::Missing
        );
    }

    /// RSDP (rev 2) at 0xe0000 -> XSDT at 0x1000 -> a FACP-like table and a MADT at 0x3000
    /// with `cpus` enabled local APICs, one disabled one and one x2APIC entry.
    fn acpi_tables(cpus: u8, x2apic_enabled: bool) -> Memory {
        let mut m = Memory(vec![0; 0x10_0000]);
        let (rsdp, xsdt, other, madt) = (0xe0000, 0x1000, 0x2000, 0x3000);
        m.put(rsdp, b"RSD PTR ");
        m.0[rsdp + 15] = 2;
        m.put(rsdp + 20, &36u32.to_le_bytes());
        m.put(rsdp + 24, &(xsdt as u64).to_le_bytes());
        m.fix_checksum(rsdp, 20, rsdp + 8);
        m.fix_checksum(rsdp, 36, rsdp + 32);
        m.put(xsdt, b"XSDT");
        m.put(xsdt + 4, &52u32.to_le_bytes());
        m.put(xsdt + 36, &(other as u64).to_le_bytes());
        m.put(xsdt + 44, &(madt as u64).to_le_bytes());
        m.fix_checksum(xsdt, 52, xsdt + 9);
        m.put(other, b"FACP");
        m.put(other + 4, &36u32.to_le_bytes());
        m.fix_checksum(other, 36, other + 9);
        let mut at = madt + 44;
        for i in 0..=cpus {
            m.put(at, &[0, 8, i, i]);
            m.put(at + 4, &u32::from(i < cpus).to_le_bytes());
            at += 8;
        }
        m.put(at, &[1, 12]); // I/O APIC
        at += 12;
        m.put(at, &[9, 16]);
        m.put(at + 8, &u32::from(x2apic_enabled).to_le_bytes());
        at += 16;
        let len = at - madt;
        m.put(madt, b"APIC");
        m.put(madt + 4, &(len as u32).to_le_bytes());
        m.fix_checksum(madt, len, madt + 9);
        m
    }

    #[test]
    fn madt_cpus_are_counted() {
        assert_eq!(
            tables::madt_cpus(&acpi_tables(2, false), 0),
            CpuCount::Found(2)
        );
        assert_eq!(
            tables::madt_cpus(&acpi_tables(2, false), 0xe0000),
            CpuCount::Found(2)
        );
        assert_eq!(
            tables::madt_cpus(&acpi_tables(3, true), 0),
            CpuCount::Found(4)
        );
        assert!(matches!(
            tables::madt_cpus(&acpi_tables(2, false), 0xe0010),
            CpuCount::Invalid(_)
        ));
        let mut bad = acpi_tables(2, false);
        bad.0[0x3000 + 44 + 4] ^= 1; // MADT checksum now wrong
        assert!(matches!(tables::madt_cpus(&bad, 0), CpuCount::Invalid(_)));
        assert_eq!(
            tables::madt_cpus(&Memory(vec![0; 0x10_0000]), 0),
            CpuCount::Missing
        );
    }
}
