//! One vCPU: its boot state (64-bit long mode with the boot GDT and identity page tables,
//! like Firecracker's direct boot), its CPUID, MSRs and LAPIC, and the loop that runs it
//! and routes its I/O exits to the buses.
//!
//! Stopping a vCPU thread: set the shared stop flag, then send [`kick_signal`]; the
//! signal handler sets `immediate_exit` in the thread's `kvm_run`, so `KVM_RUN` returns
//! `EINTR` whether the signal lands inside the ioctl or just before it.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_run,
    kvm_sregs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_UNINITIALIZED,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use super::vmsa_regs::{fpu_from_vmsa, regs_from_vmsa, sregs_from_vmsa};
use crate::boot::gdt::{boot_gdt, segment_from_gdt, BOOT_CS, BOOT_DS, BOOT_TSS};
use crate::boot::layout::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, ZERO_PAGE_START};
use crate::cpuid::{filter_cpuid, hide_sev_leaves, VcpuTopology};
use crate::devices::bus::Bus;
use crate::devices::exit::ExitHandle;
use crate::memory::GuestMemoryMmap;
use crate::snp::abi::{
    KvmExitSnpReqCerts, KVM_EXIT_SNP_REQ_CERTS, KVM_HC_MAP_GPA_RANGE, KVM_SYSTEM_EVENT_SEV_TERM,
};
use crate::snp::certs::{CertTable, Delivery};
use crate::snp::host::SnpHost;
use crate::snp::launcher::{map_gpa_range, memory_fault};
use cloister_attestation::launch::vmsa::Vmsa;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRR default type: MTRRs enabled, write-back.
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// LAPIC local vector table registers and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// KVM_EXIT_INTERNAL_ERROR sub-error: the instruction emulator failed.
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

/// Errors while setting up or running a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The vCPU thread's seccomp filter could not be installed.
    #[error("vCPU thread: {0}")]
    Seccomp(String),
    /// A KVM ioctl failed while setting the vCPU up.
    #[error("vCPU {index}: {what} failed: {source}")]
    Setup {
        /// vCPU index.
        index: u8,
        /// The operation.
        what: &'static str,
        /// What the kernel said.
        source: kvm_ioctls::Error,
    },
    /// KVM_RUN failed.
    #[error("vCPU {index}: KVM_RUN failed: {source}")]
    Run {
        /// vCPU index.
        index: u8,
        /// What the kernel said.
        source: kvm_ioctls::Error,
    },
    /// The guest triple-faulted (or otherwise shut the CPU down).
    #[error("vCPU {index}: the guest shut the CPU down (triple fault, KVM_EXIT_SHUTDOWN) at rip {rip:#x}")]
    Shutdown {
        /// vCPU index.
        index: u8,
        /// Instruction pointer at the exit.
        rip: u64,
    },
    /// KVM's instruction emulator or another internal path failed.
    #[error("vCPU {index}: KVM internal error ({kind}, suberror {suberror}) at rip {rip:#x}")]
    Internal {
        /// vCPU index.
        index: u8,
        /// "emulation failure" or "internal error".
        kind: &'static str,
        /// KVM's sub-error code.
        suberror: u32,
        /// Instruction pointer at the exit.
        rip: u64,
    },
    /// KVM could not enter the guest.
    #[error(
        "vCPU {index}: KVM could not enter the guest (hardware entry failure reason {reason:#x})"
    )]
    FailEntry {
        /// vCPU index.
        index: u8,
        /// Hardware reason code.
        reason: u64,
    },
    /// The guest reported a crash through a system event.
    #[error("vCPU {index}: the guest reported a crash (KVM system event)")]
    Crash {
        /// vCPU index.
        index: u8,
    },
    /// The SEV guest asked to be terminated (GHCB MSR protocol 0x100 or the termination
    /// NAE event), with a reason set and code.
    #[error("vCPU {index}: the SEV-SNP guest requested termination: reason set {set}, code {reason}{}", sev_reason_name(*set, *reason))]
    SevTermination {
        /// vCPU index.
        index: u8,
        /// Reason code set (0 = GHCB general, 1 = Linux).
        set: u64,
        /// Reason code.
        reason: u64,
    },
    /// The vCPU halted although the in-kernel LAPIC should handle HLT.
    #[error("vCPU {index}: halted with no in-kernel interrupt controller to wake it")]
    Halted {
        /// vCPU index.
        index: u8,
    },
    /// An exit this monitor does not handle.
    #[error("vCPU {index}: unexpected KVM exit {exit}")]
    UnexpectedExit {
        /// vCPU index.
        index: u8,
        /// The exit, as KVM reported it.
        exit: String,
    },
}

/// Names of the termination reasons of GHCB set 0 and Linux's set 1 (SNP-FACTS §3.4).
fn sev_reason_name(set: u64, reason: u64) -> &'static str {
    match (set, reason) {
        (0, 0) => " (general)",
        (0, 1) => " (SEV-ES/SNP protocol version not supported)",
        (0, 2) => " (SEV-SNP features not supported)",
        (1, 0) => " (GHCB registration)",
        (1, 1) => " (page-state change)",
        (1, 2) => " (PVALIDATE)",
        (1, 3) => " (not running at VMPL0)",
        (1, 4) => " (CPUID table)",
        (1, 5) => " (CPUID from the hypervisor)",
        (1, 6) => " (secrets page)",
        _ => "",
    }
}

/// The 64-bit registers at the kernel's entry: rip at the entry point, rsi at the zero
/// page, a stack below the page tables, interrupts off.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Long-mode special registers from `base` (KVM's reset values): the boot GDT and
/// IDT, flat segments, paging through `cr3`, PAE and EFER.LME/LMA.
pub fn boot_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let gdt = boot_gdt();
    let code = segment_from_gdt(gdt[usize::from(BOOT_CS / 8)], BOOT_CS);
    let data = segment_from_gdt(gdt[usize::from(BOOT_DS / 8)], BOOT_DS);
    let tss = segment_from_gdt(gdt[usize::from(BOOT_TSS / 8)], BOOT_TSS);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = cr3;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// x87 and SSE control words at their reset values.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// MSRs every vCPU starts with.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// LINT0 delivers ExtINT (the 8259 PIC's output), LINT1 delivers NMI, as on a PC.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let value = lapic_reg(lapic, reg);
        set_lapic_reg(lapic, reg, (value & !0x700) | (mode << 8));
    }
}

/// Why a vCPU loop ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStop {
    /// The monitor asked it to stop.
    Stopped,
    /// The guest asked the VM to end (the exit handle holds the status).
    ExitRequested,
}

/// A vCPU and the buses its I/O exits go to.
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: ExitHandle,
    /// What handles the SNP platform's exits (`None` on a plain VM).
    snp: Option<SnpExits>,
}

/// What an SNP guest's vCPU needs for the platform's exits at run time.
#[derive(Clone)]
pub struct SnpExits {
    /// The SNP host (real or simulated) that converts pages for page-state changes and
    /// memory faults.
    pub host: Arc<dyn SnpHost>,
    /// The tenant policy's `launch.allow_shared_memory` (a refused conversion fails the
    /// guest's request).
    pub allow_shared: bool,
    /// The certificate table served on `KVM_EXIT_SNP_REQ_CERTS`, and the guest memory it
    /// is written into (`None`: the exit is not enabled).
    pub certs: Option<(Arc<CertTable>, GuestMemoryMmap)>,
}

impl Vcpu {
    /// Wraps vCPU `index` (also its APIC ID), created by the launch backend; `snp` handles
    /// its SNP exits.
    pub fn from_fd(
        fd: VcpuFd,
        index: u8,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exit: ExitHandle,
        snp: Option<SnpExits>,
    ) -> Self {
        Self {
            index,
            fd,
            pio,
            mmio,
            exit,
            snp,
        }
    }

    /// Performs the port access of the current KVM_EXIT_IO: `count` accesses of `size`
    /// bytes each at `port` (string I/O repeats the same port), in order.
    fn port_io(&mut self, port: u16, write: bool) {
        let index = self.index;
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit being handled is KVM_EXIT_IO, so the kernel filled the `io`
        // member of the exit union; it is plain old data.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size);
        let count = io.count as usize;
        let Some(len) = split_pio(size, count) else {
            log::debug!("vCPU {index}: port access of {count} x {size} bytes ignored");
            return;
        };
        let base = std::ptr::from_mut(run).cast::<u8>();
        // SAFETY: the kernel puts the I/O data `data_offset` bytes into the kvm_run mapping
        // (the page after the struct), `size * count` bytes long, within the mapping this
        // vCPU keeps for its lifetime; `split_pio` bounded the length to that page. No other
        // reference to those bytes exists while this slice lives.
        let data =
            unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len) };
        let addr = u64::from(port);
        for element in data.chunks_exact_mut(size) {
            let claimed = if write {
                self.pio.write(addr, element)
            } else {
                self.pio.read(addr, element)
            };
            if !claimed {
                log::trace!("vCPU {index}: unclaimed port access {port:#x}");
            }
        }
    }

    /// Answers `KVM_EXIT_SNP_REQ_CERTS`: writes the certificate table into the guest's
    /// buffer and sets `ret` (0, or ENOSPC with `npages` set to the pages needed, or EIO
    /// for a buffer outside RAM), as SNP-FACTS §1.11 describes.
    fn serve_certs(&mut self) -> Step {
        let Some((table, mem)) = self.snp.as_ref().and_then(|s| s.certs.clone()) else {
            return Step::Unexpected("a certificate request exit that was not enabled".into());
        };
        let run = self.fd.get_kvm_run();
        // SAFETY: exit_reason is KVM_EXIT_SNP_REQ_CERTS, so the exit union holds a
        // `struct kvm_exit_snp_req_certs` (24 bytes of u64s, inside the union's 256-byte
        // padding); `run` is this vCPU's own mapping, used by this thread only.
        let exit = unsafe {
            &mut *(std::ptr::addr_of_mut!(run.__bindgen_anon_1).cast::<KvmExitSnpReqCerts>())
        };
        exit.ret = match table.deliver(&mem, exit.gpa, exit.npages) {
            Delivery::Written => 0,
            Delivery::TooSmall { needed } => {
                exit.npages = needed;
                libc::ENOSPC as u64
            }
            Delivery::BadBuffer => libc::EIO as u64,
        };
        Step::Continue
    }

    /// The KVM vCPU.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn setup_err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
        let index = self.index;
        move |source| VcpuError::Setup {
            index,
            what,
            source,
        }
    }

    /// Sets CPUID, MSRs and the LAPIC, and the registers from the launch plan's VMSA
    /// state for this vCPU; the APs (`is_bsp` false) then wait for INIT/SIPI. With
    /// `hide_sev` the SEV leaf is left out of its CPUID ([`hide_sev_leaves`]). Returns the
    /// CPUID entries it gave the vCPU.
    pub fn configure(
        &self,
        kvm: &Kvm,
        count: u8,
        vmsa: &Vmsa,
        is_bsp: bool,
        hide_sev: bool,
    ) -> Result<Vec<kvm_cpuid_entry2>, VcpuError> {
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(self.setup_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
        let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        filter_cpuid(
            &mut entries,
            VcpuTopology {
                index: self.index,
                count,
                tsc_deadline,
            },
        );
        if hide_sev {
            hide_sev_leaves(&mut entries);
        }
        let cpuid = CpuId::from_entries(&entries).map_err(|_| VcpuError::Setup {
            index: self.index,
            what: "building the CPUID table",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        self.fd
            .set_cpuid2(&cpuid)
            .map_err(self.setup_err("KVM_SET_CPUID2"))?;

        let wanted = boot_msrs();
        let msrs = Msrs::from_entries(&wanted).map_err(|_| VcpuError::Setup {
            index: self.index,
            what: "building the MSR list",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let set = self
            .fd
            .set_msrs(&msrs)
            .map_err(self.setup_err("KVM_SET_MSRS"))?;
        if let Some(first_refused) = wanted.get(set) {
            log::warn!(
                "vCPU {}: KVM set {set} of {} boot MSRs (refused {:#x})",
                self.index,
                wanted.len(),
                first_refused.index
            );
        }

        let mut lapic = self
            .fd
            .get_lapic()
            .map_err(self.setup_err("KVM_GET_LAPIC"))?;
        set_lint(&mut lapic);
        self.fd
            .set_lapic(&lapic)
            .map_err(self.setup_err("KVM_SET_LAPIC"))?;

        self.fd
            .set_regs(&regs_from_vmsa(vmsa))
            .map_err(self.setup_err("KVM_SET_REGS"))?;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(self.setup_err("KVM_GET_SREGS"))?;
        self.fd
            .set_sregs(&sregs_from_vmsa(vmsa, sregs))
            .map_err(self.setup_err("KVM_SET_SREGS"))?;
        self.fd
            .set_fpu(&fpu_from_vmsa(vmsa))
            .map_err(self.setup_err("KVM_SET_FPU"))?;
        if !is_bsp {
            let state = kvm_mp_state {
                mp_state: KVM_MP_STATE_UNINITIALIZED,
            };
            self.fd
                .set_mp_state(state)
                .map_err(self.setup_err("KVM_SET_MP_STATE"))?;
        }
        Ok(entries)
    }

    /// The vCPU's index.
    pub fn index(&self) -> u8 {
        self.index
    }

    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }

    /// Runs the vCPU until the monitor sets `stop`, the guest requests an exit, or the
    /// vCPU fails. Call on the vCPU's own thread, after [`register_kick_handler`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<VcpuStop, VcpuError> {
        let _guard = KickTarget::install(self.fd.get_kvm_run());
        let index = self.index;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(VcpuStop::Stopped);
            }
            if self.exit.requested().is_some() {
                return Ok(VcpuStop::ExitRequested);
            }
            let step = match self.fd.run() {
                // Port I/O is handled below from kvm_run itself: a string access (`rep
                // outsb`) arrives as one exit of `count` elements, which the devices must
                // see as `count` accesses of `size` bytes, not one wide access.
                Ok(VcpuExit::IoOut(port, _)) => Step::Pio { port, write: true },
                Ok(VcpuExit::IoIn(port, _)) => Step::Pio { port, write: false },
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    if !self.mmio.read(addr, data) {
                        log::debug!("vCPU {index}: unclaimed MMIO read {addr:#x}");
                    }
                    Step::Continue
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    if !self.mmio.write(addr, data) {
                        log::debug!("vCPU {index}: unclaimed MMIO write {addr:#x}");
                    }
                    Step::Continue
                }
                Ok(VcpuExit::Hlt) => Step::Halted,
                Ok(VcpuExit::Shutdown) => Step::Shutdown,
                Ok(VcpuExit::InternalError) => Step::Internal,
                Ok(VcpuExit::FailEntry(reason, _)) => {
                    return Err(VcpuError::FailEntry { index, reason });
                }
                Ok(VcpuExit::Hypercall(call)) => match &self.snp {
                    Some(snp) if call.nr == KVM_HC_MAP_GPA_RANGE => {
                        *call.ret = map_gpa_range(snp.host.as_ref(), &call.args, snp.allow_shared);
                        Step::Continue
                    }
                    _ => Step::Unexpected(format!("hypercall {}", call.nr)),
                },
                Ok(VcpuExit::Unsupported(KVM_EXIT_SNP_REQ_CERTS)) => self.serve_certs(),
                Ok(VcpuExit::MemoryFault { flags, gpa, size }) => match &self.snp {
                    Some(snp) => match memory_fault(snp.host.as_ref(), flags, gpa, size) {
                        Ok(()) => Step::Continue,
                        Err(e) => Step::Unexpected(format!("memory fault at {gpa:#x}: {e}")),
                    },
                    None => Step::Unexpected(format!("memory fault at {gpa:#x}")),
                },
                Ok(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SEV_TERM, data)) => {
                    let ghcb = data.first().copied().unwrap_or(0);
                    return Err(VcpuError::SevTermination {
                        index,
                        set: (ghcb >> 12) & 0xf,
                        reason: (ghcb >> 16) & 0xff,
                    });
                }
                Ok(VcpuExit::SystemEvent(kind, _)) => {
                    match kind {
                        KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => {
                            log::info!("vCPU {index}: guest requested shutdown/reset (system event {kind})");
                            self.exit.request(0);
                            return Ok(VcpuStop::ExitRequested);
                        }
                        KVM_SYSTEM_EVENT_CRASH => return Err(VcpuError::Crash { index }),
                        other => Step::Unexpected(format!("system event {other}")),
                    }
                }
                Ok(VcpuExit::Intr) => Step::Continue,
                Ok(other) => Step::Unexpected(format!("{other:?}")),
                Err(e) if e.errno() == libc::EINTR => {
                    KickTarget::clear_immediate_exit(self.fd.get_kvm_run());
                    Step::Continue
                }
                Err(e) if e.errno() == libc::EAGAIN => Step::Continue,
                Err(source) => return Err(VcpuError::Run { index, source }),
            };
            match step {
                Step::Continue => {}
                Step::Pio { port, write } => self.port_io(port, write),
                Step::Halted => return Err(VcpuError::Halted { index }),
                Step::Shutdown => {
                    if self.exit.requested().is_some() {
                        return Ok(VcpuStop::ExitRequested);
                    }
                    return Err(VcpuError::Shutdown {
                        index,
                        rip: self.rip(),
                    });
                }
                Step::Internal => {
                    let run = self.fd.get_kvm_run();
                    // SAFETY: KVM filled the `internal` member of the exit union, since
                    // exit_reason is KVM_EXIT_INTERNAL_ERROR; it is plain old data.
                    let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
                    let kind = if suberror == KVM_INTERNAL_ERROR_EMULATION {
                        "emulation failure"
                    } else {
                        "internal error"
                    };
                    return Err(VcpuError::Internal {
                        index,
                        kind,
                        suberror,
                        rip: self.rip(),
                    });
                }
                Step::Unexpected(exit) => return Err(VcpuError::UnexpectedExit { index, exit }),
            }
        }
    }
}

enum Step {
    Continue,
    Pio { port: u16, write: bool },
    Halted,
    Shutdown,
    Internal,
    Unexpected(String),
}

thread_local! {
    /// The kvm_run of the vCPU running on this thread, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Registers this thread's kvm_run with the kick handler while alive.
struct KickTarget;

impl KickTarget {
    fn install(run: &mut kvm_run) -> Self {
        KVM_RUN.with(|cell| cell.set(run as *mut kvm_run));
        KickTarget
    }

    fn clear_immediate_exit(run: &mut kvm_run) {
        run.immediate_exit = 0;
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        KVM_RUN.with(|cell| cell.set(std::ptr::null_mut()));
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|cell| {
        let run = cell.get();
        if !run.is_null() {
            // SAFETY: the pointer was set by this thread's KickTarget from the live
            // kvm_run mapping of its VcpuFd, and is cleared before that VcpuFd can be
            // dropped; immediate_exit is a plain byte KVM reads on the next KVM_RUN.
            unsafe { (*run).immediate_exit = 1 };
        }
    });
}

/// Installs the kick signal handler (once per process; repeating is harmless).
pub fn register_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), handle_kick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_state() {
        let sregs = boot_sregs(
            kvm_sregs {
                cr0: 0x6000_0010,
                ..Default::default()
            },
            0x9000,
        );
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.cr0 & 0x6000_0000, 0x6000_0000, "reset bits kept");
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!((sregs.cs.selector, sregs.cs.l, sregs.cs.db), (0x10, 1, 0));
        assert_eq!((sregs.ds.selector, sregs.ss.selector), (0x18, 0x18));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 39));
        assert_eq!((sregs.tr.selector, sregs.tr.type_), (0x20, 0xb));
        let regs = boot_regs(0x100_0000);
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x100_0000, 0x7000, 2));
    }

    #[test]
    fn lint_modes() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0700);
        set_lint(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x400);
    }

    #[test]
    fn msr_list_has_misc_enable_and_mtrr() {
        let msrs = boot_msrs();
        assert!(msrs
            .iter()
            .any(|m| m.index == MSR_IA32_MISC_ENABLE && m.data == 1));
        assert!(msrs
            .iter()
            .any(|m| m.index == MSR_MTRR_DEF_TYPE && m.data == 0x806));
    }
}

/// The byte length of a port access of `count` elements of `size` bytes, when KVM could
/// have produced it (size 1, 2 or 4; at least one element; within the one data page KVM
/// uses); `None` otherwise.
fn split_pio(size: usize, count: usize) -> Option<usize> {
    const PIO_PAGE: usize = 4096;
    if !matches!(size, 1 | 2 | 4) || count == 0 {
        return None;
    }
    size.checked_mul(count).filter(|&len| len <= PIO_PAGE)
}

#[cfg(test)]
mod pio_tests {
    use super::split_pio;

    #[test]
    fn string_io_is_split_into_elements() {
        assert_eq!(split_pio(1, 1), Some(1));
        assert_eq!(split_pio(1, 30), Some(30));
        assert_eq!(split_pio(4, 1024), Some(4096));
        assert_eq!(split_pio(4, 1025), None);
        assert_eq!(split_pio(3, 1), None);
        assert_eq!(split_pio(2, 0), None);
        assert_eq!(split_pio(4, usize::MAX), None);
    }
}
