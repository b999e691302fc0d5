//! Builds a VM from a validated [`VmConfig`]: KVM, guest memory, devices on the port-I/O
//! and MMIO buses, the kernel and its boot structures, and the vCPUs; then runs it on one
//! thread per vCPU plus the main thread's event loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::Killable;

use crate::acpi;
use crate::backend::{BackendError, LaunchBackend, PlainBackend, SnpBackend};
use crate::boot::kernel::{detect_format, LoadError};
use crate::boot::layout::{
    MmioSlot, PciSlot, VirtioTransport, ACPI_SLEEP_CONTROL_PORT, CMOS_RTC_PORT,
    CMOS_RTC_PORT_COUNT, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT, DEBUG_EXIT_PORT, GUEST_REQUEST_PORT,
    I8042_PORT, IRQ_MAX, MSI_GSI_END, MSI_GSI_START, PCI_MMIO_SIZE, PCI_MMIO_START,
    VIRTIO_GSI_START,
};
use crate::boot::mptable::MpTableError;
use crate::boot::plan::{BootLayout, LayoutInputs, PlanBuildError, Platform};
use crate::boot::zero_page::ZeroPageError;
use crate::config::{DiskSpec, KernelSource, SerialMode, VmConfig};
use crate::devices::bus::{Bus, BusError};
use crate::devices::exit::ExitHandle;
use crate::devices::legacy::{AcpiSleepControl, DebugExit, I8042};
use crate::devices::pci::{
    PciConfigIo, PciHost, PciMmioWindow, PciRoot, CONFIG_IO_LEN as PCI_CONFIG_IO_LEN,
    CONFIG_IO_PORT as PCI_CONFIG_IO_PORT,
};
use crate::devices::rtc::CmosRtc;
use crate::devices::serial::{ConsoleOutput, SerialConsole};
use crate::devices::sim_vmgexit::SimVmgexit;
use crate::devices::virtio;
use crate::event_loop::{self, LoopEnd, TerminalInput};
use crate::memory::{create_vm_memory, GuestMemoryMmap, MemoryError};
use crate::seccomp::ThreadKind;
use crate::snp::certs::CertTable;
use crate::snp::host::SnpHost;
use crate::snp::kvm::{kvm_accepts_policy, KvmSnpHost};
use crate::snp::launcher::LaunchError;
use crate::snp::sim::SimSnpHost;
use crate::vstate::vcpu::{
    kick_signal, register_kick_handler, SnpExits, Vcpu, VcpuError, VcpuStop,
};
use crate::vstate::vm::{open_kvm, Vm, VmError};
use cloister_attestation::id_block::{IdAuth, IdBlock, ID_AUTH_SIZE, ID_BLOCK_SIZE};
use cloister_attestation::launch::plan::DEFAULT_GUEST_POLICY;
use cloister_attestation::launch::vmsa::Vmsa;
use cloister_attestation::launch::{IdBlockAndAuth, LaunchPlan};
use cloister_attestation::sim::{FwStatus, SimPsp, SimRoot, SIM_FIRMWARE};
use cloister_policy::{
    KvmPolicyRule, LaunchDescription, LaunchPlatform, LaunchRefusal, VirtioDeviceInfo,
};
use kvm_ioctls::VcpuFd;

/// How long the monitor keeps kicking vCPU threads before it stops waiting for them.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors while building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// KVM could not be opened or set up.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// More vCPUs than this host's KVM runs.
    #[error("--cpus {asked} is more than this host's KVM supports ({max})")]
    TooManyVcpus {
        /// Requested count.
        asked: u8,
        /// KVM's limit.
        max: usize,
    },
    /// A file named by the user could not be read.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// "kernel image", "initrd".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// No --kernel and no built-in guest.
    #[error("no built-in test guest in this build: give --kernel PATH")]
    NoBuiltInGuest,
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel, initrd or command line could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The zero page could not be written.
    #[error(transparent)]
    ZeroPage(#[from] ZeroPageError),
    /// The MP table could not be written.
    #[error(transparent)]
    MpTable(#[from] MpTableError),
    /// Another boot structure could not be written.
    #[error("cannot write {what} into guest memory: {reason}")]
    GuestMemory {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A device could not be placed on a bus.
    #[error("cannot place {what} on its bus: {source}")]
    Bus {
        /// The device.
        what: &'static str,
        /// The bus's complaint.
        source: BusError,
    },
    /// The serial output file could not be opened.
    #[error("cannot open serial output file {path}: {source}")]
    SerialFile {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The ACPI tables could not be built or written.
    #[error("cannot write the ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    /// A disk could not be attached.
    #[error(transparent)]
    Disk(#[from] virtio::VirtioError),
    /// More disks than the transport has room for.
    #[error("too many disks ({count}): at most {max} fit {room}")]
    TooManyDisks {
        /// Disks asked for.
        count: usize,
        /// How many fit.
        max: usize,
        /// What runs out.
        room: &'static str,
    },
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The tenant policy forbids this launch.
    #[error("the policy {} forbids this launch: {refusal}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// The rule and why.
        refusal: LaunchRefusal,
    },
    /// The launch plan could not be built.
    #[error(transparent)]
    Plan(#[from] PlanBuildError),
    /// The SEV-SNP launch failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The platform could not launch the plan.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The platform (sim root, real SNP host, plan VMSAs) could not be set up.
    #[error("{0}")]
    Platform(String),
    /// An ID block on a platform without SNP_LAUNCH_FINISH.
    #[error("--id-block needs --platform sim or snp: a plain KVM launch (--platform none) has no SNP_LAUNCH_FINISH to check it")]
    IdBlockWithoutSnp,
    /// An ID block or ID auth file of the wrong size.
    #[error("{what} file {} is {got} bytes; an {what} is exactly {expected} bytes", path.display())]
    IdBlockSize {
        /// "ID block" or "ID auth structure".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The ABI's size.
        expected: usize,
        /// The file's size.
        got: usize,
    },
    /// `--id-author-key` with an ID auth structure that has no author key.
    #[error("--id-author-key: the ID auth file {} has no author key (AUTHOR_KEY is all zero); sign it with `cloister id-block --author-key PEM`, or launch without --id-author-key", .0.display())]
    NoAuthorKey(PathBuf),
    /// The firmware refused the ID block at SNP_LAUNCH_FINISH.
    #[error("SNP_LAUNCH_FINISH refused the ID block with firmware status {status}: {reason}")]
    IdBlockRefused {
        /// The firmware's status.
        status: FwStatus,
        /// What it means for this ID block.
        reason: String,
    },
    /// A host resource (eventfd, thread, epoll) failed.
    #[error("{what}: {source}")]
    Host {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
}

fn host(what: &'static str) -> impl FnOnce(std::io::Error) -> BuildError {
    move |source| BuildError::Host { what, source }
}

/// How a VM run ended.
#[derive(Debug)]
pub enum VmExit {
    /// The guest ended the VM with this status (debug-exit port, i8042 reset or ACPI
    /// power-off, the last two as 0).
    Guest(u8),
    /// A vCPU failed (triple fault, emulation failure, ...).
    VcpuFailed(VcpuError),
    /// A vCPU thread ended without an error and without an exit request.
    VcpuVanished,
    /// The monitor was told to terminate by this signal.
    Signal(i32),
}

/// A VM ready to run.
pub struct Vmm {
    kvm: Kvm,
    // Declared before `mem` so the vCPUs (which run on it) are dropped first.
    vcpus: Vec<Vcpu>,
    backend: Box<dyn LaunchBackend>,
    mem: GuestMemoryMmap,
    exit: ExitHandle,
    serial: Arc<Mutex<SerialConsole<ConsoleOutput>>>,
    stdio_console: bool,
    launch: LaunchSummary,
    seccomp: bool,
    seccomp_violation: Option<crate::seccomp::ThreadKind>,
    device_workers: Vec<DeviceWorker>,
}

/// What was launched: the platform, the measurement `cloister measure` predicts for this
/// exact plan, and (on `sim`) the one the secure processor computed from what it loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSummary {
    /// The platform.
    pub platform: Platform,
    /// The plan's launch digest.
    pub predicted: [u8; 48],
    /// The simulated secure processor's launch digest (`sim` only).
    pub measured: Option<[u8; 48]>,
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The kernel's bytes and the name messages give it: the user's file, or the built-in
/// test guest (for `run` and `measure --layout cloister` alike).
pub fn kernel_image(
    source: &KernelSource,
    boot: BootLayout,
) -> Result<(Vec<u8>, String), BuildError> {
    match source {
        KernelSource::File(path) => {
            Ok((read_file("kernel image", path)?, path.display().to_string()))
        }
        KernelSource::BuiltIn if crate::test_guest::ELF.is_empty() => {
            Err(BuildError::NoBuiltInGuest)
        }
        // The verifier boots bzImages (through Linux's 64-bit entry).
        KernelSource::BuiltIn if boot == BootLayout::Verifier => Ok((
            crate::test_guest::BZIMAGE.to_vec(),
            "(built-in test guest, bzImage)".to_string(),
        )),
        KernelSource::BuiltIn => Ok((
            crate::test_guest::ELF.to_vec(),
            "(built-in test guest)".to_string(),
        )),
    }
}

/// The ID block files of `cloister run --id-block FILE --id-auth FILE [--id-author-key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlockFiles {
    /// The ID block (96 bytes).
    pub id_block: PathBuf,
    /// The ID authentication information structure (4096 bytes).
    pub id_auth: PathBuf,
    /// AUTHOR_KEY_EN: the firmware also checks the author key's signature of the ID key,
    /// and reports carry AUTHOR_KEY_DIGEST. Asked for explicitly (as SNP_LAUNCH_FINISH
    /// takes it), never inferred from the file.
    pub author_key_enabled: bool,
}

impl IdBlockFiles {
    /// Reads both files: each must be exactly its ABI size, and with `author_key_enabled`
    /// the ID auth structure must hold an author key.
    pub fn load(&self) -> Result<IdBlockAndAuth, BuildError> {
        let id_block: [u8; ID_BLOCK_SIZE] = read_sized("ID block", &self.id_block)?;
        let id_auth: Box<[u8; ID_AUTH_SIZE]> =
            Box::new(read_sized("ID auth structure", &self.id_auth)?);
        let has_author_key = IdAuth::from_bytes(&id_auth).has_author_key();
        if self.author_key_enabled && !has_author_key {
            return Err(BuildError::NoAuthorKey(self.id_auth.clone()));
        }
        if has_author_key && !self.author_key_enabled {
            log::warn!(
                "the ID auth file {} has an author key, but without --id-author-key the firmware ignores it and reports carry no AUTHOR_KEY_DIGEST",
                self.id_auth.display()
            );
        }
        Ok(IdBlockAndAuth {
            id_block: Box::new(id_block),
            id_auth,
            author_key_enabled: self.author_key_enabled,
        })
    }
}

fn read_sized<const N: usize>(what: &'static str, path: &Path) -> Result<[u8; N], BuildError> {
    let bytes = read_file(what, path)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| BuildError::IdBlockSize {
            what,
            path: path.to_path_buf(),
            expected: N,
            got: bytes.len(),
        })
}

/// A failed launch, with the firmware's refusal of the plan's ID block at
/// SNP_LAUNCH_FINISH explained.
fn explain_id_block_refusal(error: BackendError, plan: &LaunchPlan<'_>) -> BuildError {
    let host_error = match &error {
        BackendError::Launch(LaunchError::Host { source, .. }) => *source,
        _ => return error.into(),
    };
    let Some(id) = plan.id_block.as_ref() else {
        return error.into();
    };
    if !host_error.op.ends_with("SNP_LAUNCH_FINISH") || host_error.fw_error == 0 {
        return error.into();
    }
    let status = FwStatus(host_error.fw_error);
    let block = IdBlock::from_bytes(&id.id_block);
    let reason = match status {
        FwStatus::BAD_MEASUREMENT => format!(
            "its LD {} is not this launch's measurement {}; sign an ID block for this launch (`cloister id-block` with the same kernel, initrd, command line, vCPUs, memory, disks and policy)",
            hex::encode(block.ld),
            hex::encode(plan.measure())
        ),
        FwStatus::BAD_SIGNATURE => "a signature does not verify (the ID key's of the ID block, or with --id-author-key the author key's of the ID key): the files were changed after signing, or do not belong together".to_string(),
        FwStatus::POLICY_FAILURE if block.policy != plan.policy => format!(
            "its POLICY {:#x} is not the guest policy {:#x} of this launch",
            block.policy, plan.policy
        ),
        FwStatus::INVALID_PARAM => format!(
            "VERSION must be 1 (it is {}) and ID_KEY_ALGO (with --id-author-key also AUTH_KEY_ALGO) 1, ECDSA P-384 with SHA-384",
            block.version
        ),
        _ => host_error.to_string(),
    };
    BuildError::IdBlockRefused { status, reason }
}

/// Builds the VM described by `config` on the KVM device at `kvm_path` (normally
/// [`crate::vstate::vm::KVM_PATH`]), without an ID block.
pub fn build(config: &VmConfig, kvm_path: &Path) -> Result<Vmm, BuildError> {
    build_with_id_block(config, kvm_path, None)
}

/// Builds the VM described by `config` on the KVM device at `kvm_path`, giving
/// SNP_LAUNCH_FINISH the ID block in `id_block` (`sim` and `snp` only; its files are
/// checked before anything else is read; a firmware refusal names its status and why).
///
/// One boot path for every platform: the launch plan of Cloister's layout
/// ([`cloister_plan`](crate::boot::plan::cloister_plan)) is built first; `none` copies its regions into guest memory,
/// `sim` and `snp` hand them, in the same order, to the SNP launcher. Every vCPU starts
/// from the plan's VMSA state.
pub fn build_with_id_block(
    config: &VmConfig,
    kvm_path: &Path,
    id_block: Option<&IdBlockFiles>,
) -> Result<Vmm, BuildError> {
    // The tenant policy first: a launch it forbids is refused before anything exists.
    let guest_policy = check_policy(config)?;
    let id_block = match id_block {
        Some(_) if config.platform == Platform::None => return Err(BuildError::IdBlockWithoutSnp),
        Some(files) => Some(files.load()?),
        None => None,
    };
    let (kernel_image, kernel_name) = kernel_image(&config.kernel, config.boot)?;
    let initrd = match &config.initrd {
        Some(path) => Some((read_file("initrd", path)?, path.display().to_string())),
        None => None,
    };
    // The user's files are checked before KVM, so their errors do not depend on the host.
    if detect_format(&kernel_image).is_none() {
        return Err(LoadError::UnknownFormat(kernel_name).into());
    }
    let (slots, cmdline) = disk_layout(config.disks.len(), config.virtio, &config.cmdline)?;
    if config.boot == BootLayout::Verifier && !config.platform.is_snp_like() {
        return Err(BuildError::Platform(
            "--boot verifier is a layout for measured launches: use it with --platform sim or snp"
                .into(),
        ));
    }
    let planned = config.boot.plan(&LayoutInputs {
        kernel: &kernel_image,
        kernel_name: &kernel_name,
        initrd: initrd.as_ref().map(|(b, n)| (b.as_slice(), n.as_str())),
        cmdline: &cmdline,
        vcpus: config.vcpus,
        memory: config.memory,
        devices: &slots.mmio,
        pci: !slots.pci.is_empty(),
        platform: config.platform,
        policy: guest_policy,
        host_data: config.host_data,
    })?;
    // The plan holds its own copy of every byte it launches (and the staging its own):
    // the files go now, before guest memory fills with a third copy.
    drop(kernel_image);
    drop(initrd);
    let mut plan = planned.plan;
    let staging = planned.staging;
    plan.id_block = id_block;
    log::info!(
        "launch plan ({} platform): {} regions",
        config.platform.name(),
        plan.regions().len()
    );

    let kvm = open_kvm(kvm_path)?;
    let max = kvm.get_max_vcpus();
    if usize::from(config.vcpus) > max {
        return Err(BuildError::TooManyVcpus {
            asked: config.vcpus,
            max,
        });
    }
    let mem = create_vm_memory(config.memory)?;

    // The certificates served with the guest's report requests: the user's, or on sim
    // the simulation root's (exported below); none on snp unless given.
    let mut guest_certs = match &config.guest_certs {
        Some(dir) => Some(Arc::new(
            CertTable::from_dir(dir).map_err(BuildError::Platform)?,
        )),
        None => None,
    };
    let mut sim_psp = None;
    let mut backend: Box<dyn LaunchBackend> = match config.platform {
        Platform::None => Box::new(PlainBackend::new(Vm::new(&kvm)?)),
        Platform::Sim | Platform::Snp => {
            let host: Arc<dyn SnpHost> = if config.platform == Platform::Sim {
                let root = SimRoot::load_or_create(&config.sim_root).map_err(|e| {
                    BuildError::Platform(format!(
                        "the simulation root in {}: {e}",
                        config.sim_root.display()
                    ))
                })?;
                let certs = config.sim_root.join("certs");
                root.export_cert_dir(&certs).map_err(|e| {
                    BuildError::Platform(format!(
                        "exporting the simulation certificates to {}: {e}",
                        certs.display()
                    ))
                })?;
                if guest_certs.is_none() {
                    // From the root in memory: the exported files may be rewritten at
                    // this moment by a parallel launch sharing the root.
                    guest_certs = Some(Arc::new(sim_cert_table(&root)?));
                }
                let psp = Arc::new(Mutex::new(SimPsp::new(Arc::new(root))));
                sim_psp = Some(psp.clone());
                Arc::new(SimSnpHost::new(&kvm, psp)?)
            } else {
                open_snp_host(kvm_path, &config.sev_device, plan.policy)?
            };
            let mut snp = SnpBackend::new(host.clone())?;
            if guest_certs.is_some() {
                host.snp_enable_req_certs().map_err(|e| {
                    BuildError::Platform(format!(
                        "serving certificates to the guest needs KVM_EXIT_SNP_REQ_CERTS \
                         (Linux 7.0+): {e}; run without --guest-certs to give the guest an \
                         empty certificate table"
                    ))
                })?;
            }
            snp.add_memory(&mem)?;
            snp.start(plan.policy)?;
            Box::new(snp)
        }
    };
    if config.platform == Platform::None {
        backend.add_memory(&mem)?;
    }
    let vm = backend.vm();
    // After the memory slots (see `create_interrupt_controllers`), before any vCPU.
    vm.create_interrupt_controllers()?;

    let exit = ExitHandle::new().map_err(host("creating the exit event"))?;
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let serial_out = match &config.serial {
        SerialMode::Stdio => ConsoleOutput::Stdout,
        SerialMode::Off => ConsoleOutput::Off,
        SerialMode::File(path) => {
            ConsoleOutput::file(path).map_err(|source| BuildError::SerialFile {
                path: path.clone(),
                source,
            })?
        }
    };
    let serial_irq =
        EventFd::new(EFD_NONBLOCK).map_err(host("creating the serial interrupt event"))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(serial_irq, serial_out)));
    let bus_err = |what| move |source| BuildError::Bus { what, source };
    pio.insert(serial.clone(), COM1_PORT, COM1_PORT_COUNT)
        .map_err(bus_err("the serial console"))?;
    // Only when asked for: otherwise a guest cannot choose the monitor's exit status.
    if config.debug_exit {
        pio.insert(
            Arc::new(Mutex::new(DebugExit::new(exit.clone()))),
            DEBUG_EXIT_PORT,
            1,
        )
        .map_err(bus_err("the debug-exit port"))?;
    }
    pio.insert(
        Arc::new(Mutex::new(I8042::new(exit.clone()))),
        I8042_PORT,
        5,
    )
    .map_err(bus_err("the i8042 controller"))?;
    pio.insert(
        Arc::new(Mutex::new(AcpiSleepControl::new(exit.clone()))),
        ACPI_SLEEP_CONTROL_PORT,
        2,
    )
    .map_err(bus_err("the ACPI sleep control register"))?;
    pio.insert(
        Arc::new(Mutex::new(CmosRtc::new())),
        CMOS_RTC_PORT,
        CMOS_RTC_PORT_COUNT,
    )
    .map_err(bus_err("the CMOS RTC"))?;
    let mut vmgexit_ports = None;
    if let Some(psp) = &sim_psp {
        let (device, ports) = SimVmgexit::new(
            psp.clone(),
            mem.clone(),
            guest_certs
                .clone()
                .unwrap_or_else(|| Arc::new(CertTable::empty())),
            GUEST_REQUEST_PORT..GUEST_REQUEST_PORT + 4,
        );
        pio.insert(Arc::new(Mutex::new(device)), GUEST_REQUEST_PORT, 4)
            .map_err(bus_err("the simulated VMGEXIT doorbell"))?;
        vmgexit_ports = Some(ports);
    }

    let mut device_workers = attach_virtio_disks(vm, &mem, &mut mmio, &config.disks, &slots.mmio)?;
    if !slots.pci.is_empty() {
        device_workers.extend(attach_pci_disks(
            vm,
            &mem,
            &mut pio,
            &mut mmio,
            &config.disks,
            &slots.pci,
            u16::from(config.vcpus),
        )?);
    }

    register_kick_handler()
        .map_err(|e| host("installing the vCPU kick signal handler")(e.into()))?;
    let pio = Arc::new(pio);
    if let Some(ports) = vmgexit_ports {
        // Set once, here; the device holds only a weak handle (the bus holds it).
        let _ = ports.set(Arc::downgrade(&pio));
    }
    let mmio = Arc::new(mmio);
    let vmsas: Vec<&Vmsa> = plan
        .regions()
        .iter()
        .filter_map(|r| r.vmsa_state())
        .collect();
    let allow_shared = config
        .policy
        .as_ref()
        .is_none_or(|(p, _)| p.allows_conversion_to_shared());
    let snp_exits = backend.exit_handler().map(|host| SnpExits {
        host,
        allow_shared,
        // On sim the simulated VMGEXIT serves them; on snp KVM exits for them.
        certs: match config.platform {
            Platform::Snp => guest_certs.clone().map(|t| (t, mem.clone())),
            _ => None,
        },
    });
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    let mut bsp_cpuid = Vec::new();
    for index in 0..config.vcpus {
        let vcpu = Vcpu::from_fd(
            backend.create_vcpu(index)?,
            index,
            pio.clone(),
            mmio.clone(),
            exit.clone(),
            snp_exits.clone(),
        );
        let vmsa = vmsas
            .get(usize::from(index))
            .ok_or(BuildError::Platform(format!(
                "the plan has no VMSA for vCPU {index}"
            )))?;
        // On sim the guest is a plain KVM guest holding SNP's CC blob: no SEV leaf.
        let hide_sev = config.platform == Platform::Sim;
        let cpuid = vcpu.configure(&kvm, config.vcpus, vmsa, index == 0, hide_sev)?;
        if index == 0 {
            bsp_cpuid = cpuid;
        }
        vcpus.push(vcpu);
    }
    let fds: Vec<&VcpuFd> = vcpus.iter().map(|v| v.fd()).collect();
    let stats = backend
        .launch(&plan, &mem, &fds, &bsp_cpuid)
        .map_err(|e| explain_id_block_refusal(e, &plan))?;
    // The verifier layout's staging: written after the launch into memory that stays
    // shared (never launched), where the verifier reads and checks it.
    for (gpa, bytes) in &staging {
        mem.write_slice(bytes, GuestAddress(*gpa))
            .map_err(|e| BuildError::Platform(format!("writing the staging at {gpa:#x}: {e}")))?;
    }
    if let Some(what) = config.tamper_staging {
        tamper_staging(&mem, &staging, what)?;
    }
    log::info!(
        "launch on {}: {} pages, {} LAUNCH_UPDATE calls, {} CPUID retries",
        backend.name(),
        stats.pages,
        stats.update_calls,
        stats.cpuid_retries
    );
    // The digest is the prediction of a measured launch; a plain one skips it.
    let launch = LaunchSummary {
        platform: config.platform,
        predicted: if config.platform.is_snp_like() {
            plan.measure()
        } else {
            [0; 48]
        },
        measured: sim_psp
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).measurement()),
    };
    Ok(Vmm {
        kvm,
        vcpus,
        backend,
        mem,
        exit,
        serial,
        stdio_console: config.serial == SerialMode::Stdio,
        launch,
        seccomp: config.seccomp,
        seccomp_violation: config.seccomp_violation,
        device_workers,
    })
}

/// The certificate table of a simulation root: its ARK, ASK and VCEK.
fn sim_cert_table(root: &SimRoot) -> Result<CertTable, BuildError> {
    let mut bundle = cloister_attestation::certs::CertBundle::default();
    for (der, what) in [
        (root.ark_der(), "the simulation ARK"),
        (root.ask_der(), "the simulation ASK"),
        (root.vcek_der(), "the simulation VCEK"),
    ] {
        let cert = cloister_attestation::certs::Certificate::from_der(der, what)
            .and_then(|c| bundle.add(c, what))
            .map_err(|e| BuildError::Platform(format!("{what}: {e}")));
        cert?;
    }
    Ok(CertTable::from_bundle(&bundle))
}

/// The guest policy of `config`'s launch under its tenant policy, or the refusal naming
/// the rule (the default guest policy without a tenant policy). Shared by the builder and
/// by `run --jail`, which checks before it leaves the host's /sys behind.
pub fn check_policy(config: &VmConfig) -> Result<u64, BuildError> {
    let Some((policy, path)) = &config.policy else {
        return Ok(DEFAULT_GUEST_POLICY);
    };
    policy
        .check_launch(&describe_launch(
            config.platform,
            config.vcpus,
            config.disks.iter().map(|d| d.path.display().to_string()),
            std::fs::read_to_string("/sys/devices/system/cpu/smt/active")
                .ok()
                .map(|s| s.trim() == "1"),
        ))
        .map_err(|refusal| BuildError::Policy {
            path: path.clone(),
            refusal,
        })
}

/// What the tenant policy is asked to allow: a launch on `platform` with `vcpus` and one
/// virtio-blk device per name in `disks`, on a host whose SMT is `host_smt_active` (unknown:
/// the firmware enforces an SMT-forbidding policy itself). Shared by `run` and `measure`.
pub fn describe_launch(
    platform: Platform,
    vcpus: u8,
    disks: impl Iterator<Item = String>,
    host_smt_active: Option<bool>,
) -> LaunchDescription {
    LaunchDescription {
        platform: match platform {
            Platform::None => LaunchPlatform::None,
            Platform::Sim => LaunchPlatform::Sim,
            Platform::Snp => LaunchPlatform::Snp,
        },
        vcpus: u32::from(vcpus),
        host_smt_active,
        firmware_abi: match platform {
            Platform::Sim => Some((SIM_FIRMWARE.major, SIM_FIRMWARE.minor)),
            // Real firmware enforces the ABI minimum at LAUNCH_START.
            Platform::Snp | Platform::None => None,
        },
        virtio_devices: disks
            .enumerate()
            .map(|(i, path)| VirtioDeviceInfo {
                name: format!("virtio-blk {i} ({path})"),
                offers_access_platform: virtio::block::OFFERS_ACCESS_PLATFORM,
            })
            .collect(),
        // The simulated kernel models Linux 6.11-6.18; on snp the probe refines it later
        // (kvm_accepts_policy with the host's capabilities).
        kvm_policy_rule: KvmPolicyRule::Fixed,
        request_debug: false,
        request_migration_agent: false,
    }
}

/// Where the disks go: virtio-mmio slots or virtio-pci functions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskLayout {
    /// virtio-mmio slots (with `--virtio mmio`).
    pub mmio: Vec<MmioSlot>,
    /// virtio-pci functions (with `--virtio pci`); the machine has PCI bus 0 only if
    /// there is one.
    pub pci: Vec<PciSlot>,
}

/// Where `disks` virtio-blk devices go on `transport`, and the command line the plan
/// announces them with (shared by `run` and `measure --layout cloister`, so both see the
/// same guest).
pub fn disk_layout(
    disks: usize,
    transport: VirtioTransport,
    user_cmdline: &str,
) -> Result<(DiskLayout, String), BuildError> {
    let mut layout = DiskLayout::default();
    match transport {
        VirtioTransport::Mmio => {
            layout.mmio = (0..disks)
                .map(|i| {
                    MmioSlot::nth(i).ok_or(BuildError::TooManyDisks {
                        count: disks,
                        max: (IRQ_MAX - VIRTIO_GSI_START + 1) as usize,
                        room: "the interrupt lines of virtio-mmio",
                    })
                })
                .collect::<Result<_, _>>()?
        }
        VirtioTransport::Pci => {
            layout.pci = (0..disks)
                .map(|i| {
                    PciSlot::nth(i, virtio::pci::BAR_SIZE).ok_or(BuildError::TooManyDisks {
                        count: disks,
                        max: 31,
                        room: "PCI bus 0",
                    })
                })
                .collect::<Result<_, _>>()?
        }
    }
    let cmdline = guest_cmdline(user_cmdline, &layout.mmio);
    Ok((layout, cmdline))
}

/// The command line the guest gets: the user's, then one `virtio_mmio.device=` per slot.
fn guest_cmdline(user: &str, slots: &[MmioSlot]) -> String {
    let mut cmdline = user.to_string();
    for slot in slots {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&slot.cmdline_arg());
    }
    cmdline
}

fn open_snp_host(
    kvm_path: &Path,
    sev_path: &Path,
    policy: u64,
) -> Result<Arc<dyn SnpHost>, BuildError> {
    let host = KvmSnpHost::open(kvm_path, sev_path)
        .map_err(|e| BuildError::Platform(format!("--platform snp: {e}")))?;
    // Refused here, before LAUNCH_START, with the rule named.
    kvm_accepts_policy(policy, host.capabilities())
        .map_err(|e| BuildError::Platform(format!("--platform snp: {e}")))?;
    Ok(Arc::new(host))
}

/// A device served on its own thread: it waits on `notify` (the queue notifications,
/// through a KVM ioeventfd or the transport) and serves the device's queues.
struct DeviceWorker {
    name: String,
    device: Arc<Mutex<dyn virtio::NotifiedDevice>>,
    notify: Arc<EventFd>,
}

/// Puts one virtio-blk device per disk on the MMIO bus, each with its own slot, an irqfd
/// on its GSI and an ioeventfd on its QueueNotify register; returns the workers that serve
/// them off the vCPU threads.
fn attach_virtio_disks(
    vm: &Vm,
    mem: &GuestMemoryMmap,
    mmio: &mut Bus,
    disks: &[DiskSpec],
    slots: &[MmioSlot],
) -> Result<Vec<DeviceWorker>, BuildError> {
    let mut workers = Vec::with_capacity(disks.len());
    for (index, (disk, slot)) in disks.iter().zip(slots).enumerate() {
        let slot = *slot;
        let irq = EventFd::new(EFD_NONBLOCK).map_err(host("creating a disk interrupt event"))?;
        vm.register_irqfd(&irq, slot.gsi)?;
        // Blocking: the device thread sleeps in read() until a notification.
        let notify = Arc::new(EventFd::new(0).map_err(host("creating a disk notify event"))?);
        let notify_at = slot.base + virtio::mmio::reg::QUEUE_NOTIFY;
        if let Err(e) = vm.register_mmio_ioevent(&notify, notify_at) {
            // The transport then signals the same eventfd on the MMIO exit.
            log::debug!("disk {index}: no ioeventfd ({e}); notifications exit to the monitor");
        }
        let (device, worker) =
            virtio::new_threaded_block_device(disk, mem.clone(), Arc::new(irq), notify.clone())?;
        workers.push(DeviceWorker {
            name: format!("virtio-blk{index}"),
            device: worker,
            notify,
        });
        mmio.insert(device, slot.base, slot.len)
            .map_err(|source| BuildError::Bus {
                what: "a virtio-blk device",
                source,
            })?;
        log::info!(
            "disk {} ({}) at {:#x}, GSI {}",
            disk.path.display(),
            if disk.readonly {
                "read-only"
            } else {
                "read-write"
            },
            slot.base,
            slot.gsi
        );
    }
    Ok(workers)
}

/// Puts PCI bus 0 on the buses (configuration ports, the BAR window) with one
/// virtio-blk-pci function per disk: MSI-X vectors on irqfds of their own GSIs (routed
/// when the guest programs them), an ioeventfd per queue on its notify address; returns
/// the workers that serve them off the vCPU threads.
fn attach_pci_disks(
    vm: &Vm,
    mem: &GuestMemoryMmap,
    pio: &mut Bus,
    mmio: &mut Bus,
    disks: &[DiskSpec],
    slots: &[PciSlot],
    queues: u16,
) -> Result<Vec<DeviceWorker>, BuildError> {
    let pci_host: Arc<dyn PciHost> = vm.pci_host();
    let mut root = PciRoot::new();
    let mut workers = Vec::with_capacity(disks.len());
    let mut next_gsi = MSI_GSI_START;
    for (index, (disk, slot)) in disks.iter().zip(slots).enumerate() {
        // One request queue per vCPU, as QEMU's virtio-blk-pci: each has its own MSI-X
        // vector, which Linux binds to the queue's CPU.
        let block = virtio::Block::open(disk)?.with_queues(queues);
        let vectors = virtio::VirtioDevice::queue_max_sizes(&block).len() + 1;
        let mut vector_irqs: Vec<Arc<dyn virtio::IrqTrigger>> = Vec::with_capacity(vectors);
        let mut vector_gsis = Vec::with_capacity(vectors);
        for _ in 0..vectors {
            if next_gsi > MSI_GSI_END {
                return Err(BuildError::TooManyDisks {
                    count: disks.len(),
                    max: index,
                    room: "the MSI GSIs",
                });
            }
            let irq = EventFd::new(EFD_NONBLOCK).map_err(host("creating an MSI-X vector event"))?;
            vm.register_irqfd(&irq, next_gsi)?;
            vector_irqs.push(Arc::new(irq));
            vector_gsis.push(next_gsi);
            next_gsi += 1;
        }
        let notify = Arc::new(EventFd::new(0).map_err(host("creating a disk notify event"))?);
        let function = virtio::pci::VirtioPciFunction::new(
            block,
            mem.clone(),
            virtio::pci::PciWiring {
                bar0: slot.bar0,
                window: PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE,
                vector_irqs,
                vector_gsis: vector_gsis.clone(),
                host: pci_host.clone(),
                notify: Some(notify.clone()),
            },
        );
        workers.push(DeviceWorker {
            name: format!("virtio-blk{index}"),
            device: function.transport(),
            notify,
        });
        root.add(usize::from(slot.device), Arc::new(Mutex::new(function)))
            .map_err(|e| BuildError::Platform(format!("disk {index}: {e}")))?;
        log::info!(
            "disk {} ({}) at PCI 00:{:02x}.0, BAR0 {:#x}, MSI-X GSIs {:?}",
            disk.path.display(),
            if disk.readonly {
                "read-only"
            } else {
                "read-write"
            },
            slot.device,
            slot.bar0,
            vector_gsis
        );
    }
    let root = Arc::new(root);
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        PCI_CONFIG_IO_PORT,
        PCI_CONFIG_IO_LEN,
    )
    .map_err(|source| BuildError::Bus {
        what: "the PCI configuration ports",
        source,
    })?;
    mmio.insert(
        Arc::new(Mutex::new(PciMmioWindow::new(PCI_MMIO_START, root))),
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
    )
    .map_err(|source| BuildError::Bus {
        what: "the PCI memory window",
        source,
    })?;
    Ok(workers)
}

/// A running device thread and the eventfd that wakes it.
type DeviceThread = (Arc<EventFd>, JoinHandle<()>);

/// Starts one thread per device worker. Each installs the device seccomp filter, then
/// serves its device whenever its eventfd is signalled, until `stop` is set (and the
/// eventfd written once more to wake it).
fn spawn_device_threads(
    workers: Vec<DeviceWorker>,
    stop: &Arc<AtomicBool>,
    seccomp: bool,
) -> Result<Vec<DeviceThread>, BuildError> {
    let mut threads = Vec::with_capacity(workers.len());
    for worker in workers {
        let stop = stop.clone();
        let notify = worker.notify.clone();
        let name = worker.name.clone();
        let handle = std::thread::Builder::new()
            .name(worker.name.clone())
            .spawn(move || {
                if seccomp {
                    if let Err(e) = crate::seccomp::install(ThreadKind::Device) {
                        log::error!("{name}: {e}; the device stops serving");
                        return;
                    }
                }
                loop {
                    match worker.notify.read() {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            log::error!("{name}: waiting for notifications: {e}");
                            return;
                        }
                    }
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    worker
                        .device
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .serve_notified();
                }
            })
            .map_err(host("starting a device thread"))?;
        threads.push((notify, handle));
    }
    Ok(threads)
}

/// Stops the device threads: sets `stop` (already set by the caller), wakes each, joins.
fn stop_device_threads(threads: Vec<DeviceThread>) {
    for (notify, handle) in threads {
        if let Err(e) = notify.write(1) {
            log::debug!("waking a device thread: {e}");
        }
        if handle.join().is_err() {
            log::error!("a device thread panicked");
        }
    }
}

impl Vmm {
    /// What was launched.
    pub fn launch(&self) -> &LaunchSummary {
        &self.launch
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Runs the VM until the guest asks to end it, a vCPU fails, or the monitor is
    /// signalled; stops and joins every vCPU thread before returning.
    pub fn run(self) -> Result<VmExit, BuildError> {
        let Vmm {
            kvm: _kvm,
            vcpus,
            backend: _backend,
            mem: _mem,
            exit,
            serial,
            stdio_console,
            launch: _launch,
            seccomp,
            seccomp_violation,
            device_workers,
        } = self;
        if !seccomp {
            log::warn!("seccomp filters are off (--seccomp off): for debugging only");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(host("creating the vCPU event"))?);
        // Device threads first: they exist before the main thread's filter, like the vCPUs.
        let device_threads = spawn_device_threads(device_workers, &stop, seccomp)?;
        let (tx, rx) = mpsc::channel::<(u8, Result<VcpuStop, VcpuError>)>();
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
        for mut vcpu in vcpus {
            let (thread_stop, ended, tx) = (stop.clone(), ended.clone(), tx.clone());
            let index = vcpu.index();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    // Wakes the event loop however this thread ends, a panic included.
                    let _signal_end = SignalEnd { index, ended };
                    // The vCPU's filter, before its first KVM_RUN.
                    if seccomp {
                        if let Err(e) = crate::seccomp::install(ThreadKind::Vcpu) {
                            let _ = tx.send((index, Err(VcpuError::Seccomp(e.to_string()))));
                            return;
                        }
                        if seccomp_violation == Some(ThreadKind::Vcpu) {
                            crate::seccomp::violate();
                        }
                    }
                    let result = vcpu.run(&thread_stop);
                    // The receiver lives until every thread is joined.
                    let _ = tx.send((index, result));
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    stop_vcpus(&stop, threads);
                    stop_device_threads(device_threads);
                    return Err(host("starting a vCPU thread")(e));
                }
            }
        }
        drop(tx);
        // The main thread's filter: after every vCPU thread exists (they keep their own),
        // before the event loop.
        if seccomp {
            if let Err(e) = crate::seccomp::install(ThreadKind::Vmm) {
                stop_vcpus(&stop, threads);
                stop_device_threads(device_threads);
                return Err(BuildError::Platform(e.to_string()));
            }
            if seccomp_violation == Some(ThreadKind::Vmm) {
                crate::seccomp::violate();
            }
        }

        let terminal = if stdio_console {
            TerminalInput::from_stdin()
        } else {
            None
        };
        let end = event_loop::run(&exit, &ended, terminal.as_ref(), |bytes| {
            let mut uart = serial.lock().unwrap_or_else(|p| p.into_inner());
            uart.enqueue_input(bytes);
        });
        drop(terminal);
        stop_vcpus(&stop, threads);
        stop_device_threads(device_threads);
        let end = end.map_err(host("running the event loop"))?;

        if let Some(code) = exit.requested() {
            return Ok(VmExit::Guest(code));
        }
        if let LoopEnd::Signal(num) = end {
            return Ok(VmExit::Signal(num));
        }
        for (index, result) in rx.try_iter() {
            match result {
                Err(e) => return Ok(VmExit::VcpuFailed(e)),
                Ok(stop) => log::debug!("vCPU {index} ended: {stop:?}"),
            }
        }
        // A vCPU thread ended with neither an error nor an exit request (or panicked).
        Ok(VmExit::VcpuVanished)
    }
}

/// Writes the "a vCPU thread ended" event when dropped.
struct SignalEnd {
    index: u8,
    ended: Arc<EventFd>,
}

impl Drop for SignalEnd {
    fn drop(&mut self) {
        if let Err(e) = self.ended.write(1) {
            log::error!("vCPU {}: cannot signal its end: {e}", self.index);
        }
    }
}

/// Asks every vCPU thread to stop, kicks it out of KVM_RUN, and joins it (giving up
/// after [`JOIN_TIMEOUT`]).
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut pending = threads;
    while !pending.is_empty() {
        for t in &pending {
            if !t.is_finished() {
                if let Err(e) = t.kill(kick_signal()) {
                    log::debug!("kicking a vCPU thread: {e}");
                }
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = pending.into_iter().partition(|t| t.is_finished());
        for t in done {
            if t.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        pending = running;
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            log::error!(
                "{} vCPU thread(s) did not stop; leaving them",
                pending.len()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Builds and runs the VM on the configured KVM device.
pub fn build_and_run(config: &VmConfig) -> Result<VmExit, BuildError> {
    build(config, &config.kvm_device)?.run()
}

/// The test hook `run --tamper-staging`: flips one bit of the staged kernel, initrd or
/// command line after the launch, as a hostile host could; the verifier must refuse.
fn tamper_staging(
    mem: &GuestMemoryMmap,
    staging: &[(u64, Vec<u8>)],
    what: crate::config::StagingPart,
) -> Result<(), BuildError> {
    let index = what as usize;
    let Some((gpa, bytes)) = staging.get(index).filter(|(_, b)| !b.is_empty()) else {
        return Err(BuildError::Platform(
            "--tamper-staging: this launch stages nothing of that kind".into(),
        ));
    };
    let at = GuestAddress(gpa + bytes.len() as u64 / 2);
    let byte: u8 = mem
        .read_obj(at)
        .map_err(|e| BuildError::Platform(format!("--tamper-staging: {e}")))?;
    mem.write_obj(byte ^ 1, at)
        .map_err(|e| BuildError::Platform(format!("--tamper-staging: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::boot::kernel::tests::tiny_elf;
    use crate::config::VmRequest;
    use crate::vstate::vm::KVM_PATH;

    fn config_for(kernel: &Path, cpus: u64) -> VmConfig {
        VmConfig::new(&VmRequest {
            kernel: Some(kernel.to_path_buf()),
            cpus,
            memory: "32M".into(),
            serial: "off".into(),
            // In-process VM: the seccomp filters would land on this test thread,
            // which the harness goes on using (files, threads).
            seccomp: Some("off".into()),
            debug_exit: true,
            ..Default::default()
        })
        .unwrap()
    }

    /// Hand-assembled 64-bit guest: `mov al, CODE; out 0xf4, al; hlt`.
    fn exit_with(code: u8) -> Vec<u8> {
        vec![0xb0, code, 0xe6, 0xf4, 0xf4]
    }

    /// A real KVM boot through the full path: ELF load, long-mode entry, port I/O exit,
    /// event loop, exit status. Fails (does not skip) when /dev/kvm is unusable.
    #[test]
    fn kvm_smoke_boot_exits_with_guest_code() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("smoke.elf");
        std::fs::write(&kernel, tiny_elf(&exit_with(42), 0x20_0000)).unwrap();
        for cpus in [1, 2] {
            let vmm = build(&config_for(&kernel, cpus), Path::new(KVM_PATH))
                .unwrap_or_else(|e| panic!("building the VM needs a usable /dev/kvm: {e}"));
            match vmm.run().unwrap() {
                VmExit::Guest(code) => assert_eq!(code, 42, "{cpus} vCPUs"),
                other => panic!("guest did not exit through the debug port: {other:?}"),
            }
        }
    }

    /// The guest reads the zero page through rsi and reports the e820 entry count and
    /// the command line's first byte: `mov al, [rsi+0x1e8]; out 0xf4, al`.
    #[test]
    fn kvm_smoke_guest_sees_the_zero_page() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("zp.elf");
        let code = [0x8a, 0x86, 0xe8, 0x01, 0x00, 0x00, 0xe6, 0xf4, 0xf4];
        std::fs::write(&kernel, tiny_elf(&code, 0x20_0000)).unwrap();
        let vmm = build(&config_for(&kernel, 1), Path::new(KVM_PATH)).unwrap();
        match vmm.run().unwrap() {
            VmExit::Guest(code) => assert_eq!(code, 3, "e820 entries for a 32 MiB guest"),
            other => panic!("unexpected end: {other:?}"),
        }
    }

    fn run_code(code: &[u8]) -> VmExit {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("code.elf");
        std::fs::write(&kernel, tiny_elf(code, 0x20_0000)).unwrap();
        build(&config_for(&kernel, 1), Path::new(KVM_PATH))
            .unwrap()
            .run()
            .unwrap()
    }

    /// `mov al, 0xfe; out 0x64, al` (i8042 CPU reset), then a debug exit with 9 that
    /// must not be reached: the reset ends the VM with 0.
    #[test]
    fn kvm_i8042_reset_stops_the_vm_with_zero() {
        let end = run_code(&[0xb0, 0xfe, 0xe6, 0x64, 0xb0, 0x09, 0xe6, 0xf4, 0xf4]);
        assert!(matches!(end, VmExit::Guest(0)), "{end:?}");
    }

    /// `mov dx, 0x3c0; mov al, 0x34; out dx, al` (SLP_EN | SLP_TYP 5): power-off, 0.
    #[test]
    fn kvm_acpi_s5_powers_off_with_zero() {
        let end = run_code(&[
            0x66, 0xba, 0xc0, 0x03, 0xb0, 0x34, 0xee, 0xb0, 0x09, 0xe6, 0xf4, 0xf4,
        ]);
        assert!(matches!(end, VmExit::Guest(0)), "{end:?}");
    }

    /// A triple fault (`ud2` with no IDT) is a vCPU failure, not a guest exit code.
    #[test]
    fn kvm_triple_fault_is_a_vcpu_failure() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("ud2.elf");
        std::fs::write(&kernel, tiny_elf(&[0x0f, 0x0b], 0x20_0000)).unwrap();
        let vmm = build(&config_for(&kernel, 1), Path::new(KVM_PATH)).unwrap();
        match vmm.run().unwrap() {
            VmExit::VcpuFailed(e) => assert!(e.to_string().contains("vCPU 0"), "{e}"),
            other => panic!("unexpected end: {other:?}"),
        }
    }

    fn run_builtin(image: &[u8], name: &str, cmdline: &str, cpus: u64) -> VmExit {
        assert!(!image.is_empty(), "this build has no built-in test guest");
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join(name);
        std::fs::write(&kernel, image).unwrap();
        let console = dir.path().join("console.log");
        let config = VmConfig::new(&VmRequest {
            kernel: Some(kernel),
            cmdline: Some(cmdline.to_string()),
            cpus,
            memory: "64M".into(),
            serial: format!("file={}", console.display()),
            // In-process VM: the seccomp filters would land on this test thread,
            // which the harness goes on using (files, threads).
            seccomp: Some("off".into()),
            debug_exit: true,
            ..Default::default()
        })
        .unwrap();
        let end = build(&config, Path::new(KVM_PATH)).unwrap().run().unwrap();
        let log = std::fs::read_to_string(&console).unwrap();
        assert!(
            log.contains(crate::test_guest::BOOT_MARKER),
            "console: {log}"
        );
        assert!(log.contains("PASS"), "console: {log}");
        end
    }

    /// The built-in guest as a bzImage: setup header parsed, entered at load + 0x200.
    #[test]
    fn kvm_boots_the_builtin_guest_as_bzimage() {
        let end = run_builtin(
            crate::test_guest::BZIMAGE,
            "guest.bzImage",
            "console=ttyS0 cloister_test.exit=5 cloister_test.cpus=2",
            2,
        );
        assert!(matches!(end, VmExit::Guest(5)), "{end:?}");
    }

    /// Without an exit code the guest powers off through the ACPI sleep control
    /// register the FADT describes: status 0.
    #[test]
    fn kvm_builtin_guest_powers_off_through_acpi() {
        let end = run_builtin(crate::test_guest::ELF, "guest.elf", "console=ttyS0", 1);
        assert!(matches!(end, VmExit::Guest(0)), "{end:?}");
    }

    #[test]
    fn missing_kvm_device_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k.elf");
        std::fs::write(&kernel, tiny_elf(&exit_with(0), 0x20_0000)).unwrap();
        let err = build(&config_for(&kernel, 1), &dir.path().join("kvm"))
            .err()
            .unwrap();
        assert!(
            matches!(err, BuildError::Vm(VmError::KvmMissing(_))),
            "{err}"
        );
        assert!(err.to_string().contains("does not exist"));
    }
}
