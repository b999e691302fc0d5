//! CRL checks with CRLs made at test time (tests/common/amd_pki.rs, `openssl` CLI): a test
//! ARK/ASK/VCEK chain re-keyed from AMD's Milan certificates and the vector's report
//! re-signed, so a report really verifies end to end with a fresh CRL, and fails with a
//! stale, not-yet-valid, forged or revoking one. Dates are fixed and checked at injected
//! instants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/amd_pki.rs"]
mod amd_pki;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use amd_pki::Pki;
use cloister_attestation::certs::{builtin_roots, CertBundle, CertError, Certificate, Crl};
use cloister_attestation::report::Generation;
use cloister_attestation::verify::{verify, Check, Outcome, Verification, VerifyOptions};
use time::macros::datetime;
use time::OffsetDateTime;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn vec_path(rel: &str) -> PathBuf {
    manifest().join("../../shared/vectors/snp").join(rel)
}

/// One PKI per test process (key generation takes seconds).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        Pki::milan(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "crl-test-pki",
            &manifest().join("roots/milan"),
            &vec_path("milan-v2-vcek"),
        )
    })
}

fn load_crl(path: &Path) -> Crl {
    Crl::from_bytes(&std::fs::read(path).unwrap(), &path.display().to_string()).unwrap()
}

fn cert(path: &Path) -> Certificate {
    Certificate::parse_all(&std::fs::read(path).unwrap(), &path.display().to_string())
        .unwrap()
        .remove(0)
}

/// Fresh at 2025-12-01 (thisUpdate 2025-11-01, nextUpdate 2026-01-01).
const THIS_UPDATE: &str = "251101000000Z";
const NEXT_UPDATE: &str = "260101000000Z";

fn check<'a>(v: &'a Verification, name: &str) -> &'a Check {
    v.checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

fn failures(v: &Verification) -> Vec<String> {
    v.failures().map(|c| c.name.clone()).collect()
}

/// The test chain (test ARK given, allowed) and its re-signed report, at `at` with `crl`.
fn verify_test_chain(crl: Option<&Path>, at: OffsetDateTime) -> Verification {
    let p = pki();
    let mut certs = CertBundle::default();
    certs.add_file(&p.vcek).unwrap();
    certs.add_file(&p.chain).unwrap();
    let mut opts = VerifyOptions::at(at);
    opts.allow_untrusted_ark = true;
    opts.crl = crl.map(load_crl);
    verify(&std::fs::read(&p.report).unwrap(), &certs, &opts).unwrap()
}

#[test]
fn generated_crls_parse_and_verify_only_with_their_signer() {
    let p = pki();
    let fresh = load_crl(&p.crl("fresh.crl.pem", THIS_UPDATE, NEXT_UPDATE, &[]));
    let test_ark = cert(&p.ark);
    assert_eq!(fresh.issuer_cn, "ARK-Milan");
    assert_eq!(fresh.issuer_der, test_ark.subject_der);
    // The issuer name is AMD's ARK-Milan's, byte for byte.
    let amd_ark = &builtin_roots(Generation::Milan).unwrap().ark;
    assert_eq!(fresh.issuer_der, amd_ark.subject_der);
    assert_eq!(
        fresh.this_update,
        datetime!(2025-11-01 00:00 UTC).unix_timestamp()
    );
    assert_eq!(
        fresh.next_update,
        Some(datetime!(2026-01-01 00:00 UTC).unix_timestamp())
    );
    assert!(fresh.revoked_serials.is_empty());
    fresh.verify_signed_by(&test_ark).unwrap();
    // Same issuer name, other key: AMD's real ARK-Milan did not sign it, nor Genoa's.
    let err = fresh.verify_signed_by(amd_ark).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    assert!(fresh
        .verify_signed_by(&builtin_roots(Generation::Genoa).unwrap().ark)
        .is_err());
    // Signed by the foreign key under the test ARK's name: refused by the test ARK.
    let forged = load_crl(&p.forged_crl("forged.crl.pem", &p.ark, THIS_UPDATE, NEXT_UPDATE));
    assert_eq!(forged.issuer_der, test_ark.subject_der);
    let err = forged.verify_signed_by(&test_ark).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    // A revoking CRL lists the ASK's serial and nothing else.
    let revoking = load_crl(&p.crl(
        "revokes-ask.crl.pem",
        THIS_UPDATE,
        NEXT_UPDATE,
        &[&p.ask_serial],
    ));
    revoking.verify_signed_by(&test_ark).unwrap();
    let ask = cert(&p.ask);
    assert_eq!(ask.subject_cn, "SEV-Milan");
    assert_eq!(revoking.revoked_serials, vec![ask.serial.clone()]);
    assert!(revoking.revokes(&ask));
    assert!(!revoking.revokes(&cert(&p.vcek)));
    assert!(!fresh.revokes(&ask));
}

#[test]
fn test_chain_without_a_crl_passes_every_check() {
    // The baseline the CRL tests rely on: the generated chain and re-signed report pass
    // everything, the ARK only because it is explicitly allowed.
    let v = verify_test_chain(None, datetime!(2025-12-01 00:00 UTC));
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert!(
        check(&v, "ark.trusted").found.contains("NOT the built-in"),
        "{}",
        check(&v, "ark.trusted")
    );
    assert_eq!(check(&v, "report.signature").outcome, Outcome::Pass);
    assert!(!v.checks.iter().any(|c| c.name.starts_with("crl.")));
}

#[test]
fn report_verifies_with_a_fresh_crl_and_fails_with_a_stale_or_foreign_one() {
    let p = pki();
    let fresh = p.crl("fresh.crl.pem", THIS_UPDATE, NEXT_UPDATE, &[]);
    let v = verify_test_chain(Some(&fresh), datetime!(2025-12-01 00:00 UTC));
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    for name in [
        "crl.signature",
        "crl.issuer",
        "crl.validity",
        "crl.revocation",
    ] {
        assert_eq!(check(&v, name).outcome, Outcome::Pass, "{name}");
    }

    // After nextUpdate the CRL is stale; the certificates are still valid then.
    let v = verify_test_chain(Some(&fresh), datetime!(2026-02-01 00:00 UTC));
    assert_eq!(failures(&v), ["crl.validity"]);
    let validity = check(&v, "crl.validity");
    assert!(
        validity.found.contains("nextUpdate 2026-01-01T00:00:00Z"),
        "{validity}"
    );
    assert!(
        validity.expected.contains("2026-02-01T00:00:00Z"),
        "{validity}"
    );
    // Before thisUpdate it is not valid yet either.
    let v = verify_test_chain(Some(&fresh), datetime!(2025-10-01 00:00 UTC));
    assert_eq!(failures(&v), ["crl.validity"]);
    // Exactly at nextUpdate it is still fresh.
    let v = verify_test_chain(Some(&fresh), datetime!(2026-01-01 00:00 UTC));
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());

    // Same issuer name, signed by a foreign key: only the signature fails.
    let forged = p.forged_crl("forged.crl.pem", &p.ark, THIS_UPDATE, NEXT_UPDATE);
    let v = verify_test_chain(Some(&forged), datetime!(2025-12-01 00:00 UTC));
    assert_eq!(failures(&v), ["crl.signature"]);
    assert!(
        check(&v, "crl.signature").found.contains("does not verify"),
        "{}",
        check(&v, "crl.signature")
    );
    // A foreign CRL naming Genoa's ARK for a Milan chain: wrong signer and issuer.
    let genoa = p.forged_crl(
        "forged-genoa.crl.pem",
        &manifest().join("roots/genoa/ark.pem"),
        THIS_UPDATE,
        NEXT_UPDATE,
    );
    let v = verify_test_chain(Some(&genoa), datetime!(2025-12-01 00:00 UTC));
    assert_eq!(failures(&v), ["crl.signature", "crl.issuer"]);
    assert!(
        check(&v, "crl.issuer").found.contains("ARK-Genoa"),
        "{}",
        check(&v, "crl.issuer")
    );
}

#[test]
fn a_crl_not_signed_by_amd_fails_the_real_chain() {
    // AMD's real report and VCEK with the built-in roots; the CRL names ARK-Milan (the
    // exact bytes) but the test key signed it.
    let p = pki();
    let crl = p.crl("fresh.crl.pem", THIS_UPDATE, NEXT_UPDATE, &[]);
    let mut certs = CertBundle::default();
    certs.add_file(&vec_path("milan-v2-vcek/vek.der")).unwrap();
    let mut opts = VerifyOptions::at(datetime!(2025-12-01 00:00 UTC));
    let report = std::fs::read(vec_path("milan-v2-vcek/report.bin")).unwrap();
    let v = verify(&report, &certs, &opts).unwrap();
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    opts.crl = Some(load_crl(&crl));
    let v = verify(&report, &certs, &opts).unwrap();
    assert_eq!(failures(&v), ["crl.signature"]);
}

#[test]
fn a_listed_intermediate_is_reported_revoked() {
    let p = pki();
    let crl = p.crl(
        "revokes-ask.crl.pem",
        THIS_UPDATE,
        NEXT_UPDATE,
        &["0200AB", &p.ask_serial],
    );
    let v = verify_test_chain(Some(&crl), datetime!(2025-12-01 00:00 UTC));
    assert_eq!(failures(&v), ["crl.revocation"]);
    let revocation = check(&v, "crl.revocation");
    assert!(
        revocation.found.contains("ASK SEV-Milan is REVOKED"),
        "{revocation}"
    );
    assert!(
        revocation.expected.contains(&p.ask_serial.to_lowercase()),
        "{revocation}"
    );
    assert_eq!(check(&v, "crl.signature").outcome, Outcome::Pass);
    // A CRL listing other serials only leaves the chain alone.
    let other = p.crl(
        "revokes-other.crl.pem",
        THIS_UPDATE,
        NEXT_UPDATE,
        &["0200AB"],
    );
    let v = verify_test_chain(Some(&other), datetime!(2025-12-01 00:00 UTC));
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    assert!(
        check(&v, "crl.revocation")
            .found
            .contains("1 revoked serials"),
        "{}",
        check(&v, "crl.revocation")
    );
}

fn not_a_crl(bytes: &[u8]) -> String {
    match Crl::from_bytes(bytes, "input.crl") {
        Err(e @ CertError::NotACrl { .. }) => {
            let msg = e.to_string();
            assert!(msg.starts_with("input.crl is not an X.509 CRL: "), "{msg}");
            msg
        }
        other => panic!("expected NotACrl, got {other:?}"),
    }
}

#[test]
fn garbage_crls_are_refused_with_a_clear_error() {
    let p = pki();
    let path = p.crl(
        "garbage-base.crl.pem",
        THIS_UPDATE,
        NEXT_UPDATE,
        &["0200AB"],
    );
    let pem = std::fs::read(&path).unwrap();
    let der = {
        let out = amd_pki::openssl(
            &p.dir,
            &["crl", "-in", path.to_str().unwrap(), "-outform", "DER"],
        );
        Crl::from_bytes(&out, "der").unwrap();
        out
    };
    not_a_crl(b"");
    not_a_crl(b"this is not a CRL\n");
    let noise: Vec<u8> = (0..600u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    not_a_crl(&noise);
    // A certificate is not a CRL.
    let msg = not_a_crl(&std::fs::read(&p.ark).unwrap());
    assert!(msg.contains("no X509 CRL block"), "{msg}");
    let msg = not_a_crl(&std::fs::read(vec_path("milan-v2-vcek/vek.der")).unwrap());
    assert!(!msg.is_empty());
    // Trailing bytes after the DER.
    let mut trailing = der.clone();
    trailing.extend_from_slice(b"junk");
    let msg = not_a_crl(&trailing);
    assert!(msg.contains("4 bytes of trailing data"), "{msg}");
    // PEM with a broken body.
    let text = String::from_utf8(pem.clone()).unwrap();
    let broken = text.replacen('M', "*", 3);
    not_a_crl(broken.as_bytes());
    // Every truncation of the DER and of the PEM: an error, never a panic.
    for n in 0..der.len() {
        not_a_crl(&der[..n]);
    }
    for n in 0..pem.len() {
        let _ = Crl::from_bytes(&pem[..n], "truncated PEM");
    }
}
