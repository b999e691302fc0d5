//! Cross-check with an independent implementation, the `sev` crate 8.x (crypto_nossl):
//! on every vector both accept the chain and the report signature, and on a sample of
//! single-bit flips of the signed bytes both reject. Where they differ on purpose (a
//! version-2 report with a masked CHIP_ID, which the sev crate cannot parse) the report
//! module's tests pin the difference.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_attestation::certs::{CertBundle, Certificate};
use cloister_attestation::verify::{verify, VerifyOptions};
use sev::certs::snp::{ca, Chain, Verifiable};
use sev::parser::ByteParser;
use time::macros::datetime;

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

fn pem_ders(rel: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(vec_path(rel)).unwrap();
    Certificate::parse_all(&bytes, rel)
        .unwrap()
        .into_iter()
        .map(|c| c.der().to_vec())
        .collect()
}

fn sev_verifies(report: &[u8], set: &str) -> Result<(), String> {
    let chain = pem_ders(&format!("{set}/chain.pem")); // ASK, ARK[, ASVK]
    let inter = if set.contains("vlek") {
        &chain[2]
    } else {
        &chain[0]
    };
    let r =
        sev::firmware::guest::AttestationReport::from_bytes(report).map_err(|e| e.to_string())?;
    let chain = Chain {
        ca: ca::Chain {
            ark: sev::certs::snp::Certificate::from_der(&chain[1]).unwrap(),
            ask: sev::certs::snp::Certificate::from_der(inter).unwrap(),
        },
        vek: sev::certs::snp::Certificate::from_der(
            &std::fs::read(vec_path(&format!("{set}/vek.der"))).unwrap(),
        )
        .unwrap(),
    };
    (&chain, &r).verify().map_err(|e| e.to_string())
}

#[test]
fn both_implementations_accept_every_vector_and_reject_flips() {
    for (set, at) in [
        ("milan-v2-vcek", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v2-tcb-skew", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v3-vlek", datetime!(2025-06-01 00:00 UTC)),
        ("turin-v5-vcek", datetime!(2026-11-01 00:00 UTC)),
    ] {
        let report = std::fs::read(vec_path(&format!("{set}/report.bin"))).unwrap();
        let mut certs = CertBundle::default();
        certs
            .add_file(&vec_path(&format!("{set}/vek.der")))
            .unwrap();
        let opts = VerifyOptions::at(at);
        assert!(
            verify(&report, &certs, &opts).unwrap().passed(),
            "{set}: ours"
        );
        sev_verifies(&report, set).unwrap_or_else(|e| panic!("{set}: sev: {e}"));
        // A spread of bits over the signed part (0..0x2A0) and R/S: we reject every one;
        // the sev crate rejects every one outside the bytes it drops when it re-serializes.
        for bit in (0..0x330 * 8).step_by(211) {
            let mut b = report.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let ours = verify(&b, &certs, &opts)
                .map(|v| v.passed())
                .unwrap_or(false);
            let theirs = sev_verifies(&b, set).is_ok();
            assert!(!ours, "{set} bit {bit}: we accepted a flipped report");
            assert!(
                !theirs || sev_drops(set, bit / 8),
                "{set} bit {bit}: sev accepted a flip outside a reserved field"
            );
        }
    }
}

/// Bytes that the sev crate does not keep: the reserved bytes inside TCB values (its
/// re-serialization, which it signs over, writes zeros there) and the upper 24 bytes of the
/// 72-byte R and S (it takes 48). Its other reserved ranges must be zero when it parses.
fn sev_drops(set: &str, byte: usize) -> bool {
    let turin = set.starts_with("turin");
    let tcb_reserved = [0x38, 0x180, 0x1E0, 0x1F0].iter().any(|&t| {
        let r = byte.wrapping_sub(t);
        if turin {
            (4..7).contains(&r)
        } else {
            (2..6).contains(&r)
        }
    });
    tcb_reserved || (0x2A0 + 48..0x2E8).contains(&byte) || (0x2E8 + 48..0x330).contains(&byte)
}

/// Pins a difference: alter a reserved byte inside a TCB value of a genuine report, or the
/// upper (must-be-zero) bytes of R or S, and the sev crate still accepts it: it checks the
/// signature over its re-serialization (where the TCB bytes are zero) and uses 48 of the 72
/// bytes of R and S. cloister checks the bytes it was given and names the field.
#[test]
fn sev_accepts_altered_reserved_bytes_that_we_reject() {
    let set = "milan-v2-vcek";
    let report = std::fs::read(vec_path(&format!("{set}/report.bin"))).unwrap();
    let mut certs = CertBundle::default();
    certs
        .add_file(&vec_path(&format!("{set}/vek.der")))
        .unwrap();
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    // LAUNCH_TCB byte 5 and CURRENT_TCB byte 2 (reserved in the Milan layout).
    for byte in [0x1F5, 0x3A] {
        let mut b = report.clone();
        b[byte] ^= 0x02;
        assert!(
            sev_verifies(&b, set).is_ok(),
            "byte {byte:#x}: sev now rejects it"
        );
        let v = verify(&b, &certs, &opts).unwrap();
        let failed: Vec<_> = v.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(
            failed,
            ["report.reserved", "report.signature"],
            "byte {byte:#x}"
        );
    }
    // Upper bytes of R and of S.
    for byte in [0x2A0 + 50, 0x2E8 + 71] {
        let mut b = report.clone();
        b[byte] ^= 0x80;
        assert!(
            sev_verifies(&b, set).is_ok(),
            "byte {byte:#x}: sev now rejects it"
        );
        let v = verify(&b, &certs, &opts).unwrap();
        let sig = v
            .checks
            .iter()
            .find(|c| c.name == "report.signature")
            .unwrap();
        assert!(
            !sig.ok() && sig.found.contains("does not fit in 48 bytes"),
            "{sig}"
        );
    }
}
