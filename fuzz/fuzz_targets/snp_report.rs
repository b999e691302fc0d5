//! SEV-SNP attestation reports, through the parser and the whole verifier.
//!
//! Input: `[mode][checks off][report: 1184 bytes, zero-padded][VCEK/VLEK DER: the rest]`.
//! The report is always 1184 bytes, so every input reaches the parser (the old target
//! needed an input of exactly that length). `mode` picks the verification instant, an
//! optional `--product`, and which AMD vector set's certificate to use when the input
//! carries none; `checks off` switches single checks off. Seeds: AMD's real reports with
//! their own certificates (`../shared/vectors/snp`).
//!
//! Asserted:
//! - parsing fails only for a VERSION outside 2..=5 (the length is right);
//! - `to_bytes` gives back every byte except the reserved ranges of that version, which it
//!   zeroes (the format keeps no reserved byte); with no reserved violation it gives back
//!   the input exactly, and `from_bytes` accepts exactly those reports; re-parsing the
//!   output changes nothing;
//! - `signature_p384_fixed` accepts exactly the R and S whose upper 24 bytes are zero;
//! - verification returns the report as given; a check switched off is reported as
//!   skipped, never as passed or failed; and a report that passes every check has the
//!   signed bytes (0..0x2A0) of one of AMD's real reports: nothing the fuzzer makes can
//!   verify unless it is genuine;
//! - the tenant policy checks run on every report for every generation.
#![no_main]

use cloister_attestation::certs::{CertBundle, Certificate};
use cloister_attestation::report::{AttestationReport, Generation, REPORT_SIZE, SIGNED_SIZE};
use cloister_attestation::verify::{verify, Outcome, VerifyOptions};
use cloister_fuzz::fixtures::{self, VectorSet};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use cloister_policy::Policy;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;

/// Reserved byte ranges of a report of `version` (ABI "Attestation Report" table).
fn reserved_ranges(version: u32) -> [(usize, usize); 6] {
    [
        (0x4C, 0x50),
        (if version >= 3 { 0x18B } else { 0x188 }, 0x1A0),
        (0x1EB, 0x1EC),
        (0x1EF, 0x1F0),
        (if version >= 5 { 0x208 } else { 0x1F8 }, SIGNED_SIZE),
        (SIGNED_SIZE + 144, REPORT_SIZE),
    ]
}

/// The checks `checks_off` bits switch off, and the check names they govern.
const SWITCHES: [&str; 8] = [
    ".validity",
    ".key_usage",
    ".algorithms",
    ".names",
    ".tcb",
    ".hwid",
    ".product_name",
    "report.signing_key",
];

fn options(mode: u8, checks_off: u8, default_at: OffsetDateTime) -> VerifyOptions {
    let at = match mode & 3 {
        0 => default_at,
        1 => OffsetDateTime::from_unix_timestamp(1_748_736_000).unwrap_or(default_at),
        2 => OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap_or(default_at),
        _ => OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap_or(default_at),
    };
    let mut opts = VerifyOptions::at(at);
    opts.product = match (mode >> 2) & 3 {
        1 => Some(Generation::Milan),
        2 => Some(Generation::Genoa),
        3 => Some(Generation::Turin),
        _ => None,
    };
    let off = |bit: u8| checks_off & (1 << bit) != 0;
    opts.check_validity = !off(0);
    opts.check_key_usage = !off(1);
    opts.check_algorithms = !off(2);
    opts.check_names = !off(3);
    opts.check_tcb_extensions = !off(4);
    opts.check_hwid = !off(5);
    opts.check_product_name = !off(6);
    opts.check_signing_key = !off(7);
    // `check_reserved` stays on: the round-trip assertions above cover reserved bytes.
    opts
}

fn check_round_trip(data: &[u8; REPORT_SIZE], report: &AttestationReport) {
    let out = report.to_bytes();
    let reserved = reserved_ranges(report.version);
    for (i, (&got, &given)) in out.iter().zip(data.iter()).enumerate() {
        let in_reserved = reserved.iter().any(|&(s, e)| (s..e).contains(&i));
        let want = if in_reserved { 0 } else { given };
        assert_eq!(got, want, "to_bytes changed byte {i:#x}");
    }
    let clean = report.reserved_violations().is_empty();
    if clean {
        assert_eq!(
            &out, data,
            "a report without reserved violations round-trips"
        );
    }
    assert_eq!(
        AttestationReport::from_bytes(data).is_ok(),
        clean,
        "from_bytes refuses exactly the reports with reserved violations"
    );
    let again = AttestationReport::parse(&out).expect("to_bytes output parses");
    assert_eq!(again.to_bytes(), out, "re-serialising is idempotent");
    assert_eq!(again.raw(), &out);
    assert!(
        !again
            .reserved_violations()
            .iter()
            .any(|v| v.field.starts_with("bytes ")),
        "to_bytes leaves no reserved byte range set"
    );
}

fn check_signature_format(report: &AttestationReport) {
    let fits = report.signature_r[48..].iter().all(|&b| b == 0)
        && report.signature_s[48..].iter().all(|&b| b == 0);
    match report.signature_p384_fixed() {
        Ok(fixed) => {
            assert!(fits);
            for i in 0..48 {
                assert_eq!(fixed[i], report.signature_r[47 - i]);
                assert_eq!(fixed[48 + i], report.signature_s[47 - i]);
            }
        }
        Err(_) => assert!(!fits, "an R/S that fits 48 bytes is refused"),
    }
}

fn check_verification(data: &[u8; REPORT_SIZE], vek: Certificate, opts: &VerifyOptions) {
    let mut bundle = CertBundle::default();
    if bundle.add(vek, "fuzz input").is_err() {
        return;
    }
    let Ok(v) = verify(data, &bundle, opts) else {
        return;
    };
    assert_eq!(
        &v.report.raw()[..],
        &data[..],
        "the report verified is the one given"
    );
    assert!(!v.checks.is_empty());
    for (bit, suffix) in SWITCHES.iter().enumerate() {
        let switched_off = match bit {
            0 => !opts.check_validity,
            1 => !opts.check_key_usage,
            2 => !opts.check_algorithms,
            3 => !opts.check_names,
            4 => !opts.check_tcb_extensions,
            5 => !opts.check_hwid,
            6 => !opts.check_product_name,
            _ => !opts.check_signing_key,
        };
        if switched_off {
            for c in v.checks.iter().filter(|c| c.name.ends_with(suffix)) {
                assert_eq!(c.outcome, Outcome::Skip, "switched off but ran: {c}");
            }
        }
    }
    if v.passed() {
        let genuine = fixtures::vector_sets()
            .iter()
            .any(|s| s.report.get(..SIGNED_SIZE) == Some(&data[..SIGNED_SIZE]));
        assert!(
            genuine,
            "a report that is not AMD's passed verification: {:?}",
            v.checks
        );
    }
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let (mode, checks_off) = (r.u8(), r.u8());
    let report_bytes: [u8; REPORT_SIZE] = r.array();
    let vek_der = r.rest();

    let version = u32::from_le_bytes([
        report_bytes[0],
        report_bytes[1],
        report_bytes[2],
        report_bytes[3],
    ]);
    let report = match AttestationReport::parse(&report_bytes) {
        Ok(report) => report,
        Err(_) => {
            assert!(!(2..=5).contains(&version), "a report of version {version} refused");
            return;
        }
    };
    assert!((2..=5).contains(&version));
    check_round_trip(&report_bytes, &report);
    check_signature_format(&report);
    let _ = report.cpuid_generation();
    let _ = report.guest_policy();

    for policy in policies() {
        for generation in Generation::ALL {
            let checks = policy.check(&report, generation);
            assert!(checks.iter().all(|c| c.name.starts_with("policy.")));
        }
    }

    let sets = fixtures::vector_sets();
    let set: Option<&VectorSet> = (!sets.is_empty()).then(|| &sets[usize::from(mode >> 4) % sets.len()]);
    let default_at = set.map_or(OffsetDateTime::UNIX_EPOCH, |s| s.valid_at);
    let vek = if vek_der.is_empty() {
        set.map(|s| s.vek.clone())
    } else {
        Certificate::from_der(vek_der, "fuzz input").ok()
    };
    if let Some(vek) = vek {
        check_verification(&report_bytes, vek, &options(mode, checks_off, default_at));
    }
});

/// The default policy and the repository's examples.
fn policies() -> &'static [Policy] {
    static POLICIES: std::sync::OnceLock<Vec<Policy>> = std::sync::OnceLock::new();
    POLICIES.get_or_init(|| {
        let mut out = vec![Policy::default()];
        for path in fixtures::policy_examples() {
            if let Ok(p) = Policy::from_file(&path) {
                out.push(p);
            }
        }
        out
    })
}

fn warm_up() {
    let _ = fixtures::vector_sets();
    let _ = policies();
}

fn seeds(out: &mut Seeds) {
    for (i, set) in fixtures::vector_sets().iter().enumerate() {
        let mode = (i as u8) << 4;
        // The report with its set's certificate taken from the fixture (mode picks it),
        // and with the certificate in the input.
        out.add(
            set.name,
            &Writer::new().u8(mode).u8(0).bytes(&set.report).finish(),
        );
        out.add(
            &format!("{}-with-vek", set.name),
            &Writer::new()
                .u8(mode)
                .u8(0)
                .bytes(&set.report)
                .bytes(&set.vek_der)
                .finish(),
        );
        // Every check switched off, and at an instant where the certificates are expired.
        out.add(
            &format!("{}-checks-off", set.name),
            &Writer::new().u8(mode).u8(0xff).bytes(&set.report).finish(),
        );
        out.add(
            &format!("{}-2030", set.name),
            &Writer::new().u8(mode | 2).u8(0).bytes(&set.report).finish(),
        );
    }
}
