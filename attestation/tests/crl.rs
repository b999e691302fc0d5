//! CRL checks with AMD's real CRLs (see tests/data/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_attestation::certs::{builtin_roots, CertBundle, Crl};
use cloister_attestation::report::Generation;
use cloister_attestation::verify::{verify, Outcome, VerifiedChain, VerifyOptions};
use time::macros::datetime;

fn data(name: &str) -> Crl {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    Crl::from_bytes(&std::fs::read(&path).unwrap(), &path).unwrap()
}

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn milan_vcek() -> (Vec<u8>, CertBundle) {
    let mut b = CertBundle::default();
    b.add_file(&vec_path("milan-v2-vcek/vek.der")).unwrap();
    (
        std::fs::read(vec_path("milan-v2-vcek/report.bin")).unwrap(),
        b,
    )
}

fn outcome(checks: &[cloister_attestation::verify::Check], name: &str) -> Outcome {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .outcome
}

#[test]
fn amd_crls_parse_and_verify_with_the_builtin_arks() {
    let milan = data("amd-milan.crl.pem");
    let genoa = data("amd-genoa.crl.pem");
    milan
        .verify_signed_by(&builtin_roots(Generation::Milan).unwrap().ark)
        .unwrap();
    genoa
        .verify_signed_by(&builtin_roots(Generation::Genoa).unwrap().ark)
        .unwrap();
    assert!(milan
        .verify_signed_by(&builtin_roots(Generation::Genoa).unwrap().ark)
        .is_err());
    assert!(milan.revoked_serials.is_empty());
    assert_eq!(genoa.revoked_serials, vec![vec![0x02, 0x00, 0x01]]);
    assert!(!genoa.revokes(&builtin_roots(Generation::Genoa).unwrap().ask));
}

#[test]
fn report_verifies_with_a_fresh_crl_and_fails_with_a_stale_or_foreign_one() {
    let (report, certs) = milan_vcek();
    let mut opts = VerifyOptions::at(datetime!(2025-12-01 00:00 UTC));
    opts.crl = Some(data("amd-milan.crl.pem"));
    let v = verify(&report, &certs, &opts).unwrap();
    assert!(v.passed(), "{:#?}", v.failures().collect::<Vec<_>>());
    for name in [
        "crl.signature",
        "crl.issuer",
        "crl.validity",
        "crl.revocation",
    ] {
        assert_eq!(outcome(&v.checks, name), Outcome::Pass, "{name}");
    }
    // After nextUpdate (2026-05-12) the CRL is stale.
    opts.at = datetime!(2026-11-23 00:00 UTC);
    let v = verify(&report, &certs, &opts).unwrap();
    let fails: Vec<_> = v.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fails, ["crl.validity"]);
    // Genoa's CRL for a Milan chain: wrong signer and issuer.
    opts.at = datetime!(2025-06-01 00:00 UTC);
    opts.crl = Some(data("amd-genoa.crl.pem"));
    let v = verify(&report, &certs, &opts).unwrap();
    let fails: Vec<_> = v.failures().map(|c| c.name.clone()).collect();
    assert_eq!(fails, ["crl.signature", "crl.issuer"]);
}

#[test]
fn a_listed_intermediate_is_reported_revoked() {
    // The Genoa CRL revokes serial 0x020001 (an earlier Genoa ASK). Give an ASK carrying
    // that serial (the built-in one with its serial field replaced) and the chain fails.
    let roots = builtin_roots(Generation::Genoa).unwrap();
    let mut old_ask = roots.ask.clone();
    old_ask.serial = vec![0x02, 0x00, 0x01];
    let mut certs = CertBundle::default();
    certs.ask = Some(old_ask);
    let vek = cloister_attestation::certs::Certificate::parse_all(
        &std::fs::read(vec_path("milan-v2-vcek/vek.der")).unwrap(),
        "vek",
    )
    .unwrap()
    .remove(0);
    let mut opts = VerifyOptions::at(datetime!(2025-06-01 00:00 UTC));
    opts.crl = Some(data("amd-genoa.crl.pem"));
    let chain = VerifiedChain::build(&certs, vek, Generation::Genoa, &opts);
    let revocation = chain
        .checks
        .iter()
        .find(|c| c.name == "crl.revocation")
        .unwrap();
    assert_eq!(revocation.outcome, Outcome::Fail);
    assert!(revocation.found.contains("REVOKED"), "{revocation}");
    assert_eq!(outcome(&chain.checks, "crl.signature"), Outcome::Pass);
}
