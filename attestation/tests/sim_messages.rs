//! The simulated PSP's guest-message checks, from the guest's side: sequence numbers
//! (replayed, stale, future), authentication (tag, ciphertext, header, key), header fields,
//! message types, and random bytes. A refused message leaves the response page and the
//! sequence number as they were.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod sim_common;

use cloister_attestation::launch::digest::PAGE_SIZE;
use cloister_attestation::sim::{FwStatus, SimPsp};
use sim_common::{launched, open_response, report_req, request, seal_in_place};

const REPORT_REQ: u8 = 5;

/// Sends `page` and checks it is refused with `status`, the response page untouched and
/// VMPCK0's counter unchanged.
fn refused(psp: &mut SimPsp, page: &[u8; PAGE_SIZE], status: FwStatus, what: &str) {
    let before = psp.next_seqno(0);
    let mut resp = [0xA5u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(page, &mut resp), status, "{what}");
    assert_eq!(
        resp, [0xA5; PAGE_SIZE],
        "{what}: the response page was written"
    );
    assert_eq!(
        psp.next_seqno(0),
        before,
        "{what}: the sequence number moved"
    );
}

fn exchange(psp: &mut SimPsp, vmpck: u8, seqno: u64) {
    let key = psp.vmpcks()[usize::from(vmpck)];
    let page = request(&key, vmpck, seqno, REPORT_REQ, &report_req([1; 64], 3));
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
    open_response(&key, &resp, seqno + 1);
}

#[test]
fn replayed_stale_and_future_sequence_numbers_are_refused() {
    let mut psp = launched(&[], [0; 32]);
    let key = psp.vmpcks()[0];
    assert_eq!(psp.next_seqno(0), Some(1));
    let first = request(&key, 0, 1, REPORT_REQ, &report_req([1; 64], 0));
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&first, &mut resp), FwStatus::SUCCESS);
    assert_eq!(psp.next_seqno(0), Some(3));
    // The same message again (a replay by the host), byte for byte.
    refused(&mut psp, &first, FwStatus::INVALID_PARAM, "replay");
    // The response's own number, and a number from the future.
    for seqno in [0, 2, 4, 5, 1 << 40, u64::MAX] {
        let page = request(&key, 0, seqno, REPORT_REQ, &report_req([1; 64], 0));
        refused(
            &mut psp,
            &page,
            FwStatus::INVALID_PARAM,
            &format!("seqno {seqno}"),
        );
    }
    // The exact next number still works, and then the previous one is stale.
    exchange(&mut psp, 0, 3);
    exchange(&mut psp, 0, 5);
    let stale = request(&key, 0, 3, REPORT_REQ, &report_req([1; 64], 0));
    refused(&mut psp, &stale, FwStatus::INVALID_PARAM, "stale");
    assert_eq!(psp.next_seqno(0), Some(7));
}

#[test]
fn each_vmpck_has_its_own_counter() {
    let mut psp = launched(&[], [0; 32]);
    exchange(&mut psp, 0, 1);
    exchange(&mut psp, 0, 3);
    exchange(&mut psp, 3, 1);
    exchange(&mut psp, 1, 1);
    assert_eq!(psp.next_seqno(0), Some(5));
    assert_eq!(psp.next_seqno(1), Some(3));
    assert_eq!(psp.next_seqno(2), Some(1));
    assert_eq!(psp.next_seqno(3), Some(3));
    assert_eq!(psp.next_seqno(4), None);
}

#[test]
fn altered_messages_are_refused() {
    let mut psp = launched(&[], [0; 32]);
    let key = psp.vmpcks()[0];
    let good = request(&key, 0, 1, REPORT_REQ, &report_req([1; 64], 0));
    let mut cases: Vec<(String, [u8; PAGE_SIZE])> = Vec::new();
    for at in [0, 7, 15] {
        let mut p = good;
        p[at] ^= 0x01;
        cases.push((format!("tag byte {at}"), p));
    }
    for at in [0x60, 0x60 + 0x40, 0x60 + 95] {
        let mut p = good;
        p[at] ^= 0x80;
        cases.push((format!("ciphertext byte {at:#x}"), p));
    }
    // Header fields inside the AAD that still pass the header checks: the tag fails.
    let mut p = good;
    p[0x34] = 7; // MSG_TYPE EXPORT_REQ
    cases.push(("MSG_TYPE changed".into(), p));
    let mut p = good;
    p[0x36] = 95; // MSG_SIZE 95
    cases.push(("MSG_SIZE changed".into(), p));
    // The ciphertext moved to another sequence number (the IV changes).
    let mut p = good;
    p[0x20] = 3;
    cases.push(("MSG_SEQNO changed".into(), p));
    // Wrong keys: VMPCK1's message labelled VMPCK0, a random key.
    let vmpck1 = psp.vmpcks()[1];
    cases.push((
        "encrypted with VMPCK1, MSG_VMPCK 0".into(),
        request(&vmpck1, 0, 1, REPORT_REQ, &report_req([1; 64], 0)),
    ));
    cases.push((
        "encrypted with a key the guest does not have".into(),
        request(&[0x42; 32], 0, 1, REPORT_REQ, &report_req([1; 64], 0)),
    ));
    cases.push((
        "encrypted with the all-zero key".into(),
        request(&[0; 32], 0, 1, REPORT_REQ, &report_req([1; 64], 0)),
    ));
    for (what, page) in &cases {
        refused(&mut psp, page, FwStatus::INVALID_PARAM, what);
    }
    // VMPCK0's message relabelled VMPCK1 (VMPCK1 also expects number 1): refused, and
    // VMPCK1's counter does not move either.
    let mut p = good;
    p[0x3C] = 1;
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&p, &mut resp), FwStatus::INVALID_PARAM);
    assert_eq!(psp.next_seqno(1), Some(1));
    // After all that, the genuine message is still the next one.
    assert_eq!(psp.guest_request(&good, &mut resp), FwStatus::SUCCESS);
    open_response(&key, &resp, 2);
}

#[test]
fn malformed_headers_are_refused() {
    let mut psp = launched(&[], [0; 32]);
    let key = psp.vmpcks()[0];
    let payload = report_req([1; 64], 0);
    // Each case sets header bytes and then seals with the right key, so only the header
    // check can refuse it.
    let cases: [(&str, usize, &[u8]); 12] = [
        ("ALGO 0", 0x30, &[0]),
        ("ALGO 2", 0x30, &[2]),
        ("HDR_VERSION 0", 0x31, &[0]),
        ("HDR_VERSION 2", 0x31, &[2]),
        ("HDR_SIZE 0x50", 0x32, &[0x50, 0]),
        ("HDR_SIZE 0x160", 0x32, &[0x60, 1]),
        ("MSG_VMPCK 4", 0x3C, &[4]),
        ("MSG_VMPCK 255", 0x3C, &[255]),
        ("reserved 0x28", 0x28, &[1]),
        ("reserved 0x3B", 0x3B, &[1]),
        ("reserved 0x3D", 0x3D, &[1]),
        ("reserved 0x5F", 0x5F, &[0x80]),
    ];
    for (what, at, bytes) in cases {
        let mut page = request(&key, 0, 1, REPORT_REQ, &payload);
        page[at..at + bytes.len()].copy_from_slice(bytes);
        seal_in_place(&key, &mut page, &payload);
        refused(&mut psp, &page, FwStatus::INVALID_PARAM, what);
    }
    for size in [0u16, 4001, 4096, u16::MAX] {
        let mut page = request(&key, 0, 1, REPORT_REQ, &payload);
        page[0x36..0x38].copy_from_slice(&size.to_le_bytes());
        refused(
            &mut psp,
            &page,
            FwStatus::INVALID_PARAM,
            &format!("MSG_SIZE {size}"),
        );
    }
    // The largest payload a page holds is accepted as a (long) report request.
    let mut long = payload.clone();
    long.resize(4000, 0);
    let page = request(&key, 0, 1, REPORT_REQ, &long);
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&page, &mut resp), FwStatus::SUCCESS);
}

#[test]
fn message_types_and_versions() {
    let mut psp = launched(&[], [0; 32]);
    let key = psp.vmpcks()[0];
    let payload = report_req([1; 64], 0);
    for (msg_type, status) in [
        (1, FwStatus::UNSUPPORTED),   // CPUID_REQ
        (3, FwStatus::UNSUPPORTED),   // KEY_REQ
        (17, FwStatus::UNSUPPORTED),  // TSC_INFO_REQ
        (0, FwStatus::INVALID_PARAM), // not a type
        (6, FwStatus::INVALID_PARAM), // a response type
        (19, FwStatus::INVALID_PARAM),
        (255, FwStatus::INVALID_PARAM),
    ] {
        let page = request(&key, 0, 1, msg_type, &payload);
        refused(&mut psp, &page, status, &format!("MSG_TYPE {msg_type}"));
    }
    for version in [0u8, 2, 255] {
        let mut page = request(&key, 0, 1, REPORT_REQ, &payload);
        page[0x35] = version;
        seal_in_place(&key, &mut page, &payload);
        refused(
            &mut psp,
            &page,
            FwStatus::INVALID_PARAM,
            &format!("MSG_VERSION {version}"),
        );
    }
}

/// xorshift64*: a small deterministic generator for the mutation loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_and_mutated_pages_never_panic_and_never_pass() {
    let mut psp = launched(&[], [0; 32]);
    let key = psp.vmpcks()[0];
    let good = request(&key, 0, 1, REPORT_REQ, &report_req([1; 64], 0));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut resp = [0u8; PAGE_SIZE];
    for round in 0..20_000 {
        let mut page = if round % 4 == 0 {
            let mut p = [0u8; PAGE_SIZE];
            for b in p.iter_mut().take(0x60 + rng.below(0x200)) {
                *b = rng.next() as u8;
            }
            p
        } else {
            let mut p = good;
            for _ in 0..1 + rng.below(4) {
                // Mostly the header and the first bytes of the payload.
                let at = if rng.below(4) == 0 {
                    rng.below(PAGE_SIZE)
                } else {
                    rng.below(0x60 + 96)
                };
                p[at] ^= 1 << rng.below(8);
            }
            p
        };
        if round % 7 == 0 {
            // Plausible headers with random sizes and key numbers.
            page[0x30] = 1;
            page[0x31] = 1;
            page[0x32] = 0x60;
            page[0x33] = 0;
            page[0x36..0x38].copy_from_slice(&(rng.next() as u16).to_le_bytes());
            page[0x3C] = rng.below(6) as u8;
        }
        // Bytes outside the message (AUTHTAG[16..32], the page after the payload) are not
        // part of it: a page that differs only there is the genuine message.
        let same_message =
            page[..16] == good[..16] && page[0x20..0x60 + 96] == good[0x20..0x60 + 96];
        if same_message {
            continue;
        }
        let status = psp.guest_request(&page, &mut resp);
        assert_ne!(
            status,
            FwStatus::SUCCESS,
            "round {round}: a mutated message passed"
        );
        assert_eq!(psp.next_seqno(0), Some(1));
    }
    assert_eq!(psp.guest_request(&good, &mut resp), FwStatus::SUCCESS);
}
