//! A certificate revocation list (AMD publishes one per generation, signed by the ARK).

use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::{
    check_pem_armor, classify_signature_alg, first_cn_of, looks_like_pem, verify_rsa_pss, CertError,
};
use super::{Certificate, SignatureAlg};

/// A parsed CRL with the facts the verifier needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    tbs: Vec<u8>,
    signature: Vec<u8>,
    /// Signature algorithm.
    pub signature_alg: SignatureAlg,
    /// Issuer common name (AMD: "ARK-`<generation>`").
    pub issuer_cn: String,
    /// Raw DER of the issuer name.
    pub issuer_der: Vec<u8>,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds, when present.
    pub next_update: Option<i64>,
    /// Serial numbers of the revoked certificates (DER content bytes).
    pub revoked_serials: Vec<Vec<u8>>,
}

impl Crl {
    /// Parses a CRL file: DER, or PEM with an "X509 CRL" block.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, CertError> {
        let not_crl = |detail: String| CertError::NotACrl {
            what: what.to_string(),
            detail,
        };
        let der = if looks_like_pem(bytes) {
            check_pem_armor(bytes).map_err(|e| not_crl(format!("malformed PEM: {e}")))?;
            let mut found = None;
            for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
                let pem = pem.map_err(|e| not_crl(format!("malformed PEM: {e}")))?;
                if pem.label == "X509 CRL" {
                    found = Some(pem.contents);
                    break;
                }
            }
            found.ok_or_else(|| not_crl("no X509 CRL block in the PEM text".into()))?
        } else {
            bytes.to_vec()
        };
        let (rest, crl) =
            CertificateRevocationList::from_der(&der).map_err(|e| not_crl(e.to_string()))?;
        if !rest.is_empty() {
            return Err(not_crl(format!("{} bytes of trailing data", rest.len())));
        }
        let tbs = &crl.tbs_cert_list;
        Ok(Self {
            tbs: tbs.as_ref().to_vec(),
            signature: crl.signature_value.data.to_vec(),
            signature_alg: classify_signature_alg(&crl.signature_algorithm),
            issuer_cn: first_cn_of(&tbs.issuer),
            issuer_der: tbs.issuer.as_raw().to_vec(),
            this_update: tbs.this_update.timestamp(),
            next_update: tbs.next_update.map(|t| t.timestamp()),
            revoked_serials: tbs
                .revoked_certificates
                .iter()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
        })
    }

    /// Checks the CRL's RSASSA-PSS SHA-384 signature with `issuer`'s key.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), String> {
        verify_rsa_pss(
            &self.signature_alg,
            &issuer.public_key,
            &self.tbs,
            &self.signature,
        )
    }

    /// True when `cert`'s serial number is listed.
    pub fn revokes(&self, cert: &Certificate) -> bool {
        self.revoked_serials.contains(&cert.serial)
    }
}
