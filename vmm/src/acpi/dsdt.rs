//! The Differentiated System Description Table: the devices Linux cannot probe by itself.
//!
//! ```text
//! Scope (\_SB) {
//!     Device (COM1) { _HID EisaId("PNP0501"), _UID 1, _CRS { IO 0x3f8/8, IRQNoFlags {4} } }
//!     Device (VR00) { _HID "LNRO0005", _UID 0,
//!                     _CRS { Memory32Fixed(ReadWrite, base, len),
//!                            Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsi} } }
//!     ...
//!     Device (PCI0) { _HID EisaId("PNP0A03"), _UID 0, _SEG 0, _BBN 0,      // with PCI only
//!                     _CRS { WordBusNumber (0, 0), IO 0xcf8/8,
//!                            DWordMemory (window start, window end) } }
//! }
//! Name (\_S5, Package { 5, 0, 0, 0 })   // SLP_TYP 5 for the sleep control register
//! ```
//!
//! `LNRO0005` is the ACPI ID in the match table of Linux's virtio_mmio driver. The AML is
//! encoded by the `acpi_tables` crate, except `IRQNoFlags` (see [`super::aml`]).

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, Scope, IO, ZERO,
};
use acpi_tables::Aml;

use super::aml::IrqNoFlags;
use super::sdt;
use crate::boot::layout::{
    below_4g, ACPI_S5_SLEEP_TYPE, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT, PCI_MMIO_SIZE,
    PCI_MMIO_START,
};
use crate::devices::pci::{CONFIG_IO_LEN, CONFIG_IO_PORT};

/// ACPI hardware ID of a virtio-mmio device.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// ACPI hardware ID of a PCI root bridge.
const PCI_ROOT_HID: &str = "PNP0A03";
/// The PCI window's first and last address, as the DWordMemory fields.
const PCI_WINDOW: (u32, u32) = (
    below_4g(PCI_MMIO_START),
    below_4g(PCI_MMIO_START + PCI_MMIO_SIZE - 1),
);
/// The configuration ports as the IO descriptor's fields.
const PCI_CONFIG_IO: (u16, u8) = {
    assert!(CONFIG_IO_PORT <= u16::MAX as u64 && CONFIG_IO_LEN <= u8::MAX as u64);
    (CONFIG_IO_PORT as u16, CONFIG_IO_LEN as u8)
};
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

/// Builds the DSDT describing COM1, the `virtio` devices, PCI bus 0 if `pci`, and the S5
/// sleep state. At most 256 virtio devices, named `VR00`..`VRFF`, which the caller
/// checks: the crate's `Path` panics on a name that is not four characters.
pub fn dsdt(virtio: &[VirtioMmioDevice], pci: bool) -> Vec<u8> {
    let mut devices = Vec::new();
    com1(&mut devices);
    for (i, dev) in virtio.iter().enumerate() {
        virtio_mmio(i, dev, &mut devices);
    }
    if pci {
        pci_root(&mut devices);
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

/// Appends `Device (PCI0)`, the root bridge of bus 0: its configuration ports and the
/// memory window its BARs live in (functions interrupt through MSI-X, so no `_PRT`).
fn pci_root(out: &mut Vec<u8>) {
    let buses = AddressSpace::new_bus_number(0u16, 0u16);
    let (port, len) = PCI_CONFIG_IO;
    let config_io = IO::new(port, port, 1, len);
    let window = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_WINDOW.0,
        PCI_WINDOW.1,
        None,
    );
    let crs = ResourceTemplate::new(vec![&buses, &config_io, &window]);
    let hid = Name::new(Path::new("_HID"), &EISAName::new(PCI_ROOT_HID));
    let uid = Name::new(Path::new("_UID"), &ZERO);
    let seg = Name::new(Path::new("_SEG"), &ZERO);
    let bbn = Name::new(Path::new("_BBN"), &ZERO);
    let crs = Name::new(Path::new("_CRS"), &crs);
    Device::new(Path::new("PCI0"), vec![&hid, &uid, &seg, &bbn, &crs]).to_aml_bytes(out);
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
