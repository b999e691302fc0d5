//! `cloister probe`: can this host launch SEV-SNP guests (`cloister run --platform snp`)?
//!
//! Runs the SNP host probe of [`crate::snp::kvm`] (/dev/sev, kvm_amd's `sev_snp`, /dev/kvm
//! and the capabilities an SNP launch needs, in that order) and creates an SNP VM, which
//! it drops at once: nothing is launched. On success it prints what KVM offers; otherwise
//! it names the first missing piece and how to fix it.
//!
//! Exit status: 0 the host can launch SEV-SNP guests; 1 it cannot (the message says why).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::snp::kvm::{KvmSnpHost, SnpCapabilities, SEV_PATH};
use crate::vstate::vm::KVM_PATH;

/// Exit status when the host cannot launch SEV-SNP guests.
pub const EXIT_NOT_READY: u8 = 1;

/// Arguments of `cloister probe`.
#[derive(Debug, clap::Args)]
#[command(about = "Check that this host can launch SEV-SNP guests (--platform snp)")]
pub struct ProbeArgs {
    /// The KVM device.
    #[arg(long, value_name = "PATH", default_value = KVM_PATH)]
    pub kvm_device: PathBuf,
    /// The AMD secure processor device.
    #[arg(long, value_name = "PATH", default_value = SEV_PATH)]
    pub sev_device: PathBuf,
}

/// Runs `cloister probe`.
pub fn main(args: ProbeArgs) -> ExitCode {
    match KvmSnpHost::open(&args.kvm_device, &args.sev_device) {
        Ok(host) => {
            let text = describe(&args, host.capabilities());
            match super::output::print_stdout("probe", &text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(status) => status,
            }
        }
        Err(e) => {
            eprintln!("cloister probe: this host cannot launch SEV-SNP guests: {e}");
            ExitCode::from(EXIT_NOT_READY)
        }
    }
}

fn describe(args: &ProbeArgs, caps: &SnpCapabilities) -> String {
    let vmsa_features = match caps.vmsa_features {
        Some(bits) => format!("{bits:#x}"),
        None => "not reported (Linux before 6.10)".to_string(),
    };
    let policy_bits = match caps.policy_bits {
        Some(bits) => format!("{bits:#x}"),
        None => {
            "not reported (Linux before 6.19: KVM's fixed rule, SMT and bit 17 set, e.g. 0x30000)"
                .to_string()
        }
    };
    let req_certs = if caps.req_certs {
        "yes"
    } else {
        "no (Linux before 7.0: the guest gets an empty certificate table)"
    };
    format!(
        "SEV-SNP host: ready ({}, {})\n\
         INIT2 VMSA features (KVM_X86_SEV_VMSA_FEATURES): {vmsa_features}\n\
         guest policy bits (KVM_X86_SNP_POLICY_BITS): {policy_bits}\n\
         certificate request exit (KVM_X86_SEV_SNP_REQ_CERTS): {req_certs}\n",
        args.kvm_device.display(),
        args.sev_device.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_old_and_new_kernels() {
        let args = ProbeArgs {
            kvm_device: PathBuf::from(KVM_PATH),
            sev_device: PathBuf::from(SEV_PATH),
        };
        let old = describe(&args, &SnpCapabilities::default());
        assert!(old.starts_with("SEV-SNP host: ready (/dev/kvm, /dev/sev)\n"));
        assert!(old.contains("not reported (Linux before 6.19"));
        let new = describe(
            &args,
            &SnpCapabilities {
                vmsa_features: Some(0x220),
                policy_bits: Some(0x1bffff),
                req_certs: true,
            },
        );
        assert!(new.contains("(KVM_X86_SEV_VMSA_FEATURES): 0x220\n"));
        assert!(new.contains("(KVM_X86_SNP_POLICY_BITS): 0x1bffff\n"));
        assert!(new.contains("(KVM_X86_SEV_SNP_REQ_CERTS): yes\n"));
    }
}
