//! Drives PCI bus 0 and a virtio-blk-pci function the way firmware and Linux do: through
//! the configuration ports, the BAR window and hand-built rings in guest memory (no VM).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::bus::BusDevice;
use crate::devices::pci::{MsiMessage, PciConfigIo, PciHost, PciMmioWindow, PciRoot};
use crate::devices::virtio::block::{
    Block, MemDisk, VIRTIO_BLK_F_MQ, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN,
};
use crate::devices::virtio::pci::{
    bar, common, PciWiring, VirtioPciFunction, VirtioPciTransport, NO_VECTOR,
};
use crate::devices::virtio::queue::{VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::devices::virtio::{status, CountingIrq, IrqTrigger, NotifiedDevice};

const WINDOW: u64 = 0xc000_0000;
const WINDOW_LEN: u64 = 0x1000_0000;
const BAR0: u64 = WINDOW;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const QSIZE: u16 = 16;
const HDR: u64 = 0x1_0000;
const DATA: u64 = 0x1_1000;
const STATUS_BYTE: u64 = 0x1_0100;

#[derive(Default)]
struct MockHost {
    routes: Mutex<Vec<(u32, MsiMessage)>>,
    ioevents: Mutex<BTreeSet<u64>>,
    /// Refuse every route, as KVM_SET_GSI_ROUTING would fail.
    refuse_routes: AtomicBool,
}

impl PciHost for MockHost {
    fn set_msi_route(&self, gsi: u32, message: MsiMessage) -> std::io::Result<()> {
        if self.refuse_routes.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        self.routes.lock().unwrap().push((gsi, message));
        Ok(())
    }
    fn register_ioevent(&self, _event: &EventFd, addr: u64) -> std::io::Result<()> {
        assert!(
            self.ioevents.lock().unwrap().insert(addr),
            "{addr:#x} twice"
        );
        Ok(())
    }
    fn unregister_ioevent(&self, _event: &EventFd, addr: u64) -> std::io::Result<()> {
        assert!(
            self.ioevents.lock().unwrap().remove(&addr),
            "{addr:#x} unknown"
        );
        Ok(())
    }
}

type Transport = VirtioPciTransport<Block<MemDisk>, GuestMemoryMmap>;

struct Machine {
    mem: GuestMemoryMmap,
    config: PciConfigIo,
    window: PciMmioWindow,
    irqs: Vec<Arc<CountingIrq>>,
    host: Arc<MockHost>,
    transport: Arc<Mutex<Transport>>,
    notify: Arc<EventFd>,
    /// The next available index of each queue.
    avail_idx: Vec<u16>,
}

/// Queue `q`'s rings: queue 0 at DESC, AVAIL, USED; each further queue 0x3000 higher.
fn rings(q: u16) -> (u64, u64, u64) {
    let shift = 0x3000 * u64::from(q);
    (DESC + shift, AVAIL + shift, USED + shift)
}

fn machine() -> Machine {
    machine_with(1)
}

/// A machine whose disk has `queues` request queues (and `queues + 1` MSI-X vectors).
fn machine_with(queues: u16) -> Machine {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let bytes: Vec<u8> = (0..8 * 512).map(|i| (i * 7 + i / 512) as u8).collect();
    let block = Block::with_backend(
        MemDisk { bytes, flushes: 0 },
        8 * 512,
        false,
        *b"cloister-test-disk-1",
    )
    .with_queues(queues);
    let vectors = u32::from(queues) + 1;
    let irqs: Vec<Arc<CountingIrq>> = (0..vectors)
        .map(|_| Arc::new(CountingIrq::default()))
        .collect();
    let host = Arc::new(MockHost::default());
    let notify = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let function = VirtioPciFunction::new(
        block,
        mem.clone(),
        PciWiring {
            bar0: BAR0,
            window: WINDOW..WINDOW + WINDOW_LEN,
            vector_irqs: irqs
                .iter()
                .map(|i| i.clone() as Arc<dyn IrqTrigger>)
                .collect(),
            vector_gsis: (24..24 + vectors).collect(),
            host: host.clone(),
            notify: Some(notify.clone()),
        },
    );
    let transport = function.transport();
    let mut root = PciRoot::new();
    root.add(1, Arc::new(Mutex::new(function))).unwrap();
    assert!(root
        .add(
            1,
            Arc::new(Mutex::new(crate::devices::pci::HostBridge::new()))
        )
        .is_err());
    let root = Arc::new(root);
    Machine {
        mem,
        config: PciConfigIo::new(root.clone()),
        window: PciMmioWindow::new(WINDOW, root),
        irqs,
        host,
        transport,
        notify,
        avail_idx: vec![0; usize::from(queues)],
    }
}

impl Machine {
    fn select(&mut self, bus: u32, dev: u32, reg: u32) {
        let address = 0x8000_0000 | bus << 16 | dev << 11 | (reg & 0xfc);
        self.config.write(0, &address.to_le_bytes());
    }

    fn cfg_read(&mut self, dev: u32, reg: u32, len: usize) -> u32 {
        self.select(0, dev, reg);
        let mut b = [0u8; 4];
        self.config.read(4 + u64::from(reg & 3), &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn cfg_write(&mut self, dev: u32, reg: u32, len: usize, value: u32) {
        self.select(0, dev, reg);
        self.config
            .write(4 + u64::from(reg & 3), &value.to_le_bytes()[..len]);
    }

    fn rd(&mut self, addr: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.window.read(addr - WINDOW, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn wr(&mut self, addr: u64, len: usize, value: u64) {
        self.window
            .write(addr - WINDOW, &value.to_le_bytes()[..len]);
    }

    fn common_wr(&mut self, offset: u64, len: usize, value: u64) {
        self.wr(BAR0 + bar::COMMON + offset, len, value);
    }

    fn common_rd(&mut self, offset: u64, len: usize) -> u64 {
        self.rd(BAR0 + bar::COMMON + offset, len)
    }

    /// Capabilities as (offset, id, cfg_type for vendor ones).
    fn capabilities(&mut self) -> Vec<(u32, u8, u8)> {
        assert_ne!(self.cfg_read(1, 0x06, 2) & 0x10, 0, "capability list bit");
        let mut at = self.cfg_read(1, 0x34, 1);
        let mut caps = Vec::new();
        while at != 0 {
            let id = self.cfg_read(1, at, 1) as u8;
            let cfg_type = self.cfg_read(1, at + 3, 1) as u8;
            caps.push((at, id, cfg_type));
            at = self.cfg_read(1, at + 1, 1);
            assert!(caps.len() < 16, "capability loop");
        }
        caps
    }

    /// Linux's virtio_pci_modern set-up: features, one queue on vector 1, config on 0.
    fn activate(&mut self) {
        self.common_wr(common::DEVICE_STATUS, 1, status::ACKNOWLEDGE.into());
        self.common_wr(
            common::DEVICE_STATUS,
            1,
            (status::ACKNOWLEDGE | status::DRIVER).into(),
        );
        self.common_wr(common::DRIVER_FEATURE_SELECT, 4, 1);
        self.common_wr(common::DRIVER_FEATURE, 4, 1); // VIRTIO_F_VERSION_1
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.common_wr(common::DEVICE_STATUS, 1, s.into());
        assert_eq!(self.common_rd(common::DEVICE_STATUS, 1), u64::from(s));
        self.common_wr(common::MSIX_CONFIG, 2, 0);
        assert_eq!(self.common_rd(common::MSIX_CONFIG, 2), 0);
        self.common_wr(common::QUEUE_SELECT, 2, 0);
        assert_eq!(self.common_rd(common::QUEUE_SIZE, 2), 256);
        self.common_wr(common::QUEUE_SIZE, 2, QSIZE.into());
        self.common_wr(common::QUEUE_MSIX_VECTOR, 2, 1);
        assert_eq!(self.common_rd(common::QUEUE_MSIX_VECTOR, 2), 1);
        self.common_wr(common::QUEUE_DESC, 4, DESC);
        self.common_wr(common::QUEUE_DESC + 4, 4, 0);
        self.common_wr(common::QUEUE_DRIVER, 8, AVAIL);
        self.common_wr(common::QUEUE_DEVICE, 4, USED);
        self.common_wr(common::QUEUE_DEVICE + 4, 4, 0);
        assert_eq!(self.common_rd(common::QUEUE_DRIVER, 8), AVAIL);
        assert_eq!(self.common_rd(common::QUEUE_DESC, 4), DESC);
        self.common_wr(common::QUEUE_ENABLE, 2, 1);
        assert_eq!(self.common_rd(common::QUEUE_ENABLE, 2), 1);
        self.common_wr(common::DEVICE_STATUS, 1, (s | status::DRIVER_OK).into());
    }

    /// Programs MSI-X entries 0 and 1, unmasked, and enables MSI-X.
    fn enable_msix(&mut self, msix_cap: u32) {
        for v in 0..2u64 {
            let entry = BAR0 + bar::MSIX_TABLE + 16 * v;
            self.wr(entry, 4, 0xfee0_0000);
            self.wr(entry + 4, 4, 0);
            self.wr(entry + 8, 4, 0x40 + v);
            self.wr(entry + 12, 4, 0);
        }
        let control = self.cfg_read(1, msix_cap + 2, 2);
        self.cfg_write(1, msix_cap + 2, 2, control | 0x8000);
    }

    /// A read of sector 1 into DATA, published and notified through the BAR.
    fn read_sector(&mut self) {
        self.read_sector_on(0);
    }

    /// [`Self::read_sector`] on queue `q`, notified at the queue's own notify address.
    fn read_sector_on(&mut self, q: u16) {
        self.publish_read(q);
        // What Linux's vp_notify writes: the queue index, 16 bits, at the queue's address
        // (notify_off_multiplier 4 apart).
        self.wr(BAR0 + bar::NOTIFY + 4 * u64::from(q), 2, q.into());
        assert_eq!(
            self.notify.read().unwrap(),
            1,
            "the device thread was woken"
        );
        self.transport.lock().unwrap().serve_notified();
    }

    /// A read of sector 1 into DATA published on queue `q`, not notified.
    fn publish_read(&mut self, q: u16) {
        let (desc, avail, _) = rings(q);
        let m = &self.mem;
        m.write_obj(VIRTIO_BLK_T_IN, GuestAddress(HDR)).unwrap();
        m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        m.write_obj(1u64, GuestAddress(HDR + 8)).unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS_BYTE)).unwrap();
        let chain = [
            (HDR, 16u32, VIRTQ_DESC_F_NEXT),
            (DATA, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT),
            (STATUS_BYTE, 1, VIRTQ_DESC_F_WRITE),
        ];
        for (i, (addr, len, flags)) in chain.into_iter().enumerate() {
            let at = desc + 16 * i as u64;
            m.write_obj(addr, GuestAddress(at)).unwrap();
            m.write_obj(len, GuestAddress(at + 8)).unwrap();
            m.write_obj(flags, GuestAddress(at + 12)).unwrap();
            m.write_obj(i as u16 + 1, GuestAddress(at + 14)).unwrap();
        }
        let next = &mut self.avail_idx[usize::from(q)];
        let slot = u64::from(*next % QSIZE);
        m.write_obj(0u16, GuestAddress(avail + 4 + 2 * slot))
            .unwrap();
        *next += 1;
        m.write_obj(*next, GuestAddress(avail + 2)).unwrap();
    }

    /// [`Self::activate`], then queue 1 on vector 2 with rings of its own, and all three
    /// MSI-X vectors programmed and enabled.
    fn activate_queue1_and_msix(&mut self, msix: u32) {
        self.activate();
        // Queue 1 on vector 2, with rings of its own.
        let (desc, avail, used) = rings(1);
        self.common_wr(common::QUEUE_SELECT, 2, 1);
        assert_eq!(self.common_rd(common::QUEUE_SIZE, 2), 256);
        self.common_wr(common::QUEUE_SIZE, 2, QSIZE.into());
        self.common_wr(common::QUEUE_MSIX_VECTOR, 2, 2);
        for (reg, addr) in [
            (common::QUEUE_DESC, desc),
            (common::QUEUE_DRIVER, avail),
            (common::QUEUE_DEVICE, used),
        ] {
            self.common_wr(reg, 4, addr);
            self.common_wr(reg + 4, 4, 0);
        }
        self.common_wr(common::QUEUE_ENABLE, 2, 1);
        for v in 0..3u64 {
            let entry = BAR0 + bar::MSIX_TABLE + 16 * v;
            self.wr(entry, 4, 0xfee0_0000);
            self.wr(entry + 8, 4, 0x40 + v);
            self.wr(entry + 12, 4, 0);
        }
        let control = self.cfg_read(1, msix + 2, 2);
        self.cfg_write(1, msix + 2, 2, control | 0x8000);
    }

    /// The last read of sector 1 completed: status OK, the sector's first byte in DATA.
    fn assert_sector_1_read(&self) {
        assert_eq!(
            self.mem.read_obj::<u8>(GuestAddress(STATUS_BYTE)).unwrap(),
            VIRTIO_BLK_S_OK
        );
        let mut sector = [0u8; 512];
        self.mem
            .read_slice(&mut sector, GuestAddress(DATA))
            .unwrap();
        assert_eq!(sector[0], (512 * 7 + 1) as u8, "sector 1's first byte");
    }

    fn used_idx(&self) -> u16 {
        self.used_idx_of(0)
    }

    fn used_idx_of(&self, q: u16) -> u16 {
        self.mem.read_obj(GuestAddress(rings(q).2 + 2)).unwrap()
    }

    fn interrupts(&self) -> [usize; 2] {
        [0, 1].map(|i| self.irqs[i].0.load(Ordering::SeqCst))
    }

    fn all_interrupts(&self) -> Vec<usize> {
        self.irqs
            .iter()
            .map(|i| i.0.load(Ordering::SeqCst))
            .collect()
    }
}

#[test]
fn enumeration_finds_the_host_bridge_and_a_virtio_blk_function_with_its_capabilities() {
    let mut m = machine();
    assert_eq!(m.cfg_read(0, 0, 4), 0x0d57_8086, "host bridge");
    assert_eq!(m.cfg_read(0, 8, 4) >> 8, 0x06_00_00);
    assert_eq!(m.cfg_read(1, 0, 4), 0x1042_1af4, "virtio-blk, modern");
    assert_eq!(m.cfg_read(1, 8, 1), 1, "revision 1");
    assert_eq!(m.cfg_read(1, 0x2c, 4), 0x0040_1af4, "subsystem");
    assert_eq!(m.cfg_read(1, 0x3d, 1), 0, "no INTx pin");
    assert_eq!(m.cfg_read(1, 0x0e, 1), 0, "type-0 header, one function");
    assert_eq!(m.cfg_read(2, 0, 4), u32::MAX, "empty slot");
    // Function 1 and bus 1 have nothing.
    m.config.write(0, &(0x8000_0100u32).to_le_bytes());
    let mut b = [0u8; 4];
    m.config.read(4, &mut b);
    assert_eq!(u32::from_le_bytes(b), u32::MAX);
    m.select(1, 1, 0);
    m.config.read(4, &mut b);
    assert_eq!(u32::from_le_bytes(b), u32::MAX);
    // CONFIG_ADDRESS reads back (Linux's mechanism #1 probe), reserved bits dropped.
    m.config.write(0, &0xff00_0004u32.to_le_bytes());
    m.config.read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x8000_0004);
    // A misaligned data access reads all-ones and changes nothing.
    m.select(0, 1, 0);
    m.config.read(5, &mut b);
    assert_eq!(b, [0xff; 4]);

    let caps = m.capabilities();
    let vendor: Vec<u8> = caps.iter().filter(|c| c.1 == 0x09).map(|c| c.2).collect();
    assert_eq!(
        vendor,
        [1, 2, 3, 4, 5],
        "common, notify, ISR, device, PCI cfg"
    );
    let notify = caps.iter().find(|c| c.1 == 0x09 && c.2 == 2).unwrap().0;
    assert_eq!(m.cfg_read(1, notify + 4, 1), 0, "in BAR0");
    assert_eq!(u64::from(m.cfg_read(1, notify + 8, 4)), bar::NOTIFY);
    assert_eq!(m.cfg_read(1, notify + 16, 4), 4, "notify_off_multiplier");
    let common_cap = caps.iter().find(|c| c.1 == 0x09 && c.2 == 1).unwrap().0;
    assert_eq!(
        u64::from(m.cfg_read(1, common_cap + 12, 4)),
        bar::COMMON_LEN
    );
    let msix = caps.iter().find(|c| c.1 == 0x11).unwrap().0;
    assert_eq!(m.cfg_read(1, msix + 2, 2) & 0x7ff, 1, "two vectors");
    assert_eq!(u64::from(m.cfg_read(1, msix + 4, 4)), bar::MSIX_TABLE);
    assert_eq!(u64::from(m.cfg_read(1, msix + 8, 4)), bar::MSIX_PBA);
    // BAR0: 64-bit memory at the slot's address, decoded from the start.
    assert_eq!(m.cfg_read(1, 0x10, 4), 0xc000_0004);
    assert_eq!(m.cfg_read(1, 0x04, 2) & 2, 2);
    assert_eq!(m.common_rd(common::NUM_QUEUES, 2), 1);
    assert_eq!(
        *m.host.ioevents.lock().unwrap(),
        BTreeSet::from([BAR0 + bar::NOTIFY])
    );
}

#[test]
fn bar_sizing_and_relocation_move_the_registers_and_the_ioeventfds() {
    let mut m = machine();
    // Linux sizes a BAR with decoding off.
    m.cfg_write(1, 0x04, 2, 0);
    assert!(m.host.ioevents.lock().unwrap().is_empty());
    assert_eq!(m.common_rd(common::NUM_QUEUES, 2), 0xffff, "not decoded");
    m.cfg_write(1, 0x10, 4, u32::MAX);
    m.cfg_write(1, 0x14, 4, u32::MAX);
    let low = m.cfg_read(1, 0x10, 4);
    let high = m.cfg_read(1, 0x14, 4);
    assert_eq!(!(u64::from(high) << 32 | u64::from(low & !0xf)) + 1, 0x8000);
    let moved = WINDOW + 0x10_0000;
    m.cfg_write(1, 0x10, 4, moved as u32);
    m.cfg_write(1, 0x14, 4, 0);
    m.cfg_write(1, 0x04, 2, 0x6);
    assert_eq!(
        *m.host.ioevents.lock().unwrap(),
        BTreeSet::from([moved + bar::NOTIFY])
    );
    assert_eq!(m.rd(moved + bar::COMMON + common::NUM_QUEUES, 2), 1);
    assert_eq!(
        m.common_rd(common::NUM_QUEUES, 2),
        0xffff,
        "old place empty"
    );
    // Moved out of the window: decoded by nobody here, and no ioeventfd.
    m.cfg_write(1, 0x14, 4, 1);
    assert!(m.host.ioevents.lock().unwrap().is_empty());
}

#[test]
fn a_request_completes_on_its_queue_vector_and_a_masked_vector_waits_in_the_pba() {
    let mut m = machine();
    let msix = m.capabilities().iter().find(|c| c.1 == 0x11).unwrap().0;
    m.activate();
    m.enable_msix(msix);
    assert_eq!(
        *m.host.routes.lock().unwrap(),
        [24, 25].map(|gsi| (
            gsi,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x40 + gsi - 24
            }
        ))
    );
    m.read_sector();
    assert_eq!(m.used_idx(), 1);
    m.assert_sector_1_read();
    assert_eq!(m.interrupts(), [0, 1], "the queue's vector, not config's");
    assert_eq!(
        m.rd(BAR0 + bar::ISR, 1),
        1,
        "ISR says used buffer, read clears"
    );
    assert_eq!(m.rd(BAR0 + bar::ISR, 1), 0);

    // Mask vector 1: the next completion is pending, not delivered.
    m.wr(BAR0 + bar::MSIX_TABLE + 16 + 12, 4, 1);
    m.read_sector();
    assert_eq!(m.interrupts(), [0, 1]);
    assert_eq!(m.rd(BAR0 + bar::MSIX_PBA, 8), 0b10);
    m.wr(BAR0 + bar::MSIX_TABLE + 16 + 12, 4, 0);
    assert_eq!(m.interrupts(), [0, 2], "delivered on unmask");
    assert_eq!(m.rd(BAR0 + bar::MSIX_PBA, 8), 0);
    assert_eq!(
        m.host.routes.lock().unwrap().len(),
        2,
        "same message: no reroute"
    );

    // Function mask holds every vector back; clearing it delivers.
    let control = m.cfg_read(1, msix + 2, 2);
    m.cfg_write(1, msix + 2, 2, control | 0x4000);
    m.read_sector();
    assert_eq!(m.interrupts(), [0, 2]);
    m.cfg_write(1, msix + 2, 2, control & !0x4000);
    assert_eq!(m.interrupts(), [0, 3]);
}

#[test]
fn vectors_the_function_lacks_read_back_as_no_vector_and_reset_clears_them() {
    let mut m = machine();
    m.common_wr(common::MSIX_CONFIG, 2, 2);
    assert_eq!(m.common_rd(common::MSIX_CONFIG, 2), u64::from(NO_VECTOR));
    m.common_wr(common::QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(m.common_rd(common::QUEUE_MSIX_VECTOR, 2), 1);
    m.common_wr(common::QUEUE_SELECT, 2, 7);
    assert_eq!(m.common_rd(common::QUEUE_SIZE, 2), 0, "no queue 7");
    assert_eq!(
        m.common_rd(common::QUEUE_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR)
    );
    m.common_wr(common::DEVICE_STATUS, 1, 0);
    assert_eq!(m.common_rd(common::QUEUE_SELECT, 2), 0);
    assert_eq!(
        m.common_rd(common::QUEUE_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR)
    );
    // Accesses that are not a field: all-ones, nothing changes.
    assert_eq!(m.common_rd(common::DEVICE_FEATURE, 1), 0xff);
    assert_eq!(m.common_rd(common::DEVICE_FEATURE + 1, 4), 0xffff_ffff);
    m.common_wr(common::NUM_QUEUES, 2, 9);
    assert_eq!(m.common_rd(common::NUM_QUEUES, 2), 1);
    // MSI-X table: only aligned dwords and qwords.
    m.wr(BAR0 + bar::MSIX_TABLE + 2, 2, 0xffff);
    assert_eq!(m.rd(BAR0 + bar::MSIX_TABLE, 4), 0);
    assert_eq!(m.rd(BAR0 + bar::MSIX_TABLE + 12, 4), 1, "masked at reset");
    assert_eq!(m.rd(BAR0 + 0x7000, 4), 0xffff_ffff, "nothing there");
}

#[test]
fn the_pci_cfg_capability_reaches_the_bar() {
    let mut m = machine();
    let cap = m
        .capabilities()
        .iter()
        .find(|c| c.1 == 0x09 && c.2 == 5)
        .unwrap()
        .0;
    m.cfg_write(1, cap + 4, 1, 0);
    m.cfg_write(1, cap + 8, 4, (bar::COMMON + common::NUM_QUEUES) as u32);
    m.cfg_write(1, cap + 12, 4, 2);
    assert_eq!(
        m.cfg_read(1, cap + 16, 2),
        1,
        "num_queues through the window"
    );
    m.cfg_write(1, cap + 8, 4, (bar::COMMON + common::QUEUE_SELECT) as u32);
    m.cfg_write(1, cap + 16, 2, 3);
    assert_eq!(m.common_rd(common::QUEUE_SELECT, 2), 3);
}

#[test]
fn a_multiqueue_disk_serves_each_queue_on_its_own_notify_address_and_vector() {
    let mut m = machine_with(2);
    let msix = m.capabilities().iter().find(|c| c.1 == 0x11).unwrap().0;
    assert_eq!(m.cfg_read(1, msix + 2, 2) & 0x7ff, 2, "three vectors");
    assert_eq!(m.common_rd(common::NUM_QUEUES, 2), 2);
    assert_eq!(
        *m.host.ioevents.lock().unwrap(),
        BTreeSet::from([BAR0 + bar::NOTIFY, BAR0 + bar::NOTIFY + 4])
    );
    // VIRTIO_BLK_F_MQ is offered, and num_queues (le16 at 34) says two.
    m.common_wr(common::DEVICE_FEATURE_SELECT, 4, 0);
    assert_ne!(m.common_rd(common::DEVICE_FEATURE, 4) & VIRTIO_BLK_F_MQ, 0);
    assert_eq!(m.rd(BAR0 + bar::DEVICE + 34, 2), 2);
    assert_eq!(m.rd(BAR0 + bar::DEVICE + 12, 4), 254, "seg_max unchanged");

    m.activate_queue1_and_msix(msix);

    m.read_sector_on(1);
    assert_eq!((m.used_idx_of(0), m.used_idx_of(1)), (0, 1));
    m.assert_sector_1_read();
    assert_eq!(m.all_interrupts(), [0, 0, 1], "queue 1's vector only");

    m.read_sector_on(0);
    assert_eq!((m.used_idx_of(0), m.used_idx_of(1)), (1, 1));
    assert_eq!(m.all_interrupts(), [0, 1, 1]);
}

#[test]
fn the_queue_count_is_clamped_to_what_the_device_offers() {
    use crate::devices::virtio::block::MAX_QUEUES;
    use crate::devices::virtio::VirtioDevice;
    let disk = || MemDisk {
        bytes: vec![0; 512],
        flushes: 0,
    };
    let queues = |n| {
        Block::with_backend(disk(), 512, false, [0; 20])
            .with_queues(n)
            .queue_max_sizes()
            .len()
    };
    assert_eq!(queues(0), 1);
    assert_eq!(queues(4), 4);
    assert_eq!(queues(u16::MAX), usize::from(MAX_QUEUES));
}

#[test]
fn a_vector_whose_route_fails_holds_its_interrupts_pending_until_routed() {
    let mut m = machine();
    let msix = m.capabilities().iter().find(|c| c.1 == 0x11).unwrap().0;
    m.activate();
    m.host.refuse_routes.store(true, Ordering::SeqCst);
    m.enable_msix(msix);
    assert!(m.host.routes.lock().unwrap().is_empty());
    m.read_sector();
    assert_eq!(m.used_idx(), 1, "the request itself completes");
    assert_eq!(
        m.interrupts(),
        [0, 0],
        "not fired on a stale or absent route"
    );
    assert_eq!(m.rd(BAR0 + bar::MSIX_PBA, 8), 0b10, "pending instead");
    // The host accepts again; the guest reprograms the vector: routed, then delivered.
    m.host.refuse_routes.store(false, Ordering::SeqCst);
    m.wr(BAR0 + bar::MSIX_TABLE + 16 + 8, 4, 0x51);
    assert_eq!(
        *m.host.routes.lock().unwrap(),
        [(
            25,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x51
            }
        )]
    );
    assert_eq!(m.interrupts(), [0, 1]);
    assert_eq!(m.rd(BAR0 + bar::MSIX_PBA, 8), 0);
}

#[test]
fn one_wake_serves_a_queue_notified_through_the_transport_and_one_through_an_ioeventfd() {
    // Queue 0's ioeventfd could not be registered, so its notify exits to the monitor;
    // queue 1's was, so KVM signals the eventfd without the transport seeing which queue.
    // The device thread wakes once for both: both requests are served.
    let mut m = machine_with(2);
    let msix = m.capabilities().iter().find(|c| c.1 == 0x11).unwrap().0;
    m.activate_queue1_and_msix(msix);
    m.publish_read(1);
    m.notify.write(1).unwrap(); // what KVM does for queue 1's notify
    m.publish_read(0);
    m.wr(BAR0 + bar::NOTIFY, 2, 0); // queue 0's notify, through the BAR
    assert_eq!(m.notify.read().unwrap(), 2, "one wake for both");
    m.transport.lock().unwrap().serve_notified();
    assert_eq!((m.used_idx_of(0), m.used_idx_of(1)), (1, 1));
    assert_eq!(m.all_interrupts(), [0, 1, 1]);
}
