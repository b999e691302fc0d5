//! AMD's X.509 extensions in VCEK and VLEK certificates (VCEK/VLEK certificate
//! specifications, "Certificate extensions"): structVersion (…3704.1.1), productName
//! (…3704.1.2), the TCB security patch levels (…3704.1.3.n), hwID (…3704.1.4) and CSP-ID
//! (…3704.1.5).

use crate::report::{Generation, TcbParts};

/// productName: IA5String such as "Milan-B0".
pub const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
/// Prefix of the SPL extensions: .1 bootloader, .2 TEE, .3 SNP, .4-.7 reserved, .8 microcode,
/// .9 FMC (Turin).
pub const OID_TCB_PREFIX: &str = "1.3.6.1.4.1.3704.1.3.";
/// hwID: the chip ID (64 bytes; 8 on Turin), raw or wrapped in a DER OCTET STRING.
pub const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
/// CSP-ID of a VLEK: the cloud provider's name.
pub const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
const OID_STRUCT_VERSION: &str = "1.3.6.1.4.1.3704.1.1";

/// The AMD extensions of one certificate (absent ones are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmdExtensions {
    /// structVersion.
    pub struct_version: Option<u8>,
    /// productName.
    pub product_name: Option<String>,
    /// blSPL (…1.3.1).
    pub bootloader: Option<u8>,
    /// teeSPL (…1.3.2).
    pub tee: Option<u8>,
    /// snpSPL (…1.3.3).
    pub snp: Option<u8>,
    /// spl_4..spl_7 (…1.3.4 to …1.3.7), reserved: index 0 is spl_4.
    pub reserved_spl: [Option<u8>; 4],
    /// ucodeSPL (…1.3.8).
    pub microcode: Option<u8>,
    /// fmcSPL (…1.3.9, Turin).
    pub fmc: Option<u8>,
    /// hwID, decoded from either encoding.
    pub hwid: Option<Vec<u8>>,
    /// CSP-ID (VLEK).
    pub csp_id: Option<String>,
}

/// Reads a DER INTEGER that must be a non-negative value of at most 255 (an SPL). A value of
/// 0x80 or more has a leading zero byte (so three content bytes in total with tag and length).
fn spl(value: &[u8]) -> Result<u8, String> {
    match value {
        [0x02, 0x01, v] if *v < 0x80 => Ok(*v),
        [0x02, 0x02, 0x00, v] if *v >= 0x80 => Ok(*v),
        [0x02, ..] => Err(format!(
            "INTEGER {} is not a security patch level from 0 to 255 in minimal DER",
            hex::encode(value)
        )),
        _ => Err(format!(
            "expected a DER INTEGER, found {}",
            hex::encode(value)
        )),
    }
}

/// Reads a DER string with a short-form or one-byte long-form length (IA5String or UTF8String).
fn der_string(value: &[u8]) -> Result<String, String> {
    let (tag, body) = der_tlv(value).ok_or_else(|| format!("not DER: {}", hex::encode(value)))?;
    if tag != 0x16 && tag != 0x0C {
        return Err(format!(
            "expected an IA5String or UTF8String, found tag {tag:#04x}"
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())
}

/// Splits one DER TLV that spans the whole input. Lengths up to 0xFFFF.
fn der_tlv(value: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = value.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, body) = match len0 {
        0..=0x7F => (usize::from(len0), rest),
        0x81 => {
            let (&l, rest) = rest.split_first()?;
            (usize::from(l), rest)
        }
        0x82 => {
            let l = usize::from(*rest.first()?) << 8 | usize::from(*rest.get(1)?);
            (l, rest.get(2..)?)
        }
        _ => return None,
    };
    (body.len() == len).then_some((tag, body))
}

/// Decodes hwID: exactly 64 or 8 raw bytes, or a DER OCTET STRING holding 64 or 8 bytes.
/// The two are unambiguous: a raw value has a length of 64 or 8, a wrapped one 66 or 10.
fn hwid(value: &[u8]) -> Result<Vec<u8>, String> {
    if value.len() == 64 || value.len() == 8 {
        return Ok(value.to_vec());
    }
    match der_tlv(value) {
        Some((0x04, inner)) if inner.len() == 64 || inner.len() == 8 => Ok(inner.to_vec()),
        _ => Err(format!(
            "hwID is {} bytes, neither 64/8 raw bytes nor an OCTET STRING of 64/8 bytes",
            value.len()
        )),
    }
}

impl AmdExtensions {
    /// Takes one extension; returns whether it was an AMD extension.
    pub(crate) fn absorb(&mut self, oid: &str, value: &[u8]) -> Result<bool, String> {
        match oid {
            OID_STRUCT_VERSION => self.struct_version = Some(spl(value)?),
            OID_PRODUCT_NAME => self.product_name = Some(der_string(value)?),
            OID_HWID => self.hwid = Some(hwid(value)?),
            OID_CSP_ID => self.csp_id = Some(der_string(value)?),
            _ => {
                let Some(n) = oid.strip_prefix(OID_TCB_PREFIX) else {
                    return Ok(false);
                };
                let v = Some(spl(value)?);
                match n {
                    "1" => self.bootloader = v,
                    "2" => self.tee = v,
                    "3" => self.snp = v,
                    "4" => self.reserved_spl[0] = v,
                    "5" => self.reserved_spl[1] = v,
                    "6" => self.reserved_spl[2] = v,
                    "7" => self.reserved_spl[3] = v,
                    "8" => self.microcode = v,
                    "9" => self.fmc = v,
                    _ => return Ok(false),
                }
            }
        }
        Ok(true)
    }

    /// The certified TCB for `generation`, or the name of the first missing SPL extension.
    pub fn tcb(&self, generation: Generation) -> Result<TcbParts, &'static str> {
        Ok(TcbParts {
            fmc: if generation.has_fmc() {
                Some(self.fmc.ok_or("fmcSPL (1.3.6.1.4.1.3704.1.3.9)")?)
            } else {
                None
            },
            bootloader: self.bootloader.ok_or("blSPL (1.3.6.1.4.1.3704.1.3.1)")?,
            tee: self.tee.ok_or("teeSPL (1.3.6.1.4.1.3704.1.3.2)")?,
            snp: self.snp.ok_or("snpSPL (1.3.6.1.4.1.3704.1.3.3)")?,
            microcode: self.microcode.ok_or("ucodeSPL (1.3.6.1.4.1.3704.1.3.8)")?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spl_encodings() {
        assert_eq!(spl(&[2, 1, 0x73]).unwrap(), 0x73);
        assert_eq!(spl(&[2, 2, 0, 0xdb]).unwrap(), 0xdb);
        assert!(spl(&[2, 1, 0x80]).is_err(), "negative");
        assert!(spl(&[2, 2, 0, 0x10]).is_err(), "non-minimal");
        assert!(spl(&[2, 2, 1, 0x00]).is_err(), "too large");
        assert!(spl(&[4, 1, 1]).is_err());
        assert!(spl(&[]).is_err());
    }

    #[test]
    fn hwid_both_encodings() {
        let raw = [7u8; 64];
        assert_eq!(hwid(&raw).unwrap(), raw.to_vec());
        let mut wrapped = vec![0x04, 0x40];
        wrapped.extend_from_slice(&raw);
        assert_eq!(hwid(&wrapped).unwrap(), raw.to_vec());
        assert_eq!(hwid(&[1u8; 8]).unwrap(), vec![1u8; 8]);
        let mut w8 = vec![0x04, 0x08];
        w8.extend_from_slice(&[2u8; 8]);
        assert_eq!(hwid(&w8).unwrap(), vec![2u8; 8]);
        assert!(hwid(&[0u8; 63]).is_err());
        assert!(hwid(&[0x04, 0x05, 1, 2, 3, 4, 5]).is_err());
    }

    #[test]
    fn strings() {
        assert_eq!(der_string(b"\x16\x08Milan-B0").unwrap(), "Milan-B0");
        assert_eq!(der_string(b"\x0c\x05Genoa").unwrap(), "Genoa");
        assert!(der_string(b"\x04\x05Genoa").is_err());
        assert!(der_string(b"\x16\x09Genoa").is_err());
    }
}
