//! SEV-SNP attestation: the report format, certificate chains and report verification,
//! and the launch side: launch plan, launch digest (PAGE_INFO chain), VMSA and the signed
//! ID block of SNP_LAUNCH_FINISH.

pub mod certs;
pub mod id_block;
pub mod launch;
pub mod report;
pub mod sim;
pub mod verify;
