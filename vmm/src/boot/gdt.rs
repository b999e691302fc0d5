//! The boot GDT and the segment registers derived from it (Intel SDM Vol. 3, 3.4.5).
//!
//! The Linux boot protocol expects `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18; the 64-bit
//! entry runs with a flat 64-bit code segment and flat data segments.

use kvm_bindings::kvm_segment;

/// Selector of the 64-bit code segment.
pub const BOOT_CS: u16 = 0x10;
/// Selector of the data segment.
pub const BOOT_DS: u16 = 0x18;
/// Selector of the task-state segment.
pub const BOOT_TSS: u16 = 0x20;

/// Flags (access byte in bits 0..8, G/DB/L/AVL in bits 12..16) of the code segment:
/// present, ring 0, code execute/read accessed, 64-bit (L), 4 KiB granularity.
const CODE64_FLAGS: u16 = 0xa09b;
/// Data segment: present, ring 0, read/write accessed, 32-bit default size, 4 KiB pages.
const DATA_FLAGS: u16 = 0xc093;
/// TSS: present, 64-bit busy TSS, 4 KiB granularity.
const TSS_FLAGS: u16 = 0x808b;

/// Encodes one GDT descriptor.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, null, code (0x10), data (0x18), TSS (0x20).
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(CODE64_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff)) as u32;
    // With 4 KiB granularity the limit counts pages.
    if (entry >> 55) & 1 == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The KVM segment register value for GDT entry `entry` at selector `selector`.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: u8::from(bit(47) == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encodes_flat_segments() {
        let gdt = boot_gdt();
        assert_eq!(gdt[2], 0x00af_9b00_0000_ffff);
        assert_eq!(gdt[3], 0x00cf_9300_0000_ffff);
        assert_eq!(gdt[4], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn decodes_code_segment_as_64_bit_ring_0() {
        let cs = segment_from_gdt(boot_gdt()[2], BOOT_CS);
        assert_eq!(cs.selector, 0x10);
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        assert_eq!(
            (cs.type_, cs.present, cs.dpl, cs.s, cs.l, cs.db, cs.g),
            (0xb, 1, 0, 1, 1, 0, 1)
        );
        assert_eq!(cs.unusable, 0);
        let ds = segment_from_gdt(boot_gdt()[3], BOOT_DS);
        assert_eq!((ds.type_, ds.db, ds.l, ds.s), (3, 1, 0, 1));
        let tss = segment_from_gdt(boot_gdt()[4], BOOT_TSS);
        assert_eq!(
            (tss.type_, tss.s, tss.g, tss.limit),
            (0xb, 0, 1, 0xffff_ffff)
        );
    }

    #[test]
    fn round_trips_base_and_limit() {
        let e = gdt_entry(0x4092, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 8);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
    }
}
