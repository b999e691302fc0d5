//! A minimal polling virtio-blk driver (virtio 1.x, "modern"), the same over every
//! transport: one queue of 4 descriptors, one request in flight, no interrupts: the driver
//! notifies and polls the used ring. Only register access differs between transports
//! ([`Transport`]: virtio-mmio in `virtio_mmio.rs`, virtio-pci in `virtio_pci.rs`).

use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, Ordering};

use crate::serial;

// Device status bits (virtio 1.2, 2.1).
const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 128;

const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_VERSION_1: u64 = 1 << 32;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// Sector size of the virtio-blk request protocol.
pub const SECTOR: usize = 512;
/// Largest transfer of one request.
pub const CHUNK: usize = 4096;

/// The one queue the driver uses (virtio-blk's requestq).
const QUEUE_INDEX: u16 = 0;
const QUEUE_SIZE: u16 = 4;
/// Polls of the used ring before a request is declared lost.
const POLL_LIMIT: u32 = 20_000_000;
/// Reads of device_status after a reset before the device is declared stuck.
const RESET_POLLS: u32 = 1000;
/// Reads of the device configuration before it is declared to change without end.
const CONFIG_READS: u32 = 100;

/// virtio-blk request status byte (5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkStatus {
    /// VIRTIO_BLK_S_OK.
    Ok,
    /// VIRTIO_BLK_S_IOERR.
    IoErr,
    /// VIRTIO_BLK_S_UNSUPP.
    Unsupp,
    /// Any other value the device wrote.
    Other(u8),
    /// The device never completed the request.
    Timeout,
}

/// Why a device that its transport found could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// device_status did not read 0 after the reset (this value instead).
    ResetIgnored(u8),
    /// The device does not offer VIRTIO_F_VERSION_1.
    NoVersion1,
    /// The device cleared FEATURES_OK.
    FeaturesRefused,
    /// The request queue does not exist (its size reads 0).
    NoQueue,
    /// The request queue holds fewer descriptors than the driver needs (its maximum).
    QueueTooSmall(u16),
    /// The request queue is already enabled.
    QueueLive,
    /// The queue's notify address lies outside the transport's notify region (virtio-pci:
    /// queue_notify_off * notify_off_multiplier + 2 is past the notify capability's end).
    NotifyOutside {
        /// Offset of the notify address in the notify region.
        offset: u64,
        /// The region's length.
        length: u64,
    },
    /// config_generation changed on every read of the device configuration.
    ConfigUnstable,
}

impl InitError {
    /// Writes what went wrong (no line prefix, no newline).
    pub fn print(&self) {
        match *self {
            InitError::ResetIgnored(status) => {
                serial::write(b"device_status reads ");
                serial::write_hex(u64::from(status));
                serial::write(b" after a reset, not 0");
            }
            InitError::NoVersion1 => serial::write(b"VIRTIO_F_VERSION_1 not offered"),
            InitError::FeaturesRefused => serial::write(b"device refused the features"),
            InitError::NoQueue => serial::write(b"queue 0 unavailable (size 0)"),
            InitError::QueueTooSmall(max) => {
                serial::write(b"queue 0 unavailable (at most ");
                serial::write_dec(u64::from(max));
                serial::write(b" descriptors, the driver needs ");
                serial::write_dec(u64::from(QUEUE_SIZE));
                serial::write(b")");
            }
            InitError::QueueLive => serial::write(b"queue 0 unavailable (already enabled)"),
            InitError::NotifyOutside { offset, length } => {
                serial::write(b"queue 0's notify address (+");
                serial::write_hex(offset);
                serial::write(b") is outside the notify region (");
                serial::write_hex(length);
                serial::write(b" bytes)");
            }
            InitError::ConfigUnstable => {
                serial::write(b"config_generation changes on every configuration read")
            }
        }
    }
}

/// Where the driver placed the rings of its queue (guest-physical addresses).
#[derive(Clone, Copy, Debug)]
pub struct Rings {
    /// The descriptor table.
    pub desc: u64,
    /// The driver (available) ring.
    pub driver: u64,
    /// The device (used) ring.
    pub device: u64,
}

/// What the transport says of a queue it selected.
#[derive(Clone, Copy, Debug)]
pub struct QueueState {
    /// Its largest size (0: no such queue).
    pub max_size: u16,
    /// It is enabled already.
    pub enabled: bool,
}

/// Register access of one virtio transport (virtio 1.2, 4): the device status, feature
/// bits, queue set-up, notification and device configuration, each as its transport lays
/// them out. The driver uses one queue: [`Transport::notify`] notifies the queue that
/// [`Transport::enable_queue`] enabled last.
pub trait Transport {
    /// Reads device_status.
    fn status(&self) -> u8;
    /// Writes device_status (0 resets the device).
    fn set_status(&mut self, status: u8);
    /// The 64 feature bits the device offers.
    fn device_features(&mut self) -> u64;
    /// Writes the 64 feature bits the driver accepts.
    fn set_driver_features(&mut self, features: u64);
    /// Selects queue `index` and says what it is.
    fn select_queue(&mut self, index: u16) -> QueueState;
    /// Gives the selected queue `size` descriptors and the `rings`, and enables it.
    fn enable_queue(&mut self, size: u16, rings: Rings) -> Result<(), InitError>;
    /// Notifies the enabled queue that the driver ring has new entries.
    fn notify(&self);
    /// Reads config_generation.
    fn config_generation(&self) -> u32;
    /// Reads 32 bits of the device configuration at `offset`.
    fn config_read32(&self, offset: u64) -> u32;
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C, align(4096))]
struct QueueMemory {
    desc: [Desc; QUEUE_SIZE as usize],
    // Driver (available) ring: flags, idx, ring[QUEUE_SIZE], used_event.
    avail: [u16; 3 + QUEUE_SIZE as usize],
    _pad: [u8; 64],
    // Device (used) ring: flags|idx as u16 pair, then (id, len) pairs, avail_event.
    used: [u32; 2 + 2 * QUEUE_SIZE as usize],
    header: [u32; 4],
    status: u8,
    data: [u8; CHUNK],
}

struct Shared(UnsafeCell<QueueMemory>);
// SAFETY: the guest runs on one CPU with interrupts off; the memory is only touched by
// the driver below, one request at a time, and by the device.
unsafe impl Sync for Shared {}

/// Not zeroed at entry (`.bss.lazy`, guest.ld): `init` zeroes the rings, and every request
/// writes its descriptors, header and status before the device sees them.
#[link_section = ".bss.lazy"]
static QUEUE: Shared = Shared(UnsafeCell::new(QueueMemory {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; QUEUE_SIZE as usize],
    avail: [0; 3 + QUEUE_SIZE as usize],
    _pad: [0; 64],
    used: [0; 2 + 2 * QUEUE_SIZE as usize],
    header: [0; 4],
    status: 0,
    data: [0; CHUNK],
}));

/// A virtio-blk device that is live (DRIVER_OK). Only one may exist at a time, since the
/// queue memory is shared: [`VirtioBlk::reset`] releases it.
pub struct VirtioBlk<T: Transport> {
    transport: T,
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// VIRTIO_BLK_F_RO was offered (and accepted).
    pub read_only: bool,
    /// VIRTIO_BLK_F_FLUSH was offered (and accepted).
    pub flush: bool,
    next_avail: u16,
    last_used: u16,
}

impl<T: Transport> VirtioBlk<T> {
    /// Resets and initialises the device behind `transport` (virtio 1.2, 3.1.1).
    pub fn init(mut transport: T) -> Result<Self, InitError> {
        let t = &mut transport;
        t.set_status(0);
        wait_for_reset(t)?;
        let mut status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
        t.set_status(STATUS_ACKNOWLEDGE);
        t.set_status(status);

        let offered = t.device_features();
        if offered & F_VERSION_1 == 0 {
            t.set_status(status | STATUS_FAILED);
            return Err(InitError::NoVersion1);
        }
        let accepted = offered & (F_VERSION_1 | F_RO | F_FLUSH);
        t.set_driver_features(accepted);
        status |= STATUS_FEATURES_OK;
        t.set_status(status);
        if t.status() & STATUS_FEATURES_OK == 0 {
            t.set_status(status | STATUS_FAILED);
            return Err(InitError::FeaturesRefused);
        }

        let queue = t.select_queue(QUEUE_INDEX);
        let usable = if queue.max_size == 0 {
            Err(InitError::NoQueue)
        } else if queue.max_size < QUEUE_SIZE {
            Err(InitError::QueueTooSmall(queue.max_size))
        } else if queue.enabled {
            Err(InitError::QueueLive)
        } else {
            Ok(())
        };
        if let Err(error) = usable.and_then(|()| t.enable_queue(QUEUE_SIZE, rings())) {
            t.set_status(status | STATUS_FAILED);
            return Err(error);
        }
        status |= STATUS_DRIVER_OK;
        t.set_status(status);

        let Some(capacity) = read_capacity(t) else {
            t.set_status(status | STATUS_FAILED);
            return Err(InitError::ConfigUnstable);
        };
        Ok(Self {
            transport,
            capacity,
            read_only: accepted & F_RO != 0,
            flush: accepted & F_FLUSH != 0,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// Resets the device, which releases the queue memory; an error if device_status does
    /// not read 0 afterwards (the device may still use the queue memory then).
    pub fn reset(mut self) -> Result<(), InitError> {
        self.transport.set_status(0);
        wait_for_reset(&self.transport)
    }

    /// Reads `out.len()` bytes (at most `CHUNK`, whole sectors) from `sector` into `out`.
    pub fn read(&mut self, sector: u64, out: &mut [u8]) -> BlkStatus {
        let len = out.len().min(CHUNK);
        let status = self.request(T_IN, sector, len, true);
        if status == BlkStatus::Ok {
            let q = QUEUE.0.get();
            compiler_fence(Ordering::SeqCst);
            // SAFETY: the device completed the request, so it no longer writes `data`;
            // `len` is at most its size.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    core::ptr::addr_of!((*q).data) as *const u8,
                    out.as_mut_ptr(),
                    len,
                )
            };
        }
        status
    }

    /// Writes `data` (at most `CHUNK` bytes) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> BlkStatus {
        let len = data.len().min(CHUNK);
        let q = QUEUE.0.get();
        // SAFETY: no request is in flight, so the device does not read `data` now.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                core::ptr::addr_of_mut!((*q).data) as *mut u8,
                len,
            )
        };
        self.request(T_OUT, sector, len, false)
    }

    /// Asks the device to make earlier writes durable.
    pub fn flush(&mut self) -> BlkStatus {
        self.request(T_FLUSH, 0, 0, false)
    }

    /// Submits one request and polls for its completion.
    fn request(&mut self, kind: u32, sector: u64, len: usize, device_writes: bool) -> BlkStatus {
        let q = QUEUE.0.get();
        let slot = usize::from(self.next_avail % QUEUE_SIZE);
        // SAFETY: exclusive access to the queue memory between requests (one in flight at
        // a time, single CPU); the device reads it only after the notify below. Volatile
        // writes keep the compiler from reordering or dropping them.
        unsafe {
            let header = core::ptr::addr_of_mut!((*q).header);
            header.write_volatile([kind, 0, sector as u32, (sector >> 32) as u32]);
            core::ptr::addr_of_mut!((*q).status).write_volatile(0xff);
            let desc = core::ptr::addr_of_mut!((*q).desc) as *mut Desc;
            let status_desc = Desc {
                addr: core::ptr::addr_of!((*q).status) as u64,
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            };
            desc.write_volatile(Desc {
                addr: header as u64,
                len: 16,
                flags: DESC_F_NEXT,
                next: if len > 0 { 1 } else { 2 },
            });
            if len > 0 {
                desc.add(1).write_volatile(Desc {
                    addr: core::ptr::addr_of!((*q).data) as u64,
                    len: len as u32,
                    flags: DESC_F_NEXT | if device_writes { DESC_F_WRITE } else { 0 },
                    next: 2,
                });
            }
            desc.add(2).write_volatile(status_desc);
            let avail = core::ptr::addr_of_mut!((*q).avail) as *mut u16;
            avail.add(2 + slot).write_volatile(0);
            compiler_fence(Ordering::SeqCst);
            self.next_avail = self.next_avail.wrapping_add(1);
            avail.add(1).write_volatile(self.next_avail);
            compiler_fence(Ordering::SeqCst);
        }
        self.transport.notify();
        let used = QUEUE.0.get();
        for _ in 0..POLL_LIMIT {
            // SAFETY: the used ring is read with volatile loads while the device may
            // write it; it is plain memory inside the static.
            let used_idx = unsafe {
                (core::ptr::addr_of!((*used).used) as *const u16)
                    .add(1)
                    .read_volatile()
            };
            if used_idx != self.last_used {
                self.last_used = used_idx;
                compiler_fence(Ordering::SeqCst);
                // SAFETY: the device has completed the request and wrote the status byte.
                let status = unsafe { core::ptr::addr_of!((*q).status).read_volatile() };
                return match status {
                    0 => BlkStatus::Ok,
                    1 => BlkStatus::IoErr,
                    2 => BlkStatus::Unsupp,
                    other => BlkStatus::Other(other),
                };
            }
            core::hint::spin_loop();
        }
        BlkStatus::Timeout
    }
}

/// Waits for device_status to read 0 after a reset (virtio 1.2, 2.4.2).
fn wait_for_reset(transport: &impl Transport) -> Result<(), InitError> {
    let mut status = 0;
    for _ in 0..RESET_POLLS {
        status = transport.status();
        if status == 0 {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(InitError::ResetIgnored(status))
}

/// virtio_blk_config.capacity, read until config_generation says the two halves belong
/// together (virtio 1.2, 2.5.1); `None` if it never does.
fn read_capacity(transport: &impl Transport) -> Option<u64> {
    for _ in 0..CONFIG_READS {
        let generation = transport.config_generation();
        let capacity =
            u64::from(transport.config_read32(0)) | u64::from(transport.config_read32(4)) << 32;
        if transport.config_generation() == generation {
            return Some(capacity);
        }
    }
    None
}

/// Zeroes the rings and says where they are.
fn rings() -> Rings {
    let q = QUEUE.0.get();
    // SAFETY: no device uses the queue memory now (one device at a time, the previous one
    // was reset); zeroing the rings through the raw pointer is exclusive access.
    unsafe {
        core::ptr::write_bytes(core::ptr::addr_of_mut!((*q).avail), 0, 1);
        core::ptr::write_bytes(core::ptr::addr_of_mut!((*q).used), 0, 1);
    }
    // SAFETY: taking field addresses only.
    unsafe {
        Rings {
            desc: core::ptr::addr_of!((*q).desc) as u64,
            driver: core::ptr::addr_of!((*q).avail) as u64,
            device: core::ptr::addr_of!((*q).used) as u64,
        }
    }
}
