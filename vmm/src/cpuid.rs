//! The CPUID a vCPU sees: KVM's supported set, adjusted per vCPU the way Firecracker
//! does — the vCPU's APIC ID and the topology (one thread per core, one socket), the
//! hypervisor bit, and features this monitor cannot provide masked off.
//!
//! Works on plain `kvm_cpuid_entry2` slices so it is unit-testable without KVM.

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};

/// Where one vCPU sits in the guest's topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuTopology {
    /// Index of the vCPU, also its (x2)APIC ID.
    pub index: u8,
    /// Number of vCPUs in the guest.
    pub count: u8,
    /// Whether KVM emulates the LAPIC TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER);
    /// KVM leaves the bit out of its supported set because it is emulated.
    pub tsc_deadline: bool,
}

/// CPU vendor, from leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD" (or "HygonGenuine").
    Amd,
    /// Anything else.
    Other,
}

mod leaf1 {
    pub mod ecx {
        pub const DTES64: u32 = 1 << 2;
        pub const MONITOR: u32 = 1 << 3;
        pub const DS_CPL: u32 = 1 << 4;
        pub const VMX: u32 = 1 << 5;
        pub const SMX: u32 = 1 << 6;
        pub const EST: u32 = 1 << 7;
        pub const TM2: u32 = 1 << 8;
        pub const XTPR: u32 = 1 << 14;
        pub const PDCM: u32 = 1 << 15;
        pub const TSC_DEADLINE: u32 = 1 << 24;
        pub const HYPERVISOR: u32 = 1 << 31;
    }
    pub mod edx {
        pub const DS: u32 = 1 << 21;
        pub const ACPI: u32 = 1 << 22;
        pub const HTT: u32 = 1 << 28;
        pub const TM: u32 = 1 << 29;
        pub const PBE: u32 = 1 << 31;
    }
}

/// Leaf 0x8000_0001 ECX: SVM (no nested virtualization offered).
const EXT1_ECX_SVM: u32 = 1 << 2;
/// Leaf 0x8000_0001 ECX: CmpLegacy (set when there is more than one core).
const EXT1_ECX_CMP_LEGACY: u32 = 1 << 1;

/// Leaf 0xB / 0x1F level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// The vendor named by leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(leaf0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    id[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `count` items (ceil(log2(count))).
fn id_bits(count: u8) -> u32 {
    match count {
        0 | 1 => 0,
        n => u32::BITS - (u32::from(n) - 1).leading_zeros(),
    }
}

/// Adjusts KVM's supported CPUID for the vCPU `topo`.
pub fn filter_cpuid(entries: &mut Vec<kvm_cpuid_entry2>, topo: VcpuTopology) {
    let vendor = vendor(entries);
    let apic_id = u32::from(topo.index);
    let count = u32::from(topo.count.max(1));
    let max_basic = entries
        .iter()
        .find(|e| e.function == 0)
        .map_or(0, |e| e.eax);

    // Replace the extended-topology leaves with our own: one thread per core, every
    // vCPU a core of a single socket.
    let had_0xb = entries.iter().any(|e| e.function == 0xb);
    entries.retain(|e| e.function != 0xb && e.function != 0x1f);
    if had_0xb || max_basic >= 0xb {
        let core_shift = id_bits(topo.count);
        let levels = [
            (0u32, 0u32, 1u32, LEVEL_TYPE_SMT),
            (1, core_shift, count, LEVEL_TYPE_CORE),
            (2, 0, 0, 0),
        ];
        for (index, shift, logical, kind) in levels {
            entries.push(kvm_cpuid_entry2 {
                function: 0xb,
                index,
                flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                eax: shift,
                ebx: logical,
                ecx: (kind << 8) | index,
                edx: apic_id,
                ..Default::default()
            });
        }
    }

    for entry in entries.iter_mut() {
        match entry.function {
            0x1 => {
                // EBX: brand index | CLFLUSH size (8 x 8 bytes) | logical count | APIC ID.
                entry.ebx =
                    (entry.ebx & 0xff) | (8 << 8) | ((count & 0xff) << 16) | (apic_id << 24);
                entry.ecx |= leaf1::ecx::HYPERVISOR;
                if topo.tsc_deadline {
                    entry.ecx |= leaf1::ecx::TSC_DEADLINE;
                }
                entry.ecx &= !(leaf1::ecx::DTES64
                    | leaf1::ecx::MONITOR
                    | leaf1::ecx::DS_CPL
                    | leaf1::ecx::VMX
                    | leaf1::ecx::SMX
                    | leaf1::ecx::EST
                    | leaf1::ecx::TM2
                    | leaf1::ecx::XTPR
                    | leaf1::ecx::PDCM);
                entry.edx &=
                    !(leaf1::edx::DS | leaf1::edx::ACPI | leaf1::edx::TM | leaf1::edx::PBE);
                if count > 1 {
                    entry.edx |= leaf1::edx::HTT;
                } else {
                    entry.edx &= !leaf1::edx::HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                // Deterministic cache parameters: cores per package, and each cache shared
                // by one thread (L1/L2) or by the whole package (L3).
                let cache_level = (entry.eax >> 5) & 0x7;
                let sharing = if cache_level >= 3 { count - 1 } else { 0 };
                entry.eax =
                    (entry.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0x6 => {
                // Thermal and power management: nothing but ARAT (always-running APIC timer).
                entry.eax &= 1 << 2;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            0xa => {
                // No virtual PMU.
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            0x8000_0001 => {
                entry.ecx &= !EXT1_ECX_SVM;
                if vendor == Vendor::Amd && count > 1 {
                    entry.ecx |= EXT1_ECX_CMP_LEGACY;
                } else {
                    entry.ecx &= !EXT1_ECX_CMP_LEGACY;
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // NC (cores - 1) and ApicIdCoreIdSize.
                entry.ecx =
                    (entry.ecx & !0xf0ff) | ((count - 1) & 0xff) | (id_bits(topo.count) << 12);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                // Extended APIC ID, core ID (one thread per core), node 0.
                entry.eax = apic_id;
                entry.ebx = apic_id & 0xff;
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }
}

/// The last extended leaf a guest that is not an SEV guest may see.
pub const MAX_EXTENDED_LEAF_WITHOUT_SEV: u32 = 0x8000_001e;

/// Hides the SEV leaf (0x8000_001F) and the extended leaves above it, lowering the
/// extended maximum (leaf 0x8000_0000 EAX) to match. For a guest that runs as a plain
/// KVM guest but is handed SNP's CC blob (the simulated platform): Linux ignores the blob
/// only when CPUID has no SEV leaf at all, and stops ("SEV-SNP support indicated by CC
/// blob, but not CPUID") when the leaf exists without SNP active.
pub fn hide_sev_leaves(entries: &mut Vec<kvm_cpuid_entry2>) {
    entries.retain(|e| !(e.function > MAX_EXTENDED_LEAF_WITHOUT_SEV && e.function <= 0x8000_ffff));
    for e in entries.iter_mut().filter(|e| e.function == 0x8000_0000) {
        e.eax = e.eax.min(MAX_EXTENDED_LEAF_WITHOUT_SEV);
    }
}

#[cfg(test)]
mod tests {

    #![allow(clippy::panic)]
    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn vendor_leaf(id: &[u8; 12], max: u32) -> kvm_cpuid_entry2 {
        let r = |i: usize| u32::from_le_bytes([id[i], id[i + 1], id[i + 2], id[i + 3]]);
        leaf(0, 0, [max, r(0), r(8), r(4)])
    }

    fn host(vendor: &[u8; 12]) -> Vec<kvm_cpuid_entry2> {
        vec![
            vendor_leaf(vendor, 0xd),
            leaf(
                1,
                0,
                [0x00a2_0f10, 0x0f_10_08_00 | 0x3f << 24, u32::MAX, u32::MAX],
            ),
            leaf(4, 0, [0x121, 0, 0, 0]),
            leaf(4, 3, [0x163, 0, 0, 0]),
            leaf(6, 0, [0x7, 1, 1, 1]),
            leaf(0xa, 0, [0x0803_0805, 0, 0, 0x603]),
            leaf(0xb, 0, [1, 2, 0x100, 9]),
            leaf(0x8000_0001, 0, [0, 0, u32::MAX, 0]),
            leaf(0x8000_0008, 0, [0x3030, 0, 0xffff_ffff, 0]),
            leaf(0x8000_001e, 0, [9, 9, 9, 9]),
        ]
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    #[test]
    fn detects_vendor() {
        assert_eq!(vendor(&host(b"AuthenticAMD")), Vendor::Amd);
        assert_eq!(vendor(&host(b"GenuineIntel")), Vendor::Intel);
        assert_eq!(vendor(&host(b"SomethingNew")), Vendor::Other);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = host(b"AuthenticAMD");
        filter_cpuid(
            &mut e,
            VcpuTopology {
                index: 3,
                count: 4,
                tsc_deadline: true,
            },
        );
        let l1 = find(&e, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!((l1.ebx >> 8) & 0xff, 8);
        assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(l1.ecx & (1 << 5), 0, "VMX masked");
        assert_eq!(l1.ecx & (1 << 3), 0, "MONITOR masked");
        assert_ne!(l1.edx & (1 << 28), 0, "HTT with 4 vCPUs");
        assert_ne!(l1.ecx & (1 << 24), 0, "TSC deadline offered");
        assert_eq!(l1.eax, 0x00a2_0f10, "signature untouched");

        let mut single = host(b"AuthenticAMD");
        filter_cpuid(
            &mut single,
            VcpuTopology {
                index: 0,
                count: 1,
                tsc_deadline: false,
            },
        );
        assert_eq!(find(&single, 1, 0).edx & (1 << 28), 0);
        assert_ne!(
            find(&single, 1, 0).ecx & (1 << 24),
            0,
            "host bit kept as KVM gave it"
        );
        assert_eq!(
            find(&single, 0x8000_0001, 0).ecx & 0b110,
            0,
            "no SVM, no CmpLegacy"
        );
    }

    #[test]
    fn extended_topology_is_rebuilt_per_vcpu() {
        let mut e = host(b"GenuineIntel");
        filter_cpuid(
            &mut e,
            VcpuTopology {
                index: 5,
                count: 6,
                tsc_deadline: false,
            },
        );
        let levels: Vec<_> = e.iter().filter(|l| l.function == 0xb).collect();
        assert_eq!(levels.len(), 3);
        let smt = find(&e, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 5));
        let core = find(&e, 0xb, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.ecx & 0xff, core.edx),
            (3, 6, 2, 1, 5)
        );
        let invalid = find(&e, 0xb, 2);
        assert_eq!((invalid.ebx, invalid.ecx, invalid.edx), (0, 2, 5));
        assert!(levels
            .iter()
            .all(|l| l.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0));
    }

    #[test]
    fn intel_cache_leaf_reports_cores() {
        let mut e = host(b"GenuineIntel");
        filter_cpuid(
            &mut e,
            VcpuTopology {
                index: 0,
                count: 4,
                tsc_deadline: false,
            },
        );
        let l1d = find(&e, 4, 0);
        assert_eq!(l1d.eax >> 26, 3);
        assert_eq!((l1d.eax >> 14) & 0xfff, 0);
        assert_eq!(l1d.eax & 0x3fff, 0x121);
        let l3 = find(&e, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 3);
    }

    #[test]
    fn amd_leaves_report_cores_and_apic_ids() {
        let mut e = host(b"AuthenticAMD");
        filter_cpuid(
            &mut e,
            VcpuTopology {
                index: 2,
                count: 3,
                tsc_deadline: false,
            },
        );
        let l8 = find(&e, 0x8000_0008, 0);
        assert_eq!(l8.ecx & 0xff, 2);
        assert_eq!((l8.ecx >> 12) & 0xf, 2);
        assert_eq!(l8.ecx & 0xffff_0000, 0xffff_0000, "other bits kept");
        assert_eq!(find(&e, 0x8000_001e, 0).eax, 2);
        assert_ne!(find(&e, 0x8000_0001, 0).ecx & (1 << 1), 0, "CmpLegacy");
    }

    #[test]
    fn no_pmu_and_no_power_management() {
        let mut e = host(b"GenuineIntel");
        filter_cpuid(
            &mut e,
            VcpuTopology {
                index: 0,
                count: 1,
                tsc_deadline: false,
            },
        );
        let pmu = find(&e, 0xa, 0);
        assert_eq!((pmu.eax, pmu.edx), (0, 0));
        let pm = find(&e, 6, 0);
        assert_eq!((pm.eax, pm.ebx, pm.ecx), (0x4, 0, 0));
    }

    #[test]
    fn id_bits_is_ceil_log2() {
        assert_eq!(
            [1u8, 2, 3, 4, 5, 8, 9, 254].map(id_bits),
            [0, 1, 2, 2, 3, 3, 4, 8]
        );
    }

    #[test]
    fn sev_leaves_are_hidden_and_the_maximum_lowered() {
        let leaf = |function, eax| kvm_cpuid_entry2 {
            function,
            eax,
            ..Default::default()
        };
        let mut entries = vec![
            leaf(0x8000_0000, 0x8000_0021),
            leaf(0x8000_001e, 1),
            leaf(0x8000_001f, 0x1_000f),
            leaf(0x8000_0021, 1),
            leaf(0x4000_0000, 0x4000_0001),
        ];
        hide_sev_leaves(&mut entries);
        let functions: Vec<u32> = entries.iter().map(|e| e.function).collect();
        assert_eq!(functions, [0x8000_0000, 0x8000_001e, 0x4000_0000]);
        assert_eq!(entries[0].eax, 0x8000_001e);
    }
}
