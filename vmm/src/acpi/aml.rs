//! The one AML resource descriptor the DSDT needs that the `acpi_tables` crate does not
//! have: the short IRQ descriptor ASL writes as `IRQNoFlags`. (The crate's `Interrupt`
//! is the Extended Interrupt descriptor, which names a GSI rather than an ISA IRQ.)

use acpi_tables::{Aml, AmlSink};

/// Small resource item 0x04 (IRQ format descriptor) with a length of 2: the form without
/// the information byte, which means edge-triggered, active high, exclusive (ACPI 6.5
/// section 6.4.2.1).
const IRQ_NO_FLAGS_TAG: u8 = (0x04 << 3) | 2;

/// `IRQNoFlags () {irq}`: one ISA IRQ (0..=15), edge-triggered, active high, exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqNoFlags {
    /// Bit `n` set for ISA IRQ `n`.
    mask: u16,
}

impl IrqNoFlags {
    /// The descriptor of ISA IRQ `irq`. Meant for `const` items: an IRQ above 15 stops
    /// the build there.
    pub const fn new(irq: u8) -> Self {
        assert!(irq < 16, "an ISA IRQ is 0 to 15");
        Self { mask: 1 << irq }
    }
}

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(IRQ_NO_FLAGS_TAG);
        sink.word(self.mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_no_flags_is_the_two_byte_irq_descriptor() {
        // ASL `IRQNoFlags () {4}` compiles to 22 10 00.
        let mut bytes = Vec::new();
        IrqNoFlags::new(4).to_aml_bytes(&mut bytes);
        assert_eq!(bytes, [0x22, 0x10, 0x00]);
        bytes.clear();
        IrqNoFlags::new(15).to_aml_bytes(&mut bytes);
        assert_eq!(bytes, [0x22, 0x00, 0x80]);
    }
}
