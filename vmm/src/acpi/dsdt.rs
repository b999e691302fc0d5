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
//! `LNRO0005` is the ACPI ID in the match table of Linux's virtio_mmio driver. The AML is
//! encoded by the `acpi_tables` crate, except `IRQNoFlags` (see [`super::aml`]).

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
    ZERO,
};
use acpi_tables::Aml;

use super::aml::IrqNoFlags;
use super::sdt;
use crate::boot::layout::{ACPI_S5_SLEEP_TYPE, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT};

/// ACPI hardware ID of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// ACPI hardware ID of a 16550-compatible serial port.
const COM1_HID: &str = "PNP0501";
/// DSDT revision 2: integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;

/// COM1's I/O base and port count as the 16-bit and 8-bit fields of its IO descriptor.
const COM1_IO_BASE: u16 = {
    assert!(COM1_PORT <= u16::MAX as u64);
    COM1_PORT as u16
};
const COM1_IO_LEN: u8 = {
    assert!(COM1_PORT_COUNT <= u8::MAX as u64);
    COM1_PORT_COUNT as u8
};
/// COM1's interrupt: an ISA IRQ, so below 16 (checked when compiling).
const COM1_IRQ_DESCRIPTOR: IrqNoFlags = IrqNoFlags::new({
    assert!(COM1_IRQ <= u8::MAX as u32);
    COM1_IRQ as u8
});

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

/// Builds the DSDT describing COM1, the `virtio` devices and the S5 sleep state. At most
/// 256 virtio devices, named `VR00`..`VRFF`, which the caller checks: the crate's `Path`
/// panics on a name that is not four characters.
pub fn dsdt(virtio: &[VirtioMmioDevice]) -> Vec<u8> {
    let mut devices = Vec::new();
    com1(&mut devices);
    for (i, dev) in virtio.iter().enumerate() {
        virtio_mmio(i, dev, &mut devices);
    }
    let mut aml = Scope::raw(Path::new("\\_SB_"), devices);
    let s5 = Package::new(vec![&ACPI_S5_SLEEP_TYPE, &ZERO, &ZERO, &ZERO]);
    Name::new(Path::new("\\_S5_"), &s5).to_aml_bytes(&mut aml);
    sdt::table(*b"DSDT", DSDT_REVISION, &aml)
}

/// Appends `Device (COM1)` to `out`.
fn com1(out: &mut Vec<u8>) {
    let io = IO::new(COM1_IO_BASE, COM1_IO_BASE, 1, COM1_IO_LEN);
    let crs = ResourceTemplate::new(vec![&io, &COM1_IRQ_DESCRIPTOR]);
    let hid = Name::new(Path::new("_HID"), &EISAName::new(COM1_HID));
    let uid = Name::new(Path::new("_UID"), &1u8);
    let crs = Name::new(Path::new("_CRS"), &crs);
    Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]).to_aml_bytes(out);
}

/// Appends the `Device (VRxx)` of the virtio-mmio device in slot `i` to `out`.
fn virtio_mmio(i: usize, dev: &VirtioMmioDevice, out: &mut Vec<u8>) {
    let window = Memory32Fixed::new(true, dev.base, dev.len);
    // consumer, edge-triggered, active high, exclusive
    let irq = Interrupt::new(true, true, false, false, dev.gsi);
    let crs = ResourceTemplate::new(vec![&window, &irq]);
    let hid = Name::new(Path::new("_HID"), &VIRTIO_MMIO_HID);
    let uid = Name::new(Path::new("_UID"), &i);
    let crs = Name::new(Path::new("_CRS"), &crs);
    Device::new(Path::new(&virtio_device_name(i)), vec![&hid, &uid, &crs]).to_aml_bytes(out);
}
