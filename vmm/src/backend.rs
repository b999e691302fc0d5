//! The launch-backend seam between the monitor and the platform: create the VM, add guest
//! memory, create vCPUs, launch the plan in order, and handle the platform's exits. The
//! monitor ([`crate::builder`]) drives every platform through [`LaunchBackend`]:
//!
//! - [`PlainBackend`] (`none`): a plain KVM VM; launching copies the plan's bytes into
//!   guest memory.
//! - [`SnpBackend`] (`snp` and `sim`): the SNP launcher over an [`SnpHost`], the real
//!   kernel API or the simulated kernel + secure processor; launching is LAUNCH_UPDATE of
//!   every region and LAUNCH_FINISH, and the vCPU threads hand it page-state changes.

use std::sync::Arc;

use cloister_attestation::launch::digest::PageType;
use cloister_attestation::launch::plan::LaunchPlan;
use kvm_bindings::kvm_cpuid_entry2;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;
use crate::snp::cpuid_page::cpuid_page;
use crate::snp::host::SnpHost;
use crate::snp::launcher::{LaunchError, LaunchStats, SnpLauncher};
use crate::vstate::vm::{Vm, VmError};

/// Why a backend step failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The plain VM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The SNP launch.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A vCPU could not be created.
    #[error("creating vCPU {index}: {source}")]
    Vcpu {
        /// Its index.
        index: u8,
        /// What KVM said.
        source: kvm_ioctls::Error,
    },
    /// A plan region could not be copied into guest memory.
    #[error("copying {what} at {gpa:#x} into guest memory: {reason}")]
    Copy {
        /// The region's role.
        what: String,
        /// Its GPA.
        gpa: u64,
        /// Why.
        reason: String,
    },
}

/// One platform's way of launching a VM.
pub trait LaunchBackend {
    /// The platform's name ("none", "kvm", "sim").
    fn name(&self) -> &'static str;

    /// The VM (irqchip, irqfds, devices hang off it).
    fn vm(&self) -> &Vm;

    /// Registers guest memory with the platform.
    fn add_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), BackendError>;

    /// Creates vCPU `index`.
    fn create_vcpu(&mut self, index: u8) -> Result<VcpuFd, BackendError>;

    /// Launches `plan` into `mem`, in order, after every vCPU exists and holds the plan's
    /// VMSA state; `bsp_cpuid` is the boot vCPU's CPUID (for the CPUID page).
    fn launch(
        &mut self,
        plan: &LaunchPlan<'_>,
        mem: &GuestMemoryMmap,
        vcpus: &[&VcpuFd],
        bsp_cpuid: &[kvm_cpuid_entry2],
    ) -> Result<LaunchStats, BackendError>;

    /// The handler of the platform's run-time exits (page-state changes, memory faults),
    /// if the platform has any; handed to every vCPU thread.
    fn exit_handler(&self) -> Option<Arc<dyn SnpHost>>;
}

/// `none`: plain KVM.
pub struct PlainBackend {
    vm: Vm,
}

impl PlainBackend {
    /// Wraps a plain KVM VM.
    pub fn new(vm: Vm) -> Self {
        PlainBackend { vm }
    }
}

impl LaunchBackend for PlainBackend {
    fn name(&self) -> &'static str {
        "none"
    }

    fn vm(&self) -> &Vm {
        &self.vm
    }

    fn add_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), BackendError> {
        Ok(self.vm.register_memory(mem)?)
    }

    fn create_vcpu(&mut self, index: u8) -> Result<VcpuFd, BackendError> {
        self.vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|source| BackendError::Vcpu { index, source })
    }

    /// Copies the plan's bytes into guest memory, in order. ZERO pages need nothing
    /// (fresh guest memory is zero); a plan for `none` has no CPUID or secrets pages.
    fn launch(
        &mut self,
        plan: &LaunchPlan<'_>,
        mem: &GuestMemoryMmap,
        _vcpus: &[&VcpuFd],
        _bsp_cpuid: &[kvm_cpuid_entry2],
    ) -> Result<LaunchStats, BackendError> {
        let mut stats = LaunchStats::default();
        for region in plan.regions() {
            if region.page_type() == PageType::Vmsa {
                continue;
            }
            if let Some(bytes) = region.bytes() {
                mem.write_slice(bytes, GuestAddress(region.gpa()))
                    .map_err(|e| BackendError::Copy {
                        what: region.role().to_string(),
                        gpa: region.gpa(),
                        reason: e.to_string(),
                    })?;
            }
            stats.pages += region.page_count();
        }
        Ok(stats)
    }

    fn exit_handler(&self) -> Option<Arc<dyn SnpHost>> {
        None
    }
}

/// `snp` and `sim`: the SNP launcher over a host.
pub struct SnpBackend {
    launcher: SnpLauncher,
}

impl SnpBackend {
    /// Initialises the VM as an SNP guest on `host` (MAP_GPA_RANGE exits, INIT2) and
    /// starts the launch with `policy` once memory is added.
    pub fn new(host: Arc<dyn SnpHost>) -> Result<Self, BackendError> {
        Ok(SnpBackend {
            launcher: SnpLauncher::new(host)?,
        })
    }

    /// LAUNCH_START with the guest policy (after [`LaunchBackend::add_memory`]).
    pub fn start(&self, policy: u64) -> Result<(), BackendError> {
        Ok(self.launcher.launch_start(policy)?)
    }
}

impl LaunchBackend for SnpBackend {
    fn name(&self) -> &'static str {
        self.launcher.host().name()
    }

    fn vm(&self) -> &Vm {
        self.launcher.host().vm()
    }

    fn add_memory(&mut self, mem: &GuestMemoryMmap) -> Result<(), BackendError> {
        Ok(self.launcher.add_memory(mem)?)
    }

    fn create_vcpu(&mut self, index: u8) -> Result<VcpuFd, BackendError> {
        Ok(self.launcher.create_vcpu(index)?)
    }

    fn launch(
        &mut self,
        plan: &LaunchPlan<'_>,
        _mem: &GuestMemoryMmap,
        vcpus: &[&VcpuFd],
        bsp_cpuid: &[kvm_cpuid_entry2],
    ) -> Result<LaunchStats, BackendError> {
        let cpuid = cpuid_page(bsp_cpuid);
        let stats = self.launcher.launch_regions(plan, &cpuid)?.clone();
        self.launcher.finish(plan, vcpus)?;
        Ok(stats)
    }

    fn exit_handler(&self) -> Option<Arc<dyn SnpHost>> {
        Some(self.launcher.host().clone())
    }
}
