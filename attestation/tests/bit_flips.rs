//! Flipping any single bit of bytes 0..0x4A0 of any real report makes verification fail.
//! Exhaustive: 1184 * 8 flips per report, every report of the vectors. The chain is verified
//! once per report (it does not depend on the report bytes); each flip runs the whole
//! report verification (parse, generation, reserved fields, signature, report-vs-certificate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_attestation::certs::CertBundle;
use cloister_attestation::report::REPORT_SIZE;
use cloister_attestation::verify::{verify, verify_with_chain, VerifiedChain, VerifyOptions};
use time::macros::datetime;

fn vec_path(rel: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "{}/../../shared/vectors/snp/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

#[test]
fn every_single_bit_flip_of_every_report_fails() {
    let sets = [
        ("milan-v2-vcek", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v2-tcb-skew", datetime!(2026-11-01 00:00 UTC)),
        ("milan-v3-vlek", datetime!(2025-06-01 00:00 UTC)),
        ("turin-v5-vcek", datetime!(2026-11-01 00:00 UTC)),
    ];
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let mut total = 0usize;
    for (set, at) in sets {
        let report = std::fs::read(vec_path(&format!("{set}/report.bin"))).unwrap();
        assert_eq!(report.len(), REPORT_SIZE);
        let mut certs = CertBundle::default();
        certs
            .add_file(&vec_path(&format!("{set}/vek.der")))
            .unwrap();
        let opts = VerifyOptions::at(at);
        let good = verify(&report, &certs, &opts).unwrap();
        assert!(good.passed(), "{set} must verify before flipping");
        let chain = VerifiedChain::build(&certs, good.vek.clone(), good.generation, &opts);
        assert!(chain.passed());

        let bits = REPORT_SIZE * 8;
        let survivors: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (report, chain, opts) = (&report, &chain, &opts);
                    s.spawn(move || {
                        let mut bytes = report.clone();
                        let mut survived = Vec::new();
                        for bit in (t..bits).step_by(threads) {
                            bytes[bit / 8] ^= 1 << (bit % 8);
                            let accepted = verify_with_chain(&bytes, chain, opts)
                                .map(|v| v.passed())
                                .unwrap_or(false);
                            if accepted {
                                survived.push(bit);
                            }
                            bytes[bit / 8] ^= 1 << (bit % 8);
                        }
                        survived
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert!(
            survivors.is_empty(),
            "{set}: flips accepted at bits {:?}",
            survivors
                .iter()
                .map(|b| format!("byte {:#x} bit {}", b / 8, b % 8))
                .collect::<Vec<_>>()
        );
        total += bits;
    }
    assert_eq!(total, 4 * 1184 * 8);
}
