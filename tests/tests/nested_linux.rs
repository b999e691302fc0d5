//! Real Linux under real KVM: Debian's own kernel boots under `cloister run` one level
//! down, in the nested-KVM harness (`tests/nested/run.sh`).
//!
//! The outer VM is QEMU in software emulation (TCG, `-cpu EPYC,+svm,+npt`); Debian's
//! kvm_amd inside it provides the /dev/kvm that a statically linked `cloister` uses to boot
//! the same Debian kernel with a busybox initramfs. The inner guest loads the virtio
//! modules, reports what it sees on its serial console and powers off. The test asserts
//! that Linux reached its init, saw both vCPUs and the virtio-blk disk with the marker the
//! harness wrote into it, and that cloister exited with status 0.
//!
//! The outer VM is TCG, so this test needs no /dev/kvm on the host; it needs the Debian
//! packages that `scripts/install-deps.sh` installs, and apt access to download the kernel.
//! When any of that is missing it fails and says what is missing; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Last-resort guard for the whole harness: the static cloister build (a release build of
/// the VMM in its own target directory, minutes on a 2-core machine) plus the outer boot.
/// The outer VM itself is bounded by OUTER_TIMEOUT_SECS; it takes 1-2 minutes here.
const TEST_TIMEOUT: Duration = Duration::from_secs(2100);
/// The outer VM alone (passed to the harness, which kills QEMU when it expires).
const OUTER_TIMEOUT_SECS: u32 = 1000;
/// One inner boot (enforced inside the outer VM).
const INNER_TIMEOUT_SECS: u32 = 300;
/// The inner runs: Debian under plain cloister (its disk on virtio-pci, the default, and
/// on virtio-mmio) and on the simulated SNP platform, Debian and the test guest through
/// the boot verifier, and three hostile hosts that change the staged kernel, initrd or
/// command line after the launch.
const VMMS: [&str; 8] = [
    "cloister",
    "cloister-mmio",
    "cloister-sim",
    "cloister-verifier",
    "cloister-verifier-guest",
    "cloister-tamper-kernel",
    "cloister-tamper-initrd",
    "cloister-tamper-cmdline",
];
/// The verifier's refusal status (its debug-exit code).
const VERIFIER_REFUSED: &str = "97";
/// The first bytes of the inner guest's disk, written by the harness.
const DISK_MARKER: &str = "CLOISTER-NESTED-DISK-OK";
/// The disk is 1 MiB: 2048 sectors of 512 bytes.
const DISK_SECTORS: &str = "2048";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs the harness; returns its exit success and everything it printed (the outer
/// serial console, which carries the inner console, then the harness's own errors).
fn run_harness() -> (bool, String) {
    let root = repo_root();
    let log = tempfile::NamedTempFile::new().expect("temporary log file");
    let mut child = Command::new("bash")
        .arg(root.join("tests/nested/run.sh"))
        .args(["--vmm", &VMMS.join(","), "--runs", "1"])
        .args(["--timeout", &OUTER_TIMEOUT_SECS.to_string()])
        .args(["--inner-timeout", &INNER_TIMEOUT_SECS.to_string()])
        .arg("--log")
        .arg(log.path())
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start bash tests/nested/run.sh");

    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the harness") {
            break Some(status);
        }
        if start.elapsed() > TEST_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let mut text = String::from_utf8_lossy(&out).replace('\r', "");
    text.push_str("\n--- harness stderr ---\n");
    text.push_str(&String::from_utf8_lossy(&err));
    match status {
        Some(status) => (status.success(), text),
        None => {
            text.push_str(&format!(
                "\n--- the harness did not finish within {}s and was killed ---\n",
                TEST_TIMEOUT.as_secs()
            ));
            (false, text)
        }
    }
}

/// The text after `prefix` on the first output line that contains it.
fn field<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|line| line.find(prefix).map(|at| line[at + prefix.len()..].trim()))
}

/// Checks that in `vmm`'s run the inner Linux found /dev/vda at sysfs path `device` (its
/// first two components under /sys/devices) with interrupts named `irqs`.
fn check_transport(output: &str, vmm: &str, device: &str, irqs: &[&str]) -> Result<(), String> {
    let run = section(output, vmm);
    let found = field(run, "NESTED-LINUX: vda-device=")
        .ok_or_else(|| format!("{vmm}: the inner Linux printed no disk device"))?;
    if found != device {
        return Err(format!("{vmm}: /dev/vda is {found}, expected {device}"));
    }
    let names = field(run, "NESTED-LINUX: virtio-irqs=").unwrap_or("");
    let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
    match irqs.iter().find(|irq| !names.contains(irq)) {
        Some(irq) => Err(format!(
            "{vmm}: the disk's driver has no interrupt {irq}: {names:?}"
        )),
        None => Ok(()),
    }
}

/// The lines of one inner run: from its NESTED-RUN-BEGIN line to its result line.
fn section<'a>(output: &'a str, vmm: &str) -> &'a str {
    let begin = format!("NESTED-RUN-BEGIN: vmm={vmm} run=1");
    let end = format!("NESTED-RUN: vmm={vmm} run=1");
    let Some(start) = output.find(&begin) else {
        return "";
    };
    let rest = &output[start..];
    match rest.find(&end) {
        Some(stop) => &rest[..stop + rest[stop..].find('\n').unwrap_or(rest.len() - stop)],
        None => rest,
    }
}

/// The value of `key=` in a line of space-separated `key=value` pairs.
fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[test]
fn debian_linux_boots_under_cloister_in_nested_kvm() {
    let (ok, output) = run_harness();
    let fail = |what: &str| -> ! {
        panic!(
            "nested Linux under cloister: {what}\n--- serial log and harness output ---\n{output}"
        )
    };
    if !ok {
        fail("the harness failed (see its error at the end of the log)");
    }
    if !output.contains("NESTED-OUTER: kvm ok") {
        fail("the outer VM has no /dev/kvm (kvm-amd did not load)");
    }
    let run = field(&output, "NESTED-RUN: vmm=cloister run=1")
        .unwrap_or_else(|| fail("the outer VM printed no result line for the cloister run"));
    if value(run, "marker_s").is_none_or(|v| v == "none") {
        fail("the inner Linux never reached its init (no NESTED-LINUX: marker)");
    }
    match field(&output, "NESTED-LINUX: cpus=") {
        Some(cpus) if cpus.split_whitespace().next() == Some("2") => {}
        Some(cpus) => fail(&format!("the inner Linux saw cpus={cpus}, expected 2")),
        None => fail("the inner Linux printed no CPU count"),
    }
    let vda = field(&output, "NESTED-LINUX: vda=")
        .unwrap_or_else(|| fail("the inner Linux printed no disk result"));
    if !vda.starts_with("present") {
        fail(&format!("the inner Linux has no /dev/vda: vda={vda}"));
    }
    if value(vda, "sectors") != Some(DISK_SECTORS) {
        fail(&format!(
            "/dev/vda has the wrong size: {vda} (expected sectors={DISK_SECTORS})"
        ));
    }
    if value(vda, "head") != Some(DISK_MARKER) {
        fail(&format!(
            "/dev/vda does not start with {DISK_MARKER}: {vda}"
        ));
    }
    if !output.contains("NESTED-LINUX: done") {
        fail("the inner Linux did not finish its checks");
    }
    if value(run, "exit") != Some("0") {
        fail(&format!("cloister did not exit with status 0: {run}"));
    }
    // The default transport: the disk is PCI function 00:01.0 and its driver got MSI-X
    // vectors (config, and one request queue per inner vCPU: two), not a shared line.
    if let Err(e) = check_transport(
        &output,
        "cloister",
        "pci0000:00/0000:00:01.0",
        &["virtio0-config", "virtio0-req.0", "virtio0-req.1"],
    ) {
        fail(&e);
    }
    // --virtio mmio: the ACPI-described virtio-mmio device on its I/O APIC line, read the
    // same.
    let mmio = field(&output, "NESTED-RUN: vmm=cloister-mmio run=1")
        .unwrap_or_else(|| fail("the outer VM printed no result line for the cloister-mmio run"));
    if value(mmio, "exit") != Some("0") || value(mmio, "marker_s").is_none_or(|v| v == "none") {
        fail(&format!(
            "with --virtio mmio the inner Linux did not boot: {mmio}"
        ));
    }
    if let Err(e) = check_transport(
        &output,
        "cloister-mmio",
        "platform/LNRO0005:00",
        &["virtio0"],
    ) {
        fail(&e);
    }
    let mmio_vda = field(section(&output, "cloister-mmio"), "NESTED-LINUX: vda=")
        .unwrap_or_else(|| fail("cloister-mmio: the inner Linux printed no disk result"));
    if value(mmio_vda, "head") != Some(DISK_MARKER) {
        fail(&format!(
            "cloister-mmio: /dev/vda does not start with {DISK_MARKER}: {mmio_vda}"
        ));
    }

    // The same kernel launched on the simulated SEV-SNP platform: through the SNP
    // launcher, measured by the simulated PSP as predicted, and booted to its init. (Its
    // CPUID has no SEV leaf, so Linux ignores the CC blob, as it must without SNP.)
    let sim = field(&output, "NESTED-RUN: vmm=cloister-sim run=1")
        .unwrap_or_else(|| fail("the outer VM printed no result line for the cloister-sim run"));
    if value(sim, "marker_s").is_none_or(|v| v == "none") {
        fail(&format!(
            "under --platform sim the inner Linux never reached its init: {sim}"
        ));
    }
    if value(sim, "exit") != Some("0") {
        fail(&format!(
            "cloister --platform sim did not exit with status 0: {sim}"
        ));
    }
    if !output.contains("equal to the prediction") {
        fail("the sim launch's measurement was not equal to the prediction");
    }

    // Debian through the boot verifier: the verifier checks the staged kernel, initrd and
    // command line against the measured manifest and enters Linux, which reaches init.
    let verifier = section(&output, "cloister-verifier");
    let result = field(verifier, "NESTED-RUN: vmm=cloister-verifier run=1")
        .unwrap_or_else(|| fail("no result line for the cloister-verifier run"));
    for line in [
        "CLOISTER-VERIFIER: not an SEV-SNP guest",
        "CLOISTER-VERIFIER: kernel SHA-384 ok",
        "CLOISTER-VERIFIER: initrd SHA-384 ok",
        "CLOISTER-VERIFIER: command line SHA-384 ok",
        "NESTED-LINUX: done",
    ] {
        if !verifier.contains(line) {
            fail(&format!("the verifier boot printed no {line:?}"));
        }
    }
    if value(result, "marker_s").is_none_or(|v| v == "none") || value(result, "exit") != Some("0") {
        fail(&format!(
            "Linux through the verifier did not reach init and exit 0: {result}"
        ));
    }

    // The test guest through the verifier attests; its report verifies against the host's
    // prediction of the verifier launch.
    let guest = section(&output, "cloister-verifier-guest");
    if !guest.contains("CLOISTER-ATTEST: ok") || !guest.contains("CLOISTER-GUEST: PASS") {
        fail("the test guest through the verifier did not attest and pass");
    }
    let report_line = guest
        .lines()
        .find(|l| l.contains("CLOISTER-REPORT: "))
        .unwrap_or_else(|| fail("the test guest printed no report"));
    let report_line = &report_line[report_line.find("CLOISTER-REPORT: ").unwrap_or(0)..];
    verify_verifier_report(report_line).unwrap_or_else(|e| fail(&e));

    // Hostile hosts: the verifier refuses, names what differs, and Linux never runs.
    for (part, what) in [
        ("kernel", "kernel SHA-384 differs"),
        ("initrd", "initrd SHA-384 differs"),
        ("cmdline", "command line SHA-384 differs"),
    ] {
        let vmm = format!("cloister-tamper-{part}");
        let run = section(&output, &vmm);
        let result = field(run, &format!("NESTED-RUN: vmm={vmm} run=1"))
            .unwrap_or_else(|| fail(&format!("no result line for {vmm}")));
        if !run.contains(&format!("CLOISTER-VERIFIER: REFUSED {what}")) {
            fail(&format!("{vmm}: the verifier did not refuse with {what:?}"));
        }
        if run.contains("NESTED-LINUX:") || value(result, "marker_s") != Some("none") {
            fail(&format!(
                "{vmm}: Linux ran although its staging was changed"
            ));
        }
        if value(result, "exit") != Some(VERIFIER_REFUSED) {
            fail(&format!(
                "{vmm}: expected exit status {VERIFIER_REFUSED}: {result}"
            ));
        }
    }
}

/// Checks the test guest's report from the verifier launch on the host: the measurement
/// `cloister measure --layout cloister --boot verifier --platform sim` predicts for the same
/// inputs, the report data the guest was given, under the harness's simulation root.
fn verify_verifier_report(report_line: &str) -> Result<(), String> {
    let root = repo_root();
    let cloister = cloister_tests::cloister();
    let predicted = Command::new(cloister)
        .args([
            "measure",
            "--layout",
            "cloister",
            "--boot",
            "verifier",
            "--platform",
            "sim",
        ])
        .args(["--append", "console=ttyS0 cloister_test.report_data=ab"])
        .output()
        .map_err(|e| format!("cloister measure: {e}"))?;
    if !predicted.status.success() {
        return Err(format!("cloister measure failed: {predicted:?}"));
    }
    let measurement = String::from_utf8_lossy(&predicted.stdout)
        .trim()
        .to_string();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = dir.path().join("console.log");
    std::fs::write(&log, format!("{report_line}\n")).map_err(|e| e.to_string())?;
    let policy = dir.path().join("policy.toml");
    let report_data = format!("ab{}", "0".repeat(126));
    std::fs::write(
        &policy,
        format!("measurements = [\"{measurement}\"]\nreport_data = \"{report_data}\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let certs = std::env::var_os("NESTED_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/nested-cache"))
        .join("sim-root/certs");
    let out = Command::new(cloister)
        .arg("verify")
        .arg("--report")
        .arg(&log)
        .arg("--certs")
        .arg(&certs)
        .arg("--policy")
        .arg(&policy)
        .arg("--trust-sim-root")
        .output()
        .map_err(|e| format!("cloister verify: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "the verifier launch's report did not verify against the prediction {measurement}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
