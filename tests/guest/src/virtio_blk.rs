//! A minimal polling virtio-blk driver over virtio-mmio version 2 (virtio 1.x, "modern").
//! One queue of 4 descriptors, one request in flight, no interrupts: the driver notifies
//! and polls the used ring.

use core::cell::UnsafeCell;
use core::sync::atomic::{compiler_fence, Ordering};

use crate::io::{mmio_read32, mmio_write32};

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

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_FAILED: u32 = 128;

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

const QUEUE_SIZE: u16 = 4;
/// Polls of the used ring before a request is declared lost.
const POLL_LIMIT: u32 = 20_000_000;

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

/// Why a device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// The register window does not hold a virtio-mmio device.
    BadMagic,
    /// Not version 2 (modern) virtio-mmio.
    BadVersion(u32),
    /// Not a block device (0: no device behind the window).
    NotBlock(u32),
    /// The device does not offer VIRTIO_F_VERSION_1.
    NoVersion1,
    /// The device cleared FEATURES_OK.
    FeaturesRefused,
    /// Queue 0 is missing or already live.
    QueueUnavailable,
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
pub struct VirtioBlk {
    base: u64,
    /// Capacity in 512-byte sectors.
    pub capacity: u64,
    /// VIRTIO_BLK_F_RO was offered (and accepted).
    pub read_only: bool,
    /// VIRTIO_BLK_F_FLUSH was offered (and accepted).
    pub flush: bool,
    next_avail: u16,
    last_used: u16,
}

impl VirtioBlk {
    /// Resets and initialises the device at `base` (virtio 1.2, 3.1.1).
    pub fn init(base: u64) -> Result<Self, InitError> {
        let reg = |off: u64| mmio_read32(base + off);
        let set = |off: u64, v: u32| mmio_write32(base + off, v);
        if reg(MAGIC) != MAGIC_VALUE {
            return Err(InitError::BadMagic);
        }
        let version = reg(VERSION);
        if version != 2 {
            return Err(InitError::BadVersion(version));
        }
        let id = reg(DEVICE_ID);
        if id != DEVICE_ID_BLOCK {
            return Err(InitError::NotBlock(id));
        }
        set(STATUS, 0);
        let mut status = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
        set(STATUS, STATUS_ACKNOWLEDGE);
        set(STATUS, status);

        set(DEVICE_FEATURES_SEL, 0);
        let low = u64::from(reg(DEVICE_FEATURES));
        set(DEVICE_FEATURES_SEL, 1);
        let offered = low | u64::from(reg(DEVICE_FEATURES)) << 32;
        if offered & F_VERSION_1 == 0 {
            set(STATUS, status | STATUS_FAILED);
            return Err(InitError::NoVersion1);
        }
        let accepted = offered & (F_VERSION_1 | F_RO | F_FLUSH);
        set(DRIVER_FEATURES_SEL, 0);
        set(DRIVER_FEATURES, accepted as u32);
        set(DRIVER_FEATURES_SEL, 1);
        set(DRIVER_FEATURES, (accepted >> 32) as u32);
        status |= STATUS_FEATURES_OK;
        set(STATUS, status);
        if reg(STATUS) & STATUS_FEATURES_OK == 0 {
            set(STATUS, status | STATUS_FAILED);
            return Err(InitError::FeaturesRefused);
        }

        set(QUEUE_SEL, 0);
        let max = reg(QUEUE_NUM_MAX);
        if max < u32::from(QUEUE_SIZE) || reg(QUEUE_READY) != 0 {
            set(STATUS, status | STATUS_FAILED);
            return Err(InitError::QueueUnavailable);
        }
        let q = QUEUE.0.get();
        // SAFETY: no device uses the queue memory now (one device at a time, the previous
        // one was reset); zeroing the rings through the raw pointer is exclusive access.
        unsafe {
            core::ptr::write_bytes(core::ptr::addr_of_mut!((*q).avail), 0, 1);
            core::ptr::write_bytes(core::ptr::addr_of_mut!((*q).used), 0, 1);
        }
        // SAFETY: taking field addresses only.
        let (desc, avail, used) = unsafe {
            (
                core::ptr::addr_of!((*q).desc) as u64,
                core::ptr::addr_of!((*q).avail) as u64,
                core::ptr::addr_of!((*q).used) as u64,
            )
        };
        set(QUEUE_NUM, u32::from(QUEUE_SIZE));
        for (off, addr) in [
            (QUEUE_DESC, desc),
            (QUEUE_DRIVER, avail),
            (QUEUE_DEVICE, used),
        ] {
            set(off, addr as u32);
            set(off + 4, (addr >> 32) as u32);
        }
        set(QUEUE_READY, 1);
        status |= STATUS_DRIVER_OK;
        set(STATUS, status);

        let capacity = loop {
            let generation = reg(CONFIG_GENERATION);
            let capacity = u64::from(reg(CONFIG)) | u64::from(reg(CONFIG + 4)) << 32;
            if reg(CONFIG_GENERATION) == generation {
                break capacity;
            }
        };
        Ok(Self {
            base,
            capacity,
            read_only: accepted & F_RO != 0,
            flush: accepted & F_FLUSH != 0,
            next_avail: 0,
            last_used: 0,
        })
    }

    /// Resets the device, which releases the queue memory.
    pub fn reset(self) {
        mmio_write32(self.base + STATUS, 0);
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
        mmio_write32(self.base + QUEUE_NOTIFY, 0);
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
