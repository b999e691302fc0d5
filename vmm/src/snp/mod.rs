//! SEV-SNP launch: the kernel ABI ([`abi`]), the host seam ([`host`]), and its hosts.

pub mod abi;
pub mod certs;
pub mod cpuid_page;
pub mod host;
pub mod kvm;
pub mod launcher;
pub mod sim;

#[cfg(test)]
pub(crate) mod tests;
