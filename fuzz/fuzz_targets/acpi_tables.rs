//! Fuzzes the ACPI table builder with arbitrary configurations: it either refuses with an
//! error or produces tables whose checksums are right and which stay inside the area
//! reserved for them.
#![no_main]

use arbitrary::Arbitrary;
use cloister_vmm::acpi::{build_tables, AcpiConfig};
use cloister_vmm::boot::layout::{MmioSlot, ACPI_START, HIMEM_START};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Slot {
    base: u64,
    len: u64,
    gsi: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    vcpus: u8,
    slots: Vec<Slot>,
    sleep_control_port: u16,
    pci: bool,
}

fuzz_target!(|input: Input| {
    let cfg = AcpiConfig {
        vcpus: input.vcpus,
        virtio_mmio: input
            .slots
            .into_iter()
            .take(300)
            .map(|s| MmioSlot {
                base: s.base,
                len: s.len,
                gsi: s.gsi,
            })
            .collect(),
        sleep_control_port: input.sleep_control_port,
        pci: input.pci,
    };
    let Ok(tables) = build_tables(&cfg) else {
        return;
    };
    for (addr, bytes) in &tables.placed {
        assert!(addr.0 >= ACPI_START && addr.0 + bytes.len() as u64 <= HIMEM_START);
        let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
        if addr.0 == ACPI_START {
            assert_eq!(sum(&bytes[..20]), 0);
        } else {
            let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            assert_eq!(len as usize, bytes.len(), "length of the table at {addr:?}");
        }
        assert_eq!(sum(bytes), 0, "checksum of table at {addr:?}");
    }
});
