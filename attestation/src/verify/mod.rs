//! "Is this report genuine?": the ECDSA P-384 signature over bytes 0..0x2A0, the AMD chain
//! (ARK → ASK → VCEK or ARK → ASVK → VLEK, RSASSA-PSS SHA-384) with AMD's roots built in,
//! the certificates' validity at an injectable instant, names, algorithms and key usage per
//! generation, the VCEK/VLEK extensions against the report (TCB, hwID, productName), the
//! signing-key kind, reserved fields, and a CRL when given.
//!
//! "Is it what I accept?" is the policy crate's job. Every check here is a [`Check`] with a
//! name, what was expected and what was found; [`VerifyOptions`] has one field per check
//! that can be switched off (a switched-off check shows as skipped, never as passed).
//!
//! For throughput, [`VerifiedChain`] can be built once and reused: [`verify_with_chain`]
//! then does only the report checks (parse, signature, report-vs-certificate).
//!
//! `docs/verify-checks.md` lists every check and compares them with go-sev-guest's.

mod chain;
mod check;
mod report_checks;

pub use chain::VerifiedChain;
pub use check::{Check, Outcome};

use thiserror::Error;
use time::OffsetDateTime;

use crate::certs::{CertBundle, CertRole, Certificate, Crl};
use crate::report::{AttestationReport, Generation, ReportError, SigningKey};

/// What verification may do, one field per check that can be switched off.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The instant at which certificate validity and CRL freshness are judged.
    pub at: OffsetDateTime,
    /// Force the generation (as `--product`); must agree with what the report and the
    /// certificate say.
    pub product: Option<Generation>,
    /// Accept a user-supplied ARK that is not the built-in one for its generation. Off by
    /// default; when on, the check says that the ARK was accepted on request.
    pub allow_untrusted_ark: bool,
    /// Trust the Cloister simulation root (`--trust-sim-root`): a chain whose ARK is the
    /// simulation's ([`crate::certs::SIM_ORGANIZATION`], given with the certificates) is
    /// checked like AMD's and accepted, and `ark.trusted` says that the root is the
    /// simulation's. Off by default: a simulated report then fails `ark.trusted`, naming
    /// the simulation root. It has no effect on AMD chains.
    pub trust_sim_root: bool,
    /// A CRL to check the chain against (`--crl`).
    pub crl: Option<Crl>,
    /// Check notBefore/notAfter of every certificate at `at`.
    pub check_validity: bool,
    /// Check key usage, basic constraints, X.509 version and unknown critical extensions.
    pub check_key_usage: bool,
    /// Check signature and key algorithms (RSASSA-PSS SHA-384, RSA-4096, EC P-384).
    pub check_algorithms: bool,
    /// Check subject and issuer names per generation (ARK-Milan, SEV-Milan, SEV-VCEK, ...).
    pub check_names: bool,
    /// Check the VCEK/VLEK TCB extensions against the report's REPORTED_TCB.
    pub check_tcb_extensions: bool,
    /// Check the VCEK hwID against CHIP_ID (skipped when CHIP_ID is masked).
    pub check_hwid: bool,
    /// Check the productName extension against the generation.
    pub check_product_name: bool,
    /// Check KEY_INFO.SIGNING_KEY against the certificate kind (VCEK 0, VLEK 1).
    pub check_signing_key: bool,
    /// Check the report's reserved fields (including reserved TCB bytes) are zero.
    pub check_reserved: bool,
}

impl VerifyOptions {
    /// Every check on, validity judged at `at`.
    pub fn at(at: OffsetDateTime) -> Self {
        Self {
            at,
            product: None,
            allow_untrusted_ark: false,
            trust_sim_root: false,
            crl: None,
            check_validity: true,
            check_key_usage: true,
            check_algorithms: true,
            check_names: true,
            check_tcb_extensions: true,
            check_hwid: true,
            check_product_name: true,
            check_signing_key: true,
            check_reserved: true,
        }
    }
}

impl Default for VerifyOptions {
    /// Every check on, validity judged now.
    fn default() -> Self {
        Self::at(OffsetDateTime::now_utc())
    }
}

/// Input that cannot be verified at all (as opposed to a failed check).
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The report is not a report.
    #[error("attestation report: {0}")]
    Report(#[from] ReportError),
    /// No VCEK or VLEK certificate was given.
    #[error("no VCEK or VLEK certificate was given; the report names {0} as its signer (pass --certs DIR or --vek FILE)")]
    NoEndorsementKey(SigningKey),
    /// Neither the report, the certificate nor the options name the generation.
    #[error("cannot tell the processor generation: the report (version {0}) has no CPUID fields and the certificate has no known productName; pass --product milan|genoa|turin")]
    UnknownGeneration(u32),
}

/// The result of verifying one report.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The parsed report.
    pub report: AttestationReport,
    /// The generation the report was verified as.
    pub generation: Generation,
    /// The endorsement key certificate (VCEK or VLEK) that was used.
    pub vek: Certificate,
    /// True when the chain was accepted as the Cloister simulation root's (only with
    /// [`VerifyOptions::trust_sim_root`]): the report comes from the simulated platform,
    /// not from AMD hardware.
    pub sim_root_trusted: bool,
    /// Every check, in order: generation, chain, report.
    pub checks: Vec<Check>,
}

impl Verification {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::ok)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok())
    }
}

/// Picks the VCEK or VLEK for the report's SIGNING_KEY; when the named one is missing but
/// the other is present, that one is used and the signing-key check will fail.
fn select_vek(report: &AttestationReport, certs: &CertBundle) -> Result<Certificate, VerifyError> {
    let named = match report.key_info.signing_key {
        SigningKey::Vcek => certs.vcek.as_ref(),
        SigningKey::Vlek => certs.vlek.as_ref(),
        _ => None,
    };
    named
        .or(certs.vcek.as_ref())
        .or(certs.vlek.as_ref())
        .cloned()
        .ok_or(VerifyError::NoEndorsementKey(report.key_info.signing_key))
}

/// Decides the generation from the options, the report's CPUID, the certificate's
/// productName and the certificate's issuer name, and checks that they agree.
fn resolve_generation(
    report: &AttestationReport,
    vek: &Certificate,
    opts: &VerifyOptions,
) -> Result<(Generation, Check), VerifyError> {
    let from_cpuid = report.cpuid_generation();
    let from_product = vek
        .amd
        .product_name
        .as_deref()
        .and_then(Generation::from_product_name);
    let from_issuer = CertRole::from_common_name(&vek.issuer_cn).and_then(|(_, g)| g);
    let chosen = opts
        .product
        .or(from_cpuid)
        .or(from_product)
        .or(from_issuer)
        .ok_or(VerifyError::UnknownGeneration(report.version))?;
    let mut found = Vec::new();
    let mut agree = true;
    let mut note = |what: &str, g: Option<Generation>| {
        if let Some(g) = g {
            agree &= g == chosen;
            found.push(format!("{what} {g}"));
        }
    };
    note("--product", opts.product);
    note("report CPUID", from_cpuid);
    note("productName", from_product);
    note("issuer", from_issuer);
    if let Some(c) = report.cpuid {
        if from_cpuid.is_none() {
            agree = false;
            found.push(format!(
                "report CPUID family {:#x} model {:#x} (unknown)",
                c.family, c.model
            ));
        }
    }
    Ok((
        chosen,
        Check::new(
            "generation",
            agree,
            format!("one generation ({chosen}) named by every source"),
            found.join(", "),
        ),
    ))
}

/// Full verification: parse, decide the generation, verify the chain, verify the report.
pub fn verify(
    report_bytes: &[u8],
    certs: &CertBundle,
    opts: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let report = AttestationReport::parse(report_bytes)?;
    let vek = select_vek(&report, certs)?;
    let (generation, generation_check) = resolve_generation(&report, &vek, opts)?;
    let chain = VerifiedChain::build(certs, vek, generation, opts);
    let mut checks = vec![generation_check];
    checks.extend(chain.checks.iter().cloned());
    checks.extend(report_checks::check_report(&report, &chain, opts));
    Ok(Verification {
        report,
        generation,
        sim_root_trusted: chain.sim_root_trusted,
        vek: chain.vek,
        checks,
    })
}

/// Report-only verification against a chain verified before (its checks are included in
/// the result, so a failed chain still fails).
pub fn verify_with_chain(
    report_bytes: &[u8],
    chain: &VerifiedChain,
    opts: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let report = AttestationReport::parse(report_bytes)?;
    let (generation, generation_check) = resolve_generation(&report, &chain.vek, opts)?;
    let mut checks = vec![Check::new(
        "generation",
        generation_check.ok() && generation == chain.generation,
        format!("the chain's generation ({})", chain.generation),
        generation_check.found,
    )];
    checks.extend(chain.checks.iter().cloned());
    checks.extend(report_checks::check_report(&report, chain, opts));
    Ok(Verification {
        report,
        generation,
        vek: chain.vek.clone(),
        sim_root_trusted: chain.sim_root_trusted,
        checks,
    })
}

/// Formats Unix seconds as RFC 3339 for messages.
pub(crate) fn rfc3339(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix time {t}"))
}

#[cfg(test)]
mod tests;
