//! `cloister run`: boot a guest on KVM.
//!
//! Exit status: the guest's own code (0..=255) when it ends the VM — the byte written to
//! the debug-exit port 0xf4, or 0 for an i8042 reset or an ACPI power-off. The monitor's
//! own failures (bad arguments, missing /dev/kvm, unloadable kernel, a vCPU that
//! triple-faults or hits an emulation failure) exit with status 1 and a message on
//! stderr; clap's usage errors exit with 2; a SIGINT/SIGTERM/SIGHUP exits with
//! 128 + the signal number.
//!
//! With `--jail DIR --uid U --gid G` (as root) the monitor first jails itself
//! ([`crate::jail`]): the VM is built and run in a child, in new namespaces, with DIR as
//! its root, cgroup limits and no privilege; the parent waits and exits with the child's
//! status (a child killed by signal N: 128 + N).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::builder::{build_with_id_block, IdBlockFiles, LaunchSummary, VmExit};
use crate::config::Platform;
use crate::config::{VmConfig, VmRequest, DEFAULT_MEMORY};
use crate::jail::{self, JailOptions, Jailed, LimitRequest};

/// Exit status for the monitor's own failures.
pub const EXIT_VMM_ERROR: u8 = 1;

/// Arguments of `cloister run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kernel to boot: an ELF vmlinux or a bzImage. Without it, the built-in test guest.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk, placed as high in low memory as it fits.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (replaces the default "console=ttyS0 reboot=k panic=1").
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1 to 254).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u64,
    /// Guest memory: bytes, or a number with K, M, G, T (binary units), e.g. 512M.
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MEMORY)]
    pub memory: String,
    /// A virtio-blk disk: path=PATH[,readonly=on]. Repeat for more disks.
    #[arg(long, value_name = "path=PATH[,readonly=on]")]
    pub disk: Vec<String>,
    /// How disks reach the guest: pci (virtio-pci functions with MSI-X on PCI bus 0, the
    /// root bridge in the DSDT) or mmio (virtio-mmio windows, announced in the DSDT and on
    /// the command line). Measured: it changes the ACPI tables and the command line.
    #[arg(long, value_name = "pci|mmio", default_value = "pci")]
    pub virtio: String,
    /// Serial console: stdio, file=PATH or off.
    #[arg(long, value_name = "stdio|file=PATH|off", default_value = "stdio")]
    pub serial: String,
    /// The KVM device to open.
    #[arg(long, value_name = "PATH", default_value = crate::vstate::vm::KVM_PATH)]
    pub kvm_device: PathBuf,
    /// Where the guest runs: none (plain KVM), sim (the simulated SEV-SNP platform: the
    /// whole launch and attestation protocol, no memory encryption) or snp (real SEV-SNP).
    #[arg(long, value_name = "none|sim|snp", default_value = "none")]
    pub platform: String,
    /// HOST_DATA for the launch (hex, up to 32 bytes); reported in attestation reports.
    #[arg(long, value_name = "HEX")]
    pub host_data: Option<String>,
    /// Directory of the simulation root of trust (created on first use; its certificates
    /// are exported to DIR/certs for `cloister verify --trust-sim-root`).
    #[arg(long, value_name = "DIR")]
    pub sim_root: Option<PathBuf>,
    /// Tenant policy file (the same TOML `cloister verify --policy` takes): the guest policy
    /// is derived from it, and a launch it forbids is refused before the VM exists.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// ID block (96 bytes, from `cloister id-block`) for SNP_LAUNCH_FINISH (sim, snp): the
    /// firmware refuses the launch unless its signature verifies and its LD and POLICY are
    /// this launch's.
    #[arg(long, value_name = "FILE", requires = "id_auth")]
    pub id_block: Option<PathBuf>,
    /// ID authentication structure (4096 bytes) signing the --id-block.
    #[arg(long, value_name = "FILE", requires = "id_block")]
    pub id_auth: Option<PathBuf>,
    /// Set AUTHOR_KEY_EN: the firmware also checks the author key in --id-auth, and
    /// reports carry its digest (AUTHOR_KEY_DIGEST). Not inferred from the file.
    #[arg(long, requires = "id_block")]
    pub id_author_key: bool,
    /// The SEV device (--platform snp).
    #[arg(long, value_name = "PATH", default_value = "/dev/sev")]
    pub sev_device: PathBuf,
    /// Certificates (snpguest's directory layout: ark.pem, ask.pem, vcek.pem or .der, ...)
    /// served to the guest with its report requests (SNP extended guest requests).
    /// Default: on sim the simulation root's; on snp none (the guest gets an empty table);
    /// on snp it needs KVM_EXIT_SNP_REQ_CERTS (Linux 7.0+).
    #[arg(long, value_name = "DIR")]
    pub guest_certs: Option<PathBuf>,
    /// How the kernel is booted (sim, snp): direct (the VMM loads it and the PSP measures
    /// every page) or verifier (the PSP measures only Cloister's boot verifier, which
    /// checks the staged kernel, initrd and command line; needs a bzImage, and a KVM that
    /// runs 32-bit protected mode and the switch to long mode).
    #[arg(long, value_name = "direct|verifier", default_value = "direct")]
    pub boot: String,
    /// Test hook (verifier boot): flip one bit of the staged kernel, initrd or command
    /// line after the launch, as a hostile host could. The verifier must refuse to boot.
    #[arg(long, value_name = "kernel|initrd|cmdline", hide = true)]
    pub tamper_staging: Option<String>,
    /// seccomp filters on every thread of the running monitor (on), or none (off: for
    /// debugging only; a warning says so).
    #[arg(long, value_name = "on|off", default_value = "on")]
    pub seccomp: String,
    /// Put an isa-debug-exit style port at 0xf4: a byte N written there ends the VM with
    /// status N (tests). Off by default, so a guest cannot choose the monitor's status.
    /// Codes 1, 2 and 125-255 would read as the monitor's own (1 error, 2 usage) or the
    /// shell's (126/127, 128+N signal): they end the VM with status 125 and a line naming
    /// the code.
    #[arg(long)]
    pub debug_exit: bool,
    /// Test hook: once its filter is installed, this thread kind makes a forbidden system
    /// call (the process must die of SIGSYS).
    #[arg(long, value_name = "vcpu|vmm", hide = true)]
    pub seccomp_violation: Option<String>,
    /// `--jail` and its flags.
    #[command(flatten)]
    pub jail: Box<JailArgs>,
}

/// The jail flags of `cloister run` (boxed in [`RunArgs`]: they are rarely given).
#[derive(Debug, clap::Args)]
pub struct JailArgs {
    /// Jail the monitor (needs root): new mount, PID, IPC, UTS and network namespaces, a
    /// root mounted on DIR holding only the VM's files, cgroup limits, then --uid/--gid
    /// with no capabilities.
    #[arg(long, value_name = "DIR", requires_all = ["uid", "gid"])]
    pub jail: Option<PathBuf>,
    /// The jailed monitor's user id (numeric, not 0).
    #[arg(long, value_name = "UID", requires = "jail")]
    pub uid: Option<u32>,
    /// The jailed monitor's group id (numeric, not 0).
    #[arg(long, value_name = "GID", requires = "jail")]
    pub gid: Option<u32>,
    /// The jail's memory limit, guest RAM included (default: guest memory + 128 MiB +
    /// 1/64 of guest memory + twice the kernel and initrd sizes).
    #[arg(long, value_name = "SIZE", requires = "jail")]
    pub jail_memory: Option<String>,
    /// The jail's CPU limit in CPUs, e.g. 1.5 (default: --cpus + 1).
    #[arg(long, value_name = "CPUS", requires = "jail")]
    pub jail_cpus: Option<String>,
    /// The jail's limit on tasks, threads included (default: --cpus + 9).
    #[arg(long, value_name = "N", requires = "jail")]
    pub jail_pids: Option<u64>,
    /// Test hook: once jailed, try to open PATH and print (on stderr) the result, the
    /// capability sets and the cgroup limits, then go on.
    #[arg(long, value_name = "PATH", hide = true, requires = "jail")]
    pub jail_probe: Option<PathBuf>,
}

/// Runs `cloister run`.
pub fn main(args: RunArgs) -> ExitCode {
    let request = VmRequest {
        kernel: args.kernel,
        initrd: args.initrd,
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory: args.memory,
        disks: args.disk,
        serial: args.serial,
        kvm_device: Some(args.kvm_device),
        platform: Some(args.platform),
        host_data: args.host_data,
        sim_root: args.sim_root,
        sev_device: Some(args.sev_device),
        policy: args.policy,
        guest_certs: args.guest_certs,
        boot: Some(args.boot),
        virtio: Some(args.virtio),
        tamper_staging: args.tamper_staging,
        seccomp: Some(args.seccomp),
        debug_exit: args.debug_exit,
        seccomp_violation: args.seccomp_violation,
    };
    let mut config = match VmConfig::new(&request) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cloister run: {e}");
            return ExitCode::from(EXIT_VMM_ERROR);
        }
    };
    let mut id_block = match (args.id_block, args.id_auth) {
        (Some(id_block), Some(id_auth)) => Some(IdBlockFiles {
            id_block,
            id_auth,
            author_key_enabled: args.id_author_key,
        }),
        _ => None,
    };
    // The simulation root as the user named it (the jail renames it).
    let sim_root = config.sim_root.clone();
    let mut jail_paths = None;
    let jail_args = *args.jail;
    if let (Some(dir), Some(uid), Some(gid)) = (jail_args.jail, jail_args.uid, jail_args.gid) {
        if let Err(e) = crate::builder::check_policy(&config).map(drop) {
            eprintln!("cloister run: {e}");
            return ExitCode::from(EXIT_VMM_ERROR);
        }
        let options = JailOptions {
            dir,
            uid,
            gid,
            limits: LimitRequest {
                memory: jail_args.jail_memory,
                cpus: jail_args.jail_cpus,
                pids: jail_args.jail_pids,
            },
            probe: jail_args.jail_probe,
        };
        match jail::enter(&options, &config, id_block.as_ref()) {
            Ok(Jailed::Parent(status)) => return ExitCode::from(status),
            Ok(Jailed::Child(jailed)) => {
                for line in &jailed.probe {
                    eprintln!("{line}");
                }
                jail_paths = Some(jailed.layout.path_map());
                config = jailed.layout.config;
                id_block = jailed.layout.id_block;
            }
            Err(e) => {
                eprintln!("cloister run: --jail: {e}");
                return ExitCode::from(EXIT_VMM_ERROR);
            }
        }
    }
    let vmm = match build_with_id_block(&config, &config.kvm_device, id_block.as_ref()) {
        Ok(vmm) => vmm,
        Err(e) => {
            eprintln!("cloister run: {e}");
            if let Some(paths) = jail_paths {
                eprintln!("cloister run: (in the jail: {paths})");
            }
            return ExitCode::from(EXIT_VMM_ERROR);
        }
    };
    announce_launch(&sim_root, vmm.launch());
    match vmm.run() {
        Ok(VmExit::Guest(code)) => {
            log::info!("guest ended the VM with status {code}");
            ExitCode::from(guest_status(code))
        }
        Ok(VmExit::VcpuFailed(e)) => {
            eprintln!("cloister run: the guest failed: {e}");
            ExitCode::from(EXIT_VMM_ERROR)
        }
        Ok(VmExit::VcpuVanished) => {
            eprintln!("cloister run: a vCPU stopped without the guest ending the VM");
            ExitCode::from(EXIT_VMM_ERROR)
        }
        Ok(VmExit::Signal(num)) => {
            eprintln!("cloister run: stopped by signal {num}");
            ExitCode::from(128u8.saturating_add(u8::try_from(num).unwrap_or(0)))
        }
        Err(e) => {
            eprintln!("cloister run: {e}");
            ExitCode::from(EXIT_VMM_ERROR)
        }
    }
}

/// Tells the user, on stderr, what kind of launch this is and (on `sim`) how to check the
/// report the guest prints (with the simulation root at `sim_root`, the host's path).
fn announce_launch(sim_root: &Path, launch: &LaunchSummary) {
    let predicted = hex::encode(launch.predicted);
    match launch.platform {
        Platform::None => {}
        Platform::Sim => {
            let measured = launch.measured.map(hex::encode).unwrap_or_default();
            let agree = if measured == predicted {
                "equal to the prediction"
            } else {
                "DIFFERENT from the prediction"
            };
            eprintln!(
                "cloister run: simulated SEV-SNP platform: the launch protocol, measurement and attestation are simulated; guest memory is NOT encrypted.\n\
                 cloister run: launch measurement {measured} ({agree}; `cloister measure --layout cloister --platform sim` predicts it)\n\
                 cloister run: the guest's report (line CLOISTER-REPORT on its console) verifies with:\n\
                 cloister run:   cloister verify --report CONSOLE_LOG --certs {}/certs --trust-sim-root",
                sim_root.display()
            );
        }
        Platform::Snp => eprintln!("cloister run: SEV-SNP launch measurement {predicted}"),
    }
}

/// The status a guest's debug-exit code `N` that collides with the monitor's or the
/// shell's statuses is reported as.
pub const GUEST_CODE_CLASH: u8 = 125;

/// The process status for a guest's exit code: 0 and 3..=125 as they are; the codes that
/// would read as the monitor's own (1 error, 2 usage) or the shell's (126, 127, 128+N
/// signal) become [`GUEST_CODE_CLASH`], with a line saying which code the guest wrote.
pub fn guest_status(code: u8) -> u8 {
    match code {
        0 | 3..=124 => code,
        _ => {
            eprintln!(
                "cloister run: the guest wrote exit code {code} to the debug-exit port; \
                 statuses 1, 2 and 125-255 belong to the monitor and the shell, so it ends \
                 with {GUEST_CODE_CLASH}"
            );
            GUEST_CODE_CLASH
        }
    }
}

#[cfg(test)]
mod guest_status_tests {
    use super::{guest_status, GUEST_CODE_CLASH};

    #[test]
    fn guest_codes_stay_apart_from_the_monitors() {
        assert_eq!(guest_status(0), 0);
        assert_eq!(guest_status(3), 3);
        assert_eq!(guest_status(97), 97);
        assert_eq!(guest_status(124), 124);
        for clash in [1, 2, 125, 126, 127, 128, 143, 255] {
            assert_eq!(guest_status(clash), GUEST_CODE_CLASH, "{clash}");
        }
    }
}
