//! Shared by the attestation/tests/sim_*.rs tests: simulation roots kept under the target
//! directory (RSA-4096 key generation runs once per build tree), and the guest side of the
//! guest-message protocol written from SNP-FACTS §5.4-5.5 with the aes-gcm crate,
//! independently of `attestation::sim::message`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::report::Generation;
use cloister_attestation::sim::{SimPsp, SimRoot};

/// target/<profile>: the test binary is target/<profile>/deps/<name>.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

/// The Genoa root shared with the unit tests.
pub fn root() -> Arc<SimRoot> {
    root_of(Generation::Genoa)
}

/// A root of `generation`, made once per build tree.
pub fn root_of(generation: Generation) -> Arc<SimRoot> {
    type Roots = Vec<(Generation, Arc<SimRoot>)>;
    static ROOTS: OnceLock<Mutex<Roots>> = OnceLock::new();
    let mut roots = ROOTS.get_or_init(Default::default).lock().unwrap();
    if let Some((_, r)) = roots.iter().find(|(g, _)| *g == generation) {
        return r.clone();
    }
    let dir = match generation {
        Generation::Genoa => profile_dir().join("cloister-sim-root-for-tests"),
        g => profile_dir().join(format!("cloister-sim-root-for-tests-{}", g.name())),
    };
    let root = Arc::new(SimRoot::load_or_create_for(&dir, generation).unwrap());
    roots.push((generation, root.clone()));
    root
}

/// A PSP of `root` after LAUNCH_START (policy 0x30000), `pages` and one VMSA, and
/// LAUNCH_FINISH with `host_data`.
pub fn launched_with(
    root: Arc<SimRoot>,
    pages: &[(u64, PageType, [u8; PAGE_SIZE])],
    host_data: [u8; 32],
) -> SimPsp {
    let mut psp = SimPsp::new(root);
    psp.launch_start(0x3_0000, [0; 16]).unwrap();
    for (gpa, t, page) in pages {
        let mut p = *page;
        psp.launch_update(*gpa, *t, &mut p).unwrap();
    }
    psp.launch_update_vmsa(&[0x5a; PAGE_SIZE]).unwrap();
    psp.launch_finish(None, false, host_data).unwrap();
    psp
}

/// [`launched_with`] on the Genoa root.
pub fn launched(pages: &[(u64, PageType, [u8; PAGE_SIZE])], host_data: [u8; 32]) -> SimPsp {
    launched_with(root(), pages, host_data)
}

/// A guest message: header (ALGO 1, HDR_VERSION 1, HDR_SIZE 0x60, MSG_VERSION 1) and the
/// payload encrypted with `key` (IV = seqno little-endian in 8 of 12 bytes, AAD = header
/// bytes 0x30..0x60, tag in AUTHTAG[0..16]).
pub fn request(
    key: &[u8; 32],
    vmpck: u8,
    seqno: u64,
    msg_type: u8,
    payload: &[u8],
) -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    page[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
    page[0x30] = 1;
    page[0x31] = 1;
    page[0x32..0x34].copy_from_slice(&0x60u16.to_le_bytes());
    page[0x34] = msg_type;
    page[0x35] = 1;
    page[0x36..0x38].copy_from_slice(&(payload.len() as u16).to_le_bytes());
    page[0x3C] = vmpck;
    seal_in_place(key, &mut page, payload);
    page
}

/// Encrypts `payload` into `page` with the page's header as it stands (for tests that set
/// odd header values and still want a valid tag).
pub fn seal_in_place(key: &[u8; 32], page: &mut [u8; PAGE_SIZE], payload: &[u8]) {
    let seqno = u64::from_le_bytes(page[0x20..0x28].try_into().unwrap());
    let mut body = payload.to_vec();
    let tag = Aes256Gcm::new_from_slice(key)
        .unwrap()
        .encrypt_in_place_detached(&Nonce::from(iv(seqno)), &page[0x30..0x60], &mut body)
        .unwrap();
    page[..16].copy_from_slice(&tag);
    page[0x60..0x60 + body.len()].copy_from_slice(&body);
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// MSG_REPORT_REQ: REPORT_DATA, VMPL, KEY_SEL 0, reserved.
pub fn report_req(report_data: [u8; 64], vmpl: u32) -> Vec<u8> {
    let mut r = vec![0u8; 96];
    r[..64].copy_from_slice(&report_data);
    r[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
    r
}

/// Checks a response as Linux's guest driver does (sequence number, MSG_REPORT_RSP, tag)
/// and returns the decrypted payload.
pub fn open_response(key: &[u8; 32], page: &[u8; PAGE_SIZE], seqno: u64) -> Vec<u8> {
    assert_eq!(
        u64::from_le_bytes(page[0x20..0x28].try_into().unwrap()),
        seqno,
        "response MSG_SEQNO"
    );
    assert_eq!(page[0x34], 6, "MSG_REPORT_RSP");
    assert_eq!(page[0x35], 1, "MSG_VERSION");
    let size = u16::from_le_bytes([page[0x36], page[0x37]]) as usize;
    let mut body = page[0x60..0x60 + size].to_vec();
    let tag: [u8; 16] = page[..16].try_into().unwrap();
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt_in_place_detached(
            &Nonce::from(iv(seqno)),
            &page[0x30..0x60],
            &mut body,
            &Tag::from(tag),
        )
        .expect("the response authenticates");
    body
}

/// Asks `psp` for a report with VMPCK0 and sequence number `seqno`; returns the 1184
/// report bytes.
pub fn get_report(psp: &mut SimPsp, seqno: u64, report_data: [u8; 64]) -> Vec<u8> {
    let key = psp.vmpcks()[0];
    let page = request(&key, 0, seqno, 5, &report_req(report_data, 0));
    let mut resp = [0u8; PAGE_SIZE];
    assert_eq!(psp.guest_request(&page, &mut resp).code(), 0);
    let body = open_response(&key, &resp, seqno + 1);
    assert_eq!(&body[..4], &[0; 4], "STATUS");
    body[0x20..0x20 + 1184].to_vec()
}
