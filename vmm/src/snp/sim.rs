//! The simulated SNP host: a model of the kernel's SNP API over a plain KVM VM, calling
//! the simulated secure processor ([`SimPsp`]) where the real kernel calls the firmware.
//!
//! What it enforces, as the kernel does (SNP-FACTS §1.5-1.9): INIT2 once and before any
//! vCPU; LAUNCH_START after INIT2, once; LAUNCH_UPDATE only after LAUNCH_START and before
//! FINISH, only on GPAs of a guest_memfd-backed slot that are marked private, never twice
//! on a page, `flags` zero, a non-zero 4 KiB-multiple length, the kernel's partial-progress
//! convention (it processes at most [`PAGES_PER_CALL`] pages per call, so the launcher's
//! loop really runs), and the CPUID rewrite-and-fail behaviour; FINISH once, with every
//! vCPU's VMSA built from its registers as `sev_es_sync_vmsa` does. The KVM policy rule
//! of Linux ≤ 6.18 (bits 16 and 17 set, SINGLE_SOCKET refused) is applied at LAUNCH_START.
//!
//! What it does not do: encrypt anything. Guest memory is ordinary memory that the host
//! can read and write; "private" is bookkeeping. The guest runs as a plain KVM guest.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::vmsa::Vmsa;
use cloister_attestation::sim::{FwStatus, SimPsp};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd};

use super::abi::{
    page_type, KvmCreateGuestMemfd, KvmMemoryAttributes, KvmSevInit, KvmSevSnpLaunchFinish,
    KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate, KvmUserspaceMemoryRegion2, ID_AUTH_SIZE,
    ID_BLOCK_SIZE, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEM_GUEST_MEMFD,
};
use super::host::{HostError, SnpHost};
use super::kvm::{kvm_accepts_policy, SnpCapabilities};
use crate::vstate::vm::{Vm, VmError};
use crate::vstate::vmsa_regs::vmsa_from_kvm;

/// Pages one LAUNCH_UPDATE call processes at most (the real kernel stops early on
/// signals and reschedules; this makes partial progress happen every launch).
pub const PAGES_PER_CALL: u64 = 512;

struct Slot {
    gpa: u64,
    size: u64,
    host: u64,
    gmem: bool,
    /// One bit per page: private.
    private: Vec<u64>,
    /// One bit per page: added with LAUNCH_UPDATE.
    populated: Vec<u64>,
}

impl Slot {
    fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.size
    }
    fn index(&self, gpa: u64) -> (usize, u64) {
        let page = (gpa - self.gpa) / PAGE_SIZE as u64;
        ((page / 64) as usize, 1 << (page % 64))
    }
}

fn bit(bits: &[u64], (word, mask): (usize, u64)) -> bool {
    bits.get(word).is_some_and(|w| w & mask != 0)
}

fn set_bit(bits: &mut [u64], (word, mask): (usize, u64), on: bool) {
    if let Some(w) = bits.get_mut(word) {
        if on {
            *w |= mask;
        } else {
            *w &= !mask;
        }
    }
}

#[derive(Default)]
struct KernelState {
    hypercall_exit: bool,
    init2: bool,
    started: bool,
    finished: bool,
    req_certs: bool,
    vcpus: u32,
    gmem_fds: Vec<i32>,
    slots: Vec<Slot>,
}

/// The simulated kernel + secure processor.
pub struct SimSnpHost {
    vm: Vm,
    psp: Arc<Mutex<SimPsp>>,
    state: Mutex<KernelState>,
}

impl SimSnpHost {
    /// A plain KVM VM on `kvm`, and `psp` as its secure processor.
    pub fn new(kvm: &Kvm, psp: Arc<Mutex<SimPsp>>) -> Result<Self, VmError> {
        Ok(SimSnpHost {
            vm: Vm::new(kvm)?,
            psp,
            state: Mutex::new(KernelState::default()),
        })
    }

    /// The secure processor (the guest-request doorbell answers through it).
    pub fn psp(&self) -> &Arc<Mutex<SimPsp>> {
        &self.psp
    }

    fn state(&self) -> MutexGuard<'_, KernelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_psp(&self) -> MutexGuard<'_, SimPsp> {
        self.psp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every page of `gpa..+len` is private (for tests and the doorbell).
    pub fn is_private(&self, gpa: u64, len: u64) -> bool {
        let st = self.state();
        (0..len.div_ceil(PAGE_SIZE as u64)).all(|i| {
            let at = gpa + i * PAGE_SIZE as u64;
            st.slots
                .iter()
                .find(|s| s.contains(at))
                .is_some_and(|s| bit(&s.private, s.index(at)))
        })
    }
}

fn fw(op: &'static str, status: FwStatus) -> HostError {
    HostError {
        op,
        errno: libc::EIO,
        fw_error: status.code(),
    }
}

const UPDATE: &str = "KVM_SEV_SNP_LAUNCH_UPDATE";

impl SimSnpHost {
    /// Whether the monitor enabled the certificate exit.
    pub fn req_certs_enabled(&self) -> bool {
        self.state().req_certs
    }
}

impl SnpHost for SimSnpHost {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn vm(&self) -> &Vm {
        &self.vm
    }

    fn enable_map_gpa_range_exit(&self) -> Result<(), HostError> {
        self.state().hypercall_exit = true;
        Ok(())
    }

    fn sev_init2(&self, init: &KvmSevInit) -> Result<(), HostError> {
        let mut st = self.state();
        let op = "KVM_SEV_INIT2";
        if st.init2 || st.vcpus > 0 || init.flags != 0 || init.ghcb_version > 2 {
            return Err(HostError::os(op, libc::EINVAL));
        }
        // No optional VMSA features on this platform (SNP_ACTIVE is KVM's to set).
        if init.vmsa_features & !1 != 0 {
            return Err(HostError::os(op, libc::EINVAL));
        }
        st.init2 = true;
        Ok(())
    }

    fn create_guest_memfd(&self, gmem: &KvmCreateGuestMemfd) -> Result<OwnedFd, HostError> {
        let op = "KVM_CREATE_GUEST_MEMFD";
        if gmem.flags != 0 || gmem.size == 0 || !gmem.size.is_multiple_of(PAGE_SIZE as u64) {
            return Err(HostError::os(op, libc::EINVAL));
        }
        // A memfd stands in for the guest_memfd: its only role here is to be an fd the
        // memslot names. The simulated private memory is the slot's ordinary mapping.
        // SAFETY: the name is a NUL-terminated literal; memfd_create has no other inputs.
        let fd = unsafe { libc::memfd_create(c"cloister-sim-gmem".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(HostError::os(
                op,
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            ));
        }
        self.state().gmem_fds.push(fd);
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    unsafe fn set_user_memory_region2(
        &self,
        region: &KvmUserspaceMemoryRegion2,
    ) -> Result<(), HostError> {
        let op = "KVM_SET_USER_MEMORY_REGION2";
        let mut st = self.state();
        let gmem = region.flags & KVM_MEM_GUEST_MEMFD != 0;
        if region.flags & !KVM_MEM_GUEST_MEMFD != 0
            || (gmem && !st.gmem_fds.contains(&(region.guest_memfd as i32)))
            || !region.memory_size.is_multiple_of(PAGE_SIZE as u64)
            || !region.guest_phys_addr.is_multiple_of(PAGE_SIZE as u64)
        {
            return Err(HostError::os(op, libc::EINVAL));
        }
        let plain = kvm_userspace_memory_region {
            slot: region.slot,
            flags: 0,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.userspace_addr,
        };
        // SAFETY: the caller guarantees (this method's contract) that the mapping is
        // valid for the VM's lifetime and not used for anything else.
        unsafe { self.vm.fd().set_user_memory_region(plain) }
            .map_err(|e| HostError::os(op, e.errno()))?;
        let words = (region.memory_size / PAGE_SIZE as u64).div_ceil(64) as usize;
        st.slots.push(Slot {
            gpa: region.guest_phys_addr,
            size: region.memory_size,
            host: region.userspace_addr,
            gmem,
            private: vec![0; words],
            populated: vec![0; words],
        });
        Ok(())
    }

    fn set_memory_attributes(&self, attributes: &KvmMemoryAttributes) -> Result<(), HostError> {
        let op = "KVM_SET_MEMORY_ATTRIBUTES";
        let a = attributes;
        if a.flags != 0
            || a.attributes & !KVM_MEMORY_ATTRIBUTE_PRIVATE != 0
            || a.size == 0
            || !a.address.is_multiple_of(PAGE_SIZE as u64)
            || !a.size.is_multiple_of(PAGE_SIZE as u64)
        {
            return Err(HostError::os(op, libc::EINVAL));
        }
        let private = a.attributes != 0;
        let mut st = self.state();
        let end = a
            .address
            .checked_add(a.size)
            .ok_or(HostError::os(op, libc::EINVAL))?;
        let mut at = a.address;
        // Attributes can be set on any GPA in KVM; here only slots are tracked, and a
        // private attribute outside a guest_memfd slot is refused so mistakes show.
        while at < end {
            match st.slots.iter_mut().find(|s| s.contains(at)) {
                Some(slot) if slot.gmem || !private => {
                    let idx = slot.index(at);
                    set_bit(&mut slot.private, idx, private);
                }
                _ => return Err(HostError::os(op, libc::EINVAL)),
            }
            at += PAGE_SIZE as u64;
        }
        Ok(())
    }

    /// Recorded like the kernel does (only before any vCPU exists); the simulated
    /// platform's VMGEXIT serves certificates itself, from the same table.
    fn snp_enable_req_certs(&self) -> Result<(), HostError> {
        let mut st = self.state();
        if !st.init2 || st.vcpus > 0 {
            return Err(HostError::os("KVM_SEV_SNP_ENABLE_REQ_CERTS", libc::EINVAL));
        }
        st.req_certs = true;
        Ok(())
    }

    fn snp_launch_start(&self, start: &KvmSevSnpLaunchStart) -> Result<(), HostError> {
        let op = "KVM_SEV_SNP_LAUNCH_START";
        let mut st = self.state();
        if !st.init2 || st.started || start.flags != 0 {
            return Err(HostError::os(op, libc::EINVAL));
        }
        let p = start.policy;
        // The rule of KVM without KVM_X86_SNP_POLICY_BITS (Linux 6.11-6.18).
        if let Err(why) = kvm_accepts_policy(p, &SnpCapabilities::default()) {
            log::debug!("sim kernel: LAUNCH_START refused: {why}");
            return Err(HostError::os(op, libc::EINVAL));
        }
        self.lock_psp()
            .launch_start(p, start.gosvw)
            .map_err(|s| fw(op, s))?;
        st.started = true;
        Ok(())
    }

    unsafe fn snp_launch_update(
        &self,
        update: &mut KvmSevSnpLaunchUpdate,
    ) -> Result<(), HostError> {
        let mut st = self.state();
        if !st.started || st.finished || update.flags != 0 {
            return Err(HostError::os(UPDATE, libc::EINVAL));
        }
        let kind = match update.type_ {
            page_type::NORMAL => PageType::Normal,
            page_type::ZERO => PageType::Zero,
            page_type::UNMEASURED => PageType::Unmeasured,
            page_type::SECRETS => PageType::Secrets,
            page_type::CPUID => PageType::Cpuid,
            _ => return Err(HostError::os(UPDATE, libc::EINVAL)),
        };
        if update.len == 0 || !update.len.is_multiple_of(PAGE_SIZE as u64) {
            return Err(HostError::os(UPDATE, libc::EINVAL));
        }
        let mut done = 0u64;
        let pages = (update.len / PAGE_SIZE as u64).min(PAGES_PER_CALL);
        let mut psp = self.lock_psp();
        while done < pages {
            let gpa = update
                .gfn_start
                .checked_add(done)
                .and_then(|g| g.checked_mul(PAGE_SIZE as u64))
                .ok_or(HostError::os(UPDATE, libc::EINVAL))?;
            let Some(slot) = st.slots.iter_mut().find(|s| s.contains(gpa)) else {
                return Err(HostError::os(UPDATE, libc::EINVAL));
            };
            let idx = slot.index(gpa);
            // The kernel's preconditions: a guest_memfd slot, a private attribute, a page
            // not yet populated.
            let refusal = if !slot.gmem || !bit(&slot.private, idx) {
                Some(HostError::os(UPDATE, libc::EINVAL))
            } else if bit(&slot.populated, idx) {
                Some(HostError::os(UPDATE, libc::EIO))
            } else {
                None
            };
            if let Some(e) = refusal {
                return partial(update, done, kind, e);
            }
            let src = update.uaddr + done * PAGE_SIZE as u64;
            let mut page = [0u8; PAGE_SIZE];
            if kind != PageType::Zero {
                // SAFETY: the caller guarantees uaddr..+len is readable (this method's
                // contract); `src` is inside it.
                unsafe {
                    std::ptr::copy_nonoverlapping(src as *const u8, page.as_mut_ptr(), PAGE_SIZE)
                };
            }
            if let Err(status) = psp.launch_update(gpa, kind, &mut page) {
                if kind == PageType::Cpuid && status == FwStatus::INVALID_PARAM {
                    // As KVM does: copy the firmware's corrected page back over the source.
                    // SAFETY: the caller guarantees uaddr..+len is writable.
                    unsafe {
                        std::ptr::copy_nonoverlapping(page.as_ptr(), src as *mut u8, PAGE_SIZE)
                    };
                }
                return partial(update, done, kind, fw(UPDATE, status));
            }
            let host = slot.host + (gpa - slot.gpa);
            // SAFETY: `host` is inside the slot's mapping, which the VMM guaranteed valid
            // in set_user_memory_region2; this is the copy into the "private" page.
            let dst = unsafe { std::slice::from_raw_parts_mut(host as *mut u8, PAGE_SIZE) };
            // Fresh guest memory is already zero; skip the write then, so that ZERO pages
            // do not make the whole guest resident.
            if page.iter().any(|&b| b != 0) || dst.iter().any(|&b| b != 0) {
                dst.copy_from_slice(&page);
            }
            set_bit(&mut slot.populated, idx, true);
            done += 1;
        }
        advance(update, done, kind);
        Ok(())
    }

    fn create_vcpu(&self, index: u8) -> Result<VcpuFd, HostError> {
        let mut st = self.state();
        if st.finished {
            return Err(HostError::os("KVM_CREATE_VCPU", libc::EINVAL));
        }
        let fd = self
            .vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|e| HostError::os("KVM_CREATE_VCPU", e.errno()))?;
        st.vcpus += 1;
        Ok(fd)
    }

    unsafe fn snp_launch_finish(
        &self,
        finish: &KvmSevSnpLaunchFinish,
        vcpus: &[&VcpuFd],
    ) -> Result<(), HostError> {
        let op = "KVM_SEV_SNP_LAUNCH_FINISH";
        let mut st = self.state();
        if !st.started || st.finished || finish.flags != 0 || vcpus.len() as u32 != st.vcpus {
            return Err(HostError::os(op, libc::EINVAL));
        }
        let mut psp = self.lock_psp();
        // Every vCPU's VMSA, in index order, from its registers.
        let fixed = Vmsa::long_mode(&Default::default());
        for vcpu in vcpus {
            let regs = vcpu.get_regs().map_err(|e| HostError::os(op, e.errno()))?;
            let sregs = vcpu.get_sregs().map_err(|e| HostError::os(op, e.errno()))?;
            // KVM builds the VMSA's x87/SSE state from the guest's XSAVE image (legacy
            // area: FCW in the first word, MXCSR at byte 24).
            let xsave = vcpu.get_xsave().map_err(|e| HostError::os(op, e.errno()))?;
            let fpu = kvm_bindings::kvm_fpu {
                fcw: (xsave.region[0] & 0xffff) as u16,
                mxcsr: xsave.region[6],
                ..Default::default()
            };
            let mut vmsa = vmsa_from_kvm(&regs, &sregs, &fpu, &fixed);
            // KVM ORs SNP_ACTIVE into the VM's features; INIT2 here allows no others.
            vmsa.sev_features = 1;
            log::debug!("sim kernel: VMSA of a vCPU from its registers: {vmsa:?}");
            psp.launch_update_vmsa(&vmsa.to_page())
                .map_err(|s| fw(op, s))?;
        }
        let id_block = if finish.id_block_en != 0 {
            let mut block = [0u8; ID_BLOCK_SIZE];
            let mut auth = [0u8; ID_AUTH_SIZE];
            // SAFETY: the caller guarantees 96 and 4096 readable bytes when id_block_en.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    finish.id_block_uaddr as *const u8,
                    block.as_mut_ptr(),
                    ID_BLOCK_SIZE,
                );
                std::ptr::copy_nonoverlapping(
                    finish.id_auth_uaddr as *const u8,
                    auth.as_mut_ptr(),
                    ID_AUTH_SIZE,
                );
            }
            Some((block, auth))
        } else {
            None
        };
        psp.launch_finish(
            id_block.as_ref().map(|(b, a)| (b, a)),
            finish.auth_key_en != 0,
            finish.host_data,
        )
        .map_err(|s| fw(op, s))?;
        st.finished = true;
        Ok(())
    }
}

/// The kernel's convention: progress before a failure is reported as success (the error
/// surfaces on the next call); no progress returns the error.
fn partial(
    update: &mut KvmSevSnpLaunchUpdate,
    done: u64,
    kind: PageType,
    error: HostError,
) -> Result<(), HostError> {
    if done == 0 {
        return Err(error);
    }
    advance(update, done, kind);
    Ok(())
}

fn advance(update: &mut KvmSevSnpLaunchUpdate, pages: u64, kind: PageType) {
    update.gfn_start += pages;
    update.len -= pages * PAGE_SIZE as u64;
    if kind != PageType::Zero {
        update.uaddr += pages * PAGE_SIZE as u64;
    }
}
