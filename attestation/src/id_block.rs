//! ID blocks for SNP_LAUNCH_FINISH: the guest owner's signed statement "a guest with this
//! launch digest and this guest policy is my image". The firmware checks it before the
//! guest runs (a launch whose digest differs fails with BAD_MEASUREMENT) and every
//! attestation report of the guest then names the key that signed it.
//!
//! Formats (SEV-SNP firmware ABI, SNP_LAUNCH_FINISH, tables "ID Block" and "ID
//! Authentication Information Structure"; SNP-FACTS §1.8). All integers little-endian.
//!
//! ID block, [`ID_BLOCK_SIZE`] bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 48 | LD: the launch digest the guest must have |
//! | 0x30 | 16 | FAMILY_ID |
//! | 0x40 | 16 | IMAGE_ID |
//! | 0x50 | 4 | VERSION: [`ID_BLOCK_VERSION`] |
//! | 0x54 | 4 | GUEST_SVN |
//! | 0x58 | 8 | POLICY: must equal the guest policy given to SNP_LAUNCH_START |
//!
//! ID authentication information, [`ID_AUTH_SIZE`] bytes (bytes not listed are reserved
//! and zero):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x000 | 4 | ID_KEY_ALGO: [`ALGO_ECDSA_P384_SHA384`] |
//! | 0x004 | 4 | AUTH_KEY_ALGO: the same, or 0 without an author key |
//! | 0x040 | 0x200 | ID_BLOCK_SIG: the ID key's signature of the 96-byte ID block |
//! | 0x240 | 0x404 | ID_KEY: the ID key's public key |
//! | 0x680 | 0x200 | ID_KEY_SIG: the author key's signature of the 0x404-byte ID_KEY |
//! | 0x880 | 0x404 | AUTHOR_KEY: the author key's public key |
//!
//! A public key field: CURVE u32 @0 ([`CURVE_P384`]), QX @4 and QY @0x4C, each 72 bytes,
//! little-endian (the 48-byte coordinate zero-extended). A signature field: R @0 and S
//! @0x48, 72 bytes each, little-endian. The firmware uses the author key only when
//! SNP_LAUNCH_FINISH sets AUTHOR_KEY_EN.
//!
//! Reports carry ID_KEY_DIGEST and AUTHOR_KEY_DIGEST: the SHA-384 of the 0x404-byte key
//! field as given ([`key_digest`]); a tenant policy trusts keys by these digests.

use std::path::Path;

use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::{Signature, VerifyingKey};
use p384::elliptic_curve::ALGORITHM_OID as EC_PUBLIC_KEY_OID;
use p384::pkcs8::der::asn1::AnyRef;
use p384::pkcs8::der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};
use p384::pkcs8::{AssociatedOid, ObjectIdentifier, PrivateKeyInfo};
use zeroize::Zeroizing;

use crate::launch::digest::{sha384, LD_SIZE};
use crate::launch::IdBlockAndAuth;

/// An ECDSA P-384 private key: the ID key or the author key.
pub use p384::ecdsa::SigningKey;

/// Size of an ID block.
pub const ID_BLOCK_SIZE: usize = 96;
/// Size of an ID authentication information structure.
pub const ID_AUTH_SIZE: usize = 4096;
/// The only ID block VERSION the ABI defines; the firmware refuses others (INVALID_PARAM).
pub const ID_BLOCK_VERSION: u32 = 1;
/// Size of a public key field (ID_KEY, AUTHOR_KEY).
pub const ABI_KEY_SIZE: usize = 0x404;
/// Size of a signature field (ID_BLOCK_SIG, ID_KEY_SIG).
pub const ABI_SIGNATURE_SIZE: usize = 0x200;
/// ID_KEY_ALGO / AUTH_KEY_ALGO of ECDSA P-384 with SHA-384 (the only algorithm defined).
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// The CURVE field of a P-384 public key.
pub const CURVE_P384: u32 = 2;

/// Offsets in the ID block.
const BLOCK_FAMILY_ID: usize = 0x30;
const BLOCK_IMAGE_ID: usize = 0x40;
const BLOCK_VERSION: usize = 0x50;
const BLOCK_GUEST_SVN: usize = 0x54;
const BLOCK_POLICY: usize = 0x58;
/// Offsets in the ID authentication information structure.
const AUTH_ID_KEY_ALGO: usize = 0x000;
const AUTH_AUTH_KEY_ALGO: usize = 0x004;
const AUTH_ID_BLOCK_SIG: usize = 0x040;
const AUTH_ID_KEY: usize = 0x240;
const AUTH_ID_KEY_SIG: usize = 0x680;
const AUTH_AUTHOR_KEY: usize = 0x880;
/// Offsets in a key and a signature field, and the width of one coordinate there.
const KEY_QX: usize = 0x04;
const KEY_QY: usize = 0x4C;
const SIG_R: usize = 0x00;
const SIG_S: usize = 0x48;
const ABI_COORDINATE_SIZE: usize = 72;
/// Bytes of a P-384 coordinate, R or S.
const P384_SIZE: usize = 48;

/// An ID block, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// LD: the launch digest the guest must have.
    pub ld: [u8; LD_SIZE],
    /// FAMILY_ID, reported as is.
    pub family_id: [u8; 16],
    /// IMAGE_ID, reported as is.
    pub image_id: [u8; 16],
    /// VERSION of the ID block format ([`ID_BLOCK_VERSION`]).
    pub version: u32,
    /// GUEST_SVN, reported as is.
    pub guest_svn: u32,
    /// POLICY: the guest policy of the launch.
    pub policy: u64,
}

impl IdBlock {
    /// An ID block for the launch digest `ld` and guest policy `policy`: zero FAMILY_ID,
    /// IMAGE_ID and GUEST_SVN, VERSION [`ID_BLOCK_VERSION`].
    pub fn new(ld: [u8; LD_SIZE], policy: u64) -> IdBlock {
        IdBlock {
            ld,
            family_id: [0; 16],
            image_id: [0; 16],
            version: ID_BLOCK_VERSION,
            guest_svn: 0,
            policy,
        }
    }

    /// The 96 bytes SNP_LAUNCH_FINISH takes.
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut out = [0u8; ID_BLOCK_SIZE];
        out[..LD_SIZE].copy_from_slice(&self.ld);
        out[BLOCK_FAMILY_ID..BLOCK_IMAGE_ID].copy_from_slice(&self.family_id);
        out[BLOCK_IMAGE_ID..BLOCK_VERSION].copy_from_slice(&self.image_id);
        out[BLOCK_VERSION..BLOCK_GUEST_SVN].copy_from_slice(&self.version.to_le_bytes());
        out[BLOCK_GUEST_SVN..BLOCK_POLICY].copy_from_slice(&self.guest_svn.to_le_bytes());
        out[BLOCK_POLICY..].copy_from_slice(&self.policy.to_le_bytes());
        out
    }

    /// The fields of a 96-byte ID block (every byte is some field's).
    pub fn from_bytes(bytes: &[u8; ID_BLOCK_SIZE]) -> IdBlock {
        IdBlock {
            ld: array(bytes, 0),
            family_id: array(bytes, BLOCK_FAMILY_ID),
            image_id: array(bytes, BLOCK_IMAGE_ID),
            version: u32::from_le_bytes(array(bytes, BLOCK_VERSION)),
            guest_svn: u32::from_le_bytes(array(bytes, BLOCK_GUEST_SVN)),
            policy: u64::from_le_bytes(array(bytes, BLOCK_POLICY)),
        }
    }
}

/// An ID authentication information structure, field by field (reserved bytes dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAuth {
    /// ID_KEY_ALGO.
    pub id_key_algo: u32,
    /// AUTH_KEY_ALGO.
    pub auth_key_algo: u32,
    /// ID_BLOCK_SIG: the ID key's signature of the ID block.
    pub id_block_sig: [u8; ABI_SIGNATURE_SIZE],
    /// ID_KEY.
    pub id_key: [u8; ABI_KEY_SIZE],
    /// ID_KEY_SIG: the author key's signature of ID_KEY (zero without an author key).
    pub id_key_sig: [u8; ABI_SIGNATURE_SIZE],
    /// AUTHOR_KEY (zero without an author key).
    pub author_key: [u8; ABI_KEY_SIZE],
}

impl IdAuth {
    /// The fields of a 4096-byte structure; its reserved bytes are not kept.
    pub fn from_bytes(bytes: &[u8; ID_AUTH_SIZE]) -> IdAuth {
        IdAuth {
            id_key_algo: u32::from_le_bytes(array(bytes, AUTH_ID_KEY_ALGO)),
            auth_key_algo: u32::from_le_bytes(array(bytes, AUTH_AUTH_KEY_ALGO)),
            id_block_sig: array(bytes, AUTH_ID_BLOCK_SIG),
            id_key: array(bytes, AUTH_ID_KEY),
            id_key_sig: array(bytes, AUTH_ID_KEY_SIG),
            author_key: array(bytes, AUTH_AUTHOR_KEY),
        }
    }

    /// The 4096 bytes SNP_LAUNCH_FINISH takes, reserved bytes zero.
    pub fn to_bytes(&self) -> Box<[u8; ID_AUTH_SIZE]> {
        let mut out = Box::new([0u8; ID_AUTH_SIZE]);
        let fields: [(usize, &[u8]); 6] = [
            (AUTH_ID_KEY_ALGO, &self.id_key_algo.to_le_bytes()),
            (AUTH_AUTH_KEY_ALGO, &self.auth_key_algo.to_le_bytes()),
            (AUTH_ID_BLOCK_SIG, &self.id_block_sig),
            (AUTH_ID_KEY, &self.id_key),
            (AUTH_ID_KEY_SIG, &self.id_key_sig),
            (AUTH_AUTHOR_KEY, &self.author_key),
        ];
        for (at, field) in fields {
            out[at..at + field.len()].copy_from_slice(field);
        }
        out
    }

    /// True when AUTHOR_KEY holds something (it is all zero when there is no author key).
    pub fn has_author_key(&self) -> bool {
        self.author_key.iter().any(|&b| b != 0)
    }

    /// ID_KEY_DIGEST as reports carry it.
    pub fn id_key_digest(&self) -> [u8; LD_SIZE] {
        key_digest(&self.id_key)
    }

    /// AUTHOR_KEY_DIGEST as reports carry it (when AUTHOR_KEY_EN was set).
    pub fn author_key_digest(&self) -> [u8; LD_SIZE] {
        key_digest(&self.author_key)
    }

    /// True when ID_BLOCK_SIG is ID_KEY's ECDSA P-384 SHA-384 signature of `id_block`
    /// (false too when the key or the signature field is malformed).
    pub fn id_block_signature_valid(&self, id_block: &[u8; ID_BLOCK_SIZE]) -> bool {
        verify(&self.id_key, id_block, &self.id_block_sig)
    }

    /// True when ID_KEY_SIG is AUTHOR_KEY's signature of the ID_KEY field.
    pub fn id_key_signature_valid(&self) -> bool {
        verify(&self.author_key, &self.id_key, &self.id_key_sig)
    }
}

/// SHA-384 of a public key field: ID_KEY_DIGEST or AUTHOR_KEY_DIGEST in a report.
pub fn key_digest(abi_key: &[u8; ABI_KEY_SIZE]) -> [u8; LD_SIZE] {
    sha384(abi_key)
}

/// `key` as a public key field (CURVE 2, QX and QY little-endian, the rest zero).
pub fn abi_public_key(key: &VerifyingKey) -> [u8; ABI_KEY_SIZE] {
    let point = key.to_encoded_point(false);
    // Uncompressed SEC1: 0x04, X, Y (a verifying key is never the identity).
    let sec1 = point.as_bytes();
    let x = sec1.get(1..1 + P384_SIZE).unwrap_or(&[]);
    let y = sec1.get(1 + P384_SIZE..).unwrap_or(&[]);
    let mut out = [0u8; ABI_KEY_SIZE];
    out[..4].copy_from_slice(&CURVE_P384.to_le_bytes());
    out[KEY_QX..KEY_QX + ABI_COORDINATE_SIZE].copy_from_slice(&le72(x));
    out[KEY_QY..KEY_QY + ABI_COORDINATE_SIZE].copy_from_slice(&le72(y));
    out
}

/// The digest a report carries for `key` as ID or author key.
pub fn public_key_digest(key: &VerifyingKey) -> [u8; LD_SIZE] {
    key_digest(&abi_public_key(key))
}

/// Signs `block` with the ID key and, given an author key, the ID key with the author
/// key: the ID block and authentication structure for SNP_LAUNCH_FINISH, with
/// AUTHOR_KEY_EN set exactly when there is an author key.
pub fn sign(
    block: &IdBlock,
    id_key: &SigningKey,
    author_key: Option<&SigningKey>,
) -> IdBlockAndAuth {
    let id_block = block.to_bytes();
    let id_key_field = abi_public_key(id_key.verifying_key());
    let mut auth = IdAuth {
        id_key_algo: ALGO_ECDSA_P384_SHA384,
        auth_key_algo: 0,
        id_block_sig: abi_signature(&id_key.sign(&id_block)),
        id_key: id_key_field,
        id_key_sig: [0; ABI_SIGNATURE_SIZE],
        author_key: [0; ABI_KEY_SIZE],
    };
    if let Some(author) = author_key {
        auth.auth_key_algo = ALGO_ECDSA_P384_SHA384;
        auth.id_key_sig = abi_signature(&author.sign(&id_key_field));
        auth.author_key = abi_public_key(author.verifying_key());
    }
    IdBlockAndAuth {
        id_block: Box::new(id_block),
        id_auth: auth.to_bytes(),
        author_key_enabled: author_key.is_some(),
    }
}

/// Why a PEM file is not a usable ID or author key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read it: {0}")]
    Read(String),
    /// Bytes that are not text.
    #[error("not PEM text (a DER file? convert it: openssl pkey -in KEY -out KEY.pem)")]
    NotText,
    /// No PEM block at all.
    #[error("no PEM block in it (expected -----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)")]
    NoPem,
    /// A PEM block that does not decode.
    #[error("unreadable PEM {label} block: {reason}")]
    Pem {
        /// The block's label.
        label: String,
        /// What is wrong.
        reason: String,
    },
    /// A password-protected key.
    #[error("the private key is encrypted; give an unencrypted copy (openssl pkey -in KEY -out PLAIN.pem)")]
    Encrypted,
    /// PEM, but no private key in it (a public key, a certificate, ...).
    #[error("it holds a {0} PEM block, not a private key (PRIVATE KEY or EC PRIVATE KEY)")]
    NotPrivateKey(String),
    /// A private key of another algorithm.
    #[error("not an elliptic-curve key (it is {0}): ID and author keys are ECDSA P-384")]
    NotEc(String),
    /// An elliptic-curve key on another curve.
    #[error(
        "an elliptic-curve key on {0}, not P-384 (secp384r1): ID and author keys are ECDSA P-384"
    )]
    NotP384(String),
    /// The DER inside is not a valid key.
    #[error("malformed {format} private key: {reason}")]
    Malformed {
        /// "PKCS#8" or "SEC1".
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The ECDSA P-384 key in the PEM file at `path` ([`signing_key_from_pem`]); the file's
/// bytes are zeroed once parsed. Errors do not repeat the path.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = Zeroizing::new(std::fs::read(path).map_err(|e| KeyError::Read(e.to_string()))?);
    signing_key_from_pem(&pem)
}

/// The ECDSA P-384 key in a PEM file: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`,
/// an `EC PARAMETERS` block before it is skipped, as `openssl ecparam -genkey` writes).
/// The first private key block is used.
pub fn signing_key_from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotText)?;
    let mut other_label = None;
    for block in pem_blocks(text)? {
        let (label, der) =
            p384::pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| KeyError::Pem {
                label: block_label(block).to_string(),
                reason: e.to_string(),
            })?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => return pkcs8_key(&der),
            "EC PRIVATE KEY" => return sec1_key(&der),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            "EC PARAMETERS" => {}
            other => {
                other_label.get_or_insert_with(|| other.to_string());
            }
        }
    }
    Err(other_label.map_or(KeyError::NoPem, KeyError::NotPrivateKey))
}

/// The `-----BEGIN X-----` ... `-----END X-----` blocks of `text`, in order.
fn pem_blocks(text: &str) -> Result<Vec<&str>, KeyError> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let from = &rest[start..];
        let label = block_label(from);
        let end_line = format!("-----END {label}-----");
        let end = from.find(&end_line).ok_or_else(|| KeyError::Pem {
            label: label.to_string(),
            reason: format!("no {end_line} line"),
        })? + end_line.len();
        blocks.push(&from[..end]);
        rest = &from[end..];
    }
    Ok(blocks)
}

/// The label of the block starting at `block` ("-----BEGIN label-----").
fn block_label(block: &str) -> &str {
    let after = block.strip_prefix("-----BEGIN ").unwrap_or(block);
    after.split("-----").next().unwrap_or("")
}

fn pkcs8_key(der: &[u8]) -> Result<SigningKey, KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        format: "PKCS#8",
        reason,
    };
    let info = PrivateKeyInfo::try_from(der).map_err(|e| malformed(e.to_string()))?;
    if info.algorithm.oid != EC_PUBLIC_KEY_OID {
        return Err(KeyError::NotEc(algorithm_name(info.algorithm.oid)));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|_| malformed("no named curve in its algorithm parameters".into()))?;
    if curve != p384::NistP384::OID {
        return Err(KeyError::NotP384(curve_name(curve)));
    }
    p384::SecretKey::try_from(info)
        .map(SigningKey::from)
        .map_err(|e| malformed(e.to_string()))
}

fn sec1_key(der: &[u8]) -> Result<SigningKey, KeyError> {
    if let Some(curve) = sec1_curve(der) {
        if curve != p384::NistP384::OID {
            return Err(KeyError::NotP384(curve_name(curve)));
        }
    }
    p384::SecretKey::from_sec1_der(der)
        .map(SigningKey::from)
        .map_err(|_| KeyError::Malformed {
            format: "SEC1",
            reason: "not an ECPrivateKey of P-384 (a 48-byte private key)".into(),
        })
}

/// The named curve of a SEC1 ECPrivateKey (SEQUENCE { version, privateKey,
/// [0] parameters OPTIONAL, [1] publicKey OPTIONAL }), when it names one.
fn sec1_curve(der: &[u8]) -> Option<ObjectIdentifier> {
    let sequence = AnyRef::from_der(der).ok()?;
    let mut fields = SliceReader::new(sequence.value()).ok()?;
    while !fields.is_finished() {
        let field = AnyRef::decode(&mut fields).ok()?;
        if field.tag()
            == (Tag::ContextSpecific {
                constructed: true,
                number: TagNumber::N0,
            })
        {
            return ObjectIdentifier::from_der(field.value()).ok();
        }
    }
    None
}

fn curve_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.10045.3.1.7" => "P-256 (prime256v1)",
        "1.3.132.0.35" => "P-521 (secp521r1)",
        "1.3.132.0.10" => "secp256k1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        _ => return format!("the curve with OID {oid}"),
    };
    name.to_string()
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    let name = match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.113549.1.1.10" => "RSA-PSS",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        _ => return format!("algorithm OID {oid}"),
    };
    name.to_string()
}

/// `N` bytes of `bytes` at `at` (zeros where `bytes` is short; every caller reads inside a
/// fixed-size array).
fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// A big-endian value as a 72-byte little-endian field.
fn le72(big_endian: &[u8]) -> [u8; ABI_COORDINATE_SIZE] {
    let mut out = [0u8; ABI_COORDINATE_SIZE];
    for (d, s) in out.iter_mut().zip(big_endian.iter().rev()) {
        *d = *s;
    }
    out
}

/// A 72-byte little-endian field at `at` as a 48-byte big-endian value; `None` when its
/// upper 24 bytes are not zero.
fn be48(field: &[u8], at: usize) -> Option<[u8; P384_SIZE]> {
    let le = field.get(at..at + ABI_COORDINATE_SIZE)?;
    if le.get(P384_SIZE..)?.iter().any(|&b| b != 0) {
        return None;
    }
    let mut out = [0u8; P384_SIZE];
    for (d, s) in out.iter_mut().zip(le.iter().take(P384_SIZE).rev()) {
        *d = *s;
    }
    Some(out)
}

fn abi_signature(signature: &Signature) -> [u8; ABI_SIGNATURE_SIZE] {
    let (r, s) = signature.split_bytes();
    let mut out = [0u8; ABI_SIGNATURE_SIZE];
    out[SIG_R..SIG_R + ABI_COORDINATE_SIZE].copy_from_slice(&le72(&r));
    out[SIG_S..SIG_S + ABI_COORDINATE_SIZE].copy_from_slice(&le72(&s));
    out
}

fn parse_public_key(field: &[u8; ABI_KEY_SIZE]) -> Option<VerifyingKey> {
    if u32::from_le_bytes(array(field, 0)) != CURVE_P384 {
        return None;
    }
    let mut sec1 = [0u8; 1 + 2 * P384_SIZE];
    sec1[0] = 4;
    sec1[1..1 + P384_SIZE].copy_from_slice(&be48(field, KEY_QX)?);
    sec1[1 + P384_SIZE..].copy_from_slice(&be48(field, KEY_QY)?);
    VerifyingKey::from_sec1_bytes(&sec1).ok()
}

fn parse_signature(field: &[u8; ABI_SIGNATURE_SIZE]) -> Option<Signature> {
    let mut rs = [0u8; 2 * P384_SIZE];
    rs[..P384_SIZE].copy_from_slice(&be48(field, SIG_R)?);
    rs[P384_SIZE..].copy_from_slice(&be48(field, SIG_S)?);
    Signature::from_slice(&rs).ok()
}

/// True when `signature` is `key`'s ECDSA P-384 SHA-384 signature of `message`.
fn verify(key: &[u8; ABI_KEY_SIZE], message: &[u8], signature: &[u8; ABI_SIGNATURE_SIZE]) -> bool {
    match (parse_public_key(key), parse_signature(signature)) {
        (Some(key), Some(signature)) => key.verify(message, &signature).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use p384::pkcs8::der::pem::{encode_string, LineEnding};
    use p384::pkcs8::{EncodePrivateKey, EncodePublicKey};

    fn key() -> SigningKey {
        SigningKey::random(&mut rand_core::OsRng)
    }

    fn sample_block() -> IdBlock {
        IdBlock {
            ld: [0x11; LD_SIZE],
            family_id: [0xF1; 16],
            image_id: [0x1D; 16],
            version: 0x0102_0304,
            guest_svn: 0x0506_0708,
            policy: 0x0009_0000_0003_0000,
        }
    }

    #[test]
    fn id_block_fields_sit_at_the_abi_offsets() {
        let bytes = sample_block().to_bytes();
        assert_eq!(bytes.len(), 96);
        assert_eq!(&bytes[..0x30], &[0x11; 48]);
        assert_eq!(&bytes[0x30..0x40], &[0xF1; 16]);
        assert_eq!(&bytes[0x40..0x50], &[0x1D; 16]);
        assert_eq!(&bytes[0x50..0x54], &[4, 3, 2, 1]);
        assert_eq!(&bytes[0x54..0x58], &[8, 7, 6, 5]);
        assert_eq!(&bytes[0x58..0x60], &[0, 0, 3, 0, 0, 0, 9, 0]);
        assert_eq!(IdBlock::from_bytes(&bytes), sample_block());
        let new = IdBlock::new([2; 48], 0x3_0000);
        assert_eq!((new.version, new.guest_svn), (1, 0));
        assert_eq!((new.family_id, new.image_id), ([0; 16], [0; 16]));
    }

    #[test]
    fn id_auth_fields_sit_at_the_abi_offsets() {
        let auth = IdAuth {
            id_key_algo: 1,
            auth_key_algo: 0x0201,
            id_block_sig: [0xA1; ABI_SIGNATURE_SIZE],
            id_key: [0xB2; ABI_KEY_SIZE],
            id_key_sig: [0xC3; ABI_SIGNATURE_SIZE],
            author_key: [0xD4; ABI_KEY_SIZE],
        };
        let bytes = auth.to_bytes();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(&bytes[..8], &[1, 0, 0, 0, 1, 2, 0, 0]);
        assert!(bytes[8..0x40].iter().all(|&b| b == 0), "reserved");
        assert!(bytes[0x40..0x240].iter().all(|&b| b == 0xA1));
        assert!(bytes[0x240..0x644].iter().all(|&b| b == 0xB2));
        assert!(bytes[0x644..0x680].iter().all(|&b| b == 0), "reserved");
        assert!(bytes[0x680..0x880].iter().all(|&b| b == 0xC3));
        assert!(bytes[0x880..0xC84].iter().all(|&b| b == 0xD4));
        assert!(bytes[0xC84..].iter().all(|&b| b == 0), "reserved");
        assert_eq!(IdAuth::from_bytes(&bytes), auth);
        assert!(auth.has_author_key());
    }

    /// The key and signature encodings, decoded here independently of the module: the
    /// coordinates reversed out of their 72-byte fields are the key's and the signature's.
    #[test]
    fn keys_and_signatures_are_little_endian_72_byte_fields() {
        let k = key();
        let field = abi_public_key(k.verifying_key());
        assert_eq!(&field[..4], &[2, 0, 0, 0]);
        let point = k.verifying_key().to_encoded_point(false);
        let rev = |b: &[u8]| b.iter().rev().copied().collect::<Vec<u8>>();
        assert_eq!(rev(&field[4..52]), point.x().unwrap().to_vec());
        assert!(field[52..0x4C].iter().all(|&b| b == 0));
        assert_eq!(rev(&field[0x4C..0x7C]), point.y().unwrap().to_vec());
        assert!(field[0x7C..].iter().all(|&b| b == 0));
        assert_eq!(public_key_digest(k.verifying_key()), sha384(&field));

        let signed = sign(&sample_block(), &k, None);
        let sig = &signed.id_auth[0x40..0x240];
        let (r, s) = (rev(&sig[..48]), rev(&sig[0x48..0x78]));
        assert!(sig[48..0x48].iter().all(|&b| b == 0));
        assert!(sig[0x78..].iter().all(|&b| b == 0));
        let signature = Signature::from_slice(&[r, s].concat()).unwrap();
        k.verifying_key()
            .verify(&signed.id_block[..], &signature)
            .unwrap();
    }

    #[test]
    fn signed_blocks_verify_and_a_flipped_byte_does_not() {
        let (id, author) = (key(), key());
        let block = sample_block();
        let signed = sign(&block, &id, Some(&author));
        assert!(signed.author_key_enabled);
        assert_eq!(*signed.id_block, block.to_bytes());
        let auth = IdAuth::from_bytes(&signed.id_auth);
        assert_eq!((auth.id_key_algo, auth.auth_key_algo), (1, 1));
        assert!(auth.id_block_signature_valid(&signed.id_block));
        assert!(auth.id_key_signature_valid());
        assert_eq!(auth.id_key_digest(), public_key_digest(id.verifying_key()));
        assert_eq!(
            auth.author_key_digest(),
            public_key_digest(author.verifying_key())
        );
        // Deterministic (RFC 6979): the same inputs sign to the same bytes.
        assert_eq!(sign(&block, &id, Some(&author)), signed);
        for at in [0, 0x2F, 0x30, 0x50, 0x54, 0x5F] {
            let mut flipped = *signed.id_block;
            flipped[at] ^= 1;
            assert!(
                !auth.id_block_signature_valid(&flipped),
                "ID block byte {at:#x}"
            );
        }
        for at in [
            0x40,
            0x40 + 47,
            0x88,
            0x240 + 4,
            0x240 + 0x4C,
            0x680,
            0x880 + 4,
        ] {
            let mut flipped = *signed.id_auth;
            flipped[at] ^= 1;
            let auth = IdAuth::from_bytes(&flipped);
            assert!(
                !(auth.id_block_signature_valid(&signed.id_block) && auth.id_key_signature_valid()),
                "ID auth byte {at:#x}"
            );
        }
        // A coordinate that does not fit 48 bytes is refused, not truncated.
        let mut wide = auth.clone();
        wide.id_block_sig[48] = 1;
        assert!(!wide.id_block_signature_valid(&signed.id_block));

        let alone = sign(&block, &id, None);
        assert!(!alone.author_key_enabled);
        let auth = IdAuth::from_bytes(&alone.id_auth);
        assert_eq!(auth.auth_key_algo, 0);
        assert!(!auth.has_author_key());
        assert!(auth.id_block_signature_valid(&alone.id_block));
        assert!(alone.id_auth[0x680..].iter().all(|&b| b == 0));
    }

    fn pem(label: &str, der: &[u8]) -> String {
        encode_string(label, LineEnding::LF, der).unwrap()
    }

    /// A SEC1 ECPrivateKey with the named curve `curve_last_byte` (secp384r1 is
    /// 1.3.132.0.34, P-521 1.3.132.0.35) inserted as [0] parameters, as OpenSSL writes it.
    fn sec1_with_curve(k: &SigningKey, curve_last_byte: u8) -> Vec<u8> {
        let der = p384::SecretKey::from(k).to_sec1_der().unwrap();
        // SEQUENCE (long form, one length byte) { INTEGER 1, OCTET STRING (48), [1] ... }
        assert_eq!(&der[..2], &[0x30, 0x81]);
        let content = &der[3..];
        let (head, tail) = content.split_at(3 + 2 + 48);
        let params = [0xA0, 7, 0x06, 5, 0x2B, 0x81, 0x04, 0x00, curve_last_byte];
        let mut out = vec![0x30, 0x81, der[2] + params.len() as u8];
        out.extend_from_slice(head);
        out.extend_from_slice(&params);
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn keys_load_from_pkcs8_and_sec1_pem() {
        let k = key();
        let pkcs8 = k.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(
            signing_key_from_pem(pkcs8.as_bytes())
                .unwrap()
                .verifying_key(),
            k.verifying_key()
        );
        let sec1 = p384::SecretKey::from(&k)
            .to_sec1_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            signing_key_from_pem(sec1.as_bytes())
                .unwrap()
                .verifying_key(),
            k.verifying_key()
        );
        // `openssl ecparam -name secp384r1 -genkey`: parameters block, then the key with
        // its curve named.
        let openssl = format!(
            "-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n{}",
            pem("EC PRIVATE KEY", &sec1_with_curve(&k, 0x22))
        );
        assert_eq!(
            signing_key_from_pem(openssl.as_bytes())
                .unwrap()
                .verifying_key(),
            k.verifying_key()
        );
    }

    #[test]
    fn unusable_key_files_are_named() {
        let k = key();
        let err = |text: &[u8]| signing_key_from_pem(text).unwrap_err();
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_signing_key(&dir.path().join("missing.pem")),
            Err(KeyError::Read(_))
        ));
        let file = dir.path().join("id.pem");
        std::fs::write(&file, k.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        assert_eq!(
            read_signing_key(&file).unwrap().verifying_key(),
            k.verifying_key()
        );
        assert_eq!(err(&[0xFF, 0xFE, 0x00]), KeyError::NotText);
        assert_eq!(err(b"hello\n"), KeyError::NoPem);
        assert!(matches!(
            err(b"-----BEGIN PRIVATE KEY-----\nMAA=\n"),
            KeyError::Pem { .. }
        ));
        assert!(matches!(
            err(b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n"),
            KeyError::Pem { .. }
        ));
        let public = k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(
            err(public.as_bytes()),
            KeyError::NotPrivateKey("PUBLIC KEY".into())
        );
        assert_eq!(
            err(pem("ENCRYPTED PRIVATE KEY", &[0x30, 0]).as_bytes()),
            KeyError::Encrypted
        );
        // PKCS#8 of an Ed25519 key (RFC 8410 §10.3 layout, zero key bytes).
        let mut ed25519 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        ed25519.extend_from_slice(&[7; 32]);
        let e = err(pem("PRIVATE KEY", &ed25519).as_bytes());
        assert_eq!(e, KeyError::NotEc("Ed25519".into()));
        assert!(e.to_string().contains("ECDSA P-384"), "{e}");
        // The P-384 key's PKCS#8 with its curve OID changed to P-521's.
        let mut der = k.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let oid = [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
        let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
        der[at + oid.len() - 1] = 0x23;
        let e = err(pem("PRIVATE KEY", &der).as_bytes());
        assert_eq!(e, KeyError::NotP384("P-521 (secp521r1)".into()));
        assert!(e.to_string().contains("not P-384"), "{e}");
        let e = err(pem("EC PRIVATE KEY", &sec1_with_curve(&k, 0x23)).as_bytes());
        assert_eq!(e, KeyError::NotP384("P-521 (secp521r1)".into()));
        assert!(matches!(
            err(pem("EC PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x01]).as_bytes()),
            KeyError::Malformed { format: "SEC1", .. }
        ));
        assert!(matches!(
            err(pem("PRIVATE KEY", &[0x30, 0x00]).as_bytes()),
            KeyError::Malformed {
                format: "PKCS#8",
                ..
            }
        ));
    }
}
