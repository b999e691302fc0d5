//! How the guest talks to the hypervisor: directly (`in`/`out`), or through the GHCB.
//!
//! - [`Mode::Direct`]: no CC blob, a plain VM. Port I/O is the instruction itself.
//! - [`Mode::Snp`]: the loader's page tables carry the C-bit (bit 51), so this is a real
//!   SEV-SNP guest. Every port access, the guest request and termination go through the
//!   GHCB (an `in`/`out` would raise #VC, which this guest does not handle). Set up once,
//!   first thing: the GHCB page and the message and certificate pages are rescinded
//!   (PVALIDATE), converted to shared (MSR protocol page-state change), reached through
//!   an alias mapping without the C-bit, and the GHCB is registered (MSR protocol). The
//!   VMGEXIT is `wrmsr GHCB_MSR` + `rep vmmcall`.
//! - [`Mode::SimGhcb`]: a CC blob but no C-bit: the simulated SNP platform. The guest
//!   speaks the same GHCB protocol with the same pages, except that memory is not
//!   encrypted (no PVALIDATE, page-state change or alias: the sim says so) and the
//!   VMGEXIT is a 32-bit `out` of the GHCB's address to [`SIM_VMGEXIT_PORT`], which the
//!   simulated platform answers as KVM answers a VMGEXIT.
//!
//! Everything runs on one CPU without interrupts; nothing here is re-entered.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use cloister_test_guest::ghcb::{
    exit, ioio_info, msr_psc, msr_psc_result, msr_register, msr_register_ok,
    msr_terminate, offset, reason, ExitError, Ghcb, GhcbPage, PageState, GHCB_MSR,
};

/// The simulated platform's VMGEXIT port (32-bit writes of the GHCB's address).
pub const SIM_VMGEXIT_PORT: u16 = 0x0e00;
/// Where the shared alias mapping starts (PML4 slot 1): shared page P is at ALIAS + P.
const ALIAS_BASE: u64 = 1 << 39;
/// Pages of the certificate buffer.
pub const CERT_PAGES: usize = cloister_test_guest::cmdline::MAX_CERT_PAGES as usize;
const PAGE: usize = 4096;

/// How the guest reaches the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Plain port I/O.
    Direct = 0,
    /// GHCB over the simulated platform's doorbell.
    SimGhcb = 1,
    /// GHCB with VMGEXIT on real SEV-SNP.
    Snp = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Direct as u8);
/// Set when a CC blob promised the simulated platform but nothing answered its VMGEXIT.
static NO_ANSWER: AtomicBool = AtomicBool::new(false);

/// Whether the guest found a CC blob but no simulated VMGEXIT (a plain VM with an
/// SNP-style blob in memory): it then uses plain port I/O and has no guest requests.
pub fn sim_unanswered() -> bool {
    NO_ANSWER.load(Ordering::Relaxed)
}

/// The current mode.
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        1 => Mode::SimGhcb,
        2 => Mode::Snp,
        _ => Mode::Direct,
    }
}

/// The pages shared with the hypervisor, in this order.
#[repr(C, align(4096))]
pub struct SharedPages {
    /// The GHCB.
    pub ghcb: GhcbPage,
    /// A guest message request.
    pub request: [u8; PAGE],
    /// Its response.
    pub response: [u8; PAGE],
    /// The certificate buffer of extended guest requests.
    pub certs: [u8; CERT_PAGES * PAGE],
}

const SHARED_PAGE_COUNT: usize = core::mem::size_of::<SharedPages>() / PAGE;

/// Page tables of the alias mapping: one PDPT and one PD (1 GiB of 2 MiB pages).
#[repr(C, align(4096))]
struct AliasTables {
    pdpt: [u64; 512],
    pd: [u64; 512],
}

struct Static<T>(UnsafeCell<T>);
// SAFETY: one CPU, no interrupts; every access goes through `shared()` or `setup_snp`,
// which are not re-entered (see the module comment).
unsafe impl<T> Sync for Static<T> {}

// Both live in `.bss.lazy` (guest.ld), which the entry code does not zero: `select` zeroes
// SHARED before the first exit uses it, `setup_snp` zeroes ALIAS before filling it.
#[link_section = ".bss.lazy"]
static SHARED: Static<SharedPages> = Static(UnsafeCell::new(SharedPages {
    ghcb: [0; PAGE],
    request: [0; PAGE],
    response: [0; PAGE],
    certs: [0; CERT_PAGES * PAGE],
}));
#[link_section = ".bss.lazy"]
static ALIAS: Static<AliasTables> = Static(UnsafeCell::new(AliasTables {
    pdpt: [0; 512],
    pd: [0; 512],
}));

/// Guest-physical address of the shared pages (identity-mapped image).
pub fn shared_gpa() -> u64 {
    SHARED.0.get() as u64
}

/// The shared pages as the guest must access them: through the alias (no C-bit) on SNP,
/// directly elsewhere.
///
/// # Safety
/// The caller holds no other reference into the shared pages.
pub unsafe fn shared() -> &'static mut SharedPages {
    let ptr = match mode() {
        Mode::Snp => (ALIAS_BASE + shared_gpa()) as *mut SharedPages,
        _ => SHARED.0.get(),
    };
    // SAFETY: the pointer maps the static (directly or through the alias set up by
    // `setup_snp`); the caller guarantees exclusivity.
    unsafe { &mut *ptr }
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: writes the GHCB MSR, which only tells the hypervisor where to look.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the GHCB MSR.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
             options(nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// VMGEXIT: the hypervisor handles the GHCB (or the MSR protocol request) and returns.
fn vmgexit() {
    match mode() {
        Mode::Snp | Mode::Direct => {
            // SAFETY: `rep vmmcall` (VMGEXIT); the hypervisor may write the shared
            // pages, so the asm is not `nomem`; RAX is declared clobbered in case a
            // hypervisor treats it as a hypercall.
            unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", out("rax") _, options(nostack)) }
        }
        Mode::SimGhcb => {
            let gpa = shared_gpa() as u32;
            // SAFETY: a port write the simulated platform answers like a VMGEXIT; it may
            // write the shared pages, so the asm is not `nomem`.
            unsafe {
                asm!("out dx, eax", in("dx") SIM_VMGEXIT_PORT, in("eax") gpa,
                     options(nostack, preserves_flags))
            }
        }
    }
}

/// One MSR-protocol exchange: writes `request`, VMGEXIT, returns the response.
fn msr_protocol(request: u64) -> u64 {
    wrmsr(GHCB_MSR, request);
    vmgexit();
    rdmsr(GHCB_MSR)
}

/// Ends the guest: on SNP through the MSR protocol's termination request (set 1,
/// `reason`); elsewhere the caller's fallback runs.
pub fn terminate_snp(why: u8) -> ! {
    loop {
        wrmsr(GHCB_MSR, msr_terminate(reason::SET, why));
        // SAFETY: VMGEXIT with a termination request; the hypervisor ends the guest.
        unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack)) }
    }
}

/// PVALIDATE of the 4 KiB page at virtual `va`: `validate` or rescind. Returns RAX (0 =
/// done) and whether CF reported "no change".
fn pvalidate(va: u64, validate: bool) -> (u64, bool) {
    let rc: u64;
    let unchanged: u8;
    // SAFETY: PVALIDATE (F2 0F 01 FF) on a page of this guest's own image; rescinding
    // makes it unusable as private memory, which is what the caller wants.
    unsafe {
        asm!(".byte 0xf2, 0x0f, 0x01, 0xff", "setc {cf}",
             cf = out(reg_byte) unchanged,
             inout("rax") va => rc,
             in("ecx") 0u32, in("edx") u32::from(validate),
             options(nostack))
    };
    (rc, unchanged != 0)
}

/// Chooses the mode: SNP when the loader's page tables carry the C-bit (`c_bit`), the
/// simulated platform's GHCB when there is a CC blob, direct I/O otherwise. On SNP the
/// shared pages are set up here; a failure ends the guest with a termination request
/// (there is no console yet to print on).
pub fn select(c_bit: u64, cc_blob: bool) {
    if c_bit != 0 || cc_blob {
        // SAFETY: nothing has used the shared pages yet; this is the only access.
        unsafe { core::ptr::write_bytes(SHARED.0.get(), 0, 1) };
    }
    if c_bit != 0 {
        setup_snp(c_bit);
        MODE.store(Mode::Snp as u8, Ordering::Relaxed);
    } else if cc_blob {
        MODE.store(Mode::SimGhcb as u8, Ordering::Relaxed);
        // Probe: a port read the simulated platform answers (SW_EXITINFO1 = 0). Nothing
        // answers on a plain VM, and the guest falls back to plain port I/O.
        // SAFETY: not re-entered; no other reference is live.
        let pages = unsafe { shared() };
        let answered = exit_with(pages, |g| {
            g.set(offset::RAX, 0);
            g.set_exit(exit::IOIO, ioio_info(0x80, 1, true), 0);
        });
        if answered.is_err() {
            MODE.store(Mode::Direct as u8, Ordering::Relaxed);
            NO_ANSWER.store(true, Ordering::Relaxed);
        }
    }
}

fn setup_snp(c_bit: u64) {
    let base = shared_gpa();
    for page in 0..SHARED_PAGE_COUNT as u64 {
        let gpa = base + page * PAGE as u64;
        let (rc, unchanged) = pvalidate(gpa, false);
        if rc != 0 || unchanged {
            terminate_snp(reason::PVALIDATE);
        }
        if msr_psc_result(msr_protocol(msr_psc(gpa >> 12, PageState::Shared))).is_err() {
            terminate_snp(reason::PSC);
        }
    }
    // The alias: PML4[1] -> PDPT -> PD of 2 MiB pages without the C-bit over 0..1 GiB.
    if base + (SHARED_PAGE_COUNT * PAGE) as u64 > 1 << 30 {
        terminate_snp(reason::MAPPING);
    }
    let tables = ALIAS.0.get();
    let cr3: u64;
    // SAFETY: reads CR3.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    let pml4 = (cr3 & 0x0007_ffff_ffff_f000) as *mut u64;
    // SAFETY: `tables` is this module's static, touched only here; `pml4` is the page map
    // entry.rs built (identity-mapped, private); slot 1 is unused by the identity map.
    unsafe {
        core::ptr::write_bytes(tables, 0, 1);
        for (i, entry) in (*tables).pd.iter_mut().enumerate() {
            *entry = ((i as u64) << 21) | 0x83;
        }
        (*tables).pdpt[0] = (core::ptr::addr_of!((*tables).pd) as u64) | 0x3 | c_bit;
        pml4.add(1)
            .write_volatile((core::ptr::addr_of!((*tables).pdpt) as u64) | 0x3 | c_bit);
        asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags));
    }
    let gfn = base >> 12;
    let response = msr_protocol(msr_register(gfn));
    if !msr_register_ok(response, gfn) {
        terminate_snp(reason::REGISTER);
    }
    wrmsr(GHCB_MSR, base);
}

/// Runs one full-GHCB exit: `fill` sets the fields, then VMGEXIT; `Ok` when the hypervisor
/// accepted the exit, with the page for reading results.
pub fn exit_with(
    pages: &mut SharedPages,
    fill: impl FnOnce(&mut Ghcb),
) -> Result<(), ExitError> {
    let mut g = Ghcb::new(&mut pages.ghcb);
    g.begin();
    fill(&mut g);
    if mode() == Mode::Snp {
        wrmsr(GHCB_MSR, shared_gpa());
    }
    vmgexit();
    Ghcb::new(&mut pages.ghcb).result()
}

/// An `out` of `size` bytes through the GHCB.
pub fn ioio_out(port: u16, size: u8, value: u32) {
    // SAFETY: not re-entered (module comment); no other reference is live.
    let pages = unsafe { shared() };
    // A refused port write is lost as it would be on a bus without the device.
    let _ = exit_with(pages, |g| {
        g.set(offset::RAX, u64::from(value));
        g.set_exit(exit::IOIO, ioio_info(port, size, false), 0);
    });
}

/// An `in` of `size` bytes through the GHCB (all ones if the hypervisor refused it).
pub fn ioio_in(port: u16, size: u8) -> u32 {
    // SAFETY: not re-entered (module comment); no other reference is live.
    let pages = unsafe { shared() };
    let ok = exit_with(pages, |g| {
        g.set(offset::RAX, 0);
        g.set_exit(exit::IOIO, ioio_info(port, size, true), 0);
    });
    let rax = Ghcb::new(&mut pages.ghcb).raw(offset::RAX);
    match ok {
        Ok(()) => rax as u32,
        Err(_) => u32::MAX,
    }
}

#[cfg(feature = "attest")]
pub use transport::{CertOutcome, GhcbTransport};

#[cfg(feature = "attest")]
mod transport {
    use cloister_test_guest::attest::{Transport, TransportError, MSG_REPORT_REQ};
    use cloister_test_guest::ghcb::{
        exit, offset, parse_cert_table, CertEntry, CertTableError, Ghcb, RequestOutcome,
    };
    use cloister_test_guest::guest_msg::{Page, PAGE_SIZE};

    use super::{exit_with, shared, shared_gpa, SharedPages, PAGE};

    /// Offset of MSG_TYPE in a guest message header.
    const MSG_TYPE: usize = 0x34;
    /// Most certificate table entries kept.
    pub const MAX_CERTS: usize = 6;
    /// Retries of a request the VMM calls busy.
    const BUSY_RETRIES: u32 = 1000;

    /// What came back in the certificate buffer.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum CertOutcome {
        /// No extended request was made.
        NotAsked,
        /// The table: entries (up to [`MAX_CERTS`] kept) and their count.
        Table {
            /// The entries.
            entries: [CertEntry; MAX_CERTS],
            /// How many the table has.
            count: usize,
        },
        /// The buffer was too small; the host needs this many pages. The report was then
        /// asked for without certificates.
        TooSmall {
            /// Pages needed.
            needed: u64,
        },
        /// The table is malformed.
        Malformed(CertTableError),
    }

    /// The GHCB guest-request transport.
    pub struct GhcbTransport {
        cert_pages: u8,
        /// What the last extended request brought.
        pub certs: CertOutcome,
    }

    impl GhcbTransport {
        /// A transport offering `cert_pages` pages (0: plain guest requests only).
        pub fn new(cert_pages: u8) -> Self {
            GhcbTransport {
                cert_pages,
                certs: CertOutcome::NotAsked,
            }
        }

        fn send(
            pages: &mut SharedPages,
            cert_pages: Option<u8>,
        ) -> Result<(RequestOutcome, u64), TransportError> {
            let base = shared_gpa();
            let request = base + PAGE as u64;
            let response = request + PAGE as u64;
            let certs = response + PAGE as u64;
            let result = exit_with(pages, |g| match cert_pages {
                Some(n) => {
                    g.set(offset::RAX, certs);
                    g.set(offset::RBX, u64::from(n));
                    g.set_exit(exit::EXT_GUEST_REQUEST, request, response);
                }
                None => g.set_exit(exit::GUEST_REQUEST, request, response),
            });
            let g = Ghcb::new(&mut pages.ghcb);
            let info2 = g.raw(offset::SW_EXITINFO2);
            if result.is_err() {
                return Err(TransportError::Hypervisor {
                    info1: g.raw(offset::SW_EXITINFO1),
                    info2,
                });
            }
            Ok((RequestOutcome::from_info2(info2), g.raw(offset::RBX)))
        }
    }

    impl Transport for GhcbTransport {
        fn exchange(&mut self, request: &Page, response: &mut Page) -> Result<(), TransportError> {
            if super::mode() == super::Mode::Direct {
                return Err(TransportError::Unavailable);
            }
            // SAFETY: not re-entered; this is the only live reference.
            let pages = unsafe { shared() };
            pages.request = *request;
            pages.response = [0; PAGE_SIZE];
            let extended = self.cert_pages > 0 && request[MSG_TYPE] == MSG_REPORT_REQ;
            let mut ask_certs = extended.then_some(self.cert_pages);
            let mut busy = 0;
            let outcome = loop {
                let (outcome, rbx) = Self::send(pages, ask_certs)?;
                match outcome {
                    RequestOutcome::Busy if busy < BUSY_RETRIES => busy += 1,
                    RequestOutcome::CertBufferTooSmall if ask_certs.is_some() => {
                        // As Linux does: the same message again, without the buffer.
                        self.certs = CertOutcome::TooSmall { needed: rbx };
                        ask_certs = None;
                    }
                    other => break other,
                }
            };
            match outcome {
                RequestOutcome::Answered => {}
                RequestOutcome::Firmware(status) => {
                    return Err(TransportError::Refused { status })
                }
                RequestOutcome::CertBufferTooSmall
                | RequestOutcome::Busy
                | RequestOutcome::Vmm(_) => {
                    return Err(TransportError::Hypervisor {
                        info1: 0,
                        info2: Ghcb::new(&mut pages.ghcb).raw(offset::SW_EXITINFO2),
                    })
                }
            }
            *response = pages.response;
            if ask_certs.is_some() {
                let mut entries = [CertEntry {
                    guid: [0; 16],
                    offset: 0,
                    length: 0,
                }; MAX_CERTS];
                let len = usize::from(self.cert_pages) * PAGE;
                self.certs = match parse_cert_table(&pages.certs[..len], &mut entries) {
                    Ok(count) => CertOutcome::Table { entries, count },
                    Err(e) => CertOutcome::Malformed(e),
                };
            }
            Ok(())
        }
    }
}
