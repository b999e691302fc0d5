//! `cloister verify`: is this SEV-SNP attestation report genuine (signature, AMD chain,
//! report-vs-certificate checks) and is it acceptable (tenant policy)?
//!
//! Exit status: 0 when every check passes; 1 when at least one check failed (the table or
//! JSON says which); 2 when the input cannot be used at all (unreadable, short or garbage
//! files, bad arguments, a policy file that does not parse).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cloister_attestation::certs::{CertBundle, Crl};
use cloister_attestation::report::Generation;
use cloister_attestation::verify::{self, VerifyOptions};
use cloister_policy::{Fact, Policy, Verdict};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Arguments of `cloister verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 accepted (every check passed), 1 rejected (a check \
failed), 2 unusable input (unreadable, short or garbage file, bad argument or policy)."
)]
pub struct VerifyArgs {
    /// The attestation report: 1184 bytes, as snpguest or /dev/sev-guest writes it, or a
    /// console log holding one `CLOISTER-REPORT: <hex>` line (the test guest prints its
    /// report so).
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// A certificate directory as snpguest writes it (ark.pem, ask.pem, asvk.pem,
    /// vcek.pem/.der, vlek.pem/.der; a KDS cert_chain PEM is also taken).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["vek", "chain"])]
    pub certs: Option<PathBuf>,
    /// The VCEK or VLEK certificate (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub vek: Option<PathBuf>,
    /// AMD's chain as the KDS serves it (ASK then ARK, or ASK, ARK, ASVK). Without it the
    /// built-in AMD roots are used.
    #[arg(long, value_name = "FILE", requires = "vek")]
    pub chain: Option<PathBuf>,
    /// A CRL (PEM or DER) to check the chain against.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// The tenant policy (TOML). Without it the secure defaults apply (debug and migration
    /// agent refused, VMPL 0, no provisional firmware).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Judge certificate validity at this instant (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// The processor generation, when the report cannot tell (version 2) and the
    /// certificate has no productName; must agree with them otherwise.
    #[arg(long, value_name = "milan|genoa|turin")]
    pub product: Option<String>,
    /// Accept a given ARK that is not AMD's built-in one (the verdict says so).
    #[arg(long)]
    pub allow_untrusted_ark: bool,
    /// Trust the Cloister simulation root given with the certificates (the ark.pem that
    /// `cloister run --platform sim` exports), to check a simulated report with the same
    /// checks as an AMD one. The verdict then says that the root is the simulation's and
    /// proves nothing about AMD hardware. Without it a simulated report is rejected, naming
    /// the simulation root. AMD chains are checked as always.
    #[arg(long)]
    pub trust_sim_root: bool,
}

/// The name of the fact that says a simulation root was trusted.
const SIM_ROOT_FACT: &str = "ROOT";

/// Input that cannot be used, with a message for the user.
struct Unusable(String);

impl<E: std::fmt::Display> From<E> for Unusable {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Unusable> {
    std::fs::read(path).map_err(|e| Unusable(format!("cannot read {what} {}: {e}", path.display())))
}

fn run(args: &VerifyArgs) -> Result<Verdict, Unusable> {
    let at = match &args.at {
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| Unusable(format!("--at {s:?} is not an RFC 3339 instant: {e}")))?,
        None => OffsetDateTime::now_utc(),
    };
    let mut opts = VerifyOptions::at(at);
    opts.allow_untrusted_ark = args.allow_untrusted_ark;
    opts.trust_sim_root = args.trust_sim_root;
    if let Some(p) = &args.product {
        opts.product =
            Some(Generation::from_cli(p).ok_or_else(|| {
                Unusable(format!("--product {p:?}: expected milan, genoa or turin"))
            })?);
    }
    if let Some(path) = &args.crl {
        let bytes = read(path, "CRL")?;
        opts.crl = Some(Crl::from_bytes(&bytes, &path.display().to_string())?);
    }
    let certs = match (&args.certs, &args.vek) {
        (Some(dir), _) => CertBundle::from_dir(dir)?,
        (None, Some(vek)) => {
            let mut b = CertBundle::default();
            b.add_file(vek)?;
            if b.vcek.is_none() && b.vlek.is_none() {
                return Err(Unusable(format!(
                    "--vek {}: holds no VCEK or VLEK certificate",
                    vek.display()
                )));
            }
            if let Some(chain) = &args.chain {
                b.add_file(chain)?;
            }
            b
        }
        (None, None) => {
            return Err(Unusable(
                "give the certificates: --certs DIR, or --vek FILE [--chain FILE]".into(),
            ))
        }
    };
    let policy = match &args.policy {
        Some(p) => Policy::from_file(p)?,
        None => Policy::default(),
    };
    let report_bytes = report_from_console(read(&args.report, "report")?)
        .map_err(|e| Unusable(format!("{}: {e}", args.report.display())))?;
    let verification = verify::verify(&report_bytes, &certs, &opts)
        .map_err(|e| Unusable(format!("{}: {e}", args.report.display())))?;
    let report = &verification.report;
    let mut facts = Vec::new();
    if verification.sim_root_trusted {
        facts.push(Fact {
            name: SIM_ROOT_FACT.into(),
            value: "CLOISTER SIMULATION ROOT, NOT AMD (trusted because of --trust-sim-root): \
                    this report comes from the simulated platform and proves nothing about AMD \
                    hardware"
                .into(),
        });
    }
    facts.extend([
        Fact {
            name: "report".into(),
            value: format!(
                "{} (version {}, VMPL {})",
                args.report.display(),
                report.version,
                report.vmpl
            ),
        },
        Fact {
            name: "generation".into(),
            value: verification.generation.to_string(),
        },
        Fact {
            name: "signer".into(),
            value: format!(
                "{} ({}, sha256 {})",
                report.key_info.signing_key,
                verification.vek.subject_cn,
                verification.vek.fingerprint()
            ),
        },
        Fact {
            name: "measurement".into(),
            value: hex::encode(report.measurement),
        },
        Fact {
            name: "checked at".into(),
            value: at.format(&Rfc3339).unwrap_or_default(),
        },
        Fact {
            name: "policy".into(),
            value: args
                .policy
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in secure defaults".into()),
        },
    ]);
    let mut checks = verification.checks.clone();
    checks.extend(policy.check(report, verification.generation));
    Ok(Verdict::new(facts, checks))
}

/// Runs `cloister verify`.
pub fn main(args: VerifyArgs) -> ExitCode {
    match run(&args) {
        Ok(verdict) => {
            let text = if args.json {
                format!("{}\n", verdict.to_json())
            } else if verdict.facts.iter().any(|f| f.name == SIM_ROOT_FACT) {
                format!(
                    "{}NOTE: verified under the Cloister SIMULATION root (--trust-sim-root), not AMD's.\n",
                    verdict.table()
                )
            } else {
                verdict.table()
            };
            if let Err(status) = super::output::print_stdout("verify", &text) {
                return status;
            }
            if verdict.accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(Unusable(msg)) => {
            let _ = writeln!(std::io::stderr(), "cloister verify: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The prefix of the line on which the test guest prints its report.
pub const CONSOLE_REPORT_PREFIX: &str = "CLOISTER-REPORT: ";

/// A report file as it is, or the report in a console log: exactly one line starting
/// with [`CONSOLE_REPORT_PREFIX`], followed by hex. A binary report is never mistaken for
/// a log (it does not start with the prefix on any line boundary in practice, and when it
/// is not valid UTF-8 text it is taken as is).
fn report_from_console(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Ok(bytes);
    };
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(CONSOLE_REPORT_PREFIX))
        .collect();
    match lines.as_slice() {
        [] => Ok(bytes),
        [hex_text] => hex::decode(hex_text.trim())
            .map_err(|e| format!("the {CONSOLE_REPORT_PREFIX}line is not hex: {e}")),
        more => Err(format!(
            "the console log holds {} {CONSOLE_REPORT_PREFIX}lines; give a log of one launch",
            more.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_console_log_yields_its_one_report() {
        let log = b"boot\nCLOISTER-REPORT: 0102ff\r\nCLOISTER-ATTEST: ok\n".to_vec();
        assert_eq!(report_from_console(log), Ok(vec![1, 2, 0xff]));
        let raw = vec![0x05, 0, 0, 0, 0xff, 0xfe];
        assert_eq!(report_from_console(raw.clone()), Ok(raw));
        let two = b"CLOISTER-REPORT: 01\nCLOISTER-REPORT: 02\n".to_vec();
        assert!(report_from_console(two)
            .unwrap_err()
            .contains("2 CLOISTER-REPORT"));
        let bad = b"CLOISTER-REPORT: zz\n".to_vec();
        assert!(report_from_console(bad).unwrap_err().contains("not hex"));
    }
}
