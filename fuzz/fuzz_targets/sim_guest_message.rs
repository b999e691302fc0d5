//! The simulated secure processor's guest-message handler (SNP_GUEST_REQUEST), as a guest
//! reaches it through the doorbell: structure-aware inputs build real AES-256-GCM messages
//! under the guest's VMPCKs (so the fuzzer gets past the tag check into header, sequence
//! number and MSG_REPORT_REQ handling and report signing), mixed with raw pages and
//! mutated ciphertext. Invariants: no panic; a refused message leaves the response page
//! untouched and the sequence counter where it was; an answered one advances it by two.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use arbitrary::Arbitrary;
use cloister_attestation::launch::digest::PageType;
use cloister_attestation::sim::{SimPsp, SimRoot};
use libfuzzer_sys::fuzz_target;

fn root() -> Arc<SimRoot> {
    static ROOT: OnceLock<Arc<SimRoot>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-root");
        Arc::new(SimRoot::load_or_create(&dir).expect("simulation root"))
    })
    .clone()
}

#[derive(Debug, Arbitrary)]
enum Message {
    /// A well-formed message under VMPCK `key`, with fuzzed header fields and payload.
    Sealed {
        key: u8,
        header_vmpck: u8,
        seqno_delta: i8,
        msg_type: u8,
        msg_version: u8,
        algo: u8,
        payload: Vec<u8>,
        flip: Option<u16>,
    },
    /// Any bytes at all.
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    policy_low: u16,
    messages: Vec<Message>,
}

fn seal(psp: &SimPsp, m: &Message) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    match m {
        Message::Raw(bytes) => {
            let n = bytes.len().min(4096);
            page[..n].copy_from_slice(&bytes[..n]);
        }
        Message::Sealed {
            key,
            header_vmpck,
            seqno_delta,
            msg_type,
            msg_version,
            algo,
            payload,
            flip,
        } => {
            let key = usize::from(key % 4);
            let vmpck = usize::from(header_vmpck % 5);
            let next = psp.next_seqno(vmpck.min(3)).unwrap_or(1);
            let seqno = next.wrapping_add_signed(i64::from(*seqno_delta % 3));
            let size = payload.len().min(4096 - 0x60);
            page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
            page[0x30] = if algo % 8 == 0 { 0 } else { 1 };
            page[0x31] = 1;
            page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
            page[0x34] = if msg_type % 4 == 0 { *msg_type } else { 5 };
            page[0x35] = if msg_version % 8 == 0 { *msg_version } else { 1 };
            page[0x36..0x38].copy_from_slice(&(size as u16).to_le_bytes());
            page[0x3c] = vmpck as u8;
            page[0x60..0x60 + size].copy_from_slice(&payload[..size]);
            let cipher = Aes256Gcm::new_from_slice(&psp.vmpcks()[key]).expect("32-byte key");
            let mut iv = [0u8; 12];
            iv[..8].copy_from_slice(&seqno.to_le_bytes());
            let (head, body) = page.split_at_mut(0x60);
            let aad = head[0x30..0x60].to_vec();
            if let Ok(tag) =
                cipher.encrypt_in_place_detached(Nonce::from_slice(&iv), &aad, &mut body[..size])
            {
                head[..16].copy_from_slice(&tag);
            }
            if let Some(at) = flip {
                page[usize::from(*at) % 4096] ^= 1;
            }
        }
    }
    page
}

fuzz_target!(|input: Input| {
    let mut psp = SimPsp::new(root());
    let policy = 0x3_0000 | u64::from(input.policy_low & 0xff);
    if psp.launch_start(policy, [0; 16]).is_err() {
        return;
    }
    let mut secrets = [0u8; 4096];
    let _ = psp.launch_update(0x5000, PageType::Secrets, &mut secrets);
    if psp.launch_finish(None, false, [0; 32]).is_err() {
        return;
    }
    for m in input.messages.iter().take(8) {
        let request = seal(&psp, m);
        let vmpck = usize::from(request[0x3c]).min(3);
        let before = psp.next_seqno(vmpck);
        let mut response = [0xa5u8; 4096];
        let status = psp.guest_request(&request, &mut response);
        if status.is_success() {
            assert_eq!(
                psp.next_seqno(vmpck),
                before.map(|s| s + 2),
                "an answered message advances the counter by two"
            );
        } else {
            assert!(
                response.iter().all(|&b| b == 0xa5),
                "a refused message leaves the response untouched"
            );
            assert_eq!(psp.next_seqno(vmpck), before, "a refusal does not advance");
        }
    }
});
