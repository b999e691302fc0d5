//! Attestation report verification throughput, one thread, side by side in one run:
//!
//! 1. cloister, full: certificates parsed from DER and the chain verified on every report
//!    (ARK self-signature, ASK/ASVK, VCEK/VLEK: three RSA-4096 PSS verifications), then
//!    every report check (signature, TCB, hwID, names, validity, ...);
//! 2. cloister, cached chain: a [`VerifiedChain`] built once; per report only parse,
//!    signature and the report-vs-certificate checks;
//! 3. the `sev` crate 8.x (crypto_nossl: RustCrypto p384/rsa), from the same bytes: parse
//!    the report and the three certificates, then `(&Chain, &AttestationReport).verify()`
//!    (it verifies ARK→ASK→VEK and the report signature; no validity, TCB or hwID checks);
//! 4. the floor: one ECDSA P-384 verification of bytes 0..0x2A0 with ring, nothing else.
//!
//! Rates are per second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so other
//! processes on a shared machine do not lower them.
//!
//! Run: `cargo run --release -p cloister-bench --bin verify` (BENCH_SECONDS sets the time
//! per cell, default 2.0, split into 10 interleaved rounds; the best round counts). Vectors are read from `../shared/vectors/snp`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloister_attestation::certs::{CertBundle, Certificate};
use cloister_attestation::report::AttestationReport;
use cloister_attestation::verify::{verify, verify_with_chain, VerifiedChain, VerifyOptions};
use sev::certs::snp::{ca, Chain, Verifiable};
use sev::parser::ByteParser;
use time::macros::datetime;
use time::OffsetDateTime;

struct Set {
    name: &'static str,
    at: OffsetDateTime,
}

const SETS: [Set; 4] = [
    Set {
        name: "milan-v2-vcek",
        at: datetime!(2026-11-01 00:00 UTC),
    },
    Set {
        name: "milan-v2-tcb-skew",
        at: datetime!(2026-11-01 00:00 UTC),
    },
    Set {
        name: "milan-v3-vlek",
        at: datetime!(2025-06-01 00:00 UTC),
    },
    Set {
        name: "turin-v5-vcek",
        at: datetime!(2026-11-01 00:00 UTC),
    },
];

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp")
}

/// CPU time consumed by this thread, so that other processes on a shared machine do not
/// count against the operation being measured ("per core").
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`;
    // CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Runs `f` repeatedly for about `budget` of this thread's CPU time; returns operations
/// per CPU second.
fn rate(budget: Duration, f: &mut dyn FnMut() -> bool) -> Result<f64, String> {
    let start = thread_cpu_time();
    let wall = Instant::now();
    let mut n = 0u64;
    while thread_cpu_time().saturating_sub(start) < budget && wall.elapsed() < budget * 20 {
        for _ in 0..4 {
            if !f() {
                return Err("verification failed during the run".into());
            }
        }
        n += 4;
    }
    let spent = thread_cpu_time().saturating_sub(start).as_secs_f64();
    if spent <= 0.0 {
        return Err("no CPU time measured".into());
    }
    Ok(n as f64 / spent)
}

/// Measures several operations in interleaved rounds (so that load from other processes
/// hits them alike) and keeps each one's best round. An operation that fails its first run
/// is reported as an error and not measured.
fn measure(budget: Duration, ops: &mut [&mut dyn FnMut() -> bool]) -> Vec<Result<f64, String>> {
    const ROUNDS: u32 = 10;
    let mut best: Vec<Result<f64, String>> = ops
        .iter_mut()
        .map(|f| {
            if f() {
                Ok(0.0)
            } else {
                Err("verification failed".to_string())
            }
        })
        .collect();
    for _ in 0..ROUNDS {
        for (f, b) in ops.iter_mut().zip(best.iter_mut()) {
            if let Ok(prev) = b {
                match rate(budget / ROUNDS, *f) {
                    Ok(r) => *prev = prev.max(r),
                    Err(e) => *b = Err(e),
                }
            }
        }
    }
    best
}

/// DER of every certificate in a PEM file.
fn pem_ders(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_default();
    Certificate::parse_all(&bytes, &path.display().to_string())
        .map(|v| v.into_iter().map(|c| c.der().to_vec()).collect())
        .unwrap_or_default()
}

struct Row {
    name: &'static str,
    full: Result<f64, String>,
    cached: Result<f64, String>,
    sev: Result<f64, String>,
    floor: Result<f64, String>,
}

fn bench_set(set: &Set, budget: Duration) -> Result<Row, String> {
    let dir = vectors().join(set.name);
    let report = std::fs::read(dir.join("report.bin")).map_err(|e| format!("report: {e}"))?;
    let vek_der = std::fs::read(dir.join("vek.der")).map_err(|e| format!("vek: {e}"))?;
    let chain_ders = pem_ders(&dir.join("chain.pem")); // ASK, ARK[, ASVK]
    let opts = VerifyOptions::at(set.at);
    let vlek = set.name.contains("vlek");

    // 1. Full: parse the certificates and verify the chain every time.
    let mut full = || {
        let mut certs = CertBundle::default();
        let parsed = std::iter::once(&vek_der)
            .chain(chain_ders.iter())
            .all(|der| {
                Certificate::from_der(der, "bench")
                    .and_then(|c| certs.add(c, "bench"))
                    .is_ok()
            });
        parsed && verify(&report, &certs, &opts).is_ok_and(|v| v.passed())
    };

    // 2. Cached chain.
    let mut certs = CertBundle::default();
    for der in std::iter::once(&vek_der).chain(chain_ders.iter()) {
        let c = Certificate::from_der(der, "bench").map_err(|e| e.to_string())?;
        certs.add(c, "bench").map_err(|e| e.to_string())?;
    }
    let first = verify(&report, &certs, &opts).map_err(|e| e.to_string())?;
    let chain = VerifiedChain::build(&certs, first.vek.clone(), first.generation, &opts);
    let mut cached = || verify_with_chain(&report, &chain, &opts).is_ok_and(|v| v.passed());

    // 3. The sev crate, from the same bytes.
    let ark_der = chain_ders.get(1).cloned().unwrap_or_default();
    let inter_der = if vlek {
        chain_ders.get(2).cloned().unwrap_or_default()
    } else {
        chain_ders.first().cloned().unwrap_or_default()
    };
    let sev_once = || -> Result<(), String> {
        let r = sev::firmware::guest::AttestationReport::from_bytes(&report)
            .map_err(|e| format!("cannot parse the report: {e}"))?;
        let chain = Chain {
            ca: ca::Chain {
                ark: sev::certs::snp::Certificate::from_der(&ark_der)
                    .map_err(|e| format!("ARK: {e}"))?,
                ask: sev::certs::snp::Certificate::from_der(&inter_der)
                    .map_err(|e| format!("ASK: {e}"))?,
            },
            vek: sev::certs::snp::Certificate::from_der(&vek_der)
                .map_err(|e| format!("VEK: {e}"))?,
        };
        (&chain, &r).verify().map_err(|e| format!("verify: {e}"))
    };
    let sev_error = sev_once().err();
    let mut sev = || sev_once().is_ok();

    // 4. The floor: one ECDSA P-384 verification.
    let parsed = AttestationReport::from_bytes(&report).map_err(|e| e.to_string())?;
    let sig = parsed.signature_p384_fixed().map_err(|e| e.to_string())?;
    let key = first.vek.ecdsa_p384_key().ok_or("VEK has no P-384 key")?;
    let mut floor = || key.verify(parsed.signed_bytes(), &sig).is_ok();

    let mut results =
        measure(budget, &mut [&mut full, &mut cached, &mut sev, &mut floor]).into_iter();
    let mut next = || results.next().unwrap_or_else(|| Err("not measured".into()));
    let (full, cached, mut sev, floor) = (next(), next(), next(), next());
    if let Some(e) = sev_error {
        sev = Err(e);
    }
    Ok(Row {
        name: set.name,
        full,
        cached,
        sev,
        floor,
    })
}

fn cell(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:>10.0}"),
        Err(_) => format!("{:>10}", "n/a"),
    }
}

fn ratio(a: &Result<f64, String>, b: &Result<f64, String>) -> String {
    match (a, b) {
        (Ok(a), Ok(b)) if *b > 0.0 => format!("{:>8.2}x", a / b),
        _ => format!("{:>9}", "n/a"),
    }
}

/// Share of one operation's time spent in the ECDSA floor: (1/floor) / (1/op).
fn share(floor: &Result<f64, String>, op: &Result<f64, String>) -> String {
    match (floor, op) {
        (Ok(f), Ok(o)) if *f > 0.0 => format!("{:>7.1}%", 100.0 * o / f),
        _ => format!("{:>8}", "n/a"),
    }
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(secs.max(0.05));
    println!("SEV-SNP report verification, reports per CPU second on one thread ({secs} s of thread CPU time per cell, best of 10 interleaved rounds)");
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>8}",
        "vector", "full", "cached", "sev 8", "ecdsa", "full/sev", "cach/sev", "ecdsa%f", "ecdsa%c"
    );
    let mut notes = Vec::new();
    for set in &SETS {
        match bench_set(set, budget) {
            Ok(row) => {
                println!(
                    "{:<18} {} {} {} {} {} {} {} {}",
                    row.name,
                    cell(&row.full),
                    cell(&row.cached),
                    cell(&row.sev),
                    cell(&row.floor),
                    ratio(&row.full, &row.sev),
                    ratio(&row.cached, &row.sev),
                    share(&row.floor, &row.full),
                    share(&row.floor, &row.cached),
                );
                for (what, r) in [
                    ("full", &row.full),
                    ("cached", &row.cached),
                    ("sev 8", &row.sev),
                    ("ecdsa", &row.floor),
                ] {
                    if let Err(e) = r {
                        notes.push(format!("{}: {what}: {e}", row.name));
                    }
                }
            }
            Err(e) => notes.push(format!("{}: cannot run: {e}", set.name)),
        }
    }
    // The masked-CHIP_ID version-2 report: the sev crate cannot parse it at all.
    let masked = std::fs::read(vectors().join("milan-v2-vcek/report.bin")).map(|mut b| {
        if let Some(chip) = b.get_mut(0x1A0..0x1E0) {
            chip.fill(0);
        }
        b
    });
    if let Ok(b) = masked {
        let ours = AttestationReport::parse(&b).is_ok();
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(&b);
        notes.push(format!(
            "milan-v2-vcek with CHIP_ID masked (not signed, parse only): cloister parses: {ours}; sev 8 parses: {}",
            match theirs {
                Ok(_) => "yes".to_string(),
                Err(e) => format!("no ({e})"),
            }
        ));
    }
    println!();
    println!("full/sev, cach/sev: throughput ratios (above 1 = cloister faster).");
    println!("ecdsa%f, ecdsa%c: share of one full / cached verification spent in the single ECDSA P-384 verification (the floor).");
    for n in notes {
        println!("note: {n}");
    }
}
