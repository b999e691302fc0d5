//! The SNP launch digest: the PAGE_INFO chain the AMD secure processor keeps in the
//! guest context (GCTX.LD) while `SNP_LAUNCH_UPDATE` adds pages.
//!
//! For every page added, the firmware builds a PAGE_INFO structure (SEV-SNP firmware ABI
//! specification, section "SNP_LAUNCH_UPDATE", table "Layout of the PAGE_INFO structure")
//! whose first field is the current digest, and the new digest is SHA-384 of it:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0x00 | 48 | DIGEST_CUR: the launch digest so far |
//! | 0x30 | 48 | CONTENTS: SHA-384 of the page for NORMAL and VMSA pages, zero otherwise |
//! | 0x60 | 2 | LENGTH: 0x70 |
//! | 0x62 | 1 | PAGE_TYPE |
//! | 0x63 | 1 | IMI_PAGE |
//! | 0x64 | 1 | VMPL3_PERMS |
//! | 0x65 | 1 | VMPL2_PERMS |
//! | 0x66 | 1 | VMPL1_PERMS |
//! | 0x67 | 1 | reserved |
//! | 0x68 | 8 | GPA |
//!
//! The engine is streaming: it holds 48 bytes of state and hashes one page at a time.

use ring::digest::{digest, SHA384};

/// Size of a page added by SNP_LAUNCH_UPDATE.
pub const PAGE_SIZE: usize = 4096;
/// Size of the launch digest (SHA-384).
pub const LD_SIZE: usize = 48;
/// The GPA the firmware records for VMSA pages: the RMP holds them at GPA -1, page aligned
/// and with the bits above 51 cleared.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// The page types of SNP_LAUNCH_UPDATE (SEV-SNP ABI, PAGE_TYPE field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageType {
    /// Ordinary page with contents, measured by their SHA-384.
    Normal = 0x01,
    /// A vCPU's VMSA, measured by its SHA-384 at [`VMSA_GPA`].
    Vmsa = 0x02,
    /// A page the firmware zeroes; measured as zeros.
    Zero = 0x03,
    /// A page whose contents are not measured (the firmware encrypts them as given).
    Unmeasured = 0x04,
    /// The secrets page the firmware fills.
    Secrets = 0x05,
    /// The CPUID page the firmware checks.
    Cpuid = 0x06,
}

impl PageType {
    /// All page types, in numeric order.
    pub const ALL: [PageType; 6] = [
        PageType::Normal,
        PageType::Vmsa,
        PageType::Zero,
        PageType::Unmeasured,
        PageType::Secrets,
        PageType::Cpuid,
    ];

    /// Whether the page's contents go into the digest (NORMAL and VMSA).
    pub fn contents_measured(self) -> bool {
        matches!(self, PageType::Normal | PageType::Vmsa)
    }

    /// Lower-case name used in summaries.
    pub fn name(self) -> &'static str {
        match self {
            PageType::Normal => "normal",
            PageType::Vmsa => "vmsa",
            PageType::Zero => "zero",
            PageType::Unmeasured => "unmeasured",
            PageType::Secrets => "secrets",
            PageType::Cpuid => "cpuid",
        }
    }
}

/// Why a page could not be added to the digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// The GPA is not page aligned.
    #[error("page GPA {0:#x} is not 4 KiB aligned")]
    UnalignedGpa(u64),
    /// A NORMAL or VMSA page was given without exactly 4096 bytes of contents.
    #[error("a {page_type:?} page needs 4096 bytes of contents, got {len}")]
    BadContentsLength {
        /// The page type.
        page_type: PageType,
        /// Bytes given.
        len: usize,
    },
    /// A VMSA page was given at a GPA other than [`VMSA_GPA`].
    #[error("VMSA pages are measured at GPA {VMSA_GPA:#x}, not {0:#x}")]
    VmsaGpa(u64),
}

/// One PAGE_INFO structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// DIGEST_CUR: the digest before this page.
    pub digest_cur: [u8; LD_SIZE],
    /// CONTENTS: SHA-384 of the page, or zeros for types whose contents are not measured.
    pub contents: [u8; LD_SIZE],
    /// PAGE_TYPE.
    pub page_type: PageType,
    /// IMI_PAGE: whether the page is added by a migration agent (always false here).
    pub imi_page: bool,
    /// VMPL3_PERMS.
    pub vmpl3_perms: u8,
    /// VMPL2_PERMS.
    pub vmpl2_perms: u8,
    /// VMPL1_PERMS.
    pub vmpl1_perms: u8,
    /// GPA of the page.
    pub gpa: u64,
}

impl PageInfo {
    /// Size of the encoded structure, also stored in its LENGTH field.
    pub const SIZE: usize = 0x70;
    /// Offset of DIGEST_CUR.
    pub const OFFSET_DIGEST_CUR: usize = 0x00;
    /// Offset of CONTENTS.
    pub const OFFSET_CONTENTS: usize = 0x30;
    /// Offset of LENGTH.
    pub const OFFSET_LENGTH: usize = 0x60;
    /// Offset of PAGE_TYPE.
    pub const OFFSET_PAGE_TYPE: usize = 0x62;
    /// Offset of IMI_PAGE.
    pub const OFFSET_IMI_PAGE: usize = 0x63;
    /// Offset of VMPL3_PERMS.
    pub const OFFSET_VMPL3_PERMS: usize = 0x64;
    /// Offset of VMPL2_PERMS.
    pub const OFFSET_VMPL2_PERMS: usize = 0x65;
    /// Offset of VMPL1_PERMS.
    pub const OFFSET_VMPL1_PERMS: usize = 0x66;
    /// Offset of GPA.
    pub const OFFSET_GPA: usize = 0x68;

    /// Encodes the structure as the firmware hashes it (little endian).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[Self::OFFSET_DIGEST_CUR..Self::OFFSET_DIGEST_CUR + LD_SIZE]
            .copy_from_slice(&self.digest_cur);
        b[Self::OFFSET_CONTENTS..Self::OFFSET_CONTENTS + LD_SIZE].copy_from_slice(&self.contents);
        b[Self::OFFSET_LENGTH..Self::OFFSET_LENGTH + 2]
            .copy_from_slice(&(Self::SIZE as u16).to_le_bytes());
        b[Self::OFFSET_PAGE_TYPE] = self.page_type as u8;
        b[Self::OFFSET_IMI_PAGE] = u8::from(self.imi_page);
        b[Self::OFFSET_VMPL3_PERMS] = self.vmpl3_perms;
        b[Self::OFFSET_VMPL2_PERMS] = self.vmpl2_perms;
        b[Self::OFFSET_VMPL1_PERMS] = self.vmpl1_perms;
        b[Self::OFFSET_GPA..Self::OFFSET_GPA + 8].copy_from_slice(&self.gpa.to_le_bytes());
        b
    }
}

/// SHA-384 of `bytes`.
pub fn sha384(bytes: &[u8]) -> [u8; LD_SIZE] {
    let mut out = [0u8; LD_SIZE];
    out.copy_from_slice(digest(&SHA384, bytes).as_ref());
    out
}

/// The running launch digest (GCTX.LD) and counters of what went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDigest {
    ld: [u8; LD_SIZE],
    pages: [u64; 7],
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchDigest {
    /// A fresh digest: all zeros, as SNP_LAUNCH_START leaves it.
    pub fn new() -> Self {
        Self::with_seed([0; LD_SIZE])
    }

    /// A digest continuing from `seed` (for example a precomputed firmware-only digest).
    pub fn with_seed(seed: [u8; LD_SIZE]) -> Self {
        LaunchDigest {
            ld: seed,
            pages: [0; 7],
        }
    }

    /// Adds one page. `contents` must be the 4096 page bytes for NORMAL and VMSA pages; for
    /// the other types it is ignored (their contents are not measured) and may be `None`.
    pub fn update_page(
        &mut self,
        page_type: PageType,
        gpa: u64,
        contents: Option<&[u8]>,
    ) -> Result<(), DigestError> {
        if !gpa.is_multiple_of(PAGE_SIZE as u64) {
            return Err(DigestError::UnalignedGpa(gpa));
        }
        if page_type == PageType::Vmsa && gpa != VMSA_GPA {
            return Err(DigestError::VmsaGpa(gpa));
        }
        let contents = if page_type.contents_measured() {
            match contents {
                Some(c) if c.len() == PAGE_SIZE => sha384(c),
                other => {
                    return Err(DigestError::BadContentsLength {
                        page_type,
                        len: other.map_or(0, <[u8]>::len),
                    })
                }
            }
        } else {
            [0; LD_SIZE]
        };
        self.update_with_contents_hash(page_type, gpa, contents);
        Ok(())
    }

    /// Adds one page whose CONTENTS field is already known (the SHA-384 of a NORMAL or VMSA
    /// page computed elsewhere, or zeros). Lets callers hash page contents in parallel.
    pub fn update_with_contents_hash(
        &mut self,
        page_type: PageType,
        gpa: u64,
        contents: [u8; LD_SIZE],
    ) {
        let info = PageInfo {
            digest_cur: self.ld,
            contents,
            page_type,
            imi_page: false,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            gpa,
        };
        self.ld = sha384(&info.to_bytes());
        self.pages[page_type as usize] += 1;
    }

    /// The digest so far.
    pub fn digest(&self) -> [u8; LD_SIZE] {
        self.ld
    }

    /// How many pages of `page_type` went in.
    pub fn page_count(&self, page_type: PageType) -> u64 {
        self.pages[page_type as usize]
    }

    /// How many content bytes were hashed (NORMAL and VMSA pages).
    pub fn bytes_measured(&self) -> u64 {
        (self.page_count(PageType::Normal) + self.page_count(PageType::Vmsa)) * PAGE_SIZE as u64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn page_info_layout() {
        // Offsets and size fixed by the SEV-SNP ABI's PAGE_INFO table; derived here a
        // second way, by adding up the field sizes in order.
        let fields = [
            ("digest_cur", 48),
            ("contents", 48),
            ("length", 2),
            ("page_type", 1),
            ("imi_page", 1),
            ("vmpl3", 1),
            ("vmpl2", 1),
            ("vmpl1", 1),
            ("reserved", 1),
            ("gpa", 8),
        ];
        let mut at = 0;
        let mut offsets = std::collections::HashMap::new();
        for (name, size) in fields {
            offsets.insert(name, at);
            at += size;
        }
        assert_eq!(at, PageInfo::SIZE);
        assert_eq!(PageInfo::SIZE, 0x70);
        assert_eq!(offsets["contents"], PageInfo::OFFSET_CONTENTS);
        assert_eq!(offsets["length"], PageInfo::OFFSET_LENGTH);
        assert_eq!(offsets["page_type"], PageInfo::OFFSET_PAGE_TYPE);
        assert_eq!(offsets["imi_page"], PageInfo::OFFSET_IMI_PAGE);
        assert_eq!(offsets["vmpl3"], PageInfo::OFFSET_VMPL3_PERMS);
        assert_eq!(offsets["vmpl2"], PageInfo::OFFSET_VMPL2_PERMS);
        assert_eq!(offsets["vmpl1"], PageInfo::OFFSET_VMPL1_PERMS);
        assert_eq!(offsets["gpa"], PageInfo::OFFSET_GPA);

        let info = PageInfo {
            digest_cur: [0x11; 48],
            contents: [0x22; 48],
            page_type: PageType::Secrets,
            imi_page: true,
            vmpl3_perms: 3,
            vmpl2_perms: 2,
            vmpl1_perms: 1,
            gpa: 0x0102_0304_0506_0708,
        };
        let b = info.to_bytes();
        assert_eq!(&b[..48], &[0x11; 48]);
        assert_eq!(&b[48..96], &[0x22; 48]);
        assert_eq!(&b[0x60..0x68], &[0x70, 0x00, 0x05, 0x01, 3, 2, 1, 0]);
        assert_eq!(&b[0x68..], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn page_type_values_match_the_abi() {
        let raw: Vec<u8> = PageType::ALL.iter().map(|t| *t as u8).collect();
        assert_eq!(raw, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn known_digests() {
        // Values computed independently with sev-snp-measure 0.0.13 (its GCTX class:
        // update_zero_pages(0x800000, 4096), then update_normal_pages(0xfffff000, 0xab * 4096)).
        let mut ld = LaunchDigest::new();
        ld.update_page(PageType::Zero, 0x80_0000, None).unwrap();
        assert_eq!(
            hex(&ld.digest()),
            "4472405c6dbc65e5629805f2be1b3df74eb119841eff12466c24f43e67083c23df5e645b2742b6d9aa0f943e095cebaa"
        );
        ld.update_page(PageType::Normal, 0xffff_f000, Some(&[0xab; 4096]))
            .unwrap();
        assert_eq!(
            hex(&ld.digest()),
            "f334b562aec6688f7baef19ff66e73d16c6ce49b0dc39aa3454ead8ad02d56f8951aa8f3af400c3e34c0bd54c268efad"
        );
        assert_eq!(ld.page_count(PageType::Zero), 1);
        assert_eq!(ld.bytes_measured(), 4096);
    }

    #[test]
    fn refuses_bad_pages() {
        let mut ld = LaunchDigest::new();
        assert_eq!(
            ld.update_page(PageType::Normal, 0x1001, Some(&[0; 4096])),
            Err(DigestError::UnalignedGpa(0x1001))
        );
        assert_eq!(
            ld.update_page(PageType::Normal, 0x1000, Some(&[0; 100])),
            Err(DigestError::BadContentsLength {
                page_type: PageType::Normal,
                len: 100
            })
        );
        assert!(ld
            .update_page(PageType::Vmsa, 0x1000, Some(&[0; 4096]))
            .is_err());
        assert_eq!(ld, LaunchDigest::new());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
