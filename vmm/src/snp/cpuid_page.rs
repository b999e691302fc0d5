//! The CPUID page an SNP guest gets (firmware ABI "CPUID page", SNP-FACTS §3.2): the
//! table of the leaves its boot vCPU sees, with the bits the firmware refuses cleared
//! beforehand, as QEMU and Cloud Hypervisor do (SNP-FACTS §2.2, §2.3). The firmware
//! checks it at LAUNCH_UPDATE; a bit it still refuses comes back corrected and the
//! launcher retries once.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Size of the XSAVE legacy area and header: EBX of leaf 0xD for XCR0 = x87.
const XSAVE_LEGACY_SIZE: u32 = 0x240;
/// Largest entry count the firmware accepts.
pub const MAX_ENTRIES: usize = 64;
const HEADER: usize = 16;
const ENTRY: usize = 48;

/// Bits cleared before the firmware sees them: (leaf, subleaf or any, register index
/// 0=EAX..3=EDX, mask).
const PRECLEAR: [(u32, Option<u32>, usize, u32); 5] = [
    (0x1, None, 2, 1 << 24),          // TSC-deadline timer
    (0x7, Some(0), 1, 1 << 1),        // TSC_ADJUST
    (0x7, Some(0), 3, 0xfc00_0000),   // SPEC_CTRL..SSBD
    (0x8000_0008, None, 1, 1 << 25),  // VIRT_SSBD
    (0x8000_0021, None, 2, u32::MAX), // reserved
];

/// The CPUID page for `entries` (KVM's CPUID of the boot vCPU). Entries past
/// [`MAX_ENTRIES`] are dropped, lowest leaves kept, with a warning.
pub fn cpuid_page(entries: &[kvm_cpuid_entry2]) -> [u8; 4096] {
    let mut sorted: Vec<&kvm_cpuid_entry2> =
        entries.iter().filter(|e| !is_empty_subleaf(e)).collect();
    sorted.sort_by_key(|e| (e.function, e.index));
    if sorted.len() > MAX_ENTRIES {
        let dropped: Vec<String> = sorted[MAX_ENTRIES..]
            .iter()
            .map(|e| format!("{:#x}.{}", e.function, e.index))
            .collect();
        log::warn!(
            "SEV-SNP CPUID page: {} leaves, the firmware takes {MAX_ENTRIES}; dropping {}",
            sorted.len(),
            dropped.join(" ")
        );
        sorted.truncate(MAX_ENTRIES);
    }
    let mut page = [0u8; 4096];
    page[0..4].copy_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (i, e) in sorted.iter().enumerate() {
        let at = HEADER + i * ENTRY;
        let subleaf = if e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 {
            e.index
        } else {
            0
        };
        let mut regs = [e.eax, e.ebx, e.ecx, e.edx];
        for (leaf, sub, reg, mask) in PRECLEAR {
            if leaf == e.function && sub.is_none_or(|s| s == subleaf) {
                regs[reg] &= !mask;
            }
        }
        // XSAVE leaves are checked against the XCR0 they are computed for: the table
        // describes the reset XCR0 (x87 only), whose XSAVE area is the 0x240-byte legacy
        // area plus header (as Cloud Hypervisor fills it); the guest computes larger
        // sizes itself from the component subleaves.
        let xcr0_in: u64 = if e.function == 0xd && subleaf <= 1 {
            regs[1] = XSAVE_LEGACY_SIZE;
            1
        } else {
            0
        };
        page[at..at + 4].copy_from_slice(&e.function.to_le_bytes());
        page[at + 4..at + 8].copy_from_slice(&subleaf.to_le_bytes());
        page[at + 8..at + 16].copy_from_slice(&xcr0_in.to_le_bytes());
        for (r, v) in regs.iter().enumerate() {
            page[at + 24 + 4 * r..at + 28 + 4 * r].copy_from_slice(&v.to_le_bytes());
        }
    }
    page
}

/// Entries that describe nothing: all four registers zero (KVM lists every leaf up to
/// the maximum, most of them zero on AMD), an XSAVE component (leaf 0xD, subleaf 2 and
/// up) of size 0, or a cache level (leaves 4 and 0x8000_001D) of type "null". A guest
/// reads zeroes for a leaf missing from the table, which is what these say; the range
/// maxima come from leaves 0, 0x4000_0000 and 0x8000_0000, which are kept.
fn is_empty_subleaf(e: &kvm_cpuid_entry2) -> bool {
    if matches!(e.function, 0 | 0x4000_0000 | 0x8000_0000) {
        return false;
    }
    if e.eax == 0 && e.ebx == 0 && e.ecx == 0 && e.edx == 0 {
        return true;
    }
    match e.function {
        0xd => e.index >= 2 && e.eax == 0,
        0x4 | 0x8000_001d => e.eax & 0x1f == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn layout_and_preclear() {
        let page = cpuid_page(&[
            entry(0x1, 0, (1 << 24) | 1),
            entry(0x0, 0, 7),
            entry(0x9, 0, 0),
        ]);
        assert_eq!(
            u32::from_le_bytes(page[0..4].try_into().unwrap_or_default()),
            2
        );
        // Sorted: leaf 0 first.
        assert_eq!(page[16..20], 0u32.to_le_bytes());
        assert_eq!(page[16 + 32..16 + 36], 7u32.to_le_bytes());
        // Leaf 1 ECX lost TSC-deadline, kept bit 0.
        assert_eq!(page[64..68], 1u32.to_le_bytes());
        assert_eq!(page[64 + 32..64 + 36], 1u32.to_le_bytes());
    }

    #[test]
    fn at_most_64_entries() {
        let many: Vec<_> = (0..100).map(|i| entry(0x4000_0000 + i, 0, 1)).collect();
        let page = cpuid_page(&many);
        assert_eq!(page[0..4], 64u32.to_le_bytes());
    }
}
