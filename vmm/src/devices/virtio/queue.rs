//! The split virtqueue (virtio 1.x spec 2.7), device side: the rust-vmm `virtio-queue`
//! crate's [`Queue`] and descriptor chain iterator, under a thin layer that checks every
//! guest-supplied value before a device sees it.
//!
//! What the crate does: the ring state (indices, EVENT_IDX bookkeeping), reading the
//! available ring, following a chain (indirect tables included, at most the queue size or
//! the table size long, at most 4 GiB), writing the used ring, and the notification
//! suppression of VIRTIO_F_RING_EVENT_IDX (`enable_notification`, `needs_notification`).
//!
//! What this layer adds:
//! - The queue registers are latched here while the queue is not ready and handed to the
//!   crate when the driver sets QueueReady, after checking the size, the alignment, that
//!   each ring lies in guest memory, that the used ring overlaps neither of the others and
//!   that the available ring is not at address 0 (the crate takes that for an unconfigured
//!   queue). The crate's own setters and `is_valid` log every bad value at error level,
//!   which a guest could use to flood the log; they are not called.
//! - A chain is walked to its end before the device sees it. The crate's iterator stops
//!   without a word at a loop, a link outside the table, a bad indirect table or a chain
//!   past 4 GiB, which would look like a shorter, valid chain (a data buffer taken for the
//!   status byte). Here each of those is a [`ChainError`], and so is an indirect descriptor
//!   the driver did not negotiate, one that also has NEXT set, a chain longer than the
//!   queue's maximum size and a buffer outside guest memory.
//! - One call serves a bounded amount of work ([`NOTIFY_BUDGET_QUEUES`]) and then yields
//!   ([`SplitQueue::take_yielded`]): whoever serves the queue calls again later (a device
//!   thread wakes itself), so the device's lock is released between rounds.
//!
//! Two classes of guest mistakes are told apart:
//! - [`QueueError`]: the rings themselves are unusable (not in guest memory, an available
//!   index that jumps further than the queue size, a head index out of range). The device
//!   cannot make progress and marks itself broken (DEVICE_NEEDS_RESET).
//! - [`ChainError`]: one descriptor chain is malformed. Only that request fails; it is
//!   returned to the driver with a used length of 0 and nothing written.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::{VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC};

/// Descriptor flag: the chain continues in `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds an indirect descriptor table (spec 2.7.5.3).
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Size of one descriptor table entry.
const DESC_SIZE: u64 = 16;
/// Size of one used ring element (`id: le32, len: le32`).
const USED_ELEM_SIZE: u64 = 8;
/// Most descriptors an indirect table can hold (its length field counts them in a u16).
const MAX_INDIRECT_ENTRIES: u32 = u16::MAX as u32;
/// Most chains, and rounds of re-checking the available index, one notification is served
/// for, in queue sizes. A driver has at most one queue's worth of chains published when
/// it notifies, and can publish more only as it reclaims used ones, which it learns of
/// from the interrupt at the end of the call unless it polls the used ring. Past this
/// budget a driver is keeping the device busy (a driver on another CPU publishing as fast
/// as the device serves), flooding it, or it laid out buffers that make the device publish
/// chains to itself (a read into the available ring), which with no bound would hold the
/// device's lock for ever. The call yields instead; the chains left are served by the next
/// call.
pub const NOTIFY_BUDGET_QUEUES: u32 = 16;
/// Most bytes one chain may describe (spec 2.7.5.2: no chain longer than 2^32 bytes; the
/// used length the device returns is a u32).
const MAX_CHAIN_BYTES: u64 = u32::MAX as u64;

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
    /// The used ring overlaps one of the rings the driver writes.
    #[error("the used ring overlaps the {ring}")]
    RingsOverlap {
        /// The ring it overlaps ("descriptor table" or "available ring").
        ring: &'static str,
    },
    /// The available ring is at guest address 0, which the virtio-queue crate reads as a
    /// queue that was never configured.
    #[error("the available ring is at address 0, which cannot be served")]
    AvailRingAtZero,
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
    #[error("{op} failed: {reason}")]
    RingAccess {
        /// What the device was doing.
        op: &'static str,
        /// The virtio-queue crate's error.
        reason: String,
    },
    /// The queue is not ready (QueueReady is 0).
    #[error("the queue is not ready")]
    NotReady,
}

/// One descriptor chain is malformed; the request it carries fails.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A `next` field names a descriptor outside the queue's table.
    #[error("descriptor {index} links to {next}, outside a queue of size {size}")]
    NextOutOfRange {
        /// Descriptor holding the bad link.
        index: u16,
        /// The link.
        next: u16,
        /// Queue size.
        size: u16,
    },
    /// The chain has more descriptors than allowed: it loops, or it is longer than the
    /// queue's maximum size.
    #[error("descriptor chain from head {head} has more than {limit} descriptors (a loop?)")]
    TooLong {
        /// Head of the chain.
        head: u16,
        /// Most descriptors allowed.
        limit: usize,
    },
    /// The chain's buffers add up to 4 GiB or more.
    #[error("descriptor chain from head {head} describes 4 GiB or more")]
    TooLarge {
        /// Head of the chain.
        head: u16,
    },
    /// A buffer is not entirely inside guest memory.
    #[error("buffer {position} of the chain, {addr:#x}+{len:#x}, is not inside guest memory")]
    BufferOutsideMemory {
        /// Position of the descriptor in the chain (0 for the first buffer).
        position: usize,
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// The driver used an indirect descriptor without negotiating VIRTIO_F_RING_INDIRECT_DESC.
    #[error("descriptor {index} is indirect, but VIRTIO_F_RING_INDIRECT_DESC was not negotiated")]
    Indirect {
        /// Descriptor index.
        index: u16,
    },
    /// An indirect descriptor also has NEXT set (spec 2.7.5.3.1 forbids it).
    #[error("descriptor {index} is indirect and also has NEXT set")]
    IndirectWithNext {
        /// Descriptor index.
        index: u16,
    },
    /// An indirect descriptor's table cannot be used.
    #[error("descriptor {index} points to an indirect table {addr:#x}+{len:#x} that is {reason}")]
    BadIndirectTable {
        /// Index of the indirect descriptor in the queue's table.
        index: u16,
        /// Table address.
        addr: u64,
        /// Table length in bytes.
        len: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The chain inside an indirect table is malformed.
    #[error(
        "the indirect table of the chain from head {head} loops, links outside itself, \
         holds another indirect descriptor or describes 4 GiB or more"
    )]
    IndirectChain {
        /// Head of the chain (in the queue's table).
        head: u16,
    },
    /// A descriptor of the chain could not be read.
    #[error("the chain from head {head} ends at a descriptor that cannot be read")]
    Unreadable {
        /// Head of the chain.
        head: u16,
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
/// and its descriptors, indirect tables flattened, or why they could not be accepted.
#[derive(Debug)]
pub struct PoppedChain {
    /// Head descriptor index.
    pub head: u16,
    /// The whole validated chain, or the first problem found in it.
    pub descriptors: Result<Vec<Descriptor>, ChainError>,
}

/// The queue registers a driver writes while the queue is not ready (spec 4.2.2: QueueNum,
/// QueueDesc, QueueDriver, QueueDevice). Checked when the driver sets QueueReady.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRegisters {
    /// Queue size (QueueNum).
    pub size: u16,
    /// Guest address of the descriptor table (QueueDesc).
    pub desc_table: u64,
    /// Guest address of the available ring (QueueDriver).
    pub avail_ring: u64,
    /// Guest address of the used ring (QueueDevice).
    pub used_ring: u64,
}

/// What the negotiated features change in how a queue is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFeatures {
    /// VIRTIO_F_RING_EVENT_IDX: `used_event` and `avail_event` suppress notifications.
    pub event_idx: bool,
    /// VIRTIO_F_RING_INDIRECT_DESC: chains may go through indirect tables.
    pub indirect_desc: bool,
}

impl RingFeatures {
    /// The ring features among the `features` the driver accepted.
    pub fn from_acked(features: u64) -> Self {
        Self {
            event_idx: features & VIRTIO_F_RING_EVENT_IDX != 0,
            indirect_desc: features & VIRTIO_F_RING_INDIRECT_DESC != 0,
        }
    }
}

/// Device-side state of one split virtqueue, as configured by the driver through the
/// transport.
#[derive(Debug)]
pub struct SplitQueue {
    queue: Queue,
    registers: QueueRegisters,
    indirect_desc: bool,
    /// The last [`Self::serve_available`] stopped at its budget with chains left.
    yielded: bool,
}

impl SplitQueue {
    /// A queue in its reset state that accepts up to `max_size` entries. A `max_size` that
    /// is not a power of two from 1 to 32768 gives a queue the driver sees as unavailable
    /// (QueueNumMax 0), which no driver can make ready.
    pub fn new(max_size: u16) -> Self {
        let queue = Queue::new(max_size).unwrap_or_else(|e| {
            log::error!("virtio: a queue of maximum size {max_size} cannot exist ({e})");
            Queue::default()
        });
        let registers = Self::reset_registers(queue.max_size());
        Self {
            queue,
            registers,
            indirect_desc: false,
            yielded: false,
        }
    }

    fn reset_registers(max_size: u16) -> QueueRegisters {
        QueueRegisters {
            size: max_size,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
        }
    }

    /// Largest queue size the device accepts (QueueNumMax).
    pub fn max_size(&self) -> u16 {
        self.queue.max_size()
    }

    /// QueueReady.
    pub fn is_ready(&self) -> bool {
        self.queue.ready()
    }

    /// The queue's registers as the driver last wrote them (what a transport that lets the
    /// driver read them back, like virtio-pci's common configuration, returns).
    pub fn registers(&self) -> &QueueRegisters {
        &self.registers
    }

    /// The registers the driver may still write, or `None` while the queue is ready.
    pub fn registers_mut(&mut self) -> Option<&mut QueueRegisters> {
        (!self.queue.ready()).then_some(&mut self.registers)
    }

    /// Back to the reset state (QueueReady 0, addresses 0, indices 0).
    pub fn reset(&mut self) {
        self.queue.reset();
        self.registers = Self::reset_registers(self.queue.max_size());
        self.indirect_desc = false;
        self.yielded = false;
    }

    /// The driver wrote 0 to QueueReady: the device stops using the queue. When the driver
    /// makes it ready again it starts over from the rings then configured (indices 0).
    pub fn disable(&mut self) {
        self.queue.set_ready(false);
    }

    /// The driver wrote 1 to QueueReady: checks the registers against `mem` (spec 2.7: the
    /// size a power of two up to the maximum; descriptor table 16-byte, available ring
    /// 2-byte, used ring 4-byte aligned; every ring inside guest memory; the used ring, which
    /// the device writes, apart from the other two) and, if they hold, hands them to the
    /// crate's queue and makes it ready.
    pub fn activate<M: GuestMemory>(
        &mut self,
        mem: &M,
        features: RingFeatures,
    ) -> Result<(), QueueError> {
        let QueueRegisters {
            size,
            desc_table,
            avail_ring,
            used_ring,
        } = self.registers;
        let max = self.queue.max_size();
        if size == 0 || size > max || !size.is_power_of_two() {
            return Err(QueueError::InvalidSize { size, max });
        }
        let n = u64::from(size);
        let (read, write) = (Permissions::Read, Permissions::Write);
        let rings = [
            ("descriptor table", desc_table, DESC_SIZE * n, 16, read),
            ("available ring", avail_ring, 6 + 2 * n, 2, read),
            ("used ring", used_ring, 6 + USED_ELEM_SIZE * n, 4, write),
        ];
        for (ring, addr, len, align, access) in rings {
            if !addr.is_multiple_of(align) || !range_in_memory(mem, addr, len, access) {
                return Err(QueueError::RingOutsideMemory { ring, addr, len });
            }
        }
        // The used ring is the one the device writes: into the driver's rings it would
        // rewrite what it is about to read.
        let used_end = used_ring + rings[2].2;
        for &(ring, addr, len, _, _) in &rings[..2] {
            if used_ring < addr + len && addr < used_end {
                return Err(QueueError::RingsOverlap { ring });
            }
        }
        if avail_ring == 0 {
            return Err(QueueError::AvailRingAtZero);
        }
        let q = &mut self.queue;
        let set = q
            .try_set_size(size)
            .and_then(|()| q.try_set_desc_table_address(GuestAddress(desc_table)))
            .and_then(|()| q.try_set_avail_ring_address(GuestAddress(avail_ring)))
            .and_then(|()| q.try_set_used_ring_address(GuestAddress(used_ring)));
        // Checked above already; the crate's refusal is reported all the same.
        set.map_err(ring_error("configuring the queue"))?;
        // A queue made ready (again) starts from its rings' beginnings: indices kept from
        // an earlier activation would point into rings the driver may have replaced.
        q.set_next_avail(0);
        q.set_next_used(0);
        q.set_event_idx(features.event_idx);
        q.set_ready(true);
        self.indirect_desc = features.indirect_desc;
        Ok(())
    }

    /// Serves every chain the driver made available: `serve` gets each one (validated, or
    /// with the reason it was refused) and returns how many bytes it wrote into it, and
    /// the chain goes back in the used ring. Returns whether the driver wants an interrupt
    /// for what was used (always, unless VIRTIO_F_RING_EVENT_IDX lets `used_event` say
    /// otherwise).
    ///
    /// The loop is the crate's: notifications are off while chains are served (the NO_NOTIFY
    /// flag; with EVENT_IDX nothing, `avail_event` stays where it was), then on again
    /// (`avail_event` set to the next index to serve) and the available index read once
    /// more, so a chain published meanwhile is served now rather than waiting for a
    /// notification the driver was told it need not send.
    ///
    /// The work of one call is bounded by [`NOTIFY_BUDGET_QUEUES`] queue sizes of chains and
    /// rounds, since it holds the device: past it, the call returns with notifications on
    /// and [`Self::take_yielded`] true, and the chains left wait for the next call. The
    /// caller must make one (the driver will not notify again for chains it already
    /// published past `avail_event`).
    pub fn serve_available<M, F>(&mut self, mem: &M, mut serve: F) -> Result<bool, QueueError>
    where
        M: GuestMemory,
        F: FnMut(PoppedChain) -> u32,
    {
        let mut used_any = false;
        let mut budget = u32::from(self.queue.size()) * NOTIFY_BUDGET_QUEUES;
        loop {
            self.queue
                .disable_notification(mem)
                .map_err(ring_error("disabling notifications"))?;
            while budget > 0 {
                let Some(chain) = self.pop(mem)? else {
                    break;
                };
                let head = chain.head;
                let len = serve(chain);
                self.queue
                    .add_used(mem, head, len)
                    .map_err(ring_error("writing the used ring"))?;
                used_any = true;
                budget -= 1;
            }
            let more = self
                .queue
                .enable_notification(mem)
                .map_err(ring_error("enabling notifications"))?;
            if !more {
                break;
            }
            if budget == 0 {
                self.yielded = true;
                break;
            }
            budget -= 1;
        }
        if !used_any {
            return Ok(false);
        }
        self.queue
            .needs_notification(mem)
            .map_err(ring_error("reading used_event"))
    }

    /// True once after a [`Self::serve_available`] that stopped at its budget with chains
    /// left to serve.
    pub fn take_yielded(&mut self) -> bool {
        std::mem::take(&mut self.yielded)
    }

    /// Takes the next chain from the available ring, if the driver published one.
    ///
    /// Ring-level problems return `Err` (the device should mark itself broken); a
    /// malformed chain is returned as a [`PoppedChain`] holding the [`ChainError`].
    fn pop<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<PoppedChain>, QueueError> {
        if !self.queue.ready() {
            return Err(QueueError::NotReady);
        }
        let size = self.queue.size();
        let last = Wrapping(self.queue.next_avail());
        let now = self
            .queue
            .avail_idx(mem, Ordering::Acquire)
            .map_err(ring_error("reading the available index"))?;
        if now == last {
            return Ok(None);
        }
        let jump = QueueError::AvailIndexJump {
            last: last.0,
            now: now.0,
            size,
        };
        if (now - last).0 > size {
            return Err(jump);
        }
        let chain = match self.queue.iter(mem) {
            Ok(mut chains) => chains.next(),
            // The driver moved the index again since it was read above.
            Err(virtio_queue::Error::InvalidAvailRingIndex) => return Err(jump),
            Err(e) => return Err(ring_error("reading the available ring")(e)),
        };
        let chain = chain.ok_or_else(|| QueueError::RingAccess {
            op: "reading the available ring",
            reason: "the published entry could not be read".into(),
        })?;
        let head = chain.head_index();
        if head >= size {
            return Err(QueueError::HeadOutOfRange { head, size });
        }
        let rules = ChainRules {
            table: GuestAddress(self.queue.desc_table()),
            size,
            indirect_desc: self.indirect_desc,
            max_descriptors: usize::from(self.queue.max_size()),
        };
        let descriptors = rules.check(chain, mem);
        Ok(Some(PoppedChain { head, descriptors }))
    }
}

/// What a chain must respect, besides what the crate's iterator enforces.
struct ChainRules {
    /// The queue's descriptor table.
    table: GuestAddress,
    /// Queue size.
    size: u16,
    /// Whether the driver negotiated indirect descriptors.
    indirect_desc: bool,
    /// Most descriptors in one chain, indirect ones included: the queue's maximum size,
    /// which is what `seg_max` promises the driver room for.
    max_descriptors: usize,
}

impl ChainRules {
    /// Walks `chain` with the crate's iterator to its end and checks every descriptor.
    ///
    /// The crate reads each descriptor once; alongside, the entries of the queue's own
    /// table that the walk passes through are read again to learn where the walk went
    /// into an indirect table (which the iterator does not tell). A driver that changes
    /// the table meanwhile races only itself: every buffer handed on is checked here.
    fn check<M: GuestMemory>(
        &self,
        chain: DescriptorChain<&M>,
        mem: &M,
    ) -> Result<Vec<Descriptor>, ChainError> {
        let head = chain.head_index();
        let mut descriptors = Vec::new();
        let mut total: u64 = 0;
        // The entry of the queue's table the walk takes next, while it is still there.
        let mut table_next = Some(head);
        // The last entry of the queue's table the walk took, for error reports.
        let mut table_last = head;
        let mut ended = false;
        for desc in chain {
            if let Some(index) = table_next {
                let entry = self
                    .entry(mem, index)
                    .ok_or(ChainError::Unreadable { head })?;
                table_last = index;
                if entry.refers_to_indirect_table() {
                    self.check_indirect(mem, index, &entry)?;
                    table_next = None;
                } else {
                    table_next = desc.has_next().then(|| desc.next());
                }
            }
            if descriptors.len() == self.max_descriptors {
                return Err(ChainError::TooLong {
                    head,
                    limit: self.max_descriptors,
                });
            }
            total += u64::from(desc.len());
            if total > MAX_CHAIN_BYTES {
                return Err(ChainError::TooLarge { head });
            }
            let device_writable = desc.is_write_only();
            let access = if device_writable {
                Permissions::Write
            } else {
                Permissions::Read
            };
            let (addr, len) = (desc.addr().0, desc.len());
            if !range_in_memory(mem, addr, u64::from(len), access) {
                return Err(ChainError::BufferOutsideMemory {
                    position: descriptors.len(),
                    addr,
                    len,
                });
            }
            descriptors.push(Descriptor {
                addr: desc.addr(),
                len,
                device_writable,
            });
            ended = !desc.has_next();
        }
        if ended {
            return Ok(descriptors);
        }
        Err(self.why_stopped(mem, head, table_next, table_last, &descriptors, total))
    }

    /// Why the crate's iterator stopped at a descriptor that still links on (or before the
    /// first one): the walk was at entry `table_next` of the queue's table, or inside an
    /// indirect table when that is `None`.
    fn why_stopped<M: GuestMemory>(
        &self,
        mem: &M,
        head: u16,
        table_next: Option<u16>,
        table_last: u16,
        descriptors: &[Descriptor],
        total: u64,
    ) -> ChainError {
        let Some(index) = table_next else {
            return ChainError::IndirectChain { head };
        };
        if index >= self.size {
            return ChainError::NextOutOfRange {
                index: table_last,
                next: index,
                size: self.size,
            };
        }
        let Some(entry) = self.entry(mem, index) else {
            return ChainError::Unreadable { head };
        };
        if entry.refers_to_indirect_table() {
            return match self.check_indirect(mem, index, &entry) {
                Err(e) => e,
                // The table is sound: the chain in it is not.
                Ok(()) => ChainError::IndirectChain { head },
            };
        }
        // Every descriptor so far came from the queue's table: the crate stops there after
        // `size` of them (a loop) or before passing 4 GiB.
        if descriptors.len() >= usize::from(self.size) {
            ChainError::TooLong {
                head,
                limit: usize::from(self.size),
            }
        } else if total + u64::from(entry.len()) > MAX_CHAIN_BYTES {
            ChainError::TooLarge { head }
        } else {
            ChainError::Unreadable { head }
        }
    }

    /// An indirect descriptor at `index` of the queue's table must be negotiated, must not
    /// also link on, and must point at a table of whole descriptors, at most 65535 of
    /// them, that lies entirely in guest memory (the crate would serve the part it reads).
    fn check_indirect<M: GuestMemory>(
        &self,
        mem: &M,
        index: u16,
        entry: &SplitDescriptor,
    ) -> Result<(), ChainError> {
        if !self.indirect_desc {
            return Err(ChainError::Indirect { index });
        }
        if entry.has_next() {
            return Err(ChainError::IndirectWithNext { index });
        }
        let (addr, len) = (entry.addr().0, entry.len());
        let reason = if len == 0 {
            "empty"
        } else if u64::from(len) % DESC_SIZE != 0 {
            "not a whole number of 16-byte descriptors"
        } else if len / DESC_SIZE as u32 > MAX_INDIRECT_ENTRIES {
            "longer than 65535 descriptors"
        } else if !range_in_memory(mem, addr, u64::from(len), Permissions::Read) {
            "not inside guest memory"
        } else {
            return Ok(());
        };
        Err(ChainError::BadIndirectTable {
            index,
            addr,
            len,
            reason,
        })
    }

    /// Entry `index` of the queue's table (`index` < size, and the table was checked to lie
    /// in guest memory when the queue was made ready).
    fn entry<M: GuestMemory>(&self, mem: &M, index: u16) -> Option<SplitDescriptor> {
        let addr = self.table.0.checked_add(DESC_SIZE * u64::from(index))?;
        mem.read_obj(GuestAddress(addr)).ok()
    }
}

/// Turns a virtio-queue error into a ring error, saying what the device was doing.
fn ring_error(op: &'static str) -> impl Fn(virtio_queue::Error) -> QueueError {
    move |e| QueueError::RingAccess {
        op,
        reason: e.to_string(),
    }
}

/// True when `[addr, addr + len)` does not wrap and lies entirely in guest memory with
/// `access`; an empty range must start inside guest memory.
fn range_in_memory<M: GuestMemory>(mem: &M, addr: u64, len: u64, access: Permissions) -> bool {
    let Ok(count) = usize::try_from(len) else {
        return false;
    };
    addr.checked_add(len).is_some() && mem.check_range(GuestAddress(addr), count.max(1), access)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::DescriptorTable;
    use vm_memory::GuestMemoryMmap;

    use super::*;

    const MEM_SIZE: usize = 0x10_0000;
    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const SIZE: u16 = 16;
    const MAX: u16 = 256;
    /// Where indirect tables go.
    const TABLE: u64 = 0x8000;
    const BUF: u64 = 0x2_0000;
    const R: u16 = 0;
    const W: u16 = VIRTQ_DESC_F_WRITE;
    const N: u16 = VIRTQ_DESC_F_NEXT;
    const I: u16 = VIRTQ_DESC_F_INDIRECT;
    const INDIRECT: RingFeatures = RingFeatures {
        event_idx: false,
        indirect_desc: true,
    };

    fn memory(len: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).unwrap()
    }

    fn registers(size: u16) -> QueueRegisters {
        QueueRegisters {
            size,
            desc_table: DESC,
            avail_ring: AVAIL,
            used_ring: USED,
        }
    }

    fn ready_queue(mem: &GuestMemoryMmap, features: RingFeatures) -> SplitQueue {
        let mut q = SplitQueue::new(MAX);
        *q.registers_mut().unwrap() = registers(SIZE);
        q.activate(mem, features).unwrap();
        q
    }

    /// Writes descriptors `(index, addr, len, flags, next)` into the table at `at`.
    fn table(mem: &GuestMemoryMmap, at: u64, entries: &[(u16, u64, u32, u16, u16)]) {
        let len = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
        let t = DescriptorTable::new(mem, GuestAddress(at), len);
        for &(i, addr, len, flags, next) in entries {
            let d = SplitDescriptor::new(addr, len, flags, next);
            t.store(i, RawDescriptor::from(d)).unwrap();
        }
    }

    /// Publishes `head` as the next available entry.
    fn publish(mem: &GuestMemoryMmap, head: u16) {
        let idx: u16 = mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        let slot = u64::from(idx % SIZE);
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        mem.write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Publishes the chain at `head` and pops it.
    fn pop_chain(
        q: &mut SplitQueue,
        mem: &GuestMemoryMmap,
        head: u16,
    ) -> Result<Vec<Descriptor>, ChainError> {
        publish(mem, head);
        let popped = q.pop(mem).unwrap().unwrap();
        assert_eq!(popped.head, head);
        popped.descriptors
    }

    fn d(addr: u64, len: u32, device_writable: bool) -> Descriptor {
        Descriptor {
            addr: GuestAddress(addr),
            len,
            device_writable,
        }
    }

    #[test]
    fn activation_checks_size_alignment_memory_and_address_zero() {
        let mem = memory(MEM_SIZE);
        let end = MEM_SIZE as u64;
        let cases = [
            (registers(0), QueueError::InvalidSize { size: 0, max: MAX }),
            (registers(3), QueueError::InvalidSize { size: 3, max: MAX }),
            (
                registers(512),
                QueueError::InvalidSize {
                    size: 512,
                    max: MAX,
                },
            ),
            (
                QueueRegisters {
                    desc_table: DESC + 8,
                    ..registers(SIZE)
                },
                QueueError::RingOutsideMemory {
                    ring: "descriptor table",
                    addr: DESC + 8,
                    len: 256,
                },
            ),
            (
                QueueRegisters {
                    avail_ring: end - 8,
                    ..registers(SIZE)
                },
                QueueError::RingOutsideMemory {
                    ring: "available ring",
                    addr: end - 8,
                    len: 38,
                },
            ),
            (
                QueueRegisters {
                    used_ring: USED + 2,
                    ..registers(SIZE)
                },
                QueueError::RingOutsideMemory {
                    ring: "used ring",
                    addr: USED + 2,
                    len: 134,
                },
            ),
            (
                QueueRegisters {
                    avail_ring: 0,
                    ..registers(SIZE)
                },
                QueueError::AvailRingAtZero,
            ),
            // The used ring over the avail ring's index: each NO_NOTIFY flag the device
            // wrote would publish a chain to itself.
            (
                QueueRegisters {
                    avail_ring: USED - 2,
                    ..registers(SIZE)
                },
                QueueError::RingsOverlap {
                    ring: "available ring",
                },
            ),
            (
                QueueRegisters {
                    used_ring: DESC + 0xfc,
                    ..registers(SIZE)
                },
                QueueError::RingsOverlap {
                    ring: "descriptor table",
                },
            ),
        ];
        for (regs, err) in cases {
            let mut q = SplitQueue::new(MAX);
            *q.registers_mut().unwrap() = regs;
            assert_eq!(q.activate(&mem, RingFeatures::default()), Err(err));
            assert!(!q.is_ready());
        }
        // A good queue is frozen while ready, and configurable again once disabled.
        let mut q = ready_queue(&mem, RingFeatures::default());
        assert!(q.registers_mut().is_none());
        q.disable();
        assert_eq!(q.pop(&mem).unwrap_err(), QueueError::NotReady);
        assert_eq!(q.registers_mut().copied(), Some(registers(SIZE)));
        q.reset();
        assert_eq!(q.registers_mut().unwrap().size, MAX);
        // A maximum size the crate refuses leaves a queue no driver can use.
        let mut bad = SplitQueue::new(3);
        assert_eq!(bad.max_size(), 0);
        *bad.registers_mut().unwrap() = registers(1);
        assert_eq!(
            bad.activate(&mem, RingFeatures::default()),
            Err(QueueError::InvalidSize { size: 1, max: 0 })
        );
    }

    #[test]
    fn ring_errors_break_the_queue() {
        let mem = memory(MEM_SIZE);
        let mut q = ready_queue(&mem, RingFeatures::default());
        assert!(q.pop(&mem).unwrap().is_none());
        mem.write_obj(SIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
        assert_eq!(
            q.pop(&mem).unwrap_err(),
            QueueError::AvailIndexJump {
                last: 0,
                now: SIZE + 1,
                size: SIZE
            }
        );

        let mem = memory(MEM_SIZE);
        let mut q = ready_queue(&mem, RingFeatures::default());
        publish(&mem, SIZE);
        assert_eq!(
            q.pop(&mem).unwrap_err(),
            QueueError::HeadOutOfRange {
                head: SIZE,
                size: SIZE
            }
        );
    }

    #[test]
    fn direct_and_indirect_chains_come_out_flat_and_checked() {
        let mem = memory(MEM_SIZE);
        let mut q = ready_queue(&mem, INDIRECT);
        table(
            &mem,
            DESC,
            &[
                (0, BUF, 16, R | N, 5),
                (5, BUF + 0x100, 512, W | N, 2),
                (2, BUF + 0x400, 1, W, 0),
            ],
        );
        assert_eq!(
            pop_chain(&mut q, &mem, 0),
            Ok(vec![
                d(BUF, 16, false),
                d(BUF + 0x100, 512, true),
                d(BUF + 0x400, 1, true)
            ])
        );
        // The same chain in an indirect table; the WRITE flag of the descriptor pointing at
        // the table means nothing (spec 2.7.5.3.2).
        table(&mem, DESC, &[(3, TABLE, 48, I | W, 0)]);
        table(
            &mem,
            TABLE,
            &[
                (0, BUF, 16, R | N, 1),
                (1, BUF + 0x100, 512, W | N, 2),
                (2, BUF + 0x400, 1, W, 0),
            ],
        );
        assert_eq!(
            pop_chain(&mut q, &mem, 3),
            Ok(vec![
                d(BUF, 16, false),
                d(BUF + 0x100, 512, true),
                d(BUF + 0x400, 1, true)
            ])
        );
    }

    #[test]
    fn malformed_chains_name_what_is_wrong() {
        let mem = memory(MEM_SIZE);
        let end = MEM_SIZE as u64;
        let mut q = ready_queue(&mem, INDIRECT);
        let mut check = |entries: &[(u16, u64, u32, u16, u16)], head: u16, err: ChainError| {
            table(&mem, DESC, entries);
            assert_eq!(pop_chain(&mut q, &mem, head), Err(err.clone()), "{err}");
        };
        // A loop, which the crate's iterator ends silently after `size` descriptors.
        check(
            &[(0, BUF, 16, R | N, 1), (1, BUF, 16, R | N, 0)],
            0,
            ChainError::TooLong {
                head: 0,
                limit: usize::from(SIZE),
            },
        );
        // Links outside the table, first and further down.
        check(
            &[(0, BUF, 16, R | N, SIZE)],
            0,
            ChainError::NextOutOfRange {
                index: 0,
                next: SIZE,
                size: SIZE,
            },
        );
        check(
            &[(4, BUF, 16, R | N, 6), (6, BUF, 16, W | N, 99)],
            4,
            ChainError::NextOutOfRange {
                index: 6,
                next: 99,
                size: SIZE,
            },
        );
        // Buffers outside memory, an empty one included.
        check(
            &[(0, BUF, 16, R | N, 1), (1, end - 256, 512, W, 0)],
            0,
            ChainError::BufferOutsideMemory {
                position: 1,
                addr: end - 256,
                len: 512,
            },
        );
        check(
            &[(0, end, 0, W, 0)],
            0,
            ChainError::BufferOutsideMemory {
                position: 0,
                addr: end,
                len: 0,
            },
        );
        check(
            &[(0, u64::MAX - 100, 512, W, 0)],
            0,
            ChainError::BufferOutsideMemory {
                position: 0,
                addr: u64::MAX - 100,
                len: 512,
            },
        );
        // Indirect descriptors that also link on, or whose table is unusable.
        table(&mem, TABLE, &[(0, BUF, 16, R, 0)]);
        check(
            &[(0, TABLE, 16, I | N, 1), (1, BUF, 1, W, 0)],
            0,
            ChainError::IndirectWithNext { index: 0 },
        );
        for (len, reason) in [
            (0, "empty"),
            (24, "not a whole number of 16-byte descriptors"),
            (0x10_0000, "longer than 65535 descriptors"),
        ] {
            check(
                &[(0, TABLE, len, I, 0)],
                0,
                ChainError::BadIndirectTable {
                    index: 0,
                    addr: TABLE,
                    len,
                    reason,
                },
            );
        }
        check(
            &[(0, end - 16, 64, I, 0)],
            0,
            ChainError::BadIndirectTable {
                index: 0,
                addr: end - 16,
                len: 64,
                reason: "not inside guest memory",
            },
        );
        // Inside the table: another indirect descriptor, a loop, a link outside it.
        for inner in [
            &[(0, TABLE + 0x100, 16, I, 0)][..],
            &[(0, BUF, 16, R | N, 1), (1, BUF, 16, R | N, 0)],
            &[(0, BUF, 16, R | N, 7)],
        ] {
            table(&mem, TABLE, inner);
            check(
                &[(0, TABLE, 32, I, 0)],
                0,
                ChainError::IndirectChain { head: 0 },
            );
        }
        // A table longer than the queue's maximum size.
        let long: Vec<_> = (0..300u16).map(|i| (i, BUF, 16, R | N, i + 1)).collect();
        table(&mem, TABLE, &long);
        check(
            &[(0, TABLE, 300 * 16, I, 0)],
            0,
            ChainError::TooLong {
                head: 0,
                limit: usize::from(MAX),
            },
        );
        // Indirect descriptors the driver did not negotiate, well-formed table or not.
        let mem = memory(MEM_SIZE);
        let mut q = ready_queue(&mem, RingFeatures::default());
        table(&mem, TABLE, &[(0, BUF, 16, R, 0)]);
        for len in [16, 0] {
            table(&mem, DESC, &[(2, TABLE, len, I, 0)]);
            assert_eq!(
                pop_chain(&mut q, &mem, 2),
                Err(ChainError::Indirect { index: 2 })
            );
        }
    }

    #[test]
    fn a_chain_of_4_gib_is_refused() {
        // 272 MiB of guest memory, never touched beyond the rings: sixteen 256 MiB buffers
        // over the same bytes reach 4 GiB at the sixteenth.
        let mem = memory(0x1100_0000);
        let mut q = ready_queue(&mem, RingFeatures::default());
        let entries: Vec<_> = (0..SIZE)
            .map(|i| {
                let flags = if i + 1 < SIZE { R | N } else { W };
                (i, 0x100_0000, 0x1000_0000, flags, i + 1)
            })
            .collect();
        table(&mem, DESC, &entries);
        assert_eq!(
            pop_chain(&mut q, &mem, 0),
            Err(ChainError::TooLarge { head: 0 })
        );
    }

    #[test]
    fn a_chain_published_while_serving_is_served_in_the_same_call() {
        let mem = memory(MEM_SIZE);
        for features in [
            RingFeatures::default(),
            RingFeatures {
                event_idx: true,
                indirect_desc: false,
            },
        ] {
            let mut q = ready_queue(&mem, features);
            mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
            table(&mem, DESC, &[(0, BUF, 1, W, 0), (1, BUF, 1, W, 0)]);
            publish(&mem, 0);
            let mut served = Vec::new();
            let notify = q
                .serve_available(&mem, |chain| {
                    if served.is_empty() {
                        // Another vCPU publishes while the first chain is served.
                        publish(&mem, 1);
                    }
                    served.push(chain.head);
                    1
                })
                .unwrap();
            assert_eq!(served, [0, 1]);
            assert!(notify, "used_event 0 was crossed");
            assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 2);
            if features.event_idx {
                // avail_event: the next index the device will serve.
                let at = USED + 4 + 8 * u64::from(SIZE);
                assert_eq!(mem.read_obj::<u16>(GuestAddress(at)).unwrap(), 2);
            }
            // The NO_NOTIFY flag is off again.
            assert_eq!(mem.read_obj::<u16>(GuestAddress(USED)).unwrap(), 0);
            assert!(!q.serve_available(&mem, |_| 0).unwrap());
            mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
        }
    }

    #[test]
    fn a_driver_that_keeps_publishing_is_served_a_bounded_amount_per_notification() {
        let mem = memory(MEM_SIZE);
        for features in [
            RingFeatures::default(),
            RingFeatures {
                event_idx: true,
                indirect_desc: false,
            },
        ] {
            mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
            mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
            let mut q = ready_queue(&mem, features);
            table(&mem, DESC, &[(0, BUF, 1, W, 0)]);
            publish(&mem, 0);
            // Every chain served publishes another, as a flooding vCPU (or a device
            // reading into its own available ring) would.
            let mut served = 0u32;
            let notify = q
                .serve_available(&mem, |_| {
                    served += 1;
                    publish(&mem, 0);
                    1
                })
                .unwrap();
            let budget = u32::from(SIZE) * NOTIFY_BUDGET_QUEUES;
            assert_eq!(served, budget);
            assert!(notify);
            // Notifications are on (no NO_NOTIFY; avail_event at the next chain to serve),
            // the call says it yielded (once), and the chain left is served by the next.
            assert!(q.take_yielded());
            assert!(!q.take_yielded());
            assert_eq!(mem.read_obj::<u16>(GuestAddress(USED)).unwrap(), 0);
            if features.event_idx {
                let at = USED + 4 + 8 * u64::from(SIZE);
                assert_eq!(
                    mem.read_obj::<u16>(GuestAddress(at)).unwrap() as u32,
                    budget
                );
            }
            let mut more = 0;
            q.serve_available(&mem, |_| {
                more += 1;
                1
            })
            .unwrap();
            assert_eq!(more, 1);
        }
    }
}
