//! OVMF's SEV metadata: the list of memory sections QEMU must pre-validate or fill
//! before an SEV-SNP guest starts (edk2 `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`).
//!
//! The footer table entry [`crate::guid::OVMF_SEV_METADATA`] holds a `u32` offset of the
//! header from the end of the image. The header is `"ASEV"`, `u32 size` (header plus
//! descriptors), `u32 version` (1), `u32 num_items`, followed by `num_items` descriptors
//! of `u32 gpa`, `u32 size`, `u32 type`.

use std::fmt;

/// Size of the "ASEV" header.
pub const HEADER_SIZE: usize = 16;
/// Size of one section descriptor.
pub const DESCRIPTOR_SIZE: usize = 12;
/// Largest number of sections accepted (real OVMF images have about six).
pub const MAX_SECTIONS: usize = 64;
const PAGE_SIZE: u64 = 4096;

/// Why the SEV metadata could not be read or is not sane.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SevMetadataError {
    /// The footer entry pointing at the metadata is shorter than 4 bytes.
    #[error("SEV metadata footer entry holds {0} bytes, expected at least 4")]
    ShortEntry(usize),
    /// The offset from the end of the image points outside the image.
    #[error(
        "SEV metadata offset {offset:#x} from the end lies outside the {image_len}-byte image"
    )]
    OffsetOutOfRange {
        /// Offset from the end of the image.
        offset: u64,
        /// Image length.
        image_len: usize,
    },
    /// The header signature is not "ASEV".
    #[error("SEV metadata signature is {0:02x?}, expected \"ASEV\"")]
    BadSignature([u8; 4]),
    /// Unsupported version.
    #[error("SEV metadata version {0} is not supported (expected 1)")]
    BadVersion(u32),
    /// Too many sections or a header size that does not cover them.
    #[error("SEV metadata declares {items} sections in a {size}-byte block ({available} bytes of image available); at most {MAX_SECTIONS} sections of 12 bytes after a 16-byte header are accepted")]
    BadItemCount {
        /// Declared number of sections.
        items: u32,
        /// Declared header+descriptor size.
        size: u32,
        /// Bytes from the header to the end of the image.
        available: usize,
    },
    /// A section type this parser does not know.
    #[error("SEV metadata section {index} has unknown type {kind:#x}")]
    UnknownSectionType {
        /// Index of the section.
        index: usize,
        /// Its type value.
        kind: u32,
    },
    /// A section that is empty, unaligned or runs past 4 GiB.
    #[error("SEV metadata section {index} ({kind}) at GPA {gpa:#x} size {size:#x} is not a non-empty, page-aligned range below 4 GiB")]
    BadRange {
        /// Index of the section.
        index: usize,
        /// Its type.
        kind: SectionKind,
        /// Its GPA.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// A secrets or CPUID section that is not exactly one page.
    #[error("SEV metadata section {index} ({kind}) is {size:#x} bytes; it must be exactly one 4 KiB page")]
    NotOnePage {
        /// Index of the section.
        index: usize,
        /// Its type.
        kind: SectionKind,
        /// Its size.
        size: u32,
    },
    /// Two sections share memory.
    #[error("SEV metadata sections {first} and {second} overlap")]
    Overlap {
        /// Index of the first section.
        first: usize,
        /// Index of the second section.
        second: usize,
    },
}

/// The kind of an SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// Memory OVMF's SEC phase uses before it can validate pages itself (type 1).
    SecMemory,
    /// The SNP secrets page (type 2).
    Secrets,
    /// The SNP CPUID page (type 3).
    Cpuid,
    /// The SVSM calling area (type 4).
    SvsmCaa,
    /// The page holding the SEV hashes table for measured direct boot (type 0x10).
    KernelHashes,
}

impl SectionKind {
    /// Decodes the on-disk type value.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(SectionKind::SecMemory),
            2 => Some(SectionKind::Secrets),
            3 => Some(SectionKind::Cpuid),
            4 => Some(SectionKind::SvsmCaa),
            0x10 => Some(SectionKind::KernelHashes),
            _ => None,
        }
    }

    /// The on-disk type value.
    pub fn raw(self) -> u32 {
        match self {
            SectionKind::SecMemory => 1,
            SectionKind::Secrets => 2,
            SectionKind::Cpuid => 3,
            SectionKind::SvsmCaa => 4,
            SectionKind::KernelHashes => 0x10,
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionKind::SecMemory => "SEC memory",
            SectionKind::Secrets => "secrets",
            SectionKind::Cpuid => "CPUID",
            SectionKind::SvsmCaa => "SVSM CAA",
            SectionKind::KernelHashes => "kernel hashes",
        })
    }
}

/// One SEV metadata section: a guest-physical range and what goes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevMetadataSection {
    /// Guest physical address (page aligned).
    pub gpa: u32,
    /// Size in bytes (a multiple of 4 KiB).
    pub size: u32,
    /// What the section is for.
    pub kind: SectionKind,
}

impl SevMetadataSection {
    /// End of the section (exclusive), as u64 so it cannot overflow.
    pub fn end(&self) -> u64 {
        u64::from(self.gpa) + u64::from(self.size)
    }
}

/// Parses the SEV metadata whose footer entry data is `entry` inside `image`.
pub fn parse(image: &[u8], entry: &[u8]) -> Result<Vec<SevMetadataSection>, SevMetadataError> {
    let offset = entry
        .get(..4)
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .ok_or(SevMetadataError::ShortEntry(entry.len()))?;
    let out_of_range = SevMetadataError::OffsetOutOfRange {
        offset,
        image_len: image.len(),
    };
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| image.len().checked_sub(o))
        .ok_or(out_of_range.clone())?;
    let header = image
        .get(start..start + HEADER_SIZE)
        .ok_or(out_of_range.clone())?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let signature = [header[0], header[1], header[2], header[3]];
    if &signature != b"ASEV" {
        return Err(SevMetadataError::BadSignature(signature));
    }
    let (size, version, items) = (word(4), word(8), word(12));
    if version != 1 {
        return Err(SevMetadataError::BadVersion(version));
    }
    let available = image.len() - start;
    let count = usize::try_from(items).unwrap_or(usize::MAX);
    let bad_count = SevMetadataError::BadItemCount {
        items,
        size,
        available,
    };
    if count > MAX_SECTIONS {
        return Err(bad_count);
    }
    let needed = HEADER_SIZE + count * DESCRIPTOR_SIZE;
    let declared = usize::try_from(size).unwrap_or(usize::MAX);
    if declared < needed || declared > available {
        return Err(bad_count);
    }
    let mut sections = Vec::with_capacity(count);
    for index in 0..count {
        let at = start + HEADER_SIZE + index * DESCRIPTOR_SIZE;
        let d = &image[at..at + DESCRIPTOR_SIZE];
        let field = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let (gpa, size, raw) = (field(0), field(4), field(8));
        let kind = SectionKind::from_raw(raw)
            .ok_or(SevMetadataError::UnknownSectionType { index, kind: raw })?;
        let section = SevMetadataSection { gpa, size, kind };
        if size == 0
            || u64::from(gpa) % PAGE_SIZE != 0
            || u64::from(size) % PAGE_SIZE != 0
            || section.end() > 1 << 32
        {
            return Err(SevMetadataError::BadRange {
                index,
                kind,
                gpa,
                size,
            });
        }
        if matches!(kind, SectionKind::Secrets | SectionKind::Cpuid) && u64::from(size) != PAGE_SIZE
        {
            return Err(SevMetadataError::NotOnePage { index, kind, size });
        }
        if let Some(first) = sections.iter().position(|s: &SevMetadataSection| {
            u64::from(s.gpa) < section.end() && u64::from(gpa) < s.end()
        }) {
            return Err(SevMetadataError::Overlap {
                first,
                second: index,
            });
        }
        sections.push(section);
    }
    Ok(sections)
}

/// Encodes sections as an "ASEV" block (header plus descriptors), as OVMF lays it out.
/// Used to build synthetic firmware images for tests and benchmarks.
pub fn encode(sections: &[SevMetadataSection]) -> Vec<u8> {
    let size = HEADER_SIZE + sections.len() * DESCRIPTOR_SIZE;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"ASEV");
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&s.gpa.to_le_bytes());
        out.extend_from_slice(&s.size.to_le_bytes());
        out.extend_from_slice(&s.kind.raw().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn image(sections: &[SevMetadataSection]) -> (Vec<u8>, [u8; 4]) {
        let block = encode(sections);
        let mut image = vec![0u8; 64];
        image.extend_from_slice(&block);
        image.extend_from_slice(&[0u8; 32]);
        let offset = (image.len() - 64) as u32;
        (image, offset.to_le_bytes())
    }

    fn s(gpa: u32, size: u32, kind: SectionKind) -> SevMetadataSection {
        SevMetadataSection { gpa, size, kind }
    }

    #[test]
    fn round_trips_sections() {
        let want = vec![
            s(0x80_0000, 0x9000, SectionKind::SecMemory),
            s(0x80d000, 0x1000, SectionKind::Secrets),
            s(0x80e000, 0x1000, SectionKind::Cpuid),
            s(0x80f000, 0x1000, SectionKind::KernelHashes),
        ];
        let (img, entry) = image(&want);
        assert_eq!(parse(&img, &entry).unwrap(), want);
    }

    #[test]
    fn refuses_overlap_bad_ranges_and_counts() {
        let (img, entry) = image(&[
            s(0x80_0000, 0x9000, SectionKind::SecMemory),
            s(0x80_8000, 0x1000, SectionKind::Secrets),
        ]);
        assert_eq!(
            parse(&img, &entry),
            Err(SevMetadataError::Overlap {
                first: 0,
                second: 1
            })
        );
        let (img, entry) = image(&[s(0x80_0800, 0x1000, SectionKind::SecMemory)]);
        assert!(matches!(
            parse(&img, &entry),
            Err(SevMetadataError::BadRange { .. })
        ));
        let (img, entry) = image(&[s(0xffff_f000, 0x2000, SectionKind::SecMemory)]);
        assert!(matches!(
            parse(&img, &entry),
            Err(SevMetadataError::BadRange { .. })
        ));
        let (img, entry) = image(&[s(0x1000, 0x2000, SectionKind::Cpuid)]);
        assert!(matches!(
            parse(&img, &entry),
            Err(SevMetadataError::NotOnePage { .. })
        ));
        let (mut img, entry) = image(&[s(0x1000, 0x1000, SectionKind::Cpuid)]);
        img[64 + 12..64 + 16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            parse(&img, &entry),
            Err(SevMetadataError::BadItemCount { items: 1000, .. })
        ));
        let (mut img, entry) = image(&[s(0x1000, 0x1000, SectionKind::Cpuid)]);
        img[64 + 24..64 + 28].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            parse(&img, &entry),
            Err(SevMetadataError::UnknownSectionType { index: 0, kind: 7 })
        );
        let (img, _) = image(&[]);
        assert!(matches!(
            parse(&img, &0xffff_ffffu32.to_le_bytes()),
            Err(SevMetadataError::OffsetOutOfRange { .. })
        ));
        assert_eq!(parse(&img, &[1, 2]), Err(SevMetadataError::ShortEntry(2)));
    }
}
