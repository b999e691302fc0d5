//! Builds synthetic OVMF-shaped images: filler bytes, then an "ASEV" metadata block and a
//! footer GUID table in front of a 32-byte reset vector, laid out as edk2 does. For tests,
//! fuzzing and benchmarks that need firmware with chosen metadata (Debian's OVMF has no
//! kernel-hashes section, for example). Not a bootable firmware.

use crate::footer::RESET_VECTOR_TAIL;
use crate::guid::{
    Guid, OVMF_SEV_METADATA, OVMF_TABLE_FOOTER, SEV_ES_RESET_BLOCK, SEV_HASH_TABLE_RV,
    SEV_SECRET_BLOCK,
};
use crate::ovmf::GpaRange;
use crate::sev_metadata::{self, SectionKind, SevMetadataSection};

/// What to put into a synthetic image.
#[derive(Debug, Clone, Default)]
pub struct SyntheticOvmf {
    /// Total image size in bytes (a multiple of 4096 for a valid image).
    pub size: usize,
    /// Seed for the pseudo-random filler, so different images measure differently.
    pub seed: u64,
    /// AP reset address for the SEV-ES reset block; `None` omits the entry.
    pub sev_es_reset_eip: Option<u32>,
    /// SEV hashes table location; `None` omits the entry.
    pub sev_hashes_table: Option<GpaRange>,
    /// SEV secret block; `None` omits the entry.
    pub sev_secret_block: Option<GpaRange>,
    /// SEV metadata sections; `None` omits the metadata entry.
    pub sections: Option<Vec<SevMetadataSection>>,
}

fn section(gpa: u32, size: u32, kind: SectionKind) -> SevMetadataSection {
    SevMetadataSection { gpa, size, kind }
}

impl SyntheticOvmf {
    /// The smallest layout QEMU can launch as an SNP guest with measured direct boot: SEC
    /// memory, secrets, CPUID and kernel-hashes pages below 8 MiB + 64 KiB, the hashes table
    /// at the end of its page, the secret block and the SEV-ES reset block, in an image of
    /// `size` bytes filled from `seed`.
    pub fn amd_sev_minimal(size: usize, seed: u64) -> Self {
        Self {
            size,
            seed,
            sev_es_reset_eip: Some(0x80_b004),
            sev_hashes_table: Some(GpaRange {
                gpa: 0x80_fc00,
                size: 0x400,
            }),
            sev_secret_block: Some(GpaRange {
                gpa: 0x80_d000,
                size: 0x1000,
            }),
            sections: Some(vec![
                section(0x80_0000, 0x9000, SectionKind::SecMemory),
                section(0x80_d000, 0x1000, SectionKind::Secrets),
                section(0x80_e000, 0x1000, SectionKind::Cpuid),
                section(0x80_f000, 0x1000, SectionKind::KernelHashes),
            ]),
        }
    }

    /// The layout of OVMF's AmdSev package (as QEMU's SNP guests see it):
    /// [`Self::amd_sev_minimal`] plus the SEC memory OVMF adds between the first section
    /// and the secrets page and above the kernel-hashes page.
    pub fn amd_sev_like(size: usize, seed: u64) -> Self {
        let mut ovmf = Self::amd_sev_minimal(size, seed);
        if let Some(sections) = ovmf.sections.as_mut() {
            sections.insert(1, section(0x80_a000, 0x3000, SectionKind::SecMemory));
            sections.push(section(0x81_0000, 0x10000, SectionKind::SecMemory));
        }
        ovmf
    }

    /// Builds the image bytes. Returns `None` if `size` cannot hold the tables.
    pub fn build(&self) -> Option<Vec<u8>> {
        let mut image = vec![0u8; self.size];
        let mut state = self.seed ^ 0x9e37_79b9_7f4a_7c15;
        for chunk in image.chunks_mut(8) {
            // xorshift64*: cheap deterministic filler.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let mut entries: Vec<(Guid, Vec<u8>)> = Vec::new();
        if let Some(eip) = self.sev_es_reset_eip {
            entries.push((SEV_ES_RESET_BLOCK, eip.to_le_bytes().to_vec()));
        }
        for (guid, r) in [
            (SEV_HASH_TABLE_RV, self.sev_hashes_table),
            (SEV_SECRET_BLOCK, self.sev_secret_block),
        ] {
            if let Some(r) = r {
                let mut d = r.gpa.to_le_bytes().to_vec();
                d.extend_from_slice(&r.size.to_le_bytes());
                entries.push((guid, d));
            }
        }
        // Table: entries (each data, u16 size, GUID), then the footer entry, then the tail.
        let metadata_len = self
            .sections
            .as_ref()
            .map(|s| 16 + 12 * s.len())
            .unwrap_or(0);
        let table_len: usize = entries.iter().map(|(_, d)| d.len() + 18).sum::<usize>()
            + if self.sections.is_some() { 4 + 18 } else { 0 }
            + 18;
        let table_start = self.size.checked_sub(RESET_VECTOR_TAIL + table_len)?;
        // Place the metadata block 64 bytes before the table, 16-byte aligned.
        let metadata_start = table_start.checked_sub(metadata_len + 64)? & !15;
        if let Some(sections) = &self.sections {
            let block = sev_metadata::encode(sections);
            image[metadata_start..metadata_start + block.len()].copy_from_slice(&block);
            let offset = u32::try_from(self.size - metadata_start).ok()?;
            entries.push((OVMF_SEV_METADATA, offset.to_le_bytes().to_vec()));
        }
        let mut table = Vec::with_capacity(table_len);
        for (guid, data) in &entries {
            table.extend_from_slice(data);
            table.extend_from_slice(&u16::try_from(data.len() + 18).ok()?.to_le_bytes());
            table.extend_from_slice(guid.as_bytes());
        }
        table.extend_from_slice(&u16::try_from(table_len).ok()?.to_le_bytes());
        table.extend_from_slice(OVMF_TABLE_FOOTER.as_bytes());
        image[table_start..table_start + table.len()].copy_from_slice(&table);
        Some(image)
    }
}
