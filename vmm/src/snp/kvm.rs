//! The real SEV-SNP host: [`SnpHost`] over the kernel's ioctls on /dev/kvm, the VM and
//! /dev/sev (SNP-FACTS §1), with the project's own `#[repr(C)]` structs ([`super::abi`]).
//!
//! [`KvmSnpHost::open`] probes the host before it touches anything and refuses, naming
//! what is missing and how to fix it, in this order:
//! 1. /dev/sev exists and opens read-write (its fd goes in every `kvm_sev_cmd`);
//! 2. `/sys/module/kvm_amd/parameters/sev_snp` exists and is `Y` (KVM writes the
//!    *effective* value there at load time: SNP usable in firmware, BIOS and kernel);
//! 3. /dev/kvm opens;
//! 4. `KVM_CAP_VM_TYPES` has bit 4 (`KVM_X86_SNP_VM`);
//! 5. `KVM_CAP_GUEST_MEMFD`;
//! 6. `KVM_CAP_MEMORY_ATTRIBUTES` has PRIVATE;
//! 7. `KVM_CAP_USER_MEMORY2`;
//! 8. `KVM_CAP_EXIT_HYPERCALL` has bit 12 (`KVM_HC_MAP_GPA_RANGE`).
//!
//! It also reads the SEV device attributes of /dev/kvm that exist on the running kernel
//! ([`SnpCapabilities`]), so the launcher can refuse a guest policy KVM will not accept
//! ([`kvm_accepts_policy`]) before LAUNCH_START, and then creates the VM (type 4, with the
//! in-kernel IOAPIC/PIC/LAPICs and PIT: KVM refuses neither to an SNP VM; only TDX VMs,
//! with protected EOIs, lose the in-kernel IOAPIC).
//!
//! The paths are injectable ([`ProbePaths`]) and the capability checks run over a small
//! trait ([`KvmProbe`]), so every refusal is unit-tested without SNP hardware.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::c_ulong;
use std::path::{Path, PathBuf};

use kvm_bindings::kvm_enable_cap;
use kvm_ioctls::{Kvm, VcpuFd};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};

use super::abi::{
    cmd, guest_policy, KvmCreateGuestMemfd, KvmDeviceAttr, KvmMemoryAttributes, KvmSevCmd,
    KvmSevInit, KvmSevSnpLaunchFinish, KvmSevSnpLaunchStart, KvmSevSnpLaunchUpdate,
    KvmUserspaceMemoryRegion2, KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD,
    KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_CREATE_GUEST_MEMFD,
    KVM_GET_DEVICE_ATTR, KVM_HAS_DEVICE_ATTR, KVM_HC_MAP_GPA_RANGE, KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_SET_MEMORY_ATTRIBUTES, KVM_SET_USER_MEMORY_REGION2, KVM_X86_GRP_SEV,
    KVM_X86_SEV_SNP_REQ_CERTS, KVM_X86_SEV_VMSA_FEATURES, KVM_X86_SNP_POLICY_BITS, KVM_X86_SNP_VM,
};
use super::host::{HostError, SnpHost};
use crate::vstate::vm::{open_kvm, Vm, VmError, KVM_PATH};

/// The AMD secure processor's device.
pub const SEV_PATH: &str = "/dev/sev";
/// Where kvm_amd's module parameters live in sysfs.
pub const SYSFS_KVM_AMD: &str = "/sys/module/kvm_amd";

/// The files the probe looks at; tests point them into a temporary directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePaths {
    /// The KVM device (/dev/kvm).
    pub kvm: PathBuf,
    /// The AMD secure processor device (/dev/sev).
    pub sev: PathBuf,
    /// kvm_amd's sysfs directory (/sys/module/kvm_amd); the probe reads
    /// `parameters/sev_snp` under it.
    pub sysfs_kvm_amd: PathBuf,
}

impl ProbePaths {
    /// These devices, with the host's sysfs.
    pub fn new(kvm: &Path, sev: &Path) -> Self {
        ProbePaths {
            kvm: kvm.to_path_buf(),
            sev: sev.to_path_buf(),
            sysfs_kvm_amd: PathBuf::from(SYSFS_KVM_AMD),
        }
    }

    fn sev_snp_parameter(&self) -> PathBuf {
        self.sysfs_kvm_amd.join("parameters").join("sev_snp")
    }
}

impl Default for ProbePaths {
    /// /dev/kvm, /dev/sev, /sys/module/kvm_amd.
    fn default() -> Self {
        Self::new(Path::new(KVM_PATH), Path::new(SEV_PATH))
    }
}

/// Why this host cannot launch SEV-SNP guests (or the SNP VM could not be created). Each
/// message names what is missing and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SnpProbeError {
    /// No /dev/sev.
    #[error("{path} does not exist: no AMD secure processor device on this host. SEV-SNP needs an AMD EPYC host (Milan or later) with SEV-SNP enabled in the firmware setup and the ccp driver loaded (`modprobe ccp`)")]
    SevMissing {
        /// The device path.
        path: String,
    },
    /// /dev/sev exists but does not open read-write.
    #[error("cannot open {path} read-write: {source} (run as root, or as a member of the device's group)")]
    SevOpen {
        /// The device path.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// kvm_amd is not loaded.
    #[error("{path} does not exist: kvm_amd is not loaded (not an AMD host with SVM, or load it: `modprobe kvm_amd sev_snp=1`)")]
    KvmAmdMissing {
        /// kvm_amd's sysfs directory.
        path: String,
    },
    /// kvm_amd has no sev_snp parameter.
    #[error("{path} does not exist: this kvm_amd has no SEV-SNP host support (it needs Linux 6.11 or later, built with CONFIG_KVM_AMD_SEV)")]
    SnpParameterMissing {
        /// The parameter's path.
        path: String,
    },
    /// KVM has SNP off.
    #[error("{path} is {value:?}: KVM has SEV-SNP off. Enable SEV-SNP (and SNP memory coverage) in the firmware setup, boot a host kernel that sets up the RMP table (dmesg says \"SEV-SNP enabled\"), and load kvm_amd with sev_snp=1")]
    SnpDisabled {
        /// The parameter's path.
        path: String,
        /// What it says.
        value: String,
    },
    /// The sysfs parameter cannot be read.
    #[error("cannot read {path}: {source}")]
    SysfsRead {
        /// The parameter's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// /dev/kvm cannot be used.
    #[error(transparent)]
    Kvm(VmError),
    /// No SNP VM type.
    #[error("KVM_CAP_VM_TYPES is {mask:#x}, without bit 4 (KVM_X86_SNP_VM): this KVM cannot create SEV-SNP VMs (it needs Linux 6.11 or later on a host with SEV-SNP enabled)")]
    NoSnpVmType {
        /// The VM types KVM offers.
        mask: u64,
    },
    /// No guest_memfd.
    #[error("KVM_CAP_GUEST_MEMFD is not offered: SEV-SNP private memory lives in a guest_memfd (Linux 6.11 or later, built with CONFIG_KVM_AMD_SEV)")]
    NoGuestMemfd,
    /// No private memory attribute.
    #[error("KVM_CAP_MEMORY_ATTRIBUTES is {mask:#x}, without PRIVATE ({KVM_MEMORY_ATTRIBUTE_PRIVATE:#x}): this KVM cannot mark guest memory private (Linux 6.11 or later, built with CONFIG_KVM_AMD_SEV)")]
    NoPrivateAttribute {
        /// The attributes KVM offers.
        mask: u64,
    },
    /// No KVM_SET_USER_MEMORY_REGION2.
    #[error("KVM_CAP_USER_MEMORY2 is not offered: KVM_SET_USER_MEMORY_REGION2, which binds a guest_memfd to a memory slot, needs Linux 6.8 or later")]
    NoUserMemory2,
    /// Page-state changes cannot reach the monitor.
    #[error("KVM_CAP_EXIT_HYPERCALL is {mask:#x}, without bit 12 (KVM_HC_MAP_GPA_RANGE): KVM cannot pass an SNP guest's page-state changes to the monitor (Linux 6.11 or later)")]
    NoMapGpaRangeExit {
        /// The hypercalls KVM can exit on.
        mask: u64,
    },
    /// Creating the SNP VM failed after a successful probe.
    #[error("creating the SEV-SNP VM failed: {0}")]
    CreateVm(VmError),
}

/// What KVM offers for SEV-SNP beyond the required capabilities: the SEV device
/// attributes of /dev/kvm (group `KVM_X86_GRP_SEV`), each absent on kernels that predate
/// it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnpCapabilities {
    /// `KVM_X86_SEV_VMSA_FEATURES` (6.10+): the SEV_FEATURES bits KVM_SEV_INIT2 accepts.
    pub vmsa_features: Option<u64>,
    /// `KVM_X86_SNP_POLICY_BITS` (6.19+): the guest-policy bits SNP_LAUNCH_START accepts.
    /// Absent: the fixed rule of 6.11-6.18 applies ([`kvm_accepts_policy`]).
    pub policy_bits: Option<u64>,
    /// `KVM_X86_SEV_SNP_REQ_CERTS` (7.0+) is 1: KVM can exit to the monitor for the
    /// certificate table of an extended guest request.
    pub req_certs: bool,
}

/// The questions the probe asks KVM. The real [`Kvm`] answers them with
/// KVM_CHECK_EXTENSION and KVM_HAS/GET_DEVICE_ATTR on /dev/kvm; tests feed values.
pub trait KvmProbe {
    /// KVM_CHECK_EXTENSION: the capability's value (0 when absent, negative on error).
    fn check_extension(&self, cap: u32) -> i64;
    /// The value of attribute `attr` of group `KVM_X86_GRP_SEV`, if the kernel has it.
    fn sev_attribute(&self, attr: u64) -> Option<u64>;
}

impl KvmProbe for Kvm {
    fn check_extension(&self, cap: u32) -> i64 {
        i64::from(self.check_extension_raw(c_ulong::from(cap)))
    }

    fn sev_attribute(&self, attr: u64) -> Option<u64> {
        let query = KvmDeviceAttr {
            flags: 0,
            group: KVM_X86_GRP_SEV,
            attr,
            addr: 0,
        };
        // SAFETY: KVM_HAS_DEVICE_ATTR reads one kvm_device_attr (24 bytes; the layout is
        // pinned in abi.rs) from `query`, which lives across the call, and writes nothing.
        // Kernels without device attributes on /dev/kvm fail it with an errno.
        let has = unsafe { ioctl_with_ref(self, KVM_HAS_DEVICE_ATTR, &query) };
        if has != 0 {
            return None;
        }
        let mut value: u64 = 0;
        let get = KvmDeviceAttr {
            addr: std::ptr::addr_of_mut!(value) as u64,
            ..query
        };
        // SAFETY: KVM_GET_DEVICE_ATTR reads `get` (a live kvm_device_attr) and, for the SEV
        // group, writes one u64 at `get.addr`, which points at `value`: a local u64 that is
        // live, aligned and not otherwise borrowed during the call.
        let ret = unsafe { ioctl_with_ref(self, KVM_GET_DEVICE_ATTR, &get) };
        (ret == 0).then_some(value)
    }
}

/// Checks the capabilities an SNP launch needs (steps 4-8 of the module's list) and
/// reads the optional SEV attributes.
pub fn check_kvm(kvm: &dyn KvmProbe) -> Result<SnpCapabilities, SnpProbeError> {
    // A negative answer is an error of the ioctl: treat it as "not offered".
    let mask = |cap: u32| u64::try_from(kvm.check_extension(cap)).unwrap_or(0);

    let vm_types = mask(KVM_CAP_VM_TYPES);
    if vm_types & (1 << KVM_X86_SNP_VM) == 0 {
        return Err(SnpProbeError::NoSnpVmType { mask: vm_types });
    }
    if mask(KVM_CAP_GUEST_MEMFD) == 0 {
        return Err(SnpProbeError::NoGuestMemfd);
    }
    let attributes = mask(KVM_CAP_MEMORY_ATTRIBUTES);
    if attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE == 0 {
        return Err(SnpProbeError::NoPrivateAttribute { mask: attributes });
    }
    if mask(KVM_CAP_USER_MEMORY2) == 0 {
        return Err(SnpProbeError::NoUserMemory2);
    }
    let hypercalls = mask(KVM_CAP_EXIT_HYPERCALL);
    if hypercalls & (1 << KVM_HC_MAP_GPA_RANGE) == 0 {
        return Err(SnpProbeError::NoMapGpaRangeExit { mask: hypercalls });
    }
    Ok(SnpCapabilities {
        vmsa_features: kvm.sev_attribute(KVM_X86_SEV_VMSA_FEATURES),
        policy_bits: kvm.sev_attribute(KVM_X86_SNP_POLICY_BITS),
        req_certs: kvm.sev_attribute(KVM_X86_SEV_SNP_REQ_CERTS) == Some(1),
    })
}

/// Step 1: /dev/sev, opened read-write.
fn open_sev(path: &Path) -> Result<File, SnpProbeError> {
    let shown = path.display().to_string();
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| match source.kind() {
            ErrorKind::NotFound => SnpProbeError::SevMissing { path: shown },
            _ => SnpProbeError::SevOpen {
                path: shown,
                source,
            },
        })
}

/// Step 2: kvm_amd is loaded and its effective `sev_snp` is on.
fn check_sev_snp_parameter(paths: &ProbePaths) -> Result<(), SnpProbeError> {
    let parameter = paths.sev_snp_parameter();
    let shown = parameter.display().to_string();
    let text = match std::fs::read_to_string(&parameter) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(if paths.sysfs_kvm_amd.exists() {
                SnpProbeError::SnpParameterMissing { path: shown }
            } else {
                SnpProbeError::KvmAmdMissing {
                    path: paths.sysfs_kvm_amd.display().to_string(),
                }
            });
        }
        Err(source) => {
            return Err(SnpProbeError::SysfsRead {
                path: shown,
                source,
            })
        }
    };
    match text.trim() {
        "Y" | "y" | "1" => Ok(()),
        value => Err(SnpProbeError::SnpDisabled {
            path: shown,
            value: value.to_string(),
        }),
    }
}

/// A host that passed the probe: its open devices and what KVM offers.
struct ProbedHost {
    kvm: Kvm,
    sev: File,
    capabilities: SnpCapabilities,
}

fn probe_host(paths: &ProbePaths) -> Result<ProbedHost, SnpProbeError> {
    let sev = open_sev(&paths.sev)?;
    check_sev_snp_parameter(paths)?;
    let kvm = open_kvm(&paths.kvm).map_err(SnpProbeError::Kvm)?;
    let capabilities = check_kvm(&kvm)?;
    Ok(ProbedHost {
        kvm,
        sev,
        capabilities,
    })
}

/// Probes the host without creating a VM: what [`KvmSnpHost::open_with`] checks first.
pub fn probe(paths: &ProbePaths) -> Result<SnpCapabilities, SnpProbeError> {
    probe_host(paths).map(|host| host.capabilities)
}

/// Whether KVM's SNP_LAUNCH_START will take `policy`, so the launcher can refuse a policy
/// before LAUNCH_START rather than read `-EINVAL` after it. KVM checks (SNP-FACTS §1.6):
///
/// - always: bit 17 (reserved, must be one) set, SINGLE_SOCKET (bit 20) clear — every
///   version read refuses SINGLE_SOCKET, the 6.19 policy-bits series included, whatever
///   `KVM_X86_SNP_POLICY_BITS` lists;
/// - with `KVM_X86_SNP_POLICY_BITS` (6.19+): no bit outside it (the firmware's supported
///   bits that KVM knows how to honour). SMT (bit 16) is left to the firmware, which fails
///   LAUNCH_START with POLICY_FAILURE when SMT is on in the BIOS and the policy forbids it;
/// - without it (Linux 6.11-6.18, the fixed rule): only ABI_MINOR 7:0, ABI_MAJOR 15:8,
///   SMT 16, bit 17, DEBUG 19 and SINGLE_SOCKET 20 may be set, and SMT **must** be set. So
///   a policy that forbids SMT cannot be launched on these kernels at all; the canonical
///   policy is 0x30000.
///
/// The error names the rule and the offending bits.
pub fn kvm_accepts_policy(policy: u64, caps: &SnpCapabilities) -> Result<(), String> {
    if policy & guest_policy::RSVD_MBO == 0 {
        return Err(format!(
            "guest policy {policy:#x}: bit 17 (reserved, must be one) is clear; KVM refuses it"
        ));
    }
    if policy & guest_policy::SINGLE_SOCKET != 0 {
        return Err(format!(
            "guest policy {policy:#x}: KVM refuses SINGLE_SOCKET (bit 20); it cannot keep a guest on one socket"
        ));
    }
    match caps.policy_bits {
        Some(accepted) => {
            let outside = policy & !accepted;
            if outside != 0 {
                return Err(format!(
                    "guest policy {policy:#x}: bits {outside:#x} are not among those KVM accepts (KVM_X86_SNP_POLICY_BITS = {accepted:#x})"
                ));
            }
        }
        None => {
            const FIXED: u64 = guest_policy::ABI
                | guest_policy::SMT
                | guest_policy::RSVD_MBO
                | guest_policy::DEBUG
                | guest_policy::SINGLE_SOCKET;
            let outside = policy & !FIXED;
            if outside != 0 {
                return Err(format!(
                    "guest policy {policy:#x}: bits {outside:#x} are outside what KVM accepts without KVM_X86_SNP_POLICY_BITS (Linux 6.11-6.18: ABI 15:0, SMT 16, bit 17, DEBUG 19)"
                ));
            }
            if policy & guest_policy::SMT == 0 {
                return Err(format!(
                    "guest policy {policy:#x}: SMT (bit 16) is clear; KVM without KVM_X86_SNP_POLICY_BITS (Linux 6.11-6.18) refuses a policy that forbids SMT"
                ));
            }
        }
    }
    Ok(())
}

/// The SEV-SNP host on the real kernel: the SNP VM, /dev/sev, and what KVM offers.
pub struct KvmSnpHost {
    vm: Vm,
    sev: File,
    capabilities: SnpCapabilities,
}

/// The argument structs of `KVM_MEMORY_ENCRYPT_OP`, each with the subcommand that takes it.
trait SevCommand {
    const ID: u32;
    const NAME: &'static str;
}

impl SevCommand for KvmSevInit {
    const ID: u32 = cmd::INIT2;
    const NAME: &'static str = "KVM_SEV_INIT2";
}

impl SevCommand for KvmSevSnpLaunchStart {
    const ID: u32 = cmd::SNP_LAUNCH_START;
    const NAME: &'static str = "KVM_SEV_SNP_LAUNCH_START";
}

impl SevCommand for KvmSevSnpLaunchUpdate {
    const ID: u32 = cmd::SNP_LAUNCH_UPDATE;
    const NAME: &'static str = "KVM_SEV_SNP_LAUNCH_UPDATE";
}

impl SevCommand for KvmSevSnpLaunchFinish {
    const ID: u32 = cmd::SNP_LAUNCH_FINISH;
    const NAME: &'static str = "KVM_SEV_SNP_LAUNCH_FINISH";
}

/// The errno of the last failed system call.
fn last_errno() -> i32 {
    vmm_sys_util::errno::Error::last().errno()
}

impl KvmSnpHost {
    /// Probes the host ([`ProbePaths::new`]: these devices, the host's sysfs) and creates
    /// the SNP VM.
    pub fn open(kvm_path: &Path, sev_path: &Path) -> Result<KvmSnpHost, SnpProbeError> {
        Self::open_with(&ProbePaths::new(kvm_path, sev_path))
    }

    /// Probes the host at `paths` (the module's list, in order) and creates the SNP VM
    /// (`KVM_CREATE_VM(KVM_X86_SNP_VM)` with its in-kernel interrupt controllers and PIT).
    pub fn open_with(paths: &ProbePaths) -> Result<KvmSnpHost, SnpProbeError> {
        let host = probe_host(paths)?;
        let vm = Vm::with_type(&host.kvm, KVM_X86_SNP_VM).map_err(SnpProbeError::CreateVm)?;
        Ok(KvmSnpHost {
            vm,
            sev: host.sev,
            capabilities: host.capabilities,
        })
    }

    /// What KVM offers beyond the required capabilities.
    pub fn capabilities(&self) -> &SnpCapabilities {
        &self.capabilities
    }

    /// Issues `KVM_MEMORY_ENCRYPT_OP` with the subcommand of `T` and `data` as its argument.
    /// KVM copies the command back after every subcommand, so `error` holds the firmware
    /// status even on failure; subcommands that report progress update `*data` in place.
    ///
    /// # Safety
    /// Every user address inside `*data` is valid for what the subcommand does with it.
    unsafe fn sev_command<T: SevCommand>(&self, data: &mut T) -> Result<(), HostError> {
        let mut command = KvmSevCmd {
            id: T::ID,
            pad0: 0,
            data: std::ptr::from_mut(data) as u64,
            error: 0,
            sev_fd: self.sev.as_raw_fd() as u32,
        };
        // SAFETY: KVM_MEMORY_ENCRYPT_OP reads and writes back one kvm_sev_cmd (24 bytes,
        // pinned in abi.rs): `command`, a live local. Its `data` points at `*data`,
        // exclusively borrowed for the call, of the struct type the subcommand `T::ID`
        // reads and may write (the `SevCommand` impls tie each struct to its subcommand,
        // and abi.rs pins their layouts to the kernel's). The user addresses inside `*data`
        // are the caller's contract; `sev_fd` is /dev/sev, which `self` keeps open.
        let result = unsafe { self.vm.fd().encrypt_op(&mut command) };
        result.map_err(|e| HostError {
            op: T::NAME,
            errno: e.errno(),
            fw_error: command.error,
        })
    }
}

impl SnpHost for KvmSnpHost {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn snp_enable_req_certs(&self) -> Result<(), HostError> {
        let mut command = KvmSevCmd {
            id: cmd::SNP_ENABLE_REQ_CERTS,
            pad0: 0,
            // The subcommand takes no argument (Linux 7.0, commit 20c3c4108d58).
            data: 0,
            error: 0,
            sev_fd: self.sev.as_raw_fd() as u32,
        };
        // SAFETY: KVM_MEMORY_ENCRYPT_OP reads and writes back one kvm_sev_cmd (24 bytes,
        // pinned in abi.rs), a live local; this subcommand reads no argument struct.
        let result = unsafe { self.vm.fd().encrypt_op(&mut command) };
        result.map_err(|e| HostError {
            op: "KVM_SEV_SNP_ENABLE_REQ_CERTS",
            errno: e.errno(),
            fw_error: command.error,
        })
    }

    fn vm(&self) -> &Vm {
        &self.vm
    }

    fn enable_map_gpa_range_exit(&self) -> Result<(), HostError> {
        const OP: &str = "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)";
        let bit = 1u64 << KVM_HC_MAP_GPA_RANGE;
        let offered = self
            .vm
            .fd()
            .check_extension_raw(c_ulong::from(KVM_CAP_EXIT_HYPERCALL));
        if u64::try_from(offered).unwrap_or(0) & bit == 0 {
            return Err(HostError::os(OP, libc::EOPNOTSUPP));
        }
        let mut cap = kvm_enable_cap {
            cap: KVM_CAP_EXIT_HYPERCALL,
            ..Default::default()
        };
        cap.args[0] = bit;
        self.vm
            .fd()
            .enable_cap(&cap)
            .map_err(|e| HostError::os(OP, e.errno()))
    }

    fn sev_init2(&self, init: &KvmSevInit) -> Result<(), HostError> {
        // INIT2 only reads its struct; the kernel gets a copy so that nothing it could
        // write reaches the caller's shared reference.
        let mut data = *init;
        // SAFETY: kvm_sev_init holds no user address.
        unsafe { self.sev_command(&mut data) }
    }

    fn create_guest_memfd(&self, gmem: &KvmCreateGuestMemfd) -> Result<OwnedFd, HostError> {
        let mut data = *gmem;
        // SAFETY: KVM_CREATE_GUEST_MEMFD (_IOWR) reads one kvm_create_guest_memfd (64 bytes,
        // pinned in abi.rs) and may write it back: `data` is a live local of that layout,
        // exclusively borrowed for the call.
        let ret = unsafe { ioctl_with_mut_ref(self.vm.fd(), KVM_CREATE_GUEST_MEMFD, &mut data) };
        if ret < 0 {
            return Err(HostError::os("KVM_CREATE_GUEST_MEMFD", last_errno()));
        }
        // SAFETY: on success the ioctl returns a new file descriptor that nothing else in
        // this process owns or will close.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }

    unsafe fn set_user_memory_region2(
        &self,
        region: &KvmUserspaceMemoryRegion2,
    ) -> Result<(), HostError> {
        // SAFETY: KVM_SET_USER_MEMORY_REGION2 (_IOW) reads one kvm_userspace_memory_region2
        // (160 bytes, pinned in abi.rs) from `region`, live for the call. The host mapping it
        // names stays valid for the VM's lifetime by this function's contract; the
        // guest_memfd it names is checked by the kernel.
        let ret = unsafe { ioctl_with_ref(self.vm.fd(), KVM_SET_USER_MEMORY_REGION2, region) };
        if ret < 0 {
            return Err(HostError::os("KVM_SET_USER_MEMORY_REGION2", last_errno()));
        }
        Ok(())
    }

    fn set_memory_attributes(&self, attributes: &KvmMemoryAttributes) -> Result<(), HostError> {
        // SAFETY: KVM_SET_MEMORY_ATTRIBUTES (_IOW) reads one kvm_memory_attributes (32
        // bytes, pinned in abi.rs) from `attributes`, live for the call; it holds guest
        // physical addresses only, no user address.
        let ret = unsafe { ioctl_with_ref(self.vm.fd(), KVM_SET_MEMORY_ATTRIBUTES, attributes) };
        if ret < 0 {
            return Err(HostError::os("KVM_SET_MEMORY_ATTRIBUTES", last_errno()));
        }
        Ok(())
    }

    fn snp_launch_start(&self, start: &KvmSevSnpLaunchStart) -> Result<(), HostError> {
        let mut data = *start;
        // SAFETY: kvm_sev_snp_launch_start holds no user address.
        unsafe { self.sev_command(&mut data) }
    }

    /// The kernel's convention (SNP-FACTS §1.7), passed through unchanged:
    /// - 0: `Ok`, with `gfn_start`, `uaddr` (except for ZERO pages) and `len` advanced
    ///   over the pages done — possibly not all of them; the caller loops until `len` is 0;
    /// - `-EIO`: `errno` EIO and `fw_error` the firmware status (0 when the failure was
    ///   not the firmware's); `*update` is left as it was. For a CPUID page rejected with
    ///   INVALID_PARAM the kernel has written the firmware's corrected page over the source;
    /// - `-EAGAIN` (documented, not seen in the code read): `errno` EAGAIN, to retry.
    unsafe fn snp_launch_update(
        &self,
        update: &mut KvmSevSnpLaunchUpdate,
    ) -> Result<(), HostError> {
        let before = (update.gfn_start, update.len);
        // SAFETY: the source range `uaddr .. uaddr + len` is readable and writable for the
        // call by this function's contract (the kernel reads it, and writes a rejected
        // CPUID page back over it); `update` is exclusively borrowed, so the kernel's
        // in-place progress update is visible to the caller and to no one else.
        let result = unsafe { self.sev_command(update) };
        log::debug!(
            "SNP_LAUNCH_UPDATE gfn {:#x} len {:#x} -> gfn {:#x} len {:#x}: {result:?}",
            before.0,
            before.1,
            update.gfn_start,
            update.len
        );
        result
    }

    fn create_vcpu(&self, index: u8) -> Result<VcpuFd, HostError> {
        self.vm
            .fd()
            .create_vcpu(u64::from(index))
            .map_err(|e| HostError::os("KVM_CREATE_VCPU", e.errno()))
    }

    /// `vcpus` is not needed: the kernel finds every vCPU of the VM itself.
    unsafe fn snp_launch_finish(
        &self,
        finish: &KvmSevSnpLaunchFinish,
        _vcpus: &[&VcpuFd],
    ) -> Result<(), HostError> {
        let mut data = *finish;
        // SAFETY: when `id_block_en` is set, `id_block_uaddr` points at 96 readable bytes
        // and `id_auth_uaddr` at 4096, by this function's contract; otherwise the kernel
        // reads neither.
        unsafe { self.sev_command(&mut data) }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashMap;

    use super::*;

    /// A KVM that answers from tables.
    #[derive(Default)]
    struct FakeKvm {
        caps: HashMap<u32, i64>,
        attributes: HashMap<u64, u64>,
    }

    impl FakeKvm {
        /// Everything an SNP launch needs.
        fn snp_ready() -> Self {
            let caps = HashMap::from([
                (KVM_CAP_VM_TYPES, 0b1_1111),
                (KVM_CAP_GUEST_MEMFD, 1),
                (
                    KVM_CAP_MEMORY_ATTRIBUTES,
                    KVM_MEMORY_ATTRIBUTE_PRIVATE as i64,
                ),
                (KVM_CAP_USER_MEMORY2, 1),
                (KVM_CAP_EXIT_HYPERCALL, 1 << 12),
            ]);
            FakeKvm {
                caps,
                attributes: HashMap::new(),
            }
        }

        fn with_cap(mut self, cap: u32, value: i64) -> Self {
            self.caps.insert(cap, value);
            self
        }
    }

    impl KvmProbe for FakeKvm {
        fn check_extension(&self, cap: u32) -> i64 {
            self.caps.get(&cap).copied().unwrap_or(0)
        }
        fn sev_attribute(&self, attr: u64) -> Option<u64> {
            self.attributes.get(&attr).copied()
        }
    }

    /// A temporary directory with a fake /dev/sev (a plain file) and kvm_amd's sysfs.
    struct FakeHost {
        dir: tempfile::TempDir,
    }

    impl FakeHost {
        fn new(sev_snp: Option<&str>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("sev"), b"").unwrap();
            if let Some(value) = sev_snp {
                let params = dir.path().join("kvm_amd/parameters");
                std::fs::create_dir_all(&params).unwrap();
                std::fs::write(params.join("sev_snp"), value).unwrap();
            }
            FakeHost { dir }
        }

        fn paths(&self) -> ProbePaths {
            ProbePaths {
                kvm: self.dir.path().join("kvm"),
                sev: self.dir.path().join("sev"),
                sysfs_kvm_amd: self.dir.path().join("kvm_amd"),
            }
        }
    }

    fn refusal(paths: &ProbePaths) -> SnpProbeError {
        match KvmSnpHost::open_with(paths) {
            Ok(_) => panic!("the probe accepted {paths:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn no_sev_device_is_refused_first() {
        let host = FakeHost::new(None);
        let mut paths = host.paths();
        paths.sev = host.dir.path().join("missing-sev");
        let err = refusal(&paths);
        assert!(matches!(err, SnpProbeError::SevMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{} does not exist", paths.sev.display())));
        assert!(text.contains("modprobe ccp"), "{text}");
    }

    #[test]
    fn sev_device_that_does_not_open_read_write_is_refused() {
        // A directory: opening it read-write fails with EISDIR even for root.
        let host = FakeHost::new(Some("Y"));
        let mut paths = host.paths();
        paths.sev = host.dir.path().to_path_buf();
        let err = refusal(&paths);
        assert!(matches!(err, SnpProbeError::SevOpen { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot open "), "{err}");
    }

    #[test]
    fn kvm_amd_not_loaded_is_refused() {
        let host = FakeHost::new(None);
        let err = refusal(&host.paths());
        assert!(matches!(err, SnpProbeError::KvmAmdMissing { .. }), "{err}");
        assert!(err.to_string().contains("kvm_amd is not loaded"), "{err}");
    }

    #[test]
    fn kvm_amd_without_sev_snp_parameter_is_refused() {
        let host = FakeHost::new(None);
        std::fs::create_dir_all(host.dir.path().join("kvm_amd/parameters")).unwrap();
        let err = refusal(&host.paths());
        assert!(
            matches!(err, SnpProbeError::SnpParameterMissing { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no SEV-SNP host support"), "{err}");
    }

    #[test]
    fn sev_snp_off_is_refused() {
        for value in ["N\n", "0\n", "\n"] {
            let host = FakeHost::new(Some(value));
            let err = refusal(&host.paths());
            match &err {
                SnpProbeError::SnpDisabled { value: v, .. } => assert_eq!(v, value.trim()),
                other => panic!("{value:?}: {other}"),
            }
            assert!(err.to_string().contains("KVM has SEV-SNP off"), "{err}");
        }
    }

    #[test]
    fn missing_kvm_device_is_refused_after_the_sev_checks() {
        let host = FakeHost::new(Some("Y\n"));
        let err = refusal(&host.paths());
        assert!(
            matches!(err, SnpProbeError::Kvm(VmError::KvmMissing(_))),
            "{err}"
        );
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn each_missing_capability_is_named_in_order() {
        let cases: [(FakeKvm, &str); 6] = [
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_VM_TYPES, 0b1101),
                "KVM_CAP_VM_TYPES is 0xd, without bit 4 (KVM_X86_SNP_VM)",
            ),
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_VM_TYPES, -22),
                "KVM_CAP_VM_TYPES is 0x0, without bit 4",
            ),
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_GUEST_MEMFD, 0),
                "KVM_CAP_GUEST_MEMFD is not offered",
            ),
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_MEMORY_ATTRIBUTES, 0),
                "KVM_CAP_MEMORY_ATTRIBUTES is 0x0, without PRIVATE (0x8)",
            ),
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_USER_MEMORY2, 0),
                "KVM_CAP_USER_MEMORY2 is not offered",
            ),
            (
                FakeKvm::snp_ready().with_cap(KVM_CAP_EXIT_HYPERCALL, 0x1),
                "KVM_CAP_EXIT_HYPERCALL is 0x1, without bit 12 (KVM_HC_MAP_GPA_RANGE)",
            ),
        ];
        for (kvm, expected) in cases {
            let err = check_kvm(&kvm).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
        }
        // Two pieces missing: the earlier one in the list is named.
        let kvm = FakeKvm::snp_ready()
            .with_cap(KVM_CAP_GUEST_MEMFD, 0)
            .with_cap(KVM_CAP_EXIT_HYPERCALL, 0);
        assert!(matches!(
            check_kvm(&kvm).unwrap_err(),
            SnpProbeError::NoGuestMemfd
        ));
    }

    #[test]
    fn capabilities_come_from_the_sev_attributes_when_present() {
        let old = check_kvm(&FakeKvm::snp_ready()).unwrap();
        assert_eq!(old, SnpCapabilities::default());

        let mut kvm = FakeKvm::snp_ready();
        kvm.attributes = HashMap::from([
            (KVM_X86_SEV_VMSA_FEATURES, 1 << 5 | 1 << 9),
            (KVM_X86_SNP_POLICY_BITS, 0x1b_ffff),
            (KVM_X86_SEV_SNP_REQ_CERTS, 1),
        ]);
        let new = check_kvm(&kvm).unwrap();
        assert_eq!(
            new,
            SnpCapabilities {
                vmsa_features: Some(0x220),
                policy_bits: Some(0x1b_ffff),
                req_certs: true,
            }
        );
        kvm.attributes.insert(KVM_X86_SEV_SNP_REQ_CERTS, 0);
        assert!(!check_kvm(&kvm).unwrap().req_certs);
    }

    #[test]
    fn fixed_policy_rule_of_linux_6_11_to_6_18() {
        let caps = SnpCapabilities::default();
        for ok in [0x3_0000, 0x3_001f, 0x3_0000 | 1 << 19, 0x3_ffff] {
            assert_eq!(kvm_accepts_policy(ok, &caps), Ok(()), "{ok:#x}");
        }
        let refused = [
            (0x1_0000, "bit 17 (reserved, must be one) is clear"),
            (0x2_0000, "SMT (bit 16) is clear"),
            (0x3_0000 | 1 << 20, "SINGLE_SOCKET (bit 20)"),
            (0x3_0000 | 1 << 18, "bits 0x40000 are outside"),
            (0x3_0000 | 1 << 22 | 1 << 25, "bits 0x2400000 are outside"),
            (0x3_0000 | 1 << 40, "bits 0x10000000000 are outside"),
        ];
        for (policy, needle) in refused {
            let err = kvm_accepts_policy(policy, &caps).unwrap_err();
            assert!(err.contains(needle), "{policy:#x}: {err}");
            assert!(
                err.starts_with(&format!("guest policy {policy:#x}")),
                "{err}"
            );
        }
    }

    #[test]
    fn policy_bits_attribute_widens_the_rule() {
        // A 6.19 kernel on firmware that supports MEM_AES_256_XTS (22) and
        // PAGE_SWAP_DISABLE (25) besides the old set.
        let accepted = 0xffff | 1 << 16 | 1 << 17 | 1 << 19 | 1 << 20 | 1 << 22 | 1 << 25;
        let caps = SnpCapabilities {
            policy_bits: Some(accepted),
            ..Default::default()
        };
        // SMT no longer required; new bits allowed.
        assert_eq!(kvm_accepts_policy(0x2_0000, &caps), Ok(()));
        assert_eq!(
            kvm_accepts_policy(0x3_0000 | 1 << 22 | 1 << 25, &caps),
            Ok(())
        );
        // Still: bit 17, no SINGLE_SOCKET, nothing outside the attribute.
        assert!(kvm_accepts_policy(0x1_0000, &caps)
            .unwrap_err()
            .contains("bit 17"));
        assert!(kvm_accepts_policy(0x3_0000 | 1 << 20, &caps)
            .unwrap_err()
            .contains("SINGLE_SOCKET"));
        let err = kvm_accepts_policy(0x3_0000 | 1 << 18, &caps).unwrap_err();
        assert!(
            err.contains("bits 0x40000 are not among those KVM accepts (KVM_X86_SNP_POLICY_BITS = 0x25bffff)"),
            "{err}"
        );
    }

    /// This build machine has no /dev/sev: the real probe stops at the first step and
    /// says exactly that. On an SNP host it gets further; whatever it says, it says it
    /// without panicking.
    #[test]
    fn this_host_is_refused_at_the_first_missing_piece() {
        let result = KvmSnpHost::open(Path::new(KVM_PATH), Path::new(SEV_PATH));
        if Path::new(SEV_PATH).exists() {
            if let Err(e) = result {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
        let err = result.err().expect("no /dev/sev, yet the probe passed");
        assert_eq!(
            err.to_string(),
            "/dev/sev does not exist: no AMD secure processor device on this host. SEV-SNP \
             needs an AMD EPYC host (Milan or later) with SEV-SNP enabled in the firmware \
             setup and the ccp driver loaded (`modprobe ccp`)"
        );
    }

    /// The real /dev/kvm behind fake SEV pieces: this machine's KVM (kvm_pvm) has no SNP
    /// VM type, and the probe says so from the capabilities alone.
    #[test]
    fn this_kvm_is_asked_for_its_capabilities() {
        if !Path::new(KVM_PATH).exists() || Path::new(SEV_PATH).exists() {
            return;
        }
        let host = FakeHost::new(Some("Y"));
        let mut paths = host.paths();
        paths.kvm = PathBuf::from(KVM_PATH);
        let err = refusal(&paths);
        assert!(
            matches!(err, SnpProbeError::NoSnpVmType { .. }),
            "expected the VM-type refusal, got: {err}"
        );
    }
}
