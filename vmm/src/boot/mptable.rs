//! The Intel MultiProcessor Specification 1.4 tables (chapter 4): an MP floating pointer
//! and an MP configuration table listing every vCPU, the ISA bus, the IOAPIC and the
//! interrupt routing, so a guest finds its CPUs without ACPI.
//!
//! The floating pointer sits at the start of the EBDA (0x9fc00), where Linux searches
//! for it; the configuration table follows it and may run past 0xa0000 for large vCPU
//! counts, all inside the range the e820 map reserves.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{
    below_4g, ioapic_id, APIC_START, EBDA_START, IOAPIC_START, IRQ_MAX, MAX_CPUS, PIT_GSI,
};
use crate::memory::GuestMemoryMmap;

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// CPUID signature: family 6.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX feature flags: FPU and APIC.
const CPU_FEATURES: u32 = 0x201;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// The tables' 32-bit fields for the APIC addresses and the one-byte IOAPIC pin numbers
/// (checked when compiling).
const APIC_ADDR: u32 = below_4g(APIC_START);
const IOAPIC_ADDR: u32 = below_4g(IOAPIC_START);
const IOAPIC_LAST_PIN: u8 = {
    assert!(IRQ_MAX <= u8::MAX as u32);
    IRQ_MAX as u8
};
const PIT_PIN: u8 = {
    assert!(PIT_GSI <= IRQ_MAX);
    PIT_GSI as u8
};

/// Errors while building the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// The vCPU count is 0 or above [`MAX_CPUS`].
    #[error("the MP table can list 1 to {MAX_CPUS} vCPUs, not {0}")]
    CpuCount(u8),
    /// Guest memory does not hold the table.
    #[error("cannot write the MP table into guest memory: {0}")]
    Write(#[from] GuestMemoryError),
}

/// The byte that makes `bytes` and itself sum to zero (MP specification 4.1 and 4.2):
/// the rule ACPI tables follow too, so the ACPI crate's implementation serves both.
fn checksum(bytes: &[u8]) -> u8 {
    let mut sum = acpi_tables::Checksum::default();
    sum.append(bytes);
    sum.value()
}

/// The floating pointer followed by the configuration table, as placed at `base`.
pub fn mptable_bytes(num_cpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(MpTableError::CpuCount(num_cpus));
    }
    let ioapic_id = ioapic_id(num_cpus);
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION]);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    let mut io_interrupt = |kind: u8, src_irq: u8, pin: u8| {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, kind, 0, 0, 0, src_irq, ioapic_id, pin]);
        count += 1;
    };
    // The 8259 cascade on pin 0, the PIT (ISA IRQ 0) on its pin as KVM wires it, then
    // every other interrupt on its own pin, up to the IOAPIC's last.
    io_interrupt(INT_EXTINT, 0, 0);
    io_interrupt(INT_VECTORED, 0, PIT_PIN);
    for irq in (1..=IOAPIC_LAST_PIN).filter(|&irq| irq != PIT_PIN) {
        io_interrupt(INT_VECTORED, irq, irq);
    }
    for (kind, lint) in [(INT_EXTINT, 0u8), (INT_NMI, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    let table_len =
        u16::try_from(44 + entries.len()).map_err(|_| MpTableError::CpuCount(num_cpus))?;
    table.extend_from_slice(&table_len.to_le_bytes());
    table.extend_from_slice(&[SPEC_REV, 0]);
    table.extend_from_slice(b"CLOISTER");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 4]); // OEM table pointer
    table.extend_from_slice(&[0; 2]); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&APIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    let table_addr = u32::try_from(base + 16).map_err(|_| MpTableError::CpuCount(num_cpus))?;
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP tables at the start of the EBDA.
pub fn write_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MpTableError> {
    let bytes = mptable_bytes(num_cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_pointer_are_valid() {
        for cpus in [1u8, 2, 7, MAX_CPUS] {
            let bytes = mptable_bytes(cpus, EBDA_START).unwrap();
            assert_eq!(&bytes[0..4], b"_MP_");
            assert_eq!(
                sum(&bytes[..16]),
                0,
                "floating pointer checksum, {cpus} cpus"
            );
            let ptr = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as u64;
            assert_eq!(ptr, EBDA_START + 16);
            let table = &bytes[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0, "config table checksum, {cpus} cpus");
            // Every vCPU then bus, IOAPIC, 24 IO interrupts, 2 local interrupts.
            let count = u16::from_le_bytes([table[34], table[35]]) as usize;
            assert_eq!(count, cpus as usize + 2 + 24 + 2);
            assert_eq!(len, 44 + 20 * cpus as usize + 8 * (2 + 24 + 2));
        }
    }

    #[test]
    fn lists_every_cpu_once_with_bsp_first() {
        let bytes = mptable_bytes(4, EBDA_START).unwrap();
        let cpus: Vec<(u8, u8)> = bytes[16 + 44..]
            .chunks(20)
            .take(4)
            .map(|e| {
                assert_eq!(e[0], ENTRY_PROCESSOR);
                (e[1], e[3])
            })
            .collect();
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1), (3, 1)]);
        // The IOAPIC takes the next ID.
        let ioapic = &bytes[16 + 44 + 80 + 8..][..8];
        assert_eq!(&ioapic[..4], &[ENTRY_IOAPIC, 4, IOAPIC_VERSION, 1]);
    }

    #[test]
    fn refuses_bad_counts() {
        assert!(matches!(
            mptable_bytes(0, EBDA_START),
            Err(MpTableError::CpuCount(0))
        ));
        assert!(matches!(
            mptable_bytes(255, EBDA_START),
            Err(MpTableError::CpuCount(255))
        ));
    }

    #[test]
    fn largest_table_stays_below_the_acpi_area() {
        let bytes = mptable_bytes(MAX_CPUS, EBDA_START).unwrap();
        assert!(EBDA_START + bytes.len() as u64 <= super::super::layout::ACPI_START);
    }
}
