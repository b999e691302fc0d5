//! A conventional PCI bus 0: configuration mechanism #1 (ports 0xCF8/0xCFC), a host
//! bridge at 00:00.0, functions at 00:NN.0, and their memory BARs decoded inside the PCI
//! window the DSDT's root bridge (`PNP0A03`) gives the guest.
//!
//! ```text
//! let mut root = PciRoot::new();                      // host bridge at 00:00.0
//! root.add(1, virtio_blk_function)?;                  // 00:01.0
//! let root = Arc::new(root);
//! pio.insert(PciConfigIo::new(root.clone()), 0xcf8, 8)?;
//! mmio.insert(PciMmioWindow::new(window_start, root), window_start, window_len)?;
//! ```
//!
//! What a function needs from the hypervisor while the guest runs (an MSI route for a
//! vector the guest programmed, an ioeventfd that follows a BAR the guest moved) it asks
//! of a [`PciHost`], so a unit test or a fuzz target drives the bus without a VM.
//!
//! Limits: one bus, function 0 only, 256-byte configuration space (no ECAM), memory BARs
//! only, no INTx (interrupt pin 0: functions interrupt through MSI-X).

pub mod config;
pub mod msix;

use std::io;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;
use crate::devices::virtio::GuestErrorLog;
use config::{ConfigSpace, Identity};

/// Device numbers on bus 0.
pub const DEVICES_PER_BUS: usize = 32;
/// Ports of configuration mechanism #1: the address register and the data window.
pub const CONFIG_IO_PORT: u64 = 0xcf8;
/// Number of ports: CONFIG_ADDRESS (4) and CONFIG_DATA (4).
pub const CONFIG_IO_LEN: u64 = 8;
/// CONFIG_ADDRESS: the enable bit.
const CONFIG_ENABLE: u32 = 1 << 31;

/// An MSI message: where the function writes and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// The address (0xFEEx_xxxx on x86).
    pub address: u64,
    /// The data.
    pub data: u32,
}

/// What PCI functions ask of the hypervisor while the guest runs.
pub trait PciHost: Send + Sync {
    /// Points `gsi` (an irqfd's line) at `message`.
    fn set_msi_route(&self, gsi: u32, message: MsiMessage) -> io::Result<()>;
    /// A guest write to `addr` signals `event` without an exit.
    fn register_ioevent(&self, event: &EventFd, addr: u64) -> io::Result<()>;
    /// Undoes [`Self::register_ioevent`].
    fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> io::Result<()>;
}

/// A PCI function as the bus sees it.
pub trait PciFunction: Send {
    /// Reads configuration space (`data` within one dword).
    fn config_read(&mut self, offset: usize, data: &mut [u8]);
    /// Writes configuration space (`data` within one dword).
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// Reads guest-physical `addr` if an enabled BAR of the function holds the whole
    /// access; false if none does.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool;
    /// Writes guest-physical `addr`, as [`Self::mmio_read`].
    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool;
}

/// A shared handle to a function.
pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

/// Errors building the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciError {
    /// The device number is taken or out of range.
    #[error("PCI device number {0} is taken or beyond 31")]
    Slot(usize),
}

/// The host bridge at 00:00.0 (Linux checks for one before it trusts mechanism #1).
pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    /// Intel's ID for a host bridge, as Firecracker and Cloud Hypervisor present.
    pub const IDENTITY: Identity = Identity {
        vendor: 0x8086,
        device: 0x0d57,
        revision: 0,
        class: 0x06_00_00,
        subsystem_vendor: 0,
        subsystem: 0,
    };

    /// A host bridge.
    pub fn new() -> Self {
        Self {
            config: ConfigSpace::new(Self::IDENTITY),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn mmio_read(&mut self, _addr: u64, _data: &mut [u8]) -> bool {
        false
    }
    fn mmio_write(&mut self, _addr: u64, _data: &[u8]) -> bool {
        false
    }
}

/// Bus 0: the functions by device number.
pub struct PciRoot {
    devices: Vec<Option<SharedFunction>>,
}

impl PciRoot {
    /// A bus with the host bridge at 00:00.0.
    pub fn new() -> Self {
        let mut devices: Vec<Option<SharedFunction>> = vec![None; DEVICES_PER_BUS];
        devices[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        Self { devices }
    }

    /// Puts `function` at device number `device` (function 0).
    pub fn add(&mut self, device: usize, function: SharedFunction) -> Result<(), PciError> {
        match self.devices.get_mut(device) {
            Some(slot @ None) => {
                *slot = Some(function);
                Ok(())
            }
            _ => Err(PciError::Slot(device)),
        }
    }

    fn function(&self, device: usize) -> Option<&SharedFunction> {
        self.devices.get(device).and_then(Option::as_ref)
    }

    fn functions(&self) -> impl Iterator<Item = &SharedFunction> {
        self.devices.iter().flatten()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(f: &SharedFunction) -> std::sync::MutexGuard<'_, dyn PciFunction + 'static> {
    f.lock().unwrap_or_else(|p| p.into_inner())
}

/// Configuration mechanism #1 on ports 0xCF8..0xCFF.
pub struct PciConfigIo {
    address: u32,
    root: Arc<PciRoot>,
    guest_errors: GuestErrorLog,
}

impl PciConfigIo {
    /// The configuration ports of `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self {
            address: 0,
            root,
            guest_errors: GuestErrorLog::default(),
        }
    }

    /// The function and register the address register selects, for an access of `len`
    /// bytes at data port `port` (0..4); `None`: no function answers.
    fn target(&mut self, port: usize, len: usize) -> Option<(SharedFunction, usize)> {
        if port + len > 4 || !matches!(len, 1 | 2 | 4) || !port.is_multiple_of(len) {
            self.guest_errors.log(format_args!(
                "PCI: {len}-byte access at CONFIG_DATA+{port} is not a naturally aligned access inside the dword; ignored"
            ));
            return None;
        }
        let a = self.address;
        let bus = (a >> 16) & 0xff;
        let device = ((a >> 11) & 0x1f) as usize;
        let function = (a >> 8) & 0x7;
        if a & CONFIG_ENABLE == 0 || bus != 0 || function != 0 {
            return None;
        }
        let register = (a & 0xfc) as usize + port;
        self.root.function(device).map(|f| (f.clone(), register))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => match self.target(offset as usize - 4, data.len()) {
                Some((f, register)) => lock(&f).config_read(register, data),
                None => data.fill(0xff),
            },
            // Byte and word accesses to CONFIG_ADDRESS are not configuration cycles.
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 => {
                if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                    // Bits 30:24 are reserved (read as 0); bits 1:0 select type 0.
                    self.address = u32::from_le_bytes(bytes) & 0x80ff_fffc;
                }
            }
            4..=7 => {
                if let Some((f, register)) = self.target(offset as usize - 4, data.len()) {
                    lock(&f).config_write(register, data);
                }
            }
            _ => {}
        }
    }
}

/// The PCI memory window: an access goes to the function whose enabled BAR holds it.
pub struct PciMmioWindow {
    base: u64,
    root: Arc<PciRoot>,
}

impl PciMmioWindow {
    /// The window starting at guest-physical `base` of `root`'s functions.
    pub fn new(base: u64, root: Arc<PciRoot>) -> Self {
        Self { base, root }
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let addr = self.base + offset;
        if !self.root.functions().any(|f| lock(f).mmio_read(addr, data)) {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base + offset;
        let _ = self
            .root
            .functions()
            .any(|f| lock(f).mmio_write(addr, data));
    }
}
