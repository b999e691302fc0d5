//! Legacy ways for a guest to end the VM, each reporting through the [`ExitHandle`]:
//!
//! - the debug-exit port (0xf4): a one-byte write of `v` ends the monitor with status `v`;
//! - the i8042 controller (0x60/0x64): command 0xFE (pulse reset) ends the VM with
//!   status 0, as a reboot stops a Firecracker microVM; enough of the controller is
//!   emulated (CTR, self test) that a probing Linux driver does not stall;
//! - the ACPI hardware-reduced sleep control register (0x3c0, described in the FADT):
//!   SLP_EN with SLP_TYP 5 (S5, soft off) powers off with status 0. The sleep status
//!   register follows it (0x3c1): it reads 0 and ignores writes (Linux clears WAK_STS
//!   there before sleeping).

use super::bus::BusDevice;
use super::exit::ExitHandle;
use crate::boot::layout::ACPI_S5_SLEEP_TYPE;

/// The debug-exit port: write a byte, exit with it.
pub struct DebugExit {
    exit: ExitHandle,
}

impl DebugExit {
    /// A device reporting to `exit`.
    pub fn new(exit: ExitHandle) -> Self {
        Self { exit }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, [code]) = (offset, data) {
            log::info!("guest wrote exit code {code} to the debug-exit port");
            self.exit.request(*code);
        }
    }
}

/// i8042 register offsets from 0x60 and commands.
mod i8042 {
    pub const DATA: u64 = 0;
    pub const COMMAND: u64 = 4;
    pub const STATUS_OUTPUT_FULL: u8 = 0x01;
    pub const STATUS_SYSTEM: u8 = 0x04;
    pub const STATUS_COMMAND: u8 = 0x08;
    pub const CMD_READ_CTR: u8 = 0x20;
    pub const CMD_WRITE_CTR: u8 = 0x60;
    pub const CMD_DISABLE_AUX: u8 = 0xa7;
    pub const CMD_ENABLE_AUX: u8 = 0xa8;
    pub const CMD_TEST_AUX: u8 = 0xa9;
    pub const CMD_SELF_TEST: u8 = 0xaa;
    pub const CMD_TEST_KBD: u8 = 0xab;
    pub const CMD_DISABLE_KBD: u8 = 0xad;
    pub const CMD_ENABLE_KBD: u8 = 0xae;
    pub const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
    pub const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
    pub const CMD_RESET_CPU: u8 = 0xfe;
    pub const SELF_TEST_OK: u8 = 0x55;
    /// Output port: A20 enabled, CPU not in reset.
    pub const OUTPUT_PORT: u8 = 0x03;
}

/// A minimal i8042 keyboard controller with the CPU-reset line.
pub struct I8042 {
    exit: ExitHandle,
    output: Option<u8>,
    ctr: u8,
    pending_command: Option<u8>,
    last_was_command: bool,
}

impl I8042 {
    /// A controller reporting resets to `exit`.
    pub fn new(exit: ExitHandle) -> Self {
        Self {
            exit,
            output: None,
            ctr: 0,
            pending_command: None,
            last_was_command: false,
        }
    }

    fn status(&self) -> u8 {
        let mut status = i8042::STATUS_SYSTEM;
        if self.output.is_some() {
            status |= i8042::STATUS_OUTPUT_FULL;
        }
        if self.last_was_command {
            status |= i8042::STATUS_COMMAND;
        }
        status
    }

    fn command(&mut self, cmd: u8) {
        self.last_was_command = true;
        match cmd {
            i8042::CMD_READ_CTR => self.output = Some(self.ctr),
            i8042::CMD_WRITE_CTR | i8042::CMD_WRITE_OUTPUT_PORT => self.pending_command = Some(cmd),
            i8042::CMD_SELF_TEST => self.output = Some(i8042::SELF_TEST_OK),
            i8042::CMD_TEST_KBD | i8042::CMD_TEST_AUX => self.output = Some(0),
            i8042::CMD_READ_OUTPUT_PORT => self.output = Some(i8042::OUTPUT_PORT),
            i8042::CMD_DISABLE_AUX
            | i8042::CMD_ENABLE_AUX
            | i8042::CMD_DISABLE_KBD
            | i8042::CMD_ENABLE_KBD => {}
            i8042::CMD_RESET_CPU => {
                log::info!("guest reset the CPU through the i8042: stopping the VM");
                self.exit.request(0);
            }
            other => log::debug!("i8042: command {other:#04x} ignored"),
        }
    }

    fn data(&mut self, value: u8) {
        self.last_was_command = false;
        match self.pending_command.take() {
            Some(i8042::CMD_WRITE_CTR) => self.ctr = value,
            Some(i8042::CMD_WRITE_OUTPUT_PORT) if value & 1 == 0 => {
                log::info!("guest pulled the i8042 reset line: stopping the VM");
                self.exit.request(0);
            }
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            i8042::DATA => self.output.take().unwrap_or(0),
            i8042::COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (i8042::DATA, [value]) => self.data(*value),
            (i8042::COMMAND, [cmd]) => self.command(*cmd),
            _ => {}
        }
    }
}

/// SLP_EN, bit 5 of the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// SLP_TYP, bits 2..=4.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The ACPI hardware-reduced sleep control register (offset 0) and sleep status
/// register (offset 1).
pub struct AcpiSleepControl {
    exit: ExitHandle,
}

impl AcpiSleepControl {
    /// A register reporting power-off to `exit`.
    pub fn new(exit: ExitHandle) -> Self {
        Self { exit }
    }
}

impl BusDevice for AcpiSleepControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, [value]) = (offset, data) {
            let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
            if value & SLP_EN != 0 && sleep_type == ACPI_S5_SLEEP_TYPE {
                log::info!("guest entered ACPI S5: powering off");
                self.exit.request(0);
            } else {
                log::debug!("ACPI sleep control write {value:#04x} ignored");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_exit_passes_the_byte_out() {
        let exit = ExitHandle::new().unwrap();
        let mut dev = DebugExit::new(exit.clone());
        dev.write(0, &[1, 2]);
        assert_eq!(exit.requested(), None, "a 2-byte write is not an exit");
        dev.write(0, &[42]);
        assert_eq!(exit.requested(), Some(42));
        assert_eq!(exit.event().read().unwrap(), 1);
    }

    #[test]
    fn i8042_reset_stops_with_zero() {
        let exit = ExitHandle::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        dev.write(4, &[0xaa]);
        assert_eq!(exit.requested(), None);
        dev.write(4, &[0xfe]);
        assert_eq!(exit.requested(), Some(0));
    }

    #[test]
    fn i8042_answers_probing() {
        let exit = ExitHandle::new().unwrap();
        let mut dev = I8042::new(exit.clone());
        let mut b = [0u8];
        dev.read(4, &mut b);
        assert_eq!(b[0] & 1, 0, "output buffer empty");
        dev.write(4, &[0xaa]);
        dev.read(4, &mut b);
        assert_eq!(b[0] & 1, 1, "self-test result waiting");
        dev.read(0, &mut b);
        assert_eq!(b[0], 0x55);
        dev.write(4, &[0x60]);
        dev.write(0, &[0x47]);
        dev.write(4, &[0x20]);
        dev.read(0, &mut b);
        assert_eq!(b[0], 0x47, "CTR written then read back");
        // Pulling the reset line through the output port also resets.
        dev.write(4, &[0xd1]);
        dev.write(0, &[0xfe]);
        assert_eq!(exit.requested(), Some(0));
    }

    #[test]
    fn acpi_s5_powers_off_and_other_states_do_not() {
        let exit = ExitHandle::new().unwrap();
        let mut dev = AcpiSleepControl::new(exit.clone());
        dev.write(0, &[SLP_EN | (3 << 2)]); // S3
        dev.write(0, &[5 << 2]); // S5 without SLP_EN
        dev.write(0, &[SLP_EN | (5 << 2), 0]); // wrong width
        dev.write(1, &[SLP_EN | (5 << 2)]); // the status register
        let mut status = [0xffu8];
        dev.read(1, &mut status);
        assert_eq!(status, [0]);
        assert_eq!(exit.requested(), None);
        dev.write(0, &[SLP_EN | (5 << 2)]);
        assert_eq!(exit.requested(), Some(0));
    }
}
