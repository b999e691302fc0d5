//! `scripts/snp-acceptance.sh`, the SEV-SNP hardware acceptance run.
//!
//! - On this machine (no /dev/sev) it must stop at step 1, naming what is missing, with
//!   status 3 and every later step reported STOPPED.
//! - Its KDS helper must build AMD's VCEK URLs from real reports (the vectors in
//!   `../shared/vectors/snp`) and refuse reports the KDS cannot serve.
//! - Steps 2-6 run against a stand-in `cloister` (a shell script that answers `probe`,
//!   `measure` and `run` the way an SNP host would, with a real AMD report on the guest's
//!   console, and hands `verify` to the real binary): PASS end to end, FAIL when the
//!   prediction is wrong, FAIL on a garbled report line, STOPPED without certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cloister_tests::{cloister, workspace_root};

/// The script's status when it stops (host not capable, input missing).
const STOPPED: i32 = 3;

fn script() -> PathBuf {
    workspace_root().join("scripts/snp-acceptance.sh")
}

fn vector(set: &str, file: &str) -> PathBuf {
    workspace_root()
        .join("../shared/vectors/snp")
        .join(set)
        .join(file)
}

fn run_script(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command.arg(script()).args(args).stdin(Stdio::null());
    command.env_remove("CLOISTER_BIN");
    for (key, value) in envs {
        command.env(key, value);
    }
    command.output().expect("cannot run bash")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The line of step `n` in the verdict table.
fn step_line(stdout: &str, n: usize) -> &str {
    let prefix = format!("  {n} ");
    stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no line for step {n} in:\n{stdout}"))
}

#[test]
fn stops_at_the_probe_on_this_host() {
    if Path::new("/dev/sev").exists() {
        eprintln!("this host has /dev/sev: the run would go past the probe; not checked here");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let bin = cloister().to_str().unwrap().to_string();
    let out = run_script(
        &[
            "--cloister",
            &bin,
            "--out",
            out_dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(STOPPED),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert_eq!(
        step_line(&stdout, 1),
        "  1 probe         STOPPED  this host cannot launch SEV-SNP guests: /dev/sev does not \
         exist: no AMD secure processor device on this host. SEV-SNP needs an AMD EPYC host \
         (Milan or later) with SEV-SNP enabled in the firmware setup and the ccp driver loaded \
         (`modprobe ccp`)"
    );
    for (n, name) in [
        (2, "predict"),
        (3, "launch"),
        (4, "report"),
        (5, "certificates"),
        (6, "verify"),
    ] {
        let line = step_line(&stdout, n);
        assert!(
            line.contains(name) && line.contains("STOPPED  not run (step 1, probe, did not pass)"),
            "{line}"
        );
    }
    assert!(stdout.contains(
        "VERDICT: STOPPED at step 1 (probe): this host cannot launch SEV-SNP guests, so \
         nothing was launched and nothing is proven."
    ));
    // Nothing was predicted or launched.
    assert!(out_dir.path().join("probe.log").exists());
    assert!(!out_dir.path().join("measure.out").exists());
    assert!(!out_dir.path().join("serial.log").exists());
}

#[test]
fn kds_urls_come_from_the_report() {
    // Milan, version 2: the report cannot tell Milan from Genoa.
    let milan = vector("milan-v2-vcek", "report.bin");
    let report = std::fs::read(&milan).unwrap();
    let out = run_script(&["--kds-url", milan.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pass --product milan|genoa|turin"));

    let out = run_script(
        &["--kds-url", milan.to_str().unwrap(), "--product", "milan"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let chip_id = hex::encode(&report[0x1a0..0x1e0]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "https://kdsintf.amd.com/vcek/v1/Milan/{chip_id}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115\n\
             https://kdsintf.amd.com/vcek/v1/Milan/cert_chain\n"
        )
    );

    // Turin, version 5: the CPUID fields name the product; the hwID is 8 bytes and the
    // TCB layout has the FMC first.
    let turin = vector("turin-v5-vcek", "report.bin");
    let report = std::fs::read(&turin).unwrap();
    let out = run_script(&["--kds-url", turin.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hwid = hex::encode(&report[0x1a0..0x1a8]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "https://kdsintf.amd.com/vcek/v1/Turin/{hwid}?fmcSPL=01&blSPL=03&teeSPL=02&snpSPL=05&ucodeSPL=97\n\
             https://kdsintf.amd.com/vcek/v1/Turin/cert_chain\n"
        )
    );

    // A VLEK-signed report: the KDS has no VCEK to give.
    let vlek = vector("milan-v3-vlek", "report.bin");
    let out = run_script(&["--kds-url", vlek.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("signed by a VLEK, which the KDS does not serve"),
        "{}",
        text(&out.stderr)
    );
}

/// A stand-in `cloister` for an SNP host: `probe` passes, `measure` prints
/// `$STUB_MEASUREMENT`, `run` writes `$STUB_REPORT_HEX` as the guest's report line to the
/// serial file, `verify` is the real binary. Every call is logged to `$STUB_LOG`.
fn stand_in(dir: &Path) -> PathBuf {
    let path = dir.join("cloister");
    let body = format!(
        r#"#!/usr/bin/env bash
echo "$*" >>"$STUB_LOG"
case "$1" in
    probe) echo "SEV-SNP host: ready (stand-in)" ;;
    measure) echo "$STUB_MEASUREMENT" ;;
    run)
        for arg in "$@"; do
            case "$arg" in file=*) serial=${{arg#file=}} ;; esac
        done
        printf 'CLOISTER-GUEST: boot\nCLOISTER-ATTEST: ok\nCLOISTER-REPORT: %s\n' "$STUB_REPORT_HEX" >"$serial"
        ;;
    verify) exec {real} "$@" ;;
    *) exit 2 ;;
esac
"#,
        real = cloister().display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct StandInRun {
    dir: tempfile::TempDir,
    stub: PathBuf,
    kernel: PathBuf,
    report: Vec<u8>,
}

impl StandInRun {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stub = stand_in(dir.path());
        let kernel = dir.path().join("kernel");
        std::fs::write(&kernel, b"not a kernel: the stand-in never reads it").unwrap();
        // AMD's certificates as snpguest names them.
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::copy(vector("milan-v2-vcek", "vek.der"), certs.join("vcek.der")).unwrap();
        std::fs::copy(
            vector("milan-v2-vcek", "chain.pem"),
            certs.join("cert_chain.pem"),
        )
        .unwrap();
        let report = std::fs::read(vector("milan-v2-vcek", "report.bin")).unwrap();
        StandInRun {
            dir,
            stub,
            kernel,
            report,
        }
    }

    fn measurement(&self) -> String {
        hex::encode(&self.report[0x90..0xc0])
    }

    fn run(&self, measurement: &str, report_hex: &str, with_certs: bool) -> (Output, String) {
        let out_dir = self.dir.path().join("out");
        let log = self.dir.path().join("calls.log");
        let _ = std::fs::remove_file(&log);
        let host_data = hex::encode(&self.report[0xc0..0xe0]);
        let certs = self.dir.path().join("certs");
        let mut args = vec![
            "--cloister",
            self.stub.to_str().unwrap(),
            "--kernel",
            self.kernel.to_str().unwrap(),
            "--append",
            "console=ttyS0",
            "--vcpus",
            "2",
            "--memory",
            "512M",
            "--host-data",
            &host_data,
            "--product",
            "milan",
            "--out",
            out_dir.to_str().unwrap(),
        ];
        if with_certs {
            args.extend(["--certs", certs.to_str().unwrap()]);
        }
        let out = run_script(
            &args,
            &[
                ("STUB_LOG", log.to_str().unwrap()),
                ("STUB_MEASUREMENT", measurement),
                ("STUB_REPORT_HEX", report_hex),
            ],
        );
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (out, calls)
    }
}

#[test]
fn a_real_report_passes_every_step_with_a_stand_in_host() {
    let run = StandInRun::new();
    let (out, calls) = run.run(&run.measurement(), &hex::encode(&run.report), true);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for n in 1..=6 {
        assert!(step_line(&stdout, n).contains(" PASS "), "{stdout}");
    }
    assert!(stdout.contains(&format!(
        "VERDICT: PASS: launched on SEV-SNP with the predicted measurement {}",
        run.measurement()
    )));
    // The flags each step passed.
    let kernel = run.kernel.display();
    let host_data = hex::encode(&run.report[0xc0..0xe0]);
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines[0],
        "probe --kvm-device /dev/kvm --sev-device /dev/sev"
    );
    assert_eq!(
        lines[1],
        format!(
            "measure --layout cloister --platform snp --kernel {kernel} --vcpus 2 --memory 512M --append console=ttyS0"
        )
    );
    assert!(
        lines[2].starts_with(&format!(
            "run --platform snp --kernel {kernel} --cpus 2 --memory 512M --host-data {host_data} --serial file="
        )) && lines[2].ends_with("--kvm-device /dev/kvm --sev-device /dev/sev --cmdline console=ttyS0"),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("verify --report "), "{}", lines[3]);
    // The decoded report is the guest's, byte for byte.
    let decoded = std::fs::read(run.dir.path().join("out/report.bin")).unwrap();
    assert_eq!(decoded, run.report);
    let policy = std::fs::read_to_string(run.dir.path().join("out/verify-policy.toml")).unwrap();
    assert!(policy.contains(&format!("measurements = [\"{}\"]", run.measurement())));
    assert!(policy.contains(&format!("host_data = \"{host_data}\"")));
}

#[test]
fn a_wrong_prediction_fails_verification() {
    let run = StandInRun::new();
    let wrong = "ab".repeat(48);
    let (out, _) = run.run(&wrong, &hex::encode(&run.report), true);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(step_line(&stdout, 6).contains(" FAIL "), "{stdout}");
    assert!(
        stdout.contains("VERDICT: FAIL at step 6 (verify): rejected"),
        "{stdout}"
    );
    let verdict = std::fs::read_to_string(run.dir.path().join("out/verify.out")).unwrap();
    assert!(verdict.contains(&wrong), "{verdict}");
}

#[test]
fn a_garbled_report_line_fails_the_report_step() {
    let run = StandInRun::new();
    let short = hex::encode(&run.report[..1000]);
    let (out, _) = run.run(&run.measurement(), &short, true);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        step_line(&stdout, 4).contains("FAIL     the CLOISTER-REPORT line of")
            && step_line(&stdout, 4).contains("is not 1184 bytes of hex (2000 characters)"),
        "{stdout}"
    );
    assert!(step_line(&stdout, 5).contains("STOPPED  not run (step 4, report"));
}

#[test]
fn without_certificates_the_run_stops_and_says_where_to_get_them() {
    let run = StandInRun::new();
    let (out, _) = run.run(&run.measurement(), &hex::encode(&run.report), false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(STOPPED), "{stdout}");
    let line = step_line(&stdout, 5);
    assert!(line.contains("STOPPED  no certificates"), "{line}");
    assert!(line.contains("snpguest certificates PEM DIR"), "{line}");
    assert!(
        line.contains("https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"),
        "{line}"
    );
    assert!(stdout.contains("VERDICT: STOPPED at step 5 (certificates)"));
}
