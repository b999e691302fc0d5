//! SEV-SNP guest messages (SNP-FACTS §5.5; AMD SEV-SNP ABI "Guest messages"): a 96-byte
//! header and a payload encrypted with AES-256-GCM under one of the VMPCKs of the secrets
//! page, in one 4 KiB page. This module seals requests and opens responses; what travels
//! in them is `attest.rs`'s business, how the pages reach the PSP is the transport's.
//!
//! Header layout:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x00 | 32 | AUTHTAG (the 16-byte GCM tag in the first 16) |
//! | 0x20 | 8 | MSG_SEQNO |
//! | 0x30 | 1 | ALGO (1 = AES-256-GCM) |
//! | 0x31 | 1 | HDR_VERSION (1) |
//! | 0x32 | 2 | HDR_SIZE (0x60) |
//! | 0x34 | 1 | MSG_TYPE |
//! | 0x35 | 1 | MSG_VERSION |
//! | 0x36 | 2 | MSG_SIZE (payload bytes) |
//! | 0x3C | 1 | MSG_VMPCK |
//!
//! Crypto, as Linux's `enc_payload` / `verify_and_dec_payload`: IV = MSG_SEQNO
//! little-endian in the first 8 of 12 bytes; AAD = header bytes 0x30..0x60; everything
//! else in the header is reserved and zero. AES-GCM is the `aes-gcm` crate (software
//! backend, in place, detached tag, no allocation).

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce, Tag};
use zeroize::{Zeroize, Zeroizing};

/// A message page.
pub const PAGE_SIZE: usize = 4096;
/// Size of the header.
pub const HEADER_SIZE: usize = 0x60;
/// Largest payload a page holds.
pub const MAX_PAYLOAD: usize = PAGE_SIZE - HEADER_SIZE;
/// ALGO: AES-256-GCM.
pub const ALGO_AES_256_GCM: u8 = 1;
/// HDR_VERSION.
pub const HDR_VERSION: u8 = 1;
/// Size of a VMPCK.
pub const VMPCK_LEN: usize = 32;

const TAG_LEN: usize = 16;
const OFF_SEQNO: usize = 0x20;
const OFF_ALGO: usize = 0x30;
const OFF_HDR_VERSION: usize = 0x31;
const OFF_HDR_SIZE: usize = 0x32;
const OFF_MSG_TYPE: usize = 0x34;
const OFF_MSG_VERSION: usize = 0x35;
const OFF_MSG_SIZE: usize = 0x36;
const OFF_MSG_VMPCK: usize = 0x3c;
/// The authenticated part of the header: ALGO to the end.
const AAD_START: usize = OFF_ALGO;

/// One message page.
pub type Page = [u8; PAGE_SIZE];

/// A copy of one VMPCK of the secrets page, wiped when dropped or by [`Vmpck::wipe`].
pub struct Vmpck(Zeroizing<[u8; VMPCK_LEN]>);

impl Vmpck {
    /// A key of zero bytes, to be filled in place with [`Vmpck::bytes_mut`] (so that the
    /// secret is not copied around on the stack).
    pub fn zeroed() -> Self {
        Self(Zeroizing::new([0; VMPCK_LEN]))
    }

    /// The key bytes, to fill.
    pub fn bytes_mut(&mut self) -> &mut [u8; VMPCK_LEN] {
        &mut self.0
    }

    /// An all-zero VMPCK is one the firmware did not provide or the guest has disabled
    /// (Linux's `is_vmpck_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// Overwrites the key with zeros.
    pub fn wipe(&mut self) {
        self.0.zeroize();
    }

    /// The cipher under this key (its key schedule is wiped when dropped: the crate's
    /// `zeroize` feature).
    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(<&Key<Aes256Gcm>>::from(&*self.0))
    }
}

/// The header fields a request sets and a response is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHeader {
    /// MSG_SEQNO.
    pub seqno: u64,
    /// MSG_TYPE.
    pub msg_type: u8,
    /// MSG_VERSION.
    pub msg_version: u8,
    /// MSG_VMPCK: which VMPCK the message is encrypted with (0-3).
    pub vmpck: u8,
}

/// A message that could not be sealed, or a response that failed a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// The payload does not fit a page.
    PayloadTooLarge {
        /// Its length.
        len: usize,
    },
    /// The cipher refused to encrypt.
    Encryption,
    /// MSG_SEQNO is not the expected one.
    SeqNo {
        /// Expected value.
        expected: u64,
        /// Value found.
        found: u64,
    },
    /// MSG_TYPE is not the expected one.
    MsgType {
        /// Expected value.
        expected: u8,
        /// Value found.
        found: u8,
    },
    /// MSG_VERSION is not the expected one.
    MsgVersion {
        /// Expected value.
        expected: u8,
        /// Value found.
        found: u8,
    },
    /// ALGO is not AES-256-GCM.
    Algo {
        /// Value found.
        found: u8,
    },
    /// HDR_VERSION is not 1.
    HdrVersion {
        /// Value found.
        found: u8,
    },
    /// HDR_SIZE is not 0x60.
    HdrSize {
        /// Value found.
        found: u16,
    },
    /// MSG_SIZE is larger than the caller accepts.
    MsgSize {
        /// Largest size accepted.
        max: usize,
        /// Value found.
        found: u16,
    },
    /// The tag does not authenticate the header and payload under the key.
    Authentication,
}

impl MsgError {
    /// What failed, and the expected and found values where there are some.
    pub fn describe(&self) -> (&'static str, Option<(u64, u64)>) {
        let pair = |e: u8, f: u8| Some((u64::from(e), u64::from(f)));
        match *self {
            Self::PayloadTooLarge { len } => (
                "request payload larger than a message page",
                Some((MAX_PAYLOAD as u64, len as u64)),
            ),
            Self::Encryption => ("AES-256-GCM refused to encrypt the request", None),
            Self::SeqNo { expected, found } => ("response MSG_SEQNO", Some((expected, found))),
            Self::MsgType { expected, found } => ("response MSG_TYPE", pair(expected, found)),
            Self::MsgVersion { expected, found } => ("response MSG_VERSION", pair(expected, found)),
            Self::Algo { found } => ("response ALGO", pair(ALGO_AES_256_GCM, found)),
            Self::HdrVersion { found } => ("response HDR_VERSION", pair(HDR_VERSION, found)),
            Self::HdrSize { found } => (
                "response HDR_SIZE",
                Some((HEADER_SIZE as u64, u64::from(found))),
            ),
            Self::MsgSize { max, found } => (
                "response MSG_SIZE larger than accepted",
                Some((max as u64, u64::from(found))),
            ),
            Self::Authentication => (
                "response does not authenticate under the VMPCK (AES-256-GCM tag mismatch)",
                None,
            ),
        }
    }
}

/// The 12-byte IV of message `seqno`.
fn nonce(seqno: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    Nonce::from(iv)
}

/// Writes `header` and `payload` into `page` as a message encrypted with `key`. The
/// header's MSG_VMPCK is `header.vmpck` whatever `key` is (so a test can lie about it).
pub fn seal(
    key: &Vmpck,
    header: &MsgHeader,
    payload: &[u8],
    page: &mut Page,
) -> Result<(), MsgError> {
    let size = u16::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_PAYLOAD)
        .ok_or(MsgError::PayloadTooLarge { len: payload.len() })?;
    page.fill(0);
    page[OFF_SEQNO..OFF_SEQNO + 8].copy_from_slice(&header.seqno.to_le_bytes());
    page[OFF_ALGO] = ALGO_AES_256_GCM;
    page[OFF_HDR_VERSION] = HDR_VERSION;
    page[OFF_HDR_SIZE..OFF_HDR_SIZE + 2].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
    page[OFF_MSG_TYPE] = header.msg_type;
    page[OFF_MSG_VERSION] = header.msg_version;
    page[OFF_MSG_SIZE..OFF_MSG_SIZE + 2].copy_from_slice(&size.to_le_bytes());
    page[OFF_MSG_VMPCK] = header.vmpck;
    let (head, body) = page.split_at_mut(HEADER_SIZE);
    let text = &mut body[..payload.len()];
    text.copy_from_slice(payload);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&nonce(header.seqno), &head[AAD_START..], text.into())
        .map_err(|_| MsgError::Encryption)?;
    head[..TAG_LEN].copy_from_slice(&tag);
    Ok(())
}

/// Checks the response in `page` against `expected` (header fields) and `max_size`
/// (largest payload the caller accepts), authenticates and decrypts it in place with
/// `key`, and returns the plaintext payload.
pub fn open<'p>(
    key: &Vmpck,
    expected: &MsgHeader,
    max_size: usize,
    page: &'p mut Page,
) -> Result<&'p [u8], MsgError> {
    let seqno = u64::from_le_bytes(
        page[OFF_SEQNO..OFF_SEQNO + 8]
            .try_into()
            .map_err(|_| MsgError::Authentication)?,
    );
    if seqno != expected.seqno {
        return Err(MsgError::SeqNo {
            expected: expected.seqno,
            found: seqno,
        });
    }
    if page[OFF_MSG_TYPE] != expected.msg_type {
        return Err(MsgError::MsgType {
            expected: expected.msg_type,
            found: page[OFF_MSG_TYPE],
        });
    }
    if page[OFF_MSG_VERSION] != expected.msg_version {
        return Err(MsgError::MsgVersion {
            expected: expected.msg_version,
            found: page[OFF_MSG_VERSION],
        });
    }
    if page[OFF_ALGO] != ALGO_AES_256_GCM {
        return Err(MsgError::Algo {
            found: page[OFF_ALGO],
        });
    }
    if page[OFF_HDR_VERSION] != HDR_VERSION {
        return Err(MsgError::HdrVersion {
            found: page[OFF_HDR_VERSION],
        });
    }
    let hdr_size = u16::from_le_bytes([page[OFF_HDR_SIZE], page[OFF_HDR_SIZE + 1]]);
    if usize::from(hdr_size) != HEADER_SIZE {
        return Err(MsgError::HdrSize { found: hdr_size });
    }
    let size = u16::from_le_bytes([page[OFF_MSG_SIZE], page[OFF_MSG_SIZE + 1]]);
    let max = max_size.min(MAX_PAYLOAD);
    if usize::from(size) > max {
        return Err(MsgError::MsgSize { max, found: size });
    }
    let (head, body) = page.split_at_mut(HEADER_SIZE);
    let tag = Tag::try_from(&head[..TAG_LEN]).map_err(|_| MsgError::Authentication)?;
    let text = &mut body[..usize::from(size)];
    key.cipher()
        .decrypt_inout_detached(&nonce(seqno), &head[AAD_START..], (&mut *text).into(), &tag)
        .map_err(|_| MsgError::Authentication)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aes_gcm::aead::AeadInOut;

    fn key(byte: u8) -> Vmpck {
        let mut k = Vmpck::zeroed();
        k.bytes_mut().fill(byte);
        k
    }

    /// The cipher built straight from the spec, independent of this module's helpers.
    fn spec_cipher(byte: u8) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from([byte; 32]))
    }

    fn spec_nonce(seqno: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut iv = [0u8; 12];
        iv[0..8].copy_from_slice(&seqno.to_le_bytes());
        Nonce::from(iv)
    }

    /// A response sealed by hand at the spec's offsets.
    fn spec_response(seqno: u64, msg_type: u8, payload: &[u8]) -> Box<Page> {
        let mut page = Box::new([0u8; PAGE_SIZE]);
        page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
        page[0x30] = 1;
        page[0x31] = 1;
        page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
        page[0x34] = msg_type;
        page[0x35] = 1;
        page[0x36..0x38].copy_from_slice(&(payload.len() as u16).to_le_bytes());
        page[0x60..0x60 + payload.len()].copy_from_slice(payload);
        let (head, body) = page.split_at_mut(0x60);
        let tag = spec_cipher(7)
            .encrypt_inout_detached(
                &spec_nonce(seqno),
                &head[0x30..0x60],
                (&mut body[..payload.len()]).into(),
            )
            .unwrap();
        head[..16].copy_from_slice(&tag);
        page
    }

    const RESPONSE: MsgHeader = MsgHeader {
        seqno: 2,
        msg_type: 6,
        msg_version: 1,
        vmpck: 0,
    };

    #[test]
    fn seal_writes_the_spec_layout() {
        let mut page = Box::new([0xeeu8; PAGE_SIZE]);
        let payload: Vec<u8> = (0..96).collect();
        let header = MsgHeader {
            seqno: 0x0102_0304_0506_0708,
            msg_type: 5,
            msg_version: 1,
            vmpck: 2,
        };
        seal(&key(7), &header, &payload, &mut page).unwrap();
        assert_eq!(
            &page[0x10..0x20],
            &[0; 16],
            "AUTHTAG beyond the 16-byte tag is zero"
        );
        assert_eq!(page[0x20..0x28], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&page[0x28..0x30], &[0; 8]);
        assert_eq!(&page[0x30..0x38], &[1, 1, 0x60, 0, 5, 1, 96, 0]);
        assert_eq!(&page[0x38..0x3c], &[0; 4]);
        assert_eq!(page[0x3c], 2);
        assert_eq!(&page[0x3d..0x60], &[0; 0x23]);
        assert!(
            page[0x60 + 96..].iter().all(|b| *b == 0),
            "the rest of the page is zero"
        );
        assert_ne!(
            &page[0x60..0x60 + 96],
            &payload[..],
            "the payload is encrypted"
        );
        // Decrypt by hand: IV from the sequence number, AAD = bytes 0x30..0x60.
        let (head, body) = page.split_at_mut(0x60);
        let tag = Tag::try_from(&head[..16]).unwrap();
        spec_cipher(7)
            .decrypt_inout_detached(
                &spec_nonce(header.seqno),
                &head[0x30..0x60],
                (&mut body[..96]).into(),
                &tag,
            )
            .unwrap();
        assert_eq!(&body[..96], &payload[..]);
    }

    #[test]
    fn seal_then_open_round_trips() {
        let mut page = Box::new([0u8; PAGE_SIZE]);
        seal(&key(9), &RESPONSE, b"hello", &mut page).unwrap();
        assert_eq!(open(&key(9), &RESPONSE, 100, &mut page), Ok(&b"hello"[..]));
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let too_big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            seal(&key(9), &RESPONSE, &too_big, &mut page),
            Err(MsgError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
    }

    #[test]
    fn open_accepts_a_spec_response() {
        let mut page = spec_response(2, 6, b"report");
        assert_eq!(
            open(&key(7), &RESPONSE, 4000, &mut page),
            Ok(&b"report"[..])
        );
    }

    #[test]
    fn open_checks_every_field() {
        type Corruption = Box<dyn Fn(&mut Page)>;
        let cases: Vec<(Corruption, MsgError)> = vec![
            (
                Box::new(|p| p[0x20] = 4),
                MsgError::SeqNo {
                    expected: 2,
                    found: 4,
                },
            ),
            (
                Box::new(|p| p[0x34] = 5),
                MsgError::MsgType {
                    expected: 6,
                    found: 5,
                },
            ),
            (
                Box::new(|p| p[0x35] = 2),
                MsgError::MsgVersion {
                    expected: 1,
                    found: 2,
                },
            ),
            (Box::new(|p| p[0x30] = 0), MsgError::Algo { found: 0 }),
            (Box::new(|p| p[0x31] = 2), MsgError::HdrVersion { found: 2 }),
            (
                Box::new(|p| p[0x32] = 0x40),
                MsgError::HdrSize { found: 0x40 },
            ),
            (
                Box::new(|p| p[0x36..0x38].copy_from_slice(&4001u16.to_le_bytes())),
                MsgError::MsgSize {
                    max: 4000,
                    found: 4001,
                },
            ),
            (Box::new(|p| p[0] ^= 1), MsgError::Authentication),
            (Box::new(|p| p[0x60] ^= 0x80), MsgError::Authentication),
            (Box::new(|p| p[0x3c] = 1), MsgError::Authentication),
            (Box::new(|p| p[0x5f] = 1), MsgError::Authentication),
            (
                Box::new(|p| p[0x36..0x38].copy_from_slice(&5u16.to_le_bytes())),
                MsgError::Authentication,
            ),
        ];
        for (corrupt, want) in cases {
            let mut page = spec_response(2, 6, b"report");
            corrupt(&mut page);
            assert_eq!(open(&key(7), &RESPONSE, 4000, &mut page), Err(want));
            assert!(!want.describe().0.is_empty());
        }
        let mut page = spec_response(2, 6, b"report");
        assert_eq!(
            open(&key(8), &RESPONSE, 4000, &mut page),
            Err(MsgError::Authentication),
            "another key"
        );
        let mut page = spec_response(2, 6, &[1; MAX_PAYLOAD]);
        assert_eq!(
            open(&key(7), &RESPONSE, usize::MAX, &mut page).map(<[u8]>::len),
            Ok(MAX_PAYLOAD),
            "a full page is the most there can be"
        );
    }

    #[test]
    fn vmpck_wipes() {
        let mut k = key(3);
        assert!(!k.is_empty());
        k.wipe();
        assert!(k.is_empty());
    }
}
