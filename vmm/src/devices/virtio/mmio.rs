//! The virtio-mmio transport, version 2 (virtio 1.x spec 4.2.2): a 0x1000-byte register
//! window whose first 0x100 bytes are 32-bit registers and whose rest is the device's
//! configuration space.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemory;

use super::queue::QueueRegisters;
use super::transport::{
    wake, Interrupt, InterruptSink, NotifiedDevice, QueueNotifier, VirtioState,
};
use super::{IrqTrigger, VirtioDevice};
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
    state: VirtioState<D, M>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    /// InterruptStatus: shared with the [`MmioFrontend`], which reads and acknowledges it
    /// without the transport's lock, and with the interrupt sink, which sets it.
    interrupt_status: Arc<AtomicU32>,
}

/// virtio-mmio's interrupt: one line, the reason in InterruptStatus.
struct MmioInterrupt {
    status: Arc<AtomicU32>,
    irq: Arc<dyn IrqTrigger>,
}

impl InterruptSink for MmioInterrupt {
    fn signal(&self, why: Interrupt) {
        let bit = match why {
            Interrupt::Queue(_) => INT_USED_BUFFER,
            Interrupt::Config => INT_CONFIG_CHANGE,
        };
        self.status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.irq.trigger() {
            log::error!("virtio-mmio: cannot raise the device interrupt: {e}");
        }
    }
}

impl<D: VirtioDevice + Send, M: GuestMemory + Send> NotifiedDevice for MmioTransport<D, M> {
    fn serve_notified(&mut self) {
        self.state.serve_notified();
    }
}

impl<D: VirtioDevice, M: GuestMemory> MmioTransport<D, M> {
    /// Hands QueueNotify writes to `notifier` instead of serving them on the writing
    /// (vCPU) thread; the device's own thread then calls [`NotifiedDevice::serve_notified`].
    pub fn set_notifier(&mut self, notifier: Arc<dyn QueueNotifier>) {
        self.state.set_notifier(notifier);
    }

    /// Puts `device` behind a transport that reaches the guest's memory through `mem` and
    /// raises its interrupt through `irq`.
    pub fn new(device: D, mem: M, irq: Arc<dyn IrqTrigger>) -> Self {
        let interrupt_status = Arc::new(AtomicU32::new(0));
        let sink = Arc::new(MmioInterrupt {
            status: interrupt_status.clone(),
            irq,
        });
        Self {
            state: VirtioState::new(device, mem, sink, "virtio-mmio"),
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            interrupt_status,
        }
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.state.device
    }

    /// The current device status register.
    pub fn device_status(&self) -> u32 {
        self.state.device_status()
    }

    /// The current interrupt status register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status.load(Ordering::Acquire)
    }

    /// Whether the device offers VIRTIO_F_ACCESS_PLATFORM (the launch policy's question
    /// for each virtio device of an SNP guest).
    pub fn offers_access_platform(&self) -> bool {
        self.state.device.offers_access_platform()
    }

    /// Warnings the device may still log about its guest (tests: the budget survives
    /// resets).
    #[cfg(test)]
    pub(crate) fn guest_warnings_left(&self) -> u32 {
        self.state.guest_errors.left
    }

    /// True once the device marked itself as needing a reset.
    pub fn is_broken(&self) -> bool {
        self.state.is_broken()
    }

    fn write_status(&mut self, value: u32) {
        self.state.write_status(value);
        if value == 0 {
            self.queue_sel = 0;
            self.device_features_sel = 0;
            self.driver_features_sel = 0;
            self.interrupt_status.store(0, Ordering::Release);
        }
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let queue = self.state.queue(self.queue_sel);
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.state.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => self.state.device_features_word(self.device_features_sel),
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.is_ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status(),
            reg::STATUS => self.state.device_status(),
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
            reg::DRIVER_FEATURES => self
                .state
                .write_driver_features(self.driver_features_sel, value),
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.state.configurable_queue(self.queue_sel) {
                    // Checked (power of two, <= max) when the queue is made ready.
                    q.size = u16::try_from(value).unwrap_or(0);
                }
            }
            reg::QUEUE_READY => self.state.set_queue_ready(self.queue_sel, value != 0),
            reg::QUEUE_NOTIFY => self.state.notify(value),
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
        if let Some(q) = self.state.configurable_queue(self.queue_sel) {
            set_half(field(q), high, value);
        }
    }
}

/// Sets the low (`high` false) or high half of `addr` to `value`.
pub(super) fn set_half(addr: &mut u64, high: bool, value: u32) {
    let value = u64::from(value);
    *addr = if high {
        (*addr & 0xffff_ffff) | (value << 32)
    } else {
        (*addr & !0xffff_ffff) | value
    };
}

impl<D: VirtioDevice, M: GuestMemory + Send> BusDevice for MmioTransport<D, M> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.state.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.state.guest_errors.log(format_args!(
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
            self.state.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.state.guest_errors.log(format_args!(
                "virtio-mmio: {}-byte write at {offset:#x} is not a 32-bit access",
                data.len()
            ));
            return;
        };
        if !offset.is_multiple_of(4) {
            self.state.guest_errors.log(format_args!(
                "virtio-mmio: write at unaligned offset {offset:#x} ignored"
            ));
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
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
    notifier: Arc<dyn QueueNotifier>,
    transport: Arc<Mutex<T>>,
}

impl<D: VirtioDevice, M: GuestMemory> MmioFrontend<MmioTransport<D, M>> {
    /// The front of `transport`, which notifies its device thread through `notifier`.
    pub fn new(mut transport: MmioTransport<D, M>, notifier: Arc<dyn QueueNotifier>) -> Self {
        transport.set_notifier(notifier.clone());
        Self {
            interrupt_status: transport.interrupt_status.clone(),
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
            (reg::QUEUE_NOTIFY, Ok(_)) => wake(self.notifier.as_ref()),
            _ => self.locked().write(offset, data),
        }
    }
}
