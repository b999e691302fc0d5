//! Drives the virtio-mmio transport and the virtio-blk device the way a driver does,
//! through registers and hand-built rings in a `GuestMemoryMmap` (no VM).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::DescriptorTable;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::block::*;
use super::mmio::{reg, INT_CONFIG_CHANGE, INT_USED_BUFFER};
use super::queue::{VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use super::*;
use crate::devices::bus::BusDevice;

const MEM_SIZE: usize = 0x10_0000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const QSIZE: u16 = 16;
const BUF: u64 = 0x1_0000;
const SECTORS: usize = 8;

const R: u16 = 0;
const W: u16 = VIRTQ_DESC_F_WRITE;

fn pattern() -> Vec<u8> {
    (0..SECTORS * 512)
        .map(|i| (i * 7 + i / 512) as u8)
        .collect()
}

struct Driver<B: DiskBackend> {
    mem: GuestMemoryMmap,
    irq: Arc<CountingIrq>,
    dev: MmioTransport<Block<B>, GuestMemoryMmap>,
    next_desc: u16,
    avail_idx: u16,
}

impl<B: DiskBackend> Driver<B> {
    fn new(block: Block<B>) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let irq = Arc::new(CountingIrq::default());
        let dev = MmioTransport::new(block, mem.clone(), irq.clone());
        Self {
            mem,
            irq,
            dev,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    fn rd(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.dev.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(&mut self, offset: u64, v: u32) {
        self.dev.write(offset, &v.to_le_bytes());
    }

    /// The Linux driver's initialisation sequence (spec 3.1.1) with VERSION_1 only.
    fn activate(&mut self) {
        self.activate_with(0);
    }

    /// The same, also accepting the low-word features `ring` (VIRTIO_F_RING_*).
    fn activate_with(&mut self, ring: u64) {
        self.wr(reg::STATUS, status::ACKNOWLEDGE);
        self.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.wr(reg::DRIVER_FEATURES_SEL, 1);
        self.wr(reg::DRIVER_FEATURES, 1); // bit 32: VIRTIO_F_VERSION_1
        self.wr(reg::DRIVER_FEATURES_SEL, 0);
        self.wr(
            reg::DRIVER_FEATURES,
            (VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | ring) as u32,
        );
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.wr(reg::STATUS, s);
        assert_eq!(self.rd(reg::STATUS), s, "FEATURES_OK accepted");
        self.setup_queue(DESC, AVAIL, USED);
        self.wr(reg::STATUS, s | status::DRIVER_OK);
    }

    fn setup_queue(&mut self, desc: u64, avail: u64, used: u64) {
        self.wr(reg::QUEUE_SEL, 0);
        assert_eq!(self.rd(reg::QUEUE_NUM_MAX), 256);
        self.wr(reg::QUEUE_NUM, u32::from(QSIZE));
        self.wr(reg::QUEUE_DESC_LOW, desc as u32);
        self.wr(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.wr(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.wr(reg::QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
        self.wr(reg::QUEUE_DEVICE_LOW, used as u32);
        self.wr(reg::QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        self.wr(reg::QUEUE_READY, 1);
    }

    fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + 16 * u64::from(index));
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Publishes `head` in the available ring (without notifying).
    fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    /// Writes `chain` as an indirect table at `table`, one descriptor of the queue pointing
    /// at it, publishes that descriptor and notifies.
    fn submit_indirect(&mut self, table: u64, chain: &[(u64, u32, u16)]) -> u16 {
        let entries = indirect_entries(chain);
        self.indirect_table(table, &entries);
        let head = self.next_desc;
        let len = 16 * entries.len() as u32;
        self.write_desc(head, table, len, VIRTQ_DESC_F_INDIRECT, 0);
        self.next_desc = (head + 1) % QSIZE;
        self.publish(head);
        self.wr(reg::QUEUE_NOTIFY, 0);
        head
    }

    /// Writes `(addr, len, flags, next)` entries into an indirect table at `at`, with the
    /// virtio-queue crate's driver-side mock.
    fn indirect_table(&self, at: u64, entries: &[TableEntry]) {
        let table = DescriptorTable::new(&self.mem, GuestAddress(at), entries.len() as u16);
        for (i, &(addr, len, flags, next)) in entries.iter().enumerate() {
            let desc = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
            table.store(i as u16, desc).unwrap();
        }
    }

    /// Sets `used_event` (the avail ring's last field, spec 2.7.6).
    fn set_used_event(&self, value: u16) {
        let at = AVAIL + 4 + 2 * u64::from(QSIZE);
        self.mem.write_obj(value, GuestAddress(at)).unwrap();
    }

    /// `avail_event` (the used ring's last field, spec 2.7.8).
    fn avail_event(&self) -> u16 {
        let at = USED + 4 + 8 * u64::from(QSIZE);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn used_flags(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED)).unwrap()
    }

    fn interrupts(&self) -> usize {
        self.irq.0.load(Ordering::SeqCst)
    }

    /// Writes a chain of (addr, len, flags) descriptors, publishes it and notifies.
    fn submit(&mut self, chain: &[(u64, u32, u16)]) -> u16 {
        let head = self.offer(chain);
        self.wr(reg::QUEUE_NOTIFY, 0);
        head
    }

    /// Writes a chain of (addr, len, flags) descriptors and publishes it, without a
    /// notification (one that came through a KVM ioeventfd, or is still to come).
    fn offer(&mut self, chain: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in chain.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let last = i + 1 == chain.len();
            let flags = if last {
                flags
            } else {
                flags | VIRTQ_DESC_F_NEXT
            };
            self.write_desc(index, addr, len, flags, (index + 1) % QSIZE);
        }
        self.next_desc = (head + chain.len() as u16) % QSIZE;
        self.publish(head);
        head
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// The used element for the `n`th returned chain: (id, len).
    fn used(&self, n: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(n % QSIZE);
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }

    fn header(&self, at: u64, request_type: u32, sector: u64) {
        self.mem.write_obj(request_type, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status_byte(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }
}

/// A descriptor table entry: (addr, len, flags, next).
type TableEntry = (u64, u32, u16, u16);

/// A chain of (addr, len, flags) as indirect table entries, each linking to the following
/// one.
fn indirect_entries(chain: &[(u64, u32, u16)]) -> Vec<TableEntry> {
    chain
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, flags))| {
            let next = i as u16 + 1;
            if usize::from(next) < chain.len() {
                (addr, len, flags | VIRTQ_DESC_F_NEXT, next)
            } else {
                (addr, len, flags, 0)
            }
        })
        .collect()
}

fn mem_driver(readonly: bool) -> Driver<MemDisk> {
    mem_driver_with(readonly, 0)
}

/// A driver that accepted the ring features `ring` besides VERSION_1, FLUSH and SEG_MAX.
fn mem_driver_with(readonly: bool, ring: u64) -> Driver<MemDisk> {
    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(
        disk,
        (SECTORS * 512) as u64,
        readonly,
        *b"cloister-test-disk-1",
    ));
    d.activate_with(ring);
    d
}

const HDR: u64 = BUF;
const DATA: u64 = BUF + 0x1000;
const STATUS: u64 = BUF + 0x100;

#[test]
fn identification_registers_and_config() {
    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, 4096 + 100, true, [0; 20]));
    assert_eq!(d.rd(reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(d.rd(reg::VERSION), 2);
    assert_eq!(d.rd(reg::DEVICE_ID), 2);
    d.wr(reg::DEVICE_FEATURES_SEL, 0);
    let low = d.rd(reg::DEVICE_FEATURES);
    d.wr(reg::DEVICE_FEATURES_SEL, 1);
    let high = d.rd(reg::DEVICE_FEATURES);
    assert_eq!(
        high,
        1 | 2,
        "VIRTIO_F_VERSION_1 (bit 32), VIRTIO_F_ACCESS_PLATFORM (bit 33)"
    );
    assert_eq!(
        u64::from(low),
        VIRTIO_BLK_F_RO
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_MQ
            | VIRTIO_F_RING_INDIRECT_DESC
            | VIRTIO_F_RING_EVENT_IDX
    );
    assert_eq!(VIRTIO_BLK_F_MQ, 1 << 12);
    assert_eq!(VIRTIO_F_RING_INDIRECT_DESC, 1 << 28);
    assert_eq!(VIRTIO_F_RING_EVENT_IDX, 1 << 29);
    // Capacity: 4196 bytes round down to 8 sectors.
    let mut cap = [0u8; 8];
    d.dev.read(reg::CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 8);
    let mut seg_max = [0u8; 4];
    d.dev.read(reg::CONFIG + 12, &mut seg_max);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    // num_queues (le16 at 34): one unless the builder asked for more.
    let mut num_queues = [0u8; 2];
    d.dev.read(reg::CONFIG + 34, &mut num_queues);
    assert_eq!(u16::from_le_bytes(num_queues), 1);
    // Past the configuration space: zeros. Misaligned register access: all-ones.
    let mut far = [0xaau8; 4];
    d.dev.read(0xff0, &mut far);
    assert_eq!(far, [0; 4]);
    let mut odd = [0u8; 2];
    d.dev.read(reg::MAGIC_VALUE, &mut odd);
    assert_eq!(odd, [0xff; 2]);
}

#[test]
fn read_request_copies_sectors_into_two_buffers() {
    let mut d = mem_driver(false);
    d.header(HDR, VIRTIO_BLK_T_IN, 2);
    let head = d.submit(&[
        (HDR, 16, R),
        (DATA, 512, W),
        (DATA + 0x800, 1024, W),
        (STATUS, 1, W),
    ]);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (u32::from(head), 1536 + 1));
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    let disk = pattern();
    assert_eq!(d.bytes(DATA, 512), disk[1024..1536]);
    assert_eq!(d.bytes(DATA + 0x800, 1024), disk[1536..2560]);
    assert_eq!(d.dev.interrupt_status(), INT_USED_BUFFER);
    assert_eq!(d.irq.0.load(Ordering::SeqCst), 1);
    d.wr(reg::INTERRUPT_ACK, INT_USED_BUFFER);
    assert_eq!(d.dev.interrupt_status(), 0);
}

/// Counts notifications handed to the device thread.
#[derive(Default)]
struct CountingNotifier(std::sync::atomic::AtomicU32);

impl super::QueueNotifier for CountingNotifier {
    fn notify(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// With a device thread, the vCPU's QueueNotify write only signals it: nothing is read
/// from the disk or written to the used ring until the device thread serves the queue.
#[test]
fn a_notification_is_served_by_the_device_thread_not_the_writer() {
    use super::NotifiedDevice;
    let mut d = mem_driver(false);
    let notifier = Arc::new(CountingNotifier::default());
    d.dev.set_notifier(notifier.clone());
    d.header(HDR, VIRTIO_BLK_T_IN, 2);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(notifier.0.load(Ordering::SeqCst), 1);
    assert_eq!(d.used_idx(), 0, "the writer served the queue");
    assert_eq!(d.irq.0.load(Ordering::SeqCst), 0);
    d.dev.serve_notified();
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.bytes(DATA, 512), pattern()[1024..1536]);
    assert_eq!(d.irq.0.load(Ordering::SeqCst), 1);
    // A notification through a KVM ioeventfd never reaches the transport: serving with
    // nothing pending serves every ready queue.
    d.header(HDR, VIRTIO_BLK_T_IN, 3);
    d.offer(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    d.dev.serve_notified();
    assert_eq!(d.used_idx(), 2);
    assert_eq!(d.bytes(DATA, 512), pattern()[1536..2048]);
}

/// While the device thread holds the transport (doing a request's disk I/O), a vCPU
/// still reads InterruptStatus, acknowledges it and notifies a queue: the registers a
/// driver touches with requests in flight never wait for the disk.
#[test]
fn a_vcpu_never_waits_for_the_device_thread() {
    use super::NotifiedDevice;
    use std::sync::mpsc;
    use std::time::Duration;
    let mut d = mem_driver(false);
    // Served in place (no notifier yet): one used buffer, its interrupt pending.
    d.header(HDR, VIRTIO_BLK_T_IN, 2);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.dev.interrupt_status(), INT_USED_BUFFER);
    // A second request made available, its notification still to come.
    d.header(HDR, VIRTIO_BLK_T_IN, 3);
    d.offer(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    let Driver { mem, irq, dev, .. } = d;
    let notifier = Arc::new(CountingNotifier::default());
    let mut front = MmioFrontend::new(dev, notifier.clone());
    let transport = front.transport();

    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let busy = transport.clone();
    let device_thread = std::thread::spawn(move || {
        let _busy = busy.lock().unwrap();
        held_tx.send(()).unwrap();
        release_rx.recv().ok();
    });
    held_rx.recv().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let vcpu = std::thread::spawn(move || {
        let read = |front: &mut MmioFrontend<_>| {
            let mut b = [0u8; 4];
            front.read(reg::INTERRUPT_STATUS, &mut b);
            u32::from_le_bytes(b)
        };
        let before = read(&mut front);
        front.write(reg::INTERRUPT_ACK, &INT_USED_BUFFER.to_le_bytes());
        let after = read(&mut front);
        front.write(reg::QUEUE_NOTIFY, &0u32.to_le_bytes());
        done_tx.send((before, after)).unwrap();
        front
    });
    let seen = done_rx.recv_timeout(Duration::from_secs(10));
    release_tx.send(()).unwrap();
    device_thread.join().unwrap();
    let mut front = vcpu.join().unwrap();
    assert_eq!(
        seen,
        Ok((INT_USED_BUFFER, 0)),
        "the vCPU waited for the device thread"
    );
    assert_eq!(notifier.0.load(Ordering::SeqCst), 1);

    // Everything else goes through the transport.
    let mut b = [0u8; 4];
    front.read(reg::MAGIC_VALUE, &mut b);
    assert_eq!(&b, b"virt");
    // The notification is pending for the device thread, which serves the request and
    // raises the interrupt the vCPU will read.
    let irqs = irq.0.load(Ordering::SeqCst);
    transport.lock().unwrap().serve_notified();
    assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 2);
    assert_eq!(irq.0.load(Ordering::SeqCst), irqs + 1);
    front.read(reg::INTERRUPT_STATUS, &mut b);
    assert_eq!(u32::from_le_bytes(b), INT_USED_BUFFER);
}

#[test]
fn write_request_reaches_the_disk_and_flush_is_honoured() {
    let mut d = mem_driver(false);
    let payload: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
    d.mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    d.header(HDR, VIRTIO_BLK_T_OUT, 6);
    d.submit(&[(HDR, 16, R), (DATA, 1024, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.used(0).1, 1);
    let disk = &d.dev.device().backend().bytes;
    assert_eq!(&disk[6 * 512..8 * 512], &payload[..]);
    assert_eq!(&disk[..6 * 512], &pattern()[..6 * 512]);

    d.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
    d.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    d.submit(&[(HDR, 16, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.dev.device().backend().flushes, 1);
    assert_eq!(d.used_idx(), 2);
}

#[test]
fn get_id_returns_the_disk_id() {
    let mut d = mem_driver(false);
    d.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    d.submit(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.bytes(DATA, 20), b"cloister-test-disk-1");
    assert_eq!(d.used(0).1, 21);
}

#[test]
fn unknown_request_type_is_unsupported() {
    let mut d = mem_driver(false);
    d.header(HDR, 11, 0); // DISCARD, not offered
    d.submit(&[(HDR, 16, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn read_only_disk_refuses_writes_and_keeps_its_bytes() {
    let mut d = mem_driver(true);
    d.mem.write_slice(&[0x55; 512], GuestAddress(DATA)).unwrap();
    d.header(HDR, VIRTIO_BLK_T_OUT, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_IOERR);
    assert_eq!(d.dev.device().backend().bytes, pattern());
    // Reads still work.
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.bytes(DATA, 512), pattern()[..512]);
}

#[test]
fn out_of_range_sectors_fail_with_ioerr() {
    // The backend holds more bytes than the device's capacity (as when an image grows
    // after start), so only the device's own range check can refuse these.
    let mut bytes = pattern();
    bytes.extend_from_slice(&pattern());
    let disk = MemDisk { bytes, flushes: 0 };
    let mut d = Driver::new(Block::with_backend(
        disk,
        (SECTORS * 512) as u64,
        false,
        [0; 20],
    ));
    d.activate();
    for (sector, len) in [
        (7u64, 1024u32),
        (8, 512),
        (u64::MAX, 512),
        (u64::MAX / 512 + 1, 512),
    ] {
        d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
        d.header(HDR, VIRTIO_BLK_T_IN, sector);
        d.submit(&[(HDR, 16, R), (DATA, len, W), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_IOERR, "sector {sector}");
    }
    // The last sector itself is fine.
    d.header(HDR, VIRTIO_BLK_T_IN, 7);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert!(!d.dev.is_broken());
}

#[test]
fn bad_header_length_direction_and_alignment_fail_the_request() {
    let mut d = mem_driver(false);
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    let cases: [&[(u64, u32, u16)]; 5] = [
        &[(HDR, 8, R), (DATA, 512, W), (STATUS, 1, W)], // short header
        &[(HDR, 24, R), (DATA, 512, W), (STATUS, 1, W)], // header merged with more
        &[(HDR, 16, W), (DATA, 512, W), (STATUS, 1, W)], // writable header
        &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)], // read into a read-only buffer
        &[(HDR, 16, R), (DATA, 100, W), (STATUS, 1, W)], // not whole sectors
    ];
    for (n, chain) in cases.iter().enumerate() {
        d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
        d.mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
        d.submit(chain);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_IOERR, "case {n}");
        assert_eq!(d.bytes(DATA, 512), vec![0u8; 512], "case {n} wrote data");
        assert_eq!(d.used(n as u16).1, 1, "case {n}");
    }
    // No writable status byte at all: the chain comes back with nothing written.
    d.submit(&[(HDR, 16, R), (STATUS, 1, R)]);
    assert_eq!(d.used(5).1, 0);
    assert_eq!(d.used_idx(), 6);
    assert!(!d.dev.is_broken());
}

#[test]
fn descriptor_outside_guest_memory_fails_only_that_request() {
    let mut d = mem_driver(false);
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
    let end = MEM_SIZE as u64;
    for (addr, len) in [(end - 256, 512u32), (u64::MAX - 100, 512), (end, 0)] {
        d.submit(&[(HDR, 16, R), (addr, len, W), (STATUS, 1, W)]);
    }
    // All three chains returned with length 0 and no status written.
    assert_eq!(d.used_idx(), 3);
    for n in 0..3 {
        assert_eq!(d.used(n).1, 0);
    }
    assert_eq!(d.status_byte(STATUS), 0x77);
    assert!(!d.dev.is_broken());
    // The device still serves good requests.
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
}

#[test]
fn descriptor_loop_and_bad_links_are_detected() {
    let mut d = mem_driver(false);
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    // 0 -> 1 -> 0 -> ...
    d.write_desc(0, HDR, 16, R | VIRTQ_DESC_F_NEXT, 1);
    d.write_desc(1, DATA, 512, W | VIRTQ_DESC_F_NEXT, 0);
    d.publish(0);
    // next index outside the queue
    d.write_desc(2, HDR, 16, R | VIRTQ_DESC_F_NEXT, QSIZE);
    d.publish(2);
    // indirect descriptor (offered, but this driver did not accept it)
    d.write_desc(3, HDR, 16, VIRTQ_DESC_F_INDIRECT, 0);
    d.publish(3);
    d.wr(reg::QUEUE_NOTIFY, 0);
    assert_eq!(d.used_idx(), 3);
    assert_eq!(d.used(0), (0, 0));
    assert_eq!(d.used(1), (2, 0));
    assert_eq!(d.used(2), (3, 0));
    assert!(!d.dev.is_broken());
}

#[test]
fn avail_index_jump_marks_the_device_broken_until_reset() {
    let mut d = mem_driver(false);
    d.mem.write_obj(QSIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
    d.wr(reg::QUEUE_NOTIFY, 0);
    assert!(d.dev.is_broken());
    assert_ne!(d.rd(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    assert_eq!(d.dev.interrupt_status(), INT_CONFIG_CHANGE);
    assert_eq!(d.used_idx(), 0);
    // Further notifications do nothing; the driver cannot clear the bit by itself.
    d.wr(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(d.dev.is_broken());
    // Reset brings it back.
    d.wr(reg::STATUS, 0);
    assert_eq!(d.rd(reg::STATUS), 0);
    assert_eq!(d.rd(reg::QUEUE_READY), 0);
    d.mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
    d.avail_idx = 0;
    d.next_desc = 0;
    d.activate();
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
}

/// A guest that breaks its queue, resets the device and breaks it again, in a loop, used
/// to get one ERROR line per round (the guard was DEVICE_NEEDS_RESET, which the reset
/// clears). The device's warning budget now spans resets.
#[test]
fn a_break_and_reset_loop_cannot_flood_the_log() {
    let mut d = mem_driver(false);
    for round in 0..1000u32 {
        d.mem.write_obj(QSIZE + 1, GuestAddress(AVAIL + 2)).unwrap();
        d.wr(reg::QUEUE_NOTIFY, 0);
        assert!(d.dev.is_broken(), "round {round}");
        d.wr(reg::STATUS, 0);
        d.mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
        d.avail_idx = 0;
        d.next_desc = 0;
        d.activate();
    }
    assert_eq!(d.dev.guest_warnings_left(), 0);
    // The device still works after it all.
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
}

/// DRIVER_OK without FEATURES_OK (spec 3.1.1 skipped) serves no request.
#[test]
fn no_request_is_served_before_features_ok() {
    let mut d = Driver::new(Block::with_backend(
        MemDisk {
            bytes: pattern(),
            flushes: 0,
        },
        (SECTORS * 512) as u64,
        false,
        *b"cloister-test-disk-1",
    ));
    d.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    d.setup_queue(DESC, AVAIL, USED);
    d.wr(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
    );
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.used_idx(), 0);
}

/// A queue disabled and made ready again on new rings starts at their index 0, not at
/// the indices it had reached on the old ones.
#[test]
fn a_reenabled_queue_starts_from_its_new_rings() {
    let mut d = mem_driver(false);
    for sector in 0..3 {
        d.header(HDR, VIRTIO_BLK_T_IN, sector);
        d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    }
    assert_eq!(d.used_idx(), 3);
    // New rings 64 KiB further on, all zero: their indices start at 0.
    const SHIFT: u64 = 0x1_0000;
    d.wr(reg::QUEUE_SEL, 0);
    d.wr(reg::QUEUE_READY, 0);
    d.setup_queue(DESC + SHIFT, AVAIL + SHIFT, USED + SHIFT);
    let at = |base: u64| GuestAddress(base + SHIFT);
    let write_desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
        let a = at(DESC + 16 * u64::from(i));
        d.mem.write_obj(addr, a).unwrap();
        d.mem.write_obj(len, a.unchecked_add(8)).unwrap();
        d.mem.write_obj(flags, a.unchecked_add(12)).unwrap();
        d.mem.write_obj(next, a.unchecked_add(14)).unwrap();
    };
    d.header(HDR, VIRTIO_BLK_T_IN, 4);
    write_desc(0, HDR, 16, R | VIRTQ_DESC_F_NEXT, 1);
    write_desc(1, DATA, 512, W | VIRTQ_DESC_F_NEXT, 2);
    write_desc(2, STATUS, 1, W, 0);
    d.mem.write_obj(0u16, at(AVAIL + 4)).unwrap();
    d.mem.write_obj(1u16, at(AVAIL + 2)).unwrap();
    d.wr(reg::QUEUE_NOTIFY, 0);
    let used: u16 = d.mem.read_obj(at(USED + 2)).unwrap();
    assert_eq!(used, 1, "the request on the new rings was not served");
    assert_eq!(d.bytes(DATA, 512), pattern()[4 * 512..5 * 512]);
}

/// Without a negotiated FLUSH the disk is write-through: every write is flushed; with it,
/// only FLUSH requests flush.
#[test]
fn writes_are_write_through_without_negotiated_flush() {
    let mut d = Driver::new(Block::with_backend(
        MemDisk {
            bytes: pattern(),
            flushes: 0,
        },
        (SECTORS * 512) as u64,
        false,
        *b"cloister-test-disk-1",
    ));
    d.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    d.wr(reg::DRIVER_FEATURES_SEL, 1);
    d.wr(reg::DRIVER_FEATURES, 1); // VERSION_1 only: no FLUSH
    let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    d.wr(reg::STATUS, s);
    d.setup_queue(DESC, AVAIL, USED);
    d.wr(reg::STATUS, s | status::DRIVER_OK);
    d.header(HDR, VIRTIO_BLK_T_OUT, 1);
    d.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.dev.device().backend().flushes, 1);
    let mut d = mem_driver(false); // FLUSH negotiated
    d.header(HDR, VIRTIO_BLK_T_OUT, 1);
    d.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!(d.dev.device().backend().flushes, 0);
}

#[test]
fn head_index_out_of_range_marks_the_device_broken() {
    let mut d = mem_driver(false);
    d.publish(QSIZE + 3);
    d.wr(reg::QUEUE_NOTIFY, 0);
    assert!(d.dev.is_broken());
}

#[test]
fn rings_outside_memory_or_bad_size_are_refused_at_queue_ready() {
    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, 4096, false, [0; 20]));
    d.setup_queue(MEM_SIZE as u64 - 16, AVAIL, USED);
    assert!(d.dev.is_broken());
    assert_eq!(d.rd(reg::QUEUE_READY), 0);

    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, 4096, false, [0; 20]));
    d.wr(reg::QUEUE_NUM, 3); // not a power of two
    d.wr(reg::QUEUE_DESC_LOW, DESC as u32);
    d.wr(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
    d.wr(reg::QUEUE_DEVICE_LOW, USED as u32);
    d.wr(reg::QUEUE_READY, 1);
    assert!(d.dev.is_broken());

    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, 4096, false, [0; 20]));
    d.setup_queue(DESC + 8, AVAIL, USED); // misaligned descriptor table
    assert!(d.dev.is_broken());
}

#[test]
fn features_without_version_1_are_refused() {
    let disk = MemDisk {
        bytes: pattern(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, 4096, false, [0; 20]));
    d.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    d.wr(reg::DRIVER_FEATURES_SEL, 0);
    d.wr(reg::DRIVER_FEATURES, VIRTIO_BLK_F_FLUSH as u32);
    d.wr(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(d.rd(reg::STATUS) & status::FEATURES_OK, 0);
    // A feature the device does not offer (bit 34, VIRTIO_F_RING_PACKED) is refused too.
    d.wr(reg::DRIVER_FEATURES_SEL, 1);
    d.wr(reg::DRIVER_FEATURES, 1 | 4);
    d.wr(
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(d.rd(reg::STATUS) & status::FEATURES_OK, 0);
    // Without DRIVER_OK, notifications are ignored.
    d.setup_queue(DESC, AVAIL, USED);
    d.publish(0);
    d.wr(reg::QUEUE_NOTIFY, 0);
    assert_eq!(d.used_idx(), 0);
}

#[test]
fn access_platform_is_offered_always_and_can_be_negotiated() {
    assert_eq!(VIRTIO_F_ACCESS_PLATFORM, 1 << 33);
    for readonly in [false, true] {
        let disk = MemDisk {
            bytes: pattern(),
            flushes: 0,
        };
        let block = Block::with_backend(disk, (SECTORS * 512) as u64, readonly, [0; 20]);
        assert!(block.offers_access_platform());
        assert_eq!(OFFERS_ACCESS_PLATFORM, block.offers_access_platform());
        assert_ne!(block.device_features() & VIRTIO_F_ACCESS_PLATFORM, 0);
        let mut d = Driver::new(block);
        assert!(d.dev.offers_access_platform());
        d.wr(reg::DEVICE_FEATURES_SEL, 1);
        assert_ne!(d.rd(reg::DEVICE_FEATURES) & 2, 0, "bit 33 offered");

        // An SNP guest's driver accepts it with VERSION_1 (high word, bits 32 and 33).
        d.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        d.wr(reg::DRIVER_FEATURES_SEL, 1);
        d.wr(reg::DRIVER_FEATURES, 1 | 2);
        d.wr(reg::DRIVER_FEATURES_SEL, 0);
        d.wr(reg::DRIVER_FEATURES, VIRTIO_BLK_F_FLUSH as u32);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        d.wr(reg::STATUS, s);
        assert_eq!(d.rd(reg::STATUS), s, "FEATURES_OK accepted");
        assert_eq!(
            d.dev.device().acked_features(),
            VIRTIO_F_VERSION_1 | VIRTIO_F_ACCESS_PLATFORM | VIRTIO_BLK_F_FLUSH
        );
        d.setup_queue(DESC, AVAIL, USED);
        d.wr(reg::STATUS, s | status::DRIVER_OK);

        // Buffer addresses stay guest-physical: a read lands where the driver asked.
        d.header(HDR, VIRTIO_BLK_T_IN, 3);
        d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
        assert_eq!(d.bytes(DATA, 512), pattern()[3 * 512..4 * 512]);
    }
    // A driver that does not accept it (a guest without SNP) is served as before.
    let d = mem_driver(false);
    assert_eq!(
        d.dev.device().acked_features() & VIRTIO_F_ACCESS_PLATFORM,
        0
    );
    let live = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    assert_eq!(d.dev.device_status(), live);
}

#[test]
fn queue_registers_are_frozen_while_ready() {
    let mut d = mem_driver(false);
    d.wr(reg::QUEUE_DESC_LOW, 0xdead_0000);
    d.wr(reg::QUEUE_NUM, 2);
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    // Writes to unknown selectors are harmless.
    d.wr(reg::QUEUE_SEL, 7);
    assert_eq!(d.rd(reg::QUEUE_NUM_MAX), 0);
    d.wr(reg::QUEUE_READY, 1);
    d.wr(reg::QUEUE_NOTIFY, 7);
    assert!(!d.dev.is_broken());
}

#[test]
fn many_requests_wrap_the_rings() {
    let mut d = mem_driver(false);
    for i in 0..(3 * u32::from(QSIZE)) {
        let sector = u64::from(i % SECTORS as u32);
        d.header(HDR, VIRTIO_BLK_T_IN, sector);
        d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
        let s = sector as usize * 512;
        assert_eq!(d.bytes(DATA, 512), pattern()[s..s + 512]);
    }
    assert_eq!(d.used_idx(), 3 * QSIZE);
}

mod file_backed {
    use super::*;
    use std::io::Write;

    fn image(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn driver_for(cfg: &DiskConfig) -> Driver<std::fs::File> {
        let mut d = Driver::new(Block::open(cfg).unwrap());
        d.activate();
        d
    }

    #[test]
    fn writes_persist_in_the_file_and_reads_come_from_it() {
        let f = image(&pattern());
        let cfg = DiskConfig {
            path: f.path().to_path_buf(),
            readonly: false,
        };
        let mut d = driver_for(&cfg);
        d.mem.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
        d.header(HDR, VIRTIO_BLK_T_OUT, 3);
        d.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
        d.header(HDR, VIRTIO_BLK_T_FLUSH, 0);
        d.submit(&[(HDR, 16, R), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
        let on_disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&on_disk[3 * 512..4 * 512], &[0xa5; 512]);
        assert_eq!(&on_disk[..3 * 512], &pattern()[..3 * 512]);

        d.header(HDR, VIRTIO_BLK_T_IN, 2);
        d.submit(&[(HDR, 16, R), (DATA, 1024, W), (STATUS, 1, W)]);
        assert_eq!(d.bytes(DATA, 1024), on_disk[1024..2048]);
        // GET_ID answers with an id derived from the file.
        d.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
        d.submit(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
        assert_ne!(d.bytes(DATA, 20), vec![0; 20]);
    }

    #[test]
    fn read_only_file_is_never_written() {
        let f = image(&pattern());
        let cfg = DiskConfig {
            path: f.path().to_path_buf(),
            readonly: true,
        };
        let mut d = driver_for(&cfg);
        d.mem.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
        d.header(HDR, VIRTIO_BLK_T_OUT, 0);
        d.submit(&[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
        assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_IOERR);
        assert_eq!(std::fs::read(f.path()).unwrap(), pattern());
    }

    #[test]
    fn a_read_only_file_can_be_used_read_only() {
        let f = image(&pattern());
        let mut perms = std::fs::metadata(f.path()).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(f.path(), perms).unwrap();
        let ro = DiskConfig {
            path: f.path().to_path_buf(),
            readonly: true,
        };
        assert!(Block::open(&ro).is_ok());
    }

    #[test]
    fn odd_sizes_round_down_and_tiny_or_missing_files_are_refused() {
        let f = image(&[1u8; 1500]);
        let cfg = DiskConfig {
            path: f.path().to_path_buf(),
            readonly: false,
        };
        assert_eq!(Block::open(&cfg).unwrap().capacity(), 2);

        let tiny = image(&[1u8; 100]);
        let cfg = DiskConfig {
            path: tiny.path().to_path_buf(),
            readonly: false,
        };
        let err = Block::open(&cfg).err().unwrap();
        assert!(
            matches!(err, VirtioError::DiskTooSmall { size: 100, .. }),
            "{err}"
        );

        let cfg = DiskConfig {
            path: "/nonexistent/disk.img".into(),
            readonly: true,
        };
        let err = Block::open(&cfg).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/disk.img"), "{err}");
        assert!(matches!(
            err,
            VirtioError::OpenDisk {
                mode: "read-only",
                ..
            }
        ));

        let dir = tempfile::tempdir().unwrap();
        let cfg = DiskConfig {
            path: dir.path().to_path_buf(),
            readonly: true,
        };
        assert!(matches!(
            Block::open(&cfg),
            Err(VirtioError::NotAFile { .. })
        ));
    }

    #[test]
    fn new_block_device_signals_through_an_eventfd() {
        let f = image(&pattern());
        let cfg = DiskConfig {
            path: f.path().to_path_buf(),
            readonly: false,
        };
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let irq = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let dev = new_block_device(&cfg, mem.clone(), irq.clone()).unwrap();
        let mut dev = dev.lock().unwrap();
        let wr = |dev: &mut dyn BusDevice, off: u64, v: u32| dev.write(off, &v.to_le_bytes());
        for s in [1, 3] {
            wr(&mut *dev, reg::STATUS, s);
        }
        wr(&mut *dev, reg::DRIVER_FEATURES_SEL, 1);
        wr(&mut *dev, reg::DRIVER_FEATURES, 1);
        wr(&mut *dev, reg::STATUS, 11);
        wr(&mut *dev, reg::QUEUE_NUM, u32::from(QSIZE));
        wr(&mut *dev, reg::QUEUE_DESC_LOW, DESC as u32);
        wr(&mut *dev, reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        wr(&mut *dev, reg::QUEUE_DEVICE_LOW, USED as u32);
        wr(&mut *dev, reg::QUEUE_READY, 1);
        wr(&mut *dev, reg::STATUS, 15);
        // One GET_ID request, built by hand.
        mem.write_obj(VIRTIO_BLK_T_GET_ID, GuestAddress(HDR))
            .unwrap();
        let descs: [(u64, u32, u16, u16); 3] = [
            (HDR, 16, VIRTQ_DESC_F_NEXT, 1),
            (DATA, 20, W | VIRTQ_DESC_F_NEXT, 2),
            (STATUS, 1, W, 0),
        ];
        for (i, (addr, len, flags, next)) in descs.into_iter().enumerate() {
            let at = DESC + 16 * i as u64;
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        wr(&mut *dev, reg::QUEUE_NOTIFY, 0);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 1);
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
            VIRTIO_BLK_S_OK
        );
    }
}

#[test]
fn requests_larger_than_the_bounce_buffer_move_every_byte() {
    let size = 256 * 512; // 128 KiB
    let bytes: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
    let disk = MemDisk {
        bytes: bytes.clone(),
        flushes: 0,
    };
    let mut d = Driver::new(Block::with_backend(disk, size as u64, false, [0; 20]));
    d.activate();
    // 96 KiB read from sector 10 into one descriptor: two bounce-buffer rounds.
    let len = 96 * 1024;
    d.header(HDR, VIRTIO_BLK_T_IN, 10);
    d.submit(&[(HDR, 16, R), (0x2_0000, len, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.used(0).1, len + 1);
    assert_eq!(
        d.bytes(0x2_0000, len as usize),
        bytes[5120..5120 + len as usize]
    );
    // And back out at sector 0, then compare the image.
    d.header(HDR, VIRTIO_BLK_T_OUT, 0);
    d.submit(&[(HDR, 16, R), (0x2_0000, len, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    let image = &d.dev.device().backend().bytes;
    assert_eq!(image[..len as usize], bytes[5120..5120 + len as usize]);
    assert_eq!(image[len as usize..], bytes[len as usize..]);
}

#[test]
fn guest_error_log_stops_warning_after_its_budget() {
    let mut log = GuestErrorLog::default();
    for i in 0..GuestErrorLog::WARNINGS {
        assert_eq!(log.left, GuestErrorLog::WARNINGS - i);
        log.log(format_args!("guest error {i}"));
    }
    assert_eq!(log.left, 0);
    log.log(format_args!("one more"));
    assert_eq!(log.left, 0);
}

/// Where the tests put indirect tables.
const TABLE: u64 = BUF + 0x4000;

#[test]
fn indirect_requests_read_and_write_through_the_table() {
    let mut d = mem_driver_with(false, VIRTIO_F_RING_INDIRECT_DESC);
    assert_eq!(
        d.dev.device().acked_features() & VIRTIO_F_RING_INDIRECT_DESC,
        VIRTIO_F_RING_INDIRECT_DESC
    );
    // A read of sectors 2..5 into two buffers, the whole request in one indirect table.
    d.header(HDR, VIRTIO_BLK_T_IN, 2);
    let head = d.submit_indirect(
        TABLE,
        &[
            (HDR, 16, R),
            (DATA, 512, W),
            (DATA + 0x800, 1024, W),
            (STATUS, 1, W),
        ],
    );
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (u32::from(head), 1536 + 1));
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    let disk = pattern();
    assert_eq!(d.bytes(DATA, 512), disk[1024..1536]);
    assert_eq!(d.bytes(DATA + 0x800, 1024), disk[1536..2560]);
    assert_eq!(d.interrupts(), 1);

    // A write of sector 6 the same way reaches the disk.
    let payload: Vec<u8> = (0..512).map(|i| (i % 13) as u8).collect();
    d.mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    d.header(HDR, VIRTIO_BLK_T_OUT, 6);
    d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
    d.submit_indirect(TABLE, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.used(1).1, 1);
    let image = &d.dev.device().backend().bytes;
    assert_eq!(&image[6 * 512..7 * 512], &payload[..]);
    assert_eq!(&image[..6 * 512], &disk[..6 * 512]);
    // Direct and indirect requests mix on one queue.
    d.header(HDR, VIRTIO_BLK_T_GET_ID, 0);
    d.submit(&[(HDR, 16, R), (DATA, 20, W), (STATUS, 1, W)]);
    assert_eq!(d.bytes(DATA, 20), b"cloister-test-disk-1");
    assert_eq!(d.used_idx(), 3);
    assert!(!d.dev.is_broken());
}

#[test]
fn malformed_indirect_tables_fail_only_their_request() {
    let mut d = mem_driver_with(false, VIRTIO_F_RING_INDIRECT_DESC);
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    let end = MEM_SIZE as u64;
    let good = indirect_entries(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    let long: Vec<_> = (0..300u16)
        .map(|i| (DATA, 0, W | VIRTQ_DESC_F_NEXT, i + 1))
        .collect();
    let nested = [(TABLE + 0x1000, 48, VIRTQ_DESC_F_INDIRECT, 0)];
    let looping = [
        (HDR, 16, R | VIRTQ_DESC_F_NEXT, 1),
        (DATA, 512, W | VIRTQ_DESC_F_NEXT, 0),
    ];
    let outside = [
        (HDR, 16, R | VIRTQ_DESC_F_NEXT, 1),
        (DATA, 512, W | VIRTQ_DESC_F_NEXT, 7),
    ];
    let bad_buffer = indirect_entries(&[(HDR, 16, R), (end - 100, 512, W), (STATUS, 1, W)]);
    // (table contents, table address, length of the indirect descriptor, its flags)
    let cases: [(&[TableEntry], u64, u32, u16); 9] = [
        (&good, TABLE, 40, VIRTQ_DESC_F_INDIRECT), // not whole descriptors
        (&good, TABLE, 0, VIRTQ_DESC_F_INDIRECT),  // empty
        (&good, TABLE, 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT), // links on
        (&good, end - 16, 48, VIRTQ_DESC_F_INDIRECT), // table outside memory
        (&nested, TABLE, 16, VIRTQ_DESC_F_INDIRECT), // table in a table
        (&looping, TABLE, 32, VIRTQ_DESC_F_INDIRECT), // loop in the table
        (&outside, TABLE, 32, VIRTQ_DESC_F_INDIRECT), // link outside the table
        (&long, TABLE, 300 * 16, VIRTQ_DESC_F_INDIRECT), // more than 256 descriptors
        (&bad_buffer, TABLE, 48, VIRTQ_DESC_F_INDIRECT), // buffer outside memory
    ];
    d.indirect_table(TABLE + 0x1000, &good);
    for (n, &(entries, at, len, flags)) in cases.iter().enumerate() {
        if at + 16 * entries.len() as u64 <= end {
            d.indirect_table(at, entries);
        }
        d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
        d.mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
        let head = d.next_desc;
        d.write_desc(head, at, len, flags, (head + 1) % QSIZE);
        d.next_desc = (head + 1) % QSIZE;
        d.publish(head);
        d.wr(reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used(n as u16), (u32::from(head), 0), "case {n}");
        assert_eq!(d.status_byte(STATUS), 0x77, "case {n} wrote a status");
        assert_eq!(d.bytes(DATA, 512), vec![0u8; 512], "case {n} wrote data");
        assert!(!d.dev.is_broken(), "case {n} broke the device");
    }
    // The queue goes on: a good indirect request after them is served.
    d.submit_indirect(TABLE, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.bytes(DATA, 512), pattern()[..512]);
    assert_eq!(d.used_idx(), cases.len() as u16 + 1);
}

#[test]
fn indirect_table_is_refused_when_the_driver_did_not_accept_it() {
    let mut d = mem_driver(false);
    assert_eq!(
        d.dev.device().acked_features() & VIRTIO_F_RING_INDIRECT_DESC,
        0
    );
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
    // A well-formed request, but in a table the driver may not use.
    let head = d.submit_indirect(TABLE, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.used(0), (u32::from(head), 0));
    assert_eq!(d.status_byte(STATUS), 0x77);
    assert_eq!(d.bytes(DATA, 512), vec![0u8; 512]);
    assert!(!d.dev.is_broken());
}

/// Submits one read of sector 0 and returns how many interrupts it raised.
fn read_once(d: &mut Driver<MemDisk>) -> usize {
    let before = d.interrupts();
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.mem.write_obj(0x77u8, GuestAddress(STATUS)).unwrap();
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    assert_eq!(d.bytes(DATA, 512), pattern()[..512]);
    d.interrupts() - before
}

#[test]
fn event_idx_interrupts_only_when_used_event_is_passed() {
    let mut d = mem_driver_with(false, VIRTIO_F_RING_EVENT_IDX);
    // used_event 0: the driver wants to hear of the first used buffer only.
    d.set_used_event(0);
    assert_eq!(read_once(&mut d), 1);
    assert_eq!(d.dev.interrupt_status(), INT_USED_BUFFER);
    d.wr(reg::INTERRUPT_ACK, INT_USED_BUFFER);
    // The device asks to be notified of the next available entry.
    assert_eq!(d.avail_event(), 1);
    assert_eq!(read_once(&mut d), 0, "used_event 0 was passed already");
    assert_eq!(d.dev.interrupt_status(), 0);
    assert_eq!(d.used_idx(), 2);
    assert_eq!(d.avail_event(), 2);
    // used_event 3: no interrupt for used index 3, one when entry 3 is used (index 4).
    d.set_used_event(3);
    assert_eq!(read_once(&mut d), 0);
    assert_eq!(read_once(&mut d), 1);
    d.wr(reg::INTERRUPT_ACK, INT_USED_BUFFER);
    // Three chains behind one notification: one interrupt when used_event is among them,
    // none when it lies beyond.
    for (used_event, interrupts) in [(5, 1), (100, 0)] {
        d.set_used_event(used_event);
        let before = d.interrupts();
        d.header(HDR, VIRTIO_BLK_T_IN, 1);
        for _ in 0..3 {
            d.write_desc(d.next_desc, HDR, 16, R | VIRTQ_DESC_F_NEXT, d.next_desc + 1);
            d.write_desc(d.next_desc + 1, STATUS, 1, W, 0);
            let head = d.next_desc;
            d.next_desc = (d.next_desc + 2) % QSIZE;
            d.publish(head);
        }
        d.wr(reg::QUEUE_NOTIFY, 0);
        assert_eq!(
            d.interrupts() - before,
            interrupts,
            "used_event {used_event}"
        );
        assert_eq!(d.avail_event(), d.avail_idx);
    }
    assert_eq!(d.used_idx(), 10);
    assert!(!d.dev.is_broken());
}

#[test]
fn without_event_idx_every_notification_with_used_buffers_interrupts() {
    let mut d = mem_driver(false);
    // used_event means nothing unless EVENT_IDX was negotiated.
    d.set_used_event(100);
    for n in 1..=3 {
        assert_eq!(read_once(&mut d), 1, "request {n}");
        // VRING_USED_F_NO_NOTIFY is off again once the device is idle, and avail_event is
        // not the device's to write.
        assert_eq!(d.used_flags(), 0);
        assert_eq!(d.avail_event(), 0);
    }
    // A notification with nothing available raises nothing.
    d.wr(reg::QUEUE_NOTIFY, 0);
    assert_eq!(d.interrupts(), 3);
}

#[test]
fn a_reset_forgets_event_idx() {
    let mut d = mem_driver_with(false, VIRTIO_F_RING_EVENT_IDX);
    d.set_used_event(100);
    assert_eq!(read_once(&mut d), 0);
    d.wr(reg::STATUS, 0);
    d.mem.write_obj(0u16, GuestAddress(AVAIL + 2)).unwrap();
    d.mem.write_obj(0u16, GuestAddress(USED + 2)).unwrap();
    d.avail_idx = 0;
    d.next_desc = 0;
    d.activate();
    assert_eq!(read_once(&mut d), 1);
}

#[test]
fn the_driver_cannot_clear_status_bits_without_a_reset() {
    let mut d = mem_driver(false);
    let live = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
    assert_eq!(d.rd(reg::STATUS), live);
    // DEVICE_NEEDS_RESET alone (the device's bit, dropped from a driver's write) would
    // read as 0 without being a reset; ACKNOWLEDGE | DRIVER clears FEATURES_OK and
    // DRIVER_OK. Both are ignored: the status and the accepted features stay.
    d.wr(reg::STATUS, status::DEVICE_NEEDS_RESET);
    assert_eq!(d.rd(reg::STATUS), live);
    d.wr(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    assert_eq!(d.rd(reg::STATUS), live);
    // Requests are still served, from where the queue was.
    d.header(HDR, VIRTIO_BLK_T_IN, 0);
    d.submit(&[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.status_byte(STATUS), VIRTIO_BLK_S_OK);
    // A write of 0 still resets.
    d.wr(reg::STATUS, 0);
    assert_eq!(d.rd(reg::STATUS), 0);
}
