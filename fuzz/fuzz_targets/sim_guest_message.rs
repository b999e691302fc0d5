//! The simulated secure processor's guest-message handler (SNP_GUEST_REQUEST), as a guest
//! reaches it through the doorbell.
//!
//! Input: `[policy low byte][message]...` (at most 8 messages). A message is
//! `[kind][key][seqno delta][header: 8 bytes][flip: u16][payload: u16-prefixed]`: an even
//! `kind` seals the payload with VMPCK[`key` % 4] under the header (so the fuzzer gets past
//! the tag check into header, sequence number and MSG_REPORT_REQ handling and report
//! signing); `flip` (when not 0) flips one bit of the sealed page; an odd `kind` sends the
//! payload bytes as the page. Seeds: the test guest's own requests (MSG_REPORT_REQ,
//! version 1, VMPCK 0, sequence numbers 1, 3, ...), and the same with other keys, VMPLs and
//! KEY_SELs.
//!
//! Asserted: no panic; a refused message leaves the response page untouched and the
//! sequence counter where it was; an answered one advances it by two, and its response
//! opens under the VMPCK the request named, with the right header; a report in it
//! carries the request's REPORT_DATA and VMPL, the launch digest and policy, and passes
//! every check of `cloister verify` under the simulation root.
#![no_main]

use cloister_attestation::launch::digest::PageType;
use cloister_attestation::sim::SimPsp;
use cloister_fuzz::guest_msg::{self, Header};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::{fixtures, Seeds};
use libfuzzer_sys::fuzz_target;

struct Message<'a> {
    sealed: bool,
    key: u8,
    seqno_delta: i8,
    header: Header,
    flip: u16,
    payload: &'a [u8],
}

fn read_message<'a>(r: &mut Reader<'a>) -> Message<'a> {
    Message {
        sealed: r.u8().is_multiple_of(2),
        key: r.u8(),
        seqno_delta: r.u8() as i8,
        header: Header::read(r),
        flip: r.u16(),
        payload: r.blob(),
    }
}

fn write_message(w: &mut Writer, m: &Message) {
    w.u8(u8::from(!m.sealed)).u8(m.key).u8(m.seqno_delta as u8);
    m.header.write(w);
    w.u16(m.flip).blob(m.payload);
}

fn page_of(psp: &SimPsp, m: &Message) -> [u8; 4096] {
    if !m.sealed {
        let mut page = [0u8; 4096];
        let n = m.payload.len().min(4096);
        page[..n].copy_from_slice(&m.payload[..n]);
        return page;
    }
    let named = usize::from(m.header.vmpck).min(3);
    let next = psp.next_seqno(named).unwrap_or(1);
    let seqno = next.wrapping_add_signed(i64::from(m.seqno_delta));
    let key = psp.vmpcks()[usize::from(m.key % 4)];
    let mut page = guest_msg::seal(&key, seqno, &m.header, m.payload);
    if m.flip != 0 {
        let bit = usize::from(m.flip - 1) % (4096 * 8);
        page[bit / 8] ^= 1 << (bit % 8);
    }
    page
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let policy = 0x3_0000 | u64::from(r.u8());
    let mut psp = SimPsp::new(fixtures::sim_root());
    if psp.launch_start(policy, [0; 16]).is_err() {
        return;
    }
    let mut secrets = [0u8; 4096];
    let _ = psp.launch_update(0x5000, PageType::Secrets, &mut secrets);
    if psp.launch_finish(None, false, [0; 32]).is_err() {
        return;
    }
    let mut verified_one = false;
    for _ in 0..8 {
        if r.is_empty() {
            break;
        }
        let m = read_message(&mut r);
        let request = page_of(&psp, &m);
        let vmpck = request[0x3c];
        let counter = usize::from(vmpck).min(3);
        let before = psp.next_seqno(counter);
        let mut response = [0xa5u8; 4096];
        let status = psp.guest_request(&request, &mut response);
        if status.is_success() {
            assert!(vmpck <= 3);
            assert_eq!(
                psp.next_seqno(counter),
                before.map(|s| s + 2),
                "an answered message advances the counter by two"
            );
            let seqno = u64::from_le_bytes(request[0x20..0x28].try_into().expect("8 bytes"));
            let key = psp.vmpcks()[counter];
            if request[0x34] == guest_msg::MSG_REPORT_REQ && !verified_one {
                verified_one = true;
                let payload = guest_msg::open(&key, &request).expect("an answered request opens").payload;
                guest_msg::check_report_response(
                    &fixtures::sim_root(),
                    &key,
                    &response,
                    vmpck,
                    seqno,
                    &payload,
                    &psp.measurement(),
                    policy,
                );
            } else {
                assert!(guest_msg::open(&key, &response).is_some(), "a response opens");
            }
        } else {
            assert!(
                response.iter().all(|&b| b == 0xa5),
                "a refused message leaves the response untouched"
            );
            assert_eq!(psp.next_seqno(counter), before, "a refusal does not advance");
        }
    }
});

fn warm_up() {
    let _ = fixtures::sim_root();
}

fn seeds(out: &mut Seeds) {
    let guest = Header::default();
    let report_data: [u8; 64] = core::array::from_fn(|i| i as u8);
    let request = guest_msg::report_request(&report_data);
    let message = |header: Header, key: u8, payload: &[u8]| -> Vec<u8> {
        let mut w = Writer::new();
        write_message(
            &mut w,
            &Message {
                sealed: true,
                key,
                seqno_delta: 0,
                header,
                flip: 0,
                payload,
            },
        );
        w.finish()
    };
    // The test guest: one report request, then a second one (sequence numbers 1 and 3).
    let one = message(guest, 0, &request);
    out.add(
        "test-guest-report",
        &Writer::new().u8(0).bytes(&one).finish(),
    );
    out.add(
        "test-guest-two-reports",
        &Writer::new().u8(0).bytes(&one).bytes(&one).finish(),
    );
    // Other VMPCKs (VMPL at least the key index), KEY_SEL 1 and 2, a VLEK request.
    for vmpck in 1..4u8 {
        let mut req = request;
        req[0x40] = vmpck;
        let h = Header { vmpck, ..guest };
        out.add(
            &format!("vmpck{vmpck}"),
            &Writer::new().u8(0).bytes(&message(h, vmpck, &req)).finish(),
        );
    }
    for key_sel in 1..3u8 {
        let mut req = request;
        req[0x44] = key_sel;
        out.add(
            &format!("key-sel{key_sel}"),
            &Writer::new().u8(0).bytes(&message(guest, 0, &req)).finish(),
        );
    }
    // A message type the simulator does not implement, a replay, and a raw page.
    let key_req = Header {
        msg_type: 3,
        ..guest
    };
    out.add(
        "key-request",
        &Writer::new()
            .u8(0)
            .bytes(&message(key_req, 0, &[0u8; 32]))
            .finish(),
    );
    let mut replay = Writer::new();
    replay.u8(0).bytes(&one);
    write_message(
        &mut replay,
        &Message {
            sealed: true,
            key: 0,
            seqno_delta: -2,
            header: guest,
            flip: 0,
            payload: &request,
        },
    );
    out.add("replay", &replay.finish());
    let raw = guest_msg::seal(&[0; 32], 1, &guest, &request);
    let mut w = Writer::new();
    w.u8(0);
    write_message(
        &mut w,
        &Message {
            sealed: false,
            key: 0,
            seqno_delta: 0,
            header: guest,
            flip: 0,
            payload: &raw,
        },
    );
    out.add("raw-page", &w.finish());
}
