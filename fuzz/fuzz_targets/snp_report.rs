//! SEV-SNP attestation report parsing: any input either parses or is refused with an
//! error; a parsed report re-serialises to the same bytes, and the policy checks run on
//! it for every generation without panicking.
#![no_main]

use cloister_attestation::report::{AttestationReport, Generation};
use cloister_policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = AttestationReport::parse(data) else {
        return;
    };
    assert_eq!(&report.to_bytes()[..], data, "report does not round-trip");
    let _ = report.reserved_violations();
    let _ = report.cpuid_generation();
    let _ = report.signature_p384_fixed();
    let policy = Policy::default();
    for generation in [Generation::Milan, Generation::Genoa, Generation::Turin] {
        let _ = policy.check(&report, generation);
    }
});
