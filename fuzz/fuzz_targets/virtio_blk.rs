//! Fuzzes the virtio-mmio transport and the virtio-blk device as a hostile guest would
//! drive them: well-formed and malformed requests (in the queue's table or in an indirect
//! table), arbitrary descriptor table entries, available-ring entries and indices,
//! `used_event` values, register accesses and memory pokes, in guest memory with a hole
//! in it, with or without VIRTIO_F_RING_INDIRECT_DESC and VIRTIO_F_RING_EVENT_IDX.
//!
//! Checked besides "no panic": a read-only disk never changes and the disk never changes
//! size.
#![no_main]

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use arbitrary::Arbitrary;
use cloister_vmm::devices::bus::BusDevice;
use cloister_vmm::devices::virtio::block::{Block, MemDisk, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO};
use cloister_vmm::devices::virtio::mmio::reg;
use cloister_vmm::devices::virtio::queue::{
    VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use cloister_vmm::devices::virtio::{
    status, CountingIrq, MmioTransport, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC,
};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Two 64 KiB regions with a 64 KiB hole between them.
const REGION_SIZE: u64 = 0x1_0000;
const SECOND_REGION: u64 = 0x2_0000;
const DISK_SECTORS: usize = 16;
/// Where well-placed rings go (room for 256 entries each).
const GOOD_DESC: u64 = 0x0000;
const GOOD_AVAIL: u64 = 0x1000;
const GOOD_USED: u64 = 0x1400;
/// Where request buffers are laid out.
const BUFFERS: u64 = 0x2000;
/// Where a request sent through an indirect table puts the table.
const INDIRECT_TABLE: u64 = SECOND_REGION + 0xf000;

/// A guest address: mostly inside memory, sometimes in the hole or anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Low(u16),
    High(u16),
    Hole(u16),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Addr::Low(o) => u64::from(o),
            Addr::High(o) => SECOND_REGION + u64::from(o),
            Addr::Hole(o) => REGION_SIZE + u64::from(o),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ring {
    Good,
    At(Addr),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum QueueSize {
    PowerOfTwo(u8),
    Raw(u16),
}

#[derive(Arbitrary, Debug)]
enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum Sector {
    Small(u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Len {
    Sectors(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct Segment {
    len: Len,
    /// Device-writable (else device-readable).
    writable: bool,
    /// Put the buffer somewhere chosen instead of the next free buffer space.
    at: Option<Addr>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A request built as a driver would (header, data, status), possibly bent.
    Request {
        kind: RequestType,
        sector: Sector,
        data: Vec<Segment>,
        header_len: Option<u32>,
        header_writable: bool,
        status_writable: bool,
        /// Put the chain in an indirect table, one descriptor of the queue pointing at it.
        indirect: bool,
        notify: bool,
    },
    /// Sets `used_event` (read only with VIRTIO_F_RING_EVENT_IDX).
    UsedEvent(u16),
    /// Writes a descriptor table entry.
    Desc {
        index: u16,
        addr: Addr,
        len: u32,
        flags: u8,
        next: u16,
    },
    /// Publishes a head in the available ring and bumps the index.
    Publish {
        head: u16,
    },
    /// Sets the available index to anything.
    AvailIdx(u16),
    /// Writes QueueNotify.
    Notify(u32),
    /// Any register or configuration access.
    Write {
        offset: u16,
        value: u32,
        width: u8,
    },
    Read {
        offset: u16,
        width: u8,
    },
    /// Arbitrary bytes into guest memory.
    Poke {
        at: Addr,
        bytes: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    readonly: bool,
    /// Negotiate features and set up queue 0 before the ops.
    activate: bool,
    /// Accept VIRTIO_F_RING_EVENT_IDX when activating.
    event_idx: bool,
    /// Accept VIRTIO_F_RING_INDIRECT_DESC when activating.
    indirect_desc: bool,
    queue_size: QueueSize,
    desc_table: Ring,
    avail_ring: Ring,
    used_ring: Ring,
    ops: Vec<Op>,
}

fn wr(dev: &mut dyn BusDevice, offset: u64, value: u32) {
    dev.write(offset, &value.to_le_bytes());
}

struct Driver {
    mem: GuestMemoryMmap,
    size: u16,
    desc_table: u64,
    avail_ring: u64,
    next_desc: u16,
    avail_idx: u16,
}

/// Writes one descriptor table entry at `at`.
fn write_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    let _ = mem.write_slice(&raw, GuestAddress(at));
}

impl Driver {
    fn desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self
            .desc_table
            .wrapping_add(16 * u64::from(index % self.size));
        write_desc(&self.mem, at, addr, len, flags, next);
    }

    fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        let _ = self.mem.write_obj(
            head,
            GuestAddress(self.avail_ring.wrapping_add(4 + 2 * slot)),
        );
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let _ = self.mem.write_obj(
            self.avail_idx,
            GuestAddress(self.avail_ring.wrapping_add(2)),
        );
    }
}

fuzz_target!(|input: Input| {
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), REGION_SIZE as usize),
        (GuestAddress(SECOND_REGION), REGION_SIZE as usize),
    ]) else {
        return;
    };
    let disk: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 253) as u8).collect();
    let block = Block::with_backend(
        MemDisk {
            bytes: disk.clone(),
            flushes: 0,
        },
        disk.len() as u64,
        input.readonly,
        *b"fuzz-disk-identifier",
    );
    let irq = Arc::new(CountingIrq(AtomicUsize::new(0)));
    let mut dev = MmioTransport::new(block, mem.clone(), irq);

    let place = |ring: Ring, good: u64| match ring {
        Ring::Good => good,
        Ring::At(a) => a.get(),
    };
    let desc_table = place(input.desc_table, GOOD_DESC);
    let avail_ring = place(input.avail_ring, GOOD_AVAIL);
    let used_ring = place(input.used_ring, GOOD_USED);
    let queue_size = match input.queue_size {
        QueueSize::PowerOfTwo(n) => 1u16 << (n % 9),
        QueueSize::Raw(n) => n,
    };
    if input.activate {
        wr(&mut dev, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(&mut dev, reg::DRIVER_FEATURES_SEL, 1);
        wr(&mut dev, reg::DRIVER_FEATURES, 1);
        wr(&mut dev, reg::DRIVER_FEATURES_SEL, 0);
        let ro = if input.readonly { VIRTIO_BLK_F_RO } else { 0 };
        let event_idx = if input.event_idx {
            VIRTIO_F_RING_EVENT_IDX
        } else {
            0
        };
        let indirect = if input.indirect_desc {
            VIRTIO_F_RING_INDIRECT_DESC
        } else {
            0
        };
        wr(
            &mut dev,
            reg::DRIVER_FEATURES,
            (VIRTIO_BLK_F_FLUSH | ro | event_idx | indirect) as u32,
        );
        wr(
            &mut dev,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        wr(&mut dev, reg::QUEUE_SEL, 0);
        wr(&mut dev, reg::QUEUE_NUM, u32::from(queue_size));
        wr(&mut dev, reg::QUEUE_DESC_LOW, desc_table as u32);
        wr(&mut dev, reg::QUEUE_DESC_HIGH, (desc_table >> 32) as u32);
        wr(&mut dev, reg::QUEUE_DRIVER_LOW, avail_ring as u32);
        wr(&mut dev, reg::QUEUE_DRIVER_HIGH, (avail_ring >> 32) as u32);
        wr(&mut dev, reg::QUEUE_DEVICE_LOW, used_ring as u32);
        wr(&mut dev, reg::QUEUE_DEVICE_HIGH, (used_ring >> 32) as u32);
        wr(&mut dev, reg::QUEUE_READY, 1);
        let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        wr(&mut dev, reg::STATUS, ok);
    }

    let mut drv = Driver {
        mem: mem.clone(),
        size: queue_size.max(1),
        desc_table,
        avail_ring,
        next_desc: 0,
        avail_idx: 0,
    };
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Request {
                kind,
                sector,
                data,
                header_len,
                header_writable,
                status_writable,
                indirect,
                notify,
            } => {
                let kind: u32 = match kind {
                    RequestType::In => 0,
                    RequestType::Out => 1,
                    RequestType::Flush => 4,
                    RequestType::GetId => 8,
                    RequestType::Other(t) => t,
                };
                let sector = match sector {
                    Sector::Small(s) => u64::from(s % 20),
                    Sector::Raw(s) => s,
                };
                let mut header = [0u8; 16];
                header[..4].copy_from_slice(&kind.to_le_bytes());
                header[8..].copy_from_slice(&sector.to_le_bytes());
                let _ = mem.write_slice(&header, GuestAddress(BUFFERS));
                // (addr, len, flags) of the chain.
                let mut chain = vec![(
                    BUFFERS,
                    header_len.unwrap_or(16),
                    if header_writable {
                        VIRTQ_DESC_F_WRITE
                    } else {
                        0
                    },
                )];
                let mut free = BUFFERS + 16;
                for seg in data.into_iter().take(8) {
                    let len = match seg.len {
                        Len::Sectors(n) => 512 * u32::from(n % 5),
                        Len::Raw(n) => n,
                    };
                    let addr = match seg.at {
                        Some(a) => a.get(),
                        None => {
                            let a = free;
                            free = free.saturating_add(u64::from(len));
                            a
                        }
                    };
                    chain.push((addr, len, if seg.writable { VIRTQ_DESC_F_WRITE } else { 0 }));
                }
                chain.push((
                    free,
                    1,
                    if status_writable {
                        VIRTQ_DESC_F_WRITE
                    } else {
                        0
                    },
                ));
                let head = drv.next_desc % drv.size;
                let n = chain.len();
                if indirect {
                    for (i, (addr, len, flags)) in chain.into_iter().enumerate() {
                        let next = i as u16 + 1;
                        let flags = if i + 1 < n {
                            flags | VIRTQ_DESC_F_NEXT
                        } else {
                            flags
                        };
                        let at = INDIRECT_TABLE + 16 * i as u64;
                        write_desc(&mem, at, addr, len, flags, next);
                    }
                    let table_len = 16 * n as u32;
                    drv.desc(head, INDIRECT_TABLE, table_len, VIRTQ_DESC_F_INDIRECT, 0);
                    drv.next_desc = (head + 1) % drv.size;
                } else {
                    for (i, (addr, len, flags)) in chain.into_iter().enumerate() {
                        let index = (head as usize + i) as u16 % drv.size;
                        let next = (index + 1) % drv.size;
                        let flags = if i + 1 < n {
                            flags | VIRTQ_DESC_F_NEXT
                        } else {
                            flags
                        };
                        drv.desc(index, addr, len, flags, next);
                    }
                    drv.next_desc = (head as usize + n) as u16 % drv.size;
                }
                drv.publish(head);
                if notify {
                    wr(&mut dev, reg::QUEUE_NOTIFY, 0);
                }
            }
            Op::Desc {
                index,
                addr,
                len,
                flags,
                next,
            } => {
                drv.desc(index, addr.get(), len, u16::from(flags), next);
            }
            Op::UsedEvent(value) => {
                let at = avail_ring.wrapping_add(4 + 2 * u64::from(drv.size));
                let _ = mem.write_obj(value, GuestAddress(at));
            }
            Op::Publish { head } => drv.publish(head),
            Op::AvailIdx(idx) => {
                drv.avail_idx = idx;
                let _ = mem.write_obj(idx, GuestAddress(avail_ring.wrapping_add(2)));
            }
            Op::Notify(q) => wr(&mut dev, reg::QUEUE_NOTIFY, q),
            Op::Write {
                offset,
                value,
                width,
            } => {
                let bytes = value.to_le_bytes();
                let n = usize::from(width % 5);
                dev.write(u64::from(offset % 0x1000), &bytes[..n]);
            }
            Op::Read { offset, width } => {
                let mut buf = [0u8; 8];
                let n = usize::from(width % 9);
                dev.read(u64::from(offset % 0x1000), &mut buf[..n]);
            }
            Op::Poke { at, bytes } => {
                let _ = mem.write_slice(&bytes[..bytes.len().min(64)], GuestAddress(at.get()));
            }
        }
        let backend = dev.device().backend();
        assert_eq!(backend.bytes.len(), disk.len(), "the disk changed size");
        if input.readonly {
            assert!(backend.bytes == disk, "a read-only disk was written");
        }
    }
});
