//! What every virtio transport shares (virtio 1.x spec 2.1, 3.1): the device status
//! machine, feature negotiation, making queues ready, and serving notified queues. The
//! transports ([`super::mmio`], [`super::pci`]) decode their own registers and call in
//! here, so a rule (no request before FEATURES_OK and DRIVER_OK, DEVICE_NEEDS_RESET only
//! cleared by a reset, a queue reconfigured only while it is not ready) holds the same on
//! both.

use std::sync::Arc;

use vm_memory::GuestMemory;

use super::queue::{QueueRegisters, RingFeatures, SplitQueue};
use super::{status, GuestErrorLog, VirtioDevice, VIRTIO_F_VERSION_1};

/// Why a device interrupts its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Queue `n` put buffers in its used ring.
    Queue(u16),
    /// The configuration, or the device status (DEVICE_NEEDS_RESET), changed.
    Config,
}

/// Where a transport delivers its device's interrupts: one line and a status register
/// (virtio-mmio), or one MSI-X vector per queue (virtio-pci).
pub trait InterruptSink: Send + Sync {
    /// Raises the interrupt for `why`.
    fn signal(&self, why: Interrupt);
}

/// Wakes whoever serves the device (its thread's eventfd). Which queue is not passed on:
/// a wake serves every ready queue ([`NotifiedDevice::serve_notified`]).
pub trait QueueNotifier: Send + Sync {
    /// A queue has new buffers.
    fn notify(&self) -> std::io::Result<()>;
}

impl QueueNotifier for vmm_sys_util::eventfd::EventFd {
    fn notify(&self) -> std::io::Result<()> {
        self.write(1)
    }
}

/// What a device thread drives when woken.
pub trait NotifiedDevice: Send {
    /// Serves every ready queue. One wake may stand for notifications of several queues,
    /// some through a KVM ioeventfd (which says nothing about which queue) and some
    /// through the transport: every queue is looked at, not only those the transport saw.
    fn serve_notified(&mut self);
}

/// Wakes the device thread.
pub(super) fn wake(notifier: &dyn QueueNotifier) {
    if let Err(e) = notifier.notify() {
        log::error!("virtio: cannot signal the device thread: {e}");
    }
}

/// The transport-independent state of one virtio device: the device, the guest memory it
/// reaches, its queues, the negotiated features and the status register.
pub struct VirtioState<D: VirtioDevice, M: GuestMemory> {
    pub(super) device: D,
    pub(super) mem: M,
    irq: Arc<dyn InterruptSink>,
    pub(super) queues: Vec<SplitQueue>,
    driver_features: u64,
    device_status: u32,
    pub(super) guest_errors: GuestErrorLog,
    /// Where a queue notification goes when the device works on its own thread (the vCPU
    /// then only signals it); `None`: the notification is served in place.
    notifier: Option<Arc<dyn QueueNotifier>>,
    /// The transport's name in messages ("virtio-mmio", "virtio-pci").
    pub(super) name: &'static str,
}

impl<D: VirtioDevice, M: GuestMemory> VirtioState<D, M> {
    /// `device` reaching the guest's memory through `mem`, interrupting through `irq`.
    pub fn new(device: D, mem: M, irq: Arc<dyn InterruptSink>, name: &'static str) -> Self {
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
            driver_features: 0,
            device_status: 0,
            guest_errors: GuestErrorLog::default(),
            notifier: None,
            name,
        }
    }

    /// Hands queue notifications to `notifier` instead of serving them on the notifying
    /// (vCPU) thread.
    pub fn set_notifier(&mut self, notifier: Arc<dyn QueueNotifier>) {
        self.notifier = Some(notifier);
    }

    /// The status register.
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    /// True once the device marked itself as needing a reset.
    pub fn is_broken(&self) -> bool {
        self.device_status & status::DEVICE_NEEDS_RESET != 0
    }

    /// 32 bits of the device's features: word `select` (0: bits 0-31, 1: bits 32-63,
    /// others 0).
    pub fn device_features_word(&self, select: u32) -> u32 {
        let features = self.device.device_features();
        match select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        }
    }

    /// 32 bits of the features the driver accepted so far, as [`Self::device_features_word`].
    pub fn driver_features_word(&self, select: u32) -> u32 {
        match select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver writes word `select` of its features: only while it negotiates (DRIVER
    /// set, FEATURES_OK not yet).
    pub fn write_driver_features(&mut self, select: u32, value: u32) {
        let negotiating = self.device_status & status::DRIVER != 0
            && self.device_status & status::FEATURES_OK == 0;
        if !negotiating {
            self.guest_errors.log(format_args!(
                "{}: driver features written outside negotiation; ignored",
                self.name
            ));
            return;
        }
        let value = u64::from(value);
        match select {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (value << 32),
            _ => {}
        }
    }

    /// Queue `index`, if the device has it.
    pub fn queue(&self, index: u32) -> Option<&SplitQueue> {
        self.queues.get(index as usize)
    }

    /// The registers of queue `index` if the driver may still configure it (it exists and
    /// is not ready; reconfiguring a ready queue is logged and ignored).
    pub fn configurable_queue(&mut self, index: u32) -> Option<&mut QueueRegisters> {
        if self
            .queues
            .get(index as usize)
            .is_some_and(SplitQueue::is_ready)
        {
            self.guest_errors.log(format_args!(
                "{}: driver reconfigures queue {index} while it is ready; ignored",
                self.name
            ));
            return None;
        }
        self.queues
            .get_mut(index as usize)
            .and_then(SplitQueue::registers_mut)
    }

    /// The ring features the driver accepted (none before FEATURES_OK).
    fn ring_features(&self) -> RingFeatures {
        if self.device_status & status::FEATURES_OK == 0 {
            return RingFeatures::default();
        }
        RingFeatures::from_acked(self.driver_features)
    }

    /// Back to the state after construction: queues, device, features, status. The
    /// guest-error budget is kept, so resetting does not buy a guest more warnings.
    pub fn reset(&mut self) {
        self.queues.iter_mut().for_each(SplitQueue::reset);
        self.device.reset();
        self.driver_features = 0;
        self.device_status = 0;
    }

    /// Raises the interrupt for `why`.
    pub fn raise(&self, why: Interrupt) {
        self.irq.signal(why);
    }

    /// Marks the device broken (spec 2.1.2: DEVICE_NEEDS_RESET plus a configuration
    /// change notification).
    pub fn mark_broken(&mut self, why: &dyn std::fmt::Display) {
        if !self.is_broken() {
            // Through the device's guest-error budget, which a reset does not refill: a
            // guest that breaks the queue, resets and breaks it again cannot flood the log.
            self.guest_errors.log(format_args!(
                "{}: device {} needs a reset: {why}",
                self.name,
                self.device.device_type()
            ));
            self.device_status |= status::DEVICE_NEEDS_RESET;
            self.raise(Interrupt::Config);
        }
    }

    /// The driver writes the status register. 0 resets the device: the caller resets its
    /// own registers too (it sees `value == 0`).
    pub fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Spec 2.1.2: the driver never clears a status bit; only a write of 0 (a reset)
        // goes back. A write that would (DEVICE_NEEDS_RESET alone reads as 0 below) is
        // ignored, so a device cannot be walked back to before FEATURES_OK or DRIVER_OK
        // while its queues stay live.
        let cleared = self.device_status & !status::DEVICE_NEEDS_RESET & !value;
        if cleared != 0 {
            self.guest_errors.log(format_args!(
                "{}: driver clears status bits {cleared:#x} without a reset; ignored",
                self.name
            ));
            return;
        }
        let newly_set = value & !self.device_status;
        let mut value = value;
        if newly_set & status::FEATURES_OK != 0 {
            let offered = self.device.device_features();
            let acked = self.driver_features;
            if acked & !offered != 0 || acked & VIRTIO_F_VERSION_1 == 0 {
                self.guest_errors.log(format_args!(
                    "{}: driver features {acked:#x} are not a subset of {offered:#x} \
                     with VIRTIO_F_VERSION_1; FEATURES_OK refused",
                    self.name
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

    /// The driver enables (`true`) or disables queue `index`. Enabling checks the queue's
    /// registers against guest memory; a queue that fails breaks the device.
    pub fn set_queue_ready(&mut self, index: u32, ready: bool) {
        let features = self.ring_features();
        let Some(queue) = self.queues.get_mut(index as usize) else {
            return;
        };
        if !ready {
            queue.disable();
            return;
        }
        if queue.is_ready() {
            return;
        }
        if let Err(e) = queue.activate(&self.mem, features) {
            self.mark_broken(&format_args!("queue {index}: {e}"));
        }
    }

    /// The driver notified queue `index`: handed to the device thread, or served here.
    pub fn notify(&mut self, index: u32) {
        match &self.notifier {
            Some(notifier) => wake(notifier.as_ref()),
            None => self.serve(index),
        }
    }

    /// Serves queue `index` (on whichever thread serves the device).
    pub fn serve(&mut self, index: u32) {
        // Requests only once the driver is fully set up (spec 3.1.1: FEATURES_OK, then
        // DRIVER_OK); a DRIVER_OK without accepted features serves nothing.
        let ready = status::FEATURES_OK | status::DRIVER_OK;
        let driver_ok = self.device_status & ready == ready;
        if !driver_ok || self.is_broken() {
            log::debug!(
                "{}: notify for queue {index} ignored (status {:#x})",
                self.name,
                self.device_status
            );
            return;
        }
        let i = index as usize;
        let Some(queue) = self.queues.get_mut(i) else {
            self.guest_errors.log(format_args!(
                "{}: notify for queue {index}, which does not exist",
                self.name
            ));
            return;
        };
        if !queue.is_ready() {
            return;
        }
        let result = self.device.process_queue(i, queue, &self.mem);
        let yielded = queue.take_yielded();
        match result {
            // `i` < the queue count, which came from a slice of u16 sizes: far below 2^16.
            Ok(true) => self.raise(Interrupt::Queue(index as u16)),
            Ok(false) => {}
            Err(e) => self.mark_broken(&format_args!("queue {index}: {e}")),
        }
        if yielded && !self.is_broken() {
            // The queue still holds published chains, which the driver will not notify
            // again: the device thread wakes itself to serve them after releasing the lock.
            // Served in place (no device thread), they wait for the driver's next
            // notification.
            match &self.notifier {
                Some(notifier) => wake(notifier.as_ref()),
                None => self.guest_errors.log(format_args!(
                    "{}: queue {index} kept the device busy past its budget; the chains \
                     left wait for the next notification",
                    self.name
                )),
            }
        }
    }

    /// Serves every ready queue (see [`NotifiedDevice::serve_notified`]). A queue with
    /// nothing new costs a read of its available index.
    pub fn serve_notified(&mut self) {
        for index in 0..self.queues.len() {
            // `index` < the queue count, which came from a slice of u16 sizes.
            self.serve(index as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicBool, Ordering};

    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::virtio::queue::{QueueError, NOTIFY_BUDGET_QUEUES, VIRTQ_DESC_F_WRITE};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const SIZE: u16 = 16;

    /// Republishes descriptor 0 for every chain it serves while `flood` is set: a driver
    /// on another CPU publishing as fast as the device serves.
    struct Flood {
        flood: Arc<AtomicBool>,
        sizes: [u16; 1],
    }

    fn publish(mem: &impl GuestMemory) {
        let idx: u16 = mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        mem.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(idx % SIZE)))
            .unwrap();
        mem.write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
    }

    impl VirtioDevice for Flood {
        fn device_type(&self) -> u32 {
            2
        }
        fn device_features(&self) -> u64 {
            VIRTIO_F_VERSION_1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.sizes
        }
        fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn set_acked_features(&mut self, _features: u64) {}
        fn process_queue<M: GuestMemory>(
            &mut self,
            _index: usize,
            queue: &mut SplitQueue,
            mem: &M,
        ) -> Result<bool, QueueError> {
            queue.serve_available(mem, |_| {
                if self.flood.load(Ordering::SeqCst) {
                    publish(mem);
                }
                1
            })
        }
        fn reset(&mut self) {}
    }

    struct NoIrq;
    impl InterruptSink for NoIrq {
        fn signal(&self, _why: Interrupt) {}
    }

    #[test]
    fn a_queue_served_to_its_budget_wakes_its_device_thread_again() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let flood = Arc::new(AtomicBool::new(true));
        let device = Flood {
            flood: flood.clone(),
            sizes: [SIZE],
        };
        let mut state = VirtioState::new(device, mem.clone(), Arc::new(NoIrq), "test");
        let wake = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        state.set_notifier(wake.clone());
        let s = status::ACKNOWLEDGE | status::DRIVER;
        state.write_status(s);
        state.write_driver_features(1, 1); // VIRTIO_F_VERSION_1
        state.write_status(s | status::FEATURES_OK);
        *state.configurable_queue(0).unwrap() = QueueRegisters {
            size: SIZE,
            desc_table: DESC,
            avail_ring: AVAIL,
            used_ring: USED,
        };
        state.set_queue_ready(0, true);
        state.write_status(s | status::FEATURES_OK | status::DRIVER_OK);
        // Descriptor 0: one device-writable byte.
        mem.write_obj(0x8000u64, GuestAddress(DESC)).unwrap();
        mem.write_obj(1u32, GuestAddress(DESC + 8)).unwrap();
        mem.write_obj(VIRTQ_DESC_F_WRITE, GuestAddress(DESC + 12))
            .unwrap();
        publish(&mem);

        let used = |mem: &GuestMemoryMmap| mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap();
        let budget = u32::from(SIZE) * NOTIFY_BUDGET_QUEUES;
        state.serve_notified();
        assert_eq!(u32::from(used(&mem)), budget);
        assert_eq!(wake.read().unwrap(), 1, "the device thread woke itself");
        state.serve_notified();
        assert_eq!(u32::from(used(&mem)), 2 * budget);
        assert_eq!(wake.read().unwrap(), 1);
        // The driver stops: the chain left is served, and no more wakes.
        flood.store(false, Ordering::SeqCst);
        state.serve_notified();
        assert_eq!(u32::from(used(&mem)), 2 * budget + 1);
        assert!(wake.read().is_err(), "nothing left: no wake");
    }
}
