//! PCI bus 0 with a virtio-blk-pci function, wired as the builder wires it for `--virtio
//! pci` (`cloister_vmm::devices::pci`, `cloister_vmm::devices::virtio::pci`): the
//! configuration ports 0xCF8..0xCFF and the PCI memory window on their buses, BAR0 at the
//! first slot's address, a disk with two request queues (VIRTIO_BLK_F_MQ, as the builder
//! makes for two vCPUs) and three MSI-X vectors (configuration, then one per queue), the
//! notify eventfd of a device thread, and a mock `PciHost` that records MSI routes and
//! ioeventfds. A hostile guest's accesses, the device thread and the hypervisor's
//! ioeventfds are played in one thread, in input order.
//!
//! Input: `[flags][operation]...` (at most 512 operations). Flags: bit 0 notifications
//! are served on the vCPU (no device thread, no ioeventfds), bit 1 the disk is read-only.
//! An operation is `[kind]` and, by `kind % 9`:
//!
//! - 0 `[value: u32]`: a 4-byte write to CONFIG_ADDRESS.
//! - 1 `[ctl][value: u32]`: any access at ports 0xCF4..0xD03 (`ctl` bits 0-3 the port,
//!   4-6 the width: 1, 2, 4, 3 or 8, bit 7 a write), across and beside the two registers.
//! - 2 `[device][register][ctl][value: u32]`: Linux's configuration cycle: CONFIG_ADDRESS
//!   for bus 0 (`device` bits 0-4 the device, bit 7 set: function `(device >> 5) & 3`),
//!   then an access at CONFIG_DATA + `register & 3` (`ctl` bits 0-2 the width, bit 6 the
//!   enable bit cleared, bit 7 a write).
//! - 3 `[mode][offset: u32][width]`, 4 the same then `[value: u64]`: a read or write of 1,
//!   2, 4 or 8 bytes (or an odd 3, 5, 6, 7) on the MMIO bus, at (`mode % 4`) BAR0's
//!   current address + `offset & 0x7fff`, BAR0 + `offset` as a signed offset, the PCI
//!   window's start + `offset` (where BAR0 starts), or `offset` itself. BAR0 is where the
//!   guest last put it, decoded or not. A write at a registered ioeventfd's address
//!   signals the eventfd instead, as KVM does.
//! - 5 `[gpa: u32][blob]`: a guest-memory write (of at most 256 bytes, `gpa & 0x7ffff`,
//!   RAM is the first 256 KiB).
//! - 6 `[type][sector][sectors][ctl]`: a virtio-blk request (IN, OUT, FLUSH, GET_ID or a
//!   raw type) on queue `(ctl >> 2) & 1`'s rings at the seeds' ring addresses (queue 1's
//!   0x3000 above queue 0's), with that queue's own buffers, published in its available
//!   ring; `ctl` bit 0: then notify the queue at its address in BAR0 (notify + 4 * queue),
//!   bit 1: then the device thread serves.
//! - 7: the device thread wakes, if its eventfd was signalled, and serves
//!   (`serve_notified`).
//! - 8 `[count]`: the host refuses the next `count % 4` ioeventfd registrations.
//!
//! Seeds: Linux's boot sequence, written by this target: the mechanism #1 probe, the bus
//! scan, BAR sizing, the capability walk of virtio_pci_modern, reset, feature negotiation
//! (VIRTIO_BLK_F_MQ accepted, num_queues read), MSI-X set-up, queue q on vector q + 1 for
//! both queues, DRIVER_OK, a capacity read and a one-sector read on queue 0 served by the
//! device thread; the same with notifications served on the vCPU; a read on queue 1 (done
//! on vector 2) then one on queue 0, with and without the device thread; with BAR0 moved
//! inside the window, out of it and back, both queues notified; with the host refusing
//! queue 0's ioeventfd, so one queue's notification exits and the other's does not; and
//! the VIRTIO_PCI_CAP_PCI_CFG window, both queues notified through it.
//!
//! Asserted after every operation, besides "no panic": the host never sees an ioeventfd
//! registered twice, an unknown one removed, another eventfd, an address outside the PCI
//! window or a route for a GSI the function was not given; the registered ioeventfds are
//! exactly one per queue, at each queue's notify address in BAR0, while the function
//! decodes memory and BAR0 lies inside the window, and none otherwise (fewer after a
//! refusal); the MSI-X table has three entries; the vendor and device IDs read 0x1af4 and
//! 0x1042 (directly and through the ports), the header's read-only fields, BAR0's type bits
//! and the capability chain never change; a port read returns CONFIG_ADDRESS as written
//! (reserved bits clear), all-ones where no function answers, and the IDs at registers 0-3;
//! an MMIO read returns all-ones outside a decoded BAR0 and outside BAR0's structures, zero
//! from the notify area, two queues (num_queues in the common and in the device
//! configuration), generation 0, and ISR and pending bits of existing causes and vectors
//! only; each of the three MSI-X vectors fires only while MSI-X is enabled, the function
//! unmasked and the vector unmasked, and a vector that may fire has its pending bit clear
//! and its GSI routed to its table entry's message; the disk keeps its size, a read-only
//! disk never changes, and with a device thread the disk changes only while that thread
//! serves.
//!
//! And after each wake of the device thread (operation 7, and a request's `ctl` bit 1),
//! as `NotifiedDevice::serve_notified` promises (every ready queue served, whichever way
//! it was notified): if the device serves (FEATURES_OK and DRIVER_OK) and is still not
//! broken, every enabled queue consumed all the driver published, its used index equal to
//! the available index in its ring. The queues' registers are read through the common
//! configuration (queue_select put back), so rings may be anywhere; a wake is judged only
//! while BAR0 is decoded and when nothing the device may write in it (used rings, buffers
//! its descriptor and indirect tables mark device-writable) reaches a ring or table it
//! reads or another queue's used index: then it cannot publish to itself (nor run out of
//! its per-notification budget) and the indexes in memory say what each queue did. A
//! queue whose used index did not move is judged against how far the target knows the
//! device had consumed (0 after a reset, the available index after a judged wake).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use cloister_vmm::boot::layout::{PciSlot, MSI_GSI_START, PCI_MMIO_SIZE, PCI_MMIO_START};
use cloister_vmm::devices::bus::Bus;
use cloister_vmm::devices::pci::config::reg;
use cloister_vmm::devices::pci::msix::{CAP_ID_MSIX, ENTRY_SIZE};
use cloister_vmm::devices::pci::{
    HostBridge, MsiMessage, PciConfigIo, PciFunction, PciHost, PciMmioWindow, PciRoot,
    SharedFunction, CONFIG_IO_LEN, CONFIG_IO_PORT,
};
use cloister_vmm::devices::virtio::block::{
    Block, MemDisk, DISK_ID_LEN, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_ID_BLOCK,
};
use cloister_vmm::devices::virtio::pci::{
    bar, common, PciWiring, VirtioPciFunction, VirtioPciTransport, BAR_SIZE, NOTIFY_OFF_MULTIPLIER,
    VIRTIO_PCI_DEVICE_BASE, VIRTIO_PCI_VENDOR,
};
use cloister_vmm::devices::virtio::queue::{
    VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
};
use cloister_vmm::devices::virtio::{
    status, CountingIrq, IrqTrigger, NotifiedDevice, VIRTIO_F_ACCESS_PLATFORM,
    VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1,
};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest RAM: 256 KiB at 0.
const RAM_SIZE: u64 = 0x4_0000;
const DISK_SECTORS: usize = 16;
/// Request queues of the disk (`Block::with_queues`).
const QUEUES: usize = 2;
/// Queue 0's rings as the seeds program them, where requests are built; each further
/// queue's are [`RING_STRIDE`] higher (see [`rings`]).
const DESC: u64 = 0x1_0000;
const AVAIL: u64 = 0x1_1000;
const USED: u64 = 0x1_2000;
const RING_STRIDE: u64 = 0x3000;
const QSIZE: u16 = 16;
/// Queue 0's request header, status byte and data buffer; each further queue's are
/// [`REQUEST_STRIDE`] higher, so requests pending on two queues do not share buffers.
const HEADER: u64 = 0x2_0000;
const STATUS_BYTE: u64 = 0x2_0010;
const DATA: u64 = 0x2_1000;
const REQUEST_STRIDE: u64 = 0x1000;
/// A vector for configuration changes (0) and one per queue (queue `q` on `q + 1`).
const VECTORS: usize = QUEUES + 1;
/// Offset of `num_queues` in the device configuration, as a BAR offset.
const CONFIG_NUM_QUEUES: u64 = cloister_vmm::devices::virtio::block::CONFIG_NUM_QUEUES as u64;
/// Where a seed has Linux place BAR0 instead of the slot's address.
const MOVED_BAR: u64 = PCI_MMIO_START + 0x10_0000;
const MAX_OPS: usize = 512;
const PORT_WIDTHS: [usize; 8] = [1, 2, 4, 1, 2, 4, 3, 8];
const MMIO_WIDTHS: [usize; 16] = [1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 4, 8, 3, 5, 6, 7];
/// The structures in BAR0 (offset, length); an access not wholly inside one hits nothing.
const STRUCTURES: [(u64, u64); 6] = [
    (bar::COMMON, bar::COMMON_LEN),
    (bar::ISR, bar::ISR_LEN),
    (bar::DEVICE, bar::DEVICE_LEN),
    (bar::NOTIFY, bar::NOTIFY_LEN),
    (bar::MSIX_TABLE, (VECTORS * ENTRY_SIZE) as u64),
    (bar::MSIX_PBA, 8),
];
/// Capability IDs and virtio_pci_cap cfg_type values.
const CAP_ID_VENDOR: u8 = 0x09;
const CFG_NOTIFY: u8 = 2;
const CFG_PCI: u8 = 5;
/// The seeds address common configuration fields by their BAR0 offsets.
const _: () = assert!(bar::COMMON == 0);
/// MSI-X message control: enable, function mask.
const MSIX_ENABLE: u32 = 1 << 15;
const MSIX_MASKALL: u32 = 1 << 14;

type Transport = VirtioPciTransport<Block<MemDisk>, GuestMemoryMmap>;
type Function = VirtioPciFunction<Block<MemDisk>, GuestMemoryMmap>;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The hypervisor as the function sees it, checking every request.
struct MockHost {
    window: Range<u64>,
    gsis: Vec<u32>,
    notify_fd: RawFd,
    ioevents: Mutex<BTreeSet<u64>>,
    routes: Mutex<BTreeMap<u32, MsiMessage>>,
    /// Registrations still to refuse.
    refuse: AtomicU32,
    /// Whether a registration was ever refused.
    refused: AtomicBool,
}

impl PciHost for MockHost {
    fn set_msi_route(&self, gsi: u32, message: MsiMessage) -> std::io::Result<()> {
        assert!(
            self.gsis.contains(&gsi),
            "a route for GSI {gsi}, not the function's"
        );
        lock(&self.routes).insert(gsi, message);
        Ok(())
    }

    fn register_ioevent(&self, event: &EventFd, addr: u64) -> std::io::Result<()> {
        assert_eq!(
            event.as_raw_fd(),
            self.notify_fd,
            "an ioeventfd on another eventfd"
        );
        assert!(
            addr >= self.window.start && addr < self.window.end,
            "ioeventfd at {addr:#x}, outside the PCI window"
        );
        let mut ioevents = lock(&self.ioevents);
        assert!(
            !ioevents.contains(&addr),
            "ioeventfd at {addr:#x} registered twice"
        );
        if self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.refused.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("refused by the fuzz input"));
        }
        ioevents.insert(addr);
        Ok(())
    }

    fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> std::io::Result<()> {
        assert_eq!(
            event.as_raw_fd(),
            self.notify_fd,
            "removing another eventfd"
        );
        assert!(
            lock(&self.ioevents).remove(&addr),
            "removing ioeventfd at {addr:#x}, never registered"
        );
        Ok(())
    }
}

/// What the checks need to know of the capability list, read once at the start.
struct Capabilities {
    /// (offset, mask, value) of every read-only dword of the chain.
    read_only: Vec<(usize, u32, u32)>,
    msix: usize,
}

struct Machine {
    threaded: bool,
    readonly: bool,
    slot: PciSlot,
    mem: GuestMemoryMmap,
    pio: Bus,
    mmio: Bus,
    function: Arc<Mutex<Function>>,
    transport: Arc<Mutex<Transport>>,
    host: Arc<MockHost>,
    notify: Arc<EventFd>,
    irqs: Vec<Arc<CountingIrq>>,
    caps: Capabilities,
    /// Header dwords that never change (offset, mask of the read-only bits, value).
    header: Vec<(usize, u32, u32)>,
    /// CONFIG_ADDRESS as the guest last wrote it.
    config_address: u32,
    /// The disk when the device thread last served.
    disk: Vec<u8>,
    flushes: u64,
    original_disk: Vec<u8>,
    /// The request builder's place in each queue.
    avail_idx: [u16; QUEUES],
    next_desc: [u16; QUEUES],
    /// What the device consumed of each queue, if the target knows: when `Some(n)`, the
    /// queue, if it is ready, has taken available entries up to index `n` and published
    /// as many used ones (its next available index equals its next used index). A reset
    /// and a queue seen not ready make it `Some(0)` (enabling starts both indexes at 0); a
    /// wake the target cannot follow makes it `None`.
    consumed: [Option<u16>; QUEUES],
}

/// A queue as the common configuration shows it, read by the wake oracle.
#[derive(Clone, Copy, Debug)]
struct QueueView {
    ready: bool,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueView {
    /// The descriptor table.
    fn desc_ring(&self) -> Range<u64> {
        in_ram(self.desc, 16 * u64::from(self.size))
    }

    /// The available ring, `used_event` included.
    fn avail_ring(&self) -> Range<u64> {
        in_ram(self.avail, 6 + 2 * u64::from(self.size))
    }

    /// The used ring, `avail_event` included: everything the device writes for the queue
    /// besides the chains' buffers.
    fn used_ring(&self) -> Range<u64> {
        in_ram(self.used, 6 + 8 * u64::from(self.size))
    }

    /// The used ring's index.
    fn used_idx(&self) -> Range<u64> {
        in_ram(self.used.saturating_add(2), 2)
    }
}

/// The part of `[start, start + len)` that lies in RAM (writes elsewhere do not happen).
fn in_ram(start: u64, len: u64) -> Range<u64> {
    let s = start.min(RAM_SIZE);
    s..start.saturating_add(len).clamp(s, RAM_SIZE)
}

fn overlap(a: &Range<u64>, b: &Range<u64>) -> bool {
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// Most descriptors of indirect tables the oracle reads in one wake; a wake with more is
/// not judged.
const INDIRECT_SCAN: usize = 1 << 14;

/// What the oracle saw before a wake served.
enum Wake {
    /// The device serves nothing (no FEATURES_OK and DRIVER_OK, or broken).
    Idle,
    /// It serves, but the target cannot read the queues (BAR0 not decoded).
    Unknown,
    /// Each queue, and whether the wake is judged (see [`Machine::isolated`]), with the
    /// available and used indexes in memory before it.
    Seen {
        queues: [QueueView; QUEUES],
        judged: bool,
        avail: [u16; QUEUES],
        used: [u16; QUEUES],
    },
}

/// Queue `q`'s rings (descriptor table, available ring, used ring) as the seeds program
/// them.
fn rings(q: usize) -> (u64, u64, u64) {
    let shift = RING_STRIDE * q as u64;
    (DESC + shift, AVAIL + shift, USED + shift)
}

fn machine(inline: bool, readonly: bool) -> Option<Machine> {
    let slot = PciSlot::nth(0, BAR_SIZE)?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM_SIZE as usize)]).ok()?;
    let disk: Vec<u8> = (0..DISK_SECTORS * 512).map(|i| (i % 251) as u8).collect();
    let block = Block::with_backend(
        MemDisk {
            bytes: disk.clone(),
            flushes: 0,
        },
        disk.len() as u64,
        readonly,
        *b"fuzz-virtio-pci-disk",
    )
    .with_queues(QUEUES as u16);
    // Non-blocking (the builder's blocks): the simulated device thread only polls it.
    let notify = Arc::new(EventFd::new(EFD_NONBLOCK).ok()?);
    let gsis: Vec<u32> = (0..VECTORS as u32).map(|i| MSI_GSI_START + i).collect();
    let window = PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE;
    let host = Arc::new(MockHost {
        window: window.clone(),
        gsis: gsis.clone(),
        notify_fd: notify.as_raw_fd(),
        ioevents: Mutex::default(),
        routes: Mutex::default(),
        refuse: AtomicU32::new(0),
        refused: AtomicBool::new(false),
    });
    let irqs: Vec<Arc<CountingIrq>> = (0..VECTORS).map(|_| Arc::default()).collect();
    let function = Arc::new(Mutex::new(VirtioPciFunction::new(
        block,
        mem.clone(),
        PciWiring {
            bar0: slot.bar0,
            window,
            vector_irqs: irqs
                .iter()
                .map(|i| i.clone() as Arc<dyn IrqTrigger>)
                .collect(),
            vector_gsis: gsis,
            host: host.clone(),
            notify: (!inline).then(|| notify.clone()),
        },
    )));
    let transport = lock(&function).transport();
    let mut root = PciRoot::new();
    root.add(usize::from(slot.device), function.clone() as SharedFunction)
        .ok()?;
    let root = Arc::new(root);
    let mut pio = Bus::new();
    pio.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        CONFIG_IO_PORT,
        CONFIG_IO_LEN,
    )
    .ok()?;
    let mut mmio = Bus::new();
    mmio.insert(
        Arc::new(Mutex::new(PciMmioWindow::new(PCI_MMIO_START, root))),
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
    )
    .ok()?;
    let caps = capabilities(&mut lock(&function));
    let mut m = Machine {
        threaded: !inline,
        readonly,
        slot,
        mem,
        pio,
        mmio,
        function,
        transport,
        host,
        notify,
        irqs,
        caps,
        header: Vec::new(),
        config_address: 0,
        disk: disk.clone(),
        flushes: 0,
        original_disk: disk,
        avail_idx: [0; QUEUES],
        next_desc: [0; QUEUES],
        consumed: [Some(0); QUEUES],
    };
    // Identity, status, class and revision, header type, no other BARs or ROM,
    // subsystem, capability pointer, interrupt pin (beside the command register, cache
    // line size, latency timer and interrupt line, which are the driver's).
    let header = [
        (0x00, u32::MAX),
        (0x04, 0xffff_0000),
        (0x08, u32::MAX),
        (0x0c, 0xffff_0000),
        (0x18, u32::MAX),
        (0x1c, u32::MAX),
        (0x20, u32::MAX),
        (0x24, u32::MAX),
        (0x28, u32::MAX),
        (0x2c, u32::MAX),
        (0x30, u32::MAX),
        (0x34, u32::MAX),
        (0x3c, 0xffff_ff00),
    ];
    m.header = header
        .iter()
        .map(|&(o, mask)| (o, mask, m.config(o, 4) & mask))
        .collect();
    Some(m)
}

/// Walks the capability list as Linux does and records its read-only dwords. Reads only
/// the dwords that have no side effect (never the PCI configuration access window's data).
fn capabilities(f: &mut Function) -> Capabilities {
    let mut read = |offset: usize, len: usize| {
        let mut b = [0u8; 4];
        f.config_read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    };
    let mut read_only = Vec::new();
    let mut msix = 0;
    let mut at = read(reg::CAPABILITIES, 1) as usize;
    let mut seen = 0;
    while at != 0 {
        seen += 1;
        assert!(
            seen < 48 && at >= 0x40 && at.is_multiple_of(4),
            "capability chain at {at:#x}"
        );
        let head = read(at, 4);
        let (id, next, cfg_type) = (head as u8, (head >> 8) as u8 as usize, (head >> 24) as u8);
        match id {
            CAP_ID_MSIX => {
                assert_eq!(
                    (head >> 16) as usize & 0x7ff,
                    VECTORS - 1,
                    "MSI-X table size: a vector per queue and one for configuration"
                );
                // Control bits 14 and 15 are the driver's.
                read_only.push((at, 0x3fff_ffff, head & 0x3fff_ffff));
                for o in [at + 4, at + 8] {
                    read_only.push((o, u32::MAX, read(o, 4)));
                }
                msix = at;
            }
            CAP_ID_VENDOR if cfg_type == CFG_PCI => {
                read_only.push((at, u32::MAX, head));
            }
            CAP_ID_VENDOR => {
                let len = if cfg_type == CFG_NOTIFY { 20 } else { 16 };
                for o in (at..at + len).step_by(4) {
                    read_only.push((o, u32::MAX, read(o, 4)));
                }
            }
            _ => read_only.push((at, 0xffff, head & 0xffff)),
        }
        at = next;
    }
    assert_ne!(msix, 0, "an MSI-X capability");
    Capabilities { read_only, msix }
}

/// The ID dword (vendor, device) of device `device` on bus 0, if one is there.
fn expected_id(device: u32, slot: u8) -> Option<u32> {
    let bridge = HostBridge::IDENTITY;
    if device == 0 {
        Some(u32::from(bridge.vendor) | u32::from(bridge.device) << 16)
    } else if device == u32::from(slot) {
        let device_id = VIRTIO_PCI_DEVICE_BASE + VIRTIO_ID_BLOCK as u16;
        Some(u32::from(VIRTIO_PCI_VENDOR) | u32::from(device_id) << 16)
    } else {
        None
    }
}

/// A read, as a failed check names it (formatted only then).
struct Access {
    width: usize,
    place: &'static str,
    addr: u64,
    state: &'static str,
    value: Option<u64>,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-byte read at {}{:#x} ({} {:x?})",
            self.width, self.place, self.addr, self.state, self.value
        )
    }
}

fn le(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(b)
}

impl Machine {
    /// Reads the function's configuration space directly (offsets without side effects).
    fn config(&self, offset: usize, len: usize) -> u32 {
        let mut b = [0u8; 4];
        lock(&self.function).config_read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    /// Where BAR0 is now, decoded or not.
    fn bar0(&self) -> u64 {
        u64::from(self.config(reg::BAR0 + 4, 4)) << 32 | u64::from(self.config(reg::BAR0, 4) & !0xf)
    }

    /// BAR0 while the function decodes memory.
    fn decoded(&self) -> Option<u64> {
        (self.config(reg::COMMAND, 2) & 2 != 0).then(|| self.bar0())
    }

    fn irq_counts(&self) -> Vec<usize> {
        self.irqs
            .iter()
            .map(|i| i.0.load(Ordering::SeqCst))
            .collect()
    }

    fn port_write(&mut self, port: u64, data: &[u8]) {
        self.pio.write(port, data);
        if port == CONFIG_IO_PORT && data.len() == 4 {
            self.config_address = le(data) as u32 & 0x80ff_fffc;
        }
    }

    fn port_read(&mut self, port: u64, width: usize) {
        let mut buf = vec![0u8; width];
        let claimed = self.pio.read(port, &mut buf);
        let inside =
            port >= CONFIG_IO_PORT && port + width as u64 <= CONFIG_IO_PORT + CONFIG_IO_LEN;
        assert_eq!(claimed, inside, "port {port:#x} width {width}");
        let all_ones = buf.iter().all(|&b| b == 0xff);
        let what = Access {
            width,
            place: "port ",
            addr: port,
            state: "CONFIG_ADDRESS",
            value: Some(u64::from(self.config_address)),
        };
        if !inside {
            assert!(all_ones, "{what}: unclaimed, yet {buf:02x?}");
            return;
        }
        let offset = port - CONFIG_IO_PORT;
        if offset < 4 {
            if offset == 0 && width == 4 {
                assert_eq!(le(&buf) as u32, self.config_address, "{what}");
            } else {
                assert!(all_ones, "{what}: not CONFIG_ADDRESS, yet {buf:02x?}");
            }
            return;
        }
        let p = (offset - 4) as usize;
        let a = self.config_address;
        let aligned = p + width <= 4 && matches!(width, 1 | 2 | 4) && p.is_multiple_of(width);
        let device = (a >> 11) & 0x1f;
        let cycle = a >> 31 == 1 && (a >> 8) & 0x7 == 0 && (a >> 16) & 0xff == 0;
        let id = expected_id(device, self.slot.device).filter(|_| cycle);
        match id {
            Some(id) if aligned => {
                let register = (a & 0xfc) as usize + p;
                if register < 4 {
                    let want = &id.to_le_bytes()[register..register + width];
                    assert_eq!(&buf[..], want, "{what}: the IDs");
                }
            }
            _ => assert!(all_ones, "{what}: no function answers, yet {buf:02x?}"),
        }
    }

    fn port_access(&mut self, port: u64, width: usize, value: u32, write: bool) {
        if write {
            let bytes: Vec<u8> = value
                .to_le_bytes()
                .iter()
                .copied()
                .cycle()
                .take(width)
                .collect();
            self.port_write(port, &bytes);
        } else {
            self.port_read(port, width);
        }
    }

    /// A guest MMIO write: to the eventfd if an ioeventfd is registered there (KVM's
    /// wildcard-length match), else to the bus.
    fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        if lock(&self.host.ioevents).contains(&addr) {
            let _ = self.notify.write(1);
        } else {
            self.mmio.write(addr, data);
        }
    }

    fn mmio_read(&mut self, addr: u64, width: usize) {
        let decoded = self.decoded();
        let mut buf = vec![0u8; width];
        let claimed = self.mmio.read(addr, &mut buf);
        let window = PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE;
        let inside = addr >= window.start
            && addr
                .checked_add(width as u64)
                .is_some_and(|e| e <= window.end);
        assert_eq!(claimed, inside, "MMIO {addr:#x} width {width}");
        let value = le(&buf);
        let all_ones = buf.iter().all(|&b| b == 0xff);
        let what = Access {
            width,
            place: "",
            addr,
            state: "BAR0 decoded at",
            value: decoded,
        };
        let offset = match decoded {
            Some(base) if inside && addr >= base && addr - base + width as u64 <= BAR_SIZE => {
                addr - base
            }
            _ => {
                assert!(all_ones, "{what}: outside BAR0, yet {buf:02x?}");
                return;
            }
        };
        let end = offset + width as u64;
        let Some(&(start, _)) = STRUCTURES
            .iter()
            .find(|(s, l)| offset >= *s && end <= s + l)
        else {
            assert!(all_ones, "{what}: in no structure, yet {buf:02x?}");
            return;
        };
        match (start, offset - start, width) {
            (bar::NOTIFY, ..) => assert_eq!(value, 0, "{what}: the notify area"),
            (bar::ISR, 0, _) => assert_eq!(value & !3, 0, "{what}: ISR bits"),
            (bar::ISR, ..) => assert_eq!(value, 0, "{what}: beside ISR"),
            (bar::COMMON, common::NUM_QUEUES, 2) => {
                assert_eq!(value, QUEUES as u64, "{what}: num_queues")
            }
            (bar::DEVICE, CONFIG_NUM_QUEUES, 2) => {
                assert_eq!(value, QUEUES as u64, "{what}: virtio_blk_config.num_queues")
            }
            (bar::COMMON, common::CONFIG_GENERATION, 1) => {
                assert_eq!(value, 0, "{what}: config_generation")
            }
            (bar::MSIX_TABLE | bar::MSIX_PBA, o, w)
                if !(matches!(w, 4 | 8) && o.is_multiple_of(w as u64)) =>
            {
                assert!(
                    all_ones,
                    "{what}: not an aligned dword or qword, yet {buf:02x?}"
                );
            }
            (bar::MSIX_PBA, _, _) => {
                assert_eq!(
                    value & !((1 << VECTORS) - 1),
                    0,
                    "{what}: pending bits of vectors it lacks"
                );
            }
            _ => {}
        }
    }

    fn mmio_access(&mut self, addr: u64, width: usize, value: u64, write: bool) {
        if write {
            self.mmio_write(addr, &value.to_le_bytes()[..width]);
        } else {
            self.mmio_read(addr, width);
        }
    }

    /// The device thread: wakes if its eventfd was signalled, then serves; the wake oracle
    /// judges what it left.
    fn serve(&mut self) {
        if self.threaded && self.notify.read().is_ok() {
            let wake = self.before_wake();
            lock(&self.transport).serve_notified();
            self.after_wake(wake);
        }
    }

    /// A 16-bit word of guest memory (0 outside RAM).
    fn word(&self, addr: u64) -> u16 {
        self.mem.read_obj(GuestAddress(addr)).unwrap_or(0)
    }

    /// Each queue's registers, read through the common configuration while BAR0 is
    /// decoded (queue_select put back as it was).
    fn queue_views(&self) -> Option<[QueueView; QUEUES]> {
        let base = self.decoded()?.wrapping_add(bar::COMMON);
        let mut f = lock(&self.function);
        let mut ok = true;
        let mut read = |f: &mut Function, offset: u64, len: usize| {
            let mut b = [0u8; 8];
            ok &= f.mmio_read(base.wrapping_add(offset), &mut b[..len]);
            u64::from_le_bytes(b)
        };
        let select = |f: &mut Function, q: u16| {
            f.mmio_write(base.wrapping_add(common::QUEUE_SELECT), &q.to_le_bytes())
        };
        let selected = read(&mut f, common::QUEUE_SELECT, 2) as u16;
        let mut views = Vec::with_capacity(QUEUES);
        let mut reached = true;
        for q in 0..QUEUES as u16 {
            reached &= select(&mut f, q);
            views.push(QueueView {
                ready: read(&mut f, common::QUEUE_ENABLE, 2) == 1,
                size: read(&mut f, common::QUEUE_SIZE, 2) as u16,
                desc: read(&mut f, common::QUEUE_DESC, 8),
                avail: read(&mut f, common::QUEUE_DRIVER, 8),
                used: read(&mut f, common::QUEUE_DEVICE, 8),
            });
        }
        reached &= select(&mut f, selected);
        let views: [QueueView; QUEUES] = views.try_into().ok()?;
        (ok && reached).then_some(views)
    }

    /// The descriptors (address, length, flags) of the `count` entries of a table at `at`.
    fn descriptors(&self, at: u64, count: u64) -> Option<Vec<(u64, u64, u16)>> {
        let mut table = vec![0u8; usize::try_from(count).ok()?.checked_mul(16)?];
        self.mem.read_slice(&mut table, GuestAddress(at)).ok()?;
        Some(
            table
                .chunks_exact(16)
                .map(|d| (le(&d[..8]), le(&d[8..12]), le(&d[12..14]) as u16))
                .collect(),
        )
    }

    /// Whether a wake over `queues` can be judged exactly: what the device may write in it
    /// (each ready queue's used ring, and every buffer a chain can name device-writable,
    /// through the descriptor tables as they are and the indirect tables they point at)
    /// touches no ring or table it reads, the used rings lie apart, and no queue's
    /// writable buffers reach another queue's used index. Then nothing the device writes
    /// publishes chains (so it never reaches its NOTIFY_BUDGET_QUEUES budget), each queue
    /// is served against its available index as it was before the wake, and a queue's
    /// used index changes only when that queue publishes used entries.
    fn isolated(&self, queues: &[QueueView; QUEUES]) -> bool {
        let mut read: Vec<Range<u64>> = Vec::new();
        let mut written: Vec<(usize, Range<u64>)> = Vec::new();
        let mut scan = INDIRECT_SCAN;
        let ready = || queues.iter().enumerate().filter(|(_, v)| v.ready);
        for (q, v) in ready() {
            read.extend([v.desc_ring(), v.avail_ring()]);
            let Some(direct) = self.descriptors(v.desc, v.size.into()) else {
                return false;
            };
            for (addr, len, flags) in direct {
                if flags & VIRTQ_DESC_F_WRITE != 0 {
                    written.push((q, in_ram(addr, len)));
                }
                if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                    let table = in_ram(addr, len);
                    let count = (table.end - table.start) / 16;
                    let Some(left) = scan.checked_sub(count as usize) else {
                        return false;
                    };
                    scan = left;
                    let Some(inner) = self.descriptors(table.start, count) else {
                        return false;
                    };
                    read.push(table);
                    written.extend(
                        inner
                            .into_iter()
                            .filter(|d| d.2 & VIRTQ_DESC_F_WRITE != 0)
                            .map(|(addr, len, _)| (q, in_ram(addr, len))),
                    );
                }
            }
        }
        read.retain(|r| !r.is_empty());
        read.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(read.len());
        for r in read {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        // `merged` is sorted and disjoint: the first range ending after `w.start` is the
        // only one that can overlap `w` without starting after it ends.
        let reads = |w: &Range<u64>| {
            let i = merged.partition_point(|r| r.end <= w.start);
            merged.get(i).is_some_and(|r| overlap(r, w))
        };
        for (q, v) in ready() {
            if reads(&v.used_ring()) {
                return false;
            }
            if ready().any(|(p, w)| p > q && overlap(&v.used_ring(), &w.used_ring())) {
                return false;
            }
        }
        written
            .iter()
            .all(|(q, w)| !reads(w) && ready().all(|(p, v)| p == *q || !overlap(w, &v.used_idx())))
    }

    /// Before a wake: what the device will serve, and the indexes in memory.
    fn before_wake(&self) -> Wake {
        let status = lock(&self.transport).device_status();
        let ok = status::FEATURES_OK | status::DRIVER_OK;
        if status & ok != ok || status & status::DEVICE_NEEDS_RESET != 0 {
            return Wake::Idle;
        }
        let Some(queues) = self.queue_views() else {
            return Wake::Unknown;
        };
        Wake::Seen {
            judged: self.isolated(&queues),
            avail: queues.map(|v| self.word(v.avail.wrapping_add(2))),
            used: queues.map(|v| self.word(v.used.wrapping_add(2))),
            queues,
        }
    }

    /// The wake oracle: after the device thread served, every ready queue of a device
    /// that serves (FEATURES_OK and DRIVER_OK, not broken) has consumed all the driver
    /// published, its used index equal to the available index the driver wrote. Judged
    /// only where [`Self::isolated`] holds and the device is still not broken; a queue
    /// whose used index did not move and differs from the available index is judged only
    /// when the target knows how far the device had consumed ([`Machine::consumed`]).
    fn after_wake(&mut self, wake: Wake) {
        let Wake::Seen {
            queues,
            judged,
            avail,
            used,
        } = wake
        else {
            if matches!(wake, Wake::Unknown) {
                self.consumed = [None; QUEUES];
            }
            return;
        };
        let broken = lock(&self.transport).is_broken();
        for (q, v) in queues.iter().enumerate() {
            if !v.ready {
                self.consumed[q] = Some(0);
                continue;
            }
            if broken || !judged {
                self.consumed[q] = None;
                continue;
            }
            let (a0, u0) = (avail[q], used[q]);
            let a1 = self.word(v.avail.wrapping_add(2));
            let u1 = self.word(v.used.wrapping_add(2));
            assert_eq!(
                a1, a0,
                "queue {q} {v:x?}: the device changed an available index it only reads"
            );
            if u1 != u0 {
                assert_eq!(
                    u1, a1,
                    "queue {q} {v:x?}: the wake published used entries up to {u1:#x}, \
                     the driver had made {a1:#x} available"
                );
            } else if u1 != a1 {
                if let Some(n0) = self.consumed[q] {
                    assert_eq!(
                        n0, a1,
                        "queue {q} {v:x?}: the wake left it unserved: consumed up to {n0:#x} \
                         (used index {u1:#x} in memory), the driver had made {a1:#x} available"
                    );
                }
            }
            self.consumed[q] = Some(a1);
        }
    }

    /// A reset (the device's acked features back to 0, which FEATURES_OK never accepts)
    /// starts every queue over: enabling one starts its indexes at 0.
    fn note_reset(&mut self) {
        if lock(&self.transport).device().acked_features() == 0 {
            self.consumed = [Some(0); QUEUES];
        }
    }

    /// A request built on queue `ctl` bit 2's rings, as the input format says.
    fn request(&mut self, kind: u8, sector: u8, sectors: u8, ctl: u8) {
        let q = usize::from(ctl >> 2) % QUEUES;
        let (desc, avail, _) = rings(q);
        let buffers = REQUEST_STRIDE * q as u64;
        let (header_at, status_at, data_at) =
            (HEADER + buffers, STATUS_BYTE + buffers, DATA + buffers);
        let request_type = match kind % 5 {
            0 => VIRTIO_BLK_T_IN,
            1 => VIRTIO_BLK_T_OUT,
            2 => VIRTIO_BLK_T_FLUSH,
            3 => VIRTIO_BLK_T_GET_ID,
            _ => u32::from(kind),
        };
        let data_len = match request_type {
            VIRTIO_BLK_T_GET_ID if sectors == 0 => DISK_ID_LEN as u32,
            _ => 512 * u32::from(sectors % 5),
        };
        let device_writes = matches!(request_type, VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID);
        let mut header = [0u8; 16];
        header[..4].copy_from_slice(&request_type.to_le_bytes());
        header[8..].copy_from_slice(&u64::from(sector % 20).to_le_bytes());
        let _ = self.mem.write_slice(&header, GuestAddress(header_at));
        let _ = self.mem.write_obj(0xffu8, GuestAddress(status_at));
        let mut chain = vec![(header_at, 16, 0)];
        if data_len > 0 {
            chain.push((
                data_at,
                data_len,
                if device_writes { VIRTQ_DESC_F_WRITE } else { 0 },
            ));
        }
        chain.push((status_at, 1, VIRTQ_DESC_F_WRITE));
        let head = self.next_desc[q] % QSIZE;
        let n = chain.len();
        for (i, (addr, len, flags)) in chain.into_iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let flags = if i + 1 < n {
                flags | VIRTQ_DESC_F_NEXT
            } else {
                flags
            };
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..].copy_from_slice(&((index + 1) % QSIZE).to_le_bytes());
            let _ = self
                .mem
                .write_slice(&raw, GuestAddress(desc + 16 * u64::from(index)));
        }
        self.next_desc[q] = (head + n as u16) % QSIZE;
        let slot = u64::from(self.avail_idx[q] % QSIZE);
        let _ = self.mem.write_obj(head, GuestAddress(avail + 4 + 2 * slot));
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        let _ = self
            .mem
            .write_obj(self.avail_idx[q], GuestAddress(avail + 2));
        if ctl & 1 != 0 {
            // What Linux's vp_notify writes: the queue index, 16 bits, at the queue's
            // address (queue_notify_off is the index).
            let addr = self.bar0() + bar::NOTIFY + q as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
            self.mmio_write(addr, &(q as u16).to_le_bytes());
        }
        if ctl & 2 != 0 {
            self.serve();
        }
    }

    /// The checks of configuration space, which only configuration writes can change.
    fn check_config(&self) {
        assert_eq!(
            self.config(0, 4),
            0x1042_1af4,
            "vendor and device ID of a modern virtio-blk"
        );
        for &(offset, mask, value) in &self.header {
            assert_eq!(
                self.config(offset, 4) & mask,
                value,
                "header dword {offset:#x}"
            );
        }
        assert_eq!(
            self.config(reg::BAR0, 4) & 0x7fff,
            0b100,
            "BAR0: 64-bit memory, 32 KiB"
        );
        for &(offset, mask, value) in &self.caps.read_only {
            assert_eq!(
                self.config(offset, 4) & mask,
                value,
                "capability dword {offset:#x}"
            );
        }
    }

    /// The checks that hold after every operation; `irqs_before` are the vectors' counts
    /// before it, `served` whether the device thread ran.
    fn check(&mut self, irqs_before: &[usize], served: bool) {
        // ioeventfds: each queue's notify address while BAR0 is decoded inside the window.
        let decoded = self.decoded();
        let window = PCI_MMIO_START..PCI_MMIO_START + PCI_MMIO_SIZE;
        let expected: BTreeSet<u64> = match decoded {
            Some(base)
                if self.threaded
                    && base >= window.start
                    && base.checked_add(BAR_SIZE).is_some_and(|e| e <= window.end) =>
            {
                (0..QUEUES as u64)
                    .map(|q| base + bar::NOTIFY + q * u64::from(NOTIFY_OFF_MULTIPLIER))
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        let registered = lock(&self.host.ioevents).clone();
        if self.host.refused.load(Ordering::SeqCst) {
            assert!(
                registered.is_subset(&expected),
                "ioeventfds {registered:x?}, BAR0 {decoded:x?}"
            );
        } else {
            assert_eq!(
                registered, expected,
                "ioeventfds, BAR0 decoded at {decoded:x?}"
            );
        }

        // MSI-X.
        let control = self.config(self.caps.msix, 4) >> 16;
        let enabled = control & (MSIX_ENABLE | MSIX_MASKALL) == MSIX_ENABLE;
        let fired: Vec<bool> = self
            .irq_counts()
            .iter()
            .zip(irqs_before)
            .map(|(a, b)| a > b)
            .collect();
        for (vector, &fired) in fired.iter().enumerate() {
            assert!(
                !fired || enabled,
                "vector {vector} fired with MSI-X control {control:#x}"
            );
            let Some(base) = decoded else { continue };
            let entry = base + bar::MSIX_TABLE + (vector * ENTRY_SIZE) as u64;
            let dword = |m: &Machine, addr: u64| {
                let mut b = [0u8; 4];
                assert!(
                    lock(&m.function).mmio_read(addr, &mut b),
                    "BAR0 holds the table"
                );
                u32::from_le_bytes(b)
            };
            let address = u64::from(dword(self, entry + 4)) << 32 | u64::from(dword(self, entry));
            let data = dword(self, entry + 8);
            let masked = dword(self, entry + 12) & 1 != 0;
            assert!(!fired || !masked, "masked vector {vector} fired");
            if enabled && !masked {
                let pending = dword(self, base + bar::MSIX_PBA) >> vector & 1 != 0;
                assert!(
                    !pending,
                    "vector {vector} may fire, yet its pending bit is set"
                );
                let gsi = MSI_GSI_START + vector as u32;
                let route = lock(&self.host.routes).get(&gsi).copied();
                assert_eq!(
                    route,
                    Some(MsiMessage { address, data }),
                    "vector {vector}'s route"
                );
            }
        }

        // The disk.
        let t = lock(&self.transport);
        let disk = t.device().backend();
        assert_eq!(
            disk.bytes.len(),
            self.original_disk.len(),
            "the disk changed size"
        );
        if self.readonly {
            assert!(
                disk.bytes == self.original_disk,
                "a read-only disk was written"
            );
        }
        if self.threaded {
            if served {
                self.disk.clone_from(&disk.bytes);
                self.flushes = disk.flushes;
            } else {
                assert!(
                    disk.bytes == self.disk,
                    "the disk changed outside the device thread"
                );
                assert_eq!(
                    disk.flushes, self.flushes,
                    "a flush outside the device thread"
                );
            }
        }
    }
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    run(data);
});

/// Plays an input, checking after every operation; returns the machine at the end.
fn run(data: &[u8]) -> Option<Machine> {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let mut m = machine(flags & 1 != 0, flags & 2 != 0)?;
    m.check_config();
    m.check(&m.irq_counts(), false);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let before = m.irq_counts();
        let mut served = false;
        let mut config_written = false;
        match r.u8() % 9 {
            0 => {
                let value = r.u32();
                m.port_write(CONFIG_IO_PORT, &value.to_le_bytes());
            }
            1 => {
                let (ctl, value) = (r.u8(), r.u32());
                let port = CONFIG_IO_PORT - 4 + u64::from(ctl & 0xf);
                let width = PORT_WIDTHS[usize::from(ctl >> 4) & 7];
                config_written = ctl & 0x80 != 0;
                m.port_access(port, width, value, config_written);
            }
            2 => {
                let (device, register, ctl, value) = (r.u8(), r.u8(), r.u8(), r.u32());
                let function = if device & 0x80 != 0 {
                    (device >> 5) & 3
                } else {
                    0
                };
                let enable = if ctl & 0x40 != 0 { 0 } else { 1 << 31 };
                let address = enable
                    | u32::from(device & 0x1f) << 11
                    | u32::from(function) << 8
                    | u32::from(register & 0xfc);
                m.port_write(CONFIG_IO_PORT, &address.to_le_bytes());
                let port = CONFIG_IO_PORT + 4 + u64::from(register & 3);
                config_written = ctl & 0x80 != 0;
                m.port_access(
                    port,
                    PORT_WIDTHS[usize::from(ctl & 7)],
                    value,
                    config_written,
                );
            }
            kind @ (3 | 4) => {
                let (mode, offset, width) = (r.u8(), r.u32(), r.u8());
                let value = if kind == 4 { r.u64() } else { 0 };
                let addr = match mode % 4 {
                    0 => m.bar0().wrapping_add(u64::from(offset & 0x7fff)),
                    1 => m.bar0().wrapping_add(offset as i32 as i64 as u64),
                    2 => m.slot.bar0 + u64::from(offset),
                    _ => u64::from(offset),
                };
                let width = MMIO_WIDTHS[usize::from(width) % MMIO_WIDTHS.len()];
                m.mmio_access(addr, width, value, kind == 4);
            }
            5 => {
                let gpa = u64::from(r.u32() & 0x7_ffff);
                let bytes = r.blob();
                let _ = m
                    .mem
                    .write_slice(&bytes[..bytes.len().min(256)], GuestAddress(gpa));
            }
            6 => {
                let (kind, sector, sectors, ctl) = (r.u8(), r.u8(), r.u8(), r.u8());
                m.request(kind, sector, sectors, ctl);
                served = ctl & 2 != 0;
            }
            7 => {
                m.serve();
                served = true;
            }
            _ => m.host.refuse.store(u32::from(r.u8() % 4), Ordering::SeqCst),
        }
        if config_written {
            m.check_config();
        }
        m.check(&before, served);
        m.note_reset();
    }
    Some(m)
}

/// A request's `ctl` bit for queue 1.
const Q1: u8 = 1 << 2;

/// Writes inputs in the format above.
struct Script {
    w: Writer,
}

impl Script {
    fn new(flags: u8) -> Self {
        let mut w = Writer::new();
        w.u8(flags);
        Script { w }
    }

    fn address(&mut self, value: u32) -> &mut Self {
        self.w.u8(0).u32(value);
        self
    }

    fn port(&mut self, port: u64, width: usize, value: u32, write: bool) -> &mut Self {
        let width = PORT_WIDTHS.iter().position(|&x| x == width).unwrap_or(0) as u8;
        let ctl = (port + 4 - CONFIG_IO_PORT) as u8 | width << 4 | u8::from(write) << 7;
        self.w.u8(1).u8(ctl).u32(value);
        self
    }

    fn cfg(
        &mut self,
        device: u8,
        register: u8,
        width: usize,
        value: u32,
        write: bool,
    ) -> &mut Self {
        let width = PORT_WIDTHS.iter().position(|&x| x == width).unwrap_or(0) as u8;
        self.w
            .u8(2)
            .u8(device)
            .u8(register)
            .u8(width | u8::from(write) << 7)
            .u32(value);
        self
    }

    fn cfg_read(&mut self, device: u8, register: u8, width: usize) -> &mut Self {
        self.cfg(device, register, width, 0, false)
    }

    fn cfg_write(&mut self, device: u8, register: u8, width: usize, value: u32) -> &mut Self {
        self.cfg(device, register, width, value, true)
    }

    /// An access at BAR0 + `offset`, wherever BAR0 is.
    fn bar(&mut self, offset: u64, width: usize, value: u64, write: bool) -> &mut Self {
        let width = MMIO_WIDTHS.iter().position(|&x| x == width).unwrap_or(0) as u8;
        self.w
            .u8(if write { 4 } else { 3 })
            .u8(0)
            .u32(offset as u32)
            .u8(width);
        if write {
            self.w.u64(value);
        }
        self
    }

    fn rd(&mut self, offset: u64, width: usize) -> &mut Self {
        self.bar(offset, width, 0, false)
    }

    fn wr(&mut self, offset: u64, width: usize, value: u64) -> &mut Self {
        self.bar(offset, width, value, true)
    }

    /// An access at an absolute address (mode 3).
    fn at(&mut self, addr: u64, width: usize, value: u64, write: bool) -> &mut Self {
        let width = MMIO_WIDTHS.iter().position(|&x| x == width).unwrap_or(0) as u8;
        self.w
            .u8(if write { 4 } else { 3 })
            .u8(3)
            .u32(addr as u32)
            .u8(width);
        if write {
            self.w.u64(value);
        }
        self
    }

    fn request(&mut self, kind: u8, sector: u8, sectors: u8, ctl: u8) -> &mut Self {
        self.w.u8(6).u8(kind).u8(sector).u8(sectors).u8(ctl);
        self
    }

    fn serve(&mut self) -> &mut Self {
        self.w.u8(7);
        self
    }

    fn refuse(&mut self, count: u8) -> &mut Self {
        self.w.u8(8).u8(count);
        self
    }

    fn finish(&self) -> Vec<u8> {
        self.w.finish()
    }
}

/// The capability list of the function (offset, ID, cfg_type), as the seeds walk it.
fn capability_list() -> Vec<(u8, u8, u8)> {
    let Some(m) = machine(false, false) else {
        return Vec::new();
    };
    let mut caps = Vec::new();
    let mut at = m.config(reg::CAPABILITIES, 1) as usize;
    while at != 0 && caps.len() < 48 {
        let head = m.config(at, 4);
        caps.push((at as u8, head as u8, (head >> 24) as u8));
        at = (head >> 8) as u8 as usize;
    }
    caps
}

/// Linux from boot to DRIVER_OK: arch/x86/pci/direct.c's probe, the bus scan and BAR
/// sizing of drivers/pci/probe.c, then virtio_pci_modern's probe with MSI-X
/// (drivers/pci/msi/msi.c's set-up order). `moved` places BAR0 elsewhere first.
fn linux_boot(s: &mut Script, dev: u8, caps: &[(u8, u8, u8)], moved: Option<u64>) {
    // pci_check_type1: a byte at 0xCFB, CONFIG_ADDRESS read back, pci_sanity_check.
    s.port(CONFIG_IO_PORT + 3, 1, 1, true)
        .port(CONFIG_IO_PORT, 4, 0, false)
        .address(0x8000_0000)
        .port(CONFIG_IO_PORT, 4, 0, false)
        .cfg_read(0, 0x0a, 2)
        .cfg_read(0, 0x00, 2)
        .address(0);
    // The scan: every device's vendor ID, the header of those present.
    for d in 0..32 {
        s.cfg_read(d, 0x00, 4);
    }
    for d in [0, dev] {
        s.cfg_read(d, 0x0e, 1)
            .cfg_read(d, 0x08, 4)
            .cfg_read(d, 0x06, 2)
            .cfg_read(d, 0x2c, 2)
            .cfg_read(d, 0x2e, 2);
    }
    // __pci_read_base with decoding off: each dword saved, all-ones, size, restored.
    s.cfg_read(dev, 0x04, 2).cfg_write(dev, 0x04, 2, 0x0000);
    let bar0 = moved.unwrap_or(PCI_MMIO_START);
    for (register, value) in [(0x10u8, bar0 as u32 | 4), (0x14, (bar0 >> 32) as u32)] {
        s.cfg_read(dev, register, 4)
            .cfg_write(dev, register, 4, u32::MAX)
            .cfg_read(dev, register, 4)
            .cfg_write(dev, register, 4, value);
    }
    for register in [0x18, 0x1c, 0x20, 0x24, 0x30] {
        s.cfg_read(dev, register, 4)
            .cfg_write(dev, register, 4, u32::MAX)
            .cfg_read(dev, register, 4)
            .cfg_write(dev, register, 4, 0);
    }
    s.cfg_write(dev, 0x04, 2, 0x0002)
        .cfg_read(dev, 0x3d, 1)
        .cfg_read(dev, 0x3c, 1);
    // pci_find_capability for MSI-X, then pci_msix_init: enable clear.
    s.cfg_read(dev, 0x06, 2).cfg_read(dev, 0x34, 1);
    for &(at, _, _) in caps {
        s.cfg_read(dev, at, 2);
    }
    let msix = caps.iter().find(|c| c.1 == CAP_ID_MSIX).map_or(0, |c| c.0);
    s.cfg_read(dev, msix + 2, 2);
    // pci_enable_device, pci_set_master.
    s.cfg_read(dev, 0x04, 2)
        .cfg_write(dev, 0x04, 2, 0x0002)
        .cfg_read(dev, 0x04, 2)
        .cfg_write(dev, 0x04, 2, 0x0006);
    // virtio_pci_find_capability for each structure: cfg_type, bar, offset, length.
    for &(at, id, cfg_type) in caps {
        if id != CAP_ID_VENDOR {
            continue;
        }
        s.cfg_read(dev, at + 3, 1).cfg_read(dev, at + 4, 1);
        if cfg_type != CFG_PCI {
            s.cfg_read(dev, at + 8, 4).cfg_read(dev, at + 12, 4);
        }
        if cfg_type == CFG_NOTIFY {
            s.cfg_read(dev, at + 16, 4);
        }
    }
    // vp_reset, ACKNOWLEDGE, DRIVER.
    let st = common::DEVICE_STATUS;
    s.wr(st, 1, 0).rd(st, 1);
    s.rd(st, 1).wr(st, 1, status::ACKNOWLEDGE.into());
    s.rd(st, 1)
        .wr(st, 1, (status::ACKNOWLEDGE | status::DRIVER).into());
    // Features: both words read, Linux's accepted set written.
    s.wr(common::DEVICE_FEATURE_SELECT, 4, 0)
        .rd(common::DEVICE_FEATURE, 4)
        .wr(common::DEVICE_FEATURE_SELECT, 4, 1)
        .rd(common::DEVICE_FEATURE, 4);
    let accepted = VIRTIO_F_VERSION_1
        | VIRTIO_F_ACCESS_PLATFORM
        | VIRTIO_F_RING_INDIRECT_DESC
        | VIRTIO_F_RING_EVENT_IDX
        | VIRTIO_BLK_F_SEG_MAX
        | VIRTIO_BLK_F_FLUSH
        | VIRTIO_BLK_F_MQ;
    s.wr(common::DRIVER_FEATURE_SELECT, 4, 0)
        .wr(common::DRIVER_FEATURE, 4, accepted & 0xffff_ffff)
        .wr(common::DRIVER_FEATURE_SELECT, 4, 1)
        .wr(common::DRIVER_FEATURE, 4, accepted >> 32);
    let features_ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    s.rd(st, 1).wr(st, 1, features_ok.into()).rd(st, 1);
    // virtblk_probe's init_vq: num_queues, as VIRTIO_BLK_F_MQ was accepted.
    s.rd(bar::DEVICE + CONFIG_NUM_QUEUES, 2);
    // msix_capability_init: enabled with all masked, every entry masked, messages
    // written (mask, address, data, read back), the function mask cleared.
    let control = u32::from(VECTORS as u16 - 1);
    s.cfg_read(dev, msix + 2, 2)
        .cfg_write(dev, msix + 2, 2, control | MSIX_ENABLE | MSIX_MASKALL)
        .cfg_read(dev, msix + 4, 4)
        .cfg_read(dev, msix + 8, 4);
    for v in 0..VECTORS as u64 {
        s.wr(bar::MSIX_TABLE + 16 * v + 12, 4, 1);
    }
    for v in 0..VECTORS as u64 {
        let entry = bar::MSIX_TABLE + 16 * v;
        s.wr(entry, 4, 0xfee0_0000 | (v << 12))
            .wr(entry + 4, 4, 0)
            .wr(entry + 8, 4, 0x22 + v)
            .rd(entry, 4);
    }
    s.cfg_write(dev, msix + 2, 2, control | MSIX_ENABLE);
    // The configuration vector: 0, read back, then request_irq unmasks it.
    s.wr(common::MSIX_CONFIG, 2, 0)
        .rd(common::MSIX_CONFIG, 2)
        .wr(bar::MSIX_TABLE + 12, 4, 0)
        .rd(bar::MSIX_TABLE, 4);
    // setup_vq for each queue, queue q on vector q + 1.
    s.rd(common::NUM_QUEUES, 2);
    for q in 0..QUEUES {
        let (select, vector) = (q as u64, q as u64 + 1);
        let (desc, avail, used) = rings(q);
        s.wr(common::QUEUE_SELECT, 2, select)
            .rd(common::QUEUE_SIZE, 2)
            .rd(common::QUEUE_ENABLE, 2)
            .wr(common::QUEUE_SIZE, 2, QSIZE.into())
            .wr(common::QUEUE_SELECT, 2, select);
        for (field, addr) in [
            (common::QUEUE_DESC, desc),
            (common::QUEUE_DRIVER, avail),
            (common::QUEUE_DEVICE, used),
        ] {
            s.wr(field, 4, addr & 0xffff_ffff)
                .wr(field + 4, 4, addr >> 32);
        }
        let entry = bar::MSIX_TABLE + 16 * vector;
        s.wr(common::QUEUE_SELECT, 2, select)
            .rd(common::QUEUE_NOTIFY_OFF, 2)
            .wr(common::QUEUE_SELECT, 2, select)
            .wr(common::QUEUE_MSIX_VECTOR, 2, vector)
            .rd(common::QUEUE_MSIX_VECTOR, 2)
            .wr(entry + 12, 4, 0)
            .rd(entry, 4)
            .wr(common::QUEUE_SELECT, 2, select)
            .wr(common::QUEUE_ENABLE, 2, 1);
    }
    // virtio_device_ready, then virtblk_probe's capacity read inside a generation check.
    s.rd(st, 1)
        .wr(st, 1, (features_ok | status::DRIVER_OK).into());
    s.rd(common::CONFIG_GENERATION, 1)
        .rd(bar::DEVICE, 4)
        .rd(bar::DEVICE + 4, 4)
        .rd(common::CONFIG_GENERATION, 1)
        .rd(bar::DEVICE + 0x14, 4);
}

/// Writes a seed after playing it: a seed that no longer gets the device to DRIVER_OK and
/// a request completed on each of `queues`, each on its own vector, is reported (the
/// target changed under it).
fn add(out: &mut Seeds, name: &str, queues: &[usize], input: &[u8]) {
    let reached = run(input).map(|m| {
        let t = lock(&m.transport);
        let used: Vec<u16> = (0..QUEUES)
            .map(|q| m.mem.read_obj(GuestAddress(rings(q).2 + 2)).unwrap_or(0))
            .collect();
        (t.device_status(), t.is_broken(), used, m.irq_counts())
    });
    if std::env::var_os("VIRTIO_PCI_SEED_DEBUG").is_some() {
        eprintln!("seeds: {name}: {reached:x?}");
    }
    let completed =
        |used: &[u16], irqs: &[usize]| queues.iter().all(|&q| used[q] > 0 && irqs[q + 1] > 0);
    match &reached {
        Some((status, false, used, irqs))
            if status & status::DRIVER_OK != 0 && completed(used, irqs) => {}
        _ => eprintln!(
            "seeds: warning: {name} does not complete a request on queues {queues:?} (status, broken, used indexes, interrupts): {reached:x?}"
        ),
    }
    out.add(name, input);
}

fn seeds(out: &mut Seeds) {
    let caps = capability_list();
    let Some(slot) = PciSlot::nth(0, BAR_SIZE) else {
        return;
    };
    let dev = slot.device;
    // Boot, then read sector 1 on queue 0, notified at the queue's address, served by the
    // device thread; then the same on a vCPU, and a write and a flush read-only; then
    // sector 1 on queue 1 (completed on vector 2) before sector 2 on queue 0, with a
    // device thread and on a vCPU.
    for (name, flags, queue) in [
        ("linux-read", 0u8, 0),
        ("linux-read-inline", 1, 0),
        ("linux-read-only", 2, 0),
        ("linux-read-queue1", 0, 1),
        ("linux-read-queue1-inline", 1, 1),
    ] {
        let on = if queue == 1 { Q1 } else { 0 };
        let mut s = Script::new(flags);
        linux_boot(&mut s, dev, &caps, None);
        s.request(0, 1, 1, 3 | on);
        if flags == 2 {
            s.request(1, 2, 1, 3).request(2, 0, 0, 3);
        }
        if queue == 1 {
            s.request(0, 2, 1, 3);
        }
        s.request(3, 0, 0, 3 | on).rd(bar::MSIX_PBA, 8);
        let queues: &[usize] = if queue == 1 { &[0, 1] } else { &[0] };
        add(out, name, queues, &s.finish());
    }
    // BAR0 placed elsewhere by Linux, then moved by the guest: out of the window (high
    // dword), back, decoding off and on, with notifications of both queues at the old and
    // new places.
    let mut s = Script::new(0);
    linux_boot(&mut s, dev, &caps, Some(MOVED_BAR));
    s.request(0, 3, 2, 3).request(0, 7, 1, 1 | Q1);
    s.at(PCI_MMIO_START + bar::NOTIFY, 2, 0, true)
        .at(PCI_MMIO_START + bar::NOTIFY + 4, 2, 1, true)
        .serve();
    s.cfg_write(dev, 0x14, 4, 1)
        .request(0, 4, 1, 3)
        .request(0, 8, 1, 3 | Q1)
        .cfg_write(dev, 0x14, 4, 0)
        .cfg_write(dev, 0x04, 2, 0)
        .request(1, 5, 1, 3)
        .cfg_write(dev, 0x10, 4, PCI_MMIO_START as u32)
        .cfg_write(dev, 0x04, 2, 6)
        .request(1, 5, 1, 3 | Q1)
        .cfg_write(
            dev,
            0x10,
            4,
            (PCI_MMIO_START + PCI_MMIO_SIZE - BAR_SIZE) as u32,
        )
        .request(4, 0, 0, 3)
        .request(4, 0, 0, 3 | Q1)
        .rd(common::NUM_QUEUES, 2);
    add(out, "linux-bar-moves", &[0, 1], &s.finish());
    // The host refuses queue 0's ioeventfd when decoding is turned back on: queue 0's
    // notification exits to the monitor, queue 1's is an ioeventfd; one wake of the device
    // thread serves both.
    let mut s = Script::new(0);
    linux_boot(&mut s, dev, &caps, None);
    s.cfg_write(dev, 0x04, 2, 0)
        .refuse(1)
        .cfg_write(dev, 0x04, 2, 6)
        .request(0, 1, 1, 1 | Q1)
        .request(0, 2, 1, 1)
        .serve();
    add(out, "linux-ioeventfd-refused", &[0, 1], &s.finish());
    // The VIRTIO_PCI_CAP_PCI_CFG window: a read published on each queue, then num_queues
    // read, both queues notified, the MSI-X table's first dword written and ISR read, all
    // through configuration space; the device thread serves.
    let mut s = Script::new(0);
    linux_boot(&mut s, dev, &caps, None);
    s.request(0, 6, 1, 0).request(0, 7, 1, Q1);
    if let Some(&(cfg, _, _)) = caps.iter().find(|c| c.1 == CAP_ID_VENDOR && c.2 == CFG_PCI) {
        for (offset, len, value, write) in [
            (bar::COMMON + common::NUM_QUEUES, 2, 0, false),
            (bar::NOTIFY, 2, 0, true),
            (bar::NOTIFY + u64::from(NOTIFY_OFF_MULTIPLIER), 2, 1, true),
            (bar::MSIX_TABLE, 4, 0xfee0_1000, true),
            (bar::ISR, 1, 0, false),
        ] {
            s.cfg_write(dev, cfg + 4, 1, 0)
                .cfg_write(dev, cfg + 8, 4, offset as u32)
                .cfg_write(dev, cfg + 12, 4, len);
            s.cfg(dev, cfg + 16, 4, value, write);
            if write {
                s.serve();
            }
        }
    }
    add(out, "linux-pci-cfg-window", &[0, 1], &s.finish());
}
