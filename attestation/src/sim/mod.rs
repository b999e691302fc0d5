//! The simulated platform's firmware side: a model of the AMD secure processor (PSP) for
//! one guest, and the simulation root of trust that signs its reports.
//!
//! [`SimPsp`] keeps the launch digest as the firmware does (the same
//! [`LaunchDigest`](crate::launch::digest::LaunchDigest) as `cloister measure`), enforces
//! the order of SNP_LAUNCH_START / _UPDATE / _FINISH and the guest policy, checks the CPUID
//! page and corrects it as the firmware does ([`cpuid`]), fills the secrets page with fresh
//! VMPCKs, and answers SNP_GUEST_REQUEST messages (AES-256-GCM, exact sequence numbers)
//! with version-5 attestation reports.
//!
//! [`SimRoot`] is the simulation root of trust: ARK and ASK (RSA-4096, RSASSA-PSS SHA-384)
//! and a VCEK (EC P-384) whose certificates have AMD's structure and extensions (TCB SPLs,
//! hwID = the simulated chip ID, productName) and whose names say simulation
//! ([`crate::certs::SIM_ORGANIZATION`]). `cloister verify` checks its reports with the same
//! code as AMD's and trusts it only when asked (`VerifyOptions::trust_sim_root`).
//!
//! Nothing here touches KVM: the simulated kernel (in the VMM) calls [`SimPsp`] where the
//! real kernel would call the firmware. Nothing about memory encryption is simulated.
//!
//! Facts that are not from a primary source: the firmware status the real PSP returns for
//! a failed message tag, a stale sequence number and a malformed header (the simulator
//! returns INVALID_PARAM for all three), for reserved guest-policy bits (INVALID_PARAM),
//! and the secrets page VERSION (3).

mod certificates;
pub mod cpuid;
pub mod message;
mod psp;
mod root;
pub mod secrets;
mod status;

pub use psp::{LaunchState, SimPsp, SIM_FIRMWARE, SIM_PLATFORM_INFO, SIM_REPORT_VERSION};
pub use root::SimRoot;
pub use status::FwStatus;

/// Errors of the simulation root (generating, saving, loading, exporting).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Key generation, encoding or signing failed.
    #[error("simulation root key: {0}")]
    Crypto(String),
    /// A certificate could not be built or parsed.
    #[error("simulation root certificate: {0}")]
    Certificate(String),
    /// A saved root does not hang together.
    #[error("the simulation root in {dir} is not usable: {detail}")]
    Inconsistent {
        /// The directory.
        dir: String,
        /// What is wrong.
        detail: String,
    },
}

#[cfg(test)]
mod tests;
