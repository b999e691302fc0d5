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
// Bit 1 (8042) left clear: there is no PS/2 controller to probe.

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
    t.u16(VGA_NOT_PRESENT | MSI_NOT_SUPPORTED | PCIE_ASPM_CONTROLS); // IAPC_BOOT_ARCH
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
