//! The launch side of SEV-SNP: the launch plan (what is loaded, in which order), the
//! launch digest it produces (PAGE_INFO chain, GCTX.LD), the VMSAs of the vCPUs and the
//! vCPU models' CPUID signatures.
//!
//! ```text
//! OvmfImage + QemuOvmfParams --qemu_ovmf_plan--> LaunchPlan --measure--> digest
//!                                                          \--regions--> launch backend
//! ```

pub mod cpu_types;
pub mod digest;
pub mod plan;
pub mod vmsa;

pub use digest::{LaunchDigest, PageInfo, PageType, LD_SIZE, PAGE_SIZE, VMSA_GPA};
pub use plan::{
    qemu_ovmf_plan, IdBlockAndAuth, LaunchPage, LaunchPlan, LaunchRegion, PlanError, PlanSummary,
    QemuOvmfParams, RegionContents, RegionRole, VmmType,
};
pub use vmsa::{LongModeEntry, Vmsa};
