//! `cloister measure`: predict an SEV-SNP guest's launch measurement offline.
//!
//! Flag-compatible with sev-snp-measure (same names, defaults and output) for the SNP
//! modes: build the launch plan for QEMU + OVMF from the given firmware, kernel, initrd,
//! command line and vCPUs, and print the launch digest it produces.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use cloister_attestation::launch::cpu_types::{self, CpuTypeError};
use cloister_attestation::launch::{
    qemu_ovmf_plan, LaunchDigest, LaunchPlan, PlanError, PlanSummary, QemuOvmfParams, RegionRole,
    VmmType, LD_SIZE,
};
use cloister_firmware::{OvmfError, OvmfImage, SevHashes};

/// Arguments of `cloister measure` (the flags of sev-snp-measure).
#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    /// Guest mode: `snp` (launch digest) or `snp:ovmf-hash` (digest of the firmware pages
    /// only, to pass later as --snp-ovmf-hash).
    #[arg(long)]
    pub mode: Option<String>,
    /// The guest: vCPUs, kernel, initrd, command line.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// vCPU model, as QEMU's -cpu names it (EPYC, EPYC-v4, EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long, value_name = "CPUTYPE")]
    pub vcpu_type: Option<String>,
    /// vCPU signature (CPUID(1).EAX), decimal or 0x-prefixed hex.
    #[arg(long, value_name = "VALUE", value_parser = parse_auto_int)]
    pub vcpu_sig: Option<u64>,
    /// vCPU family (with --vcpu-model and --vcpu-stepping).
    #[arg(long, value_name = "FAMILY")]
    pub vcpu_family: Option<u32>,
    /// vCPU model number.
    #[arg(long, value_name = "MODEL")]
    pub vcpu_model: Option<u32>,
    /// vCPU stepping.
    #[arg(long, value_name = "STEPPING")]
    pub vcpu_stepping: Option<u32>,
    /// Hypervisor whose launch conventions to reproduce: QEMU, ec2 or gce.
    #[arg(long, value_name = "VMMTYPE", default_value = "QEMU")]
    pub vmm_type: String,
    /// OVMF firmware image (layout qemu-ovmf).
    #[arg(long, value_name = "PATH")]
    pub ovmf: Option<PathBuf>,
    /// Which launch layout to predict: qemu-ovmf (QEMU + OVMF, as sev-snp-measure) or
    /// cloister (the plan `cloister run` launches).
    #[arg(long, value_name = "qemu-ovmf|cloister", default_value = "qemu-ovmf")]
    pub layout: String,
    /// SEV features of the guest's VMSAs, decimal or 0x-prefixed hex (default 0x1: SNP).
    #[arg(long, value_name = "VALUE", value_parser = parse_auto_int, default_value = "0x1")]
    pub guest_features: u64,
    /// Output format of the measurement.
    #[arg(long, value_enum, default_value = "hex")]
    pub output_format: OutputFormat,
    /// Precalculated digest of the OVMF pages (hex), used instead of hashing the image.
    #[arg(long, value_name = "HASH")]
    pub snp_ovmf_hash: Option<String>,
    /// Write the measured VMSAs to `vmsa<N>.bin` in the current directory.
    #[arg(long)]
    pub dump_vmsa: bool,
    /// Print "Calculated SEV_SNP guest measurement: ..." instead of the bare value.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print a JSON object: the measurement and a summary of the launch plan.
    #[arg(long)]
    pub json: bool,
    /// Layout cloister's own inputs.
    #[command(flatten, next_help_heading = "Layout cloister")]
    pub cloister: CloisterArgs,
}

/// The guest both layouts measure (shared with `cloister id-block`).
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// Number of guest vCPUs (layout cloister: as `run --cpus`, default 1).
    #[arg(long, value_name = "N")]
    pub vcpus: Option<u32>,
    /// Kernel. Layout qemu-ovmf: for measured direct boot (its SHA-256 goes into the SEV
    /// hashes table). Layout cloister: as `run --kernel` (default: the built-in guest).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initrd (layout qemu-ovmf: use with --kernel).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (layout qemu-ovmf: use with --kernel; layout cloister: as
    /// `run --cmdline`, with the same default).
    #[arg(long, value_name = "CMDLINE")]
    pub append: Option<String>,
}

/// What else decides the plan `cloister run` launches: the platform, memory, disks and
/// tenant policy (shared with `cloister id-block`).
#[derive(Debug, Clone, clap::Args)]
pub struct CloisterArgs {
    /// The platform the launch is for. The measured bytes differ: on snp the page tables
    /// carry the C-bit, on sim they cannot.
    #[arg(long, value_name = "snp|sim", default_value = "snp")]
    pub platform: String,
    /// Guest memory, as `cloister run --memory`.
    #[arg(long, value_name = "SIZE", default_value = crate::config::DEFAULT_MEMORY)]
    pub memory: String,
    /// The tenant policy `run --policy` would enforce: a launch it forbids is refused here
    /// too, and the guest policy comes from it.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Number of virtio-blk disks, as `cloister run --disk` given N times (each is
    /// announced in the ACPI tables and on the command line).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub disks: usize,
    /// How the disks reach the guest, as `cloister run --virtio`: pci or mmio.
    #[arg(long, value_name = "pci|mmio", default_value = "pci")]
    pub virtio: String,
    /// How the kernel is booted, as `cloister run --boot`: direct (everything measured)
    /// or verifier (only the boot verifier, its manifest and the platform tables).
    #[arg(long, value_name = "direct|verifier", default_value = "direct")]
    pub boot: String,
}

/// A Cloister-layout launch, predicted: what `cloister run` with the same inputs measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloisterLaunch {
    /// The platform predicted for.
    pub platform: crate::boot::plan::Platform,
    /// The launch digest.
    pub measurement: [u8; LD_SIZE],
    /// The guest policy given to SNP_LAUNCH_START (from the tenant policy, or the default).
    pub guest_policy: u64,
    /// What the plan loads.
    pub summary: PlanSummary,
}

/// How the measurement is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Lower-case hex.
    Hex,
    /// Standard base64.
    Base64,
}

/// Why a measurement could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// Unknown layout.
    #[error("--layout {0:?} is not one of qemu-ovmf, cloister")]
    Layout(String),
    /// --mode missing (layout qemu-ovmf).
    #[error("missing --mode (snp or snp:ovmf-hash) for --layout qemu-ovmf")]
    NoMode,
    /// --ovmf missing (layout qemu-ovmf).
    #[error("missing --ovmf PATH for --layout qemu-ovmf")]
    NoOvmf,
    /// Layout cloister: bad platform.
    #[error(
        "--platform {0:?}: layout cloister predicts for snp or sim (a none launch is not measured)"
    )]
    Platform(String),
    /// Layout cloister: a flag of the QEMU+OVMF layout.
    #[error("{0} belongs to --layout qemu-ovmf; the cloister layout has no firmware image")]
    NotForCloister(&'static str),
    /// Layout cloister: bad inputs.
    #[error("{0}")]
    Cloister(String),
    /// A mode other than SNP.
    #[error("mode {0:?} is not supported: cloister measures SEV-SNP guests (--mode snp or snp:ovmf-hash)")]
    Mode(String),
    /// Flags that need --kernel.
    #[error("--kernel required when using {0}")]
    NeedsKernel(&'static str),
    /// --vcpus missing.
    #[error("missing --vcpus N in guest mode 'snp'")]
    NoVcpus,
    /// No vCPU type or signature.
    #[error("missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode 'snp'")]
    NoVcpuType,
    /// --vcpu-family without model and stepping.
    #[error("--vcpu-family needs --vcpu-model and --vcpu-stepping")]
    IncompleteFamily,
    /// A signature that does not fit 32 bits.
    #[error("--vcpu-sig {0:#x} does not fit in 32 bits")]
    SignatureTooLarge(u64),
    /// Unknown vCPU type.
    #[error(transparent)]
    VcpuType(#[from] CpuTypeError),
    /// Unknown VMM type.
    #[error("unknown VMM type {0:?} (valid: QEMU, ec2, gce)")]
    VmmType(String),
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The firmware is malformed.
    #[error("{path}: {source}")]
    Ovmf {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        source: OvmfError,
    },
    /// The plan cannot be built.
    #[error("{0}")]
    Plan(#[from] PlanError),
    /// Bad --snp-ovmf-hash.
    #[error("--snp-ovmf-hash must be {LD_SIZE} bytes of hex (96 hex digits), got {0:?}")]
    OvmfHash(String),
    /// A VMSA dump could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Runs `cloister measure`.
pub fn main(args: MeasureArgs) -> ExitCode {
    match run(&args) {
        Ok(out) => match super::output::print_stdout("measure", &format!("{out}\n")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(status) => status,
        },
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses an integer the way Python's `int(s, 0)` does for the common forms: decimal, or
/// hex/octal/binary with a 0x/0o/0b prefix.
pub fn parse_auto_int(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let lower = t.to_ascii_lowercase();
    let parsed = if let Some(h) = lower.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8)
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2)
    } else {
        lower.parse::<u64>()
    };
    parsed.map_err(|_| format!("{s:?} is not a number (decimal, or 0x-prefixed hex)"))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path).map_err(|source| MeasureError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn vcpu_signature(args: &MeasureArgs) -> Result<u32, MeasureError> {
    if let Some(family) = args.vcpu_family {
        let (Some(model), Some(stepping)) = (args.vcpu_model, args.vcpu_stepping) else {
            return Err(MeasureError::IncompleteFamily);
        };
        return Ok(cpu_types::cpu_signature(family, model, stepping));
    }
    if let Some(sig) = args.vcpu_sig {
        return u32::try_from(sig).map_err(|_| MeasureError::SignatureTooLarge(sig));
    }
    match &args.vcpu_type {
        Some(name) => Ok(cpu_types::vcpu_signature(name)?),
        None => Err(MeasureError::NoVcpuType),
    }
}

fn vmm_type(name: &str) -> Result<VmmType, MeasureError> {
    match name {
        "QEMU" => Ok(VmmType::Qemu),
        "ec2" => Ok(VmmType::Ec2),
        "gce" => Ok(VmmType::Gce),
        other => Err(MeasureError::VmmType(other.to_string())),
    }
}

fn kernel_hashes(args: &GuestArgs) -> Result<Option<SevHashes>, MeasureError> {
    let Some(kernel) = &args.kernel else {
        return Ok(None);
    };
    // sev-snp-measure treats an empty --initrd as "no initrd".
    let initrd = args.initrd.as_deref().filter(|p| !p.as_os_str().is_empty());
    let cmdline = args.append.as_deref().unwrap_or("");
    SevHashes::from_files(kernel, initrd, cmdline.as_bytes())
        .map(Some)
        .map_err(|(path, source)| MeasureError::Read {
            what: if path == *kernel { "kernel" } else { "initrd" },
            path,
            source,
        })
}

fn format_measurement(ld: &[u8; LD_SIZE], format: OutputFormat) -> String {
    match format {
        OutputFormat::Hex => hex::encode(ld),
        OutputFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(ld),
    }
}

/// Computes the output text (measurement line or JSON) for `args`.
pub fn run(args: &MeasureArgs) -> Result<String, MeasureError> {
    match args.layout.as_str() {
        "qemu-ovmf" if args.cloister.policy.is_some() => {
            return Err(MeasureError::Cloister(
                "--policy belongs to --layout cloister (the launch `cloister run` makes)".into(),
            ))
        }
        "qemu-ovmf" => {}
        "cloister" => return run_cloister(args),
        other => return Err(MeasureError::Layout(other.to_string())),
    }
    let mode = args.mode.as_deref().ok_or(MeasureError::NoMode)?;
    let ovmf_path = args.ovmf.as_ref().ok_or(MeasureError::NoOvmf)?;
    let ovmf_only = match mode {
        "snp" | "sev-snp" | "SNP" | "SEV-SNP" => false,
        "snp:ovmf-hash" => true,
        other => return Err(MeasureError::Mode(other.to_string())),
    };
    if !ovmf_only {
        if args.guest.initrd.is_some() && args.guest.kernel.is_none() {
            return Err(MeasureError::NeedsKernel("--initrd"));
        }
        if args.guest.append.is_some() && args.guest.kernel.is_none() {
            return Err(MeasureError::NeedsKernel("--append"));
        }
    }
    let bytes = read("OVMF image", ovmf_path)?;
    let ovmf = OvmfImage::parse(&bytes).map_err(|source| MeasureError::Ovmf {
        path: ovmf_path.clone(),
        source,
    })?;
    if ovmf_only {
        // The digest of the firmware pages alone.
        let mut d = LaunchDigest::new();
        for (i, page) in ovmf.bytes().chunks_exact(4096).enumerate() {
            d.update_with_contents_hash(
                cloister_attestation::launch::PageType::Normal,
                ovmf.gpa() + (i as u64) * 4096,
                cloister_attestation::launch::digest::sha384(page),
            );
        }
        return Ok(hex::encode(d.digest()));
    }
    let vcpus = args.guest.vcpus.ok_or(MeasureError::NoVcpus)?;
    let vmm = vmm_type(&args.vmm_type)?;
    let signature = match vcpu_signature(args) {
        // EC2 and GCE put a fixed value in RDX; sev-snp-measure does not require a type.
        Err(MeasureError::NoVcpuType) if vmm != VmmType::Qemu => 0,
        other => other?,
    };
    let params = QemuOvmfParams {
        vcpus,
        vcpu_signature: signature,
        guest_features: args.guest_features,
        kernel_hashes: kernel_hashes(&args.guest)?,
        vmm,
    };
    let plan = qemu_ovmf_plan(&ovmf, &params)?;
    let ld = match &args.snp_ovmf_hash {
        None => plan.measure(),
        Some(h) => measure_with_ovmf_hash(&plan, h)?,
    };
    if args.dump_vmsa {
        for r in plan.regions() {
            if let (RegionRole::Vmsa { vcpu }, Some(b)) = (r.role(), r.bytes()) {
                let path = PathBuf::from(format!("vmsa{vcpu}.bin"));
                std::fs::write(&path, b).map_err(|source| MeasureError::Write { path, source })?;
            }
        }
    }
    let measurement = format_measurement(&ld, args.output_format);
    if args.json {
        return Ok(json_summary(args, &ovmf, &plan, &params, &measurement));
    }
    if args.verbose {
        return Ok(format!(
            "Calculated SEV_SNP guest measurement: {measurement}"
        ));
    }
    Ok(measurement)
}

/// The digest when the firmware's pages are replaced by a precomputed digest of them.
fn measure_with_ovmf_hash(
    plan: &LaunchPlan<'_>,
    hash: &str,
) -> Result<[u8; LD_SIZE], MeasureError> {
    let seed: [u8; LD_SIZE] = hex::decode(hash.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| MeasureError::OvmfHash(hash.to_string()))?;
    let mut d = LaunchDigest::with_seed(seed);
    for page in plan.pages().filter(|p| p.role != RegionRole::Firmware) {
        let contents = match page.contents {
            Some(c) => cloister_attestation::launch::digest::sha384(c),
            None => [0; LD_SIZE],
        };
        d.update_with_contents_hash(page.page_type, page.gpa, contents);
    }
    Ok(d.digest())
}

fn json_summary(
    args: &MeasureArgs,
    ovmf: &OvmfImage<'_>,
    plan: &LaunchPlan<'_>,
    params: &QemuOvmfParams,
    measurement: &str,
) -> String {
    let summary = plan.summary();
    let regions: Vec<serde_json::Value> = plan
        .regions()
        .iter()
        .map(|r| {
            serde_json::json!({
                "gpa": format!("{:#x}", r.gpa()),
                "length": r.len(),
                "page_type": r.page_type().name(),
                "role": r.role().to_string(),
            })
        })
        .collect();
    let hashes = params.kernel_hashes.map(|h| {
        serde_json::json!({
            "kernel_sha256": hex::encode(h.kernel),
            "initrd_sha256": hex::encode(h.initrd),
            "cmdline_sha256": hex::encode(h.cmdline),
        })
    });
    let value = serde_json::json!({
        "measurement": measurement,
        "output_format": match args.output_format { OutputFormat::Hex => "hex", OutputFormat::Base64 => "base64" },
        "mode": "snp",
        "vmm_type": args.vmm_type,
        "vcpus": summary.vcpus,
        "vcpu_type": args.vcpu_type,
        "vcpu_signature": format!("{:#x}", params.vcpu_signature),
        "guest_features": format!("{:#x}", params.guest_features),
        "ovmf": {
            "path": args.ovmf.as_ref().map(|p| p.display().to_string()),
            "gpa": format!("{:#x}", ovmf.gpa()),
            "size": ovmf.bytes().len(),
            "sev_es_reset_eip": ovmf.sev_es_reset_eip().map(|e| format!("{e:#x}")),
        },
        "kernel_hashes": hashes,
        "pages_by_type": summary.pages_by_type,
        "pages": summary.pages,
        "bytes_measured": summary.bytes_measured,
        "regions": regions,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// `--layout cloister`: the measurement of exactly the plan `cloister run` launches with
/// the same kernel, initrd, command line, vCPUs, memory and disk count.
fn run_cloister(args: &MeasureArgs) -> Result<String, MeasureError> {
    if args.ovmf.is_some() {
        return Err(MeasureError::NotForCloister("--ovmf"));
    }
    if args.snp_ovmf_hash.is_some() {
        return Err(MeasureError::NotForCloister("--snp-ovmf-hash"));
    }
    let launch = measure_cloister(&args.guest, &args.cloister)?;
    let measurement = format_measurement(&launch.measurement, args.output_format);
    if args.json {
        let summary = &launch.summary;
        let json = serde_json::json!({
            "layout": "cloister",
            "boot": args.cloister.boot,
            "platform": launch.platform.name(),
            "measurement": measurement,
            "guest_policy": format!("{:#x}", launch.guest_policy),
            "vcpus": summary.vcpus,
            "pages": summary.pages,
            "pages_by_type": summary.pages_by_type,
            "bytes_measured": summary.bytes_measured,
            "regions": summary.regions,
        });
        return Ok(serde_json::to_string_pretty(&json).unwrap_or_default());
    }
    if args.verbose {
        return Ok(format!(
            "Calculated SEV-SNP launch measurement (cloister layout, platform {}): {measurement}",
            launch.platform.name()
        ));
    }
    Ok(measurement)
}

/// Builds and measures the plan `cloister run` launches with these inputs (`--cpus` is
/// `guest.vcpus`, `--cmdline` is `guest.append`, one disk per `cloister.disks`), applying
/// the tenant policy as `run --policy` does. Shared by `measure --layout cloister` and
/// `id-block`, so both sign and predict the launch `run` makes.
pub fn measure_cloister(
    guest: &GuestArgs,
    cloister: &CloisterArgs,
) -> Result<CloisterLaunch, MeasureError> {
    use crate::boot::plan::{BootLayout, LayoutInputs, Platform};
    let boot = BootLayout::parse(&cloister.boot).ok_or_else(|| {
        MeasureError::Cloister(format!(
            "--boot {:?} is not one of direct, verifier",
            cloister.boot
        ))
    })?;
    let platform = match cloister.platform.as_str() {
        "snp" => Platform::Snp,
        "sim" => Platform::Sim,
        other => return Err(MeasureError::Platform(other.to_string())),
    };
    // As `cloister run --cpus`, 1 by default.
    let vcpus = guest.vcpus.unwrap_or(1);
    let vcpus = u8::try_from(vcpus)
        .ok()
        .filter(|n| (1..=crate::boot::layout::MAX_CPUS).contains(n))
        .ok_or_else(|| {
            MeasureError::Cloister(format!(
                "--vcpus {vcpus} is out of range: give 1 to {}",
                crate::boot::layout::MAX_CPUS
            ))
        })?;
    let memory: crate::memory::MemorySize = cloister
        .memory
        .parse()
        .map_err(|e: crate::memory::MemoryError| MeasureError::Cloister(e.to_string()))?;
    crate::memory::validate_size(memory, None)
        .map_err(|e| MeasureError::Cloister(e.to_string()))?;
    let source = guest.kernel.clone().map_or(
        crate::config::KernelSource::BuiltIn,
        crate::config::KernelSource::File,
    );
    let (kernel, kernel_name) = crate::builder::kernel_image(&source, boot)
        .map_err(|e| MeasureError::Cloister(e.to_string()))?;
    let initrd = match guest
        .initrd
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(path) => Some((read("initrd", path)?, path.display().to_string())),
        None => None,
    };
    let guest_policy = match &cloister.policy {
        Some(path) => {
            let policy = cloister_policy::Policy::from_file(path)
                .map_err(|e| MeasureError::Cloister(format!("--policy: {e}")))?;
            let launch = crate::builder::describe_launch(
                platform,
                vcpus,
                (0..cloister.disks).map(|i| format!("disk {i}")),
                None,
            );
            policy.check_launch(&launch).map_err(|refusal| {
                MeasureError::Cloister(format!(
                    "the policy {} forbids this launch: {refusal}",
                    path.display()
                ))
            })?
        }
        None => cloister_attestation::launch::plan::DEFAULT_GUEST_POLICY,
    };
    let user_cmdline = guest
        .append
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_CMDLINE.to_string());
    let transport = cloister
        .virtio
        .parse()
        .map_err(|e| MeasureError::Cloister(format!("--virtio: {e}")))?;
    let (devices, cmdline) = crate::builder::disk_layout(cloister.disks, transport, &user_cmdline)
        .map_err(|e| MeasureError::Cloister(format!("--disks {}: {e}", cloister.disks)))?;
    let planned = boot
        .plan(&LayoutInputs {
            kernel: &kernel,
            kernel_name: &kernel_name,
            initrd: initrd.as_ref().map(|(b, n)| (b.as_slice(), n.as_str())),
            cmdline: &cmdline,
            vcpus,
            memory,
            devices: &devices.mmio,
            pci: !devices.pci.is_empty(),
            platform,
            policy: guest_policy,
            host_data: [0; 32],
        })
        .map_err(|e| MeasureError::Cloister(e.to_string()))?;
    Ok(CloisterLaunch {
        platform,
        measurement: planned.plan.measure(),
        guest_policy,
        summary: planned.plan.summary(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_like_python_int_base_0() {
        assert_eq!(parse_auto_int("0x1"), Ok(1));
        assert_eq!(parse_auto_int("0X21"), Ok(0x21));
        assert_eq!(parse_auto_int("33"), Ok(33));
        assert_eq!(parse_auto_int("0b101"), Ok(5));
        assert!(parse_auto_int("0xzz").is_err());
        assert!(parse_auto_int("").is_err());
        assert!(parse_auto_int("-1").is_err());
    }
}
