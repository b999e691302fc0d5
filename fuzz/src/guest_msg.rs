//! The guest's side of SNP guest messages, for targets that talk to the simulated PSP:
//! sealing a request as a guest does (and as the test guest does: MSG_REPORT_REQ, version
//! 1, VMPCK 0), opening a response, and checking that a report the PSP answered with is
//! genuine under the simulation root.
//!
//! Layout (SNP-FACTS §5.5): AUTHTAG @0, MSG_SEQNO @0x20, ALGO @0x30, HDR_VERSION @0x31,
//! HDR_SIZE @0x32, MSG_TYPE @0x34, MSG_VERSION @0x35, MSG_SIZE @0x36, MSG_VMPCK @0x3C,
//! payload @0x60; AES-256-GCM, IV = MSG_SEQNO, AAD = bytes 0x30..0x60.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use cloister_attestation::report::{AttestationReport, REPORT_SIZE};
use cloister_attestation::sim::SimRoot;
use cloister_attestation::verify::{verify, VerifyOptions};

use crate::input::{Reader, Writer};

/// A 4 KiB message page.
pub type Page = [u8; 4096];

/// MSG_REPORT_REQ.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_REPORT_RSP.
pub const MSG_REPORT_RSP: u8 = 6;
/// Size of MSG_REPORT_REQ's payload: REPORT_DATA[64], VMPL, KEY_SEL, reserved[24].
pub const REPORT_REQ_SIZE: usize = 96;

/// The header fields a request is sealed with. The defaults are the test guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// ALGO (1: AES-256-GCM).
    pub algo: u8,
    /// HDR_VERSION (1).
    pub hdr_version: u8,
    /// HDR_SIZE (0x60).
    pub hdr_size: u16,
    /// MSG_TYPE.
    pub msg_type: u8,
    /// MSG_VERSION.
    pub msg_version: u8,
    /// MSG_VMPCK: the key index the header names.
    pub vmpck: u8,
    /// Written into every reserved header byte (0 in a well-formed message).
    pub reserved_fill: u8,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            algo: 1,
            hdr_version: 1,
            hdr_size: 0x60,
            msg_type: MSG_REPORT_REQ,
            msg_version: 1,
            vmpck: 0,
            reserved_fill: 0,
        }
    }
}

impl Header {
    /// Reads the fields in order (8 bytes).
    pub fn read(r: &mut Reader) -> Self {
        Header {
            algo: r.u8(),
            hdr_version: r.u8(),
            hdr_size: r.u16(),
            msg_type: r.u8(),
            msg_version: r.u8(),
            vmpck: r.u8(),
            reserved_fill: r.u8(),
        }
    }

    /// Writes the fields as [`Header::read`] reads them.
    pub fn write(&self, w: &mut Writer) {
        w.u8(self.algo)
            .u8(self.hdr_version)
            .u16(self.hdr_size)
            .u8(self.msg_type)
            .u8(self.msg_version)
            .u8(self.vmpck)
            .u8(self.reserved_fill);
    }
}

/// The test guest's MSG_REPORT_REQ payload: REPORT_DATA, VMPL 0, KEY_SEL 0.
pub fn report_request(report_data: &[u8; 64]) -> [u8; REPORT_REQ_SIZE] {
    let mut req = [0u8; REPORT_REQ_SIZE];
    req[..64].copy_from_slice(report_data);
    req
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Seals `payload` (at most 4000 bytes are kept) under `key` with `seqno` and `header`.
pub fn seal(key: &[u8; 32], seqno: u64, header: &Header, payload: &[u8]) -> Page {
    let mut page = [0u8; 4096];
    let size = payload.len().min(4096 - 0x60);
    page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
    page[0x28..0x30].fill(header.reserved_fill);
    page[0x30] = header.algo;
    page[0x31] = header.hdr_version;
    page[0x32..0x34].copy_from_slice(&header.hdr_size.to_le_bytes());
    page[0x34] = header.msg_type;
    page[0x35] = header.msg_version;
    page[0x36..0x38].copy_from_slice(&(size as u16).to_le_bytes());
    page[0x38..0x3c].fill(header.reserved_fill);
    page[0x3c] = header.vmpck;
    page[0x3d..0x60].fill(header.reserved_fill);
    page[0x60..0x60 + size].copy_from_slice(&payload[..size]);
    let Ok(cipher) = Aes256Gcm::new_from_slice(key) else {
        return page;
    };
    let (head, body) = page.split_at_mut(0x60);
    let aad = head[0x30..0x60].to_vec();
    if let Ok(tag) =
        cipher.encrypt_in_place_detached(Nonce::from_slice(&iv(seqno)), &aad, &mut body[..size])
    {
        head[..16].copy_from_slice(&tag);
    }
    page
}

/// An opened response: its header fields and decrypted payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// MSG_SEQNO.
    pub seqno: u64,
    /// MSG_TYPE.
    pub msg_type: u8,
    /// MSG_VERSION.
    pub msg_version: u8,
    /// MSG_VMPCK.
    pub vmpck: u8,
    /// The plaintext.
    pub payload: Vec<u8>,
}

/// Opens a message under `key`; `None` when its size is out of range or its tag is wrong.
pub fn open(key: &[u8; 32], page: &Page) -> Option<Opened> {
    let size = usize::from(u16::from_le_bytes([page[0x36], page[0x37]]));
    if size == 0 || size > 4096 - 0x60 {
        return None;
    }
    let seqno = u64::from_le_bytes(page[0x20..0x28].try_into().ok()?);
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let mut payload = page[0x60..0x60 + size].to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&iv(seqno)),
            &page[0x30..0x60],
            &mut payload,
            Tag::from_slice(&page[..16]),
        )
        .ok()?;
    Some(Opened {
        seqno,
        msg_type: page[0x34],
        msg_version: page[0x35],
        vmpck: page[0x3c],
        payload,
    })
}

/// What a MSG_REPORT_RSP must hold for a MSG_REPORT_REQ `request` sent with VMPCK
/// `vmpck` and sequence number `seqno` to a PSP with launch digest `measurement` and guest
/// policy `policy`: the response header (type 6, version 1, `seqno + 1`, same VMPCK) and,
/// when its STATUS is 0, a report carrying the request's REPORT_DATA and VMPL, the digest
/// and the policy, that passes every check of `cloister verify` under the simulation root.
#[allow(clippy::too_many_arguments)]
pub fn check_report_response(
    root: &SimRoot,
    key: &[u8; 32],
    response: &Page,
    vmpck: u8,
    seqno: u64,
    request: &[u8],
    measurement: &[u8; 48],
    policy: u64,
) {
    let opened = open(key, response).expect("a response the PSP wrote opens with the key");
    assert_eq!(
        (
            opened.seqno,
            opened.msg_type,
            opened.msg_version,
            opened.vmpck
        ),
        (seqno + 1, MSG_REPORT_RSP, 1, vmpck),
        "response header"
    );
    let payload = &opened.payload;
    let status = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes"));
    if status != 0 {
        return;
    }
    assert_eq!(
        u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes")) as usize,
        REPORT_SIZE
    );
    let bytes = &payload[0x20..0x20 + REPORT_SIZE];
    let report = AttestationReport::from_bytes(bytes).expect("the PSP's report parses strictly");
    assert_eq!(&report.report_data[..], &request[..64]);
    assert_eq!(
        report.vmpl,
        u32::from_le_bytes(request[0x40..0x44].try_into().expect("4 bytes"))
    );
    assert_eq!(&report.measurement, measurement);
    assert_eq!(report.policy, policy);
    let opts = VerifyOptions {
        trust_sim_root: true,
        ..VerifyOptions::default()
    };
    let verified = verify(bytes, &root.cert_bundle(), &opts).expect("the PSP's report verifies");
    assert!(
        verified.passed(),
        "a report of the simulated PSP fails verification: {:?}",
        verified.failures().collect::<Vec<_>>()
    );
}
