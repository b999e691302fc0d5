//! The SNP launcher: the whole launch sequence of an SEV-SNP guest (SNP-FACTS §1.12),
//! written once over [`SnpHost`], so the same code drives real SNP (`kvm`) and the
//! simulated platform (`sim`).
//!
//! Order: enable MAP_GPA_RANGE exits → INIT2 → guest_memfd + USER_MEMORY_REGION2 per RAM
//! region → LAUNCH_START → vCPUs → for each plan region: make it private, LAUNCH_UPDATE in
//! a loop until the kernel reports the whole range done (a rejected CPUID page is retried
//! once with the page the kernel wrote back) → vCPU registers from the plan's VMSAs →
//! LAUNCH_FINISH with host data and the optional ID block. At run time the vCPU threads
//! call [`map_gpa_range`] and [`memory_fault`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::plan::{LaunchPlan, RegionContents};
use kvm_ioctls::VcpuFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::abi::{
    page_type, KvmCreateGuestMemfd, KvmMemoryAttributes, KvmSevInit, KvmSevSnpLaunchFinish,
    KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate, KvmUserspaceMemoryRegion2, GHCB_VERSION_DEFAULT,
    KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEMORY_EXIT_FLAG_PRIVATE, KVM_MEM_GUEST_MEMFD,
    MAP_GPA_RANGE_ENCRYPTED, MAP_GPA_RANGE_PAGE_SIZE_MASK,
};
use super::host::{HostError, SnpHost, SEV_RET_INVALID_PARAM};
use crate::memory::GuestMemoryMmap;

/// How many times LAUNCH_UPDATE may return EAGAIN or no progress for one range before
/// the launch is abandoned.
const MAX_STALLS: u32 = 16;

/// Why a launch failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A host call failed.
    #[error("SEV-SNP launch on the {host} platform: {source}")]
    Host {
        /// "kvm" or "sim".
        host: &'static str,
        /// The failed call.
        source: HostError,
    },
    /// The firmware rejected the CPUID page twice.
    #[error("SEV-SNP launch: the firmware rejected the CPUID page at {gpa:#x} again after correcting it")]
    CpuidRejected {
        /// The page's GPA.
        gpa: u64,
    },
    /// LAUNCH_UPDATE stopped making progress.
    #[error("SEV-SNP launch: LAUNCH_UPDATE of {what} at {gpa:#x} made no progress ({left:#x} bytes left)")]
    Stalled {
        /// Region description.
        what: String,
        /// Where the kernel stopped.
        gpa: u64,
        /// Bytes left.
        left: u64,
    },
    /// The kernel reported the range done but did not reach its end.
    #[error(
        "SEV-SNP launch: LAUNCH_UPDATE of {what} ended at GFN {gfn:#x}, expected {expected:#x}"
    )]
    ShortUpdate {
        /// Region description.
        what: String,
        /// The final gfn_start.
        gfn: u64,
        /// Where it should have ended.
        expected: u64,
    },
    /// Guest memory has no host mapping.
    #[error("SEV-SNP launch: guest memory region at {0:#x} has no host mapping")]
    NoHostMapping(u64),
    /// A plan region's bytes are missing or a CPUID page is not one page.
    #[error("SEV-SNP launch: {0}")]
    Plan(String),
}

/// What the launch did, for the user and the benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LaunchStats {
    /// LAUNCH_UPDATE calls issued.
    pub update_calls: u64,
    /// Pages launched (all types, VMSAs excluded: the kernel adds those at FINISH).
    pub pages: u64,
    /// CPUID pages the firmware corrected (and that were retried).
    pub cpuid_retries: u32,
}

/// The launch state machine over one host.
pub struct SnpLauncher {
    host: Arc<dyn SnpHost>,
    gmem: Vec<OwnedFd>,
    stats: LaunchStats,
}

impl SnpLauncher {
    /// Enables MAP_GPA_RANGE exits and initialises the VM as an SNP guest (INIT2, with
    /// no optional VMSA features: Linux refuses features it does not know).
    pub fn new(host: Arc<dyn SnpHost>) -> Result<Self, LaunchError> {
        let launcher = SnpLauncher {
            host,
            gmem: Vec::new(),
            stats: LaunchStats::default(),
        };
        launcher
            .host
            .enable_map_gpa_range_exit()
            .map_err(|e| launcher.err(e))?;
        let init = KvmSevInit {
            vmsa_features: 0,
            ghcb_version: GHCB_VERSION_DEFAULT,
            ..Default::default()
        };
        launcher
            .host
            .sev_init2(&init)
            .map_err(|e| launcher.err(e))?;
        Ok(launcher)
    }

    fn err(&self, source: HostError) -> LaunchError {
        LaunchError::Host {
            host: self.host.name(),
            source,
        }
    }

    /// The host.
    pub fn host(&self) -> &Arc<dyn SnpHost> {
        &self.host
    }

    /// Gives every region of `mem` a guest_memfd and registers it as a private-capable
    /// memory slot; `mem`'s mapping is the shared view of the same GPAs.
    pub fn add_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        for (slot, region) in mem.iter().enumerate() {
            let host_addr = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| LaunchError::NoHostMapping(region.start_addr().0))?;
            let gmem = self
                .host
                .create_guest_memfd(&KvmCreateGuestMemfd {
                    size: region.len(),
                    ..Default::default()
                })
                .map_err(|e| self.err(e))?;
            let fd = u32::try_from(gmem.as_raw_fd())
                .map_err(|_| self.err(HostError::os("KVM_CREATE_GUEST_MEMFD", libc::EBADF)))?;
            let slot_region = KvmUserspaceMemoryRegion2 {
                slot: slot as u32,
                flags: KVM_MEM_GUEST_MEMFD,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host_addr as u64,
                guest_memfd_offset: 0,
                guest_memfd: fd,
                ..Default::default()
            };
            // SAFETY: the mapping [host_addr, host_addr + len) belongs to `mem`, which
            // the VMM keeps alive as long as the VM; slots do not overlap because the
            // regions of a GuestMemoryMmap do not.
            unsafe { self.host.set_user_memory_region2(&slot_region) }.map_err(|e| self.err(e))?;
            self.gmem.push(gmem);
        }
        Ok(())
    }

    /// SNP_LAUNCH_START with the plan's guest policy.
    pub fn launch_start(&self, policy: u64) -> Result<(), LaunchError> {
        let start = KvmSevSnpLaunchStart {
            policy,
            ..Default::default()
        };
        self.host.snp_launch_start(&start).map_err(|e| self.err(e))
    }

    /// Creates vCPU `index` (after INIT2, before FINISH).
    pub fn create_vcpu(&self, index: u8) -> Result<VcpuFd, LaunchError> {
        self.host.create_vcpu(index).map_err(|e| self.err(e))
    }

    /// Launches every non-VMSA region of `plan`, in order. CPUID regions are loaded from
    /// `cpuid_page` (the table the VMM offers; the firmware checks it).
    pub fn launch_regions(
        &mut self,
        plan: &LaunchPlan<'_>,
        cpuid_page: &[u8; PAGE_SIZE],
    ) -> Result<&LaunchStats, LaunchError> {
        for region in plan.regions() {
            let what = region.role().to_string();
            let kind = match region.page_type() {
                PageType::Vmsa => continue,
                PageType::Normal => page_type::NORMAL,
                PageType::Zero => page_type::ZERO,
                PageType::Unmeasured => page_type::UNMEASURED,
                PageType::Secrets => page_type::SECRETS,
                PageType::Cpuid => page_type::CPUID,
            };
            let mut source: Vec<u8> = match (region.contents(), region.page_type()) {
                (RegionContents::Bytes(b), _) => b.to_vec(),
                (RegionContents::Zeroes, PageType::Cpuid) => {
                    if region.len() != PAGE_SIZE as u64 {
                        return Err(LaunchError::Plan(format!(
                            "the CPUID region at {:#x} must be one page",
                            region.gpa()
                        )));
                    }
                    cpuid_page.to_vec()
                }
                // ZERO pages need no source; SECRETS and UNMEASURED get zeroes (the
                // firmware fills the secrets page, and this layout has no unmeasured
                // contents).
                (RegionContents::Zeroes, PageType::Zero) => Vec::new(),
                (RegionContents::Zeroes, _) => {
                    let len = usize::try_from(region.len())
                        .map_err(|_| LaunchError::Plan(format!("{what} is too large")))?;
                    vec![0; len]
                }
            };
            self.host
                .set_memory_attributes(&KvmMemoryAttributes {
                    address: region.gpa(),
                    size: region.len(),
                    attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE,
                    flags: 0,
                })
                .map_err(|e| self.err(e))?;
            self.update_range(&what, region.gpa(), region.len(), kind, &mut source)?;
            self.stats.pages += region.page_count();
        }
        Ok(&self.stats)
    }

    /// LAUNCH_UPDATE over one range until the kernel reports it all done.
    fn update_range(
        &mut self,
        what: &str,
        gpa: u64,
        len: u64,
        kind: u8,
        source: &mut [u8],
    ) -> Result<(), LaunchError> {
        let uaddr = if kind == page_type::ZERO {
            0
        } else {
            source.as_mut_ptr() as u64
        };
        let mut update = KvmSevSnpLaunchUpdate {
            gfn_start: gpa >> 12,
            uaddr,
            len,
            type_: kind,
            ..Default::default()
        };
        let mut stalls = 0;
        let mut cpuid_retried = false;
        while update.len > 0 {
            let before = update;
            self.stats.update_calls += 1;
            // SAFETY: `source` is a live, exclusively borrowed buffer of `len` bytes
            // (empty only for ZERO pages, whose uaddr the kernel ignores); the kernel
            // advances uaddr only within it, and writes back into it only for a
            // rejected CPUID page, which is inside it.
            let result = unsafe { self.host.snp_launch_update(&mut update) };
            match result {
                Ok(()) => {
                    if update.len == before.len {
                        stalls += 1;
                        if stalls > MAX_STALLS {
                            return Err(LaunchError::Stalled {
                                what: what.to_string(),
                                gpa: update.gfn_start << 12,
                                left: update.len,
                            });
                        }
                    }
                }
                Err(e) if e.errno == libc::EAGAIN => {
                    stalls += 1;
                    if stalls > MAX_STALLS {
                        return Err(self.err(e));
                    }
                    update = before;
                }
                Err(e)
                    if kind == page_type::CPUID
                        && e.fw_error == SEV_RET_INVALID_PARAM
                        && !cpuid_retried =>
                {
                    // The kernel copied the firmware's corrected table over the source
                    // page; log what changed and offer it once more (the measurement
                    // does not change: CPUID pages are measured as zeroes, and a failed
                    // command leaves the digest alone).
                    cpuid_retried = true;
                    self.stats.cpuid_retries += 1;
                    log::warn!(
                        "SEV-SNP: the firmware corrected the CPUID page at {gpa:#x}; retrying with its values"
                    );
                    update = before;
                }
                Err(e) if kind == page_type::CPUID && e.fw_error == SEV_RET_INVALID_PARAM => {
                    return Err(LaunchError::CpuidRejected { gpa });
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        let expected = (gpa + len) >> 12;
        if update.gfn_start != expected {
            return Err(LaunchError::ShortUpdate {
                what: what.to_string(),
                gfn: update.gfn_start,
                expected,
            });
        }
        Ok(())
    }

    /// SNP_LAUNCH_FINISH: the kernel measures every vCPU's VMSA (built from the
    /// registers already set), then the ID block and host data go to the firmware.
    pub fn finish(&self, plan: &LaunchPlan<'_>, vcpus: &[&VcpuFd]) -> Result<(), LaunchError> {
        let mut finish = KvmSevSnpLaunchFinish {
            host_data: plan.host_data,
            ..Default::default()
        };
        if let Some(id) = &plan.id_block {
            finish.id_block_uaddr = id.id_block.as_ptr() as u64;
            finish.id_auth_uaddr = id.id_auth.as_ptr() as u64;
            finish.id_block_en = 1;
            finish.auth_key_en = u8::from(id.author_key_enabled);
        }
        // SAFETY: when id_block_en is set, the two pointers are the plan's boxed 96- and
        // 4096-byte arrays, alive for this call.
        unsafe { self.host.snp_launch_finish(&finish, vcpus) }.map_err(|e| self.err(e))
    }

    /// What the launch did.
    pub fn stats(&self) -> &LaunchStats {
        &self.stats
    }
}

/// A MAP_GPA_RANGE hypercall exit (the guest's page-state change): `args[0]` = GPA,
/// `args[1]` = number of 4 KiB pages, `args[2]` = attributes (bit 4: private). Returns the
/// value for `hypercall.ret` (0 success; KVM does not clear it, so it is always written).
/// With `allow_shared` false (the tenant policy forbids shared memory) a conversion to
/// shared is refused with EPERM and changes nothing.
pub fn map_gpa_range(host: &dyn SnpHost, args: &[u64; 6], allow_shared: bool) -> u64 {
    let (gpa, npages, attrs) = (args[0], args[1], args[2]);
    let size = npages.checked_mul(PAGE_SIZE as u64);
    let valid = gpa.is_multiple_of(PAGE_SIZE as u64)
        && npages > 0
        && attrs & !(MAP_GPA_RANGE_ENCRYPTED | MAP_GPA_RANGE_PAGE_SIZE_MASK) == 0
        && attrs & MAP_GPA_RANGE_PAGE_SIZE_MASK <= 2;
    let Some(size) = size.filter(|s| valid && gpa.checked_add(*s).is_some()) else {
        return libc::EINVAL as u64;
    };
    let private = attrs & MAP_GPA_RANGE_ENCRYPTED != 0;
    if !private && !allow_shared {
        return libc::EPERM as u64;
    }
    match host.set_memory_attributes(&KvmMemoryAttributes {
        address: gpa,
        size,
        attributes: if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE
        } else {
            0
        },
        flags: 0,
    }) {
        Ok(()) => 0,
        Err(e) => e.errno as u64,
    }
}

/// A memory-fault exit: the guest accessed `gpa..+size` as private (flag bit 3) or
/// shared while the attribute says otherwise; convert and let it retry.
pub fn memory_fault(host: &dyn SnpHost, flags: u64, gpa: u64, size: u64) -> Result<(), HostError> {
    if flags & !KVM_MEMORY_EXIT_FLAG_PRIVATE & !0x7 != 0 {
        return Err(HostError::os(
            "KVM_EXIT_MEMORY_FAULT (unknown flags)",
            libc::EINVAL,
        ));
    }
    let private = flags & KVM_MEMORY_EXIT_FLAG_PRIVATE != 0;
    let start = gpa & !(PAGE_SIZE as u64 - 1);
    let end = gpa
        .checked_add(size.max(1))
        .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE as u64))
        .ok_or(HostError::os("KVM_EXIT_MEMORY_FAULT (range)", libc::EINVAL))?;
    host.set_memory_attributes(&KvmMemoryAttributes {
        address: start,
        size: end - start,
        attributes: if private {
            KVM_MEMORY_ATTRIBUTE_PRIVATE
        } else {
            0
        },
        flags: 0,
    })
}
