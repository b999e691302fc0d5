#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::report::Generation;

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn cert(rel: &str) -> Certificate {
    let bytes = std::fs::read(vec_path(rel)).unwrap();
    Certificate::parse_all(&bytes, rel).unwrap().remove(0)
}

#[test]
fn builtin_roots_parse_and_chain() {
    for g in Generation::ALL {
        let roots = builtin_roots(g).expect("built-in roots");
        assert_eq!(roots.ark.subject_cn, format!("ARK-{g}"));
        assert_eq!(roots.ask.subject_cn, format!("SEV-{g}"));
        assert_eq!(roots.asvk.subject_cn, format!("SEV-VLEK-{g}"));
        roots.ark.verify_signed_by(&roots.ark).unwrap();
        roots.ask.verify_signed_by(&roots.ark).unwrap();
        roots.asvk.verify_signed_by(&roots.ark).unwrap();
        assert!(matches!(
            roots.ark.public_key,
            PublicKey::Rsa { bits: 4096, .. }
        ));
        assert_eq!(roots.ark.signature_alg, SignatureAlg::RsaPssSha384);
        assert!(roots.ark.signature_alg_consistent);
        assert_eq!(roots.ark.basic_constraints_ca, Some(true));
        assert!(roots.ark.key_usage.unwrap().key_cert_sign);
    }
}

#[test]
fn vcek_extensions_decode() {
    let milan = cert("milan-v2-vcek/vek.der");
    assert_eq!(milan.role(), Some(CertRole::Vcek));
    assert_eq!(milan.amd.product_name.as_deref(), Some("Milan-B0"));
    let tcb = milan.amd.tcb(Generation::Milan).unwrap();
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (3, 0, 8, 0x73)
    );
    assert_eq!(milan.amd.hwid.as_ref().unwrap().len(), 64);
    assert!(matches!(milan.public_key, PublicKey::EcP384(_)));
    assert!(milan.unknown_critical.is_empty());

    let turin = cert("turin-v5-vcek/vek.der");
    assert_eq!(turin.amd.product_name.as_deref(), Some("Turin"));
    let tcb = turin.amd.tcb(Generation::Turin).unwrap();
    assert_eq!(tcb.fmc, Some(1));
    assert_eq!(
        (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode),
        (3, 2, 5, 0x61)
    );
    assert_eq!(turin.amd.hwid.as_ref().unwrap().len(), 8);

    let vlek = cert("milan-v3-vlek/vek.der");
    assert_eq!(vlek.role(), Some(CertRole::Vlek));
    assert_eq!(vlek.issuer_cn, "SEV-VLEK-Milan");
    assert_eq!(vlek.amd.hwid, None);
    assert_eq!(
        vlek.amd.csp_id.as_deref(),
        Some("CN=cc-us-east-2.amazonaws.com")
    );
    assert_eq!(
        vlek.amd.tcb(Generation::Milan).unwrap().microcode,
        0xd9,
        "3-byte INTEGER"
    );
}

#[test]
fn vectors_chain_to_builtin_roots() {
    let milan = builtin_roots(Generation::Milan).unwrap();
    let turin = builtin_roots(Generation::Turin).unwrap();
    cert("milan-v2-vcek/vek.der")
        .verify_signed_by(&milan.ask)
        .unwrap();
    cert("milan-v2-tcb-skew/vek.der")
        .verify_signed_by(&milan.ask)
        .unwrap();
    cert("milan-v3-vlek/vek.der")
        .verify_signed_by(&milan.asvk)
        .unwrap();
    cert("turin-v5-vcek/vek.der")
        .verify_signed_by(&turin.ask)
        .unwrap();
    cert("roots/turin/example-vcek.der")
        .verify_signed_by(&turin.ask)
        .unwrap();
    // Another generation's ASK does not sign them.
    assert!(cert("milan-v2-vcek/vek.der")
        .verify_signed_by(&turin.ask)
        .is_err());
    assert!(cert("turin-v5-vcek/vek.der")
        .verify_signed_by(&milan.ask)
        .is_err());
}

#[test]
fn bad_hwid_certificates_parse_both_encodings_and_fail_the_ask_signature() {
    let milan = builtin_roots(Generation::Milan).unwrap();
    for name in ["vek-legacy.der", "vek-new.der"] {
        let c = cert(&format!("bad-vek-hwid/{name}"));
        let hwid = c.amd.hwid.clone().unwrap();
        assert_eq!(hwid.len(), 64, "{name}");
        assert_eq!(&hwid[..4], &[0, 1, 2, 3], "{name}");
        let err = c.verify_signed_by(&milan.ask).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }
}

#[test]
fn kds_chain_and_wrong_files() {
    let mut b = CertBundle::default();
    b.add_file(&vec_path("roots/milan/ask_ark_asvk.pem"))
        .unwrap();
    assert!(b.ark.is_some() && b.ask.is_some() && b.asvk.is_some());
    // Adding the same chain twice is fine; a different ARK is not.
    b.add_file(&vec_path("milan-v2-vcek/chain.pem")).unwrap();
    let err = b.add_file(&vec_path("roots/turin/ark.pem")).unwrap_err();
    assert!(
        matches!(
            err,
            CertError::Duplicate {
                role: CertRole::Ark,
                ..
            }
        ),
        "{err}"
    );

    let dir = tempdir();
    std::fs::copy(vec_path("roots/milan/ask.pem"), dir.join("ark.pem")).unwrap();
    let err = CertBundle::from_dir(&dir).unwrap_err();
    assert!(
        err.to_string()
            .contains("should hold the ARK but holds ASK"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_is_refused_with_a_message() {
    for bytes in [
        &b""[..],
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        &[0x30, 0x82, 0xff, 0xff],
    ] {
        let err = Certificate::parse_all(bytes, "test input").unwrap_err();
        assert!(err.to_string().contains("test input"), "{err}");
    }
    let good = std::fs::read(vec_path("milan-v2-vcek/vek.der")).unwrap();
    for len in (0..good.len()).step_by(7) {
        assert!(Certificate::parse_all(&good[..len], "truncated").is_err());
    }
    assert!(Crl::from_bytes(b"not a crl", "crl").is_err());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cloister-certs-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A mangled armor line is refused, naming its line, even where x509-parser's lenient PEM
/// reader would take the block (found by the `certificates` fuzz target:
/// `fuzz/regressions/certificates/mangled-begin-line`).
#[test]
fn a_mangled_pem_boundary_is_refused() {
    let good = std::fs::read_to_string(vec_path("milan-v2-vcek/chain.pem")).unwrap();
    assert!(Certificate::parse_all(good.as_bytes(), "chain").is_ok());
    let bad = good.replacen(
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN CERTIFICATE--ta Clara1CERTIFICATE-----",
        1,
    );
    let err = Certificate::parse_all(bad.as_bytes(), "chain").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("malformed PEM") && msg.contains("line 1"),
        "{msg}"
    );
    for (label, ok) in [
        ("CERTIFICATE", true),
        ("X509 CRL", true),
        ("EC PRIVATE KEY", true),
        ("A-B", true),
        ("", true),
        ("CERTIFICATE--X", false),
        (" CERTIFICATE", false),
        ("CERTIFICATE ", false),
        ("A  B", false),
        ("-A", false),
    ] {
        assert_eq!(valid_pem_label(label.as_bytes()), ok, "{label:?}");
    }
    assert!(
        check_pem_armor(b"-----BEGIN X509 CRL-----\r\nAA==\r\n-----END X509 CRL-----\r\n").is_ok()
    );
    assert!(check_pem_armor(b"-----BEGINCERTIFICATE-----\n").is_err());
    assert!(check_pem_armor(b"-----END CERTIFICATE----\n").is_err());
}
