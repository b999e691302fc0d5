//! The VM a user asked for, validated: a built [`VmConfig`] is a bootable request as
//! far as can be told without opening files or KVM.

use std::path::PathBuf;

use crate::boot::layout::MAX_CPUS;
pub use crate::boot::plan::Platform;
use crate::memory::{host_ram, validate_size, MemoryError, MemorySize};

/// Kernel command line used when the user gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";
/// Guest memory used when the user gives no size.
pub const DEFAULT_MEMORY: &str = "128M";

/// Errors in the user's VM description.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Unknown `--virtio`.
    #[error("--virtio: {0}")]
    Virtio(String),
    /// Unknown `--platform`.
    #[error("--platform {0:?} is not one of none, sim, snp")]
    Platform(String),
    /// The policy file cannot be used.
    #[error("--policy: {0}")]
    Policy(String),
    /// Bad `--host-data`.
    #[error("--host-data must be at most 32 bytes of hex (64 hex digits), got {0:?}")]
    HostData(String),
    /// Bad memory size.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// vCPU count out of range.
    #[error("--cpus {0} is out of range: give 1 to {MAX_CPUS} vCPUs")]
    CpuCount(u64),
    /// A --disk value that does not parse.
    #[error("--disk {value:?}: {reason} (expected path=PATH[,readonly=on|off])")]
    DiskSyntax {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A --serial value that does not parse.
    #[error("--serial {0:?} is not one of stdio, off, file=PATH")]
    SerialSyntax(String),
    /// A command line with a NUL byte.
    #[error("--cmdline contains a NUL byte")]
    CmdlineNul,
    /// Unknown `--boot`.
    #[error("--boot {0:?} is not one of direct, verifier")]
    Boot(String),
    /// Unknown `--seccomp` or `--seccomp-violation`.
    #[error("{0}")]
    Seccomp(String),
    /// Unknown `--tamper-staging`.
    #[error("--tamper-staging {0:?} is not one of kernel, initrd, cmdline")]
    TamperStaging(String),
}

/// Which staged image the `--tamper-staging` test hook spoils (the index of the
/// verifier layout's staging list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StagingPart {
    /// The bzImage.
    Kernel = 0,
    /// The initrd.
    Initrd = 1,
    /// The command line.
    Cmdline = 2,
}

/// Which kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A bzImage or ELF vmlinux file.
    File(PathBuf),
    /// The test guest built into the binary.
    BuiltIn,
}

/// A virtio-blk disk: the device's own description of its backing file, which `--disk`
/// parses into (one definition for the option and the device).
pub use crate::devices::virtio::DiskConfig as DiskSpec;

impl std::str::FromStr for DiskSpec {
    type Err = ConfigError;

    /// Parses `path=PATH[,readonly=on|off|true|false]`.
    fn from_str(value: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::DiskSyntax {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let mut path = None;
        let mut readonly = false;
        for part in value.split(',') {
            let (key, val) = part
                .split_once('=')
                .ok_or_else(|| bad(&format!("{part:?} is not key=value")))?;
            match key {
                "path" if path.is_some() => return Err(bad("path given twice")),
                "path" if val.is_empty() => return Err(bad("the path is empty")),
                "path" => path = Some(PathBuf::from(val)),
                "readonly" | "ro" => {
                    readonly = match val {
                        "on" | "true" | "yes" => true,
                        "off" | "false" | "no" => false,
                        _ => return Err(bad(&format!("readonly={val} is not on or off"))),
                    }
                }
                other => return Err(bad(&format!("unknown key {other:?}"))),
            }
        }
        let path = path.ok_or_else(|| bad("path=PATH is missing"))?;
        Ok(DiskSpec { path, readonly })
    }
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialMode {
    /// The monitor's stdout (and stdin, when it is a terminal).
    Stdio,
    /// A file, created or truncated.
    File(PathBuf),
    /// Nowhere.
    Off,
}

impl std::str::FromStr for SerialMode {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, ConfigError> {
        match value {
            "stdio" | "tty" => Ok(SerialMode::Stdio),
            "off" | "null" => Ok(SerialMode::Off),
            _ => match value.split_once('=') {
                Some(("file", path)) if !path.is_empty() => {
                    Ok(SerialMode::File(PathBuf::from(path)))
                }
                _ => Err(ConfigError::SerialSyntax(value.to_string())),
            },
        }
    }
}

/// A validated VM description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The kernel.
    pub kernel: KernelSource,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line (before the monitor appends device announcements).
    pub cmdline: String,
    /// Number of vCPUs, 1..=[`MAX_CPUS`].
    pub vcpus: u8,
    /// Guest RAM.
    pub memory: MemorySize,
    /// virtio-blk disks, in slot order.
    pub disks: Vec<DiskSpec>,
    /// The serial console's destination.
    pub serial: SerialMode,
    /// The KVM device to open.
    pub kvm_device: PathBuf,
    /// Where the guest runs: plain KVM, the simulated SNP platform, or real SEV-SNP.
    pub platform: Platform,
    /// HOST_DATA given to LAUNCH_FINISH (reported in the guest's attestation reports).
    pub host_data: [u8; 32],
    /// Directory of the simulation root of trust (`sim`): created on first use.
    pub sim_root: PathBuf,
    /// The SEV device (`snp`).
    pub sev_device: PathBuf,
    /// The tenant policy enforced at launch (`--policy`), with the file's name.
    pub policy: Option<(cloister_policy::Policy, PathBuf)>,
    /// Certificates served with the guest's extended report requests (`--guest-certs`).
    pub guest_certs: Option<PathBuf>,
    /// How the kernel is booted (`--boot`).
    pub boot: crate::boot::plan::BootLayout,
    /// How the disks reach the guest: virtio-pci (default) or virtio-mmio.
    pub virtio: crate::boot::layout::VirtioTransport,
    /// Test hook: spoil one staged image after the launch (`--tamper-staging`).
    pub tamper_staging: Option<StagingPart>,
    /// Install the seccomp filters (`--seccomp on`, the default).
    pub seccomp: bool,
    /// Put the debug-exit port (0xf4) on the bus (`--debug-exit`).
    pub debug_exit: bool,
    /// Test hook: a forbidden system call from this thread kind once filtered.
    pub seccomp_violation: Option<crate::seccomp::ThreadKind>,
}

/// The default directory of the simulation root: `$CLOISTER_SIM_ROOT`, else
/// `$XDG_STATE_HOME/cloister/sim-root`, else `~/.local/state/cloister/sim-root`.
pub fn default_sim_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CLOISTER_SIM_ROOT") {
        return PathBuf::from(dir);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    state.join("cloister/sim-root")
}

/// Parses `--host-data` hex (up to 32 bytes, zero-padded on the right).
pub fn parse_host_data(text: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(text.trim()).map_err(|_| ConfigError::HostData(text.to_string()))?;
    if bytes.len() > 32 {
        return Err(ConfigError::HostData(text.to_string()));
    }
    let mut out = [0u8; 32];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

/// Parses `--platform`.
pub fn parse_platform(text: &str) -> Result<Platform, ConfigError> {
    match text {
        "none" => Ok(Platform::None),
        "sim" => Ok(Platform::Sim),
        "snp" => Ok(Platform::Snp),
        other => Err(ConfigError::Platform(other.to_string())),
    }
}

/// The user's request, as text, before validation.
#[derive(Debug, Clone, Default)]
pub struct VmRequest {
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
    /// `--cmdline`.
    pub cmdline: Option<String>,
    /// `--cpus`.
    pub cpus: u64,
    /// `--memory`.
    pub memory: String,
    /// `--disk`, each.
    pub disks: Vec<String>,
    /// `--serial`.
    pub serial: String,
    /// `--kvm-device` (default [`crate::vstate::vm::KVM_PATH`]).
    pub kvm_device: Option<PathBuf>,
    /// `--platform` (default none).
    pub platform: Option<String>,
    /// `--host-data` (hex).
    pub host_data: Option<String>,
    /// `--sim-root` (default [`default_sim_root`]).
    pub sim_root: Option<PathBuf>,
    /// `--sev-device` (default /dev/sev).
    pub sev_device: Option<PathBuf>,
    /// `--policy`: the tenant policy file.
    pub policy: Option<PathBuf>,
    /// `--guest-certs`: the certificate directory served to the guest.
    pub guest_certs: Option<PathBuf>,
    /// `--boot` (default direct).
    pub boot: Option<String>,
    /// `--virtio mmio|pci` (default pci).
    pub virtio: Option<String>,
    /// `--tamper-staging` (test hook).
    pub tamper_staging: Option<String>,
    /// `--seccomp on|off` (default on).
    pub seccomp: Option<String>,
    /// `--debug-exit`.
    pub debug_exit: bool,
    /// `--seccomp-violation vcpu|vmm` (test hook).
    pub seccomp_violation: Option<String>,
}

impl VmConfig {
    /// Validates a request.
    pub fn new(req: &VmRequest) -> Result<Self, ConfigError> {
        let memory: MemorySize = req.memory.parse()?;
        validate_size(memory, host_ram())?;
        let vcpus = u8::try_from(req.cpus)
            .ok()
            .filter(|n| (1..=MAX_CPUS).contains(n))
            .ok_or(ConfigError::CpuCount(req.cpus))?;
        let cmdline = req
            .cmdline
            .clone()
            .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
        if cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        let disks = req
            .disks
            .iter()
            .map(|d| d.parse())
            .collect::<Result<Vec<DiskSpec>, _>>()?;
        Ok(VmConfig {
            kernel: req
                .kernel
                .clone()
                .map_or(KernelSource::BuiltIn, KernelSource::File),
            initrd: req.initrd.clone(),
            cmdline,
            vcpus,
            memory,
            disks,
            serial: req.serial.parse()?,
            kvm_device: req
                .kvm_device
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::vstate::vm::KVM_PATH)),
            platform: parse_platform(req.platform.as_deref().unwrap_or("none"))?,
            host_data: match &req.host_data {
                Some(h) => parse_host_data(h)?,
                None => [0; 32],
            },
            sim_root: req.sim_root.clone().unwrap_or_else(default_sim_root),
            sev_device: req
                .sev_device
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/sev")),
            policy: match &req.policy {
                Some(path) => Some((
                    cloister_policy::Policy::from_file(path)
                        .map_err(|e| ConfigError::Policy(e.to_string()))?,
                    path.clone(),
                )),
                None => None,
            },
            guest_certs: req.guest_certs.clone(),
            boot: match req.boot.as_deref() {
                None => crate::boot::plan::BootLayout::Direct,
                Some(b) => crate::boot::plan::BootLayout::parse(b)
                    .ok_or_else(|| ConfigError::Boot(b.to_string()))?,
            },
            virtio: match req.virtio.as_deref() {
                None => Default::default(),
                Some(v) => v.parse().map_err(ConfigError::Virtio)?,
            },
            tamper_staging: match req.tamper_staging.as_deref() {
                None => None,
                Some("kernel") => Some(StagingPart::Kernel),
                Some("initrd") => Some(StagingPart::Initrd),
                Some("cmdline") => Some(StagingPart::Cmdline),
                Some(other) => return Err(ConfigError::TamperStaging(other.to_string())),
            },
            seccomp: match req.seccomp.as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(ConfigError::Seccomp(format!(
                        "--seccomp {other:?} is not one of on, off"
                    )))
                }
            },
            debug_exit: req.debug_exit,
            seccomp_violation: match req.seccomp_violation.as_deref() {
                None => None,
                Some("vcpu") => Some(crate::seccomp::ThreadKind::Vcpu),
                Some("vmm") => Some(crate::seccomp::ThreadKind::Vmm),
                Some(other) => {
                    return Err(ConfigError::Seccomp(format!(
                        "--seccomp-violation {other:?} is not one of vcpu, vmm"
                    )))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn request() -> VmRequest {
        VmRequest {
            cpus: 1,
            memory: "64M".into(),
            serial: "stdio".into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = VmConfig::new(&request()).unwrap();
        assert_eq!(cfg.kernel, KernelSource::BuiltIn);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
        assert_eq!(cfg.memory, MemorySize(64 << 20));
        assert_eq!(cfg.serial, SerialMode::Stdio);
    }

    #[test]
    fn cpu_count_limits() {
        for bad in [0, 255, 256, 100_000] {
            let err = VmConfig::new(&VmRequest {
                cpus: bad,
                ..request()
            })
            .unwrap_err();
            assert_eq!(err, ConfigError::CpuCount(bad));
        }
        assert_eq!(
            VmConfig::new(&VmRequest {
                cpus: 254,
                ..request()
            })
            .unwrap()
            .vcpus,
            254
        );
        assert_eq!(
            ConfigError::CpuCount(0).to_string(),
            "--cpus 0 is out of range: give 1 to 254 vCPUs"
        );
    }

    #[test]
    fn memory_errors_surface() {
        let err = VmConfig::new(&VmRequest {
            memory: "1M".into(),
            ..request()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Memory(MemoryError::TooSmall { .. })
        ));
        let err = VmConfig::new(&VmRequest {
            memory: "lots".into(),
            ..request()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Memory(MemoryError::Unparsable(_))
        ));
        let err = VmConfig::new(&VmRequest {
            memory: "1T".into(),
            ..request()
        })
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Memory(MemoryError::TooLarge { .. })
        ));
    }

    #[test]
    fn disk_syntax() {
        let d: DiskSpec = "path=/tmp/d.img,readonly=on".parse().unwrap();
        assert_eq!(
            d,
            DiskSpec {
                path: "/tmp/d.img".into(),
                readonly: true
            }
        );
        let d: DiskSpec = "path=/x".parse().unwrap();
        assert!(!d.readonly);
        for bad in [
            "",
            "/tmp/d.img",
            "path=",
            "readonly=on",
            "path=/a,path=/b",
            "path=/a,readonly=maybe",
            "path=/a,cache=none",
        ] {
            assert!(
                matches!(bad.parse::<DiskSpec>(), Err(ConfigError::DiskSyntax { .. })),
                "{bad:?}"
            );
        }
        let msg = "path=/a,size=1"
            .parse::<DiskSpec>()
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "--disk \"path=/a,size=1\": unknown key \"size\" (expected path=PATH[,readonly=on|off])");
    }

    #[test]
    fn serial_syntax() {
        assert_eq!("off".parse::<SerialMode>().unwrap(), SerialMode::Off);
        assert_eq!(
            "file=/tmp/c".parse::<SerialMode>().unwrap(),
            SerialMode::File("/tmp/c".into())
        );
        for bad in ["", "file=", "file", "pty", "socket=/x"] {
            assert!(
                matches!(bad.parse::<SerialMode>(), Err(ConfigError::SerialSyntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cmdline_with_nul_is_refused() {
        let err = VmConfig::new(&VmRequest {
            cmdline: Some("a\0b".into()),
            ..request()
        })
        .unwrap_err();
        assert_eq!(err, ConfigError::CmdlineNul);
    }
}
