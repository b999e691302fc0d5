//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): a register window the
//! command line announces (`virtio_mmio.device=`), all 32-bit registers.

use crate::io::{mmio_read32, mmio_write32};
use crate::serial;
use crate::virtio_blk::{InitError, QueueState, Rings, Transport};

// Register offsets (virtio 1.2, 4.2.2).
const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const DEVICE_ID_BLOCK: u32 = 2;

/// Why the window at a base address holds no virtio-mmio block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The register window does not hold a virtio-mmio device.
    BadMagic,
    /// Not version 2 (modern) virtio-mmio.
    BadVersion(u32),
    /// Not a block device (0: no device behind the window).
    NotBlock(u32),
}

impl ProbeError {
    /// Writes what went wrong (no line prefix, no newline).
    pub fn print(&self) {
        serial::write(match self {
            ProbeError::BadMagic => b"no virtio-mmio magic value".as_slice(),
            ProbeError::BadVersion(_) => b"not virtio-mmio version 2",
            ProbeError::NotBlock(0) => b"no device behind the window",
            ProbeError::NotBlock(_) => b"not a block device",
        });
    }
}

/// A virtio-mmio block device's register window.
pub struct VirtioMmio {
    base: u64,
    queue: u16,
}

impl VirtioMmio {
    /// Checks that the window at `base` holds a version 2 virtio-mmio block device.
    pub fn probe(base: u64) -> Result<Self, ProbeError> {
        let mmio = VirtioMmio { base, queue: 0 };
        if mmio.reg(MAGIC) != MAGIC_VALUE {
            return Err(ProbeError::BadMagic);
        }
        let version = mmio.reg(VERSION);
        if version != 2 {
            return Err(ProbeError::BadVersion(version));
        }
        let id = mmio.reg(DEVICE_ID);
        if id != DEVICE_ID_BLOCK {
            return Err(ProbeError::NotBlock(id));
        }
        Ok(mmio)
    }

    fn reg(&self, offset: u64) -> u32 {
        mmio_read32(self.base + offset)
    }

    fn set(&self, offset: u64, value: u32) {
        mmio_write32(self.base + offset, value);
    }
}

impl Transport for VirtioMmio {
    fn status(&self) -> u8 {
        self.reg(STATUS) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.set(STATUS, status.into());
    }

    fn device_features(&mut self) -> u64 {
        self.set(DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.reg(DEVICE_FEATURES));
        self.set(DEVICE_FEATURES_SEL, 1);
        low | u64::from(self.reg(DEVICE_FEATURES)) << 32
    }

    fn set_driver_features(&mut self, features: u64) {
        self.set(DRIVER_FEATURES_SEL, 0);
        self.set(DRIVER_FEATURES, features as u32);
        self.set(DRIVER_FEATURES_SEL, 1);
        self.set(DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn select_queue(&mut self, index: u16) -> QueueState {
        self.set(QUEUE_SEL, index.into());
        self.queue = index;
        QueueState {
            max_size: u16::try_from(self.reg(QUEUE_NUM_MAX)).unwrap_or(u16::MAX),
            enabled: self.reg(QUEUE_READY) != 0,
        }
    }

    fn enable_queue(&mut self, size: u16, rings: Rings) -> Result<(), InitError> {
        self.set(QUEUE_NUM, size.into());
        for (offset, addr) in [
            (QUEUE_DESC, rings.desc),
            (QUEUE_DRIVER, rings.driver),
            (QUEUE_DEVICE, rings.device),
        ] {
            self.set(offset, addr as u32);
            self.set(offset + 4, (addr >> 32) as u32);
        }
        self.set(QUEUE_READY, 1);
        Ok(())
    }

    fn notify(&self) {
        self.set(QUEUE_NOTIFY, self.queue.into());
    }

    fn config_generation(&self) -> u32 {
        self.reg(CONFIG_GENERATION)
    }

    fn config_read32(&self, offset: u64) -> u32 {
        self.reg(CONFIG + offset)
    }
}
