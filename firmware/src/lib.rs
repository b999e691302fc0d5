//! Firmware images for SEV-SNP guests: OVMF's footer GUID table and SEV metadata, the
//! addresses they announce (AP reset vector, SEV hashes table, secret block), and the
//! SEV hashes table QEMU writes for measured direct boot.

pub mod footer;
pub mod guid;
pub mod ovmf;
pub mod sev_hashes;
pub mod sev_metadata;
pub mod synthetic;

pub use ovmf::{GpaRange, OvmfError, OvmfImage};
pub use sev_hashes::SevHashes;
pub use sev_metadata::{SectionKind, SevMetadataSection};
