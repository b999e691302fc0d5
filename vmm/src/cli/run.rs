//! `cloister run`: boot a guest on KVM.
//!
//! Exit status: the guest's own code (0..=255) when it ends the VM — the byte written to
//! the debug-exit port 0xf4, or 0 for an i8042 reset or an ACPI power-off. The monitor's
//! own failures (bad arguments, missing /dev/kvm, unloadable kernel, a vCPU that
//! triple-faults or hits an emulation failure) exit with status 1 and a message on
//! stderr; clap's usage errors exit with 2; a SIGINT/SIGTERM/SIGHUP exits with
//! 128 + the signal number.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::builder::{build_and_run, VmExit};
use crate::config::{VmConfig, VmRequest, DEFAULT_MEMORY};

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
    /// Serial console: stdio, file=PATH or off.
    #[arg(long, value_name = "stdio|file=PATH|off", default_value = "stdio")]
    pub serial: String,
    /// The KVM device to open.
    #[arg(long, value_name = "PATH", default_value = crate::vstate::vm::KVM_PATH)]
    pub kvm_device: PathBuf,
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
    };
    let config = match VmConfig::new(&request) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cloister run: {e}");
            return ExitCode::from(EXIT_VMM_ERROR);
        }
    };
    match build_and_run(&config) {
        Ok(VmExit::Guest(code)) => {
            log::info!("guest ended the VM with status {code}");
            ExitCode::from(code)
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
