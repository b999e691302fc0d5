//! The CPUID page check of SNP_LAUNCH_UPDATE (page type CPUID).
//!
//! The page holds `struct snp_cpuid_table` (SNP-FACTS §3.2): COUNT u32 @0 (at most 64),
//! reserved u32 @4 and u64 @8, then 64 entries of 48 bytes from offset 16: EAX_IN, ECX_IN,
//! XCR0_IN (u64), XSS_IN (u64), EAX, EBX, ECX, EDX, reserved u64.
//!
//! AMD's firmware checks each entry against what the platform can honour; when one is not
//! acceptable it rewrites the page with the values it would accept and fails the command
//! with INVALID_PARAM, so the host can retry with the corrected page. The simulated
//! platform's rules ([`RULES`] plus the structural ones below) are the bits and fields the
//! peers pre-clear because the firmware refuses them (Cloud Hypervisor's and QEMU's CPUID
//! filters, SNP-FACTS §2.2-2.3):
//!
//! * COUNT above 64: refused with INVALID_PARAM, the page is left as it is (there is no
//!   table to correct).
//! * The header's reserved fields and each entry's reserved field must be zero.
//! * Leaf 0x1 ECX bit 24 (TSC deadline timer) must be clear.
//! * Leaf 0x7 subleaf 0: EBX bit 1 (TSC_ADJUST) and EDX bits 31:26 (SPEC_CTRL, STIBP,
//!   FLUSH_L1D, ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD: Intel's enumeration) clear.
//! * Leaf 0x8000_0008 EBX bit 25 (VIRT_SSBD) clear.
//! * Leaf 0x8000_0021 ECX zero.
//! * Leaf 0xD subleaves 0 and 1: EBX must be the XSAVE area size of the entry's XCR0_IN
//!   (subleaf 1: XCR0_IN | XSS_IN) in the standard format, for the simulated platform's
//!   XSAVE components (x87/SSE 0x240 bytes, AVX, AVX-512 opmask/ZMM_Hi256/Hi16_ZMM, PKRU).
//!
//! Entries past COUNT are not read. Leaves without a rule are accepted as given.

use crate::launch::digest::PAGE_SIZE;

/// Most entries a CPUID page may hold (`SNP_CPUID_COUNT_MAX`).
pub const CPUID_COUNT_MAX: u32 = 64;
/// Offset of the first entry.
const ENTRIES: usize = 16;
/// Size of one entry.
const ENTRY_SIZE: usize = 48;

/// Which register of an entry a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// EAX (entry offset 24).
    Eax,
    /// EBX (entry offset 28).
    Ebx,
    /// ECX (entry offset 32).
    Ecx,
    /// EDX (entry offset 36).
    Edx,
}

impl Register {
    fn offset(self) -> usize {
        match self {
            Self::Eax => 24,
            Self::Ebx => 28,
            Self::Ecx => 32,
            Self::Edx => 36,
        }
    }
}

/// One rule: in entries of `leaf` (and `subleaf`, when given), the bits of `forbidden`
/// must be clear in `register`. The corrected page clears them.
#[derive(Debug, Clone, Copy)]
pub struct CpuidRule {
    /// EAX_IN.
    pub leaf: u32,
    /// ECX_IN, or `None` for every subleaf.
    pub subleaf: Option<u32>,
    /// The register.
    pub register: Register,
    /// Bits the simulated firmware refuses.
    pub forbidden: u32,
    /// What the bits are.
    pub what: &'static str,
}

/// The bit rules of the simulated firmware.
pub const RULES: [CpuidRule; 5] = [
    CpuidRule {
        leaf: 0x1,
        subleaf: None,
        register: Register::Ecx,
        forbidden: 1 << 24,
        what: "TSC deadline timer",
    },
    CpuidRule {
        leaf: 0x7,
        subleaf: Some(0),
        register: Register::Ebx,
        forbidden: 1 << 1,
        what: "TSC_ADJUST",
    },
    CpuidRule {
        leaf: 0x7,
        subleaf: Some(0),
        register: Register::Edx,
        forbidden: 0xFC00_0000,
        what: "SPEC_CTRL, STIBP, FLUSH_L1D, ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD",
    },
    CpuidRule {
        leaf: 0x8000_0008,
        subleaf: None,
        register: Register::Ebx,
        forbidden: 1 << 25,
        what: "VIRT_SSBD",
    },
    CpuidRule {
        leaf: 0x8000_0021,
        subleaf: None,
        register: Register::Ecx,
        forbidden: u32::MAX,
        what: "reserved",
    },
];

/// The simulated platform's XSAVE components above the legacy area: (XCR0/XSS bit, offset
/// in the standard format, size).
const XSAVE_COMPONENTS: [(u32, u32, u32); 5] = [
    (2, 0x240, 0x100), // AVX (YMM upper halves)
    (5, 0x340, 0x40),  // AVX-512 opmask
    (6, 0x380, 0x200), // ZMM_Hi256
    (7, 0x580, 0x400), // Hi16_ZMM
    (9, 0x980, 0x8),   // PKRU
];

/// XSAVE area size (standard format) for the components enabled in `mask`.
fn xsave_size(mask: u64) -> u32 {
    XSAVE_COMPONENTS
        .iter()
        .filter(|(bit, ..)| mask & (1u64 << bit) != 0)
        .map(|(_, offset, size)| offset + size)
        .fold(0x240, u32::max)
}

/// Why a CPUID page was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CpuidRejection {
    /// COUNT is above 64; nothing was corrected.
    CountTooLarge(u32),
    /// Entries break the rules; the page holds the corrected table.
    Corrected(Vec<String>),
}

fn u32_at(page: &[u8; PAGE_SIZE], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = page.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

fn u64_at(page: &[u8; PAGE_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = page.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

fn put(page: &mut [u8; PAGE_SIZE], at: usize, bytes: &[u8]) {
    if let Some(dst) = page.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// Checks a CPUID page; on a bad entry rewrites `page` with the corrected table.
pub(super) fn check_and_correct(page: &mut [u8; PAGE_SIZE]) -> Result<(), CpuidRejection> {
    let count = u32_at(page, 0);
    if count > CPUID_COUNT_MAX {
        return Err(CpuidRejection::CountTooLarge(count));
    }
    let mut problems = Vec::new();
    if u32_at(page, 4) != 0 || u64_at(page, 8) != 0 {
        problems.push("header reserved fields are not zero".to_string());
        put(page, 4, &[0; 12]);
    }
    for i in 0..count as usize {
        let at = ENTRIES + i * ENTRY_SIZE;
        let leaf = u32_at(page, at);
        let subleaf = u32_at(page, at + 4);
        if u64_at(page, at + 40) != 0 {
            problems.push(format!(
                "entry {i} (leaf {leaf:#x}.{subleaf}): reserved field not zero"
            ));
            put(page, at + 40, &[0; 8]);
        }
        for rule in RULES
            .iter()
            .filter(|r| r.leaf == leaf && r.subleaf.is_none_or(|s| s == subleaf))
        {
            let reg_at = at + rule.register.offset();
            let value = u32_at(page, reg_at);
            if value & rule.forbidden != 0 {
                problems.push(format!(
                    "entry {i} (leaf {leaf:#x}.{subleaf}) {:?} {value:#010x}: {} not allowed",
                    rule.register, rule.what
                ));
                put(page, reg_at, &(value & !rule.forbidden).to_le_bytes());
            }
        }
        if leaf == 0xD && subleaf <= 1 {
            let xcr0 = u64_at(page, at + 8);
            let xss = u64_at(page, at + 16);
            let mask = if subleaf == 1 { xcr0 | xss } else { xcr0 };
            let want = xsave_size(mask);
            let ebx_at = at + Register::Ebx.offset();
            let ebx = u32_at(page, ebx_at);
            if ebx != want {
                problems.push(format!(
                    "entry {i} (leaf 0xd.{subleaf}): EBX {ebx:#x} is not the XSAVE size {want:#x} of XCR0_IN {xcr0:#x}"
                ));
                put(page, ebx_at, &want.to_le_bytes());
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CpuidRejection::Corrected(problems))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    fn page(entries: &[(u32, u32, u64, [u32; 4])]) -> [u8; PAGE_SIZE] {
        let mut p = [0u8; PAGE_SIZE];
        put(&mut p, 0, &(entries.len() as u32).to_le_bytes());
        for (i, (leaf, sub, xcr0, regs)) in entries.iter().enumerate() {
            let at = ENTRIES + i * ENTRY_SIZE;
            put(&mut p, at, &leaf.to_le_bytes());
            put(&mut p, at + 4, &sub.to_le_bytes());
            put(&mut p, at + 8, &xcr0.to_le_bytes());
            for (j, r) in regs.iter().enumerate() {
                put(&mut p, at + 24 + 4 * j, &r.to_le_bytes());
            }
        }
        p
    }

    #[test]
    fn table_layout() {
        // 64 entries of 48 bytes after a 16-byte header fit the page (3088 bytes).
        assert_eq!(ENTRIES + CPUID_COUNT_MAX as usize * ENTRY_SIZE, 3088);
    }

    #[test]
    fn clean_table_is_accepted_unchanged() {
        let mut p = page(&[
            (0x0, 0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            (0x1, 0, 0, [0x00a1_0f11, 0, 0x7ef8_3203, 0x178b_fbff]),
            (0xD, 0, 0x7, [0x2e7, 0x340, 0x988, 0]),
            (0xD, 1, 0x1, [0xf, 0x240, 0, 0]),
        ]);
        let before = p;
        assert_eq!(check_and_correct(&mut p), Ok(()));
        assert_eq!(p, before);
    }

    #[test]
    fn bad_entries_are_corrected() {
        let mut p = page(&[
            (
                0x1,
                0,
                0,
                [0x00a1_0f11, 0, 0xfef8_3203 | 1 << 24, 0x178b_fbff],
            ),
            (0x7, 0, 0, [0, 0xf1bf_07ab, 0, 0xbc00_0410]),
            (0x7, 1, 0, [0, 0x2, 0, 0xbc00_0000]), // subleaf 1: no rule
            (0x8000_0008, 0, 0, [0x3030, 1 << 25 | 1, 0, 0]),
            (0x8000_0021, 0, 0, [0x45, 0, 0x7, 0]),
            (0xD, 0, 0x7, [0x7, 0x240, 0x988, 0]),
        ]);
        let Err(CpuidRejection::Corrected(problems)) = check_and_correct(&mut p) else {
            panic!("accepted a bad table");
        };
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert_eq!(u32_at(&p, ENTRIES + 32) & (1 << 24), 0);
        assert_eq!(u32_at(&p, ENTRIES + 48 + 28), 0xf1bf_07a9);
        assert_eq!(u32_at(&p, ENTRIES + 48 + 36), 0x0000_0410);
        assert_eq!(u32_at(&p, ENTRIES + 96 + 36), 0xbc00_0000);
        assert_eq!(u32_at(&p, ENTRIES + 144 + 28), 1);
        assert_eq!(u32_at(&p, ENTRIES + 192 + 32), 0);
        assert_eq!(u32_at(&p, ENTRIES + 240 + 28), 0x340);
        // The corrected page passes.
        assert_eq!(check_and_correct(&mut p), Ok(()));
    }

    #[test]
    fn count_above_64_is_refused_without_change() {
        let mut p = [0u8; PAGE_SIZE];
        put(&mut p, 0, &65u32.to_le_bytes());
        put(&mut p, ENTRIES + 32, &(1u32 << 24).to_le_bytes());
        let before = p;
        assert_eq!(
            check_and_correct(&mut p),
            Err(CpuidRejection::CountTooLarge(65))
        );
        assert_eq!(p, before);
        put(&mut p, 0, &u32::MAX.to_le_bytes());
        assert!(check_and_correct(&mut p).is_err());
    }

    #[test]
    fn xsave_sizes() {
        assert_eq!(xsave_size(0x1), 0x240);
        assert_eq!(xsave_size(0x3), 0x240);
        assert_eq!(xsave_size(0x7), 0x340);
        assert_eq!(xsave_size(0xE7), 0x980);
        assert_eq!(xsave_size(0x2E7), 0x988);
        assert_eq!(xsave_size(1 << 40), 0x240);
    }
}
