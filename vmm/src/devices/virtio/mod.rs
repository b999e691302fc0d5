//! Virtio devices over the MMIO transport (virtio 1.x, "modern" only).
//!
//! # Interface for the VM builder
//!
//! ```text
//! let irq = EventFd::new(EFD_NONBLOCK)?;            // registered as KVM irqfd for GSI 5 + i
//! let dev = virtio::new_block_device(&DiskConfig { path, readonly }, mem.clone(), Arc::new(irq_clone))?;
//! mmio_bus.insert(dev, 0xd000_0000 + i * 0x1000, 0x1000)?;   // MMIO_WINDOW_SIZE
//! // Linux finds it through the ACPI DSDT (crate::acpi), or with
//! // `virtio_mmio.device=4K@0xd0000000:5` on kernels built with VIRTIO_MMIO_CMDLINE_DEVICES.
//! ```
//!
//! - [`DiskConfig`]: the backing file and whether the guest may write it (the `--disk`
//!   option parses into it: `crate::config::DiskSpec` is this type).
//! - [`IrqTrigger`]: how a device raises its interrupt; implemented for
//!   [`vmm_sys_util::eventfd::EventFd`] (write 1), which the builder registers as an irqfd.
//! - [`new_block_device`]: a virtio-mmio transport (version 2) carrying a virtio-blk device,
//!   as a [`SharedDevice`] for a [`MMIO_WINDOW_SIZE`]-byte MMIO window. The transport and
//!   the device reach guest memory through any [`vm_memory::GuestMemory`], so a test or a
//!   fuzz target drives them without a VM.
//! - [`VIRTIO_F_ACCESS_PLATFORM`]: offered by every device, as an SEV-SNP guest requires;
//!   before a device exists the launch policy asks [`block::OFFERS_ACCESS_PLATFORM`], after
//!   it [`MmioTransport::offers_access_platform`].
//!
//! Queues are processed synchronously in the vCPU thread that writes QueueNotify; the device
//! then sets bit 0 of InterruptStatus and triggers the interrupt, unless the driver
//! negotiated [`VIRTIO_F_RING_EVENT_IDX`] and its `used_event` says it does not want one
//! yet. Anything malformed the guest hands over fails that request, or marks the device
//! DEVICE_NEEDS_RESET; it never panics the monitor.
//!
//! Modules: [`queue`] (the rust-vmm `virtio-queue` crate's split virtqueue under a layer
//! that validates whole chains), [`mmio`] (the transport's registers), [`block`]
//! (virtio-blk requests and their backends).

pub mod block;
pub mod mmio;
pub mod pci;
pub mod queue;
pub mod transport;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::SharedDevice;

pub use block::Block;
pub use mmio::{MmioFrontend, MmioTransport};
pub use queue::{ChainError, Descriptor, QueueError, RingFeatures, SplitQueue};
pub use transport::{Interrupt, InterruptSink, NotifiedDevice, QueueNotifier, VirtioState};

/// Size of the MMIO window of one virtio-mmio device (registers + config space).
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Feature bit: the device complies with virtio 1.x (required by the MMIO version 2
/// transport as implemented here).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Feature bit 28 (virtio 1.x spec 6, VIRTIO_F_INDIRECT_DESC there): the driver may put a
/// chain in an indirect descriptor table (spec 2.7.5.3), one descriptor of the queue
/// pointing at it.
pub const VIRTIO_F_RING_INDIRECT_DESC: u64 = 1 << 28;

/// Feature bit 29 (virtio 1.x spec 6, VIRTIO_F_EVENT_IDX there): the driver's `used_event`
/// tells the device when to interrupt, the device's `avail_event` when to be notified
/// (spec 2.7.7, 2.7.10).
pub const VIRTIO_F_RING_EVENT_IDX: u64 = 1 << 29;

/// Feature bit 33 (virtio 1.x spec 6, "Reserved Feature Bits"): the device reaches the
/// driver's buffers through the platform's DMA addressing rather than assuming it may
/// touch any of the guest's memory. An SEV-SNP Linux guest probes only virtio devices that
/// offer it, and then bounces every buffer through shared SWIOTLB pages (SNP-FACTS §1.12),
/// so every Cloister virtio device offers it, always: with no IOMMU the addresses stay
/// guest-physical, so it changes nothing for a guest without SNP, and a driver that does
/// not accept it is served as before. The launch policy refuses an SNP launch with a
/// device that does not offer it (`cloister_policy::LaunchRefusal::VirtioAccessPlatform`).
pub const VIRTIO_F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Device status bits (spec 2.1).
pub mod status {
    /// The guest OS noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver acknowledged the features it understands; negotiation is over.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error from which it cannot recover without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// A virtio-blk disk as the user asked for it (`--disk path=PATH[,readonly=on]`, parsed in
/// `crate::config`, where this type is called `DiskSpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Path of the backing file (a raw disk image or a block device).
    pub path: PathBuf,
    /// When true the file is opened read-only, the device offers VIRTIO_BLK_F_RO and
    /// every write request fails with VIRTIO_BLK_S_IOERR.
    pub readonly: bool,
}

/// Raises a device's interrupt towards the guest.
pub trait IrqTrigger: Send + Sync {
    /// Signals the interrupt once.
    fn trigger(&self) -> io::Result<()>;
}

impl IrqTrigger for EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

/// An interrupt that only counts how often it was raised: what unit tests and fuzz
/// targets wire a device to instead of an irqfd.
#[derive(Debug, Default)]
pub struct CountingIrq(pub std::sync::atomic::AtomicUsize);

impl IrqTrigger for CountingIrq {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Errors building a virtio device.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// The disk image could not be opened.
    #[error("cannot open disk image {path} ({mode}): {source}")]
    OpenDisk {
        /// Path of the image.
        path: PathBuf,
        /// "read-only" or "read-write".
        mode: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The size of the disk image could not be read.
    #[error("cannot read the size of disk image {path}: {source}")]
    DiskSize {
        /// Path of the image.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The disk image is a directory or other non-file.
    #[error("disk image {path} is not a regular file or block device")]
    NotAFile {
        /// Path of the image.
        path: PathBuf,
    },
    /// The disk image holds less than one 512-byte sector.
    #[error("disk image {path} is {size} bytes, smaller than one 512-byte sector")]
    DiskTooSmall {
        /// Path of the image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
}

/// The device side of a virtio device, driven by a transport ([`MmioTransport`]).
pub trait VirtioDevice: Send {
    /// Virtio device ID (spec 5; 2 for a block device).
    fn device_type(&self) -> u32;
    /// All feature bits the device offers.
    fn device_features(&self) -> u64;
    /// Whether the device offers [`VIRTIO_F_ACCESS_PLATFORM`], which an SEV-SNP guest
    /// requires of every virtio device.
    fn offers_access_platform(&self) -> bool {
        self.device_features() & VIRTIO_F_ACCESS_PLATFORM != 0
    }
    /// Maximum size of each of the device's queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space at `offset`; bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space (ignored where read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver accepted `features` (a subset of [`Self::device_features`]).
    fn set_acked_features(&mut self, features: u64);
    /// Serves every available chain on queue `index`. Returns whether an interrupt is
    /// due (a chain went back to the used ring and the driver wants to hear of it). `Err`
    /// means the queue is unusable and the device needs a reset.
    fn process_queue<M: GuestMemory>(
        &mut self,
        index: usize,
        queue: &mut SplitQueue,
        mem: &M,
    ) -> Result<bool, QueueError>;
    /// Back to the state after construction (the driver wrote 0 to Status).
    fn reset(&mut self);
}

/// Logs what a guest did wrong: the first [`GuestErrorLog::WARNINGS`] at warn level, the
/// rest at debug level, so a hostile guest cannot flood the monitor's log.
#[derive(Debug)]
pub struct GuestErrorLog {
    pub(crate) left: u32,
}

impl Default for GuestErrorLog {
    fn default() -> Self {
        Self {
            left: Self::WARNINGS,
        }
    }
}

impl GuestErrorLog {
    /// Warnings logged before switching to debug level.
    pub const WARNINGS: u32 = 16;

    /// Logs one guest error.
    pub fn log(&mut self, args: std::fmt::Arguments<'_>) {
        if self.left == 0 {
            log::debug!("{args}");
            return;
        }
        self.left -= 1;
        log::warn!("{args}");
        if self.left == 0 {
            log::warn!("further guest errors of this device are logged at debug level only");
        }
    }
}

/// Builds a virtio-blk device on a virtio-mmio transport, backed by the file in `cfg`,
/// reaching the guest's memory through `mem`.
pub fn new_block_device<M: GuestMemory + Send + 'static>(
    cfg: &DiskConfig,
    mem: M,
    irq: Arc<dyn IrqTrigger>,
) -> Result<SharedDevice, VirtioError> {
    let block = Block::open(cfg)?;
    Ok(Arc::new(Mutex::new(MmioTransport::new(block, mem, irq))))
}

/// The same device for a device thread: QueueNotify writes go to `notifier` (an eventfd
/// the thread waits on, also registered as a KVM ioeventfd) and the thread serves the
/// queues through the returned [`NotifiedDevice`] handle, so no vCPU thread does the
/// device's I/O.
pub fn new_threaded_block_device<M: GuestMemory + Send + 'static>(
    cfg: &DiskConfig,
    mem: M,
    irq: Arc<dyn IrqTrigger>,
    notifier: Arc<dyn QueueNotifier>,
) -> Result<(SharedDevice, Arc<Mutex<dyn NotifiedDevice>>), VirtioError> {
    let block = Block::open(cfg)?;
    let front = MmioFrontend::new(MmioTransport::new(block, mem, irq), notifier);
    let transport = front.transport();
    Ok((Arc::new(Mutex::new(front)), transport))
}

#[cfg(test)]
mod tests;
