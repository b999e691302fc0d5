//! Table checks: checksums, pointers, MADT entries, the DSDT parsed back, the MADT and the
//! MP table compared, and ACPICA's disassembly of the tables after the RSDP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::fadt::tests::{
    DSDT_OFFSET, FLAGS_OFFSET, IAPC_BOOT_ARCH_OFFSET, MINOR_VERSION_OFFSET, SLEEP_CONTROL_OFFSET,
    SLEEP_STATUS_OFFSET, X_DSDT_OFFSET,
};
use super::*;
use crate::boot::layout::{EBDA_START, PCI_MMIO_SIZE, PCI_MMIO_START, PIT_GSI};
use crate::boot::mptable::mptable_bytes;
use vm_memory::GuestMemoryMmap;

fn cfg(vcpus: u8, slots: usize) -> AcpiConfig {
    AcpiConfig {
        vcpus,
        virtio_mmio: (0..slots)
            .map(|i| MmioSlot {
                base: 0xd000_0000 + 0x1000 * i as u64,
                len: 0x1000,
                gsi: 5 + i as u32,
            })
            .collect(),
        sleep_control_port: 0x3c0,
        pci: false,
    }
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

/// Reads the table at `addr` from guest memory, checking signature, length and checksum.
fn table(mem: &GuestMemoryMmap, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
    let header = read(mem, addr, 36);
    assert_eq!(&header[..4], sig);
    let t = read(mem, addr, u32_at(&header, 4) as usize);
    assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
    assert_eq!(&t[10..16], b"CLSTER");
    t
}

/// Follows RSDP -> XSDT -> FADT/MADT -> DSDT in guest memory.
fn walk(mem: &GuestMemoryMmap, rsdp_addr: GuestAddress) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let rsdp = read(mem, rsdp_addr.0, 36);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP v1 checksum");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2);
    assert_eq!(u32_at(&rsdp, 20), 36);
    let xsdt = table(mem, u64_at(&rsdp, 24), b"XSDT");
    assert_eq!(xsdt.len(), 36 + 16);
    let fadt = table(mem, u64_at(&xsdt, 36), b"FACP");
    let madt = table(mem, u64_at(&xsdt, 44), b"APIC");
    let x_dsdt = u64_at(&fadt, X_DSDT_OFFSET);
    assert_eq!(u64::from(u32_at(&fadt, DSDT_OFFSET)), x_dsdt);
    let dsdt = table(mem, x_dsdt, b"DSDT");
    (fadt, madt, dsdt)
}

#[test]
fn tables_are_linked_checksummed_and_inside_the_reserved_area() {
    let mem = mem();
    let rsdp = write_tables(&mem, &cfg(2, 2)).unwrap();
    assert_eq!(rsdp, GuestAddress(0xe_0000));
    walk(&mem, rsdp);
    let placed = build_tables(&cfg(2, 2)).unwrap().placed;
    assert_eq!(placed[0].1.len(), 36, "RSDP, ACPI 2.0 form");
    for (addr, bytes) in placed {
        assert!(addr.0 >= ACPI_START && addr.0 + bytes.len() as u64 <= HIMEM_START);
        assert_eq!(addr.0 % 16, 0);
        if addr.0 != ACPI_START {
            assert_eq!(u32_at(&bytes, 4) as usize, bytes.len(), "header length");
        }
    }
}

#[test]
fn fadt_is_hardware_reduced_with_sleep_registers_on_io_ports() {
    let mem = mem();
    let rsdp = write_tables(&mem, &cfg(1, 0)).unwrap();
    let (fadt, _, _) = walk(&mem, rsdp);
    assert_eq!(fadt.len(), 276);
    assert_eq!(fadt[8], 6, "FADT revision");
    assert_eq!(fadt[MINOR_VERSION_OFFSET], 5, "FADT minor revision");
    assert_ne!(
        u32_at(&fadt, FLAGS_OFFSET) & (1 << 20),
        0,
        "HW_REDUCED_ACPI"
    );
    let boot_arch = u16::from_le_bytes(
        fadt[IAPC_BOOT_ARCH_OFFSET..IAPC_BOOT_ARCH_OFFSET + 2]
            .try_into()
            .unwrap(),
    );
    assert_ne!(
        boot_arch & (1 << 5),
        0,
        "IAPC_BOOT_ARCH: CMOS RTC Not Present"
    );
    let ctl = &fadt[SLEEP_CONTROL_OFFSET..SLEEP_CONTROL_OFFSET + 12];
    let sts = &fadt[SLEEP_STATUS_OFFSET..SLEEP_STATUS_OFFSET + 12];
    // System I/O, 8 bits wide, offset 0, byte access, port.
    assert_eq!(ctl[..4], [1, 8, 0, 1]);
    assert_eq!(u64_at(ctl, 4), 0x3c0);
    assert_eq!(sts[..4], [1, 8, 0, 1]);
    assert_eq!(u64_at(sts, 4), 0x3c1);
}

/// The MADT entries as (type, bytes).
fn madt_entries(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 44;
    while at < madt.len() {
        let (kind, len) = (madt[at], madt[at + 1] as usize);
        assert!(len >= 2 && at + len <= madt.len(), "entry at {at} overruns");
        out.push((kind, madt[at..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn madt_has_one_enabled_local_apic_per_vcpu_and_the_ioapic() {
    for vcpus in [1u8, 2, 7, 254] {
        let mem = mem();
        let rsdp = write_tables(&mem, &cfg(vcpus, 1)).unwrap();
        let (_, madt, _) = walk(&mem, rsdp);
        assert_eq!(madt[8], 5, "MADT revision");
        assert_eq!(u32_at(&madt, 36), 0xfee0_0000);
        assert_eq!(u32_at(&madt, 40), 1, "PCAT_COMPAT");
        let entries = madt_entries(&madt);
        let lapics: Vec<_> = entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_LOCAL_APIC)
            .collect();
        assert_eq!(lapics.len(), usize::from(vcpus));
        for (i, (_, e)) in lapics.iter().enumerate() {
            assert_eq!(e.len(), 8);
            assert_eq!((e[2], e[3]), (i as u8, i as u8), "UID and APIC ID");
            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
        }
        let ioapics: Vec<_> = entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_IO_APIC)
            .collect();
        assert_eq!(ioapics.len(), 1);
        let io = &ioapics[0].1;
        assert_eq!(io.len(), 12);
        assert_eq!(
            (io[2], u32_at(io, 4), u32_at(io, 8)),
            (vcpus, 0xfec0_0000, 0),
            "I/O APIC ID after the vCPUs', address, GSI base"
        );
        let iso: Vec<_> = entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_INTERRUPT_OVERRIDE)
            .collect();
        assert_eq!(iso.len(), 1);
        assert_eq!(
            iso[0].1,
            [2, 10, 0, 0, 2, 0, 0, 0, 0, 0],
            "ISA IRQ 0 -> GSI 2, conforming"
        );
        let nmi: Vec<_> = entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_LOCAL_APIC_NMI)
            .collect();
        assert_eq!(nmi.len(), 1);
        assert_eq!(nmi[0].1, [4, 6, 0xff, 0, 0, 1], "LINT1 of all processors");
        assert_eq!(entries.len(), usize::from(vcpus) + 3, "nothing else");
    }
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let mut c = cfg(0, 1);
    assert_eq!(build_tables(&c).err(), Some(AcpiError::NoVcpus));
    c.vcpus = 255;
    assert_eq!(build_tables(&c).err(), Some(AcpiError::TooManyVcpus(255)));
    c.vcpus = MAX_CPUS;
    assert!(build_tables(&c).is_ok());
    c = cfg(1, 1);
    c.virtio_mmio[0].base = 0xffff_f800;
    assert!(matches!(
        build_tables(&c),
        Err(AcpiError::WindowNotBelow4G { .. })
    ));
    c.virtio_mmio[0].base = u64::MAX;
    assert!(matches!(
        build_tables(&c),
        Err(AcpiError::WindowNotBelow4G { .. })
    ));
    c = cfg(1, 1);
    c.virtio_mmio[0].len = 0;
    assert!(matches!(
        build_tables(&c),
        Err(AcpiError::WindowNotBelow4G { .. })
    ));
    c = cfg(1, 1);
    c.virtio_mmio[0].gsi = 24;
    assert_eq!(build_tables(&c).err(), Some(AcpiError::GsiOutOfRange(24)));
    c = cfg(1, 1);
    c.sleep_control_port = u16::MAX;
    assert_eq!(
        build_tables(&c).err(),
        Some(AcpiError::BadSleepPort(u16::MAX))
    );
    assert_eq!(
        build_tables(&cfg(1, 257)).err(),
        Some(AcpiError::TooManyDevices(257))
    );
    // 256 devices fit (names VR00..VRFF) and the area still holds them.
    assert!(build_tables(&cfg(254, 19)).is_ok());
    // Guest memory that does not reach 0xe0000.
    let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x8_0000)]).unwrap();
    assert!(matches!(
        write_tables(&small, &cfg(1, 1)),
        Err(AcpiError::GuestMemory { .. })
    ));
}

// ---- known encodings -------------------------------------------------------------

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The byte sequences ASL compiles the DSDT's objects to (checked against iasl), found
/// in the DSDT the crate encodes: they pin down the arguments the objects are built with.
#[test]
fn dsdt_objects_have_the_encodings_iasl_gives_them() {
    let tables = build_tables(&cfg(1, 2)).unwrap();
    let dsdt = &tables.placed[1].1;
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(dsdt[8], 2, "DSDT revision 2: 64-bit integers");
    for (what, bytes) in [
        // Name(\_S5, Package(){5,0,0,0}): PkgLength 7 = itself + count + 0x0a 0x05 + three Zero.
        ("\\_S5", &b"\x08\\_S5_\x12\x07\x04\x0a\x05\x00\x00\x00"[..]),
        // Name(_HID, EisaId("PNP0501")): DWord 0x0105D041.
        (
            "COM1 _HID",
            &[0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01],
        ),
        ("COM1 _UID 1", b"\x08_UID\x01"),
        // IO(Decode16, 0x3f8, 0x3f8, 1, 8), IRQNoFlags(){4}, End Tag.
        (
            "COM1 _CRS",
            &[
                0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00,
            ],
        ),
        ("virtio _HID", b"\x08_HID\x0dLNRO0005\x00"),
        ("VR01 _UID 1", b"\x08_UID\x01\x08_CRS"),
        // Memory32Fixed(ReadWrite, 0xd0000000, 0x1000),
        // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}, End Tag.
        (
            "VR00 _CRS",
            &[
                0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00, 0x89, 0x06,
                0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00, 0x79, 0x00,
            ],
        ),
    ] {
        assert!(contains(dsdt, bytes), "{what}: {bytes:02x?} missing");
    }
    // Scope(\_SB) right after the header; COM1 and two devices need a two-byte PkgLength.
    assert_eq!(dsdt[36], 0x10, "ScopeOp");
    assert_eq!(dsdt[37] >> 6, 1, "two-byte PkgLength");
    let scope_len = usize::from(dsdt[37] & 0xf) | usize::from(dsdt[38]) << 4;
    assert_eq!(
        37 + scope_len + 14,
        dsdt.len(),
        "\\_SB, then Name(\\_S5, ...)"
    );
}

// ---- a minimal AML reader for the subset the DSDT uses --------------------------

#[derive(Debug, Clone, PartialEq)]
enum Obj {
    Int(u64),
    Str(String),
    Buffer(Vec<u8>),
    Package(Vec<Obj>),
}

#[derive(Debug, Default)]
struct Ns {
    /// (path, value) of every Name, with the device path prefixed.
    names: Vec<(String, Obj)>,
    devices: Vec<String>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let v = self.b[self.at];
        self.at += 1;
        v
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    /// Returns the end offset of the package that starts here.
    fn pkg_end(&mut self) -> usize {
        let start = self.at;
        let b0 = self.byte();
        let extra = (b0 >> 6) as usize;
        let mut len = if extra == 0 {
            (b0 & 0x3f) as usize
        } else {
            (b0 & 0x0f) as usize
        };
        for i in 0..extra {
            len |= (self.byte() as usize) << (4 + 8 * i);
        }
        start + len
    }
    fn name_string(&mut self) -> String {
        let mut s = String::new();
        if self.b[self.at] == b'\\' {
            s.push('\\');
            self.at += 1;
        }
        s.push_str(std::str::from_utf8(self.take(4)).unwrap());
        s
    }
    fn object(&mut self) -> Obj {
        match self.byte() {
            0x00 => Obj::Int(0),
            0x01 => Obj::Int(1),
            0x0a => Obj::Int(u64::from(self.byte())),
            0x0b => Obj::Int(u64::from(u16::from_le_bytes(
                self.take(2).try_into().unwrap(),
            ))),
            0x0c => Obj::Int(u64::from(u32::from_le_bytes(
                self.take(4).try_into().unwrap(),
            ))),
            0x0e => Obj::Int(u64::from_le_bytes(self.take(8).try_into().unwrap())),
            0x0d => {
                let end = self.b[self.at..].iter().position(|&c| c == 0).unwrap();
                let s = std::str::from_utf8(self.take(end)).unwrap().to_string();
                self.byte();
                Obj::Str(s)
            }
            0x11 => {
                let end = self.pkg_end();
                let Obj::Int(size) = self.object() else {
                    panic!("buffer size")
                };
                let data = self.take(end - self.at).to_vec();
                assert_eq!(data.len() as u64, size);
                Obj::Buffer(data)
            }
            0x12 => {
                let end = self.pkg_end();
                let count = self.byte();
                let mut items = Vec::new();
                while self.at < end {
                    items.push(self.object());
                }
                assert_eq!(items.len(), count as usize);
                Obj::Package(items)
            }
            op => panic!("unexpected data object opcode {op:#x} at {}", self.at - 1),
        }
    }
    fn terms(&mut self, end: usize, prefix: &str, ns: &mut Ns) {
        while self.at < end {
            match self.byte() {
                0x08 => {
                    let name = self.name_string();
                    let value = self.object();
                    ns.names.push((format!("{prefix}{name}"), value));
                }
                0x10 => {
                    let end = self.pkg_end();
                    let name = self.name_string();
                    self.terms(end, &format!("{prefix}{name}."), ns);
                }
                0x5b => {
                    assert_eq!(
                        self.byte(),
                        0x82,
                        "only Device is expected after ExtOpPrefix"
                    );
                    let end = self.pkg_end();
                    let name = self.name_string();
                    let path = format!("{prefix}{name}");
                    ns.devices.push(path.clone());
                    self.terms(end, &format!("{path}."), ns);
                }
                op => panic!("unexpected term opcode {op:#x}"),
            }
        }
        assert_eq!(self.at, end, "term list overran its package");
    }
}

fn parse_dsdt(dsdt: &[u8]) -> Ns {
    let mut ns = Ns::default();
    let mut r = Reader { b: dsdt, at: 36 };
    r.terms(dsdt.len(), "", &mut ns);
    ns
}

fn lookup<'a>(ns: &'a Ns, path: &str) -> &'a Obj {
    &ns.names
        .iter()
        .find(|(p, _)| p == path)
        .unwrap_or_else(|| panic!("{path} missing: {ns:?}"))
        .1
}

/// Resource descriptors of a _CRS buffer as (tag, body).
fn resources(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let tag = buf[at];
        if tag & 0x80 != 0 {
            let len = u16::from_le_bytes([buf[at + 1], buf[at + 2]]) as usize;
            out.push((tag, buf[at + 3..at + 3 + len].to_vec()));
            at += 3 + len;
        } else {
            let len = (tag & 7) as usize;
            let kind = tag >> 3;
            if kind == 0x0f {
                assert_eq!(at + 2, buf.len(), "end tag is last");
                return out;
            }
            out.push((kind, buf[at + 1..at + 1 + len].to_vec()));
            at += 1 + len;
        }
    }
}

/// With PCI, `\_SB.PCI0` is a PNP0A03 root bridge of bus 0 whose _CRS gives bus 0, the
/// configuration ports and the layout's PCI window; without, there is none.
#[test]
fn dsdt_describes_the_pci_root_bridge_only_with_pci() {
    let mem = mem();
    let c = AcpiConfig {
        pci: true,
        ..cfg(1, 1)
    };
    let rsdp = write_tables(&mem, &c).unwrap();
    let (_, _, dsdt) = walk(&mem, rsdp);
    let ns = parse_dsdt(&dsdt);
    assert_eq!(ns.devices, ["\\_SB_.COM1", "\\_SB_.VR00", "\\_SB_.PCI0"]);
    assert_eq!(lookup(&ns, "\\_SB_.PCI0._HID"), &Obj::Int(0x030a_d041));
    for name in ["_UID", "_SEG", "_BBN"] {
        assert_eq!(lookup(&ns, &format!("\\_SB_.PCI0.{name}")), &Obj::Int(0));
    }
    let Obj::Buffer(crs) = lookup(&ns, "\\_SB_.PCI0._CRS") else {
        panic!("_CRS is not a buffer")
    };
    let res = resources(crs);
    assert_eq!(res.len(), 3);
    let (tag, bus) = &res[0];
    assert_eq!(
        (*tag, bus[0]),
        (0x88, 2),
        "word address space, bus number type"
    );
    assert_eq!(&bus[5..9], &[0, 0, 0, 0], "bus 0 to 0");
    let (kind, io) = &res[1];
    assert_eq!(*kind, 0x08, "IO");
    assert_eq!(&io[1..5], &[0xf8, 0x0c, 0xf8, 0x0c]);
    assert_eq!(io[6], 8);
    let (tag, window) = &res[2];
    assert_eq!((*tag, window[0]), (0x87, 0), "dword address space, memory");
    assert_eq!(u64::from(u32_at(window, 7)), PCI_MMIO_START);
    assert_eq!(
        u64::from(u32_at(window, 11)),
        PCI_MMIO_START + PCI_MMIO_SIZE - 1
    );
    assert_eq!(u64::from(u32_at(window, 19)), PCI_MMIO_SIZE);

    let without = build_tables(&cfg(1, 1)).unwrap();
    let ns = parse_dsdt(&without.placed[1].1);
    assert!(!ns.devices.iter().any(|d| d.contains("PCI0")));
}

#[test]
fn dsdt_describes_every_virtio_slot_com1_and_s5() {
    let mem = mem();
    let c = cfg(2, 3);
    let rsdp = write_tables(&mem, &c).unwrap();
    let (_, _, dsdt) = walk(&mem, rsdp);
    let ns = parse_dsdt(&dsdt);
    assert_eq!(
        ns.devices,
        ["\\_SB_.COM1", "\\_SB_.VR00", "\\_SB_.VR01", "\\_SB_.VR02"]
    );
    assert_eq!(
        lookup(&ns, "\\_S5_"),
        &Obj::Package(vec![Obj::Int(5), Obj::Int(0), Obj::Int(0), Obj::Int(0)])
    );
    assert_eq!(lookup(&ns, "\\_SB_.COM1._HID"), &Obj::Int(0x0105_d041));
    for (i, slot) in c.virtio_mmio.iter().enumerate() {
        let dev = format!("\\_SB_.VR{i:02X}");
        assert_eq!(
            lookup(&ns, &format!("{dev}._HID")),
            &Obj::Str("LNRO0005".into())
        );
        assert_eq!(lookup(&ns, &format!("{dev}._UID")), &Obj::Int(i as u64));
        let Obj::Buffer(crs) = lookup(&ns, &format!("{dev}._CRS")) else {
            panic!("_CRS is not a buffer")
        };
        let res = resources(crs);
        assert_eq!(res.len(), 2);
        let (tag, mem32) = &res[0];
        assert_eq!(*tag, 0x86);
        assert_eq!(mem32[0] & 1, 1, "read-write");
        assert_eq!(u64::from(u32_at(mem32, 1)), slot.base);
        assert_eq!(u64::from(u32_at(mem32, 5)), slot.len);
        let (tag, irq) = &res[1];
        assert_eq!(*tag, 0x89);
        assert_eq!(irq[0], 0b0011, "consumer, edge, active high, exclusive");
        assert_eq!(irq[1], 1);
        assert_eq!(u32_at(irq, 2), slot.gsi);
    }
    let Obj::Buffer(crs) = lookup(&ns, "\\_SB_.COM1._CRS") else {
        panic!()
    };
    let res = resources(crs);
    assert_eq!(
        res[0],
        (0x08, vec![1, 0xf8, 3, 0xf8, 3, 1, 8]),
        "IO 0x3f8, 8 ports"
    );
    assert_eq!(res[1], (0x04, vec![0x10, 0]), "IRQ 4");
}

#[test]
fn dsdt_with_many_devices_uses_long_package_lengths() {
    // 100 devices (about 64 bytes each) push the \_SB scope past 4 KiB: three-byte
    // PkgLength.
    let c = cfg(1, 19);
    let mut many = c.clone();
    many.virtio_mmio = (0..100)
        .map(|i| MmioSlot {
            base: 0xd000_0000 + 0x1000 * i,
            len: 0x1000,
            gsi: 5 + (i as u32 % 19),
        })
        .collect();
    let tables = build_tables(&many).unwrap();
    let dsdt = &tables.placed[1].1;
    assert_eq!(&dsdt[..4], b"DSDT");
    assert_eq!(dsdt[36], 0x10, "ScopeOp");
    assert_eq!(dsdt[37] >> 6, 2, "three-byte PkgLength");
    let scope_len =
        usize::from(dsdt[37] & 0xf) | usize::from(dsdt[38]) << 4 | usize::from(dsdt[39]) << 12;
    assert!(scope_len > 4096);
    assert_eq!(
        37 + scope_len + 14,
        dsdt.len(),
        "\\_SB, then Name(\\_S5, ...)"
    );
    let ns = parse_dsdt(dsdt);
    assert_eq!(ns.devices.len(), 101);
    assert_eq!(ns.devices[100], "\\_SB_.VR63");
}

/// Cross-check with ACPICA's disassembler (Debian package acpica-tools, installed by
/// scripts/install-deps.sh): every table must disassemble without errors or warnings
/// and show what was meant.
#[test]
fn acpica_disassembles_the_tables_cleanly() {
    let text = disassemble(&cfg(2, 2));
    check_disassembly(&text);
}

/// With PCI: the root bridge and its window disassemble cleanly, and MSI is allowed.
#[test]
fn acpica_disassembles_the_pci_root_bridge() {
    let text = disassemble(&AcpiConfig {
        pci: true,
        ..cfg(1, 0)
    });
    for expected in [
        "Device (PCI0)",
        "Name (_HID, EisaId (\"PNP0A03\") /* PCI Bus */)",
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,\n                    0x0000,             // Granularity\n                    0x0000,             // Range Minimum\n                    0x0000,",
        "IO (Decode16,\n                    0x0CF8,             // Range Minimum\n                    0x0CF8,             // Range Maximum\n                    0x01,               // Alignment\n                    0x08,",
        "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,\n                    0x00000000,         // Granularity\n                    0xC0000000,         // Range Minimum\n                    0xCFFFFFFF,",
        "Boot Flags (decoded below) : 0034",
        "MSI Not Supported (V4) : 0",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}

/// The tables of `c` as ACPICA's disassembler prints them, all tables in one text;
/// fails on any error or warning.
fn disassemble(c: &AcpiConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    let tables = build_tables(c).unwrap();
    let mut files = Vec::new();
    for (_, bytes) in &tables.placed[1..] {
        let sig = String::from_utf8_lossy(&bytes[..4]).to_string();
        let path = dir.path().join(format!("{sig}.dat"));
        std::fs::write(&path, bytes).unwrap();
        files.push((sig, path));
    }
    let mut text = String::new();
    for (sig, path) in &files {
        let out = std::process::Command::new("iasl")
            .arg("-d")
            .arg(path)
            .current_dir(dir.path())
            .output()
            .expect(
                "iasl (Debian package acpica-tools) must be installed: scripts/install-deps.sh",
            );
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {sig} failed:\n{log}");
        assert!(
            !log.contains("Error") && !log.contains("Warning"),
            "iasl -d {sig}:\n{log}"
        );
        text += &std::fs::read_to_string(path.with_extension("dsl")).unwrap();
    }
    text
}

fn check_disassembly(text: &str) {
    for expected in [
        "Device (VR00)",
        "Device (VR01)",
        "Name (_HID, \"LNRO0005\")",
        "Memory32Fixed (ReadWrite,\n                    0xD0001000,",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000006,",
        "EisaId (\"PNP0501\")",
        "Name (\\_S5, Package (0x04)",
        "Hardware Reduced (V5) : 1",
        "Boot Flags (decoded below) : 003C",
        "8042 Present on ports 60/64 (V2) : 0",
        "VGA Not Present (V4) : 1",
        "CMOS RTC Not Present (V5) : 1",
        "Processor ID : 01",
        "Local Apic ID : 01",
        "PC-AT Compatibility : 1",
        "I/O Apic ID : 02",
        "Address : FEC00000",
        "Subtable Type : 02 [Interrupt Source Override]",
        "Interrupt : 00000002",
        "Subtable Type : 04 [Local APIC NMI]",
        "Interrupt Input LINT : 01",
        "Space ID : 01 [SystemIO]",
        "Address : 00000000000003C0",
        "Address : 00000000000003C1",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}

/// The MP table's entries as (type, bytes), walked by its length as Linux does.
fn mp_entries(mp: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(&mp[..4], b"_MP_");
    let table = &mp[16..];
    assert_eq!(&table[..4], b"PCMP");
    let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
    let mut out = Vec::new();
    let mut at = 44;
    while at < len {
        let size = if table[at] == 0 { 20 } else { 8 };
        out.push((table[at], table[at..at + size].to_vec()));
        at += size;
    }
    assert_eq!(at, len);
    out
}

/// A guest that reads the MP table and one that reads the MADT must find the same
/// interrupt controllers: the I/O APIC's ID and address, the local APICs, and where the
/// PIT's IRQ 0 arrives.
#[test]
fn madt_and_mp_table_agree_on_the_io_apic_id_and_the_interrupt_controllers() {
    for vcpus in [1u8, 2, 7, MAX_CPUS] {
        let tables = build_tables(&cfg(vcpus, 1)).unwrap();
        let madt = tables
            .placed
            .iter()
            .map(|(_, t)| t)
            .find(|t| t.starts_with(b"APIC"))
            .unwrap();
        let madt_entries = madt_entries(madt);
        let madt_ioapics: Vec<(u8, u32)> = madt_entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_IO_APIC)
            .map(|(_, e)| (e[2], u32_at(e, 4)))
            .collect();
        let madt_lapics: Vec<u8> = madt_entries
            .iter()
            .filter(|(k, _)| *k == madt::TYPE_LOCAL_APIC)
            .map(|(_, e)| e[3])
            .collect();
        let madt_pit_gsi = madt_entries
            .iter()
            .find(|(k, e)| *k == madt::TYPE_INTERRUPT_OVERRIDE && e[3] == 0)
            .map(|(_, e)| u32_at(e, 4));

        let mp = mptable_bytes(vcpus, EBDA_START).unwrap();
        assert_eq!(u32_at(&mp, 16 + 36), u32_at(madt, 36), "local APIC address");
        let mp_entries = mp_entries(&mp);
        let mp_ioapics: Vec<(u8, u32)> = mp_entries
            .iter()
            .filter(|(k, _)| *k == 2)
            .map(|(_, e)| (e[1], u32_at(e, 4)))
            .collect();
        let mp_lapics: Vec<u8> = mp_entries
            .iter()
            .filter(|(k, _)| *k == 0)
            .map(|(_, e)| e[1])
            .collect();
        // The I/O interrupt entry for ISA IRQ 0 that is not the 8259 cascade (ExtINT).
        let mp_pit_pin = mp_entries
            .iter()
            .find(|(k, e)| *k == 3 && e[1] == 0 && e[5] == 0)
            .map(|(_, e)| u32::from(e[7]));

        assert_eq!(madt_ioapics.len(), 1);
        assert_eq!(
            madt_ioapics, mp_ioapics,
            "{vcpus} vCPUs: I/O APIC ID and address"
        );
        assert_eq!(madt_ioapics[0].0, vcpus, "the ID after the vCPUs'");
        assert!(
            !madt_lapics.contains(&madt_ioapics[0].0),
            "unique among the APICs"
        );
        assert_eq!(madt_lapics, mp_lapics, "{vcpus} vCPUs: local APIC IDs");
        assert_eq!(madt_pit_gsi, Some(PIT_GSI));
        assert_eq!(mp_pit_pin, Some(PIT_GSI));
    }
}
