//! ID blocks end to end on the simulated SEV-SNP platform, through the built binary:
//! `cloister id-block` signs an ID block for the launch `cloister measure --layout cloister`
//! predicts; `cloister run --platform sim --id-block --id-auth` hands it to
//! SNP_LAUNCH_FINISH, where the simulated PSP checks it; the guest's report names the ID
//! key (and the author key), and `cloister verify` accepts it under a policy that trusts
//! the digests `id-block` printed. An ID block for another launch is refused at
//! LAUNCH_FINISH (BAD_MEASUREMENT) before the guest runs. Keys are made here, per run.
//! Needs /dev/kvm (fails loudly without it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloister_attestation::id_block::public_key_digest;
use cloister_attestation::report::AttestationReport;
use cloister_tests::{cloister, sim_root};
use p384::ecdsa::SigningKey;
use p384::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh P-384 key written to `dir/name` as PKCS#8 PEM (`sec1`: SEC1 PEM).
fn key_file(dir: &Path, name: &str, sec1: bool) -> (SigningKey, PathBuf) {
    let key = SigningKey::random(&mut rand_core::OsRng);
    let pem = if sec1 {
        p384::SecretKey::from(&key)
            .to_sec1_pem(LineEnding::LF)
            .unwrap()
    } else {
        key.to_pkcs8_pem(LineEnding::LF).unwrap()
    };
    let path = dir.join(name);
    std::fs::write(&path, pem.as_bytes()).unwrap();
    (key, path)
}

/// `cloister id-block ARGS --out-dir OUT`, which must succeed; its stdout (the policy lines).
fn id_block(args: &[&str], out_dir: &Path) -> String {
    let out = Command::new(cloister())
        .arg("id-block")
        .args(args)
        .arg("--out-dir")
        .arg(out_dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "id-block {args:?}: {stderr}");
    assert_eq!(
        std::fs::metadata(out_dir.join("id_block.bin"))
            .unwrap()
            .len(),
        96
    );
    assert_eq!(
        std::fs::metadata(out_dir.join("id_auth.bin"))
            .unwrap()
            .len(),
        4096
    );
    stdout
}

/// The hex digest in the policy line `field = ["..."]`.
fn digest_line(policy_lines: &str, field: &str) -> String {
    let prefix = format!("{field} = [\"");
    policy_lines
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix("\"]"))
        .unwrap_or_else(|| panic!("no {field} line in:\n{policy_lines}"))
        .to_string()
}

fn predict(args: &[&str]) -> String {
    let out = Command::new(cloister())
        .args(["measure", "--layout", "cloister", "--platform", "sim"])
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}: {stderr}");
    stdout.trim().to_string()
}

struct Launch {
    code: Option<i32>,
    console: String,
    stderr: String,
    console_path: PathBuf,
}

/// `cloister run --platform sim` with the console in `dir/console.log`.
fn run_sim(dir: &Path, cmdline: &str, extra: &[&str]) -> Launch {
    let console_path = dir.join("console.log");
    let out = Command::new(cloister())
        .args(["run", "--platform", "sim", "--sim-root"])
        .arg(sim_root())
        .arg("--serial")
        .arg(format!("file={}", console_path.display()))
        .args(["--cmdline", cmdline])
        .args(extra)
        .output()
        .unwrap();
    Launch {
        code: out.status.code(),
        console: std::fs::read_to_string(&console_path).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        console_path,
    }
}

fn report_of(console: &str) -> AttestationReport {
    let line = console
        .lines()
        .find_map(|l| l.strip_prefix("CLOISTER-REPORT: "))
        .unwrap_or_else(|| panic!("no report on the console:\n{console}"));
    AttestationReport::from_bytes(&hex::decode(line.trim()).unwrap()).unwrap()
}

/// `cloister verify` of the console's report under the sim root with `policy`.
fn verify(console: &Path, policy: &str) -> (Option<i32>, String) {
    let file = console.with_file_name("policy.toml");
    std::fs::write(&file, policy).unwrap();
    let out = Command::new(cloister())
        .arg("verify")
        .arg("--report")
        .arg(console)
        .arg("--certs")
        .arg(sim_root().join("certs"))
        .arg("--trust-sim-root")
        .arg("--policy")
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    (out.status.code(), format!("{stdout}{stderr}"))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_signed_id_block_launches_and_the_report_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (id_key, id_pem) = key_file(dir.path(), "id.pem", false);
    let out = dir.path().join("out");
    let cmdline = "console=ttyS0";
    let lines = id_block(
        &[
            "--platform",
            "sim",
            "--append",
            cmdline,
            "--id-key",
            path(&id_pem),
            "--family-id",
            "f00d",
            "--image-id",
            &"1d".repeat(16),
            "--svn",
            "3",
        ],
        &out,
    );
    let digest = digest_line(&lines, "trusted_id_key_digests");
    assert_eq!(
        digest,
        hex::encode(public_key_digest(id_key.verifying_key()))
    );
    assert!(!lines.contains("author"), "{lines}");
    // The block's LD is the prediction of `measure` for the same inputs.
    let predicted = predict(&["--append", cmdline]);
    let block = std::fs::read(out.join("id_block.bin")).unwrap();
    assert_eq!(hex::encode(&block[..48]), predicted);

    let launch = run_sim(
        dir.path(),
        cmdline,
        &[
            "--id-block",
            path(&out.join("id_block.bin")),
            "--id-auth",
            path(&out.join("id_auth.bin")),
        ],
    );
    assert_eq!(
        launch.code,
        Some(0),
        "{}\n{}",
        launch.stderr,
        launch.console
    );
    assert!(
        launch.console.contains("CLOISTER-GUEST: PASS"),
        "{}",
        launch.console
    );
    let report = report_of(&launch.console);
    assert_eq!(hex::encode(report.measurement), predicted);
    assert_eq!(hex::encode(report.id_key_digest), digest, "ID_KEY_DIGEST");
    assert!(!report.key_info.author_key_en);
    assert_eq!(report.author_key_digest, [0; 48]);
    let mut family = [0u8; 16];
    family[..2].copy_from_slice(&[0xf0, 0x0d]);
    assert_eq!(report.family_id, family);
    assert_eq!(report.image_id, [0x1d; 16]);
    assert_eq!(report.guest_svn, 3);

    // The printed lines, pasted into a policy, accept the report.
    let policy = format!("measurements = [\"{predicted}\"]\n{lines}");
    let (code, verdict) = verify(&launch.console_path, &policy);
    assert_eq!(code, Some(0), "{verdict}");
    assert!(verdict.contains("VERDICT: ACCEPTED"), "{verdict}");
    assert!(verdict.contains("policy.id_block"), "{verdict}");
    // A policy that trusts another ID key refuses it.
    let other = SigningKey::random(&mut rand_core::OsRng);
    let policy = format!(
        "require_id_block = true\ntrusted_id_key_digests = [\"{}\"]\n",
        hex::encode(public_key_digest(other.verifying_key()))
    );
    let (code, verdict) = verify(&launch.console_path, &policy);
    assert_eq!(code, Some(1), "{verdict}");
    assert!(verdict.contains("policy.id_block"), "{verdict}");
}

#[test]
fn an_author_key_signs_the_id_key_and_the_report_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let (id_key, id_pem) = key_file(dir.path(), "id.pem", true);
    let (author_key, author_pem) = key_file(dir.path(), "author.pem", false);
    let out = dir.path().join("out");
    let cmdline = "console=ttyS0";
    let lines = id_block(
        &[
            "--platform",
            "sim",
            "--vcpus",
            "2",
            "--append",
            cmdline,
            "--id-key",
            path(&id_pem),
            "--author-key",
            path(&author_pem),
        ],
        &out,
    );
    let id_digest = digest_line(&lines, "trusted_id_key_digests");
    let author_digest = digest_line(&lines, "trusted_author_key_digests");
    assert_eq!(
        id_digest,
        hex::encode(public_key_digest(id_key.verifying_key()))
    );
    assert_eq!(
        author_digest,
        hex::encode(public_key_digest(author_key.verifying_key()))
    );
    let (block, auth) = (out.join("id_block.bin"), out.join("id_auth.bin"));
    let files = ["--id-block", path(&block), "--id-auth", path(&auth)];
    let launch = run_sim(
        dir.path(),
        cmdline,
        &[&files[..], &["--cpus", "2", "--id-author-key"]].concat(),
    );
    assert_eq!(
        launch.code,
        Some(0),
        "{}\n{}",
        launch.stderr,
        launch.console
    );
    let report = report_of(&launch.console);
    assert!(report.key_info.author_key_en, "AUTHOR_KEY_EN");
    assert_eq!(hex::encode(report.id_key_digest), id_digest);
    assert_eq!(hex::encode(report.author_key_digest), author_digest);
    let (code, verdict) = verify(&launch.console_path, &lines);
    assert_eq!(code, Some(0), "{verdict}");
    assert!(verdict.contains("policy.author_key"), "{verdict}");

    // Without --id-author-key the author key is not used (AUTHOR_KEY_EN is never
    // inferred), and `run` says so.
    let launch = run_sim(
        dir.path(),
        cmdline,
        &[&files[..], &["--cpus", "2"]].concat(),
    );
    assert_eq!(
        launch.code,
        Some(0),
        "{}\n{}",
        launch.stderr,
        launch.console
    );
    assert!(
        launch.stderr.contains("without --id-author-key"),
        "{}",
        launch.stderr
    );
    let report = report_of(&launch.console);
    assert!(!report.key_info.author_key_en);
    assert_eq!(report.author_key_digest, [0; 48]);
    assert_eq!(hex::encode(report.id_key_digest), id_digest);
    let (code, verdict) = verify(&launch.console_path, &lines);
    assert_eq!(code, Some(1), "{verdict}");
    assert!(verdict.contains("policy.author_key"), "{verdict}");
}

/// An ID block signed for another launch (one more vCPU, another command line) is refused
/// by SNP_LAUNCH_FINISH, naming BAD_MEASUREMENT; one changed after signing is
/// BAD_SIGNATURE; one for another guest policy POLICY_FAILURE; VERSION 2 INVALID_PARAM.
/// The guest never runs.
#[test]
fn an_id_block_for_another_launch_is_refused_at_launch_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (_, id_pem) = key_file(dir.path(), "id.pem", false);
    let cmdline = "console=ttyS0";
    let expected = predict(&["--append", cmdline]);
    let signed_for = |name: &str, args: &[&str]| {
        let out = dir.path().join(name);
        id_block(&[&["--id-key", path(&id_pem)], args].concat(), &out);
        out
    };
    let two_vcpus = signed_for(
        "two-vcpus",
        &["--platform", "sim", "--vcpus", "2", "--append", cmdline],
    );
    let other_cmdline = signed_for(
        "other-cmdline",
        &["--platform", "sim", "--append", "console=ttyS0 quiet"],
    );
    let good = signed_for("good", &["--measurement", &expected]);
    let mut altered = std::fs::read(good.join("id_block.bin")).unwrap();
    altered[0x54] ^= 1; // GUEST_SVN
    let altered_block = dir.path().join("altered.bin");
    std::fs::write(&altered_block, &altered).unwrap();
    let other_policy = signed_for(
        "other-policy",
        &["--measurement", &expected, "--guest-policy", "0x70000"],
    );
    let version_2 = signed_for("version-2", &["--measurement", &expected, "--version", "2"]);
    let cases: [(&str, PathBuf, PathBuf, &str); 5] = [
        (
            "one more vCPU",
            two_vcpus.join("id_block.bin"),
            two_vcpus.join("id_auth.bin"),
            "BAD_MEASUREMENT (0x0b)",
        ),
        (
            "another command line",
            other_cmdline.join("id_block.bin"),
            other_cmdline.join("id_auth.bin"),
            "BAD_MEASUREMENT (0x0b)",
        ),
        (
            "changed after signing",
            altered_block,
            good.join("id_auth.bin"),
            "BAD_SIGNATURE (0x0a)",
        ),
        (
            "another guest policy",
            other_policy.join("id_block.bin"),
            other_policy.join("id_auth.bin"),
            "POLICY_FAILURE (0x07)",
        ),
        (
            "an ID block VERSION the ABI does not define",
            version_2.join("id_block.bin"),
            version_2.join("id_auth.bin"),
            "INVALID_PARAM (0x16)",
        ),
    ];
    for (what, block, auth, status) in cases {
        let run_dir = tempfile::tempdir().unwrap();
        let launch = run_sim(
            run_dir.path(),
            cmdline,
            &["--id-block", path(&block), "--id-auth", path(&auth)],
        );
        assert_eq!(launch.code, Some(1), "{what}: {}", launch.stderr);
        assert!(
            launch
                .stderr
                .contains("SNP_LAUNCH_FINISH refused the ID block")
                && launch.stderr.contains(status),
            "{what}: {}",
            launch.stderr
        );
        assert!(
            !launch.console.contains("CLOISTER-GUEST"),
            "{what}: the guest ran: {}",
            launch.console
        );
        assert!(
            !launch.stderr.contains("launch measurement"),
            "{what}: no launch to announce: {}",
            launch.stderr
        );
        if status.starts_with("BAD_MEASUREMENT") {
            // Both digests are named: the block's LD and this launch's.
            assert!(launch.stderr.contains(&expected), "{}", launch.stderr);
        }
    }
    // The same good block launches.
    let launch = run_sim(
        dir.path(),
        cmdline,
        &[
            "--id-block",
            path(&good.join("id_block.bin")),
            "--id-auth",
            path(&good.join("id_auth.bin")),
        ],
    );
    assert_eq!(launch.code, Some(0), "{}", launch.stderr);
}

/// Files of the wrong size, a missing file, an ID block without SNP and an author key
/// asked for but absent are refused before the VM exists, naming the file or flag.
#[test]
fn unusable_id_block_files_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_, id_pem) = key_file(dir.path(), "id.pem", false);
    let out = dir.path().join("out");
    id_block(
        &["--measurement", &"00".repeat(48), "--id-key", path(&id_pem)],
        &out,
    );
    let block = out.join("id_block.bin");
    let auth = out.join("id_auth.bin");
    let short_block = dir.path().join("short_block.bin");
    std::fs::write(&short_block, [0u8; 95]).unwrap();
    let long_auth = dir.path().join("long_auth.bin");
    std::fs::write(&long_auth, vec![0u8; 4097]).unwrap();
    let missing = dir.path().join("missing.bin");
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec![
                "--platform",
                "sim",
                "--id-block",
                path(&short_block),
                "--id-auth",
                path(&auth),
            ],
            vec![
                path(&short_block).into(),
                "95 bytes".into(),
                "96 bytes".into(),
            ],
        ),
        (
            vec![
                "--platform",
                "sim",
                "--id-block",
                path(&block),
                "--id-auth",
                path(&long_auth),
            ],
            vec![
                path(&long_auth).into(),
                "4097 bytes".into(),
                "4096 bytes".into(),
            ],
        ),
        (
            vec![
                "--platform",
                "sim",
                "--id-block",
                path(&missing),
                "--id-auth",
                path(&auth),
            ],
            vec![path(&missing).into(), "No such file".into()],
        ),
        (
            vec![
                "--platform",
                "none",
                "--id-block",
                path(&block),
                "--id-auth",
                path(&auth),
            ],
            vec!["--platform sim or snp".into(), "--platform none".into()],
        ),
        (
            vec![
                "--platform",
                "sim",
                "--id-block",
                path(&block),
                "--id-auth",
                path(&auth),
                "--id-author-key",
            ],
            vec![path(&auth).into(), "no author key".into()],
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(cloister())
            .args(["run", "--serial", "off", "--sim-root"])
            .arg(sim_root())
            .args(&args)
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        for e in expected {
            assert!(stderr.contains(&e), "{args:?}: {e:?} missing: {stderr}");
        }
    }
    // Both files or neither: a usage error.
    let out = Command::new(cloister())
        .args(["run", "--platform", "sim", "--id-block"])
        .arg(&block)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--id-auth"), "{stderr}");
}

/// `id-block` with --measurement signs the same bytes as with the launch's inputs
/// (signatures are deterministic); bad keys and bad arguments are named.
#[test]
fn id_block_takes_a_measurement_or_the_launch_and_names_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (key, id_pem) = key_file(dir.path(), "id.pem", false);
    let from_inputs = dir.path().join("inputs");
    let from_measurement = dir.path().join("measurement");
    let launch = [
        "--platform",
        "sim",
        "--vcpus",
        "2",
        "--append",
        "console=ttyS0",
    ];
    let lines = id_block(
        &[&launch[..], &["--id-key", path(&id_pem)]].concat(),
        &from_inputs,
    );
    let measurement = predict(&launch[2..]);
    let lines2 = id_block(
        &["--measurement", &measurement, "--id-key", path(&id_pem)],
        &from_measurement,
    );
    assert_eq!(
        lines.lines().skip(1).collect::<Vec<_>>(),
        lines2.lines().skip(1).collect::<Vec<_>>()
    );
    for file in ["id_block.bin", "id_auth.bin"] {
        assert_eq!(
            std::fs::read(from_inputs.join(file)).unwrap(),
            std::fs::read(from_measurement.join(file)).unwrap(),
            "{file}"
        );
    }

    let public = dir.path().join("public.pem");
    std::fs::write(
        &public,
        key.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let m = "00".repeat(48);
    let long_id = "00".repeat(17);
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["--measurement", &m, "--id-key", path(&public)],
            1,
            vec!["--id-key", path(&public), "PUBLIC KEY", "not a private key"],
        ),
        (
            vec![
                "--measurement",
                &m,
                "--id-key",
                path(&id_pem),
                "--author-key",
                path(&garbage),
            ],
            1,
            vec!["--author-key", path(&garbage), "no PEM block"],
        ),
        (
            vec!["--measurement", "abcd", "--id-key", path(&id_pem)],
            1,
            vec!["--measurement", "96 digits"],
        ),
        (
            vec![
                "--measurement",
                &m,
                "--id-key",
                path(&id_pem),
                "--family-id",
                &long_id,
            ],
            1,
            vec!["--family-id", "16 bytes"],
        ),
        (
            vec![
                "--measurement",
                &m,
                "--vcpus",
                "2",
                "--id-key",
                path(&id_pem),
            ],
            2,
            vec!["--vcpus"],
        ),
        (
            vec!["--guest-policy", "0x30000", "--id-key", path(&id_pem)],
            2,
            vec!["--measurement"],
        ),
    ];
    for (args, code, expected) in cases {
        let out = Command::new(cloister())
            .arg("id-block")
            .args(&args)
            .arg("--out-dir")
            .arg(dir.path().join("refused"))
            .output()
            .unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{args:?}: {e:?} missing: {stderr}");
        }
    }
    assert!(!dir.path().join("refused").exists(), "nothing written");
}
