//! SEV-SNP attestation: the report format, certificate chains and report verification,
//! and the launch side: launch plan, launch digest (PAGE_INFO chain) and VMSA.

pub mod certs;
pub mod launch;
pub mod report;
pub mod sim;
pub mod verify;
