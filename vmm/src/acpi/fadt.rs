//! The Fixed ACPI Description Table (ACPI 6.5 section 5.2.9) of a hardware-reduced
//! platform: no PM1/GPE blocks, no SCI; sleep (power-off) through the extended sleep
//! control and status registers (section 4.8.3.7), which are one-byte I/O ports.
//!
//! The `acpi_tables` crate lays the table out (revision 6.5, 276 bytes) and checksums it;
//! it has no names for the IA-PC boot architecture flags, which are defined here.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};

use super::sdt::{self, OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// IA-PC boot architecture flag: no VGA.
const VGA_NOT_PRESENT: u16 = 1 << 2;
/// IA-PC boot architecture flag: do not enable MSI.
const MSI_NOT_SUPPORTED: u16 = 1 << 3;
/// IA-PC boot architecture flag: the OS must not touch PCIe ASPM.
const PCIE_ASPM_CONTROLS: u16 = 1 << 4;
/// IA-PC boot architecture flag (ACPI 5.0 and later): there is no CMOS RTC at ports
/// 0x70/0x71 to probe. The monitor does emulate one there, for guests booted without
/// ACPI; a guest that reads this table takes its wall clock from kvmclock instead and
/// skips the RTC driver (Linux's rtc_cmos probe alone is seconds of port I/O under
/// nested virtualization).
const CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
// Bit 0 (legacy devices) and bit 1 (8042) left clear: no ISA devices for the OS to
// enumerate by convention, and no PS/2 controller to probe (the i8042 the monitor
// emulates is there for its reset line only).
/// The IAPC_BOOT_ARCH field of a machine without PCI: 0x003C. With PCI bus 0, whose
/// functions interrupt only through MSI-X, MSI_NOT_SUPPORTED is left out: 0x0034.
const IAPC_BOOT_ARCH: u16 =
    VGA_NOT_PRESENT | MSI_NOT_SUPPORTED | PCIE_ASPM_CONTROLS | CMOS_RTC_NOT_PRESENT;

/// Hypervisor vendor identity (the FADT's last field).
const HYPERVISOR_VENDOR: [u8; 8] = *b"CLOISTER";

/// Builds the FADT pointing at the DSDT at `dsdt_addr`, with the sleep control register
/// at I/O port `sleep_control_port` and the sleep status register at `sleep_status_port`;
/// `msi`: the OS may enable MSI (the machine has PCI).
pub fn fadt(dsdt_addr: u64, sleep_control_port: u16, sleep_status_port: u16, msi: bool) -> Vec<u8> {
    // FIRMWARE_CTRL and X_FIRMWARE_CTRL stay 0: no FACS on a hardware-reduced platform;
    // SCI_INT, the PM1/GPE blocks and RESET_REG stay empty; Preferred_PM_Profile is
    // "unspecified". PWR_BUTTON and SLP_BUTTON say there are no fixed-feature buttons.
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    // The 32-bit DSDT field holds the same address as X_DSDT (the tables sit below
    // 1 MiB), for OSes that read only the ACPI 1.0 field.
    fadt.dsdt = u32::try_from(dsdt_addr).unwrap_or(0).into();
    let boot_arch = if msi {
        IAPC_BOOT_ARCH & !MSI_NOT_SUPPORTED
    } else {
        IAPC_BOOT_ARCH
    };
    fadt.iapc_boot_arch = boot_arch.into();
    fadt.sleep_control_reg = io_port_u8(sleep_control_port);
    fadt.sleep_status_reg = io_port_u8(sleep_status_port);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(HYPERVISOR_VENDOR).into();
    sdt::to_bytes(&fadt.finalize())
}

/// A Generic Address Structure for a one-byte register at I/O port `port`.
fn io_port_u8(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Length of a revision 6 FADT.
    pub const FADT_LEN: usize = 276;
    /// Offset of the 32-bit DSDT field.
    pub const DSDT_OFFSET: usize = 40;
    /// Offset of IAPC_BOOT_ARCH (2 bytes).
    pub const IAPC_BOOT_ARCH_OFFSET: usize = 109;
    /// Offset of the Flags field.
    pub const FLAGS_OFFSET: usize = 112;
    /// Offset of the FADT minor version.
    pub const MINOR_VERSION_OFFSET: usize = 131;
    /// Offset of X_DSDT.
    pub const X_DSDT_OFFSET: usize = 140;
    /// Offset of SLEEP_CONTROL_REG.
    pub const SLEEP_CONTROL_OFFSET: usize = 244;
    /// Offset of SLEEP_STATUS_REG.
    pub const SLEEP_STATUS_OFFSET: usize = 256;
    /// Offset of the hypervisor vendor identity.
    pub const HYPERVISOR_VENDOR_OFFSET: usize = 268;

    /// FADT flags: power and sleep buttons are control-method devices (bits 4, 5);
    /// hardware-reduced ACPI (bit 20).
    const EXPECTED_FLAGS: u32 = (1 << 4) | (1 << 5) | (1 << 20);

    #[test]
    fn iapc_boot_arch_says_no_cmos_rtc_no_vga_no_msi_no_aspm_and_nothing_else() {
        let t = fadt(0xe_0100, 0x3c0, 0x3c1, false);
        assert_eq!(t.len(), FADT_LEN);
        assert_eq!(acpi_tables::fadt::FADT::len(), FADT_LEN);
        let field = &t[IAPC_BOOT_ARCH_OFFSET..IAPC_BOOT_ARCH_OFFSET + 2];
        let flags = u16::from_le_bytes(field.try_into().unwrap());
        assert_eq!(
            flags, 0b11_1100,
            "bits 2 (VGA), 3 (MSI), 4 (ASPM), 5 (CMOS RTC)"
        );
        assert_ne!(flags & (1 << 5), 0, "CMOS RTC Not Present");
        assert_eq!(flags & 0b11, 0, "no legacy devices, no 8042");
        assert_eq!(
            t[IAPC_BOOT_ARCH_OFFSET + 2],
            0,
            "the reserved byte after it"
        );
        assert_eq!(
            u32::from_le_bytes(t[FLAGS_OFFSET..FLAGS_OFFSET + 4].try_into().unwrap()),
            EXPECTED_FLAGS,
            "the Flags field right after is unchanged"
        );
        // With PCI, only the MSI bit goes.
        let t = fadt(0xe_0100, 0x3c0, 0x3c1, true);
        let field = &t[IAPC_BOOT_ARCH_OFFSET..IAPC_BOOT_ARCH_OFFSET + 2];
        assert_eq!(u16::from_le_bytes(field.try_into().unwrap()), 0b11_0100);
    }

    #[test]
    fn both_dsdt_fields_point_at_the_dsdt_and_the_vendor_is_cloister() {
        let t = fadt(0xe_0100, 0x3c0, 0x3c1, false);
        let dsdt = u32::from_le_bytes(t[DSDT_OFFSET..DSDT_OFFSET + 4].try_into().unwrap());
        let x_dsdt = u64::from_le_bytes(t[X_DSDT_OFFSET..X_DSDT_OFFSET + 8].try_into().unwrap());
        assert_eq!((u64::from(dsdt), x_dsdt), (0xe_0100, 0xe_0100));
        assert_eq!(
            &t[HYPERVISOR_VENDOR_OFFSET..HYPERVISOR_VENDOR_OFFSET + 8],
            b"CLOISTER"
        );
        assert_eq!(t[MINOR_VERSION_OFFSET], 5, "FADT 6.5");
    }
}
