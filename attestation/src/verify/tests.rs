#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::certs::CertBundle;
use time::macros::datetime;

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn bundle(files: &[&str]) -> CertBundle {
    let mut b = CertBundle::default();
    for f in files {
        b.add_file(&vec_path(f)).unwrap();
    }
    b
}

fn report(set: &str) -> Vec<u8> {
    std::fs::read(vec_path(&format!("{set}/report.bin"))).unwrap()
}

const BEFORE_VLEK_EXPIRY: OffsetDateTime = datetime!(2025-06-01 00:00 UTC);

fn failed(v: &Verification) -> Vec<String> {
    v.failures().map(|c| c.to_string()).collect()
}

#[test]
fn every_vector_verifies_with_builtin_and_given_chains() {
    for set in [
        "milan-v2-vcek",
        "milan-v2-tcb-skew",
        "milan-v3-vlek",
        "turin-v5-vcek",
    ] {
        let at = if set.contains("vlek") {
            BEFORE_VLEK_EXPIRY
        } else {
            datetime!(2026-11-01 00:00 UTC)
        };
        let opts = VerifyOptions::at(at);
        for certs in [
            bundle(&[&format!("{set}/vek.der")]),
            bundle(&[&format!("{set}/vek.der"), &format!("{set}/chain.pem")]),
        ] {
            let v = verify(&report(set), &certs, &opts).unwrap();
            assert!(v.passed(), "{set}: {:#?}", failed(&v));
            assert!(v
                .checks
                .iter()
                .any(|c| c.name == "report.signature" && c.outcome == Outcome::Pass));
        }
    }
}

#[test]
fn expected_generations_and_skips() {
    let opts = VerifyOptions::at(BEFORE_VLEK_EXPIRY);
    let v = verify(
        &report("milan-v3-vlek"),
        &bundle(&["milan-v3-vlek/vek.der"]),
        &opts,
    )
    .unwrap();
    assert_eq!(v.generation, Generation::Milan);
    let hwid = v.checks.iter().find(|c| c.name == "vlek.hwid").unwrap();
    assert_eq!(hwid.outcome, Outcome::Skip);
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    let v = verify(
        &report("turin-v5-vcek"),
        &bundle(&["turin-v5-vcek/vek.der"]),
        &opts,
    )
    .unwrap();
    assert_eq!(v.generation, Generation::Turin);
    let hwid = v.checks.iter().find(|c| c.name == "vcek.hwid").unwrap();
    assert_eq!(hwid.outcome, Outcome::Pass, "{hwid}");
    // A v2 report: the generation comes from the certificate's productName.
    let v = verify(
        &report("milan-v2-vcek"),
        &bundle(&["milan-v2-vcek/vek.der"]),
        &opts,
    )
    .unwrap();
    assert_eq!(v.generation, Generation::Milan);
    assert!(
        v.checks[0].found.contains("productName Milan"),
        "{}",
        v.checks[0]
    );
}

#[test]
fn expired_vlek_fails_now_with_a_clear_message() {
    let opts = VerifyOptions::at(datetime!(2026-11-23 00:00 UTC));
    let v = verify(
        &report("milan-v3-vlek"),
        &bundle(&["milan-v3-vlek/vek.der"]),
        &opts,
    )
    .unwrap();
    assert!(!v.passed());
    let fails: Vec<_> = v.failures().collect();
    assert_eq!(fails.len(), 1, "{:#?}", failed(&v));
    assert_eq!(fails[0].name, "vlek.validity");
    assert!(
        fails[0].found.contains("EXPIRED on 2025-12-10"),
        "{}",
        fails[0]
    );
    // Default options judge validity now, which is after the expiry too.
    let v = verify(
        &report("milan-v3-vlek"),
        &bundle(&["milan-v3-vlek/vek.der"]),
        &VerifyOptions::default(),
    )
    .unwrap();
    assert!(!v.passed());
}

#[test]
fn a_vcek_checked_against_another_generations_chain_fails() {
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    // Milan VCEK with Turin's chain given by the user.
    let certs = bundle(&["milan-v2-vcek/vek.der", "roots/turin/ask_ark_asvk.pem"]);
    let v = verify(&report("milan-v2-vcek"), &certs, &opts).unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"ark.trusted"), "{names:?}");
    assert!(names.contains(&"vcek.signature"), "{names:?}");
    // Turin VCEK forced to be verified as Milan (built-in Milan chain).
    let mut forced = opts.clone();
    forced.product = Some(Generation::Milan);
    let v = verify(
        &report("turin-v5-vcek"),
        &bundle(&["turin-v5-vcek/vek.der"]),
        &forced,
    )
    .unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    for n in [
        "generation",
        "vcek.signature",
        "vcek.names",
        "vcek.product_name",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
}

#[test]
fn untrusted_ark_is_refused_unless_allowed_and_then_said() {
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    // A Turin ARK given for a Milan report: not the built-in one.
    let mut certs = bundle(&["milan-v2-vcek/vek.der"]);
    certs.add_file(&vec_path("roots/turin/ark.pem")).unwrap();
    let v = verify(&report("milan-v2-vcek"), &certs, &opts).unwrap();
    let ark = v.checks.iter().find(|c| c.name == "ark.trusted").unwrap();
    assert_eq!(ark.outcome, Outcome::Fail, "{ark}");
    let mut allow = opts.clone();
    allow.allow_untrusted_ark = true;
    let v = verify(&report("milan-v2-vcek"), &certs, &allow).unwrap();
    let ark = v.checks.iter().find(|c| c.name == "ark.trusted").unwrap();
    assert_eq!(ark.outcome, Outcome::Pass);
    assert!(ark.found.contains("accepted because explicitly allowed"));
    // ...but the chain still fails: the Turin ARK did not sign the Milan ASK.
    assert!(!v.passed());
}

#[test]
fn bad_hwid_vceks_fail_the_ask_signature() {
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    for name in ["vek-legacy.der", "vek-new.der"] {
        let certs = bundle(&[&format!("bad-vek-hwid/{name}")]);
        let v = verify(&report("milan-v2-vcek"), &certs, &opts).unwrap();
        let sig = v
            .checks
            .iter()
            .find(|c| c.name == "vcek.signature")
            .unwrap();
        assert_eq!(sig.outcome, Outcome::Fail, "{name}: {sig}");
        let hwid = v.checks.iter().find(|c| c.name == "vcek.hwid").unwrap();
        assert_eq!(hwid.outcome, Outcome::Fail, "{name}: {hwid}");
    }
}

#[test]
fn wrong_signing_key_and_wrong_vek_fail() {
    let opts = VerifyOptions::at(BEFORE_VLEK_EXPIRY);
    // The Milan VCEK report checked with the VLEK certificate.
    let v = verify(
        &report("milan-v2-vcek"),
        &bundle(&["milan-v3-vlek/vek.der"]),
        &opts,
    )
    .unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"report.signing_key"), "{names:?}");
    assert!(names.contains(&"report.signature"), "{names:?}");
    assert!(names.contains(&"vlek.tcb"), "{names:?}");
    // The tcb-skew report checked with the other Milan VCEK (another chip).
    let v = verify(
        &report("milan-v2-tcb-skew"),
        &bundle(&["milan-v2-vcek/vek.der"]),
        &opts,
    )
    .unwrap();
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["report.signature", "vcek.hwid"]);
}

#[test]
fn cached_chain_gives_the_same_verdict() {
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    let certs = bundle(&["turin-v5-vcek/vek.der"]);
    let full = verify(&report("turin-v5-vcek"), &certs, &opts).unwrap();
    let chain = VerifiedChain::build(&certs, full.vek.clone(), Generation::Turin, &opts);
    assert!(chain.passed());
    let cached = verify_with_chain(&report("turin-v5-vcek"), &chain, &opts).unwrap();
    assert!(cached.passed());
    assert_eq!(cached.checks.len(), full.checks.len());
    // And a Milan report against the Turin chain fails.
    let other = verify_with_chain(&report("milan-v2-vcek"), &chain, &opts).unwrap();
    assert!(!other.passed());
}

#[test]
fn masked_chip_id_v2_report_is_verified_as_milan_from_the_certificate() {
    let mut bytes = report("milan-v2-vcek");
    bytes[0x1A0..0x1E0].fill(0);
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    let v = verify(&bytes, &bundle(&["milan-v2-vcek/vek.der"]), &opts).unwrap();
    assert_eq!(v.generation, Generation::Milan);
    let hwid = v.checks.iter().find(|c| c.name == "vcek.hwid").unwrap();
    assert_eq!(hwid.outcome, Outcome::Skip);
    // The edit breaks the signature, and only the signature.
    let names: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["report.signature"]);
}

#[test]
fn unusable_inputs_are_errors_not_panics() {
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    let certs = bundle(&["milan-v2-vcek/vek.der"]);
    assert!(matches!(
        verify(&[], &certs, &opts),
        Err(VerifyError::Report(_))
    ));
    assert!(matches!(
        verify(&[0u8; 1184], &certs, &opts),
        Err(VerifyError::Report(ReportError::Version(0)))
    ));
    let err = verify(&report("milan-v2-vcek"), &CertBundle::default(), &opts).unwrap_err();
    assert!(err.to_string().contains("no VCEK or VLEK"), "{err}");
}
