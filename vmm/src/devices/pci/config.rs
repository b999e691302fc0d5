//! A type-0 PCI configuration space (PCI Local Bus 3.0, 6.1): 256 bytes, each with a mask
//! of the bits the driver may write, so BAR sizing, the command register and capability
//! fields follow from the masks instead of special cases.

/// Size of a conventional PCI function's configuration space.
pub const CONFIG_SIZE: usize = 256;

/// Register offsets of the type-0 header.
pub mod reg {
    #![allow(missing_docs)]
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS: usize = 0x09;
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    pub const LATENCY_TIMER: usize = 0x0d;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const CAPABILITIES: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register: the function decodes its memory BARs.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register bits a driver may set: I/O space, memory space, bus master, INTx
/// disable.
const COMMAND_WRITABLE: u16 = 0x0407;
/// Status register: the capability list is valid.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Where the first capability goes (the type-0 header ends at 0x40).
const FIRST_CAPABILITY: usize = 0x40;
/// A 64-bit, non-prefetchable memory BAR's type bits.
const BAR_MEM64: u32 = 0b100;

/// What identifies a function (its header's read-only fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code, subclass and programming interface (24 bits).
    pub class: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// Why a capability cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The capability does not fit in the space left.
    #[error("a {len}-byte PCI capability does not fit after offset {at:#x}")]
    NoRoom {
        /// Length of the capability.
        len: usize,
        /// Where it would have gone.
        at: usize,
    },
}

/// One function's configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    writable: [u8; CONFIG_SIZE],
    /// Offset of the last capability added (its "next" byte links the one after it).
    last_capability: Option<usize>,
    /// Where the next capability goes.
    next_free: usize,
}

impl ConfigSpace {
    /// A header for `id` with no BARs and no capabilities; interrupt pin 0 (no INTx).
    pub fn new(id: Identity) -> Self {
        let mut c = Self {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
            last_capability: None,
            next_free: FIRST_CAPABILITY,
        };
        c.set_bytes(reg::VENDOR_ID, &id.vendor.to_le_bytes());
        c.set_bytes(reg::DEVICE_ID, &id.device.to_le_bytes());
        c.set_bytes(reg::REVISION, &[id.revision]);
        c.set_bytes(reg::CLASS, &id.class.to_le_bytes()[..3]);
        c.set_bytes(reg::SUBSYSTEM_VENDOR_ID, &id.subsystem_vendor.to_le_bytes());
        c.set_bytes(reg::SUBSYSTEM_ID, &id.subsystem.to_le_bytes());
        c.writable_range(reg::COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        c.writable_range(reg::CACHE_LINE_SIZE, &[0xff]);
        c.writable_range(reg::LATENCY_TIMER, &[0xff]);
        c.writable_range(reg::INTERRUPT_LINE, &[0xff]);
        c
    }

    /// Sets bytes as the device (not the driver) does: write masks do not apply. The
    /// range is the caller's constant and must lie inside the space.
    pub fn set_bytes(&mut self, offset: usize, value: &[u8]) {
        self.bytes[offset..offset + value.len()].copy_from_slice(value);
    }

    fn writable_range(&mut self, offset: usize, mask: &[u8]) {
        self.writable[offset..offset + mask.len()].copy_from_slice(mask);
    }

    /// Makes BAR `index` and `index + 1` one 64-bit memory BAR of `size` bytes (a power of
    /// two, at least 16) at `addr`. The caller passes valid constants; a bad size or index
    /// is a bug in the monitor and stops it.
    pub fn add_bar64(&mut self, index: usize, size: u64, addr: u64) {
        assert!(
            index < 5 && size.is_power_of_two() && size >= 16,
            "bad BAR {index}"
        );
        let at = reg::BAR0 + 4 * index;
        let mask = !(size - 1);
        self.set_bytes(at, &((addr & mask) as u32 | BAR_MEM64).to_le_bytes());
        self.set_bytes(at + 4, &((addr & mask) >> 32).to_le_bytes()[..4]);
        self.writable_range(at, &((mask as u32) & !0xf).to_le_bytes());
        self.writable_range(at + 4, &((mask >> 32) as u32).to_le_bytes());
    }

    /// The address the 64-bit BAR at `index` holds now (what the driver last wrote).
    pub fn bar64(&self, index: usize) -> u64 {
        let at = reg::BAR0 + 4 * index;
        let low = u64::from(self.dword(at) & !0xf);
        let high = u64::from(self.dword(at + 4));
        high << 32 | low
    }

    /// Whether the function decodes memory accesses to its BARs.
    pub fn memory_enabled(&self) -> bool {
        self.word(reg::COMMAND) & COMMAND_MEMORY != 0
    }

    /// Sets the command register's memory-space bit, as firmware does before handing over.
    pub fn enable_memory(&mut self) {
        let command = self.word(reg::COMMAND) | COMMAND_MEMORY;
        self.set_bytes(reg::COMMAND, &command.to_le_bytes());
    }

    /// Appends a capability: `body` from its ID byte on (the "next" byte is filled in
    /// here), `writable` the masks of its bytes (same length, or shorter: the rest is
    /// read-only). Returns its offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, ConfigError> {
        // Capabilities start dword-aligned (the low two bits of a pointer are reserved).
        let at = self.next_free;
        let len = body.len();
        if len < 2 || at + len > CONFIG_SIZE {
            return Err(ConfigError::NoRoom { len, at });
        }
        self.set_bytes(at, body);
        self.bytes[at + 1] = 0;
        let mask = &writable[..writable.len().min(len)];
        self.writable_range(at, mask);
        match self.last_capability {
            Some(prev) => self.bytes[prev + 1] = at as u8,
            None => {
                self.bytes[reg::CAPABILITIES] = at as u8;
                let status = self.word(reg::STATUS) | STATUS_CAPABILITIES;
                self.set_bytes(reg::STATUS, &status.to_le_bytes());
            }
        }
        self.last_capability = Some(at);
        self.next_free = (at + len).next_multiple_of(4);
        Ok(at)
    }

    /// The 16-bit value at `offset`.
    pub fn word(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.bytes[offset], self.bytes[offset + 1]])
    }

    /// The 32-bit value at `offset`.
    pub fn dword(&self, offset: usize) -> u32 {
        let b = &self.bytes[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Reads `data.len()` bytes at `offset`; bytes past the end read as all-ones.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i)
                .and_then(|o| self.bytes.get(o))
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// Writes `data` at `offset`, each bit only where it is writable; bytes past the end
    /// are dropped.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i).filter(|&o| o < CONFIG_SIZE) else {
                return;
            };
            let mask = self.writable[o];
            self.bytes[o] = (self.bytes[o] & !mask) | (value & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn space() -> ConfigSpace {
        ConfigSpace::new(Identity {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: 0x01_80_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        })
    }

    #[test]
    fn bar_sizing_reads_back_the_size_and_the_address_sticks() {
        let mut c = space();
        c.add_bar64(0, 0x8000, 0xc000_0000);
        assert_eq!(c.dword(0x10), 0xc000_0004);
        assert_eq!(c.dword(0x14), 0);
        assert_eq!(c.bar64(0), 0xc000_0000);
        // Sizing: all-ones in, the size mask (with the type bits) out.
        c.write(0x10, &[0xff; 4]);
        c.write(0x14, &[0xff; 4]);
        assert_eq!(c.dword(0x10), 0xffff_8004);
        assert_eq!(c.dword(0x14), 0xffff_ffff);
        let size = !(u64::from(c.dword(0x14)) << 32 | u64::from(c.dword(0x10) & !0xf)) + 1;
        assert_eq!(size, 0x8000);
        // A new address, unaligned bits dropped.
        c.write(0x10, &0xc001_8123u32.to_le_bytes());
        c.write(0x14, &1u32.to_le_bytes());
        assert_eq!(c.bar64(0), 0x1_c001_8000);
    }

    #[test]
    fn read_only_fields_stay_and_the_command_register_takes_only_its_bits() {
        let mut c = space();
        c.write(0, &[0; 16]);
        assert_eq!(c.dword(0), 0x1042_1af4);
        assert_eq!(c.dword(8) >> 8, 0x01_80_00);
        c.write(reg::COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.word(reg::COMMAND), 0x0407);
        assert!(c.memory_enabled());
        // Past the end: all-ones, writes dropped.
        let mut b = [0u8; 4];
        c.read(254, &mut b);
        assert_eq!(b, [0, 0, 0xff, 0xff]);
        c.write(255, &[1, 2, 3]);
    }

    #[test]
    fn capabilities_chain_from_the_pointer() {
        let mut c = space();
        let a = c.add_capability(&[0x11, 0xee, 1, 2], &[]).unwrap();
        let b = c.add_capability(&[0x09, 0xee, 7], &[0, 0, 0xff]).unwrap();
        assert_eq!((a, b), (0x40, 0x44));
        assert_ne!(c.word(reg::STATUS) & STATUS_CAPABILITIES, 0);
        assert_eq!(c.bytes[reg::CAPABILITIES], 0x40);
        assert_eq!(c.bytes[0x41], 0x44);
        assert_eq!(c.bytes[0x45], 0);
        c.write(0x46, &[9]);
        assert_eq!(c.bytes[0x46], 9);
        c.write(0x41, &[0]);
        assert_eq!(c.bytes[0x41], 0x44, "the chain is read-only");
        let too_big = vec![0u8; 200];
        assert!(matches!(
            c.add_capability(&too_big, &[]),
            Err(ConfigError::NoRoom { .. })
        ));
    }
}
