//! AMD SEV-SNP certificates: ARK, ASK, ASVK, VCEK and VLEK (X.509 v3, parsed with
//! `x509-parser`), AMD's roots built in, the file layouts users have (snpguest's certs
//! directory, the KDS cert_chain PEM, single PEM/DER files), and CRLs.
//!
//! A [`Certificate`] keeps the DER and the facts the verifier needs, extracted once: names,
//! validity, key, signature algorithm, key usage and the AMD extensions (TCB SPLs, hwID,
//! productName, CSP-ID). Nothing here decides whether a certificate is trusted; that is
//! [`crate::verify`]'s job.

mod builtin;
mod crl;
mod extensions;
mod load;
mod simulation;

pub use builtin::{builtin_roots, BuiltinRoots};
pub use crl::Crl;
pub use extensions::{AmdExtensions, OID_CSP_ID, OID_HWID, OID_PRODUCT_NAME, OID_TCB_PREFIX};
pub use load::CertBundle;
pub use simulation::{
    names_simulation, sim_distinguished_name, SIM_COUNTRY, SIM_LOCALITY, SIM_ORGANIZATION,
    SIM_ORGANIZATIONAL_UNIT, SIM_STATE,
};

use ring::signature::{self, UnparsedPublicKey};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::signature_algorithm::SignatureAlgorithm;

use crate::report::Generation;

/// Errors of certificate and CRL loading.
#[derive(Debug, Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are neither a DER certificate nor PEM certificates.
    #[error("{what} is not an X.509 certificate: {detail}")]
    NotACertificate {
        /// What was being parsed (a file name or a role).
        what: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A PEM block is malformed.
    #[error("{what}: malformed PEM: {detail}")]
    Pem {
        /// What was being parsed.
        what: String,
        /// The parser's complaint.
        detail: String,
    },
    /// An AMD extension has an encoding this parser refuses.
    #[error("certificate {subject}: extension {oid} is malformed: {detail}")]
    Extension {
        /// Subject of the certificate.
        subject: String,
        /// The extension.
        oid: String,
        /// What is wrong.
        detail: String,
    },
    /// A certificate's subject is none of ARK/ASK/ASVK/VCEK/VLEK.
    #[error("{what}: subject common name {cn:?} is not an AMD ARK, ASK, ASVK, VCEK or VLEK")]
    UnknownRole {
        /// Where it came from.
        what: String,
        /// Its common name.
        cn: String,
    },
    /// A file named for one role holds another.
    #[error("{file} should hold the {expected} but holds {found} ({cn})")]
    WrongFile {
        /// File name.
        file: String,
        /// The role its name promises.
        expected: CertRole,
        /// The role of its content.
        found: CertRole,
        /// Subject common name.
        cn: String,
    },
    /// Two different certificates for one role were given.
    #[error("two different {role} certificates were given ({first} and {second})")]
    Duplicate {
        /// The role.
        role: CertRole,
        /// Where the first came from.
        first: String,
        /// Where the second came from.
        second: String,
    },
    /// A directory held no certificate.
    #[error("no certificates found in {0} (expected ark.pem, ask.pem, vcek.pem/.der, vlek.pem/.der, asvk.pem or a cert_chain PEM)")]
    EmptyDirectory(String),
    /// A CRL could not be parsed.
    #[error("{what} is not an X.509 CRL: {detail}")]
    NotACrl {
        /// Where it came from.
        what: String,
        /// The parser's complaint.
        detail: String,
    },
}

/// The role of a certificate in AMD's hierarchy, from its subject common name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CertRole {
    /// AMD Root Key, "ARK-`<generation>`", self-signed.
    Ark,
    /// AMD SEV Signing Key, "SEV-`<generation>`", signs VCEKs.
    Ask,
    /// AMD SEV VLEK Signing Key, "SEV-VLEK-`<generation>`", signs VLEKs.
    Asvk,
    /// Versioned Chip Endorsement Key, "SEV-VCEK".
    Vcek,
    /// Versioned Loaded Endorsement Key, "SEV-VLEK".
    Vlek,
}

impl std::fmt::Display for CertRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ark => "ARK",
            Self::Ask => "ASK",
            Self::Asvk => "ASVK",
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
        })
    }
}

impl CertRole {
    /// Role and (for CA certificates) generation from a subject common name.
    pub fn from_common_name(cn: &str) -> Option<(Self, Option<Generation>)> {
        match cn {
            "SEV-VCEK" => return Some((Self::Vcek, None)),
            "SEV-VLEK" => return Some((Self::Vlek, None)),
            _ => {}
        }
        let gen_of = |s: &str| Generation::ALL.into_iter().find(|g| g.name() == s);
        if let Some(rest) = cn.strip_prefix("ARK-") {
            return gen_of(rest).map(|g| (Self::Ark, Some(g)));
        }
        if let Some(rest) = cn.strip_prefix("SEV-VLEK-") {
            return gen_of(rest).map(|g| (Self::Asvk, Some(g)));
        }
        if let Some(rest) = cn.strip_prefix("SEV-") {
            return gen_of(rest).map(|g| (Self::Ask, Some(g)));
        }
        None
    }

    /// The subject common name AMD gives this role for `generation`.
    pub fn expected_common_name(self, generation: Generation) -> String {
        match self {
            Self::Ark => format!("ARK-{generation}"),
            Self::Ask => format!("SEV-{generation}"),
            Self::Asvk => format!("SEV-VLEK-{generation}"),
            Self::Vcek => "SEV-VCEK".into(),
            Self::Vlek => "SEV-VLEK".into(),
        }
    }
}

/// How a certificate is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureAlg {
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48, trailer 1 (AMD's chain).
    RsaPssSha384,
    /// ECDSA with SHA-384.
    EcdsaSha384,
    /// Anything else (named for the error message).
    Other(String),
}

/// A certificate's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: the RSAPublicKey DER and the modulus size in bits.
    Rsa {
        /// RSAPublicKey DER (what ring takes).
        der: Vec<u8>,
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on P-384: the uncompressed point (0x04 || X || Y).
    EcP384(Vec<u8>),
    /// Anything else (named for the error message).
    Other(String),
}

impl PublicKey {
    /// Describes the key for messages ("RSA-4096", "EC P-384").
    pub fn describe(&self) -> String {
        match self {
            Self::Rsa { bits, .. } => format!("RSA-{bits}"),
            Self::EcP384(_) => "EC P-384".into(),
            Self::Other(s) => s.clone(),
        }
    }
}

/// A parsed certificate with the facts the verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    der: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// X.509 version number as encoded (2 means v3).
    pub x509_version: u32,
    /// Serial number, DER content bytes (two's complement, big-endian).
    pub serial: Vec<u8>,
    /// Subject, as text.
    pub subject: String,
    /// Issuer, as text.
    pub issuer: String,
    /// Subject common name.
    pub subject_cn: String,
    /// Issuer common name.
    pub issuer_cn: String,
    /// Raw DER of the subject name.
    pub subject_der: Vec<u8>,
    /// Raw DER of the issuer name.
    pub issuer_der: Vec<u8>,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// The signature algorithm of the outer certificate.
    pub signature_alg: SignatureAlg,
    /// True when the TBS signature algorithm equals the outer one (RFC 5280 4.1.1.2).
    pub signature_alg_consistent: bool,
    /// The subject public key.
    pub public_key: PublicKey,
    /// basicConstraints cA, when the extension is present.
    pub basic_constraints_ca: Option<bool>,
    /// keyUsage (digitalSignature, keyCertSign, cRLSign), when the extension is present.
    pub key_usage: Option<KeyUsage>,
    /// Critical extensions this verifier does not understand.
    pub unknown_critical: Vec<String>,
    /// AMD's extensions.
    pub amd: AmdExtensions,
}

/// The keyUsage bits the verifier looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyUsage {
    /// digitalSignature.
    pub digital_signature: bool,
    /// keyCertSign.
    pub key_cert_sign: bool,
    /// cRLSign.
    pub crl_sign: bool,
}

fn oid_str(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    oid.to_id_string()
}

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// Extensions the verifier understands (so they may be critical).
const KNOWN_EXTENSIONS: [&str; 6] = [
    "2.5.29.15", // keyUsage
    "2.5.29.19", // basicConstraints
    "2.5.29.14", // subjectKeyIdentifier
    "2.5.29.35", // authorityKeyIdentifier
    "2.5.29.31", // cRLDistributionPoints
    "2.5.29.37", // extKeyUsage
];

pub(crate) fn classify_signature_alg(
    alg: &x509_parser::x509::AlgorithmIdentifier<'_>,
) -> SignatureAlg {
    let oid = oid_str(&alg.algorithm);
    match SignatureAlgorithm::try_from(alg) {
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
            let hash_ok = params.hash_algorithm_oid().to_id_string() == OID_SHA384;
            let mgf_ok = params
                .mask_gen_algorithm()
                .map(|m| m.mgf.to_id_string() == OID_MGF1 && m.hash.to_id_string() == OID_SHA384)
                .unwrap_or(false);
            if hash_ok && mgf_ok && params.salt_length() == 48 && params.trailer_field() == 1 {
                SignatureAlg::RsaPssSha384
            } else {
                SignatureAlg::Other(format!(
                    "RSASSA-PSS with hash {}, salt {}, trailer {}",
                    params.hash_algorithm_oid().to_id_string(),
                    params.salt_length(),
                    params.trailer_field()
                ))
            }
        }
        Ok(SignatureAlgorithm::ECDSA) if oid == OID_ECDSA_SHA384 => SignatureAlg::EcdsaSha384,
        _ => SignatureAlg::Other(oid),
    }
}

pub(crate) fn first_cn_of(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string()
}

impl Certificate {
    /// Parses one DER certificate; `what` names it in errors.
    pub fn from_der(der: &[u8], what: &str) -> Result<Self, CertError> {
        let not_cert = |detail: String| CertError::NotACertificate {
            what: what.to_string(),
            detail,
        };
        let (rest, x) = X509Certificate::from_der(der).map_err(|e| not_cert(e.to_string()))?;
        if !rest.is_empty() {
            return Err(not_cert(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }
        let tbs = &x.tbs_certificate;
        let subject = tbs.subject.to_string();
        let public_key = {
            let spki = &tbs.subject_pki;
            let alg = oid_str(&spki.algorithm.algorithm);
            if alg == OID_RSA_ENCRYPTION || alg == OID_RSASSA_PSS {
                let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
                PublicKey::Rsa {
                    der: spki.subject_public_key.data.to_vec(),
                    bits,
                }
            } else if alg == OID_EC_PUBLIC_KEY {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                let point = spki.subject_public_key.data.to_vec();
                if curve == OID_SECP384R1 && point.len() == 97 && point.first() == Some(&4) {
                    PublicKey::EcP384(point)
                } else {
                    PublicKey::Other(format!("EC key on curve {curve:?}"))
                }
            } else {
                PublicKey::Other(format!("key algorithm {alg}"))
            }
        };
        let basic_constraints_ca = x
            .basic_constraints()
            .map_err(|e| not_cert(format!("basicConstraints: {e}")))?
            .map(|bc| bc.value.ca);
        let key_usage = x
            .key_usage()
            .map_err(|e| not_cert(format!("keyUsage: {e}")))?
            .map(|ku| KeyUsage {
                digital_signature: ku.value.digital_signature(),
                key_cert_sign: ku.value.key_cert_sign(),
                crl_sign: ku.value.crl_sign(),
            });
        let mut unknown_critical = Vec::new();
        let mut amd = AmdExtensions::default();
        for ext in tbs.extensions() {
            let oid = oid_str(&ext.oid);
            let known = amd
                .absorb(&oid, ext.value)
                .map_err(|detail| CertError::Extension {
                    subject: subject.clone(),
                    oid: oid.clone(),
                    detail,
                })?;
            if ext.critical && !known && !KNOWN_EXTENSIONS.contains(&oid.as_str()) {
                unknown_critical.push(oid);
            }
        }
        let outer = classify_signature_alg(&x.signature_algorithm);
        Ok(Self {
            der: der.to_vec(),
            tbs: tbs.as_ref().to_vec(),
            signature: x.signature_value.data.to_vec(),
            x509_version: tbs.version.0,
            serial: tbs.raw_serial().to_vec(),
            issuer: tbs.issuer.to_string(),
            subject_cn: first_cn_of(&tbs.subject),
            issuer_cn: first_cn_of(&tbs.issuer),
            subject_der: tbs.subject.as_raw().to_vec(),
            issuer_der: tbs.issuer.as_raw().to_vec(),
            subject,
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            signature_alg_consistent: tbs.signature == x.signature_algorithm,
            signature_alg: outer,
            public_key,
            basic_constraints_ca,
            key_usage,
            unknown_critical,
            amd,
        })
    }

    /// Parses a file's bytes: one DER certificate, or one or more PEM certificates.
    pub fn parse_all(bytes: &[u8], what: &str) -> Result<Vec<Self>, CertError> {
        if looks_like_pem(bytes) {
            check_pem_armor(bytes).map_err(|detail| CertError::Pem {
                what: what.to_string(),
                detail,
            })?;
            let mut out = Vec::new();
            for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
                let pem = pem.map_err(|e| CertError::Pem {
                    what: what.to_string(),
                    detail: e.to_string(),
                })?;
                if pem.label != "CERTIFICATE" {
                    continue;
                }
                out.push(Self::from_der(&pem.contents, what)?);
            }
            if out.is_empty() {
                return Err(CertError::NotACertificate {
                    what: what.to_string(),
                    detail: "no CERTIFICATE block in the PEM text".into(),
                });
            }
            Ok(out)
        } else {
            Self::from_der(bytes, what)
                .map(|c| vec![c])
                .map_err(|e| match e {
                    CertError::NotACertificate { what, detail } => CertError::NotACertificate {
                        what,
                        detail: format!(
                            "neither DER ({detail}) nor PEM (no -----BEGIN CERTIFICATE----- line)"
                        ),
                    },
                    other => other,
                })
        }
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The role from the subject common name.
    pub fn role(&self) -> Option<CertRole> {
        CertRole::from_common_name(&self.subject_cn).map(|(r, _)| r)
    }

    /// The generation named in a CA certificate's subject ("ARK-Milan" is Milan).
    pub fn name_generation(&self) -> Option<Generation> {
        CertRole::from_common_name(&self.subject_cn).and_then(|(_, g)| g)
    }

    /// SHA-256 of the DER, hex (to name a certificate in messages).
    pub fn fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.der))
    }

    /// True when `at` (Unix seconds) lies within notBefore..=notAfter.
    pub fn valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    /// Checks that `issuer`'s RSA key made this certificate's RSASSA-PSS SHA-384 signature.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), String> {
        verify_rsa_pss(
            &self.signature_alg,
            &issuer.public_key,
            &self.tbs,
            &self.signature,
        )
    }

    /// The ring verifier for this certificate's P-384 key (VCEK/VLEK).
    pub fn ecdsa_p384_key(&self) -> Option<UnparsedPublicKey<&[u8]>> {
        match &self.public_key {
            PublicKey::EcP384(point) => Some(UnparsedPublicKey::new(
                &signature::ECDSA_P384_SHA384_FIXED,
                point.as_slice(),
            )),
            _ => None,
        }
    }
}

pub(crate) fn verify_rsa_pss(
    alg: &SignatureAlg,
    key: &PublicKey,
    signed: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    if *alg != SignatureAlg::RsaPssSha384 {
        return Err(format!(
            "signature algorithm is {alg:?}, not RSASSA-PSS SHA-384 salt 48"
        ));
    }
    let PublicKey::Rsa { der, .. } = key else {
        return Err(format!("issuer key is {}, not RSA", key.describe()));
    };
    UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA384, der.as_slice())
        .verify(signed, sig)
        .map_err(|_| "RSA-PSS signature does not verify with the issuer's key".to_string())
}

pub(crate) fn looks_like_pem(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .and_then(|i| bytes.get(i..))
        .unwrap_or(&[]);
    trimmed.starts_with(b"-----BEGIN")
}

/// Checks every PEM armor line of `text` (a line starting with `-----BEGIN` or
/// `-----END`) against RFC 7468: `-----BEGIN label-----` with a label of printable
/// characters other than `-`, single hyphens or spaces between them. `x509-parser`'s PEM
/// reader is laxer (it reads `-----BEGIN CERTIFICATE--x y-----` as a CERTIFICATE block);
/// a mangled boundary is refused here, naming its line, rather than guessed at.
pub(crate) fn check_pem_armor(bytes: &[u8]) -> Result<(), String> {
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let label = if let Some(rest) = line.strip_prefix(b"-----BEGIN") {
            rest
        } else if let Some(rest) = line.strip_prefix(b"-----END") {
            rest
        } else {
            continue;
        };
        let valid = label
            .strip_prefix(b" ")
            .and_then(|l| l.strip_suffix(b"-----"))
            .is_some_and(valid_pem_label);
        if !valid {
            return Err(format!(
                "line {}: {:?} is not an RFC 7468 boundary (-----BEGIN LABEL-----)",
                index + 1,
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ));
        }
    }
    Ok(())
}

/// RFC 7468 `label`: printable ASCII other than `-` (labelchar), with at most one `-` or
/// space between two labelchars; empty is allowed.
fn valid_pem_label(label: &[u8]) -> bool {
    let labelchar = |b: u8| (0x21..=0x7e).contains(&b) && b != b'-';
    let mut previous_separator = true;
    for &b in label {
        if labelchar(b) {
            previous_separator = false;
        } else if (b == b'-' || b == b' ') && !previous_separator {
            previous_separator = true;
        } else {
            return false;
        }
    }
    label.is_empty() || !previous_separator
}

#[cfg(test)]
mod tests;

impl std::fmt::Display for SignatureAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RsaPssSha384 => f.write_str("RSASSA-PSS SHA-384"),
            Self::EcdsaSha384 => f.write_str("ECDSA SHA-384"),
            Self::Other(s) => f.write_str(s),
        }
    }
}
