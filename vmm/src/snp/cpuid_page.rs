//! The CPUID page an SNP guest gets (firmware ABI "CPUID page", SNP-FACTS §3.2): the
//! table of the leaves its boot vCPU sees, with the bits the firmware refuses cleared
//! beforehand, as QEMU and Cloud Hypervisor do (SNP-FACTS §2.2, §2.3). The firmware
//! checks it at LAUNCH_UPDATE; a bit it still refuses comes back corrected and the
//! launcher retries once.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

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
    let mut sorted: Vec<&kvm_cpuid_entry2> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.function, e.index));
    if sorted.len() > MAX_ENTRIES {
        log::warn!(
            "SEV-SNP CPUID page: {} leaves, the firmware takes {MAX_ENTRIES}; dropping the rest",
            sorted.len()
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
        // XSAVE leaves are checked against the XCR0 they are computed for.
        let xcr0_in: u64 = if e.function == 0xd && subleaf <= 1 {
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
        let page = cpuid_page(&[entry(0x1, 0, (1 << 24) | 1), entry(0x0, 0, 7)]);
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
        let many: Vec<_> = (0..100).map(|i| entry(0x4000_0000 + i, 0, 0)).collect();
        let page = cpuid_page(&many);
        assert_eq!(page[0..4], 64u32.to_le_bytes());
    }
}
