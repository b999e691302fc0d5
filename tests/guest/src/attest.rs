//! Asking the AMD secure processor (PSP) for an attestation report: MSG_REPORT_REQ and
//! MSG_REPORT_RSP (SNP-FACTS §5.4) in guest messages (`guest_msg.rs`), sent over a
//! [`Transport`]: the GHCB guest request (SNP-FACTS §1.11), whose VMGEXIT is `rep vmmcall`
//! on real SNP and a doorbell port write on the simulated platform (`ghcb_io.rs`).
//!
//! [`Session`] keeps the VMPCK copy and the message sequence number as Linux's
//! `snp_send_guest_request` does: the first request carries 1, every exchange that reached
//! the firmware advances the number by 2 (request and response), it must stay below 2^32
//! (the secrets page keeps it in 32 bits), and on any failure the key copy is wiped so
//! that an IV can never be used twice. The negative tests of the protocol
//! (`cloister_test.attest=replay|forge|wrongkey`) are here too, so that the host tests
//! run them against a model PSP.

use crate::cmdline::REPORT_DATA_LEN;
use crate::guest_msg::{self, MsgError, MsgHeader, Page, Vmpck, MAX_PAYLOAD, PAGE_SIZE};
use crate::tables::PhysMem;

/// MSG_TYPE of a report request.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_TYPE of a report response.
pub const MSG_REPORT_RSP: u8 = 6;
/// MSG_VERSION of both.
pub const MSG_REPORT_VERSION: u8 = 1;
/// Size of MSG_REPORT_REQ: REPORT_DATA[64], VMPL u32, KEY_SEL u32, reserved[24].
pub const REPORT_REQ_SIZE: usize = 96;
/// Size of an ATTESTATION_REPORT.
pub const REPORT_SIZE: usize = 1184;
/// Offset of the report in MSG_REPORT_RSP (after STATUS, REPORT_SIZE, reserved[24]).
const REPORT_RSP_REPORT: usize = 0x20;
/// Offset of VMPCK0 in the secrets page; VMPCKn follows at 32-byte steps.
const SECRETS_VMPCK0: u64 = 0x20;
/// Highest VMPCK index.
pub const MAX_VMPCK: u8 = 3;
/// The firmware keeps sequence numbers in 32 bits.
const MAX_SEQNO: u64 = u32::MAX as u64;

/// Why the transport brought no response back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The firmware refused the request with this status (e.g. 0x16 INVALID_PARAM).
    Refused {
        /// Firmware status.
        status: u32,
    },
    /// Nobody serves guest requests here (the VMM has no PSP to ask).
    Unavailable,
    /// The hypervisor rejected the exit (GHCB SW_EXITINFO1 = `info1`, SW_EXITINFO2 =
    /// `info2`) or answered with VMM error `info2 >> 32`.
    Hypervisor {
        /// SW_EXITINFO1.
        info1: u64,
        /// SW_EXITINFO2.
        info2: u64,
    },
}

/// How guest messages reach the PSP and come back.
pub trait Transport {
    /// Hands the sealed `request` page to the PSP; on success its answer is in `response`.
    /// An implementation copies both between private memory and the pages it shares with
    /// the host, so that the host cannot change a response while the guest checks it.
    fn exchange(&mut self, request: &Page, response: &mut Page) -> Result<(), TransportError>;
}

/// Why no report came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestError {
    /// The transport failed or the firmware refused the message.
    Transport(TransportError),
    /// The request could not be sealed or the response failed a check.
    Message(MsgError),
    /// MSG_REPORT_RSP's STATUS is not 0: the firmware refused to make a report.
    ReportStatus {
        /// STATUS.
        status: u32,
    },
    /// MSG_REPORT_RSP's REPORT_SIZE is not 1184.
    ReportSize {
        /// REPORT_SIZE.
        found: u32,
    },
    /// MSG_REPORT_RSP is shorter than its fields.
    ResponseTooShort {
        /// MSG_SIZE.
        len: usize,
    },
    /// The sequence number would leave 32 bits.
    SeqNoExhausted,
    /// The key copy was wiped by an earlier failure.
    KeyWiped,
    /// There is no earlier request to replay.
    NothingToReplay,
}

impl AttestError {
    /// The firmware status of a refusal, wherever it came from.
    pub fn refusal(&self) -> Option<u32> {
        match *self {
            Self::Transport(TransportError::Refused { status }) | Self::ReportStatus { status } => {
                Some(status)
            }
            _ => None,
        }
    }
}

/// How [`Session::send_tampered`] spoils a report request.
pub enum Tamper<'k> {
    /// Flip one bit of the first ciphertext byte after sealing.
    FlipCiphertext,
    /// Encrypt with this key while the header names the session's VMPCK.
    WrongKey(&'k Vmpck),
}

/// The private pages a message is sealed in and a response is opened in.
pub struct MessagePages {
    /// The sealed request.
    pub request: Page,
    /// The response, decrypted in place.
    pub response: Page,
}

impl MessagePages {
    /// Two zeroed pages.
    pub const fn new() -> Self {
        Self {
            request: [0; PAGE_SIZE],
            response: [0; PAGE_SIZE],
        }
    }
}

impl Default for MessagePages {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies VMPCK `index` out of the secrets page at `secrets_phys`; `None` if unreadable.
pub fn read_vmpck<M: PhysMem + ?Sized>(mem: &M, secrets_phys: u64, index: u8) -> Option<Vmpck> {
    if index > MAX_VMPCK {
        return None;
    }
    let mut key = Vmpck::zeroed();
    let at = secrets_phys + SECRETS_VMPCK0 + 32 * u64::from(index);
    mem.read(at, key.bytes_mut()).then_some(key)
}

/// MSG_REPORT_REQ for `report_data` at VMPL 0, KEY_SEL 0 (VLEK if installed, else VCEK).
pub fn report_request(report_data: &[u8; REPORT_DATA_LEN]) -> [u8; REPORT_REQ_SIZE] {
    let mut req = [0u8; REPORT_REQ_SIZE];
    req[..REPORT_DATA_LEN].copy_from_slice(report_data);
    // VMPL u32 @0x40 = 0 and KEY_SEL u32 @0x44 = 0: already zero, as the reserved tail.
    req
}

/// The report in a decrypted MSG_REPORT_RSP.
pub fn report_from_response(payload: &[u8]) -> Result<&[u8; REPORT_SIZE], AttestError> {
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(AttestError::ResponseTooShort { len: payload.len() })
    };
    let status = word(0)?;
    if status != 0 {
        return Err(AttestError::ReportStatus { status });
    }
    let size = word(4)?;
    if size as usize != REPORT_SIZE {
        return Err(AttestError::ReportSize { found: size });
    }
    payload
        .get(REPORT_RSP_REPORT..REPORT_RSP_REPORT + REPORT_SIZE)
        .and_then(|r| r.try_into().ok())
        .ok_or(AttestError::ResponseTooShort { len: payload.len() })
}

/// One VMPCK's conversation with the PSP.
pub struct Session {
    key: Vmpck,
    vmpck: u8,
    next_seqno: u64,
    wiped: bool,
    sent: bool,
}

impl Session {
    /// A session under `key`, VMPCK number `vmpck`, starting at sequence number 1.
    pub fn new(key: Vmpck, vmpck: u8) -> Self {
        Self {
            key,
            vmpck,
            next_seqno: 1,
            wiped: false,
            sent: false,
        }
    }

    /// The sequence number the next request will carry.
    pub fn next_seqno(&self) -> u64 {
        self.next_seqno
    }

    /// True once the key copy has been wiped.
    pub fn is_wiped(&self) -> bool {
        self.wiped
    }

    /// Wipes the key copy: no further request can be made.
    pub fn wipe(&mut self) {
        self.key.wipe();
        self.wiped = true;
    }

    /// Asks for a report with `report_data`: seals the request into `pages.request`,
    /// exchanges it and checks and decrypts the response in `pages.response`.
    pub fn request_report<'p, T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        report_data: &[u8; REPORT_DATA_LEN],
        pages: &'p mut MessagePages,
    ) -> Result<&'p [u8; REPORT_SIZE], AttestError> {
        let seqno = self.seal_request(report_data, None, pages)?;
        self.exchange(transport, pages)?;
        let expected = MsgHeader {
            seqno: seqno + 1,
            msg_type: MSG_REPORT_RSP,
            msg_version: MSG_REPORT_VERSION,
            vmpck: self.vmpck,
        };
        let result = guest_msg::open(&self.key, &expected, MAX_PAYLOAD, &mut pages.response)
            .map_err(AttestError::Message)
            .and_then(report_from_response);
        if result.is_err() {
            self.wipe();
        }
        result
    }

    /// Sends the request in `pages.request` once more, unchanged: a replay of the last
    /// request, which the firmware must refuse. `Ok(())`: the PSP accepted it.
    pub fn replay_last<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        pages: &mut MessagePages,
    ) -> Result<(), AttestError> {
        if !self.sent {
            return Err(AttestError::NothingToReplay);
        }
        self.exchange(transport, pages)
    }

    /// Sends a report request spoiled as `tamper` says, which the firmware must refuse.
    /// `Ok(())`: the PSP accepted it.
    pub fn send_tampered<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        report_data: &[u8; REPORT_DATA_LEN],
        tamper: Tamper<'_>,
        pages: &mut MessagePages,
    ) -> Result<(), AttestError> {
        match tamper {
            Tamper::FlipCiphertext => {
                self.seal_request(report_data, None, pages)?;
                pages.request[guest_msg::HEADER_SIZE] ^= 1;
            }
            Tamper::WrongKey(key) => {
                self.seal_request(report_data, Some(key), pages)?;
            }
        }
        self.exchange(transport, pages)
    }

    /// Seals MSG_REPORT_REQ with the next sequence number under the session's key, or
    /// `other_key` (the header still names the session's VMPCK); returns the number.
    fn seal_request(
        &mut self,
        report_data: &[u8; REPORT_DATA_LEN],
        other_key: Option<&Vmpck>,
        pages: &mut MessagePages,
    ) -> Result<u64, AttestError> {
        if self.wiped {
            return Err(AttestError::KeyWiped);
        }
        let seqno = self.next_seqno;
        if seqno + 1 > MAX_SEQNO {
            self.wipe();
            return Err(AttestError::SeqNoExhausted);
        }
        let header = MsgHeader {
            seqno,
            msg_type: MSG_REPORT_REQ,
            msg_version: MSG_REPORT_VERSION,
            vmpck: self.vmpck,
        };
        let key = other_key.unwrap_or(&self.key);
        if let Err(e) = guest_msg::seal(
            key,
            &header,
            &report_request(report_data),
            &mut pages.request,
        ) {
            self.wipe();
            return Err(AttestError::Message(e));
        }
        Ok(seqno)
    }

    /// Exchanges `pages.request` for `pages.response`. An exchange that reached the
    /// firmware (answered or refused) uses up two sequence numbers; any failure wipes
    /// the key.
    fn exchange<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        pages: &mut MessagePages,
    ) -> Result<(), AttestError> {
        pages.response.fill(0);
        let result = transport.exchange(&pages.request, &mut pages.response);
        if !matches!(result, Err(TransportError::Unavailable)) {
            self.next_seqno += 2;
            self.sent = true;
        }
        result.map_err(|e| {
            self.wipe();
            AttestError::Transport(e)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use aes_gcm::aead::AeadInOut;
    use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce, Tag};

    /// INVALID_PARAM, what the model PSP answers to a message it does not accept.
    const INVALID_PARAM: u32 = 0x16;

    /// A model of the PSP's guest-request handling, written from the spec offsets with
    /// `aes-gcm` directly (not with `guest_msg`), for VMPCK0 and VMPCK1.
    struct ModelPsp {
        keys: [[u8; 32]; 2],
        /// Last sequence number accepted per VMPCK.
        last: [u64; 2],
        /// Answer with this STATUS in MSG_REPORT_RSP.
        report_status: u32,
        /// Add this to the response sequence number (a broken PSP).
        seqno_skew: u64,
        requests: usize,
    }

    fn cipher(key: &[u8; 32]) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key))
    }

    fn iv(seqno: u64) -> Nonce<aes_gcm::aead::consts::U12> {
        let mut iv = [0u8; 12];
        iv[..8].copy_from_slice(&seqno.to_le_bytes());
        Nonce::from(iv)
    }

    impl ModelPsp {
        fn new() -> Self {
            Self {
                keys: [[0x11; 32], [0x22; 32]],
                last: [0; 2],
                report_status: 0,
                seqno_skew: 0,
                requests: 0,
            }
        }

        fn answer(&mut self, request: &Page, response: &mut Page) -> Result<(), u32> {
            let mut req = *request;
            let seqno = u64::from_le_bytes(req[0x20..0x28].try_into().unwrap());
            let vmpck = usize::from(req[0x3c]);
            let size = usize::from(u16::from_le_bytes([req[0x36], req[0x37]]));
            if req[0x30] != 1 || req[0x34] != 5 || vmpck > 1 || size != 96 {
                return Err(INVALID_PARAM);
            }
            if seqno != self.last[vmpck] + 1 {
                return Err(INVALID_PARAM);
            }
            let (head, body) = req.split_at_mut(0x60);
            let tag = Tag::try_from(&head[..16]).unwrap();
            cipher(&self.keys[vmpck])
                .decrypt_inout_detached(
                    &iv(seqno),
                    &head[0x30..0x60],
                    (&mut body[..96]).into(),
                    &tag,
                )
                .map_err(|_| INVALID_PARAM)?;
            // The report: REPORT_DATA at 0x50 as the firmware puts it, the rest a pattern.
            let mut rsp = vec![0u8; 0x20 + REPORT_SIZE];
            rsp[0..4].copy_from_slice(&self.report_status.to_le_bytes());
            rsp[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            for (i, b) in rsp[0x20..].iter_mut().enumerate() {
                *b = i as u8;
            }
            rsp[0x20 + 0x50..0x20 + 0x90].copy_from_slice(&body[..64]);
            let rsp_seqno = seqno + 1 + self.seqno_skew;
            response.fill(0);
            response[0x20..0x28].copy_from_slice(&rsp_seqno.to_le_bytes());
            response[0x30..0x38].copy_from_slice(&[1, 1, 0x60, 0, 6, 1, 0, 0]);
            response[0x36..0x38].copy_from_slice(&(rsp.len() as u16).to_le_bytes());
            response[0x3c] = vmpck as u8;
            response[0x60..0x60 + rsp.len()].copy_from_slice(&rsp);
            let (head, body) = response.split_at_mut(0x60);
            let tag = cipher(&self.keys[vmpck])
                .encrypt_inout_detached(
                    &iv(rsp_seqno),
                    &head[0x30..0x60],
                    (&mut body[..rsp.len()]).into(),
                )
                .unwrap();
            head[..16].copy_from_slice(&tag);
            self.last[vmpck] = seqno + 1;
            Ok(())
        }
    }

    impl Transport for ModelPsp {
        fn exchange(&mut self, request: &Page, response: &mut Page) -> Result<(), TransportError> {
            self.requests += 1;
            self.answer(request, response)
                .map_err(|status| TransportError::Refused { status })
        }
    }

    /// A VMM without a PSP.
    struct NoPsp;

    impl Transport for NoPsp {
        fn exchange(&mut self, _: &Page, _: &mut Page) -> Result<(), TransportError> {
            Err(TransportError::Unavailable)
        }
    }

    fn vmpck(byte: u8) -> Vmpck {
        let mut k = Vmpck::zeroed();
        k.bytes_mut().fill(byte);
        k
    }

    fn nonce() -> [u8; 64] {
        core::array::from_fn(|i| 0xa0 ^ i as u8)
    }

    #[test]
    fn report_round_trip_and_sequence_numbers() {
        let mut psp = ModelPsp::new();
        let mut session = Session::new(vmpck(0x11), 0);
        let mut pages = Box::new(MessagePages::new());
        assert_eq!(session.next_seqno(), 1);
        let report = *session
            .request_report(&mut psp, &nonce(), &mut pages)
            .unwrap();
        assert_eq!(report[0x50..0x90], nonce(), "REPORT_DATA is the nonce");
        assert_eq!(report[0], 0);
        assert_eq!(report[REPORT_SIZE - 1], (REPORT_SIZE - 1) as u8);
        assert_eq!(session.next_seqno(), 3);
        assert_eq!(psp.last[0], 2);
        // The request as sent: seqno 1, MSG_SIZE 96, VMPCK 0.
        assert_eq!(pages.request[0x20], 1);
        assert_eq!(pages.request[0x36], 96);
        let again = *session
            .request_report(&mut psp, &[0; 64], &mut pages)
            .unwrap();
        assert_eq!(again[0x50..0x90], [0; 64]);
        assert_eq!(session.next_seqno(), 5);
        assert_eq!(psp.last[0], 4);
        assert!(!session.is_wiped());
    }

    #[test]
    fn replay_is_refused_and_wipes_the_key() {
        let mut psp = ModelPsp::new();
        let mut session = Session::new(vmpck(0x11), 0);
        let mut pages = Box::new(MessagePages::new());
        assert_eq!(
            session.replay_last(&mut psp, &mut pages),
            Err(AttestError::NothingToReplay)
        );
        session
            .request_report(&mut psp, &nonce(), &mut pages)
            .unwrap();
        assert_eq!(
            session.replay_last(&mut psp, &mut pages),
            Err(AttestError::Transport(TransportError::Refused {
                status: INVALID_PARAM
            }))
        );
        assert_eq!(psp.requests, 2, "the replay reached the PSP");
        assert!(session.is_wiped());
        assert_eq!(
            session.request_report(&mut psp, &nonce(), &mut pages),
            Err(AttestError::KeyWiped)
        );
        assert_eq!(psp.requests, 2, "nothing is sent once the key is wiped");
    }

    #[test]
    fn forged_and_wrong_key_messages_are_refused() {
        let mut pages = Box::new(MessagePages::new());
        let mut psp = ModelPsp::new();
        let mut session = Session::new(vmpck(0x11), 0);
        let err = session
            .send_tampered(&mut psp, &nonce(), Tamper::FlipCiphertext, &mut pages)
            .unwrap_err();
        assert_eq!(err.refusal(), Some(INVALID_PARAM));
        assert!(session.is_wiped());

        let mut psp = ModelPsp::new();
        let mut session = Session::new(vmpck(0x11), 0);
        let wrong = vmpck(0x22);
        let err = session
            .send_tampered(&mut psp, &nonce(), Tamper::WrongKey(&wrong), &mut pages)
            .unwrap_err();
        assert_eq!(err.refusal(), Some(INVALID_PARAM));
        assert_eq!(pages.request[0x3c], 0, "the header names VMPCK0");

        // The model PSP does accept an untampered message of the same kind.
        let mut psp = ModelPsp::new();
        let mut session = Session::new(vmpck(0x22), 1);
        session
            .request_report(&mut psp, &nonce(), &mut pages)
            .unwrap();
    }

    #[test]
    fn a_bad_response_wipes_the_key() {
        let mut pages = Box::new(MessagePages::new());
        let mut psp = ModelPsp::new();
        psp.seqno_skew = 2;
        let mut session = Session::new(vmpck(0x11), 0);
        assert_eq!(
            session.request_report(&mut psp, &nonce(), &mut pages),
            Err(AttestError::Message(MsgError::SeqNo {
                expected: 2,
                found: 4
            }))
        );
        assert!(session.is_wiped());

        let mut psp = ModelPsp::new();
        psp.report_status = INVALID_PARAM;
        let mut session = Session::new(vmpck(0x11), 0);
        let err = session
            .request_report(&mut psp, &nonce(), &mut pages)
            .unwrap_err();
        assert_eq!(
            err,
            AttestError::ReportStatus {
                status: INVALID_PARAM
            }
        );
        assert_eq!(err.refusal(), Some(INVALID_PARAM));
        assert!(session.is_wiped());

        let mut session = Session::new(vmpck(0x11), 0);
        assert_eq!(
            session.request_report(&mut NoPsp, &nonce(), &mut pages),
            Err(AttestError::Transport(TransportError::Unavailable))
        );
        assert_eq!(session.next_seqno(), 1, "nothing reached the firmware");
        assert!(session.is_wiped());
    }

    #[test]
    fn sequence_numbers_stay_below_2_pow_32() {
        // Linux's limit: the request's number must be below 2^32 - 1, so that the
        // response's (one more) still fits 32 bits.
        let mut pages = Box::new(MessagePages::new());
        let mut psp = ModelPsp::new();
        psp.last[0] = MAX_SEQNO - 2;
        let mut session = Session::new(vmpck(0x11), 0);
        session.next_seqno = MAX_SEQNO - 1;
        session
            .request_report(&mut psp, &nonce(), &mut pages)
            .unwrap();
        assert_eq!(session.next_seqno(), MAX_SEQNO + 1);
        assert_eq!(
            session.request_report(&mut ModelPsp::new(), &nonce(), &mut pages),
            Err(AttestError::SeqNoExhausted)
        );
        assert!(session.is_wiped());
    }

    #[test]
    fn report_response_fields() {
        let mut rsp = vec![0u8; 0x20 + REPORT_SIZE];
        rsp[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
        assert!(report_from_response(&rsp).is_ok());
        assert_eq!(
            report_from_response(&rsp[..0x20 + REPORT_SIZE - 1]),
            Err(AttestError::ResponseTooShort {
                len: 0x20 + REPORT_SIZE - 1
            })
        );
        assert_eq!(
            report_from_response(&rsp[..3]),
            Err(AttestError::ResponseTooShort { len: 3 })
        );
        rsp[4] = 0;
        assert!(matches!(
            report_from_response(&rsp),
            Err(AttestError::ReportSize { .. })
        ));
        rsp[0] = 0x27;
        assert_eq!(
            report_from_response(&rsp[..8]),
            Err(AttestError::ReportStatus { status: 0x27 })
        );
    }

    #[test]
    fn request_layout_and_key_slots() {
        let req = report_request(&nonce());
        assert_eq!(req[..64], nonce());
        assert_eq!(&req[64..], &[0; 32], "VMPL 0, KEY_SEL 0, reserved");

        struct Secrets(Vec<u8>);
        impl PhysMem for Secrets {
            fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
                let at = addr as usize - 0x1000;
                buf.copy_from_slice(&self.0[at..at + buf.len()]);
                true
            }
        }
        let mut page = vec![0u8; 4096];
        page[0x20..0x40].fill(0x11);
        page[0x40..0x60].fill(0x22);
        page[0x80..0xa0].fill(0x44);
        let secrets = Secrets(page);
        let mut pages = Box::new(MessagePages::new());
        let key0 = read_vmpck(&secrets, 0x1000, 0).unwrap();
        assert!(!key0.is_empty());
        Session::new(key0, 0)
            .request_report(&mut ModelPsp::new(), &nonce(), &mut pages)
            .unwrap();
        let key1 = read_vmpck(&secrets, 0x1000, 1).unwrap();
        Session::new(key1, 1)
            .request_report(&mut ModelPsp::new(), &nonce(), &mut pages)
            .unwrap();
        assert!(read_vmpck(&secrets, 0x1000, 2).unwrap().is_empty());
        assert!(read_vmpck(&secrets, 0x1000, 4).is_none());
    }
}
