//! The seam between the SNP launcher and the host: the kernel's SEV-SNP API, one method
//! per ioctl, taking the kernel's own argument structs ([`super::abi`]). Two hosts
//! implement it: `kvm` (the real ioctls on /dev/kvm and /dev/sev) and `sim` (a model of
//! the kernel and the AMD secure processor over a plain KVM VM). The launcher
//! ([`super::launcher`]) is written once, against this trait.
//!
//! Methods take `&self`: the host is shared with the vCPU threads, which convert pages
//! between shared and private at run time. A host that keeps state locks it inside.

use std::os::fd::OwnedFd;

use kvm_ioctls::VcpuFd;

use super::abi::{
    KvmCreateGuestMemfd, KvmMemoryAttributes, KvmSevInit, KvmSevSnpLaunchFinish,
    KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate, KvmUserspaceMemoryRegion2,
};
use crate::vstate::vm::Vm;

/// A failed host call: the ioctl's errno and, for firmware commands, the firmware status
/// the kernel wrote back (`kvm_sev_cmd.error`; 0 when the failure is not the firmware's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: {} (firmware status {fw_error:#x}{})", std::io::Error::from_raw_os_error(*errno), fw_status_name(*fw_error))]
pub struct HostError {
    /// The ioctl or subcommand.
    pub op: &'static str,
    /// errno.
    pub errno: i32,
    /// Firmware status (SEV_RET_*), 0 if none.
    pub fw_error: u32,
}

impl HostError {
    /// An error without a firmware status.
    pub fn os(op: &'static str, errno: i32) -> Self {
        HostError {
            op,
            errno,
            fw_error: 0,
        }
    }
}

/// Firmware status: INVALID_PARAM (also the CPUID-page rejection).
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;

fn fw_status_name(code: u32) -> &'static str {
    match code {
        0 => "",
        0x01 => ": invalid platform state",
        0x02 => ": invalid guest state",
        0x04 => ": invalid length",
        0x07 => ": policy failure",
        0x09 => ": invalid address",
        0x0a => ": bad signature",
        0x0b => ": bad measurement",
        0x15 => ": unsupported",
        SEV_RET_INVALID_PARAM => ": invalid parameter",
        0x17 => ": resource limit",
        0x19 => ": invalid page size",
        0x1a => ": invalid page state",
        0x1c => ": invalid page owner",
        0x1d => ": AEAD overflow",
        0x27 => ": invalid key",
        _ => "",
    }
}

/// The kernel's SEV-SNP API as the launcher uses it (SNP-FACTS §1.12).
pub trait SnpHost: Send + Sync {
    /// "kvm" or "sim", for messages.
    fn name(&self) -> &'static str;

    /// The VM (KVM_X86_SNP_VM on real SNP; a plain VM on the simulated platform), with its
    /// in-kernel interrupt controllers.
    fn vm(&self) -> &Vm;

    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL, 1 << KVM_HC_MAP_GPA_RANGE)`.
    fn enable_map_gpa_range_exit(&self) -> Result<(), HostError>;

    /// `KVM_SEV_INIT2`; before any vCPU exists.
    fn sev_init2(&self, init: &KvmSevInit) -> Result<(), HostError>;

    /// `KVM_CREATE_GUEST_MEMFD`.
    fn create_guest_memfd(&self, gmem: &KvmCreateGuestMemfd) -> Result<OwnedFd, HostError>;

    /// `KVM_SET_USER_MEMORY_REGION2`.
    ///
    /// # Safety
    /// `region.userspace_addr .. + memory_size` is a mapping of this process that stays
    /// valid (and is not used for anything else) for as long as the VM exists.
    unsafe fn set_user_memory_region2(
        &self,
        region: &KvmUserspaceMemoryRegion2,
    ) -> Result<(), HostError>;

    /// `KVM_SET_MEMORY_ATTRIBUTES`: private (8) or shared (0).
    fn set_memory_attributes(&self, attributes: &KvmMemoryAttributes) -> Result<(), HostError>;

    /// `KVM_SEV_SNP_LAUNCH_START`.
    fn snp_launch_start(&self, start: &KvmSevSnpLaunchStart) -> Result<(), HostError>;

    /// `KVM_SEV_SNP_LAUNCH_UPDATE`: may process only part of the range, advancing
    /// `gfn_start`, `uaddr` and `len` (the caller loops until `len` is 0). When firmware
    /// rejects a CPUID page it writes the corrected page back over the source and fails
    /// with firmware status INVALID_PARAM.
    ///
    /// # Safety
    /// `update.uaddr .. + update.len` is readable and writable memory of this process for
    /// the duration of the call (unless the type is ZERO).
    unsafe fn snp_launch_update(&self, update: &mut KvmSevSnpLaunchUpdate)
        -> Result<(), HostError>;

    /// `KVM_SEV_SNP_ENABLE_REQ_CERTS` (Linux 7.0+, no argument): extended guest requests
    /// for reports then exit to the monitor with `KVM_EXIT_SNP_REQ_CERTS`, which writes
    /// the certificate table. Before any vCPU exists.
    fn snp_enable_req_certs(&self) -> Result<(), HostError>;

    /// `KVM_CREATE_VCPU`; after INIT2.
    fn create_vcpu(&self, index: u8) -> Result<VcpuFd, HostError>;

    /// `KVM_SEV_SNP_LAUNCH_FINISH`. The kernel builds each vCPU's VMSA from its register
    /// state (`vcpus`, in index order, all of them; the real host finds them itself).
    ///
    /// # Safety
    /// When `finish.id_block_en` is set, `id_block_uaddr` points at 96 readable bytes and
    /// `id_auth_uaddr` at 4096.
    unsafe fn snp_launch_finish(
        &self,
        finish: &KvmSevSnpLaunchFinish,
        vcpus: &[&VcpuFd],
    ) -> Result<(), HostError>;
}
