//! Certificate and CRL parsing (PEM or DER, one or many), and the AMD extension decoding
//! a verifier relies on: any input is parsed or refused, never a panic.
#![no_main]

use cloister_attestation::certs::{Certificate, Crl};
use cloister_attestation::report::Generation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = Certificate::parse_all(data, "fuzz input") {
        for cert in &certs {
            let _ = cert.role();
            let _ = cert.name_generation();
            let _ = cert.ecdsa_p384_key();
            let _ = cert.verify_signed_by(cert);
        }
    }
    if let Ok(cert) = Certificate::from_der(data, "fuzz input") {
        for generation in [Generation::Milan, Generation::Genoa, Generation::Turin] {
            let _ = cert.amd.tcb(generation);
        }
    }
    let _ = Crl::from_bytes(data, "fuzz input");
});
