//! The guest message format of SNP_GUEST_REQUEST (SNP-FACTS §5.5; SEV-SNP ABI "Guest
//! Messages"): a 96-byte header and the AES-256-GCM-encrypted payload in one 4 KiB page.
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 32 | AUTHTAG (the 16-byte GCM tag in the first 16) |
//! | 0x20 | 8 | MSG_SEQNO |
//! | 0x28 | 8 | reserved |
//! | 0x30 | 1 | ALGO (1 = AES-256-GCM) |
//! | 0x31 | 1 | HDR_VERSION (1) |
//! | 0x32 | 2 | HDR_SIZE (0x60) |
//! | 0x34 | 1 | MSG_TYPE |
//! | 0x35 | 1 | MSG_VERSION |
//! | 0x36 | 2 | MSG_SIZE (payload bytes) |
//! | 0x38 | 4 | reserved |
//! | 0x3C | 1 | MSG_VMPCK (which VMPCK) |
//! | 0x3D | 35 | reserved |
//! | 0x60 | MSG_SIZE | payload |
//!
//! Key VMPCK[MSG_VMPCK]; IV = MSG_SEQNO little-endian in the first 8 of 12 bytes; AAD =
//! header bytes 0x30..0x60.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use zeroize::Zeroizing;

use super::FwStatus;
use crate::launch::digest::PAGE_SIZE;

/// Offset of AUTHTAG.
pub const MSG_AUTHTAG: usize = 0x00;
/// Offset of MSG_SEQNO.
pub const MSG_SEQNO: usize = 0x20;
/// Offset of ALGO.
pub const MSG_ALGO: usize = 0x30;
/// Offset of HDR_VERSION.
pub const MSG_HDR_VERSION: usize = 0x31;
/// Offset of HDR_SIZE.
pub const MSG_HDR_SIZE: usize = 0x32;
/// Offset of MSG_TYPE.
pub const MSG_TYPE: usize = 0x34;
/// Offset of MSG_VERSION.
pub const MSG_VERSION: usize = 0x35;
/// Offset of MSG_SIZE.
pub const MSG_SIZE: usize = 0x36;
/// Offset of MSG_VMPCK.
pub const MSG_VMPCK: usize = 0x3C;
/// Size of the header, and offset of the payload.
pub const MSG_HEADER_SIZE: usize = 0x60;
/// The largest payload a page holds.
pub const MSG_PAYLOAD_MAX: usize = PAGE_SIZE - MSG_HEADER_SIZE;
/// ALGO value of AES-256-GCM.
pub const AEAD_ALGO_AES_256_GCM: u8 = 1;
/// HDR_VERSION the firmware knows.
pub const MSG_HDR_VERSION_1: u8 = 1;
/// Size of the GCM tag.
const TAG_SIZE: usize = 16;
/// The AAD: header bytes 0x30..0x60.
const AAD: std::ops::Range<usize> = MSG_ALGO..MSG_HEADER_SIZE;

/// MSG_TYPE values (SEV-SNP ABI, "Message Type Encodings"): requests are odd, the
/// response to type n is n + 1.
pub mod msg_type {
    /// MSG_CPUID_REQ.
    pub const CPUID_REQ: u8 = 1;
    /// MSG_KEY_REQ.
    pub const KEY_REQ: u8 = 3;
    /// MSG_REPORT_REQ.
    pub const REPORT_REQ: u8 = 5;
    /// MSG_REPORT_RSP.
    pub const REPORT_RSP: u8 = 6;
    /// MSG_EXPORT_REQ.
    pub const EXPORT_REQ: u8 = 7;
    /// MSG_IMPORT_REQ.
    pub const IMPORT_REQ: u8 = 9;
    /// MSG_ABSORB_REQ.
    pub const ABSORB_REQ: u8 = 11;
    /// MSG_VMRK_REQ.
    pub const VMRK_REQ: u8 = 13;
    /// MSG_ABSORB_NOMA_REQ.
    pub const ABSORB_NOMA_REQ: u8 = 15;
    /// MSG_TSC_INFO_REQ.
    pub const TSC_INFO_REQ: u8 = 17;
}

/// The decoded header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MsgHeader {
    pub seqno: u64,
    pub msg_type: u8,
    pub msg_version: u8,
    pub msg_size: usize,
    pub vmpck: usize,
}

fn le<const N: usize>(page: &[u8; PAGE_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = page.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn zero(page: &[u8; PAGE_SIZE], range: std::ops::Range<usize>) -> bool {
    page.get(range).unwrap_or(&[]).iter().all(|&b| b == 0)
}

/// Decodes and checks a request header: ALGO 1, HDR_VERSION 1, HDR_SIZE 0x60, MSG_VMPCK
/// 0..=3, MSG_SIZE 1..=4000, reserved bytes zero. Any other value: INVALID_PARAM.
pub(super) fn parse_header(page: &[u8; PAGE_SIZE]) -> Result<MsgHeader, FwStatus> {
    let algo = page.get(MSG_ALGO).copied().unwrap_or(0);
    let hdr_version = page.get(MSG_HDR_VERSION).copied().unwrap_or(0);
    let hdr_size = u16::from_le_bytes(le(page, MSG_HDR_SIZE));
    let msg_size = usize::from(u16::from_le_bytes(le(page, MSG_SIZE)));
    let vmpck = usize::from(page.get(MSG_VMPCK).copied().unwrap_or(u8::MAX));
    let well_formed = algo == AEAD_ALGO_AES_256_GCM
        && hdr_version == MSG_HDR_VERSION_1
        && usize::from(hdr_size) == MSG_HEADER_SIZE
        && vmpck <= 3
        && (1..=MSG_PAYLOAD_MAX).contains(&msg_size)
        && zero(page, 0x28..0x30)
        && zero(page, 0x38..0x3C)
        && zero(page, 0x3D..MSG_HEADER_SIZE);
    if !well_formed {
        return Err(FwStatus::INVALID_PARAM);
    }
    Ok(MsgHeader {
        seqno: u64::from_le_bytes(le(page, MSG_SEQNO)),
        msg_type: page.get(MSG_TYPE).copied().unwrap_or(0),
        msg_version: page.get(MSG_VERSION).copied().unwrap_or(0),
        msg_size,
        vmpck,
    })
}

fn nonce(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Authenticates and decrypts the payload of `page` with `key`. A tag that does not verify
/// (wrong key, altered header or payload, wrong sequence number in the IV) is
/// INVALID_PARAM.
pub(super) fn open(
    key: &[u8; 32],
    page: &[u8; PAGE_SIZE],
    header: &MsgHeader,
) -> Result<Zeroizing<Vec<u8>>, FwStatus> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| FwStatus::INVALID_PARAM)?;
    let payload = page
        .get(MSG_HEADER_SIZE..MSG_HEADER_SIZE + header.msg_size)
        .ok_or(FwStatus::INVALID_PARAM)?;
    let mut plaintext = Zeroizing::new(payload.to_vec());
    let tag: [u8; TAG_SIZE] = le(page, MSG_AUTHTAG);
    let aad = page.get(AAD).ok_or(FwStatus::INVALID_PARAM)?;
    cipher
        .decrypt_in_place_detached(
            &Nonce::from(nonce(header.seqno)),
            aad,
            plaintext.as_mut_slice(),
            &Tag::from(tag),
        )
        .map_err(|_| FwStatus::INVALID_PARAM)?;
    Ok(plaintext)
}

/// Writes a response into `page` (zeroed first): the header with MSG_SEQNO `seqno`, then
/// `payload` encrypted with `key`, the tag in AUTHTAG.
pub(super) fn seal(
    key: &[u8; 32],
    seqno: u64,
    msg_type: u8,
    msg_version: u8,
    vmpck: usize,
    payload: &[u8],
    page: &mut [u8; PAGE_SIZE],
) -> Result<(), FwStatus> {
    let size = u16::try_from(payload.len())
        .ok()
        .filter(|&s| usize::from(s) <= MSG_PAYLOAD_MAX)
        .ok_or(FwStatus::INVALID_LENGTH)?;
    let vmpck = u8::try_from(vmpck).map_err(|_| FwStatus::INVALID_PARAM)?;
    page.fill(0);
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = page.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(MSG_SEQNO, &seqno.to_le_bytes());
    put(MSG_ALGO, &[AEAD_ALGO_AES_256_GCM, MSG_HDR_VERSION_1]);
    put(MSG_HDR_SIZE, &(MSG_HEADER_SIZE as u16).to_le_bytes());
    put(MSG_TYPE, &[msg_type, msg_version]);
    put(MSG_SIZE, &size.to_le_bytes());
    put(MSG_VMPCK, &[vmpck]);
    put(MSG_HEADER_SIZE, payload);
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| FwStatus::INVALID_PARAM)?;
    let (header, rest) = page.split_at_mut(MSG_HEADER_SIZE);
    let body = rest
        .get_mut(..payload.len())
        .ok_or(FwStatus::INVALID_LENGTH)?;
    let aad = header.get(AAD).ok_or(FwStatus::INVALID_PARAM)?.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&Nonce::from(nonce(seqno)), &aad, body)
        .map_err(|_| FwStatus::AEAD_OFLOW)?;
    if let Some(dst) = header.get_mut(MSG_AUTHTAG..MSG_AUTHTAG + TAG_SIZE) {
        dst.copy_from_slice(&tag);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn seal_then_open() {
        let key = [7u8; 32];
        let mut page = [0u8; PAGE_SIZE];
        seal(&key, 2, msg_type::REPORT_RSP, 1, 1, b"hello", &mut page).unwrap();
        let h = parse_header(&page).unwrap();
        assert_eq!(
            h,
            MsgHeader {
                seqno: 2,
                msg_type: 6,
                msg_version: 1,
                msg_size: 5,
                vmpck: 1
            }
        );
        assert_ne!(&page[0x60..0x65], b"hello");
        assert_eq!(open(&key, &page, &h).unwrap().as_slice(), b"hello");
        assert_eq!(open(&[8u8; 32], &page, &h), Err(FwStatus::INVALID_PARAM));
        let mut other = h;
        other.seqno = 3;
        assert_eq!(open(&key, &page, &other), Err(FwStatus::INVALID_PARAM));
    }

    #[test]
    fn header_checks() {
        let key = [7u8; 32];
        let mut good = [0u8; PAGE_SIZE];
        seal(&key, 1, msg_type::REPORT_REQ, 1, 0, &[0u8; 96], &mut good).unwrap();
        assert!(parse_header(&good).is_ok());
        for (at, value) in [
            (MSG_ALGO, 0u8),
            (MSG_ALGO, 2),
            (MSG_HDR_VERSION, 2),
            (MSG_HDR_SIZE, 0x61),
            (MSG_VMPCK, 4),
            (0x28, 1),
            (0x38, 1),
            (0x5F, 1),
        ] {
            let mut p = good;
            p[at] = value;
            assert_eq!(
                parse_header(&p),
                Err(FwStatus::INVALID_PARAM),
                "byte {at:#x}"
            );
        }
        for size in [0u16, (MSG_PAYLOAD_MAX + 1) as u16, u16::MAX] {
            let mut p = good;
            p[MSG_SIZE..MSG_SIZE + 2].copy_from_slice(&size.to_le_bytes());
            assert_eq!(
                parse_header(&p),
                Err(FwStatus::INVALID_PARAM),
                "size {size}"
            );
        }
    }
}
