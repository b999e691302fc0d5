//! The simulated platform's VMGEXIT: how a guest of `--platform sim` reaches the
//! hypervisor through its GHCB, answered as KVM answers a VMGEXIT of an SNP guest.
//!
//! A plain KVM guest has no VMGEXIT, so the sim guest rings a doorbell instead: a 32-bit
//! write of its GHCB's guest-physical address (4 KiB aligned, below 4 GiB) to
//! [`crate::boot::layout::GUEST_REQUEST_PORT`]. This device then reads the GHCB and handles
//! the exit it names, writing the results back into the GHCB's save area:
//!
//! - IOIO (0x7B): the port access is made on the port bus (RAX carries the data), one
//!   access of 1, 2 or 4 bytes; string accesses and the doorbell's own ports are refused.
//! - SNP guest request (0x8000_0011) and extended guest request (0x8000_0012): the request
//!   page goes to the simulated PSP, whose status lands in SW_EXITINFO2 (low 32 bits) and
//!   whose response is written to the response page. An extended report request also
//!   gets the certificate table at RAX (RBX pages); when it does not fit, RBX is set to
//!   the pages needed, SW_EXITINFO2 to VMM error 1 ("invalid length"), and the request is
//!   not passed on (KVM 7.0+ with `KVM_EXIT_SNP_REQ_CERTS` does the same).
//! - Anything else, or a GHCB without the fields the exit needs, gets SW_EXITINFO1 = 2
//!   with the GHCB error code in SW_EXITINFO2 (invalid event, missing input, ...).
//!
//! Nothing is logged per exit: a guest flooding the doorbell only spends its vCPU's time.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use cloister_attestation::sim::SimPsp;
use vm_memory::{Bytes, GuestAddress};

use super::bus::{Bus, BusDevice};
use crate::memory::GuestMemoryMmap;
use crate::snp::certs::{CertTable, Delivery};

const PAGE: u64 = 4096;

/// GHCB save-area offsets (Linux `struct ghcb_save_area`).
mod off {
    pub const RAX: usize = 0x1F8;
    pub const RBX: usize = 0x318;
    pub const SW_EXITCODE: usize = 0x390;
    pub const SW_EXITINFO1: usize = 0x398;
    pub const SW_EXITINFO2: usize = 0x3A0;
    pub const VALID_BITMAP: usize = 0x3F0;
    pub const USAGE: usize = 0xFFC;
}

/// NAE exit codes.
const EXIT_IOIO: u64 = 0x7B;
const EXIT_GUEST_REQUEST: u64 = 0x8000_0011;
const EXIT_EXT_GUEST_REQUEST: u64 = 0x8000_0012;

/// GHCB error codes (SW_EXITINFO2 when SW_EXITINFO1 = 2).
const ERR_INVALID_USAGE: u64 = 2;
const ERR_MISSING_INPUT: u64 = 4;
const ERR_INVALID_INPUT: u64 = 5;
const ERR_INVALID_EVENT: u64 = 6;

/// VMM errors in SW_EXITINFO2's high half.
const VMM_ERR_INVALID_LEN: u64 = 1;
const VMM_ERR_GENERIC: u64 = 0xffff_ffff;

/// MSG_TYPE of a report request, and where the (plaintext) header keeps it.
const MSG_REPORT_REQ: u8 = 5;
const MSG_TYPE_OFFSET: usize = 0x34;

/// A GHCB page being handled.
struct Ghcb(Box<[u8; 4096]>);

impl Ghcb {
    fn valid(&self, at: usize) -> bool {
        let bit = at / 8;
        self.0[off::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }
    fn get(&self, at: usize) -> Option<u64> {
        self.valid(at).then(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&self.0[at..at + 8]);
            u64::from_le_bytes(b)
        })
    }
    fn set(&mut self, at: usize, value: u64) {
        self.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let bit = at / 8;
        self.0[off::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }
    fn result(&mut self, info1: u64, info2: u64) {
        self.set(off::SW_EXITINFO1, info1);
        self.set(off::SW_EXITINFO2, info2);
    }
    fn error(&mut self, code: u64) {
        self.result(2, code);
    }
}

/// The simulated VMGEXIT.
pub struct SimVmgexit {
    psp: Arc<Mutex<SimPsp>>,
    mem: GuestMemoryMmap,
    certs: Arc<CertTable>,
    ports: Arc<OnceLock<Weak<Bus>>>,
    own_ports: std::ops::Range<u64>,
}

impl SimVmgexit {
    /// A VMGEXIT device answering guest requests through `psp`, serving `certs` with
    /// extended requests, and making IOIO accesses on the port bus set later through
    /// the returned handle (the bus holds this device, so it cannot exist first). The
    /// device sits at `own_ports`, which IOIO exits may not reach.
    pub fn new(
        psp: Arc<Mutex<SimPsp>>,
        mem: GuestMemoryMmap,
        certs: Arc<CertTable>,
        own_ports: std::ops::Range<u64>,
    ) -> (Self, Arc<OnceLock<Weak<Bus>>>) {
        let ports = Arc::new(OnceLock::new());
        (
            SimVmgexit {
                psp,
                mem,
                certs,
                ports: ports.clone(),
                own_ports,
            },
            ports,
        )
    }

    fn serve(&mut self, gpa: u64) {
        if !gpa.is_multiple_of(PAGE) {
            return;
        }
        let mut ghcb = Ghcb(Box::new([0u8; 4096]));
        if self
            .mem
            .read_slice(&mut ghcb.0[..], GuestAddress(gpa))
            .is_err()
        {
            // No GHCB to answer in: the guest sees its own fields unchanged.
            return;
        }
        self.handle(&mut ghcb);
        // Only the save area carries results back.
        let _ = self.mem.write_slice(&ghcb.0[..0x400], GuestAddress(gpa));
    }

    fn handle(&mut self, ghcb: &mut Ghcb) {
        let usage = u32::from_le_bytes([
            ghcb.0[off::USAGE],
            ghcb.0[off::USAGE + 1],
            ghcb.0[off::USAGE + 2],
            ghcb.0[off::USAGE + 3],
        ]);
        if usage != 0 {
            return ghcb.error(ERR_INVALID_USAGE);
        }
        let (Some(code), Some(info1), Some(info2)) = (
            ghcb.get(off::SW_EXITCODE),
            ghcb.get(off::SW_EXITINFO1),
            ghcb.get(off::SW_EXITINFO2),
        ) else {
            return ghcb.error(ERR_MISSING_INPUT);
        };
        match code {
            EXIT_IOIO => self.ioio(ghcb, info1),
            EXIT_GUEST_REQUEST => self.guest_request(ghcb, info1, info2, None),
            EXIT_EXT_GUEST_REQUEST => match (ghcb.get(off::RAX), ghcb.get(off::RBX)) {
                (Some(certs), Some(pages)) => {
                    self.guest_request(ghcb, info1, info2, Some((certs, pages)))
                }
                _ => ghcb.error(ERR_MISSING_INPUT),
            },
            _ => ghcb.error(ERR_INVALID_EVENT),
        }
    }

    fn ioio(&mut self, ghcb: &mut Ghcb, info1: u64) {
        let is_in = info1 & 1 != 0;
        let string = info1 & (1 << 2) != 0;
        let size = match (info1 >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return ghcb.error(ERR_INVALID_INPUT),
        };
        let port = (info1 >> 16) & 0xffff;
        if string || self.own_ports.contains(&port) {
            return ghcb.error(ERR_INVALID_INPUT);
        }
        let Some(bus) = self.ports.get().and_then(Weak::upgrade) else {
            return ghcb.error(ERR_INVALID_EVENT);
        };
        let rax = ghcb.get(off::RAX);
        if is_in {
            let mut data = [0xffu8; 4];
            bus.read(port, &mut data[..size]);
            let mut value = rax.unwrap_or(0).to_le_bytes();
            value[..size].copy_from_slice(&data[..size]);
            ghcb.set(off::RAX, u64::from_le_bytes(value));
        } else {
            let Some(rax) = rax else {
                return ghcb.error(ERR_MISSING_INPUT);
            };
            bus.write(port, &rax.to_le_bytes()[..size]);
        }
        ghcb.result(0, 0);
    }

    fn guest_request(
        &mut self,
        ghcb: &mut Ghcb,
        request_gpa: u64,
        response_gpa: u64,
        certs: Option<(u64, u64)>,
    ) {
        let generic = VMM_ERR_GENERIC << 32;
        if !request_gpa.is_multiple_of(PAGE) || !response_gpa.is_multiple_of(PAGE) {
            return ghcb.result(0, generic);
        }
        let mut request = [0u8; 4096];
        if self
            .mem
            .read_slice(&mut request, GuestAddress(request_gpa))
            .is_err()
        {
            return ghcb.result(0, generic);
        }
        if let Some((certs_gpa, pages)) = certs {
            if request[MSG_TYPE_OFFSET] == MSG_REPORT_REQ {
                match self.certs.deliver(&self.mem, certs_gpa, pages) {
                    Delivery::Written => {}
                    Delivery::TooSmall { needed } => {
                        ghcb.set(off::RBX, needed);
                        return ghcb.result(0, VMM_ERR_INVALID_LEN << 32);
                    }
                    Delivery::BadBuffer => return ghcb.result(0, generic),
                }
            }
        }
        let mut response = [0u8; 4096];
        let status = {
            let mut psp = self.psp.lock().unwrap_or_else(|p| p.into_inner());
            psp.guest_request(&request, &mut response)
        };
        if status.is_success()
            && self
                .mem
                .write_slice(&response, GuestAddress(response_gpa))
                .is_err()
        {
            return ghcb.result(0, generic);
        }
        ghcb.result(0, u64::from(status.code()));
    }
}

impl BusDevice for SimVmgexit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only a whole 32-bit write of the GHCB's address is a VMGEXIT.
        if let (0, Ok(gpa)) = (offset, <[u8; 4]>::try_from(data)) {
            self.serve(u64::from(u32::from_le_bytes(gpa)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::memory::{create_guest_memory, MemorySize};

    #[derive(Default)]
    struct Port {
        written: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Port {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = 0x40 + offset as u8 + i as u8;
            }
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.written.push((offset, data.to_vec()));
        }
    }

    struct Rig {
        dev: SimVmgexit,
        mem: GuestMemoryMmap,
        port: Arc<Mutex<Port>>,
        _bus: Arc<Bus>,
    }

    const GHCB: u64 = 0x10000;

    fn rig(certs: CertTable) -> Rig {
        let mem = create_guest_memory(MemorySize(1 << 20)).unwrap();
        let psp = Arc::new(Mutex::new(SimPsp::new(crate::snp::tests::root())));
        let (dev, ports) = SimVmgexit::new(psp, mem.clone(), Arc::new(certs), 0xe00..0xe04);
        let port = Arc::new(Mutex::new(Port::default()));
        let mut bus = Bus::new();
        bus.insert(port.clone(), 0x3f8, 8).unwrap();
        let bus = Arc::new(bus);
        ports.set(Arc::downgrade(&bus)).unwrap();
        Rig {
            dev,
            mem,
            port,
            _bus: bus,
        }
    }

    fn ghcb_with(fields: &[(usize, u64)]) -> Ghcb {
        let mut g = Ghcb(Box::new([0u8; 4096]));
        for &(at, v) in fields {
            g.set(at, v);
        }
        g
    }

    fn run(r: &mut Rig, g: &Ghcb) -> Ghcb {
        r.mem.write_slice(&g.0[..], GuestAddress(GHCB)).unwrap();
        r.dev.write(0, &(GHCB as u32).to_le_bytes());
        let mut back = Ghcb(Box::new([0u8; 4096]));
        r.mem
            .read_slice(&mut back.0[..], GuestAddress(GHCB))
            .unwrap();
        back
    }

    #[test]
    fn ioio_out_and_in_reach_the_port_bus() {
        let mut r = rig(CertTable::empty());
        let out = ghcb_with(&[
            (off::RAX, 0x41),
            (off::SW_EXITCODE, EXIT_IOIO),
            (off::SW_EXITINFO1, (0x3f8 << 16) | (1 << 4)),
            (off::SW_EXITINFO2, 0),
        ]);
        let back = run(&mut r, &out);
        assert_eq!(back.get(off::SW_EXITINFO1), Some(0));
        assert_eq!(r.port.lock().unwrap().written, [(0, vec![0x41])]);
        let inp = ghcb_with(&[
            (off::RAX, 0xdead_beef_0000_0000),
            (off::SW_EXITCODE, EXIT_IOIO),
            (off::SW_EXITINFO1, (0x3fd << 16) | (1 << 5) | 1),
            (off::SW_EXITINFO2, 0),
        ]);
        let back = run(&mut r, &inp);
        assert_eq!(back.get(off::SW_EXITINFO1), Some(0));
        // Two bytes read at offset 5; the rest of RAX kept.
        assert_eq!(back.get(off::RAX), Some(0xdead_beef_0000_4645));
    }

    #[test]
    fn refused_exits_name_the_error() {
        let mut r = rig(CertTable::empty());
        // Missing SW_EXITINFO2.
        let g = ghcb_with(&[(off::SW_EXITCODE, EXIT_IOIO), (off::SW_EXITINFO1, 0)]);
        let back = run(&mut r, &g);
        assert_eq!(back.get(off::SW_EXITINFO1), Some(2));
        assert_eq!(back.get(off::SW_EXITINFO2), Some(ERR_MISSING_INPUT));
        // Unknown exit code.
        let g = ghcb_with(&[
            (off::SW_EXITCODE, 0x8000_0013),
            (off::SW_EXITINFO1, 0),
            (off::SW_EXITINFO2, 0),
        ]);
        assert_eq!(
            run(&mut r, &g).get(off::SW_EXITINFO2),
            Some(ERR_INVALID_EVENT)
        );
        // String I/O, the doorbell's own port, a bad size.
        for info1 in [
            (0x3f8 << 16) | (1 << 4) | (1 << 2),
            (0xe00 << 16) | (1 << 6),
            (0x3f8 << 16) | (3 << 4),
        ] {
            let g = ghcb_with(&[
                (off::RAX, 0),
                (off::SW_EXITCODE, EXIT_IOIO),
                (off::SW_EXITINFO1, info1),
                (off::SW_EXITINFO2, 0),
            ]);
            assert_eq!(
                run(&mut r, &g).get(off::SW_EXITINFO2),
                Some(ERR_INVALID_INPUT),
                "{info1:#x}"
            );
        }
        assert!(r.port.lock().unwrap().written.is_empty());
        // Non-default usage.
        let mut g = ghcb_with(&[
            (off::SW_EXITCODE, EXIT_IOIO),
            (off::SW_EXITINFO1, 0),
            (off::SW_EXITINFO2, 0),
        ]);
        g.0[off::USAGE] = 1;
        assert_eq!(
            run(&mut r, &g).get(off::SW_EXITINFO2),
            Some(ERR_INVALID_USAGE)
        );
    }

    #[test]
    fn extended_request_with_too_small_a_buffer_is_not_passed_on() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/vectors/snp/milan-v2-vcek");
        let mut bundle = cloister_attestation::certs::CertBundle::default();
        bundle.add_file(&dir.join("chain.pem")).unwrap();
        bundle.add_file(&dir.join("vek.der")).unwrap();
        let table = CertTable::from_bundle(&bundle);
        let needed = table.pages();
        let mut r = rig(table);
        let mut request = [0u8; 4096];
        request[MSG_TYPE_OFFSET] = MSG_REPORT_REQ;
        r.mem.write_slice(&request, GuestAddress(0x11000)).unwrap();
        let g = ghcb_with(&[
            (off::RAX, 0x20000),
            (off::RBX, needed - 1),
            (off::SW_EXITCODE, EXIT_EXT_GUEST_REQUEST),
            (off::SW_EXITINFO1, 0x11000),
            (off::SW_EXITINFO2, 0x12000),
        ]);
        let back = run(&mut r, &g);
        assert_eq!(back.get(off::SW_EXITINFO1), Some(0));
        assert_eq!(back.get(off::SW_EXITINFO2), Some(1 << 32));
        assert_eq!(back.get(off::RBX), Some(needed));
        // With room, the table is written and the (garbage) request reaches the PSP,
        // which refuses it with a firmware status in the low half.
        let g = ghcb_with(&[
            (off::RAX, 0x20000),
            (off::RBX, needed),
            (off::SW_EXITCODE, EXIT_EXT_GUEST_REQUEST),
            (off::SW_EXITINFO1, 0x11000),
            (off::SW_EXITINFO2, 0x12000),
        ]);
        let back = run(&mut r, &g);
        let info2 = back.get(off::SW_EXITINFO2).unwrap();
        assert_eq!(info2 >> 32, 0);
        assert_ne!(info2, 0, "a garbage message must be refused");
        let mut first = [0u8; 24];
        r.mem.read_slice(&mut first, GuestAddress(0x20000)).unwrap();
        assert_eq!(&first[..16], &crate::snp::certs::guid::ARK);
        // Unaligned pages: a generic VMM error.
        let g = ghcb_with(&[
            (off::SW_EXITCODE, EXIT_GUEST_REQUEST),
            (off::SW_EXITINFO1, 0x11008),
            (off::SW_EXITINFO2, 0x12000),
        ]);
        assert_eq!(
            run(&mut r, &g).get(off::SW_EXITINFO2),
            Some(VMM_ERR_GENERIC << 32)
        );
    }
}
