//! `cloister verify` on the real vectors in `../shared/vectors/snp` (the sibling of the
//! repository), through the built binary: the verdict, the exit status (0 accepted,
//! 1 rejected, 2 unusable input), the file layouts users have, and the errors for bad input.
//!
//! Which binary: `$CLOISTER_BIN` when set, else `target/<profile>/cloister` next to this
//! test executable, built first with `cargo build -p cloister-vmm --bin cloister` for the
//! same profile (a no-op when up to date).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloister_tests::{cloister, workspace_root};

#[path = "../../attestation/tests/common/amd_pki.rs"]
mod amd_pki;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp")
}

fn v(rel: &str) -> String {
    vectors().join(rel).display().to_string()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn verify(args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(cloister())
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Asserts exit status 1 and a verdict rejected by exactly the one check `check`.
fn assert_rejected_by_one(r: &Run, check: &str) {
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let verdict = format!("REJECTED (1 failed: {check})");
    assert!(r.stdout.contains(&verdict), "{}", r.stdout);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const BEFORE_VLEK_EXPIRY: &str = "2025-06-01T00:00:00Z";

#[test]
fn plain_vcek_vectors_are_accepted_with_default_policy() {
    for set in ["milan-v2-vcek", "turin-v5-vcek"] {
        let r = verify(&[
            "--report",
            &v(&format!("{set}/report.bin")),
            "--vek",
            &v(&format!("{set}/vek.der")),
        ]);
        assert_eq!(r.code, 0, "{set}\n{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("VERDICT: ACCEPTED"), "{}", r.stdout);
        let r = verify(&[
            "--report",
            &v(&format!("{set}/report.bin")),
            "--vek",
            &v(&format!("{set}/vek.der")),
            "--chain",
            &v(&format!("{set}/chain.pem")),
            "--json",
        ]);
        assert_eq!(r.code, 0, "{set}\n{}{}", r.stdout, r.stderr);
        let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(json["accepted"], true);
    }
}

#[test]
fn every_vector_is_accepted_by_a_policy_that_allows_its_facts() {
    let dir = tempfile::tempdir().unwrap();
    let lenient = write(
        dir.path(),
        "lenient.toml",
        "permit_provisional_firmware = true\nvmpl = \"any\"\n",
    );
    for set in [
        "milan-v2-vcek",
        "milan-v2-tcb-skew",
        "milan-v3-vlek",
        "turin-v5-vcek",
    ] {
        let r = verify(&[
            "--report",
            &v(&format!("{set}/report.bin")),
            "--vek",
            &v(&format!("{set}/vek.der")),
            "--chain",
            &v(&format!("{set}/chain.pem")),
            "--policy",
            &lenient,
            "--at",
            BEFORE_VLEK_EXPIRY,
        ]);
        // The Turin VCEK was issued in 2026: at the VLEK's instant it is not yet valid.
        if set == "turin-v5-vcek" {
            assert_eq!(r.code, 1, "{}", r.stdout);
            assert!(
                r.stdout.contains("not valid before 2026-06-28"),
                "{}",
                r.stdout
            );
        } else {
            assert_eq!(r.code, 0, "{set}\n{}{}", r.stdout, r.stderr);
        }
    }
}

#[test]
fn expired_vlek_fails_now_and_passes_before_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "p.toml",
        "vmpl = 1\npermit_provisional_firmware = true\n",
    );
    let base = [
        "--report",
        &v("milan-v3-vlek/report.bin"),
        "--vek",
        &v("milan-v3-vlek/vek.der"),
        "--policy",
        &policy,
    ];
    let now = verify(&base);
    assert_eq!(now.code, 1, "{}", now.stdout);
    assert!(now.stdout.contains("vlek.validity"), "{}", now.stdout);
    assert!(
        now.stdout.contains("EXPIRED on 2025-12-10"),
        "{}",
        now.stdout
    );
    assert!(
        now.stdout.contains("REJECTED (1 failed: vlek.validity)"),
        "{}",
        now.stdout
    );
    let mut before = base.to_vec();
    before.extend(["--at", BEFORE_VLEK_EXPIRY]);
    let r = verify(&before);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn policy_facts_from_the_vectors_readme_fire() {
    // VMPL 1 and provisional firmware (current microcode above committed) under the defaults.
    let r = verify(&[
        "--report",
        &v("milan-v3-vlek/report.bin"),
        "--vek",
        &v("milan-v3-vlek/vek.der"),
        "--at",
        BEFORE_VLEK_EXPIRY,
        "--json",
    ]);
    assert_eq!(r.code, 1);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "fail")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["policy.provisional_firmware", "policy.vmpl"]);

    let r = verify(&[
        "--report",
        &v("milan-v2-tcb-skew/report.bin"),
        "--vek",
        &v("milan-v2-tcb-skew/vek.der"),
    ]);
    assert_rejected_by_one(&r, "policy.provisional_firmware");

    // Guest SVN 4 and the family/image IDs of the tcb-skew report.
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        "permit_provisional_firmware = true\nminimum_guest_svn = 5\nfamily_id = \"01000000000000000000000000000000\"\nimage_id = \"ff000000000000000000000000000000\"\n",
    );
    let r = verify(&[
        "--report",
        &v("milan-v2-tcb-skew/report.bin"),
        "--vek",
        &v("milan-v2-tcb-skew/vek.der"),
        "--policy",
        &p,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("REJECTED (2 failed: policy.guest_svn, policy.image_id)"),
        "{}",
        r.stdout
    );
}

#[test]
fn snpguest_certs_directory_and_kds_chain_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(v("roots/milan/ark.pem"), d.join("ark.pem")).unwrap();
    std::fs::copy(v("roots/milan/ask.pem"), d.join("ask.pem")).unwrap();
    std::fs::copy(v("milan-v2-vcek/vek.der"), d.join("vcek.der")).unwrap();
    let r = verify(&[
        "--report",
        &v("milan-v2-vcek/report.bin"),
        "--certs",
        &d.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    // VLEK layout: vlek.der plus the KDS cert_chain (ASK, ARK, ASVK).
    let dir2 = tempfile::tempdir().unwrap();
    let d2 = dir2.path();
    std::fs::copy(v("milan-v3-vlek/vek.der"), d2.join("vlek.der")).unwrap();
    std::fs::copy(v("roots/milan/ask_ark_asvk.pem"), d2.join("cert_chain.pem")).unwrap();
    let p = write(
        d,
        "p.toml",
        "vmpl = 1\npermit_provisional_firmware = true\n",
    );
    let r = verify(&[
        "--report",
        &v("milan-v3-vlek/report.bin"),
        "--certs",
        &d2.display().to_string(),
        "--policy",
        &p,
        "--at",
        BEFORE_VLEK_EXPIRY,
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[test]
fn another_generations_chain_or_an_altered_vcek_is_rejected() {
    let r = verify(&[
        "--report",
        &v("turin-v5-vcek/report.bin"),
        "--vek",
        &v("turin-v5-vcek/vek.der"),
        "--chain",
        &v("roots/milan/ask_ark_asvk.pem"),
    ]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains("FAIL   ark.trusted"), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL   vcek.signature"), "{}", r.stdout);
    let r = verify(&[
        "--report",
        &v("milan-v2-vcek/report.bin"),
        "--vek",
        &v("bad-vek-hwid/vek-new.der"),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("FAIL   vcek.signature"), "{}", r.stdout);
    let r = verify(&[
        "--report",
        &v("milan-v2-vcek/report.bin"),
        "--vek",
        &v("milan-v2-vcek/vek.der"),
        "--product",
        "genoa",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("FAIL   generation"), "{}", r.stdout);
}

#[test]
fn unusable_input_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let short = d.join("short.bin");
    std::fs::write(
        &short,
        &std::fs::read(v("milan-v2-vcek/report.bin")).unwrap()[..1000],
    )
    .unwrap();
    let garbage = write(d, "garbage.pem", "this is not a certificate\n");
    let bad_policy = write(d, "bad.toml", "allow_debugg = true\n");
    let empty_dir = d.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    let vek = v("milan-v2-vcek/vek.der");
    let report = v("milan-v2-vcek/report.bin");
    let ark = v("roots/milan/ark.pem");
    let short = short.display().to_string();
    let empty = empty_dir.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--report", &short, "--vek", &vek],
            "1184 bytes long, this input is 1000 bytes",
        ),
        (
            vec!["--report", "/nonexistent/report.bin", "--vek", &vek],
            "cannot read report /nonexistent/report.bin",
        ),
        (
            vec!["--report", &report, "--vek", &garbage],
            "is not an X.509 certificate",
        ),
        (
            vec!["--report", &report, "--vek", &vek, "--policy", &bad_policy],
            "unknown field `allow_debugg`",
        ),
        (
            vec!["--report", &report, "--vek", &vek, "--at", "yesterday"],
            "not an RFC 3339 instant",
        ),
        (vec!["--report", &report], "--certs DIR, or --vek FILE"),
        (
            vec!["--report", &report, "--certs", &empty],
            "no certificates found",
        ),
        (
            vec!["--report", &report, "--vek", &vek, "--product", "rome"],
            "expected milan, genoa or turin",
        ),
        (
            vec!["--report", &report, "--vek", &ark],
            "holds no VCEK or VLEK",
        ),
        (
            vec!["--report", &report, "--vek", &vek, "--crl", &garbage],
            "is not an X.509 CRL",
        ),
    ];
    for (args, needle) in cases {
        let r = verify(&args);
        assert_eq!(r.code, 2, "{args:?}\n{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    // A report of random bytes: exit 2, no panic.
    let noise = d.join("noise.bin");
    let bytes: Vec<u8> = (0..1184u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&noise, bytes).unwrap();
    let r = verify(&["--report", &noise.display().to_string(), "--vek", &vek]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("VERSION"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}

/// CRLs made at test time (attestation/tests/common/amd_pki.rs, `openssl` CLI) against a
/// test chain re-keyed from AMD's Milan certificates, whose ARK is allowed with
/// `--allow-untrusted-ark`, and against AMD's real chain.
#[test]
fn generated_crls_are_checked() {
    let pki = amd_pki::Pki::milan(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "verify-cli-crl-pki",
        &workspace_root().join("attestation/roots/milan"),
        &vectors().join("milan-v2-vcek"),
    );
    let (this_update, next_update) = ("251101000000Z", "260101000000Z");
    let fresh = pki.crl("fresh.crl.pem", this_update, next_update, &[]);
    let forged = pki.forged_crl("forged.crl.pem", &pki.ark, this_update, next_update);
    let revoking = pki.crl(
        "revokes-ask.crl.pem",
        this_update,
        next_update,
        &[&pki.ask_serial],
    );
    let s = |p: &Path| p.display().to_string();
    let (report, vcek, chain) = (s(&pki.report), s(&pki.vcek), s(&pki.chain));
    let test_chain = |crl: &Path, at: &str| {
        verify(&[
            "--report",
            &report,
            "--vek",
            &vcek,
            "--chain",
            &chain,
            "--allow-untrusted-ark",
            "--crl",
            &s(crl),
            "--at",
            at,
        ])
    };

    // Fresh CRL signed by the chain's ARK: accepted.
    let r = test_chain(&fresh, "2025-12-01T00:00:00Z");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for name in [
        "crl.signature",
        "crl.issuer",
        "crl.validity",
        "crl.revocation",
    ] {
        assert!(r.stdout.contains(&format!("pass   {name}")), "{}", r.stdout);
    }
    // After its nextUpdate the CRL is stale.
    let r = test_chain(&fresh, "2026-02-01T00:00:00Z");
    assert_rejected_by_one(&r, "crl.validity");
    assert!(
        r.stdout.contains("nextUpdate 2026-01-01T00:00:00Z"),
        "{}",
        r.stdout
    );
    // Same issuer name, signed by a foreign key.
    let r = test_chain(&forged, "2025-12-01T00:00:00Z");
    assert_rejected_by_one(&r, "crl.signature");
    // The CRL revokes the ASK: the verdict names it.
    let r = test_chain(&revoking, "2025-12-01T00:00:00Z");
    assert_rejected_by_one(&r, "crl.revocation");
    assert!(
        r.stdout.contains("ASK SEV-Milan is REVOKED"),
        "{}",
        r.stdout
    );

    // AMD's real chain and report with a CRL that names ARK-Milan but that AMD did not
    // sign: only the CRL signature fails.
    let real = |crl: &Path| {
        verify(&[
            "--report",
            &v("milan-v2-vcek/report.bin"),
            "--vek",
            &v("milan-v2-vcek/vek.der"),
            "--crl",
            &s(crl),
            "--at",
            "2025-12-01T00:00:00Z",
        ])
    };
    let r = real(&fresh);
    assert_rejected_by_one(&r, "crl.signature");

    // A truncated CRL: unusable input, exit 2, a clear error, no panic.
    let truncated = pki.dir.join("truncated.crl.der");
    let der = amd_pki::openssl(&pki.dir, &["crl", "-in", &s(&fresh), "-outform", "DER"]);
    std::fs::write(&truncated, &der[..der.len() / 2]).unwrap();
    let r = real(&truncated);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("is not an X.509 CRL"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}
