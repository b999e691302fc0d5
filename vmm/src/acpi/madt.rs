//! The Multiple APIC Description Table (ACPI 6.5 section 5.2.12): one local APIC per vCPU,
//! the I/O APIC, the ISA timer override and the LINT1 NMI.
//!
//! The `acpi_tables` crate provides the header and checksum and the local APIC and I/O
//! APIC structures. Its own `MADT` type cannot be used: it writes revision 1 and Flags 0
//! with no way to set PCAT_COMPAT. It has no Interrupt Source Override or Local APIC NMI
//! structure either; those two are written here.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::{Aml, AmlSink};

use super::sdt;
use crate::boot::layout::{below_4g, ioapic_id, APIC_START, IOAPIC_START, PIT_GSI};

/// MADT revision of ACPI 6.5.
const MADT_REVISION: u8 = 5;
/// Guest physical address of the local APICs, as the MADT's 32-bit field.
pub const LOCAL_APIC_ADDR: u32 = below_4g(APIC_START);
/// Guest physical address of the I/O APIC, as the MADT's 32-bit field.
pub const IO_APIC_ADDR: u32 = below_4g(IOAPIC_START);
/// MADT flag: a dual-8259 PIC is present too (KVM's in-kernel irqchip has one).
const PCAT_COMPAT: u32 = 1;

/// Entry type: processor local APIC (the crate writes these entries).
#[cfg(test)]
pub const TYPE_LOCAL_APIC: u8 = 0;
/// Entry type: I/O APIC (the crate writes these entries).
#[cfg(test)]
pub const TYPE_IO_APIC: u8 = 1;
/// Entry type: interrupt source override.
pub const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
/// Entry type: local APIC NMI.
pub const TYPE_LOCAL_APIC_NMI: u8 = 4;

/// MPS INTI flags 0: polarity and trigger mode conform to the bus (ISA: active high,
/// edge-triggered).
const MPS_INTI_CONFORMING: u16 = 0;
/// Processor UID meaning "every processor" in a Local APIC NMI structure.
const ALL_PROCESSORS: u8 = 0xff;
/// The local APIC input wired to NMI.
const LINT1: u8 = 1;

/// Interrupt Source Override structure (ACPI 6.5 section 5.2.12.5), 10 bytes.
struct InterruptSourceOverride {
    /// ISA bus IRQ.
    source: u8,
    /// GSI it arrives on.
    gsi: u32,
    /// MPS INTI flags.
    flags: u16,
}

impl Aml for InterruptSourceOverride {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(TYPE_INTERRUPT_OVERRIDE);
        sink.byte(10);
        sink.byte(0); // bus: ISA
        sink.byte(self.source);
        sink.dword(self.gsi);
        sink.word(self.flags);
    }
}

/// Local APIC NMI structure (ACPI 6.5 section 5.2.12.7), 6 bytes.
struct LocalApicNmi {
    /// ACPI processor UID, 0xff for all.
    processor_uid: u8,
    /// MPS INTI flags.
    flags: u16,
    /// LINTn input.
    lint: u8,
}

impl Aml for LocalApicNmi {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(TYPE_LOCAL_APIC_NMI);
        sink.byte(6);
        sink.byte(self.processor_uid);
        sink.word(self.flags);
        sink.byte(self.lint);
    }
}

/// Builds the MADT for `vcpus` processors (APIC IDs and ACPI UIDs 0..vcpus) and the I/O
/// APIC with ID [`ioapic_id`]`(vcpus)`, as in the MP table.
pub fn madt(vcpus: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LOCAL_APIC_ADDR.to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for id in 0..vcpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut body);
    }
    IoApic::new(ioapic_id(vcpus), IO_APIC_ADDR, 0).to_aml_bytes(&mut body);
    // The PIT's ISA IRQ 0 reaches the I/O APIC pin KVM routes it to.
    InterruptSourceOverride {
        source: 0,
        gsi: PIT_GSI,
        flags: MPS_INTI_CONFORMING,
    }
    .to_aml_bytes(&mut body);
    // LINT1 of every processor is the NMI input.
    LocalApicNmi {
        processor_uid: ALL_PROCESSORS,
        flags: MPS_INTI_CONFORMING,
        lint: LINT1,
    }
    .to_aml_bytes(&mut body);
    sdt::table(*b"APIC", MADT_REVISION, &body)
}
