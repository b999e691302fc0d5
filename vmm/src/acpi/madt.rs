//! The Multiple APIC Description Table (ACPI 6.5 section 5.2.12): one local APIC per vCPU,
//! the I/O APIC, the ISA timer override and the LINT1 NMI.

use super::sdt::Sdt;

/// Guest physical address of the local APICs.
pub const LOCAL_APIC_ADDR: u32 = 0xfee0_0000;
/// Guest physical address of the I/O APIC.
pub const IO_APIC_ADDR: u32 = 0xfec0_0000;
/// MADT flag: a dual-8259 PIC is present too (KVM's in-kernel irqchip has one).
const PCAT_COMPAT: u32 = 1;

/// Entry type: processor local APIC.
pub const TYPE_LOCAL_APIC: u8 = 0;
/// Entry type: I/O APIC.
pub const TYPE_IO_APIC: u8 = 1;
/// Entry type: interrupt source override.
pub const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
/// Entry type: local APIC NMI.
pub const TYPE_LOCAL_APIC_NMI: u8 = 4;

/// Builds the MADT for `vcpus` processors (APIC IDs and ACPI UIDs 0..vcpus).
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut t = Sdt::new(*b"APIC", 5);
    t.u32(LOCAL_APIC_ADDR).u32(PCAT_COMPAT);
    for id in 0..vcpus {
        // type, length, ACPI processor UID, APIC ID, flags (enabled)
        t.u8(TYPE_LOCAL_APIC).u8(8).u8(id).u8(id).u32(1);
    }
    // type, length, I/O APIC ID, reserved, address, GSI base
    t.u8(TYPE_IO_APIC)
        .u8(12)
        .u8(0)
        .u8(0)
        .u32(IO_APIC_ADDR)
        .u32(0);
    // The PIT's ISA IRQ 0 reaches I/O APIC pin 2 (as KVM routes it); flags: conforming.
    t.u8(TYPE_INTERRUPT_OVERRIDE)
        .u8(10)
        .u8(0)
        .u8(0)
        .u32(2)
        .u16(0);
    // LINT1 of every processor (UID 0xff) is the NMI input; flags: conforming.
    t.u8(TYPE_LOCAL_APIC_NMI).u8(6).u8(0xff).u16(0).u8(1);
    t.finish()
}
