//! Property-style loops: random, truncated and mutated reports, certificates and CRLs go
//! through parsing and verification without a panic (deterministic xorshift, no seeds to
//! chase).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/amd_pki.rs"]
mod amd_pki;

use cloister_attestation::certs::{CertBundle, Certificate, Crl};
use cloister_attestation::verify::{verify, VerifyOptions};
use time::macros::datetime;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// Mutates `base`: flip bytes, truncate, or splice random bytes.
fn mutate(rng: &mut XorShift, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(b.len());
                if let Some(x) = b.get_mut(i) {
                    *x ^= rng.next() as u8;
                }
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let at = rng.below(b.len());
            let extra: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            b.splice(at..at, extra);
        }
        _ => b = (0..rng.below(2000)).map(|_| rng.next() as u8).collect(),
    }
    // A mutation that happened to change nothing (xor with 0, empty splice) is not one.
    if b == base {
        b.push(0);
    }
    b
}

#[test]
fn mutated_certificates_and_crls_never_panic() {
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let sources = [
        std::fs::read(vec_path("milan-v2-vcek/vek.der")).unwrap(),
        std::fs::read(vec_path("turin-v5-vcek/vek.der")).unwrap(),
        std::fs::read(vec_path("milan-v3-vlek/vek.der")).unwrap(),
        std::fs::read(vec_path("roots/milan/ask_ark_asvk.pem")).unwrap(),
        // A CRL made now (tests/common/amd_pki.rs), issuer ARK-Genoa, two revoked serials.
        std::fs::read(amd_pki::quick_crl(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
            "garbage-crl",
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/roots/genoa/ark.pem")),
        ))
        .unwrap(),
    ];
    let mut parsed = 0;
    for i in 0..4000 {
        let base = &sources[i % sources.len()];
        let m = mutate(&mut rng, base);
        if let Ok(certs) = Certificate::parse_all(&m, "mutated") {
            parsed += certs.len();
            for c in &certs {
                let _ = c.verify_signed_by(c);
                let _ = c.role();
            }
        }
        let _ = Crl::from_bytes(&m, "mutated");
    }
    // Some mutations (for example in a signature) still parse: the loop reaches the
    // checks after parsing too.
    assert!(parsed > 0);
}

#[test]
fn random_and_mutated_reports_never_panic_in_verification() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let mut certs = CertBundle::default();
    certs.add_file(&vec_path("turin-v5-vcek/vek.der")).unwrap();
    certs.add_file(&vec_path("milan-v3-vlek/vek.der")).unwrap();
    let opts = VerifyOptions::at(datetime!(2026-11-01 00:00 UTC));
    let reports = [
        std::fs::read(vec_path("turin-v5-vcek/report.bin")).unwrap(),
        std::fs::read(vec_path("milan-v3-vlek/report.bin")).unwrap(),
    ];
    let mut accepted = 0;
    for i in 0..300 {
        let m = mutate(&mut rng, &reports[i % 2]);
        if let Ok(v) = verify(&m, &certs, &opts) {
            accepted += usize::from(v.passed());
        }
    }
    assert_eq!(accepted, 0, "a mutated report was accepted");
}
