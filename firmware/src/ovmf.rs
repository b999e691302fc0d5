//! An OVMF firmware image as QEMU maps it for an SEV-SNP guest: the flash image ending at
//! 4 GiB, its footer GUID table, its SEV metadata sections and the addresses they name.

use crate::footer::{FooterError, FooterTable};
use crate::guid::{OVMF_SEV_METADATA, SEV_ES_RESET_BLOCK, SEV_HASH_TABLE_RV, SEV_SECRET_BLOCK};
use crate::sev_metadata::{self, SectionKind, SevMetadataError, SevMetadataSection};

/// Guest-physical end of the firmware image (QEMU maps the flash just below 4 GiB).
pub const FOUR_GIB: u64 = 1 << 32;
const PAGE_SIZE: usize = 4096;

/// Why an image is not a usable OVMF image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OvmfError {
    /// Empty file.
    #[error("firmware image is empty")]
    Empty,
    /// Length not a multiple of the page size (it could not be measured page by page).
    #[error("firmware image is {0} bytes, not a multiple of 4096")]
    NotPageMultiple(usize),
    /// Larger than the 4 GiB it must fit below.
    #[error("firmware image is {0} bytes, larger than 4 GiB")]
    TooLarge(usize),
    /// The footer table is missing or malformed.
    #[error("OVMF footer table: {0}")]
    Footer(#[from] FooterError),
    /// The SEV metadata is malformed.
    #[error("OVMF SEV metadata: {0}")]
    Metadata(#[from] SevMetadataError),
    /// A footer entry is shorter than the fields it must hold.
    #[error("OVMF footer entry {name} holds {len} bytes, expected at least {need}")]
    ShortEntry {
        /// Which entry.
        name: &'static str,
        /// Its data length.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A metadata section overlaps the firmware image itself.
    #[error("SEV metadata {kind} section at {gpa:#x}..{end:#x} overlaps the firmware image at {image_gpa:#x}..4 GiB")]
    SectionOverlapsImage {
        /// Section kind.
        kind: SectionKind,
        /// Section start.
        gpa: u32,
        /// Section end.
        end: u64,
        /// Image start GPA.
        image_gpa: u64,
    },
}

/// A location announced by the footer table: GPA and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpaRange {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A parsed OVMF image (borrowed bytes; nothing copied).
#[derive(Debug, Clone)]
pub struct OvmfImage<'a> {
    bytes: &'a [u8],
    table: FooterTable,
    sections: Vec<SevMetadataSection>,
    sev_es_reset_eip: Option<u32>,
    sev_hashes_table: Option<GpaRange>,
    sev_secret_block: Option<GpaRange>,
}

impl<'a> OvmfImage<'a> {
    /// Parses and validates an image. Every malformation is an error, never a panic.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, OvmfError> {
        if bytes.is_empty() {
            return Err(OvmfError::Empty);
        }
        if !bytes.len().is_multiple_of(PAGE_SIZE) {
            return Err(OvmfError::NotPageMultiple(bytes.len()));
        }
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if len > FOUR_GIB {
            return Err(OvmfError::TooLarge(bytes.len()));
        }
        let table = FooterTable::parse(bytes)?;
        let entry =
            |guid, name: &'static str, need: usize| -> Result<Option<&'a [u8]>, OvmfError> {
                match table.find(guid) {
                    None => Ok(None),
                    Some(r) => {
                        let data = bytes.get(r).unwrap_or_default();
                        if data.len() < need {
                            Err(OvmfError::ShortEntry {
                                name,
                                len: data.len(),
                                need,
                            })
                        } else {
                            Ok(Some(data))
                        }
                    }
                }
            };
        let u32_at = |d: &[u8], i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let sev_es_reset_eip =
            entry(&SEV_ES_RESET_BLOCK, "SEV-ES reset block", 4)?.map(|d| u32_at(d, 0));
        let range = |d: &[u8]| GpaRange {
            gpa: u32_at(d, 0),
            size: u32_at(d, 4),
        };
        let sev_hashes_table = entry(&SEV_HASH_TABLE_RV, "SEV hashes table", 8)?
            .map(range)
            .filter(|r| r.gpa != 0);
        let sev_secret_block = entry(&SEV_SECRET_BLOCK, "SEV secret block", 8)?
            .map(range)
            .filter(|r| r.gpa != 0);
        let sections = match entry(&OVMF_SEV_METADATA, "SEV metadata", 4)? {
            Some(d) => sev_metadata::parse(bytes, d)?,
            None => Vec::new(),
        };
        let image_gpa = FOUR_GIB - len;
        if let Some(s) = sections.iter().find(|s| s.end() > image_gpa) {
            return Err(OvmfError::SectionOverlapsImage {
                kind: s.kind,
                gpa: s.gpa,
                end: s.end(),
                image_gpa,
            });
        }
        Ok(OvmfImage {
            bytes,
            table,
            sections,
            sev_es_reset_eip,
            sev_hashes_table,
            sev_secret_block,
        })
    }

    /// The image bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Guest physical address of the image's first byte (the image ends at 4 GiB).
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.bytes.len() as u64
    }

    /// The footer GUID table.
    pub fn footer_table(&self) -> &FooterTable {
        &self.table
    }

    /// SEV metadata sections in the order the image lists them (QEMU's launch order).
    pub fn sections(&self) -> &[SevMetadataSection] {
        &self.sections
    }

    /// Whether the image has a section of this kind.
    pub fn has_section(&self, kind: SectionKind) -> bool {
        self.sections.iter().any(|s| s.kind == kind)
    }

    /// The AP reset address from the SEV-ES reset block (where APs start), if present.
    pub fn sev_es_reset_eip(&self) -> Option<u32> {
        self.sev_es_reset_eip
    }

    /// Where OVMF expects the SEV hashes table, if the image supports measured direct boot.
    pub fn sev_hashes_table(&self) -> Option<GpaRange> {
        self.sev_hashes_table
    }

    /// The SEV launch secret block, if announced.
    pub fn sev_secret_block(&self) -> Option<GpaRange> {
        self.sev_secret_block
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::synthetic::SyntheticOvmf;

    fn sample() -> SyntheticOvmf {
        SyntheticOvmf::amd_sev_minimal(64 * 1024, 1)
    }

    #[test]
    fn parses_synthetic_image() {
        let bytes = sample().build().unwrap();
        let img = OvmfImage::parse(&bytes).unwrap();
        assert_eq!(img.gpa(), FOUR_GIB - 64 * 1024);
        assert_eq!(img.sev_es_reset_eip(), Some(0x80_b004));
        assert_eq!(img.sev_hashes_table().unwrap().gpa, 0x80_fc00);
        assert_eq!(img.sections().len(), 4);
        assert!(img.has_section(SectionKind::KernelHashes));
    }

    #[test]
    fn parses_debian_ovmf() {
        // Debian's ovmf package (scripts/install-deps.sh installs it).
        let bytes = std::fs::read("/usr/share/ovmf/OVMF.fd")
            .expect("Debian's /usr/share/ovmf/OVMF.fd is required (apt-get install ovmf)");
        let img = OvmfImage::parse(&bytes).unwrap();
        assert!(img.sev_es_reset_eip().is_some());
        assert!(img.has_section(SectionKind::SecMemory));
        assert!(img.has_section(SectionKind::Secrets));
        assert!(img.has_section(SectionKind::Cpuid));
        assert!(!img.has_section(SectionKind::KernelHashes));
        assert_eq!(img.sev_hashes_table(), None);
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(OvmfImage::parse(&[]).unwrap_err(), OvmfError::Empty);
        assert_eq!(
            OvmfImage::parse(&[0; 100]).unwrap_err(),
            OvmfError::NotPageMultiple(100)
        );
        let mut bytes = sample().build().unwrap();
        bytes.truncate(60 * 1024);
        assert!(matches!(
            OvmfImage::parse(&bytes).unwrap_err(),
            OvmfError::Footer(_)
        ));
    }

    #[test]
    fn truncations_and_mutations_never_panic() {
        let good = sample().build().unwrap();
        let real = std::fs::read("/usr/share/ovmf/OVMF.fd").unwrap_or_default();
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        // Truncate from the front (the footer stays, offsets go out of range) and the back.
        for cut in (0..good.len()).step_by(509) {
            errors += usize::from(OvmfImage::parse(&good[cut..]).is_err());
            errors += usize::from(OvmfImage::parse(&good[..cut]).is_err());
        }
        // Mutate bytes in the last 1 KiB, where the tables live.
        for base in [&good, &real] {
            if base.is_empty() {
                continue;
            }
            for _ in 0..3000 {
                let mut m = base.to_vec();
                let flips = 1 + next() % 4;
                for _ in 0..flips {
                    let at = m.len() - 1 - (next() % 1536) as usize;
                    m[at] = next() as u8;
                }
                errors += usize::from(OvmfImage::parse(&m).is_err());
            }
        }
        // Many of these must have been refused (the footer GUID, lengths, signature...).
        assert!(errors > 500, "only {errors} malformed images refused");
    }
}
