//! The split virtqueue (virtio 1.x spec 2.7), device side, with every guest-supplied value
//! checked before it is used.
//!
//! Two classes of guest mistakes are told apart:
//! - [`QueueError`]: the rings themselves are unusable (not in guest memory, an available
//!   index that jumps further than the queue size, a head index out of range). The device
//!   cannot make progress and marks itself broken (DEVICE_NEEDS_RESET).
//! - [`ChainError`]: one descriptor chain is malformed (loop, address outside guest
//!   memory, indirect descriptor). Only that request fails; it is returned to the driver
//!   with a used length of 0 and nothing written.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Descriptor flag: the chain continues in `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds an indirect descriptor table (not offered).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Size of one descriptor table entry.
const DESC_SIZE: u64 = 16;
/// Size of one used ring element (`id: le32, len: le32`).
const USED_ELEM_SIZE: u64 = 8;

/// The rings of a queue cannot be used; the device must be reset by the driver.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The driver set a queue size that is zero, above the maximum or not a power of two.
    #[error("queue size {size} is invalid (must be a power of two from 1 to {max})")]
    InvalidSize {
        /// Size the driver wrote.
        size: u16,
        /// Largest size the device offers.
        max: u16,
    },
    /// A ring is misaligned or does not lie inside guest memory.
    #[error("the {ring} at {addr:#x} ({len} bytes) is misaligned or outside guest memory")]
    RingOutsideMemory {
        /// Which ring ("descriptor table", "available ring", "used ring").
        ring: &'static str,
        /// Guest physical address the driver gave.
        addr: u64,
        /// Bytes the ring needs at that size.
        len: u64,
    },
    /// The driver's available index moved further than the queue size since last time.
    #[error("available index jumped from {last} to {now}, more than the queue size {size}")]
    AvailIndexJump {
        /// Next available index the device expected to consume.
        last: u16,
        /// Available index the driver published.
        now: u16,
        /// Queue size.
        size: u16,
    },
    /// The available ring names a chain head outside the descriptor table.
    #[error("available ring entry names descriptor {head}, outside a queue of size {size}")]
    HeadOutOfRange {
        /// Head index found in the ring.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// Reading or writing a ring failed although the ring was validated (should not occur).
    #[error("guest memory access to a ring at {addr:#x} failed")]
    RingAccess {
        /// Address of the failed access.
        addr: u64,
    },
    /// The queue is not ready (QueueReady is 0).
    #[error("the queue is not ready")]
    NotReady,
}

/// One descriptor chain is malformed; the request it carries fails.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A `next` field names a descriptor outside the table.
    #[error("descriptor {index} links to {next}, outside a queue of size {size}")]
    NextOutOfRange {
        /// Descriptor holding the bad link.
        index: u16,
        /// The link.
        next: u16,
        /// Queue size.
        size: u16,
    },
    /// The chain has more descriptors than the queue size: it loops.
    #[error("descriptor chain from head {head} is longer than the queue size {size} (a loop)")]
    TooLong {
        /// Head of the chain.
        head: u16,
        /// Queue size.
        size: u16,
    },
    /// A buffer is not entirely inside guest memory.
    #[error("descriptor {index} buffer {addr:#x}+{len:#x} is not inside guest memory")]
    BufferOutsideMemory {
        /// Descriptor index.
        index: u16,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The driver used an indirect descriptor, which the device does not offer.
    #[error("descriptor {index} is indirect, but VIRTIO_F_INDIRECT_DESC was not offered")]
    Indirect {
        /// Descriptor index.
        index: u16,
    },
}

/// One validated descriptor: its buffer lies entirely inside guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest physical address of the buffer.
    pub addr: GuestAddress,
    /// Length of the buffer in bytes.
    pub len: u32,
    /// True when the device may write the buffer, false when it may only read it.
    pub device_writable: bool,
}

/// A chain popped from the available ring: its head index (to return it in the used ring)
/// and its descriptors, or why they could not be accepted.
#[derive(Debug)]
pub struct PoppedChain {
    /// Head descriptor index.
    pub head: u16,
    /// The whole validated chain, or the first problem found in it.
    pub descriptors: Result<Vec<Descriptor>, ChainError>,
}

/// Device-side state of one split virtqueue, as configured by the driver through the
/// transport.
#[derive(Debug, Clone)]
pub struct SplitQueue {
    max_size: u16,
    /// Queue size chosen by the driver (QueueNum).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Guest address of the descriptor table (QueueDesc).
    pub desc_table: u64,
    /// Guest address of the available ring (QueueDriver).
    pub avail_ring: u64,
    /// Guest address of the used ring (QueueDevice).
    pub used_ring: u64,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
}

impl SplitQueue {
    /// A queue in its reset state that accepts up to `max_size` entries.
    pub fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: Wrapping(0),
            next_used: Wrapping(0),
        }
    }

    /// Largest queue size the device accepts (QueueNumMax).
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Back to the reset state (QueueReady 0, addresses 0, indices 0).
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// Checks the size and that each ring is aligned and lies inside `mem`
    /// (spec 2.7: descriptor table 16-byte, available ring 2-byte, used ring 4-byte aligned).
    pub fn validate(&self, mem: &GuestMemoryMmap) -> Result<(), QueueError> {
        let size = self.size;
        if size == 0 || size > self.max_size || !size.is_power_of_two() {
            return Err(QueueError::InvalidSize {
                size,
                max: self.max_size,
            });
        }
        let n = u64::from(size);
        let rings = [
            ("descriptor table", self.desc_table, DESC_SIZE * n, 16),
            ("available ring", self.avail_ring, 6 + 2 * n, 2),
            ("used ring", self.used_ring, 6 + USED_ELEM_SIZE * n, 4),
        ];
        for (ring, addr, len, align) in rings {
            if !addr.is_multiple_of(align) || !range_in_memory(mem, addr, len) {
                return Err(QueueError::RingOutsideMemory { ring, addr, len });
            }
        }
        Ok(())
    }

    /// Takes the next chain from the available ring, if the driver published one.
    ///
    /// Ring-level problems return `Err` (the device should mark itself broken); a
    /// malformed chain is returned as a [`PoppedChain`] holding the [`ChainError`].
    pub fn pop(&mut self, mem: &GuestMemoryMmap) -> Result<Option<PoppedChain>, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let size = self.size;
        let idx_addr = self.avail_ring + 2;
        let avail_idx: u16 = mem
            .load(GuestAddress(idx_addr), Ordering::Acquire)
            .map_err(|_| QueueError::RingAccess { addr: idx_addr })?;
        let pending = Wrapping(avail_idx) - self.next_avail;
        if pending.0 == 0 {
            return Ok(None);
        }
        if pending.0 > size {
            return Err(QueueError::AvailIndexJump {
                last: self.next_avail.0,
                now: avail_idx,
                size,
            });
        }
        let slot = u64::from(self.next_avail.0 % size);
        let entry_addr = self.avail_ring + 4 + 2 * slot;
        let head: u16 = read_u16(mem, entry_addr)?;
        if head >= size {
            return Err(QueueError::HeadOutOfRange { head, size });
        }
        self.next_avail += Wrapping(1);
        let descriptors = self.walk_chain(mem, head);
        Ok(Some(PoppedChain { head, descriptors }))
    }

    /// Reads and checks the chain starting at `head` (already known to be < size).
    fn walk_chain(&self, mem: &GuestMemoryMmap, head: u16) -> Result<Vec<Descriptor>, ChainError> {
        let size = self.size;
        let mut chain = Vec::new();
        let mut index = head;
        loop {
            if chain.len() >= usize::from(size) {
                return Err(ChainError::TooLong { head, size });
            }
            let entry = self.desc_table + DESC_SIZE * u64::from(index);
            let mut raw = [0u8; 16];
            // The table was validated to lie in guest memory; a failure here means memory
            // changed under us, which is reported as a chain problem, not a panic.
            mem.read_slice(&mut raw, GuestAddress(entry)).map_err(|_| {
                ChainError::BufferOutsideMemory {
                    index,
                    addr: entry,
                    len: DESC_SIZE as u32,
                }
            })?;
            let addr = u64::from_le_bytes(le_array(&raw[0..8]));
            let len = u32::from_le_bytes(le_array(&raw[8..12]));
            let flags = u16::from_le_bytes(le_array(&raw[12..14]));
            let next = u16::from_le_bytes(le_array(&raw[14..16]));
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                return Err(ChainError::Indirect { index });
            }
            if !range_in_memory(mem, addr, u64::from(len)) {
                return Err(ChainError::BufferOutsideMemory { index, addr, len });
            }
            chain.push(Descriptor {
                addr: GuestAddress(addr),
                len,
                device_writable: flags & VIRTQ_DESC_F_WRITE != 0,
            });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            if next >= size {
                return Err(ChainError::NextOutOfRange { index, next, size });
            }
            index = next;
        }
    }

    /// Returns the chain `head` to the driver with `len` bytes written into it.
    pub fn add_used(
        &mut self,
        mem: &GuestMemoryMmap,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let slot = u64::from(self.next_used.0 % self.size);
        let elem_addr = self.used_ring + 4 + USED_ELEM_SIZE * slot;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(elem_addr))
            .map_err(|_| QueueError::RingAccess { addr: elem_addr })?;
        self.next_used += Wrapping(1);
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        let idx_addr = self.used_ring + 2;
        mem.store(self.next_used.0, GuestAddress(idx_addr), Ordering::Release)
            .map_err(|_| QueueError::RingAccess { addr: idx_addr })
    }
}

/// True when `[addr, addr + len)` does not wrap and lies entirely in guest memory.
pub fn range_in_memory(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    let Ok(len_usize) = usize::try_from(len) else {
        return false;
    };
    match addr.checked_add(len) {
        Some(_) if len == 0 => mem.address_in_range(GuestAddress(addr)),
        Some(_) => mem.check_range(GuestAddress(addr), len_usize),
        None => false,
    }
}

fn read_u16(mem: &GuestMemoryMmap, addr: u64) -> Result<u16, QueueError> {
    let mut raw = [0u8; 2];
    mem.read_slice(&mut raw, GuestAddress(addr))
        .map_err(|_| QueueError::RingAccess { addr })?;
    Ok(u16::from_le_bytes(raw))
}

/// Copies a slice of known length into an array (the callers slice fixed ranges).
fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}
