//! virtio-blk (virtio 1.x spec 5.2): requests IN, OUT, FLUSH and GET_ID on a raw image.
//!
//! Request layout accepted (what Linux, OVMF and Windows drivers produce): the 16-byte
//! header `{type: le32, reserved: le32, sector: le64}` alone in the first, device-readable
//! descriptor; the data in the descriptors between; the status byte in the final byte of
//! the last, device-writable descriptor. Anything else fails the request with
//! VIRTIO_BLK_S_IOERR (or, when there is no writable status byte, returns the chain with a
//! used length of 0). The layout is the same whether the chain sits in the queue's table
//! or in an indirect table ([`VIRTIO_F_RING_INDIRECT_DESC`], offered): the queue layer
//! hands the device the chain flattened and validated.
//!
//! [`VIRTIO_F_RING_EVENT_IDX`] is offered too: a driver that accepts it is interrupted only
//! when its `used_event` says so, and notifies only when the device's `avail_event` asks.
//! So is [`VIRTIO_BLK_F_MQ`]: the builder gives a disk on PCI one request queue per vCPU
//! ([`Block::with_queues`]); every queue serves the same image.
//!
//! Capacity is the image size divided by 512, rounded down: the tail of an image whose
//! size is not a multiple of 512 is invisible to the guest (a warning is logged), and any
//! request touching a sector at or past the capacity fails with VIRTIO_BLK_S_IOERR.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::queue::{Descriptor, PoppedChain, QueueError, SplitQueue};
use super::{
    DiskConfig, GuestErrorLog, VirtioDevice, VirtioError, VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
};

/// Virtio device ID of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Largest queue the device offers.
pub const QUEUE_SIZE: u16 = 256;

/// Feature: `seg_max` in the configuration is valid.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: the device honours VIRTIO_BLK_T_FLUSH.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Feature: `num_queues` in the configuration is valid; the device has that many request
/// queues.
pub const VIRTIO_BLK_F_MQ: u64 = 1 << 12;
/// Most request queues a device offers. With more vCPUs than this, Linux maps several CPUs
/// to one queue.
pub const MAX_QUEUES: u16 = 64;

/// What every virtio-blk device offers; a read-only one adds [`VIRTIO_BLK_F_RO`].
const FEATURES: u64 = VIRTIO_F_VERSION_1
    | VIRTIO_F_ACCESS_PLATFORM
    | VIRTIO_F_RING_INDIRECT_DESC
    | VIRTIO_F_RING_EVENT_IDX
    | VIRTIO_BLK_F_SEG_MAX
    | VIRTIO_BLK_F_FLUSH
    | VIRTIO_BLK_F_MQ;

/// Every virtio-blk device offers VIRTIO_F_ACCESS_PLATFORM: what the launch policy asks
/// before the device exists (`cloister_policy::VirtioDeviceInfo`).
pub const OFFERS_ACCESS_PLATFORM: bool = FEATURES & VIRTIO_F_ACCESS_PLATFORM != 0;

/// Request type: read sectors.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write sectors.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: make written data durable.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: read the 20-byte device ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: the request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: the request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Length of the device ID returned by GET_ID.
pub const DISK_ID_LEN: usize = 20;
/// Length of the request header.
const HEADER_LEN: u32 = 16;
/// Bytes moved between the image and guest memory per step.
const CHUNK: usize = 64 * 1024;
/// Bytes of `struct virtio_blk_config` the device exposes (up to and including
/// num_queues; the topology and writeback fields between read as 0).
const CONFIG_LEN: usize = 36;
/// Offset of `num_queues` (le16) in `struct virtio_blk_config` (spec 5.2.4).
pub const CONFIG_NUM_QUEUES: usize = 34;

/// Where a block device keeps its sectors. Implemented for [`File`] and, for tests and
/// fuzzing, [`MemDisk`].
pub trait DiskBackend: Send {
    /// Size of the image in bytes.
    fn size(&mut self) -> io::Result<u64>;
    /// Fills `buf` from byte `offset`.
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at byte `offset`.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes previous writes durable.
    fn flush(&mut self) -> io::Result<()>;

    /// Fills the guest buffers `segments`, in order, from the image at byte `offset`,
    /// adding each byte placed in guest memory to `written`. The default moves the data
    /// through a bounce buffer, 64 KiB per step; [`File`] reads straight into
    /// guest memory with `preadv`.
    fn read_to_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Descriptor],
        offset: u64,
        written: &mut u32,
    ) -> Result<(), GuestIoError> {
        bounce_read(self, mem, segments, offset, written)
    }

    /// Writes the guest buffers `segments`, in order, to the image at byte `offset`. The
    /// default moves the data through a bounce buffer; [`File`] writes straight from guest
    /// memory with `pwritev`.
    fn write_from_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Descriptor],
        offset: u64,
    ) -> Result<(), GuestIoError> {
        bounce_write(self, mem, segments, offset)
    }
}

/// Why moving data between a disk and guest memory failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestIoError {
    /// A buffer is not guest RAM (or spans a hole in it).
    #[error("guest memory access at {0:#x} failed")]
    GuestMemory(u64),
    /// The image could not be read or written.
    #[error("disk I/O failed: {0}")]
    Io(#[from] io::Error),
}

fn bounce_read<B: DiskBackend + ?Sized, M: GuestMemory>(
    backend: &mut B,
    mem: &M,
    segments: &[Descriptor],
    mut offset: u64,
    written: &mut u32,
) -> Result<(), GuestIoError> {
    let mut buf = bounce_buffer(segments);
    for desc in segments {
        let mut done = 0usize;
        while done < desc.len as usize {
            let n = (desc.len as usize - done).min(CHUNK);
            backend.read_exact_at(&mut buf[..n], offset)?;
            let addr = desc.addr.0 + done as u64;
            mem.write_slice(&buf[..n], GuestAddress(addr))
                .map_err(|_| GuestIoError::GuestMemory(addr))?;
            done += n;
            offset += n as u64;
            *written = written.saturating_add(n as u32);
        }
    }
    Ok(())
}

fn bounce_write<B: DiskBackend + ?Sized, M: GuestMemory>(
    backend: &mut B,
    mem: &M,
    segments: &[Descriptor],
    mut offset: u64,
) -> Result<(), GuestIoError> {
    let mut buf = bounce_buffer(segments);
    for desc in segments {
        let mut done = 0usize;
        while done < desc.len as usize {
            let n = (desc.len as usize - done).min(CHUNK);
            let addr = desc.addr.0 + done as u64;
            mem.read_slice(&mut buf[..n], GuestAddress(addr))
                .map_err(|_| GuestIoError::GuestMemory(addr))?;
            backend.write_all_at(&buf[..n], offset)?;
            done += n;
            offset += n as u64;
        }
    }
    Ok(())
}

/// The host addresses of the guest buffers `segments` (a buffer spanning two regions of
/// guest RAM gives two), for one vectored system call; a buffer that is not all RAM is
/// refused naming its address.
fn guest_iovecs<M: GuestMemory>(
    mem: &M,
    segments: &[Descriptor],
    access: Permissions,
) -> Result<Vec<libc::iovec>, GuestIoError> {
    let mut iovecs = Vec::with_capacity(segments.len());
    for d in segments {
        let bad = |_| GuestIoError::GuestMemory(d.addr.0);
        for slice in mem
            .get_slices(d.addr, d.len as usize, access)
            .map_err(bad)?
        {
            let slice = slice.map_err(bad)?;
            iovecs.push(libc::iovec {
                iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                iov_len: slice.len(),
            });
        }
    }
    Ok(iovecs)
}

/// Drops the first `n` bytes from `iovecs` (after a partial transfer).
fn advance(iovecs: &mut Vec<libc::iovec>, mut n: usize) {
    let whole = iovecs.iter().take_while(|v| {
        let done = n >= v.iov_len;
        if done {
            n -= v.iov_len;
        }
        done
    });
    let whole = whole.count();
    iovecs.drain(..whole);
    if let Some(first) = iovecs.first_mut() {
        // SAFETY: n < first.iov_len here, so the new base stays inside the same buffer.
        first.iov_base = unsafe { first.iov_base.cast::<u8>().add(n) }.cast();
        first.iov_len -= n;
    }
}

/// `preadv`/`pwritev` until `iovecs` is done: short transfers resume where they stopped,
/// end of file is an error (the request was range-checked against the image's size).
fn vectored_io(
    file: &File,
    mut iovecs: Vec<libc::iovec>,
    mut offset: u64,
    write: bool,
    mut on_done: impl FnMut(usize),
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    while !iovecs.is_empty() {
        let count = iovecs.len().min(1024) as libc::c_int; // IOV_MAX
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: every iovec describes guest RAM (checked by guest_iovecs) that stays
        // mapped for the life of the VM; the kernel reads or writes only those bytes.
        let n = unsafe {
            if write {
                libc::pwritev(file.as_raw_fd(), iovecs.as_ptr(), count, off)
            } else {
                libc::preadv(file.as_raw_fd(), iovecs.as_ptr(), count, off)
            }
        };
        match n {
            n if n > 0 => {
                let n = n as usize;
                on_done(n);
                offset += n as u64;
                advance(&mut iovecs, n);
            }
            0 => {
                return Err(io::Error::from(if write {
                    io::ErrorKind::WriteZero
                } else {
                    io::ErrorKind::UnexpectedEof
                }))
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

impl DiskBackend for File {
    fn size(&mut self) -> io::Result<u64> {
        // Seeking works for regular files and block devices alike (metadata().len() is 0
        // for the latter).
        self.seek(SeekFrom::End(0))
    }
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    fn read_to_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Descriptor],
        offset: u64,
        written: &mut u32,
    ) -> Result<(), GuestIoError> {
        let iovecs = guest_iovecs(mem, segments, Permissions::Write)?;
        vectored_io(self, iovecs, offset, false, |n| {
            *written = written.saturating_add(n as u32);
        })?;
        Ok(())
    }
    fn write_from_guest<M: GuestMemory>(
        &mut self,
        mem: &M,
        segments: &[Descriptor],
        offset: u64,
    ) -> Result<(), GuestIoError> {
        let iovecs = guest_iovecs(mem, segments, Permissions::Read)?;
        vectored_io(self, iovecs, offset, true, |_| {})?;
        Ok(())
    }
}

/// An image held in memory (tests, fuzzing).
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    /// The image bytes.
    pub bytes: Vec<u8>,
    /// How many times the device flushed it.
    pub flushes: u64,
}

impl DiskBackend for MemDisk {
    fn size(&mut self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.bytes.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|start| self.bytes.get_mut(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::WriteZero))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

/// Why one request failed (logged; the guest sees VIRTIO_BLK_S_IOERR).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request header descriptor is device-writable")]
    HeaderWritable,
    #[error("request header descriptor is {0} bytes, expected 16")]
    HeaderLength(u32),
    #[error("data descriptor {index} has the wrong direction for a {kind} request")]
    DataDirection { index: usize, kind: &'static str },
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    #[error("sectors {sector}..+{count} are beyond the disk's {capacity} sectors")]
    OutOfRange {
        sector: u64,
        count: u64,
        capacity: u64,
    },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("guest memory access at {0:#x} failed")]
    GuestMemory(u64),
    #[error("disk I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl From<GuestIoError> for RequestError {
    fn from(e: GuestIoError) -> Self {
        match e {
            GuestIoError::GuestMemory(addr) => Self::GuestMemory(addr),
            GuestIoError::Io(e) => Self::Io(e),
        }
    }
}

/// A virtio-blk device over a [`DiskBackend`].
pub struct Block<B: DiskBackend = File> {
    backend: B,
    readonly: bool,
    capacity: u64,
    disk_id: [u8; DISK_ID_LEN],
    acked_features: u64,
    queue_sizes: Vec<u16>,
    guest_errors: GuestErrorLog,
}

impl Block<File> {
    /// Opens the image named by `cfg` (read-only when `cfg.readonly`).
    pub fn open(cfg: &DiskConfig) -> Result<Self, VirtioError> {
        let path = cfg.path.clone();
        let mode = if cfg.readonly {
            "read-only"
        } else {
            "read-write"
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!cfg.readonly)
            .open(&cfg.path)
            .map_err(|source| VirtioError::OpenDisk {
                path: path.clone(),
                mode,
                source,
            })?;
        let meta = file.metadata().map_err(|source| VirtioError::DiskSize {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(VirtioError::NotAFile { path });
        }
        let mut disk_id = [0u8; DISK_ID_LEN];
        let id = format!("{:x}{:x}", meta.dev(), meta.ino());
        let n = id.len().min(DISK_ID_LEN);
        disk_id[..n].copy_from_slice(&id.as_bytes()[..n]);
        let size = file.size().map_err(|source| VirtioError::DiskSize {
            path: path.clone(),
            source,
        })?;
        if size < SECTOR_SIZE {
            return Err(VirtioError::DiskTooSmall { path, size });
        }
        if !size.is_multiple_of(SECTOR_SIZE) {
            log::warn!(
                "disk image {} is {size} bytes, not a multiple of 512; the last {} bytes are not visible to the guest",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        Ok(Self::with_backend(file, size, cfg.readonly, disk_id))
    }
}

impl<B: DiskBackend> Block<B> {
    /// A device over `backend`, whose size is `size` bytes, with GET_ID answer `disk_id`.
    pub fn with_backend(backend: B, size: u64, readonly: bool, disk_id: [u8; DISK_ID_LEN]) -> Self {
        Self {
            backend,
            readonly,
            capacity: size / SECTOR_SIZE,
            disk_id,
            acked_features: 0,
            queue_sizes: vec![QUEUE_SIZE],
            guest_errors: GuestErrorLog::default(),
        }
    }

    /// The same device with `queues` request queues (clamped to 1..=[`MAX_QUEUES`]), as
    /// offered to the driver by VIRTIO_BLK_F_MQ. With one queue per vCPU, Linux submits
    /// and completes a request on the same CPU (each queue has its own MSI-X vector, bound
    /// to its CPU), so a completion does not need an IPI to wake the waiter elsewhere.
    pub fn with_queues(mut self, queues: u16) -> Self {
        self.queue_sizes = vec![QUEUE_SIZE; usize::from(queues.clamp(1, MAX_QUEUES))];
        self
    }

    /// The backend (tests look at what was written).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Serves one validated chain; returns the number of bytes written into it.
    fn serve<M: GuestMemory>(&mut self, chain: &[Descriptor], mem: &M) -> u32 {
        let Some((status_desc, rest)) = chain.split_last() else {
            return 0;
        };
        if !status_desc.device_writable || status_desc.len == 0 || rest.is_empty() {
            self.guest_errors.log(format_args!(
                "virtio-blk: request without a header and a writable status byte; dropped"
            ));
            return 0;
        }
        let (header, data) = (rest[0], &rest[1..]);
        let mut written: u32 = 0;
        let status = match self.execute(header, data, mem, &mut written) {
            Ok(status) => status,
            Err(e) => {
                self.guest_errors
                    .log(format_args!("virtio-blk: request failed: {e}"));
                VIRTIO_BLK_S_IOERR
            }
        };
        let status_addr = status_desc.addr.0 + u64::from(status_desc.len) - 1;
        if mem.write_obj(status, GuestAddress(status_addr)).is_err() {
            self.guest_errors.log(format_args!(
                "virtio-blk: cannot write the status byte at {status_addr:#x}"
            ));
            return written;
        }
        written.saturating_add(1)
    }

    fn execute<M: GuestMemory>(
        &mut self,
        header: Descriptor,
        data: &[Descriptor],
        mem: &M,
        written: &mut u32,
    ) -> Result<u8, RequestError> {
        if header.device_writable {
            return Err(RequestError::HeaderWritable);
        }
        if header.len != HEADER_LEN {
            return Err(RequestError::HeaderLength(header.len));
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        mem.read_slice(&mut raw, header.addr)
            .map_err(|_| RequestError::GuestMemory(header.addr.0))?;
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = raw;
        let request_type = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        match request_type {
            VIRTIO_BLK_T_IN => {
                check_direction(data, true, "read")?;
                let offset = self.check_range(sector, data)?;
                self.read_into(data, offset, mem, written)?;
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(RequestError::ReadOnly);
                }
                check_direction(data, false, "write")?;
                let offset = self.check_range(sector, data)?;
                self.write_from(data, offset, mem)?;
                // Without a negotiated FLUSH the driver cannot ask for durability, so the
                // device is write-through (spec 5.2.6.2: "the device MUST ... as if
                // VIRTIO_BLK_F_FLUSH were not offered: writethrough").
                if self.acked_features & VIRTIO_BLK_F_FLUSH == 0 {
                    self.backend.flush()?;
                }
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_FLUSH => {
                self.backend.flush()?;
                Ok(VIRTIO_BLK_S_OK)
            }
            VIRTIO_BLK_T_GET_ID => {
                check_direction(data, true, "get-id")?;
                let mut id = &self.disk_id[..];
                for desc in data {
                    let n = id.len().min(desc.len as usize);
                    mem.write_slice(&id[..n], desc.addr)
                        .map_err(|_| RequestError::GuestMemory(desc.addr.0))?;
                    *written += n as u32;
                    id = &id[n..];
                }
                Ok(VIRTIO_BLK_S_OK)
            }
            other => {
                log::debug!("virtio-blk: unsupported request type {other}");
                Ok(VIRTIO_BLK_S_UNSUPP)
            }
        }
    }

    /// Checks that the data fits the disk from `sector` on; returns its byte offset.
    fn check_range(&self, sector: u64, data: &[Descriptor]) -> Result<u64, RequestError> {
        let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
        if !total.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::UnalignedLength(total));
        }
        let count = total / SECTOR_SIZE;
        match sector.checked_add(count) {
            Some(end) if end <= self.capacity => Ok(sector * SECTOR_SIZE),
            _ => Err(RequestError::OutOfRange {
                sector,
                count,
                capacity: self.capacity,
            }),
        }
    }

    fn read_into<M: GuestMemory>(
        &mut self,
        data: &[Descriptor],
        offset: u64,
        mem: &M,
        written: &mut u32,
    ) -> Result<(), RequestError> {
        Ok(self.backend.read_to_guest(mem, data, offset, written)?)
    }

    fn write_from<M: GuestMemory>(
        &mut self,
        data: &[Descriptor],
        offset: u64,
        mem: &M,
    ) -> Result<(), RequestError> {
        Ok(self.backend.write_from_guest(mem, data, offset)?)
    }
}

/// A buffer for moving data between the image and guest memory: as large as the
/// largest descriptor, at most [`CHUNK`].
fn bounce_buffer(data: &[Descriptor]) -> Vec<u8> {
    let largest = data.iter().map(|d| d.len as usize).max().unwrap_or(0);
    vec![0u8; largest.min(CHUNK)]
}

/// Every data descriptor must be device-writable (`writable`) or device-readable.
fn check_direction(
    data: &[Descriptor],
    writable: bool,
    kind: &'static str,
) -> Result<(), RequestError> {
    match data.iter().position(|d| d.device_writable != writable) {
        Some(i) => Err(RequestError::DataDirection { index: i + 1, kind }),
        None => Ok(()),
    }
}

impl<B: DiskBackend> VirtioDevice for Block<B> {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn device_features(&self) -> u64 {
        let ro = if self.readonly { VIRTIO_BLK_F_RO } else { 0 };
        FEATURES | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; CONFIG_LEN];
        config[0..8].copy_from_slice(&self.capacity.to_le_bytes());
        // seg_max: a request needs a header and a status descriptor besides its data.
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        // At most MAX_QUEUES entries: the count fits the le16 field.
        let queues = self.queue_sizes.len() as u16;
        config[CONFIG_NUM_QUEUES..CONFIG_NUM_QUEUES + 2].copy_from_slice(&queues.to_le_bytes());
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| config.get(o).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-blk: write to read-only configuration at {offset:#x} ignored");
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn process_queue<M: GuestMemory>(
        &mut self,
        _index: usize,
        queue: &mut SplitQueue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        queue.serve_available(mem, |popped: PoppedChain| match popped.descriptors {
            Ok(chain) => self.serve(&chain, mem),
            Err(e) => {
                self.guest_errors.log(format_args!(
                    "virtio-blk: malformed descriptor chain (head {}): {e}",
                    popped.head
                ));
                0
            }
        })
    }

    fn reset(&mut self) {
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod vectored_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Two regions that touch (0..64 KiB, 64..128 KiB) so a buffer can span both, and a
    /// third after a hole.
    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
            (GuestAddress(0x40000), 0x10000),
        ])
        .unwrap()
    }

    fn seg(addr: u64, len: u32) -> Descriptor {
        Descriptor {
            addr: GuestAddress(addr),
            len,
            device_writable: true,
        }
    }

    fn image() -> Vec<u8> {
        (0..0x20000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        FileExt::write_all_at(&f, bytes, 0).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    /// The file's preadv/pwritev path moves exactly the bytes the bounce-buffer path moves,
    /// for buffers of odd sizes, one spanning two regions, in a different order than memory.
    #[test]
    fn vectored_file_io_matches_the_bounce_path() {
        let segments = [
            seg(0x1000, 512),
            seg(0xfe00, 0x400), // spans the two touching regions
            seg(0x40200, 0x2000),
            seg(0x200, 0x600),
        ];
        let total: u32 = segments.iter().map(|d| d.len).sum();
        let (file_mem, bounce_mem) = (memory(), memory());
        let mut file = file_with(&image());
        let mut disk = MemDisk {
            bytes: image(),
            flushes: 0,
        };
        let (mut w_file, mut w_bounce) = (0u32, 0u32);
        file.read_to_guest(&file_mem, &segments, 0x3000, &mut w_file)
            .unwrap();
        disk.read_to_guest(&bounce_mem, &segments, 0x3000, &mut w_bounce)
            .unwrap();
        assert_eq!((w_file, w_bounce), (total, total));
        let mut offset = 0x3000usize;
        for d in &segments {
            let mut got = vec![0u8; d.len as usize];
            file_mem.read_slice(&mut got, d.addr).unwrap();
            assert_eq!(got, image()[offset..offset + d.len as usize], "{d:?}");
            offset += d.len as usize;
        }
        // And back: written at another offset, read from the image.
        file.write_from_guest(&file_mem, &segments, 0x10000)
            .unwrap();
        disk.write_from_guest(&bounce_mem, &segments, 0x10000)
            .unwrap();
        let mut on_file = vec![0u8; 0x20000];
        FileExt::read_exact_at(&file, &mut on_file, 0).unwrap();
        assert_eq!(on_file, disk.bytes);
        assert_eq!(
            on_file[0x10000..0x10000 + total as usize],
            image()[0x3000..0x3000 + total as usize]
        );
    }

    #[test]
    fn vectored_file_io_refuses_non_ram_and_short_images() {
        let mem = memory();
        let mut file = file_with(&image());
        let mut written = 0;
        // 0x20000..0x40000 is a hole: nothing is read, and the address is named.
        let err = file
            .read_to_guest(&mem, &[seg(0x0, 512), seg(0x1ff00, 0x200)], 0, &mut written)
            .unwrap_err();
        assert!(matches!(err, GuestIoError::GuestMemory(0x1ff00)), "{err}");
        assert_eq!(written, 0);
        let err = file
            .write_from_guest(&mem, &[seg(0x50000, 512)], 0)
            .unwrap_err();
        assert!(matches!(err, GuestIoError::GuestMemory(0x50000)), "{err}");
        // Reading past the end of the image is an error, not a silent short read.
        let err = file
            .read_to_guest(&mem, &[seg(0, 0x1000)], 0x1f800, &mut written)
            .unwrap_err();
        assert!(
            matches!(&err, GuestIoError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        assert_eq!(written, 0x800, "the part that was read is counted");
    }

    #[test]
    fn advance_drops_whole_and_partial_buffers() {
        let mut bufs = [0u8; 64];
        let base = bufs.as_mut_ptr();
        let iov = |at: usize, len: usize| libc::iovec {
            // SAFETY: at < 64, inside bufs.
            iov_base: unsafe { base.add(at) }.cast(),
            iov_len: len,
        };
        let mut v = vec![iov(0, 8), iov(16, 8), iov(32, 16)];
        advance(&mut v, 10);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].iov_base as usize - base as usize, v[0].iov_len),
            (18, 6)
        );
        advance(&mut v, 6);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].iov_base as usize - base as usize, v[0].iov_len),
            (32, 16)
        );
        advance(&mut v, 16);
        assert!(v.is_empty());
    }
}
