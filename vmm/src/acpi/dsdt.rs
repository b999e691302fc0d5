//! The Differentiated System Description Table: the devices Linux cannot probe by itself.
//!
//! ```text
//! Scope (\_SB) {
//!     Device (COM1) { _HID EisaId("PNP0501"), _UID 1, _CRS { IO 0x3f8/8, IRQNoFlags {4} } }
//!     Device (VR00) { _HID "LNRO0005", _UID 0,
//!                     _CRS { Memory32Fixed(ReadWrite, base, len),
//!                            Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi} } }
//!     ...
//! }
//! Name (\_S5, Package { 5, 0, 0, 0 })   // SLP_TYP 5 for the sleep control register
//! ```
//!
//! `LNRO0005` is the ACPI ID in the match table of Linux's virtio_mmio driver.

use super::aml::{self, AmlError};
use super::sdt::Sdt;

/// ACPI hardware ID of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// SLP_TYP value of the S5 (soft-off) state.
pub const S5_SLEEP_TYPE: u64 = 5;
/// I/O base of the COM1 serial port.
const COM1_PORT: u16 = 0x3f8;
/// ISA IRQ of the COM1 serial port.
const COM1_IRQ: u8 = 4;

/// AML name of the virtio-mmio device in slot `i` (`VR00`..`VRFF`).
pub fn virtio_device_name(i: usize) -> String {
    format!("VR{i:02X}")
}

/// A virtio-mmio device as the DSDT describes it (a window below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// Guest physical base of the register window.
    pub base: u32,
    /// Length of the window.
    pub len: u32,
    /// GSI (I/O APIC input) of its interrupt.
    pub gsi: u32,
}

/// Builds the DSDT describing COM1, the virtio-mmio `devices` and the S5 sleep state.
pub fn dsdt(virtio: &[VirtioMmioDevice]) -> Result<Vec<u8>, AmlError> {
    let mut devices = com1()?;
    for (i, dev) in virtio.iter().enumerate() {
        let crs = aml::resource_template(&[
            aml::memory32_fixed(dev.base, dev.len),
            aml::interrupt_edge_high(dev.gsi),
        ])?;
        let body = [
            aml::name("_HID", &aml::string(VIRTIO_MMIO_HID)?)?,
            aml::name("_UID", &aml::integer(i as u64))?,
            aml::name("_CRS", &crs)?,
        ]
        .concat();
        devices.extend_from_slice(&aml::device(&virtio_device_name(i), &body)?);
    }
    let mut t = Sdt::new(*b"DSDT", 2);
    t.push(&aml::scope("\\_SB", &devices)?);
    let s5 = aml::package(&[
        aml::integer(S5_SLEEP_TYPE),
        aml::integer(0),
        aml::integer(0),
        aml::integer(0),
    ])?;
    t.push(&aml::name("\\_S5", &s5)?);
    Ok(t.finish())
}

fn com1() -> Result<Vec<u8>, AmlError> {
    let crs =
        aml::resource_template(&[aml::io_port(COM1_PORT, 1, 8), aml::irq_no_flags(COM1_IRQ)])?;
    let body = [
        aml::name("_HID", &aml::eisa_id("PNP0501")?)?,
        aml::name("_UID", &aml::integer(1))?,
        aml::name("_CRS", &crs)?,
    ]
    .concat();
    aml::device("COM1", &body)
}
