//! The virtio-pci transport, modern (virtio 1.x spec 4.1): a non-transitional PCI function
//! whose one 64-bit memory BAR holds the virtio structures the capabilities point at, and
//! whose interrupts are MSI-X vectors, one per queue plus one for configuration changes.
//!
//! ```text
//! BAR0 (32 KiB)   0x0000 common configuration (4.1.4.3)
//!                 0x1000 ISR status (read clears)
//!                 0x2000 device-specific configuration
//!                 0x3000 notifications: queue n at 0x3000 + 4 n (notify_off_multiplier 4)
//!                 0x4000 MSI-X table, 0x5000 pending-bit array
//! ```
//!
//! The split mirrors the MMIO transport's: [`VirtioPciTransport`] (common configuration and
//! device configuration, behind the lock a device thread holds while it does the device's
//! I/O) and [`VirtioPciFunction`] (configuration space, MSI-X, ISR and notifications, which
//! a vCPU serves without that lock). A notification normally never reaches either: a KVM
//! ioeventfd on each queue's notify address, moved with the BAR, wakes the device thread.

use std::ops::Range;
use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemory;
use vmm_sys_util::eventfd::EventFd;

use super::queue::QueueRegisters;
use super::transport::{wake, Interrupt, InterruptSink, NotifiedDevice, VirtioState};
use super::{GuestErrorLog, VirtioDevice};
use crate::devices::pci::config::{ConfigSpace, Identity};
use crate::devices::pci::msix::{MsixTable, MsixVectors};
use crate::devices::pci::{PciFunction, PciHost};

/// PCI vendor ID of virtio devices.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// A modern device's PCI device ID is this plus its virtio device ID.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// "No vector" in msix_config and queue_msix_vector.
pub const NO_VECTOR: u16 = 0xffff;
/// Size of BAR0.
pub const BAR_SIZE: u64 = 0x8000;
/// Offsets of the structures inside BAR0.
pub mod bar {
    #![allow(missing_docs)]
    pub const COMMON: u64 = 0x0000;
    pub const COMMON_LEN: u64 = 0x38;
    pub const ISR: u64 = 0x1000;
    pub const ISR_LEN: u64 = 4;
    pub const DEVICE: u64 = 0x2000;
    pub const DEVICE_LEN: u64 = 0x1000;
    pub const NOTIFY: u64 = 0x3000;
    pub const NOTIFY_LEN: u64 = 0x1000;
    pub const MSIX_TABLE: u64 = 0x4000;
    pub const MSIX_PBA: u64 = 0x5000;
}
/// Bytes between two queues' notify addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

/// Common configuration field offsets (spec 4.1.4.3).
pub mod common {
    #![allow(missing_docs)]
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const MSIX_CONFIG: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// Capability ID of a vendor-specific capability (what virtio's structures use).
const CAP_ID_VENDOR: u8 = 0x09;
/// virtio_pci_cap cfg_type values.
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
/// Length of `struct virtio_pci_cap`.
const VIRTIO_CAP_LEN: usize = 16;

/// The PCI identity of a modern virtio device of type `device_type`.
pub fn identity(device_type: u32) -> Identity {
    let device_type = u16::try_from(device_type).unwrap_or(0);
    Identity {
        vendor: VIRTIO_PCI_VENDOR,
        device: VIRTIO_PCI_DEVICE_BASE.saturating_add(device_type),
        revision: 1,
        // Mass storage, "other" for every type: Linux binds by vendor and device ID.
        class: 0x01_80_00,
        subsystem_vendor: VIRTIO_PCI_VENDOR,
        subsystem: 0x40,
    }
}

/// Interrupt state shared by the transport, the function and the device thread.
pub struct PciInterrupts {
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    msix: Arc<MsixVectors>,
}

impl PciInterrupts {
    fn new(queues: usize, msix: Arc<MsixVectors>) -> Self {
        Self {
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            msix,
        }
    }

    fn reset(&self) {
        self.isr.store(0, Ordering::Release);
        self.config_vector.store(NO_VECTOR, Ordering::Release);
        for v in &self.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
    }

    /// A vector number the driver asks for: kept if the function has it, else NO_VECTOR
    /// (which the driver reads back and so learns of the refusal, spec 4.1.5.1.2).
    fn checked(&self, vector: u16) -> u16 {
        if usize::from(vector) < self.msix.len() {
            vector
        } else {
            NO_VECTOR
        }
    }
}

impl InterruptSink for PciInterrupts {
    fn signal(&self, why: Interrupt) {
        let (bit, vector) = match why {
            Interrupt::Queue(q) => (
                1,
                self.queue_vectors
                    .get(usize::from(q))
                    .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire)),
            ),
            Interrupt::Config => (2, self.config_vector.load(Ordering::Acquire)),
        };
        self.isr.fetch_or(bit, Ordering::AcqRel);
        self.msix.signal(vector);
    }
}

/// The part of a virtio-pci function behind the device's lock: the common and the
/// device-specific configuration.
pub struct VirtioPciTransport<D: VirtioDevice, M: GuestMemory> {
    state: VirtioState<D, M>,
    interrupts: Arc<PciInterrupts>,
    queue_select: u16,
    device_feature_select: u32,
    driver_feature_select: u32,
}

impl<D: VirtioDevice + Send, M: GuestMemory + Send> NotifiedDevice for VirtioPciTransport<D, M> {
    fn serve_notified(&mut self) {
        self.state.serve_notified();
    }
}

impl<D: VirtioDevice, M: GuestMemory> VirtioPciTransport<D, M> {
    /// The device status register.
    pub fn device_status(&self) -> u32 {
        self.state.device_status()
    }

    /// True once the device marked itself as needing a reset.
    pub fn is_broken(&self) -> bool {
        self.state.is_broken()
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.state.device
    }

    fn queue_registers(&mut self) -> Option<&mut QueueRegisters> {
        self.state.configurable_queue(u32::from(self.queue_select))
    }

    fn read_common(&mut self, offset: u64, data: &mut [u8]) {
        let q = u32::from(self.queue_select);
        let queue = self.state.queue(q);
        let regs = queue.map(|q| *q.registers());
        let value: u64 = match (offset, data.len()) {
            (common::DEVICE_FEATURE_SELECT, 4) => self.device_feature_select.into(),
            (common::DEVICE_FEATURE, 4) => self
                .state
                .device_features_word(self.device_feature_select)
                .into(),
            (common::DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select.into(),
            (common::DRIVER_FEATURE, 4) => self
                .state
                .driver_features_word(self.driver_feature_select)
                .into(),
            (common::MSIX_CONFIG, 2) => {
                self.interrupts.config_vector.load(Ordering::Acquire).into()
            }
            (common::NUM_QUEUES, 2) => self.state.queues.len() as u64,
            (common::DEVICE_STATUS, 1) => (self.state.device_status() & 0xff).into(),
            (common::CONFIG_GENERATION, 1) => 0,
            (common::QUEUE_SELECT, 2) => self.queue_select.into(),
            (common::QUEUE_SIZE, 2) => regs.map_or(0, |r| r.size.into()),
            (common::QUEUE_MSIX_VECTOR, 2) => self
                .interrupts
                .queue_vectors
                .get(q as usize)
                .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire))
                .into(),
            (common::QUEUE_ENABLE, 2) => queue.map_or(0, |q| q.is_ready().into()),
            (common::QUEUE_NOTIFY_OFF, 2) => {
                if queue.is_some() {
                    q.into()
                } else {
                    0
                }
            }
            (o @ (common::QUEUE_DESC | common::QUEUE_DRIVER | common::QUEUE_DEVICE), 4 | 8)
            | (o @ (0x24 | 0x2c | 0x34), 4) => {
                let r = regs.unwrap_or(QueueRegisters {
                    size: 0,
                    desc_table: 0,
                    avail_ring: 0,
                    used_ring: 0,
                });
                let field = match o & !7 {
                    common::QUEUE_DESC => r.desc_table,
                    common::QUEUE_DRIVER => r.avail_ring,
                    _ => r.used_ring,
                };
                if o % 8 == 4 {
                    field >> 32
                } else {
                    field
                }
            }
            (offset, len) => {
                self.state.guest_errors.log(format_args!(
                    "virtio-pci: {len}-byte read at common configuration offset {offset:#x} is not a field"
                ));
                u64::MAX
            }
        };
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 8];
        bytes[..data.len()].copy_from_slice(data);
        let value = u64::from_le_bytes(bytes);
        let v32 = value as u32;
        let v16 = value as u16;
        match (offset, data.len()) {
            (common::DEVICE_FEATURE_SELECT, 4) => self.device_feature_select = v32,
            (common::DRIVER_FEATURE_SELECT, 4) => self.driver_feature_select = v32,
            (common::DRIVER_FEATURE, 4) => self
                .state
                .write_driver_features(self.driver_feature_select, v32),
            (common::MSIX_CONFIG, 2) => {
                let v = self.interrupts.checked(v16);
                self.interrupts.config_vector.store(v, Ordering::Release);
            }
            (common::DEVICE_STATUS, 1) => {
                self.state.write_status(u32::from(data[0]));
                if data[0] == 0 {
                    self.queue_select = 0;
                    self.device_feature_select = 0;
                    self.driver_feature_select = 0;
                    self.interrupts.reset();
                }
            }
            (common::QUEUE_SELECT, 2) => self.queue_select = v16,
            (common::QUEUE_SIZE, 2) => {
                if let Some(r) = self.queue_registers() {
                    // Checked (power of two, <= max) when the queue is enabled.
                    r.size = v16;
                }
            }
            (common::QUEUE_MSIX_VECTOR, 2) => {
                let v = self.interrupts.checked(v16);
                if let Some(slot) = self.interrupts.queue_vectors.get(usize::from(self.queue_select)) {
                    slot.store(v, Ordering::Release);
                }
            }
            (common::QUEUE_ENABLE, 2) => {
                if v16 == 1 {
                    self.state.set_queue_ready(u32::from(self.queue_select), true);
                } else {
                    // Spec 4.1.4.3.2: the driver MUST NOT write 0; a queue stops by reset.
                    self.state.guest_errors.log(format_args!(
                        "virtio-pci: queue_enable written with {v16}; only 1 is allowed"
                    ));
                }
            }
            (o @ (common::QUEUE_DESC | common::QUEUE_DRIVER | common::QUEUE_DEVICE), 4 | 8)
            | (o @ (0x24 | 0x2c | 0x34), 4) => {
                let Some(r) = self.queue_registers() else {
                    return;
                };
                let field = match o & !7 {
                    common::QUEUE_DESC => &mut r.desc_table,
                    common::QUEUE_DRIVER => &mut r.avail_ring,
                    _ => &mut r.used_ring,
                };
                if data.len() == 8 {
                    *field = value;
                } else {
                    super::mmio::set_half(field, o % 8 == 4, v32);
                }
            }
            (offset, len) => self.state.guest_errors.log(format_args!(
                "virtio-pci: {len}-byte write at common configuration offset {offset:#x} is not a writable field; ignored"
            )),
        }
    }
}

/// Where queue notifications go: a device thread's eventfd, also registered as a KVM
/// ioeventfd on each queue's notify address while the BAR is decoded.
struct Notify {
    event: Arc<EventFd>,
    registered: Vec<u64>,
}

/// A virtio device as a PCI function.
pub struct VirtioPciFunction<D: VirtioDevice, M: GuestMemory> {
    config: ConfigSpace,
    msix: MsixTable,
    msix_cap: usize,
    pci_cfg_cap: usize,
    interrupts: Arc<PciInterrupts>,
    transport: Arc<Mutex<VirtioPciTransport<D, M>>>,
    num_queues: u64,
    notify: Option<Notify>,
    host: Arc<dyn PciHost>,
    /// Where BAR0 may be decoded (the PCI window); a BAR moved elsewhere gets no ioeventfds.
    window: Range<u64>,
    guest_errors: GuestErrorLog,
}

/// How a virtio-pci function is wired to the VM.
pub struct PciWiring {
    /// BAR0's address when the guest starts (inside `window`, aligned to [`BAR_SIZE`]).
    pub bar0: u64,
    /// The PCI memory window.
    pub window: Range<u64>,
    /// One irqfd per MSI-X vector (vector 0 first); a device with `n` queues uses up to
    /// `n + 1`.
    pub vector_irqs: Vec<Arc<dyn crate::devices::virtio::IrqTrigger>>,
    /// The GSI each of those irqfds is bound to.
    pub vector_gsis: Vec<u32>,
    /// What the function asks of the hypervisor.
    pub host: Arc<dyn PciHost>,
    /// The device thread's eventfd; `None`: notifications are served on the vCPU.
    pub notify: Option<Arc<EventFd>>,
}

impl<D: VirtioDevice, M: GuestMemory> VirtioPciFunction<D, M> {
    /// `device` behind a virtio-pci function wired as `wiring` says.
    pub fn new(device: D, mem: M, wiring: PciWiring) -> Self {
        let msix_vectors = Arc::new(MsixVectors::new(wiring.vector_irqs));
        let msix = MsixTable::new(
            msix_vectors.clone(),
            wiring.vector_gsis,
            wiring.host.clone(),
        );
        let queues = device.queue_max_sizes().len();
        let interrupts = Arc::new(PciInterrupts::new(queues, msix_vectors));
        let mut config = ConfigSpace::new(identity(device.device_type()));
        config.add_bar64(0, BAR_SIZE, wiring.bar0);
        config.enable_memory();
        let mut state = VirtioState::new(device, mem, interrupts.clone(), "virtio-pci");
        let notify = wiring.notify.map(|event| {
            state.set_notifier(event.clone());
            Notify {
                event,
                registered: Vec::new(),
            }
        });
        let num_queues = queues as u64;
        let caps = add_capabilities(&mut config, &msix, num_queues);
        let mut f = Self {
            config,
            msix,
            msix_cap: caps.0,
            pci_cfg_cap: caps.1,
            interrupts: interrupts.clone(),
            transport: Arc::new(Mutex::new(VirtioPciTransport {
                state,
                interrupts,
                queue_select: 0,
                device_feature_select: 0,
                driver_feature_select: 0,
            })),
            num_queues,
            notify,
            host: wiring.host,
            window: wiring.window,
            guest_errors: GuestErrorLog::default(),
        };
        f.update_ioevents();
        f
    }

    /// The transport, for the device thread.
    pub fn transport(&self) -> Arc<Mutex<VirtioPciTransport<D, M>>> {
        self.transport.clone()
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, VirtioPciTransport<D, M>> {
        self.transport.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// BAR0's base while the function decodes memory.
    fn decoded_bar(&self) -> Option<u64> {
        self.config.memory_enabled().then(|| self.config.bar64(0))
    }

    /// Registers an ioeventfd per queue at BAR0's notify addresses, where BAR0 is now.
    fn update_ioevents(&mut self) {
        let decoded = self.decoded_bar();
        let Some(notify) = &mut self.notify else {
            return;
        };
        let wanted: Vec<u64> = match decoded {
            Some(base)
                if base >= self.window.start
                    && base
                        .checked_add(BAR_SIZE)
                        .is_some_and(|e| e <= self.window.end) =>
            {
                (0..self.num_queues)
                    .map(|q| base + bar::NOTIFY + q * u64::from(NOTIFY_OFF_MULTIPLIER))
                    .collect()
            }
            _ => Vec::new(),
        };
        if wanted == notify.registered {
            return;
        }
        for addr in notify.registered.drain(..) {
            if let Err(e) = self.host.unregister_ioevent(&notify.event, addr) {
                log::error!("virtio-pci: cannot remove the ioeventfd at {addr:#x}: {e}");
            }
        }
        for addr in wanted {
            match self.host.register_ioevent(&notify.event, addr) {
                Ok(()) => notify.registered.push(addr),
                // The notification then exits to the monitor and is signalled from there.
                Err(e) => self.guest_errors.log(format_args!(
                    "virtio-pci: no ioeventfd at {addr:#x} ({e}); notifications exit to the monitor"
                )),
            }
        }
    }

    /// An access of `data.len()` bytes at `offset` inside BAR0.
    fn bar_access(&mut self, offset: u64, read: Option<&mut [u8]>, write: &[u8]) {
        let len = read.as_ref().map_or(write.len(), |d| d.len()) as u64;
        let inside = |start: u64, size: u64| offset >= start && offset + len <= start + size;
        if inside(bar::COMMON, bar::COMMON_LEN) {
            match read {
                Some(d) => self.locked().read_common(offset - bar::COMMON, d),
                None => self.locked().write_common(offset - bar::COMMON, write),
            }
        } else if inside(bar::ISR, bar::ISR_LEN) {
            if let Some(d) = read {
                d.fill(0);
                if offset == bar::ISR {
                    // Reading clears it (spec 4.1.4.5).
                    d[0] = self.interrupts.isr.swap(0, Ordering::AcqRel);
                }
            }
        } else if inside(bar::DEVICE, bar::DEVICE_LEN) {
            let mut t = self.locked();
            match read {
                Some(d) => t.state.device.read_config(offset - bar::DEVICE, d),
                None => t.state.device.write_config(offset - bar::DEVICE, write),
            }
        } else if inside(bar::NOTIFY, bar::NOTIFY_LEN) {
            match read {
                Some(d) => d.fill(0),
                None => {
                    self.notify_queue((offset - bar::NOTIFY) / u64::from(NOTIFY_OFF_MULTIPLIER))
                }
            }
        } else if inside(bar::MSIX_TABLE, self.msix.table_len() as u64) {
            let o = (offset - bar::MSIX_TABLE) as usize;
            match read {
                Some(d) => self.msix.read_table(o, d),
                None => self.msix.write_table(o, write),
            }
        } else if inside(bar::MSIX_PBA, self.msix.pba_len() as u64) {
            match read {
                Some(d) => self.msix.read_pba((offset - bar::MSIX_PBA) as usize, d),
                None => self.guest_errors.log(format_args!(
                    "virtio-pci: write to the read-only MSI-X pending-bit array ignored"
                )),
            }
        } else {
            match read {
                Some(d) => d.fill(0xff),
                None => log::debug!("virtio-pci: write at BAR0 offset {offset:#x} hits nothing"),
            }
        }
    }

    fn notify_queue(&mut self, queue: u64) {
        let Ok(queue) = u32::try_from(queue) else {
            return;
        };
        match &self.notify {
            Some(n) => wake(n.event.as_ref()),
            None => self.locked().state.notify(queue),
        }
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG window: the driver names a BAR offset and length in the
    /// capability, then reads or writes `pci_cfg_data` to reach it.
    fn pci_cfg_access(&mut self, read: bool) {
        let cap = self.pci_cfg_cap;
        let bar_index = self.config.dword(cap + 4) & 0xff;
        let offset = u64::from(self.config.dword(cap + 8));
        let len = self.config.dword(cap + 12) as usize;
        if bar_index != 0 || !matches!(len, 1 | 2 | 4) {
            return;
        }
        let mut data = [0u8; 4];
        self.config.read(cap + VIRTIO_CAP_LEN, &mut data);
        if read {
            self.bar_access(offset, Some(&mut data[..len]), &[]);
            self.config.set_bytes(cap + VIRTIO_CAP_LEN, &data);
        } else {
            self.bar_access(offset, None, &data[..len]);
        }
    }

    fn touches(offset: usize, len: usize, start: usize, field_len: usize) -> bool {
        offset < start + field_len && start < offset + len
    }
}

/// Adds the virtio structures' capabilities, the PCI configuration access capability and
/// MSI-X; returns the offsets of the MSI-X and of the configuration access capability.
fn add_capabilities(config: &mut ConfigSpace, msix: &MsixTable, num_queues: u64) -> (usize, usize) {
    let notify_len = (num_queues.max(1) * u64::from(NOTIFY_OFF_MULTIPLIER)) as u32;
    let structures: [(u8, u64, u32); 4] = [
        (CFG_COMMON, bar::COMMON, bar::COMMON_LEN as u32),
        (CFG_NOTIFY, bar::NOTIFY, notify_len),
        (CFG_ISR, bar::ISR, bar::ISR_LEN as u32),
        (CFG_DEVICE, bar::DEVICE, bar::DEVICE_LEN as u32),
    ];
    for (cfg_type, offset, length) in structures {
        let mut cap = virtio_cap(cfg_type, offset as u32, length);
        if cfg_type == CFG_NOTIFY {
            cap.extend_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
            cap[2] = cap.len() as u8;
        }
        // The layout is fixed and fits the 192 bytes after the header (checked by a test).
        let _ = config.add_capability(&cap, &[]);
    }
    let mut cfg = virtio_cap(CFG_PCI, 0, 0);
    cfg.extend_from_slice(&[0; 4]);
    cfg[2] = cfg.len() as u8;
    // bar, offset, length and pci_cfg_data are the driver's.
    let mut writable = vec![0u8; cfg.len()];
    writable[4] = 0xff;
    writable[8..].fill(0xff);
    let pci_cfg_cap = config.add_capability(&cfg, &writable).unwrap_or(0);
    let (body, mask) = msix.capability(0, bar::MSIX_TABLE as u32, bar::MSIX_PBA as u32);
    let msix_cap = config.add_capability(&body, &mask).unwrap_or(0);
    (msix_cap, pci_cfg_cap)
}

fn virtio_cap(cfg_type: u8, offset: u32, length: u32) -> Vec<u8> {
    let mut cap = vec![CAP_ID_VENDOR, 0, VIRTIO_CAP_LEN as u8, cfg_type, 0, 0, 0, 0];
    cap.extend_from_slice(&offset.to_le_bytes());
    cap.extend_from_slice(&length.to_le_bytes());
    cap
}

impl<D: VirtioDevice, M: GuestMemory + Send> PciFunction for VirtioPciFunction<D, M> {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if self.pci_cfg_cap != 0
            && Self::touches(offset, data.len(), self.pci_cfg_cap + VIRTIO_CAP_LEN, 4)
        {
            self.pci_cfg_access(true);
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        let before = (self.config.memory_enabled(), self.config.bar64(0));
        self.config.write(offset, data);
        if self.msix_cap != 0 && Self::touches(offset, data.len(), self.msix_cap + 2, 2) {
            self.msix.set_control(self.config.word(self.msix_cap + 2));
        }
        if self.pci_cfg_cap != 0
            && Self::touches(offset, data.len(), self.pci_cfg_cap + VIRTIO_CAP_LEN, 4)
        {
            self.pci_cfg_access(false);
        }
        if (self.config.memory_enabled(), self.config.bar64(0)) != before {
            self.update_ioevents();
        }
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        match self.decoded_bar() {
            Some(base) if addr >= base && addr - base + data.len() as u64 <= BAR_SIZE => {
                self.bar_access(addr - base, Some(data), &[]);
                true
            }
            _ => false,
        }
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.decoded_bar() {
            Some(base) if addr >= base && addr - base + data.len() as u64 <= BAR_SIZE => {
                self.bar_access(addr - base, None, data);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
