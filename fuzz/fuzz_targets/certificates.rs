//! Certificates and CRLs (PEM or DER, one or many), the AMD extensions a verifier relies
//! on, sorting into a `CertBundle` by role, and the signature checks between them.
//!
//! Input: `[mode][first: u16-length-prefixed][second: the rest]`. `mode & 3` picks what
//! `first` is: 0 a certificate file (PEM or DER), also saved under a file name (`mode >>
//! 2` picks `ark.pem`, `vcek.der`, `chain.pem`, ...) and loaded with
//! `CertBundle::add_file`, checked against `second` as its issuer; 1 a CRL checked against
//! `second` as its issuer; 2 a certificate file with `second` a CRL that may revoke it; 3
//! both parsed as anything. Each item is also checked against AMD's built-in roots of every
//! generation. Seeds: every certificate of AMD's vectors and chains, and CRLs made with the
//! `openssl` CLI over a re-keyed AMD-shaped chain.
//!
//! Asserted besides no panic or error-as-panic:
//! - a certificate's DER parses back to the same certificate, and its role and
//!   generation agree with `CertRole::from_common_name` of its subject;
//! - a bundle takes a certificate exactly when it has a role, takes the same certificate
//!   twice, and refuses a different one of the same role;
//! - `add_file` takes a file exactly when every certificate in it has a role, the one its
//!   file name promises (snpguest's names), and no two differ in one role;
//! - `parse_all` of PEM text returns at most one certificate per `CERTIFICATE` block;
//! - a CRL revokes exactly the certificates whose serial it lists.
#![no_main]

#[path = "../../attestation/tests/common/amd_pki.rs"]
#[allow(unused_imports)]
mod amd_pki;

use cloister_attestation::certs::{builtin_roots, CertBundle, CertRole, Certificate, Crl};
use cloister_attestation::report::Generation;
use cloister_fuzz::fixtures;
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use libfuzzer_sys::fuzz_target;

fn check_certificate(cert: &Certificate) {
    let again = Certificate::from_der(cert.der(), "re-parse").expect("a certificate's DER parses");
    assert_eq!(&again, cert, "DER round trip");
    let from_name = cloister_attestation::certs::CertRole::from_common_name(&cert.subject_cn);
    assert_eq!(cert.role(), from_name.map(|(r, _)| r));
    assert_eq!(cert.name_generation(), from_name.and_then(|(_, g)| g));
    assert_eq!(cert.fingerprint().len(), 64);
    assert_eq!(
        cert.valid_at(cert.not_before),
        cert.not_before <= cert.not_after
    );
    for generation in Generation::ALL {
        let _ = cert.amd.tcb(generation);
    }
    let _ = cert.ecdsa_p384_key();
    let _ = cert.public_key.describe();

    let mut bundle = CertBundle::default();
    match cert.role() {
        Some(role) => {
            bundle
                .add(cert.clone(), "first")
                .expect("a certificate with a role is taken");
            bundle
                .add(cert.clone(), "again")
                .expect("the same certificate twice is taken");
            assert_eq!(bundle.origin(role), Some("first"));
            let slot = match role {
                CertRole::Ark => &bundle.ark,
                CertRole::Ask => &bundle.ask,
                CertRole::Asvk => &bundle.asvk,
                CertRole::Vcek => &bundle.vcek,
                CertRole::Vlek => &bundle.vlek,
            };
            assert_eq!(slot.as_ref(), Some(cert));
        }
        None => assert!(bundle.add(cert.clone(), "first").is_err()),
    }
}

/// Every certificate in a file's bytes, checked one by one.
fn certificates(bytes: &[u8]) -> Vec<Certificate> {
    let Ok(certs) = Certificate::parse_all(bytes, "fuzz input") else {
        return Vec::new();
    };
    assert!(
        !certs.is_empty(),
        "parse_all returns at least one certificate or an error"
    );
    let text = String::from_utf8_lossy(bytes);
    if text.trim_start().starts_with("-----BEGIN") {
        let blocks = text.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(
            certs.len() <= blocks,
            "{} certificates from {blocks} blocks",
            certs.len()
        );
    }
    for c in &certs {
        check_certificate(c);
    }
    // Two different certificates of one role cannot share a bundle: the first one of a
    // role holds the slot.
    let mut bundle = CertBundle::default();
    let mut holders: Vec<&Certificate> = Vec::new();
    for c in &certs {
        let added = bundle.add(c.clone(), "fuzz input");
        let Some(role) = c.role() else {
            assert!(added.is_err(), "a certificate without a role was taken");
            continue;
        };
        match holders.iter().find(|h| h.role() == Some(role)) {
            Some(holder) => assert_eq!(added.is_ok(), holder.der() == c.der()),
            None => {
                assert!(added.is_ok());
                holders.push(c);
            }
        }
    }
    certs
}

/// The file names `CertBundle::add_file` reads a role from (snpguest's layout), and others.
const FILE_NAMES: [&str; 7] = [
    "ark.pem",
    "ask.pem",
    "asvk.pem",
    "vcek.der",
    "vlek.pem",
    "chain.pem",
    "cert_chain.der",
];

/// `CertBundle::add_file` of `bytes` saved as a file named by `name`: it takes the file
/// exactly when every certificate in it has a role, the one its name promises (when the
/// name promises one), and no two different certificates share a role.
fn check_file(bytes: &[u8], certs: &[Certificate], name: u8) {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| cloister_fuzz::scratch_dir("certificates"));
    let name = FILE_NAMES[usize::from(name) % FILE_NAMES.len()];
    let path = dir.join(name);
    if std::fs::write(&path, bytes).is_err() {
        return;
    }
    let promised = match name.split('.').next() {
        Some("ark") => Some(CertRole::Ark),
        Some("ask") => Some(CertRole::Ask),
        Some("asvk") => Some(CertRole::Asvk),
        Some("vcek") => Some(CertRole::Vcek),
        Some("vlek") => Some(CertRole::Vlek),
        _ => None,
    };
    let roles_ok = !certs.is_empty()
        && certs
            .iter()
            .all(|c| c.role().is_some() && promised.is_none_or(|p| c.role() == Some(p)));
    let unique = certs.iter().all(|c| {
        certs
            .iter()
            .all(|o| o.role() != c.role() || o.der() == c.der())
    });
    let mut bundle = CertBundle::default();
    let added = bundle.add_file(&path);
    assert_eq!(
        added.is_ok(),
        roles_ok && unique,
        "add_file of {name}: {added:?}"
    );
    if added.is_ok() {
        for c in certs {
            assert!(c.role().is_some_and(|r| bundle.origin(r).is_some()));
        }
    }
}

fn crl(bytes: &[u8], candidates: &[Certificate]) -> Option<Crl> {
    let crl = Crl::from_bytes(bytes, "fuzz input").ok()?;
    for c in candidates {
        assert_eq!(crl.revokes(c), crl.revoked_serials.contains(&c.serial));
        let _ = crl.verify_signed_by(c);
    }
    Some(crl)
}

/// AMD's built-in ARK, ASK and ASVK of every generation.
fn roots() -> Vec<Certificate> {
    Generation::ALL
        .into_iter()
        .filter_map(builtin_roots)
        .flat_map(|r| [r.ark.clone(), r.ask.clone(), r.asvk.clone()])
        .collect()
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let (first, second) = (r.blob(), r.rest());
    let roots = roots();
    match mode & 3 {
        0 => {
            let certs = certificates(first);
            check_file(first, &certs, mode >> 2);
            let issuers = certificates(second);
            for c in &certs {
                for issuer in issuers.iter().chain(&roots) {
                    let _ = c.verify_signed_by(issuer);
                }
            }
        }
        1 => {
            let issuers = certificates(second);
            let all: Vec<Certificate> = issuers.iter().chain(&roots).cloned().collect();
            crl(first, &all);
        }
        2 => {
            let certs = certificates(first);
            let all: Vec<Certificate> = certs.iter().chain(&roots).cloned().collect();
            crl(second, &all);
        }
        _ => {
            for part in [first, second] {
                let certs = certificates(part);
                crl(part, &certs);
                if let Ok(cert) = Certificate::from_der(part, "fuzz input") {
                    check_certificate(&cert);
                }
            }
        }
    }
});

fn warm_up() {
    let _ = roots();
}

fn seeds(out: &mut Seeds) {
    let files = fixtures::vector_certificate_files();
    let vectors = fixtures::vectors_dir();
    for f in &files {
        let Some(bytes) = fixtures::read(f) else {
            continue;
        };
        let name = f.strip_prefix(&vectors).unwrap_or(f).display().to_string();
        // Alone, and with the file next to it as the issuer (chain.pem for a VEK).
        out.add(
            &format!("cert-{name}"),
            &Writer::new().u8(0).blob(&bytes).finish(),
        );
        let chain = f.with_file_name("chain.pem");
        if let Some(issuer) = fixtures::read(&chain).filter(|_| chain != *f) {
            out.add(
                &format!("cert-{name}-by-chain"),
                &Writer::new().u8(0).blob(&bytes).bytes(&issuer).finish(),
            );
        }
    }
    // CRLs: a re-keyed Milan chain (the `openssl` CLI, as attestation/tests/crl.rs does).
    let roots = vectors.join("roots/milan");
    let vector = vectors.join("milan-v2-vcek");
    if !roots.join("ark.pem").exists() || !vector.join("vek.der").exists() {
        eprintln!("seeds: AMD vectors missing, no CRL seeds");
        return;
    }
    let made = std::panic::catch_unwind(|| {
        let parent = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scratch");
        let pki = amd_pki::Pki::milan(&parent, "crl", &roots, &vector);
        let vcek_serial = amd_pki::serial_hex(&pki.dir, &pki.vcek);
        let crls = [
            (
                "crl-empty",
                pki.crl("empty.crl", "250101000000Z", "260101000000Z", &[]),
            ),
            (
                "crl-revokes-ask",
                pki.crl(
                    "ask.crl",
                    "250101000000Z",
                    "260101000000Z",
                    &[&pki.ask_serial],
                ),
            ),
            (
                "crl-revokes-vcek",
                pki.crl(
                    "vcek.crl",
                    "250101000000Z",
                    "260101000000Z",
                    &[&vcek_serial, "01", "7f00"],
                ),
            ),
            (
                "crl-forged",
                pki.forged_crl("forged.crl", &pki.ark, "250101000000Z", "260101000000Z"),
            ),
        ];
        let ark = std::fs::read(&pki.ark).unwrap_or_default();
        let vcek = std::fs::read(&pki.vcek).unwrap_or_default();
        let chain = std::fs::read(&pki.chain).unwrap_or_default();
        let mut seeds = vec![(
            "rekeyed-chain".to_string(),
            Writer::new().u8(0).blob(&vcek).bytes(&chain).finish(),
        )];
        for (name, path) in crls {
            let pem = std::fs::read(&path).unwrap_or_default();
            let der = amd_pki::openssl(
                &pki.dir,
                &["crl", "-in", &path.display().to_string(), "-outform", "DER"],
            );
            seeds.push((
                format!("{name}-pem-by-ark"),
                Writer::new().u8(1).blob(&pem).bytes(&ark).finish(),
            ));
            seeds.push((
                format!("{name}-der-by-ark"),
                Writer::new().u8(1).blob(&der).bytes(&ark).finish(),
            ));
            seeds.push((
                format!("{name}-revoking-vcek"),
                Writer::new().u8(2).blob(&vcek).bytes(&pem).finish(),
            ));
        }
        let _ = std::fs::remove_dir_all(&pki.dir);
        seeds
    });
    match made {
        Ok(seeds) => {
            for (name, bytes) in seeds {
                out.add(&name, &bytes);
            }
        }
        Err(_) => eprintln!("seeds: the openssl CLI failed; no CRL seeds"),
    }
}
