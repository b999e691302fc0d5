//! The Fixed ACPI Description Table (ACPI 6.5 section 5.2.9) of a hardware-reduced
//! platform: no PM1/GPE blocks, no SCI; sleep (power-off) through the extended sleep
//! control and status registers (section 4.8.3.7), which are one-byte I/O ports.

use super::sdt::{gas_io_port_u8, Sdt};

/// FADT flag: the power button, if any, is a control-method device.
const PWR_BUTTON: u32 = 1 << 4;
/// FADT flag: the sleep button, if any, is a control-method device.
const SLP_BUTTON: u32 = 1 << 5;
/// FADT flag: hardware-reduced ACPI.
const HW_REDUCED_ACPI: u32 = 1 << 20;

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

/// Length of a revision 6 FADT.
pub const FADT_LEN: usize = 276;
/// Offset of X_DSDT.
pub const X_DSDT_OFFSET: usize = 140;
/// Offset of SLEEP_CONTROL_REG.
pub const SLEEP_CONTROL_OFFSET: usize = 244;
/// Offset of SLEEP_STATUS_REG.
pub const SLEEP_STATUS_OFFSET: usize = 256;
/// Offset of the Flags field.
pub const FLAGS_OFFSET: usize = 112;
/// Offset of IAPC_BOOT_ARCH (2 bytes).
pub const IAPC_BOOT_ARCH_OFFSET: usize = 109;

/// Builds the FADT pointing at the DSDT at `dsdt_addr`, with the sleep control register
/// at I/O port `sleep_control_port` and the sleep status register at `sleep_status_port`.
pub fn fadt(dsdt_addr: u64, sleep_control_port: u16, sleep_status_port: u16) -> Vec<u8> {
    let mut t = Sdt::new(*b"FACP", 6);
    t.u32(0); // FIRMWARE_CTRL: no FACS on a hardware-reduced platform
    t.u32(u32::try_from(dsdt_addr).unwrap_or(0)); // DSDT (also in X_DSDT)
    t.u8(0); // reserved
    t.u8(0); // Preferred_PM_Profile: unspecified
    t.u16(0); // SCI_INT: none (hardware-reduced)
    t.u32(0); // SMI_CMD
    t.zeros(4); // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
    t.zeros(8 * 4); // PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM TMR, GPE0, GPE1 blocks
    t.zeros(8); // block lengths, GPE1_BASE, CST_CNT
    t.zeros(2 * 4); // P_LVL2_LAT, P_LVL3_LAT, FLUSH_SIZE, FLUSH_STRIDE
    t.zeros(5); // DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY
                // IAPC_BOOT_ARCH
    t.u16(VGA_NOT_PRESENT | MSI_NOT_SUPPORTED | PCIE_ASPM_CONTROLS | CMOS_RTC_NOT_PRESENT);
    t.u8(0); // reserved
    t.u32(HW_REDUCED_ACPI | PWR_BUTTON | SLP_BUTTON); // Flags
    t.zeros(12); // RESET_REG: none
    t.u8(0); // RESET_VALUE
    t.u16(0); // ARM_BOOT_ARCH
    t.u8(5); // FADT minor version (ACPI 6.5)
    t.u64(0); // X_FIRMWARE_CTRL
    t.u64(dsdt_addr); // X_DSDT
    t.zeros(8 * 12); // X_PM1a_EVT_BLK .. X_GPE1_BLK: none
    t.push(&gas_io_port_u8(sleep_control_port));
    t.push(&gas_io_port_u8(sleep_status_port));
    t.push(b"CLOISTER"); // hypervisor vendor identity
    t.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn iapc_boot_arch_says_no_cmos_rtc_no_vga_no_msi_no_aspm_and_nothing_else() {
        let t = fadt(0xe_0100, 0x3c0, 0x3c1);
        assert_eq!(t.len(), FADT_LEN);
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
            HW_REDUCED_ACPI | PWR_BUTTON | SLP_BUTTON,
            "the Flags field right after is unchanged"
        );
    }
}
