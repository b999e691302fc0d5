//! The virtio-mmio transport, version 2 (virtio 1.x spec 4.2.2): a 0x1000-byte register
//! window whose first 0x100 bytes are 32-bit registers and whose rest is the device's
//! configuration space.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemory;

use super::queue::{QueueRegisters, RingFeatures, SplitQueue};
use super::{status, GuestErrorLog, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

/// "virt" in little-endian.
const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio layout.
const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the driver ("CLST").
const VENDOR_ID: u32 = 0x5453_4c43;

/// InterruptStatus bit: the device used a buffer.
pub const INT_USED_BUFFER: u32 = 1;
/// InterruptStatus bit: the configuration (or the device status) changed.
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Register offsets (spec 4.2.2, table "MMIO Device Register Layout").
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A virtio device behind the MMIO register window, reaching guest memory through `M`.
pub struct MmioTransport<D: VirtioDevice, M: GuestMemory> {
    device: D,
    mem: M,
    irq: Arc<dyn IrqTrigger>,
    queues: Vec<SplitQueue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    device_status: u32,
    /// InterruptStatus: shared with the [`MmioFrontend`], which reads and acknowledges it
    /// without the transport's lock.
    interrupt_status: Arc<AtomicU32>,
    guest_errors: GuestErrorLog,
    /// Where a QueueNotify write goes when the device works on its own thread (the
    /// vCPU then only signals it); `None`: the notification is served in place.
    notifier: Option<Arc<dyn QueueNotifier>>,
    /// Queues notified and not yet served (bit per queue), for the device thread; shared
    /// with the [`MmioFrontend`].
    pending: Arc<AtomicU64>,
}

/// Hands a queue notification to whoever serves the device (its thread's eventfd).
pub trait QueueNotifier: Send + Sync {
    /// Queue `index` has new buffers.
    fn notify(&self, index: u32) -> std::io::Result<()>;
}

impl QueueNotifier for vmm_sys_util::eventfd::EventFd {
    fn notify(&self, _index: u32) -> std::io::Result<()> {
        self.write(1)
    }
}

/// What a device thread drives: the queues notified since it last looked.
pub trait NotifiedDevice: Send {
    /// Serves every queue with pending notifications (and, after a notification that
    /// bypassed the transport through a KVM ioeventfd, every ready queue).
    fn serve_notified(&mut self);
}

impl<D: VirtioDevice + Send, M: GuestMemory + Send> NotifiedDevice for MmioTransport<D, M> {
    fn serve_notified(&mut self) {
        // An ioeventfd notification never reached `write`: serve every queue then.
        let pending = match self.pending.swap(0, Ordering::AcqRel) {
            0 => u64::MAX,
            bits => bits,
        };
        for index in 0..self.queues.len().min(64) {
            if pending & (1 << index) != 0 {
                self.serve(index as u32);
            }
        }
    }
}

impl<D: VirtioDevice, M: GuestMemory> MmioTransport<D, M> {
    /// Hands QueueNotify writes to `notifier` instead of serving them on the writing
    /// (vCPU) thread; the device's own thread then calls [`NotifiedDevice::serve_notified`].
    pub fn set_notifier(&mut self, notifier: Arc<dyn QueueNotifier>) {
        self.notifier = Some(notifier);
    }

    /// Puts `device` behind a transport that reaches the guest's memory through `mem` and
    /// raises its interrupt through `irq`.
    pub fn new(device: D, mem: M, irq: Arc<dyn IrqTrigger>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| SplitQueue::new(max))
            .collect();
        Self {
            device,
            mem,
            irq,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            device_status: 0,
            interrupt_status: Arc::new(AtomicU32::new(0)),
            guest_errors: GuestErrorLog::default(),
            notifier: None,
            pending: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The current device status register.
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    /// The current interrupt status register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::Acquire)
    }

    /// Whether the device offers VIRTIO_F_ACCESS_PLATFORM (the launch policy's question
    /// for each virtio device of an SNP guest).
    pub fn offers_access_platform(&self) -> bool {
        self.device.offers_access_platform()
    }

    /// Warnings the device may still log about its guest (tests: the budget survives
    /// resets).
    #[cfg(test)]
    pub(crate) fn guest_warnings_left(&self) -> u32 {
        self.guest_errors.left
    }

    /// True once the device marked itself as needing a reset.
    pub fn is_broken(&self) -> bool {
        self.device_status & status::DEVICE_NEEDS_RESET != 0
    }

    fn selected_queue(&mut self) -> Option<&mut SplitQueue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The registers of the selected queue if the driver may still configure it (it is not
    /// ready).
    fn configurable_queue(&mut self) -> Option<&mut QueueRegisters> {
        let sel = self.queue_sel;
        if self
            .queues
            .get(sel as usize)
            .is_some_and(SplitQueue::is_ready)
        {
            self.guest_errors.log(format_args!(
                "virtio-mmio: driver reconfigures queue {sel} while it is ready; ignored"
            ));
            return None;
        }
        self.queues
            .get_mut(sel as usize)
            .and_then(SplitQueue::registers_mut)
    }

    /// The ring features the driver accepted (none before FEATURES_OK).
    fn ring_features(&self) -> RingFeatures {
        if self.device_status & status::FEATURES_OK == 0 {
            return RingFeatures::default();
        }
        RingFeatures::from_acked(self.driver_features)
    }

    fn reset(&mut self) {
        self.queues.iter_mut().for_each(SplitQueue::reset);
        self.device.reset();
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.device_status = 0;
        self.interrupt_status.store(0, Ordering::Release);
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status.fetch_or(bits, Ordering::AcqRel);
        if let Err(e) = self.irq.trigger() {
            log::error!("virtio-mmio: cannot raise the device interrupt: {e}");
        }
    }

    /// Marks the device broken (spec 2.1.2: DEVICE_NEEDS_RESET plus a configuration
    /// change notification).
    fn mark_broken(&mut self, why: &dyn std::fmt::Display) {
        if !self.is_broken() {
            // Through the device's guest-error budget, which a reset does not refill: a
            // guest that breaks the queue, resets and breaks it again cannot flood the log.
            self.guest_errors.log(format_args!(
                "virtio-mmio: device {} needs a reset: {why}",
                self.device.device_type()
            ));
            self.device_status |= status::DEVICE_NEEDS_RESET;
            self.raise(INT_CONFIG_CHANGE);
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly_set = value & !self.device_status;
        let mut value = value;
        if newly_set & status::FEATURES_OK != 0 {
            let offered = self.device.device_features();
            let acked = self.driver_features;
            if acked & !offered != 0 || acked & VIRTIO_F_VERSION_1 == 0 {
                self.guest_errors.log(format_args!(
                    "virtio-mmio: driver features {acked:#x} are not a subset of {offered:#x} \
                     with VIRTIO_F_VERSION_1; FEATURES_OK refused"
                ));
                value &= !status::FEATURES_OK;
            } else {
                self.device.set_acked_features(acked);
            }
        }
        // DEVICE_NEEDS_RESET belongs to the device; the driver can only clear it by reset.
        value = (value & !status::DEVICE_NEEDS_RESET)
            | (self.device_status & status::DEVICE_NEEDS_RESET);
        self.device_status = value;
    }

    fn write_queue_ready(&mut self, value: u32) {
        let sel = self.queue_sel;
        let features = self.ring_features();
        let Some(queue) = self.queues.get_mut(sel as usize) else {
            return;
        };
        if value == 0 {
            queue.disable();
            return;
        }
        if queue.is_ready() {
            return;
        }
        if let Err(e) = queue.activate(&self.mem, features) {
            self.mark_broken(&format_args!("queue {sel}: {e}"));
        }
    }

    fn notify(&mut self, index: u32) {
        match &self.notifier {
            Some(notifier) => signal(notifier.as_ref(), &self.pending, index),
            None => self.serve(index),
        }
    }

    /// Serves queue `index` (on whichever thread serves the device).
    fn serve(&mut self, index: u32) {
        // Requests only once the driver is fully set up (spec 3.1.1: FEATURES_OK, then
        // DRIVER_OK); a DRIVER_OK without accepted features serves nothing.
        let ready = status::FEATURES_OK | status::DRIVER_OK;
        let driver_ok = self.device_status & ready == ready;
        if !driver_ok || self.is_broken() {
            log::debug!(
                "virtio-mmio: notify for queue {index} ignored (status {:#x})",
                self.device_status
            );
            return;
        }
        let i = index as usize;
        let Some(queue) = self.queues.get_mut(i) else {
            self.guest_errors.log(format_args!(
                "virtio-mmio: notify for queue {index}, which does not exist"
            ));
            return;
        };
        if !queue.is_ready() {
            return;
        }
        match self.device.process_queue(i, queue, &self.mem) {
            Ok(true) => self.raise(INT_USED_BUFFER),
            Ok(false) => {}
            Err(e) => self.mark_broken(&format_args!("queue {index}: {e}")),
        }
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let features = self.device.device_features();
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => features as u32,
                1 => (features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.is_ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status(),
            reg::STATUS => self.device_status,
            // No shared memory regions: length reads as all-ones (spec 4.2.2).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => 0,
            _ => {
                log::debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                let negotiating = self.device_status & status::DRIVER != 0
                    && self.device_status & status::FEATURES_OK == 0;
                if !negotiating {
                    self.guest_errors.log(format_args!(
                        "virtio-mmio: DriverFeatures written outside negotiation; ignored"
                    ));
                    return;
                }
                let value = u64::from(value);
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
                    1 => {
                        self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.configurable_queue() {
                    // Checked (power of two, <= max) when the queue is made ready.
                    q.size = u16::try_from(value).unwrap_or(0);
                }
            }
            reg::QUEUE_READY => self.write_queue_ready(value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!value, Ordering::AcqRel);
            }
            reg::STATUS => self.write_status(value),
            reg::QUEUE_DESC_LOW => self.set_queue_addr(|q| &mut q.desc_table, false, value),
            reg::QUEUE_DESC_HIGH => self.set_queue_addr(|q| &mut q.desc_table, true, value),
            reg::QUEUE_DRIVER_LOW => self.set_queue_addr(|q| &mut q.avail_ring, false, value),
            reg::QUEUE_DRIVER_HIGH => self.set_queue_addr(|q| &mut q.avail_ring, true, value),
            reg::QUEUE_DEVICE_LOW => self.set_queue_addr(|q| &mut q.used_ring, false, value),
            reg::QUEUE_DEVICE_HIGH => self.set_queue_addr(|q| &mut q.used_ring, true, value),
            reg::SHM_SEL => {}
            _ => log::debug!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    fn set_queue_addr(
        &mut self,
        field: fn(&mut QueueRegisters) -> &mut u64,
        high: bool,
        value: u32,
    ) {
        if let Some(q) = self.configurable_queue() {
            let addr = field(q);
            let value = u64::from(value);
            *addr = if high {
                (*addr & 0xffff_ffff) | (value << 32)
            } else {
                (*addr & !0xffff_ffff) | value
            };
        }
    }
}

impl<D: VirtioDevice, M: GuestMemory + Send> BusDevice for MmioTransport<D, M> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.guest_errors.log(format_args!(
                "virtio-mmio: {}-byte read at {offset:#x} is not an aligned 32-bit access",
                data.len()
            ));
            data.fill(0xff);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.guest_errors.log(format_args!(
                "virtio-mmio: {}-byte write at {offset:#x} is not a 32-bit access",
                data.len()
            ));
            return;
        };
        if !offset.is_multiple_of(4) {
            self.guest_errors.log(format_args!(
                "virtio-mmio: write at unaligned offset {offset:#x} ignored"
            ));
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

/// Marks queue `index` pending and wakes the device thread.
fn signal(notifier: &dyn QueueNotifier, pending: &AtomicU64, index: u32) {
    if index < 64 {
        pending.fetch_or(1 << index, Ordering::AcqRel);
    }
    if let Err(e) = notifier.notify(index) {
        log::error!("virtio-mmio: cannot signal the device thread: {e}");
    }
}

/// What a vCPU reaches of a device served on its own thread: the transport behind a lock
/// that the device thread holds while it does the device's I/O, and, without that lock,
/// the registers a driver touches while requests are in flight: InterruptStatus,
/// InterruptACK (Linux's interrupt handler reads one and writes the other on every
/// interrupt) and QueueNotify (when it was not caught by an ioeventfd). So a vCPU never
/// waits for a disk: only set-up and reset, which the spec lets wait for the device,
/// take the lock.
pub struct MmioFrontend<T> {
    interrupt_status: Arc<AtomicU32>,
    pending: Arc<AtomicU64>,
    notifier: Arc<dyn QueueNotifier>,
    transport: Arc<Mutex<T>>,
}

impl<D: VirtioDevice, M: GuestMemory> MmioFrontend<MmioTransport<D, M>> {
    /// The front of `transport`, which notifies its device thread through `notifier`.
    pub fn new(mut transport: MmioTransport<D, M>, notifier: Arc<dyn QueueNotifier>) -> Self {
        transport.set_notifier(notifier.clone());
        Self {
            interrupt_status: transport.interrupt_status.clone(),
            pending: transport.pending.clone(),
            notifier,
            transport: Arc::new(Mutex::new(transport)),
        }
    }

    /// The transport, for the device thread.
    pub fn transport(&self) -> Arc<Mutex<MmioTransport<D, M>>> {
        self.transport.clone()
    }
}

impl<T: BusDevice> MmioFrontend<T> {
    fn locked(&self) -> std::sync::MutexGuard<'_, T> {
        self.transport.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: BusDevice> BusDevice for MmioFrontend<T> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == reg::INTERRUPT_STATUS && data.len() == 4 {
            data.copy_from_slice(&self.interrupt_status.load(Ordering::Acquire).to_le_bytes());
        } else {
            self.locked().read(offset, data);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (reg::INTERRUPT_ACK, Ok(bytes)) => {
                self.interrupt_status
                    .fetch_and(!u32::from_le_bytes(bytes), Ordering::AcqRel);
            }
            (reg::QUEUE_NOTIFY, Ok(bytes)) => {
                signal(
                    self.notifier.as_ref(),
                    &self.pending,
                    u32::from_le_bytes(bytes),
                );
            }
            _ => self.locked().write(offset, data),
        }
    }
}
