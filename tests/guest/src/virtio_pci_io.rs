//! The virtio-pci transport, modern (virtio 1.2, 4.1): the structures the library found
//! (`virtio_pci.rs`), driven through MMIO in the function's BAR. MSI-X stays disabled
//! (msix_config and queue_msix_vector are never written): the driver polls.

use cloister_test_guest::pci::{BarError, CapError};
use cloister_test_guest::virtio_pci::{self, common, Layout, ProbeError};

use crate::io::{mmio_read16, mmio_read32, mmio_read8, mmio_write16, mmio_write32, mmio_write8};
use crate::pci_io::Function;
use crate::serial;
use crate::virtio_blk::{InitError, QueueState, Rings, Transport};

/// A modern virtio-pci function, its structures mapped.
pub struct VirtioPci {
    layout: Layout,
    /// The selected queue.
    queue: u16,
    /// Where the enabled queue's notification goes.
    queue_notify: u64,
}

impl VirtioPci {
    /// Finds the structures of `function` and turns on its memory decoding.
    pub fn probe(function: Function) -> Result<Self, ProbeError> {
        Ok(VirtioPci {
            layout: virtio_pci::probe(&function)?,
            queue: 0,
            queue_notify: 0,
        })
    }

    fn read16(&self, offset: u64) -> u16 {
        mmio_read16(self.layout.common + offset)
    }

    fn write16(&self, offset: u64, value: u16) {
        mmio_write16(self.layout.common + offset, value);
    }

    fn read32(&self, offset: u64) -> u32 {
        mmio_read32(self.layout.common + offset)
    }

    fn write32(&self, offset: u64, value: u32) {
        mmio_write32(self.layout.common + offset, value);
    }
}

impl Transport for VirtioPci {
    fn status(&self) -> u8 {
        mmio_read8(self.layout.common + common::DEVICE_STATUS)
    }

    fn set_status(&mut self, status: u8) {
        mmio_write8(self.layout.common + common::DEVICE_STATUS, status);
    }

    fn device_features(&mut self) -> u64 {
        self.write32(common::DEVICE_FEATURE_SELECT, 0);
        let low = u64::from(self.read32(common::DEVICE_FEATURE));
        self.write32(common::DEVICE_FEATURE_SELECT, 1);
        low | u64::from(self.read32(common::DEVICE_FEATURE)) << 32
    }

    fn set_driver_features(&mut self, features: u64) {
        self.write32(common::DRIVER_FEATURE_SELECT, 0);
        self.write32(common::DRIVER_FEATURE, features as u32);
        self.write32(common::DRIVER_FEATURE_SELECT, 1);
        self.write32(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn select_queue(&mut self, index: u16) -> QueueState {
        self.write16(common::QUEUE_SELECT, index);
        self.queue = index;
        QueueState {
            max_size: self.read16(common::QUEUE_SIZE),
            enabled: self.read16(common::QUEUE_ENABLE) != 0,
        }
    }

    fn enable_queue(&mut self, size: u16, rings: Rings) -> Result<(), InitError> {
        let notify_off = self.read16(common::QUEUE_NOTIFY_OFF);
        let Some(offset) = self.layout.notify_offset(notify_off) else {
            return Err(InitError::NotifyOutside {
                offset: u64::from(notify_off) * u64::from(self.layout.notify_multiplier),
                length: self.layout.notify_len,
            });
        };
        self.queue_notify = self.layout.notify + offset;
        self.write16(common::QUEUE_SIZE, size);
        // 64-bit fields as two 32-bit writes, low half first.
        for (field, addr) in [
            (common::QUEUE_DESC, rings.desc),
            (common::QUEUE_DRIVER, rings.driver),
            (common::QUEUE_DEVICE, rings.device),
        ] {
            self.write32(field, addr as u32);
            self.write32(field + 4, (addr >> 32) as u32);
        }
        self.write16(common::QUEUE_ENABLE, 1);
        Ok(())
    }

    fn notify(&self) {
        mmio_write16(self.queue_notify, self.queue);
    }

    fn config_generation(&self) -> u32 {
        mmio_read8(self.layout.common + common::CONFIG_GENERATION).into()
    }

    fn config_read32(&self, offset: u64) -> u32 {
        mmio_read32(self.layout.device + offset)
    }
}

/// Writes what `error` says went wrong (no line prefix, no newline).
pub fn print_probe_error(error: &ProbeError) {
    match *error {
        ProbeError::Capabilities(error) => print_cap_error(error),
        ProbeError::ShortCapability { at, cap_len } => {
            serial::write(b"virtio capability at ");
            serial::write_hex(u64::from(at));
            serial::write(b" is ");
            serial::write_dec(u64::from(cap_len));
            serial::write(b" bytes, too short");
        }
        ProbeError::PastConfigSpace { at } => {
            serial::write(b"virtio capability at ");
            serial::write_hex(u64::from(at));
            serial::write(b" runs past configuration space");
        }
        ProbeError::Missing(structure) => {
            serial::write(b"no ");
            serial::write(structure.name().as_bytes());
            serial::write(b" capability");
        }
        ProbeError::NotifyMultiplier(multiplier) => {
            serial::write(b"notify_off_multiplier ");
            serial::write_dec(u64::from(multiplier));
            serial::write(b" is neither 0 nor an even power of two");
        }
        ProbeError::Misaligned(structure, offset) => {
            serial::write(structure.name().as_bytes());
            serial::write(b" offset ");
            serial::write_hex(u64::from(offset));
            serial::write(b" is not ");
            serial::write_dec(u64::from(structure.align()));
            serial::write(b"-byte aligned");
        }
        ProbeError::TooShort(structure, length) => {
            serial::write(structure.name().as_bytes());
            serial::write(b" is ");
            serial::write_dec(u64::from(length));
            serial::write(b" bytes, the driver needs ");
            serial::write_dec(structure.min_len());
        }
        ProbeError::Bar(bar, error) => {
            serial::write(b"BAR");
            serial::write_dec(u64::from(bar));
            serial::write(b" ");
            print_bar_error(error);
        }
        ProbeError::PastBar {
            structure,
            bar,
            offset,
            length,
            bar_size,
        } => {
            serial::write(structure.name().as_bytes());
            serial::write(b" at BAR");
            serial::write_dec(u64::from(bar));
            serial::write(b" +");
            serial::write_hex(u64::from(offset));
            serial::write(b" (");
            serial::write_hex(u64::from(length));
            serial::write(b" bytes) runs past the BAR's ");
            serial::write_hex(bar_size);
            serial::write(b" bytes");
        }
    }
}

fn print_cap_error(error: CapError) {
    match error {
        CapError::NoList => serial::write(b"no capability list (status bit 4 clear)"),
        CapError::BadPointer(at) => {
            serial::write(b"capability pointer ");
            serial::write_hex(u64::from(at));
            serial::write(b" points into the configuration header");
        }
        CapError::Loop => serial::write(b"the capability list loops"),
    }
}

fn print_bar_error(error: BarError) {
    let bar = match error {
        BarError::Unassigned => return serial::write(b"not assigned (reads 0)"),
        BarError::Io => return serial::write(b"is an I/O BAR, not a memory BAR"),
        BarError::ReservedType(kind) => {
            serial::write(b"has the reserved memory type ");
            return serial::write_dec(u64::from(kind));
        }
        BarError::UpperHalf => {
            return serial::write(b"is the upper half of the 64-bit BAR before it")
        }
        BarError::NoUpperHalf => {
            return serial::write(b"is a 64-bit BAR in the last slot (no upper half)")
        }
        BarError::BadSizeMask(mask) => {
            serial::write(b"reads ");
            serial::write_hex(mask);
            return serial::write(b" after all ones were written: no size mask");
        }
        BarError::Misaligned(bar) => {
            serial::write(b"base is not aligned to its size: ");
            bar
        }
        BarError::AboveMapped(bar) => {
            serial::write(b"reaches past 4 GiB: ");
            bar
        }
    };
    serial::write_hex(bar.base);
    serial::write(b" size ");
    serial::write_hex(bar.size);
}
