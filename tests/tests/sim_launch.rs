//! The attested launch on the simulated SEV-SNP platform, end to end through the built
//! binary: `cloister run --platform sim` launches the test guest through the SNP
//! launcher and the simulated kernel + secure processor; the guest asks for its report
//! over the real guest-message protocol and prints it; `cloister measure --layout
//! cloister --platform sim` predicts the measurement; `cloister verify` checks the report
//! against the exported simulation root with the prediction, the host data and the nonce
//! as policy. Needs /dev/kvm (fails loudly without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use cloister_tests::{cloister, sim_root, workspace_root};

struct Launch {
    code: Option<i32>,
    console: String,
    stderr: String,
}

fn run_sim(extra: &[&str], cmdline: &str) -> Launch {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let out = Command::new(cloister())
        .args(["run", "--platform", "sim", "--sim-root"])
        .arg(sim_root())
        .arg("--serial")
        .arg(format!("file={}", console.display()))
        .args(["--cmdline", cmdline])
        .args(extra)
        .output()
        .unwrap();
    Launch {
        code: out.status.code(),
        console: std::fs::read_to_string(&console).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn report_of(console: &str) -> Vec<u8> {
    let line = console
        .lines()
        .find_map(|l| l.strip_prefix("CLOISTER-REPORT: "))
        .unwrap_or_else(|| panic!("no report on the console:\n{console}"));
    let bytes = hex::decode(line.trim()).unwrap();
    assert_eq!(bytes.len(), 1184);
    bytes
}

fn predict(args: &[&str]) -> String {
    let platform: &[&str] = if args.contains(&"--platform") {
        &[]
    } else {
        &["--platform", "sim"]
    };
    let out = Command::new(cloister())
        .args(["measure", "--layout", "cloister"])
        .args(platform)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(m.len(), 96, "{m}");
    m
}

fn verify(report: &Path, policy: &str, trust_sim: bool) -> (Option<i32>, String) {
    let dir = report.parent().unwrap();
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy).unwrap();
    let mut cmd = Command::new(cloister());
    cmd.arg("verify")
        .arg("--report")
        .arg(report)
        .arg("--certs")
        .arg(sim_root().join("certs"))
        .arg("--policy")
        .arg(&policy_file);
    if trust_sim {
        cmd.arg("--trust-sim-root");
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const NONCE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const HOST_DATA: &str = "c0ffee";

#[test]
fn the_guest_attests_and_its_report_verifies_with_the_predicted_measurement() {
    let cmdline = format!("console=ttyS0 cloister_test.report_data={NONCE}");
    let launch = run_sim(&["--cpus", "2", "--host-data", HOST_DATA], &cmdline);
    assert_eq!(
        launch.code,
        Some(0),
        "{}\n{}",
        launch.stderr,
        launch.console
    );
    assert!(
        launch.console.contains("CLOISTER-ATTEST: ok"),
        "{}",
        launch.console
    );
    assert!(
        launch.console.contains("CLOISTER-GUEST: PASS"),
        "{}",
        launch.console
    );
    assert!(
        launch.stderr.contains("guest memory is NOT encrypted"),
        "the sim says what it does not prove: {}",
        launch.stderr
    );
    let report = report_of(&launch.console);
    let predicted = predict(&["--vcpus", "2", "--append", &cmdline]);
    assert_eq!(hex::encode(&report[0x90..0xc0]), predicted, "MEASUREMENT");
    assert_eq!(
        hex::encode(&report[0x50..0x90]),
        format!("{NONCE}{}", "0".repeat(64))
    );
    assert_eq!(&hex::encode(&report[0xc0..0xc3]), HOST_DATA);
    assert_eq!(
        u32::from_le_bytes(report[0..4].try_into().unwrap()),
        5,
        "version 5"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &report).unwrap();
    let policy = format!(
        "measurements = [\"{predicted}\"]\nreport_data = \"{NONCE}{}\"\nhost_data = \"{HOST_DATA}{}\"\n",
        "0".repeat(64),
        "0".repeat(58)
    );
    let (code, out) = verify(&file, &policy, true);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("VERDICT: ACCEPTED"), "{out}");
    assert!(out.contains("SIMULATION ROOT, NOT AMD"), "{out}");

    // Without the explicit flag, the simulation root is not trusted, and says so.
    let (code, out) = verify(&file, &policy, false);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.to_lowercase().contains("simulation"), "{out}");

    // A one-bit change of the report fails.
    let mut flipped = report.clone();
    flipped[0x90] ^= 1;
    std::fs::write(&file, &flipped).unwrap();
    let (code, out) = verify(&file, &policy, true);
    assert_eq!(code, Some(1), "{out}");
}

/// Anything that changes what the guest runs changes the prediction, and a report of the
/// original launch fails a policy that expects the changed one.
#[test]
fn changes_to_the_launch_change_the_prediction_and_fail_verification() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("guest.elf");
    let elf = cloister_vmm::test_guest::ELF;
    assert!(!elf.is_empty());
    std::fs::write(&kernel, elf).unwrap();
    // One byte in the middle of the first loaded segment (bytes outside PT_LOAD
    // segments, such as section headers, never reach the guest).
    let mut changed = elf.to_vec();
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let load = (0..phnum)
        .map(|n| phoff + n * phentsize)
        .find(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .expect("a PT_LOAD segment");
    let at = u64_at(load + 8) + u64_at(load + 0x20) / 2;
    changed[at] ^= 0x01;
    let kernel2 = dir.path().join("guest2.elf");
    std::fs::write(&kernel2, &changed).unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, vec![0x5a; 10_000]).unwrap();
    let mut other = vec![0x5a; 10_000];
    other[4321] = 0x5b;
    let initrd2 = dir.path().join("initrd2");
    std::fs::write(&initrd2, other).unwrap();
    let k = kernel.to_str().unwrap();
    let k2 = kernel2.to_str().unwrap();
    let i = initrd.to_str().unwrap();
    let i2 = initrd2.to_str().unwrap();
    let base_args = [
        "--kernel",
        k,
        "--initrd",
        i,
        "--append",
        "console=ttyS0",
        "--vcpus",
        "1",
        "--memory",
        "64M",
    ];
    let base = predict(&base_args);
    let variants: Vec<(&str, Vec<&str>)> = vec![
        (
            "kernel byte",
            vec![
                "--kernel",
                k2,
                "--initrd",
                i,
                "--append",
                "console=ttyS0",
                "--vcpus",
                "1",
                "--memory",
                "64M",
            ],
        ),
        (
            "initrd byte",
            vec![
                "--kernel",
                k,
                "--initrd",
                i2,
                "--append",
                "console=ttyS0",
                "--vcpus",
                "1",
                "--memory",
                "64M",
            ],
        ),
        (
            "command line byte",
            vec![
                "--kernel",
                k,
                "--initrd",
                i,
                "--append",
                "console=ttyS1",
                "--vcpus",
                "1",
                "--memory",
                "64M",
            ],
        ),
        (
            "vCPU count",
            vec![
                "--kernel",
                k,
                "--initrd",
                i,
                "--append",
                "console=ttyS0",
                "--vcpus",
                "2",
                "--memory",
                "64M",
            ],
        ),
        (
            "memory size",
            vec![
                "--kernel",
                k,
                "--initrd",
                i,
                "--append",
                "console=ttyS0",
                "--vcpus",
                "1",
                "--memory",
                "68M",
            ],
        ),
        (
            "a disk",
            vec![
                "--kernel",
                k,
                "--initrd",
                i,
                "--append",
                "console=ttyS0",
                "--vcpus",
                "1",
                "--memory",
                "64M",
                "--disks",
                "1",
            ],
        ),
    ];
    let mut seen = vec![base.clone()];
    for (what, args) in &variants {
        let p = predict(args);
        assert!(!seen.contains(&p), "{what} did not change the prediction");
        seen.push(p);
    }
    assert_ne!(
        predict(&[&base_args[..], &["--platform", "snp"]].concat()),
        base,
        "platform"
    );

    // The launch itself measures what was predicted; a policy naming the changed
    // command line's measurement refuses its report.
    let launch = run_sim(
        &["--kernel", k, "--initrd", i, "--memory", "64M"],
        "console=ttyS0",
    );
    assert_eq!(
        launch.code,
        Some(0),
        "{}\n{}",
        launch.stderr,
        launch.console
    );
    let report = report_of(&launch.console);
    assert_eq!(hex::encode(&report[0x90..0xc0]), base);
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &report).unwrap();
    let (code, out) = verify(&file, &format!("measurements = [\"{}\"]\n", seen[3]), true);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("policy.measurement"), "{out}");
}

/// The simulated PSP refuses a replayed message, a forged one and one under the wrong
/// key, as the firmware does; the guest sees the refusal.
#[test]
fn replayed_forged_and_wrong_key_messages_are_refused() {
    for mode in ["replay", "forge", "wrongkey"] {
        let launch = run_sim(&[], &format!("console=ttyS0 cloister_test.attest={mode}"));
        assert!(
            launch
                .console
                .contains(&format!("CLOISTER-ATTEST: {mode} refused status=0x16")),
            "{mode}: {}\n{}",
            launch.console,
            launch.stderr
        );
        assert!(
            !launch.console.contains("ACCEPTED"),
            "{mode}: {}",
            launch.console
        );
    }
}

#[test]
fn a_plain_launch_has_no_cc_blob_and_snp_refuses_here_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let out = Command::new(cloister())
        .args(["run", "--serial"])
        .arg(format!("file={}", console.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = std::fs::read_to_string(&console).unwrap();
    assert!(log.contains("CLOISTER-ATTEST: none (no CC blob)"), "{log}");

    let out = Command::new(cloister())
        .args(["run", "--platform", "snp", "--sev-device"])
        .arg(dir.path().join("sev"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--platform snp") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Each launch-time rule of the tenant policy refuses its launch before the VM exists,
/// naming the rule, in `run` and in `measure --layout cloister`.
#[test]
fn launches_the_policy_forbids_are_refused_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let disk_arg = format!("path={},readonly=on", disk.display());
    let cases: [(&str, &str, &[&str]); 5] = [
        ("", "launch.require_snp", &["--platform", "none"]),
        ("", "launch.allow_simulation", &["--platform", "sim"]),
        (
            "allow_smt = false\n[launch]\nallow_simulation = true\n",
            "allow_smt",
            &["--platform", "sim"],
        ),
        (
            "require_single_socket = true\n[launch]\nallow_simulation = true\n",
            "require_single_socket",
            &["--platform", "sim"],
        ),
        (
            "[launch]\nallow_simulation = true\nallow_shared_memory = false\n",
            "launch.allow_shared_memory",
            &["--platform", "sim", "--disk", &disk_arg],
        ),
    ];
    for (i, (policy, rule, args)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("policy{i}.toml"));
        std::fs::write(&file, policy).unwrap();
        let out = Command::new(cloister())
            .args(["run", "--sim-root"])
            .arg(sim_root())
            .args(*args)
            .arg("--policy")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{rule}: {stderr}");
        assert!(
            stderr.contains(&format!("policy rule `{rule}`")),
            "{rule}: {stderr}"
        );
        assert!(
            !stderr.contains("launch measurement"),
            "{rule}: refused before the launch: {stderr}"
        );
    }
    // measure refuses what run refuses.
    let file = dir.path().join("policy1.toml");
    let out = Command::new(cloister())
        .args([
            "measure",
            "--layout",
            "cloister",
            "--platform",
            "sim",
            "--policy",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("launch.allow_simulation"));
    // A policy that allows it gives the guest policy it derives.
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[launch]\nallow_simulation = true\n").unwrap();
    let launch = run_sim(&["--policy", ok.to_str().unwrap()], "console=ttyS0");
    assert_eq!(launch.code, Some(0), "{}", launch.stderr);
    let report = report_of(&launch.console);
    assert_eq!(
        u64::from_le_bytes(report[8..16].try_into().unwrap()),
        0x3_0000,
        "POLICY in the report is the one the policy file gives"
    );
}

/// The DER length of the one certificate in a PEM file.
fn der_len(pem_path: &Path) -> usize {
    let text = std::fs::read_to_string(pem_path).unwrap();
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    // base64 without padding arithmetic: decoded length = 3/4 of the text minus padding.
    body.len() / 4 * 3 - body.chars().rev().take_while(|c| *c == '=').count()
}

#[test]
fn the_guest_gets_the_certificate_table_over_the_ghcb() {
    // Default: the simulation root's chain, in the GHCB table order ARK, ASK, VCEK.
    let run = run_sim(&[], "console=ttyS0");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, run.console);
    assert!(
        run.console
            .contains("GHCB: simulated SNP platform (VMGEXIT by doorbell"),
        "{}",
        run.console
    );
    let certs = sim_root().join("certs");
    let expected = format!(
        "CLOISTER-CERTS: 3 in the table ARK={} ASK={} VCEK={}",
        der_len(&certs.join("ark.pem")),
        der_len(&certs.join("ask.pem")),
        der_len(&certs.join("vcek.pem"))
    );
    assert!(
        run.console.contains(&expected),
        "want {expected}:\n{}",
        run.console
    );

    // A buffer of one page is too small for the three certificates: the host answers
    // "invalid length" with the pages it needs, the guest asks again without the buffer,
    // and the report still comes back and verifies.
    let run = run_sim(&[], "console=ttyS0 cloister_test.cert_pages=1");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, run.console);
    assert!(
        run.console
            .contains("CLOISTER-CERTS: buffer too small: the host needs 2 pages"),
        "{}",
        run.console
    );
    assert!(
        run.console.contains("CLOISTER-ATTEST: ok"),
        "{}",
        run.console
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    std::fs::write(&log, &run.console).unwrap();
    let (code, out) = verify(&log, "", true);
    assert_eq!(code, Some(0), "{out}");

    // The user's certificates are served instead when given (here a real Milan chain:
    // the guest only sees the table, the report is still the simulation's).
    let vectors = workspace_root().join("../shared/vectors/snp/milan-v2-vcek");
    let run = run_sim(
        &["--guest-certs", vectors.to_str().unwrap()],
        "console=ttyS0",
    );
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, run.console);
    let vcek = std::fs::metadata(vectors.join("vek.der")).unwrap().len();
    assert!(
        run.console.contains(&format!("VCEK={vcek}")),
        "{}",
        run.console
    );
    // A directory without certificates is refused before the VM exists, naming it.
    let empty = tempfile::tempdir().unwrap();
    let run = run_sim(
        &["--guest-certs", empty.path().to_str().unwrap()],
        "console=ttyS0",
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(&empty.path().display().to_string()),
        "{}",
        run.stderr
    );
}
