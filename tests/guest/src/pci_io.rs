//! PCI configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2): the address of a
//! configuration doubleword goes to I/O port 0xCF8, its data is at 0xCFC..0xCFF. Bus 0,
//! function 0 of each device only. Every port access is a VM exit.

use cloister_test_guest::pci::{ConfigSpace, REG_ID};

use crate::io::{inl, outl, outw};
use crate::serial;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// CONFIG_ADDRESS bit 31: the access goes to configuration space.
const CONFIG_ENABLE: u32 = 1 << 31;
const DEVICES_PER_BUS: u8 = 32;

/// Function 0 of a device on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    device: u8,
}

impl Function {
    /// Points CONFIG_ADDRESS at the doubleword holding `reg`.
    fn select(self, reg: u8) {
        outl(
            CONFIG_ADDRESS,
            CONFIG_ENABLE | u32::from(self.device) << 11 | u32::from(reg & 0xfc),
        );
    }

    /// Writes the function's address, `00:dd.0`.
    pub fn print(self) {
        serial::write(b"00:");
        serial::write_hex_bytes(&[self.device]);
        serial::write(b".0");
    }
}

impl ConfigSpace for Function {
    fn read32(&self, reg: u8) -> u32 {
        self.select(reg);
        inl(CONFIG_DATA)
    }

    fn write32(&self, reg: u8, value: u32) {
        self.select(reg);
        outl(CONFIG_DATA, value);
    }

    fn write16(&self, reg: u8, value: u16) {
        self.select(reg);
        outw(CONFIG_DATA + u16::from(reg & 2), value);
    }

    fn probe32(&self, reg: u8) -> (u32, u32) {
        // CONFIG_ADDRESS holds: one address write for the four data accesses.
        self.select(reg);
        let value = inl(CONFIG_DATA);
        outl(CONFIG_DATA, u32::MAX);
        let mask = inl(CONFIG_DATA);
        outl(CONFIG_DATA, value);
        (value, mask)
    }
}

/// Calls `found` with every device on bus 0 (function 0) and its vendor and device ID. A
/// bus without a device at 00:00.0, where the host bridge sits, is no PCI bus: the scan
/// ends after that one read (a machine without PCI reads all ones there).
pub fn scan(mut found: impl FnMut(Function, u16, u16)) {
    for device in 0..DEVICES_PER_BUS {
        let function = Function { device };
        let id = function.read32(REG_ID);
        let vendor = id as u16;
        if vendor == 0xffff || vendor == 0 {
            if device == 0 {
                return;
            }
            continue;
        }
        found(function, vendor, (id >> 16) as u16);
    }
}
