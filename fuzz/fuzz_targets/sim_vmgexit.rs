//! The simulated VMGEXIT (`cloister_vmm::devices::sim_vmgexit::SimVmgexit`): a guest of
//! `--platform sim` writes its GHCB's address to the doorbell port, and the device handles
//! the exit the GHCB names (IOIO on the port bus, SNP guest request, extended guest
//! request with the certificate table), over guest memory the fuzzer writes.
//!
//! The rig is the builder's: the device on a port bus at its own port, behind a mutex,
//! a recording device on every other port, a launched simulated PSP, 176 KiB of guest
//! memory in two regions with a hole between them (0..0x28000, 0x30000..0x34000).
//!
//! Input: `[certificate table][operation]...` (at most 8 operations):
//! - 0, GHCB exit: `[page][misalign][valid mask][usage: u32][exit code: u64][rax: u64]
//!   [rbx: u64][info1: u64][info2: u64][doorbell]`: the fields marked valid are written into
//!   the GHCB at `page * 4096 + misalign`, and its address rung with a 4-byte write
//!   (`doorbell` 0) or a malformed one;
//! - 1, request page: `[page][key][seqno delta][header: 8][payload: u16-prefixed]`: a guest
//!   message sealed under the PSP's VMPCK `key` written at `page * 4096`;
//! - 2, raw bytes: `[address: u32][bytes: u16-prefixed]` written into guest memory;
//! - 3, doorbell write of 1 to 4 bytes at any offset of the doorbell.
//!
//! Seeds: the test guest's extended report request (the doorbell, the GHCB fields and the
//! sealed MSG_REPORT_REQ it sends), with and without room for the certificates; its serial
//! output through IOIO; refused exits.
//!
//! Asserted after every operation: no panic, no deadlock (an IOIO that reached the
//! doorbell's own port would lock it twice); nothing in guest memory changes but the GHCB's
//! save area (its first 0x400 bytes), the response page and the certificate buffer, and
//! nothing at all when the doorbell write is not a VMGEXIT; every served exit leaves
//! SW_EXITINFO1 0 or 2 and valid; an error (2) changes only SW_EXITINFO1/2 and touches no
//! port, response or PSP; an IOIO makes exactly the access it names (never at the
//! doorbell), puts IN data in RAX's low bytes and keeps the rest; a guest request answered
//! with success writes a response that opens under the VMPCK and advances the sequence
//! number by two, with a report that verifies under the simulation root; a refused one,
//! or one whose certificate buffer is too small (RBX then says how many pages), writes no
//! response and leaves the PSP as it was; a delivered certificate table is the table.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use cloister_attestation::certs::CertBundle;
use cloister_attestation::launch::digest::PageType;
use cloister_attestation::sim::SimPsp;
use cloister_fuzz::guest_msg::{self, Header};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::{fixtures, Seeds};
use cloister_vmm::boot::layout::GUEST_REQUEST_PORT;
use cloister_vmm::devices::bus::{Bus, BusDevice};
use cloister_vmm::devices::sim_vmgexit::SimVmgexit;
use cloister_vmm::memory::GuestMemoryMmap;
use cloister_vmm::snp::certs::CertTable;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const RAX: usize = 0x1F8;
const RBX: usize = 0x318;
const SW_EXITCODE: usize = 0x390;
const SW_EXITINFO1: usize = 0x398;
const SW_EXITINFO2: usize = 0x3A0;
const VALID_BITMAP: usize = 0x3F0;
const USAGE: usize = 0xFFC;
const EXIT_IOIO: u64 = 0x7B;
const EXIT_GUEST_REQUEST: u64 = 0x8000_0011;
const EXIT_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
const POLICY: u64 = 0x3_0000;
/// Guest RAM: two regions with a hole, so buffers can straddle the end of RAM.
const RAM: [(u64, usize); 2] = [(0, 0x2_8000), (0x3_0000, 0x4000)];
const DOORBELL: std::ops::Range<u64> = GUEST_REQUEST_PORT..GUEST_REQUEST_PORT + 4;

/// Every port access the bus routes to a device other than the doorbell.
#[derive(Default)]
struct Ports {
    accesses: Vec<(u64, bool, Vec<u8>)>,
}

/// A device recording accesses; reads return `0x40 + port offset + byte index`.
struct Recorder {
    base: u64,
    ports: Arc<Mutex<Ports>>,
}

impl BusDevice for Recorder {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0x40u8.wrapping_add(offset as u8).wrapping_add(i as u8);
        }
        let port = self.base + offset;
        lock(&self.ports)
            .accesses
            .push((port, false, data.to_vec()));
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        let port = self.base + offset;
        lock(&self.ports).accesses.push((port, true, data.to_vec()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The certificate tables a guest may be served: none, AMD's Milan chain and VCEK from the
/// vectors, the simulation root's.
fn tables() -> &'static [Arc<CertTable>] {
    static TABLES: OnceLock<Vec<Arc<CertTable>>> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut out = vec![Arc::new(CertTable::empty())];
        let dir = fixtures::vectors_dir().join("milan-v2-vcek");
        let mut bundle = CertBundle::default();
        if bundle.add_file(&dir.join("chain.pem")).is_ok()
            && bundle.add_file(&dir.join("vek.der")).is_ok()
        {
            out.push(Arc::new(CertTable::from_bundle(&bundle)));
        }
        out.push(Arc::new(CertTable::from_bundle(
            &fixtures::sim_root().cert_bundle(),
        )));
        out
    })
}

struct Rig {
    bus: Arc<Bus>,
    mem: GuestMemoryMmap,
    psp: Arc<Mutex<SimPsp>>,
    ports: Arc<Mutex<Ports>>,
    table: Arc<CertTable>,
}

fn rig(table: Arc<CertTable>) -> Option<Rig> {
    let regions: Vec<(GuestAddress, usize)> =
        RAM.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    let mem = GuestMemoryMmap::from_ranges(&regions).ok()?;
    let mut psp = SimPsp::new(fixtures::sim_root());
    psp.launch_start(POLICY, [0; 16]).ok()?;
    let mut secrets = [0u8; 4096];
    psp.launch_update(0x5000, PageType::Secrets, &mut secrets)
        .ok()?;
    psp.launch_finish(None, false, [0; 32]).ok()?;
    let psp = Arc::new(Mutex::new(psp));
    let (device, handle) = SimVmgexit::new(psp.clone(), mem.clone(), table.clone(), DOORBELL);
    let ports = Arc::new(Mutex::new(Ports::default()));
    let mut bus = Bus::new();
    bus.insert(Arc::new(Mutex::new(device)), DOORBELL.start, 4)
        .ok()?;
    for (base, len) in [(0, DOORBELL.start), (DOORBELL.end, 0x1_0000 - DOORBELL.end)] {
        let recorder = Recorder {
            base,
            ports: ports.clone(),
        };
        bus.insert(Arc::new(Mutex::new(recorder)), base, len).ok()?;
    }
    let bus = Arc::new(bus);
    handle.set(Arc::downgrade(&bus)).ok()?;
    Some(Rig {
        bus,
        mem,
        psp,
        ports,
        table,
    })
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    RAM.iter()
        .map(|&(a, l)| {
            let mut v = vec![0u8; l];
            mem.read_slice(&mut v, GuestAddress(a)).expect("RAM reads");
            v
        })
        .collect()
}

/// The guest-physical addresses whose bytes differ between two snapshots.
fn changed(before: &[Vec<u8>], after: &[Vec<u8>]) -> Vec<u64> {
    let mut out = Vec::new();
    for ((&(base, _), b), a) in RAM.iter().zip(before).zip(after) {
        out.extend(
            cloister_fuzz::differences(b, a)
                .into_iter()
                .map(|i| base + i as u64),
        );
    }
    out
}

fn in_ram(gpa: u64, len: u64) -> bool {
    RAM.iter()
        .any(|&(a, l)| gpa >= a && gpa.checked_add(len).is_some_and(|e| e <= a + l as u64))
}

fn read_page(mem: &GuestMemoryMmap, gpa: u64) -> Option<[u8; 4096]> {
    let mut page = [0u8; 4096];
    mem.read_slice(&mut page, GuestAddress(gpa))
        .ok()
        .map(|()| page)
}

fn field(g: &[u8; 4096], at: usize) -> Option<u64> {
    let bit = at / 8;
    let valid = g[VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0;
    valid.then(|| u64::from_le_bytes(g[at..at + 8].try_into().expect("8 bytes")))
}

struct Exit {
    gpa: u64,
    doorbell: u8,
}

/// Writes the GHCB an exit operation describes; returns where it is and how it is rung.
fn write_ghcb(rig: &Rig, r: &mut Reader) -> Exit {
    let gpa = u64::from(r.u8()) * 4096 + u64::from(r.u8() & 0xf);
    let valid = r.u8();
    let usage = r.u32();
    let (code, rax, rbx, info1, info2) = (r.u64(), r.u64(), r.u64(), r.u64(), r.u64());
    let doorbell = r.u8();
    let fields = [
        (RAX, rax),
        (RBX, rbx),
        (SW_EXITCODE, code),
        (SW_EXITINFO1, info1),
        (SW_EXITINFO2, info2),
    ];
    let mut g = read_page(&rig.mem, gpa & !0xfff).unwrap_or([0; 4096]);
    g[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    for (bit, (at, value)) in fields.into_iter().enumerate() {
        if valid & (1 << bit) != 0 {
            g[at..at + 8].copy_from_slice(&value.to_le_bytes());
            let b = at / 8;
            g[VALID_BITMAP + b / 8] |= 1 << (b % 8);
        }
    }
    g[USAGE..].copy_from_slice(&usage.to_le_bytes());
    if gpa % 4096 == 0 {
        let _ = rig.mem.write_slice(&g, GuestAddress(gpa));
    }
    Exit { gpa, doorbell }
}

/// Rings the doorbell for `exit` and checks everything the exit may and may not do.
fn ring(rig: &Rig, exit: &Exit, verified: &mut bool) {
    let gpa = exit.gpa;
    let before = snapshot(&rig.mem);
    let ghcb_before = read_page(&rig.mem, gpa);
    let seqnos: Vec<Option<u64>> = (0..4).map(|i| lock(&rig.psp).next_seqno(i)).collect();
    let measurement = lock(&rig.psp).measurement();
    lock(&rig.ports).accesses.clear();

    let address = (gpa as u32).to_le_bytes();
    let is_vmgexit = exit.doorbell.is_multiple_of(4) && gpa <= u64::from(u32::MAX);
    match exit.doorbell % 4 {
        0 => rig.bus.write(DOORBELL.start, &address),
        1 => rig.bus.write(DOORBELL.start, &address[..2]),
        2 => rig.bus.write(DOORBELL.start + 1, &address[..1]),
        _ => rig.bus.write(DOORBELL.start, &address[..1]),
    };

    let after = snapshot(&rig.mem);
    let diff = changed(&before, &after);
    let ports: Vec<_> = std::mem::take(&mut lock(&rig.ports).accesses);
    let served = is_vmgexit && gpa.is_multiple_of(4096) && ghcb_before.is_some();
    let Some(g0) = ghcb_before.filter(|_| served) else {
        assert!(
            diff.is_empty(),
            "memory changed without a VMGEXIT at {:#x}",
            diff[0]
        );
        assert!(ports.is_empty());
        return;
    };
    let g1 = read_page(&rig.mem, gpa).expect("the GHCB page is RAM");
    let info1 = field(&g1, SW_EXITINFO1).expect("SW_EXITINFO1 is valid after an exit");
    let info2 = field(&g1, SW_EXITINFO2).expect("SW_EXITINFO2 is valid after an exit");
    let psp_unchanged = || {
        let now: Vec<Option<u64>> = (0..4).map(|i| lock(&rig.psp).next_seqno(i)).collect();
        assert_eq!(now, seqnos, "the PSP's sequence numbers moved");
    };

    // What the exit asked for, and the memory it may write besides the save area.
    let usage = u32::from_le_bytes(g0[USAGE..].try_into().expect("4 bytes"));
    let code = field(&g0, SW_EXITCODE);
    let (request_gpa, response_gpa) = (
        field(&g0, SW_EXITINFO1).unwrap_or(0),
        field(&g0, SW_EXITINFO2).unwrap_or(0),
    );
    let guest_request = matches!(code, Some(EXIT_GUEST_REQUEST | EXIT_EXT_GUEST_REQUEST));
    let certs = (code == Some(EXIT_EXT_GUEST_REQUEST))
        .then(|| (field(&g0, RAX).unwrap_or(0), field(&g0, RBX).unwrap_or(0)));
    let table_len = rig.table.bytes().len() as u64;
    let save_area = gpa..gpa + 0x400;
    let response = response_gpa..response_gpa.saturating_add(4096);
    let cert_buffer = certs.map_or(0..0, |(c, _)| c..c.saturating_add(table_len));
    let may_write = |a: u64| {
        save_area.contains(&a)
            || (guest_request && (response.contains(&a) || cert_buffer.contains(&a)))
    };
    if let Some(a) = diff.iter().find(|&&a| !may_write(a)) {
        panic!("exit {code:x?} changed {a:#x}, outside the GHCB save area and its buffers");
    }
    // Buffers the guest laid over each other or over the GHCB are its own business: the
    // save area is written back last, over them.
    let overlaps = |r: &std::ops::Range<u64>| r.start < save_area.end && save_area.start < r.end;
    let response_intact = !overlaps(&response);
    let certs_intact = !overlaps(&cert_buffer)
        && (cert_buffer.start >= response.end || response.start >= cert_buffer.end);

    match info1 {
        2 => {
            // An error: only SW_EXITINFO1/2 (and their valid bits) change.
            for a in &diff {
                let off = (a - gpa) as usize;
                assert!(
                    (SW_EXITINFO1..SW_EXITINFO2 + 8).contains(&off)
                        || (VALID_BITMAP..VALID_BITMAP + 16).contains(&off),
                    "an error exit changed {a:#x}"
                );
            }
            assert!(ports.is_empty());
            psp_unchanged();
            if usage != 0 {
                assert_eq!(info2, 2, "invalid usage");
            }
        }
        0 if code == Some(EXIT_IOIO) => {
            assert_eq!(usage, 0);
            check_ioio(
                &g0,
                &g1,
                field(&g0, SW_EXITINFO1).unwrap_or(0),
                &ports,
                &diff,
                gpa,
            );
        }
        0 if guest_request => {
            assert_eq!(usage, 0);
            assert!(ports.is_empty());
            if info2 == 0 {
                // Answered: the response page holds the PSP's message.
                // The request as the device read it (the response may be written over it).
                let request = before_page(&before, request_gpa);
                let vmpck = request[0x3c];
                let counter = usize::from(vmpck);
                assert_eq!(
                    lock(&rig.psp).next_seqno(counter),
                    seqnos[counter].map(|s| s + 2)
                );
                let key = lock(&rig.psp).vmpcks()[counter];
                let seqno = u64::from_le_bytes(request[0x20..0x28].try_into().expect("8 bytes"));
                let reported = request[0x34] == guest_msg::MSG_REPORT_REQ;
                if response_intact && reported && !*verified {
                    *verified = true;
                    let sent = read_page(&rig.mem, response_gpa).expect("the response page is RAM");
                    let payload = guest_msg::open(&key, &request)
                        .expect("an answered request opens")
                        .payload;
                    guest_msg::check_report_response(
                        &fixtures::sim_root(),
                        &key,
                        &sent,
                        vmpck,
                        seqno,
                        &payload,
                        &measurement,
                        POLICY,
                    );
                }
                if let (Some((c, _)), true, true) = (certs, reported, certs_intact) {
                    let mut written = vec![0u8; table_len as usize];
                    rig.mem
                        .read_slice(&mut written, GuestAddress(c))
                        .expect("the delivered table is in RAM");
                    assert!(
                        written == rig.table.bytes(),
                        "the certificate table as delivered"
                    );
                }
            } else if info2 >> 32 == 1 {
                // The certificate buffer is too small: RBX says how many pages.
                let (_, pages) = certs.expect("only an extended request has a certificate buffer");
                assert!(pages < rig.table.pages());
                assert_eq!(field(&g1, RBX), Some(rig.table.pages()));
                assert!(diff.iter().all(|a| save_area.contains(a)));
                psp_unchanged();
            } else {
                // Refused by the VMM or the PSP: no response. The PSP is as it was, except
                // when it answered but the response page is not RAM (as on KVM, the answer
                // is then lost and so is the sequence number).
                assert!(
                    !diff.iter().any(|a| response.contains(a)
                        && !save_area.contains(a)
                        && !cert_buffer.contains(a)),
                    "a refused request wrote a response"
                );
                if info2 >> 32 == 0 || in_ram(response_gpa, 4096) {
                    psp_unchanged();
                }
            }
        }
        other => panic!("SW_EXITINFO1 is {other} after exit {code:x?}"),
    }
}

/// The page at `gpa` in a snapshot (zeros where it is not RAM).
fn before_page(snapshot: &[Vec<u8>], gpa: u64) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    for (i, b) in page.iter_mut().enumerate() {
        let a = gpa + i as u64;
        for ((base, len), bytes) in RAM.iter().zip(snapshot) {
            if (*base..*base + *len as u64).contains(&a) {
                *b = bytes[(a - base) as usize];
            }
        }
    }
    page
}

fn check_ioio(
    g0: &[u8; 4096],
    g1: &[u8; 4096],
    info1: u64,
    ports: &[(u64, bool, Vec<u8>)],
    diff: &[u64],
    gpa: u64,
) {
    let is_in = info1 & 1 != 0;
    let size = match (info1 >> 4) & 7 {
        1 => 1,
        2 => 2,
        4 => 4,
        other => panic!("IOIO of size field {other} was served"),
    };
    let port = (info1 >> 16) & 0xffff;
    assert!(info1 & 4 == 0, "string IOIO was served");
    assert!(
        !DOORBELL.contains(&port),
        "IOIO reached the doorbell's own port"
    );
    assert!(diff.iter().all(|&a| (gpa..gpa + 0x400).contains(&a)));
    let rax_before = field(g0, RAX);
    match ports {
        [(p, write, bytes)] => {
            assert_eq!(
                (*p, *write, bytes.len()),
                (port, !is_in, size),
                "the IOIO access made"
            );
            let rax_after = field(g1, RAX);
            if is_in {
                let mut want = rax_before.unwrap_or(0).to_le_bytes();
                want[..size].copy_from_slice(bytes);
                assert_eq!(rax_after, Some(u64::from_le_bytes(want)), "IN data in RAX");
            } else {
                assert_eq!(
                    &bytes[..],
                    &rax_before.expect("OUT had RAX").to_le_bytes()[..size]
                );
                assert_eq!(rax_after, rax_before);
            }
        }
        // An access the bus cannot route (past port 0xffff, or straddling the doorbell's
        // range) reaches no device; an IN then reads all-ones.
        [] => {
            let end = port + size as u64;
            assert!(end > 0x1_0000 || (port < DOORBELL.end && end > DOORBELL.start));
            if is_in {
                let mut want = rax_before.unwrap_or(0).to_le_bytes();
                want[..size].fill(0xff);
                assert_eq!(field(g1, RAX), Some(u64::from_le_bytes(want)));
            }
        }
        more => panic!("one IOIO made {} accesses", more.len()),
    }
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let tables = tables();
    let table = tables[usize::from(r.u8()) % tables.len()].clone();
    let Some(rig) = rig(table) else {
        return;
    };
    let mut verified = false;
    for _ in 0..8 {
        if r.is_empty() {
            break;
        }
        match r.u8() % 4 {
            0 => {
                let exit = write_ghcb(&rig, &mut r);
                ring(&rig, &exit, &mut verified);
            }
            1 => {
                let gpa = u64::from(r.u8()) * 4096;
                let key = usize::from(r.u8() % 4);
                let delta = r.u8() as i8;
                let header = Header::read(&mut r);
                let payload = r.blob();
                let (key, next) = {
                    let psp = lock(&rig.psp);
                    (psp.vmpcks()[key], psp.next_seqno(usize::from(header.vmpck).min(3)).unwrap_or(1))
                };
                let page = guest_msg::seal(&key, next.wrapping_add_signed(i64::from(delta)), &header, payload);
                let _ = rig.mem.write_slice(&page, GuestAddress(gpa));
            }
            2 => {
                let gpa = u64::from(r.u32() % 0x3_4000);
                let bytes = r.blob();
                let _ = rig.mem.write_slice(bytes, GuestAddress(gpa));
            }
            _ => {
                let n = usize::from(r.u8() % 4) + 1;
                let offset = u64::from(r.u8() % 4);
                let bytes = r.bytes(n).to_vec();
                let before = snapshot(&rig.mem);
                rig.bus.write(DOORBELL.start + offset, &bytes);
                if (offset, bytes.len()) != (0, 4) {
                    assert!(changed(&before, &snapshot(&rig.mem)).is_empty(), "a malformed doorbell write changed memory");
                }
            }
        }
    }
});

fn warm_up() {
    let _ = tables();
}

/// Operation bytes: a GHCB exit.
#[allow(clippy::too_many_arguments)]
fn ghcb_op(
    w: &mut Writer,
    page: u8,
    valid: u8,
    code: u64,
    info1: u64,
    info2: u64,
    rax: u64,
    rbx: u64,
) {
    w.u8(0)
        .u8(page)
        .u8(0)
        .u8(valid)
        .u32(0)
        .u64(code)
        .u64(rax)
        .u64(rbx)
        .u64(info1)
        .u64(info2)
        .u8(0);
}

/// Operation bytes: the test guest's sealed MSG_REPORT_REQ at `page`.
fn request_op(w: &mut Writer, page: u8) {
    let report_data: [u8; 64] = core::array::from_fn(|i| 0xc0 ^ i as u8);
    w.u8(1).u8(page).u8(0).u8(0);
    Header::default().write(w);
    w.blob(&guest_msg::report_request(&report_data));
}

fn seeds(out: &mut Seeds) {
    const ALL: u8 = 0x1f;
    const NO_RAX_RBX: u8 = 0x1c;
    // The test guest: GHCB at 0x10000, request 0x11000, response 0x12000, certificates
    // at 0x20000 with 4 pages (the table needs 2 for AMD's chain).
    for (t, name) in [(0u8, "empty-table"), (1, "amd-table"), (2, "sim-table")] {
        let mut w = Writer::new();
        w.u8(t);
        request_op(&mut w, 0x11);
        ghcb_op(
            &mut w,
            0x10,
            ALL,
            EXIT_EXT_GUEST_REQUEST,
            0x11000,
            0x12000,
            0x20000,
            4,
        );
        out.add(&format!("ext-report-{name}"), &w.finish());
        // Too small a buffer first (RBX 1), then the retry with room.
        let mut w = Writer::new();
        w.u8(t);
        request_op(&mut w, 0x11);
        ghcb_op(
            &mut w,
            0x10,
            ALL,
            EXIT_EXT_GUEST_REQUEST,
            0x11000,
            0x12000,
            0x20000,
            1,
        );
        ghcb_op(
            &mut w,
            0x10,
            ALL,
            EXIT_EXT_GUEST_REQUEST,
            0x11000,
            0x12000,
            0x20000,
            4,
        );
        out.add(&format!("ext-report-retry-{name}"), &w.finish());
    }
    let mut w = Writer::new();
    w.u8(0);
    request_op(&mut w, 0x11);
    ghcb_op(
        &mut w,
        0x10,
        NO_RAX_RBX,
        EXIT_GUEST_REQUEST,
        0x11000,
        0x12000,
        0,
        0,
    );
    out.add("report", &w.finish());
    // Serial output and a status read through IOIO, as the guest's console does.
    let mut w = Writer::new();
    w.u8(0);
    for b in b"ok\n" {
        ghcb_op(
            &mut w,
            0x10,
            ALL,
            EXIT_IOIO,
            (0x3f8 << 16) | (1 << 4),
            0,
            u64::from(*b),
            0,
        );
    }
    ghcb_op(
        &mut w,
        0x10,
        ALL,
        EXIT_IOIO,
        (0x3fd << 16) | (1 << 4) | 1,
        0,
        0,
        0,
    );
    ghcb_op(
        &mut w,
        0x10,
        ALL,
        EXIT_IOIO,
        (0xe00 << 16) | (4 << 6),
        0,
        0,
        0,
    );
    out.add("ioio-serial", &w.finish());
    // Refusals: an unknown exit, missing fields, a request page past the end of RAM, a
    // certificate buffer straddling the hole.
    let mut w = Writer::new();
    w.u8(1);
    ghcb_op(&mut w, 0x10, ALL, 0x8000_0013, 0, 0, 0, 0);
    ghcb_op(&mut w, 0x10, 0x04, EXIT_IOIO, 0, 0, 0, 0);
    request_op(&mut w, 0x11);
    ghcb_op(
        &mut w,
        0x10,
        ALL,
        EXIT_EXT_GUEST_REQUEST,
        0x11000,
        0x60000,
        0x27000,
        4,
    );
    out.add("refusals", &w.finish());
}
