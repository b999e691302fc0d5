//! MSI-X (PCI Local Bus 3.0, 6.8.2): the capability, the vector table and the pending-bit
//! array of one function, each vector delivered through its own irqfd on its own GSI,
//! which a KVM MSI route points at the address and data the guest programmed.
//!
//! A vector the guest masked (or all of them, while MSI-X is disabled or the function is
//! masked) does not interrupt: its pending bit is set, and unmasking delivers it. The
//! device thread and the vCPU that masks race only on two atomics per vector, ordered so
//! that an interrupt is never lost (at worst one arrives just after a mask).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{MsiMessage, PciHost};
use crate::devices::virtio::{GuestErrorLog, IrqTrigger};

/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// Message control: MSI-X enable.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Bytes of one table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: usize = 16;
/// Vector control: the vector is masked.
const ENTRY_MASKED: u32 = 1;
/// Length of the MSI-X capability.
pub const CAP_LEN: usize = 12;

/// The delivery side of a function's vectors, shared with whoever raises them (a device
/// thread).
pub struct MsixVectors {
    vectors: Vec<Vector>,
}

struct Vector {
    irq: Arc<dyn IrqTrigger>,
    deliverable: AtomicBool,
    pending: AtomicBool,
}

impl MsixVectors {
    /// One vector per irqfd in `irqs`, all masked.
    pub fn new(irqs: Vec<Arc<dyn IrqTrigger>>) -> Self {
        Self {
            vectors: irqs
                .into_iter()
                .map(|irq| Vector {
                    irq,
                    deliverable: AtomicBool::new(false),
                    pending: AtomicBool::new(false),
                })
                .collect(),
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Raises vector `index` (a vector number the device does not have, like virtio's
    /// NO_VECTOR 0xffff, raises nothing).
    pub fn signal(&self, index: u16) {
        let Some(v) = self.vectors.get(usize::from(index)) else {
            return;
        };
        // Pending first, then the mask: an unmask between the two sees the pending bit.
        v.pending.store(true, Ordering::SeqCst);
        if v.deliverable.load(Ordering::SeqCst) && v.pending.swap(false, Ordering::SeqCst) {
            fire(v);
        }
    }

    /// Whether vector `index` has an interrupt waiting for an unmask.
    pub fn is_pending(&self, index: usize) -> bool {
        self.vectors
            .get(index)
            .is_some_and(|v| v.pending.load(Ordering::SeqCst))
    }

    fn set_deliverable(&self, index: usize, deliverable: bool) {
        let Some(v) = self.vectors.get(index) else {
            return;
        };
        v.deliverable.store(deliverable, Ordering::SeqCst);
        if deliverable && v.pending.swap(false, Ordering::SeqCst) {
            fire(v);
        }
    }

    fn clear_pending(&self) {
        for v in &self.vectors {
            v.pending.store(false, Ordering::SeqCst);
        }
    }
}

fn fire(v: &Vector) {
    if let Err(e) = v.irq.trigger() {
        log::error!("MSI-X: cannot raise a vector: {e}");
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    address: u64,
    data: u32,
    control: u32,
}

impl Entry {
    const RESET: Entry = Entry {
        address: 0,
        data: 0,
        control: ENTRY_MASKED,
    };
}

/// The guest-facing side: the table and the capability's control bits, owned by the
/// function (under its lock).
pub struct MsixTable {
    entries: Vec<Entry>,
    /// The route each vector's GSI has now.
    routed: Vec<Option<MsiMessage>>,
    gsis: Vec<u32>,
    enabled: bool,
    function_mask: bool,
    vectors: Arc<MsixVectors>,
    host: Arc<dyn PciHost>,
    guest_errors: GuestErrorLog,
}

impl MsixTable {
    /// A table for `vectors`, vector `i` routed through `gsis[i]` (the GSI its irqfd is
    /// bound to) by `host`.
    pub fn new(vectors: Arc<MsixVectors>, gsis: Vec<u32>, host: Arc<dyn PciHost>) -> Self {
        let n = vectors.len().min(gsis.len());
        Self {
            entries: vec![Entry::RESET; n],
            routed: vec![None; n],
            gsis,
            enabled: false,
            function_mask: false,
            vectors,
            host,
            guest_errors: GuestErrorLog::default(),
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> usize {
        self.entries.len() * ENTRY_SIZE
    }

    /// Bytes of the pending-bit array (whole qwords).
    pub fn pba_len(&self) -> usize {
        self.entries.len().div_ceil(64) * 8
    }

    /// The capability's bytes and write masks, for a table at `table_offset` and a
    /// pending-bit array at `pba_offset` in BAR `bar`.
    pub fn capability(
        &self,
        bar: u8,
        table_offset: u32,
        pba_offset: u32,
    ) -> ([u8; CAP_LEN], [u8; CAP_LEN]) {
        let size = (self.entries.len().max(1) - 1) as u16;
        let mut body = [0u8; CAP_LEN];
        body[0] = CAP_ID_MSIX;
        body[2..4].copy_from_slice(&size.to_le_bytes());
        body[4..8].copy_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body[8..12].copy_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        let mut writable = [0u8; CAP_LEN];
        writable[3] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        (body, writable)
    }

    /// The guest wrote the capability's message control register.
    pub fn set_control(&mut self, control: u16) {
        let enabled = control & CONTROL_ENABLE != 0;
        let function_mask = control & CONTROL_FUNCTION_MASK != 0;
        if (enabled, function_mask) != (self.enabled, self.function_mask) {
            self.enabled = enabled;
            self.function_mask = function_mask;
            for i in 0..self.entries.len() {
                self.refresh(i);
            }
        }
    }

    /// Back to reset: every vector masked, nothing pending, MSI-X disabled.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::RESET);
        self.enabled = false;
        self.function_mask = false;
        for i in 0..self.entries.len() {
            self.vectors.set_deliverable(i, false);
        }
        self.vectors.clear_pending();
    }

    /// Whether the access (`len` bytes at `offset`) is one the spec allows: an aligned
    /// dword or qword.
    fn access_ok(&mut self, what: &str, offset: usize, len: usize) -> bool {
        let ok = (len == 4 || len == 8) && offset.is_multiple_of(len);
        if !ok {
            self.guest_errors.log(format_args!(
                "MSI-X: {len}-byte {what} access at {offset:#x} is not an aligned dword or qword; ignored"
            ));
        }
        ok
    }

    /// Reads the vector table.
    pub fn read_table(&mut self, offset: usize, data: &mut [u8]) {
        if !self.access_ok("table", offset, data.len()) {
            data.fill(0xff);
            return;
        }
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            let o = offset + 4 * i;
            let value = match self.entries.get(o / ENTRY_SIZE) {
                Some(e) => match o % ENTRY_SIZE {
                    0 => e.address as u32,
                    4 => (e.address >> 32) as u32,
                    8 => e.data,
                    _ => e.control,
                },
                None => u32::MAX,
            };
            chunk.copy_from_slice(&value.to_le_bytes());
        }
    }

    /// Writes the vector table; a vector whose message or mask changed is rerouted or
    /// (un)masked at once.
    pub fn write_table(&mut self, offset: usize, data: &[u8]) {
        if !self.access_ok("table", offset, data.len()) {
            return;
        }
        let index = offset / ENTRY_SIZE;
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        for (i, chunk) in data.chunks(4).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match (offset + 4 * i) % ENTRY_SIZE {
                0 => entry.address = (entry.address & !0xffff_ffff) | u64::from(value),
                4 => entry.address = (entry.address & 0xffff_ffff) | (u64::from(value) << 32),
                8 => entry.data = value,
                _ => entry.control = value & ENTRY_MASKED,
            }
        }
        self.refresh(index);
    }

    /// Reads the pending-bit array.
    pub fn read_pba(&mut self, offset: usize, data: &mut [u8]) {
        if !self.access_ok("pending-bit array", offset, data.len()) {
            data.fill(0xff);
            return;
        }
        for (i, byte) in data.iter_mut().enumerate() {
            let first = (offset + i) * 8;
            *byte = (0..8)
                .filter(|bit| self.vectors.is_pending(first + bit))
                .fold(0u8, |b, bit| b | 1 << bit);
        }
    }

    /// Brings vector `i`'s route and mask in line with the table and the control bits.
    fn refresh(&mut self, i: usize) {
        let Some(entry) = self.entries.get(i).copied() else {
            return;
        };
        let mut deliverable =
            self.enabled && !self.function_mask && entry.control & ENTRY_MASKED == 0;
        if deliverable {
            let message = MsiMessage {
                address: entry.address,
                data: entry.data,
            };
            if self.routed[i] != Some(message) {
                match self.host.set_msi_route(self.gsis[i], message) {
                    Ok(()) => self.routed[i] = Some(message),
                    Err(e) => {
                        // The GSI still carries the old message (`routed[i]`): firing it
                        // would interrupt where the guest no longer points. The vector's
                        // interrupts wait in the pending bits instead, and the next
                        // change of its entry or mask tries the route again.
                        deliverable = false;
                        self.guest_errors.log(format_args!(
                            "MSI-X: vector {i} ({:#x}, data {:#x}) cannot be routed: {e}; \
                             its interrupts stay pending",
                            message.address, message.data
                        ));
                    }
                }
            }
        }
        self.vectors.set_deliverable(i, deliverable);
    }
}
