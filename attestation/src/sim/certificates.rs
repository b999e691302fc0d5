//! The simulation root's certificates, in AMD's formats (ARK/ASK certificate layout of the
//! KDS, VCEK certificate specification): X.509 v3, RSASSA-PSS SHA-384 (MGF1 SHA-384, salt
//! 48) signatures by RSA-4096 CA keys, an EC P-384 VCEK key, AMD's extensions and
//! extension order. The names are the simulation's ([`crate::certs::SIM_ORGANIZATION`]).

use std::time::Duration;

use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::RsaPrivateKey;
use sha2::Sha384;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::der::asn1::{
    BitString, GeneralizedTime, Ia5StringRef, OctetString, PrintableStringRef, SetOfVec, UtcTime,
    Utf8StringRef,
};
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use super::SimError;
use crate::certs::{
    SIM_COUNTRY, SIM_LOCALITY, SIM_ORGANIZATION, SIM_ORGANIZATIONAL_UNIT, SIM_STATE,
};
use crate::report::{Generation, TcbParts};

const OID_OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
const OID_C: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.6");
const OID_L: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.7");
const OID_ST: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.8");
const OID_O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const OID_SKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const OID_AKI: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const OID_AMD: &str = "1.3.6.1.4.1.3704.1";

/// Seconds in a (non-leap) year, for validity periods.
const YEAR: u64 = 365 * 24 * 3600;
/// ARK and ASK validity, as AMD's: 25 years.
pub(super) const CA_VALIDITY: u64 = 25 * YEAR;
/// VCEK validity, as AMD's: 7 years.
pub(super) const VCEK_VALIDITY: u64 = 7 * YEAR;

fn der_err(what: &str) -> impl Fn(x509_cert::der::Error) -> SimError + '_ {
    move |e| SimError::Certificate(format!("{what}: {e}"))
}

/// The simulation's distinguished name for common name `cn`: AMD's attributes in AMD's
/// order (OU, C, L, ST, O, CN), UTF8String except the PrintableString country.
fn sim_name(cn: &str) -> Result<Name, SimError> {
    let err = der_err("distinguished name");
    let utf8 = |s: &str| Any::encode_from(&Utf8StringRef::new(s).map_err(&err)?).map_err(&err);
    let rdn = |oid: ObjectIdentifier, value: Any| {
        SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])
            .map(RelativeDistinguishedName)
            .map_err(&err)
    };
    let country =
        Any::encode_from(&PrintableStringRef::new(SIM_COUNTRY).map_err(&err)?).map_err(&err)?;
    Ok(RdnSequence(vec![
        rdn(OID_OU, utf8(SIM_ORGANIZATIONAL_UNIT)?)?,
        rdn(OID_C, country)?,
        rdn(OID_L, utf8(SIM_LOCALITY)?)?,
        rdn(OID_ST, utf8(SIM_STATE)?)?,
        rdn(OID_O, utf8(SIM_ORGANIZATION)?)?,
        rdn(OID_CN, utf8(cn)?)?,
    ]))
}

/// An X.509 time: UTCTime before 2050, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
fn x509_time(unix_seconds: u64) -> Result<Time, SimError> {
    let d = Duration::from_secs(unix_seconds);
    match UtcTime::from_unix_duration(d) {
        Ok(t) => Ok(Time::UtcTime(t)),
        Err(_) => GeneralizedTime::from_unix_duration(d)
            .map(Time::GeneralTime)
            .map_err(der_err("validity")),
    }
}

fn extension(oid: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Result<Extension, SimError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(der_err("extension"))?,
    })
}

fn amd_oid(suffix: &str) -> Result<ObjectIdentifier, SimError> {
    ObjectIdentifier::new(&format!("{OID_AMD}.{suffix}"))
        .map_err(|e| SimError::Certificate(format!("OID {OID_AMD}.{suffix}: {e}")))
}

/// An SPL extension value: a DER INTEGER (0x80 and above with a leading zero byte).
fn spl(value: u8) -> Result<Vec<u8>, SimError> {
    value.to_der().map_err(der_err("SPL"))
}

/// SubjectPublicKeyInfo of an RSA key (rsaEncryption, as AMD's ARK and ASK).
pub(super) fn rsa_spki(key: &RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, SimError> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| SimError::Certificate(format!("RSA public key: {e}")))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(der_err("RSA public key"))
}

/// SubjectPublicKeyInfo of the VCEK (id-ecPublicKey on secp384r1).
pub(super) fn p384_spki(key: &p384::PublicKey) -> Result<SubjectPublicKeyInfoOwned, SimError> {
    let der = key
        .to_public_key_der()
        .map_err(|e| SimError::Certificate(format!("P-384 public key: {e}")))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(der_err("P-384 public key"))
}

/// The key identifier RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<OctetString, SimError> {
    let bits = spki.subject_public_key.raw_bytes();
    OctetString::new(digest(&SHA1_FOR_LEGACY_USE_ONLY, bits).as_ref()).map_err(der_err("key id"))
}

/// What one certificate says; signed by [`sign`].
pub(super) struct CertSpec<'a> {
    pub serial: u32,
    pub subject_cn: &'a str,
    pub issuer_cn: &'a str,
    pub not_before: u64,
    pub not_after: u64,
    pub spki: SubjectPublicKeyInfoOwned,
    pub extensions: Vec<Extension>,
}

/// Signs `spec` with `issuer_key` (RSASSA-PSS SHA-384, salt 48) and returns the DER.
pub(super) fn sign(spec: CertSpec<'_>, issuer_key: &RsaPrivateKey) -> Result<Vec<u8>, SimError> {
    let algorithm = rsa::pss::get_default_pss_signature_algo_id::<Sha384>()
        .map_err(|e| SimError::Certificate(format!("RSASSA-PSS algorithm identifier: {e}")))?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::from(spec.serial),
        signature: algorithm.clone(),
        issuer: sim_name(spec.issuer_cn)?,
        validity: Validity {
            not_before: x509_time(spec.not_before)?,
            not_after: x509_time(spec.not_after)?,
        },
        subject: sim_name(spec.subject_cn)?,
        subject_public_key_info: spec.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    let tbs_der = tbs.to_der().map_err(der_err("TBSCertificate"))?;
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(issuer_key.clone());
    let signature = signer
        .try_sign_with_rng(&mut rand_core::OsRng, &tbs_der)
        .map_err(|e| SimError::Crypto(format!("RSASSA-PSS signing: {e}")))?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature.to_vec()).map_err(der_err("signature"))?,
    };
    cert.to_der().map_err(der_err("certificate"))
}

/// The ARK's extensions, in AMD's order: keyUsage (critical: keyCertSign, cRLSign),
/// subjectKeyIdentifier, basicConstraints (critical: CA).
pub(super) fn ark_extensions(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<Extension>, SimError> {
    let err = der_err("ARK extension");
    Ok(vec![
        extension(
            OID_KEY_USAGE,
            true,
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                .to_der()
                .map_err(&err)?,
        )?,
        extension(
            OID_SKI,
            false,
            SubjectKeyIdentifier(key_identifier(spki)?)
                .to_der()
                .map_err(&err)?,
        )?,
        extension(
            OID_BASIC_CONSTRAINTS,
            true,
            BasicConstraints {
                ca: true,
                path_len_constraint: None,
            }
            .to_der()
            .map_err(&err)?,
        )?,
    ])
}

/// The ASK's extensions, in AMD's order: subjectKeyIdentifier, authorityKeyIdentifier,
/// basicConstraints (critical: CA, pathlen 0), keyUsage (critical: keyCertSign).
pub(super) fn ask_extensions(
    spki: &SubjectPublicKeyInfoOwned,
    ark_spki: &SubjectPublicKeyInfoOwned,
) -> Result<Vec<Extension>, SimError> {
    let err = der_err("ASK extension");
    Ok(vec![
        extension(
            OID_SKI,
            false,
            SubjectKeyIdentifier(key_identifier(spki)?)
                .to_der()
                .map_err(&err)?,
        )?,
        extension(
            OID_AKI,
            false,
            AuthorityKeyIdentifier {
                key_identifier: Some(key_identifier(ark_spki)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            }
            .to_der()
            .map_err(&err)?,
        )?,
        extension(
            OID_BASIC_CONSTRAINTS,
            true,
            BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            }
            .to_der()
            .map_err(&err)?,
        )?,
        extension(
            OID_KEY_USAGE,
            true,
            KeyUsage(KeyUsages::KeyCertSign.into())
                .to_der()
                .map_err(&err)?,
        )?,
    ])
}

/// The VCEK's extensions (VCEK certificate specification), in AMD's order: structVersion 1,
/// productName (IA5String), fmcSPL on Turin, blSPL, teeSPL, snpSPL, the reserved SPLs
/// (zero), ucodeSPL, hwID (the raw chip ID: 64 bytes, 8 on Turin). None is critical.
pub(super) fn vcek_extensions(
    generation: Generation,
    product_name: &str,
    tcb: TcbParts,
    hwid: &[u8],
) -> Result<Vec<Extension>, SimError> {
    let err = der_err("VCEK extension");
    let mut out = vec![
        extension(amd_oid("1")?, false, spl(1)?)?,
        extension(
            amd_oid("2")?,
            false,
            Ia5StringRef::new(product_name)
                .map_err(&err)?
                .to_der()
                .map_err(&err)?,
        )?,
    ];
    if generation.has_fmc() {
        out.push(extension(
            amd_oid("3.9")?,
            false,
            spl(tcb.fmc.unwrap_or(0))?,
        )?);
    }
    out.push(extension(amd_oid("3.1")?, false, spl(tcb.bootloader)?)?);
    out.push(extension(amd_oid("3.2")?, false, spl(tcb.tee)?)?);
    out.push(extension(amd_oid("3.3")?, false, spl(tcb.snp)?)?);
    // AMD's Turin VCEKs carry spl_5..spl_7, the Milan/Genoa ones spl_4..spl_7.
    let reserved: &[&str] = if generation.has_fmc() {
        &["3.5", "3.6", "3.7"]
    } else {
        &["3.4", "3.5", "3.6", "3.7"]
    };
    for suffix in reserved {
        out.push(extension(amd_oid(suffix)?, false, spl(0)?)?);
    }
    out.push(extension(amd_oid("3.8")?, false, spl(tcb.microcode)?)?);
    out.push(extension(amd_oid("4")?, false, hwid.to_vec())?);
    Ok(out)
}
