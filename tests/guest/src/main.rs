//! The Cloister test guest: a tiny kernel booted through the Linux boot protocol (ELF or
//! bzImage, 64-bit entry) or PVH, which reports what it was handed on COM1 and ends the VM
//! with an exit code. Every line it prints starts with `CLOISTER-GUEST: `; a failed check
//! prints a line starting with `CLOISTER-GUEST: FAIL` and the guest then exits with
//! [`FAILURE_EXIT_CODE`]. See `cmdline.rs` for the parameters.
//!
//! Built by `vmm/build.rs` with cargo for the host target (no_std, no_main, static,
//! linked at 1 MiB by `guest.ld`); every guest instruction is emulated on the project's
//! build machine, so the work here is kept small. The pure parts (parsing, checks, the
//! guest-message protocol) are the library in `lib.rs`; this is the kernel around them.

#![no_std]
#![no_main]

mod attestation;
mod bootinfo;
mod entry;
mod ghcb_io;
mod idt;
mod io;
mod mem;
mod pci_io;
mod serial;
mod virtio_blk;
mod virtio_mmio;
mod virtio_pci_io;

use bootinfo::BootInfo;
use cloister_test_guest::{cmdline, e820, sha256, tables, virtio_pci};
use cmdline::{Fault, MmioDevice, TestParams};
use e820::E820Error;
use tables::{CpuCount, PhysMem};
use virtio_blk::{BlkStatus, Transport, VirtioBlk, CHUNK, SECTOR};
use virtio_mmio::VirtioMmio;
use virtio_pci_io::VirtioPci;

/// Exit code when any check failed (chosen to differ from codes tests ask for).
const FAILURE_EXIT_CODE: u8 = 99;
/// The isa-debug-exit style port: a byte written here ends the VM with that status.
const EXIT_PORT: u16 = 0xf4;
/// ACPI sleep control register (hardware-reduced ACPI) of the VMM.
const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// SLP_TYP = 5 (S5, soft off) << 2 | SLP_EN.
const SLEEP_S5: u8 = (5 << 2) | (1 << 5);
/// Largest disk read in full.
const MAX_DISK_BYTES: u64 = 16 << 20;

/// Starts a line with the guest's prefix.
fn begin() {
    serial::write(b"CLOISTER-GUEST: ");
}

/// Prints one whole line.
fn line(text: &[u8]) {
    begin();
    serial::write(text);
    serial::write(b"\n");
}

/// Counts failed checks and prints them.
struct Report {
    failures: u32,
}

impl Report {
    /// Starts a FAIL line; the caller completes it and ends it with `\n`.
    fn fail(&mut self) {
        self.failures += 1;
        begin();
        serial::write(b"FAIL ");
    }
}

/// Identity-mapped physical memory below 4 GiB.
struct Identity;

impl PhysMem for Identity {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        if addr == 0 || end > 1 << 32 {
            return false;
        }
        // SAFETY: the first 4 GiB are identity-mapped and `addr` is not null; the tables
        // read are firmware data no Rust object aliases.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

/// The Rust entry, called by entry.rs with the loader's structure, how it came in, and
/// the C-bit the loader's page tables carried (0: none; entry.rs keeps it in its own).
#[no_mangle]
extern "C" fn guest_main(info: u64, kind: u64, c_bit: u64) -> ! {
    // How to reach the hypervisor is settled before the first port access: an SNP guest
    // (C-bit) must use the GHCB from its first `out` on.
    let boot = BootInfo::read(info, kind);
    let cc_blob = match (&boot, c_bit) {
        (_, c) if c != 0 => true,
        (Ok(boot), _) => boot.zero_page.is_some_and(|zero_page| {
            matches!(
                cloister_test_guest::cc_blob::find(&Identity, zero_page, &boot.e820[..boot.e820_len]),
                Ok(Some(_))
            )
        }),
        (Err(_), _) => false,
    };
    ghcb_io::select(c_bit, cc_blob);
    serial::init();
    idt::install();
    begin();
    serial::write(b"boot (");
    serial::write(match kind {
        entry::KIND_LINUX64 => b"linux 64-bit entry".as_slice(),
        entry::KIND_LINUX32 => b"linux 32-bit entry",
        _ => b"pvh entry",
    });
    serial::write(b")\n");
    match ghcb_io::mode() {
        ghcb_io::Mode::Direct if ghcb_io::sim_unanswered() => line(
            b"GHCB: a CC blob but no answer to the simulated VMGEXIT: plain port I/O, no guest requests",
        ),
        ghcb_io::Mode::Direct => {}
        ghcb_io::Mode::SimGhcb => line(
            b"GHCB: simulated SNP platform (VMGEXIT by doorbell; memory not encrypted, no page-state changes)",
        ),
        ghcb_io::Mode::Snp => line(b"GHCB: SEV-SNP guest (C-bit 51), GHCB registered, I/O through VMGEXIT"),
    }

    let mut report = Report { failures: 0 };
    let boot = match boot {
        Ok(boot) => boot,
        Err(why) => {
            report.fail();
            serial::write(why.as_bytes());
            serial::write(b"\n");
            finish(&report, None);
        }
    };

    begin();
    serial::write(b"cmdline: ");
    serial::write(boot.cmdline);
    serial::write(b"\n");
    let (params, bad) = TestParams::parse(boot.cmdline);
    if let Some(bad) = bad {
        report.fail();
        serial::write(b"cannot parse command-line parameter: ");
        serial::write(bad.word);
        serial::write(b"\n");
    }
    if boot.initrd.1 != 0 {
        begin();
        serial::write(b"initrd at ");
        serial::write_hex(boot.initrd.0);
        serial::write(b" size ");
        serial::write_dec(boot.initrd.1);
        serial::write(b"\n");
    }

    check_e820(&boot, &params, &mut report);
    check_cpus(&boot, &params, &mut report);
    if params.string_io {
        check_string_io(&mut report);
    }
    attestation::run(&boot, &params, &mut report);
    for (index, device) in params.devices.iter().flatten().enumerate() {
        check_mmio_disk(device, index == 0, &params, &mut report);
    }
    let mmio_disks = params.devices.iter().flatten().count();
    check_pci_disks(mmio_disks == 0, &params, &mut report);
    match params.fault {
        Some(Fault::InvalidOpcode) => {
            line(b"raising #UD as asked");
            // SAFETY: `ud2` raises #UD, which the IDT reports; nothing returns.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        Some(Fault::PageFault) => {
            line(b"raising #PF as asked");
            // SAFETY: the address is outside the 4 GiB identity map, so the read faults
            // and the IDT reports it; nothing returns.
            unsafe { core::ptr::read_volatile(0x40_0000_0000 as *const u8) };
        }
        None => {}
    }
    finish(&report, params.exit);
}

fn check_e820(boot: &BootInfo, params: &TestParams, report: &mut Report) {
    let mut sorted;
    let map = if boot.pvh {
        // A PVH memory map comes from firmware (QEMU's qboot hands over an unsorted map
        // with an empty entry) and the PVH ABI does not promise order, so it is put in
        // order first. The Linux zero page map comes from the VMM and is checked as is.
        line(b"e820 map from PVH firmware: sorted by the guest before checking");
        sorted = boot.e820;
        e820::normalize(&mut sorted[..boot.e820_len])
    } else {
        &boot.e820[..boot.e820_len]
    };
    for entry in map {
        begin();
        serial::write(b"e820 ");
        serial::write_hex(entry.addr);
        serial::write(b" size ");
        serial::write_hex(entry.size);
        serial::write(b" type ");
        serial::write_dec(u64::from(entry.kind));
        serial::write(b"\n");
    }
    if boot.e820_truncated {
        report.fail();
        serial::write(b"e820: more entries than the guest keeps\n");
    }
    match e820::check(map, params.mem) {
        Ok(summary) => {
            begin();
            serial::write(b"E820 OK entries=");
            serial::write_dec(summary.entries as u64);
            serial::write(b" ram=");
            serial::write_dec(summary.ram);
            serial::write(b" top=");
            serial::write_hex(summary.ram_top);
            if let Some(mem) = params.mem {
                serial::write(b" expected=");
                serial::write_dec(mem);
            }
            serial::write(b"\n");
        }
        Err(error) => {
            report.fail();
            serial::write(b"e820: ");
            match error {
                E820Error::Empty => serial::write(b"the memory map is empty"),
                E820Error::BadEntry { index } => {
                    serial::write(b"entry ");
                    serial::write_dec(index as u64);
                    serial::write(b" is empty or wraps around");
                }
                E820Error::NotSorted { index } => {
                    serial::write(b"entry ");
                    serial::write_dec(index as u64);
                    serial::write(b" is out of order");
                }
                E820Error::Overlap { index } => {
                    serial::write(b"entry ");
                    serial::write_dec(index as u64);
                    serial::write(b" overlaps the previous one");
                }
                E820Error::NoRam => serial::write(b"no RAM entry"),
                E820Error::RamSize { expected, found } => {
                    serial::write(b"RAM is ");
                    serial::write_dec(found);
                    serial::write(b" bytes, expected ");
                    serial::write_dec(expected);
                }
            }
            serial::write(b"\n");
        }
    }
}

fn check_cpus(boot: &BootInfo, params: &TestParams, report: &mut Report) {
    let mut any = false;
    for (name, count) in [
        (b"MPTABLE".as_slice(), tables::mp_table_cpus(&Identity)),
        (b"MADT", tables::madt_cpus(&Identity, boot.rsdp)),
    ] {
        match count {
            CpuCount::Found(n) => {
                any = true;
                begin();
                serial::write(b"CPUS ");
                serial::write(name);
                serial::write(b" ");
                serial::write_dec(u64::from(n));
                serial::write(b"\n");
                if let Some(expected) = params.cpus {
                    if n != expected {
                        report.fail();
                        serial::write(name);
                        serial::write(b" lists ");
                        serial::write_dec(u64::from(n));
                        serial::write(b" CPUs, expected ");
                        serial::write_dec(u64::from(expected));
                        serial::write(b"\n");
                    }
                }
            }
            CpuCount::Missing => {
                begin();
                serial::write(b"CPUS ");
                serial::write(name);
                serial::write(b" none\n");
            }
            CpuCount::Invalid(why) => {
                report.fail();
                serial::write(name);
                serial::write(b": ");
                serial::write(why.as_bytes());
                serial::write(b"\n");
            }
        }
    }
    if !any && params.cpus.is_some() {
        report.fail();
        serial::write(b"no MP table and no MADT to count CPUs in\n");
    }
}

/// One `rep outsb` of a whole line to COM1 and one `rep insb` of eight LSR reads: the
/// VMM must hand each element to the device as its own access.
fn check_string_io(report: &mut Report) {
    if ghcb_io::mode() == ghcb_io::Mode::Snp {
        line(b"STRING IO skipped: an SEV-SNP guest has no string I/O without a #VC handler");
        return;
    }
    io::outsb(0x3f8, b"CLOISTER-GUEST: STRING IO out ok\r\n");
    let mut lsr = [0u8; 8];
    io::insb(0x3fd, &mut lsr);
    // Every read is the line status register: transmitter empty (bit 5) and never the
    // all-ones of an unclaimed wide access.
    if lsr.iter().all(|&b| b != 0xff && b & 0x20 != 0) {
        line(b"STRING IO in ok");
    } else {
        report.fail();
        serial::write(b"STRING IO in: LSR reads ");
        serial::write_hex_bytes(&lsr);
        serial::write(b"\n");
    }
}

/// Where a disk was found, for its lines.
#[derive(Clone, Copy)]
enum DiskAt {
    /// A virtio-mmio window at this base.
    Mmio(u64),
    /// A virtio-pci function.
    Pci(pci_io::Function),
}

impl DiskAt {
    /// Writes `0x<base>` or `PCI 00:dd.0`.
    fn print(self) {
        match self {
            DiskAt::Mmio(base) => serial::write_hex(base),
            DiskAt::Pci(function) => {
                serial::write(b"PCI ");
                function.print();
            }
        }
    }

    /// Starts a FAIL line about the device: `virtio-mmio device at 0x..: ` or
    /// `virtio-pci device 00:dd.0: `.
    fn fail(self, report: &mut Report) {
        report.fail();
        match self {
            DiskAt::Mmio(base) => {
                serial::write(b"virtio-mmio device at ");
                serial::write_hex(base);
            }
            DiskAt::Pci(function) => {
                serial::write(b"virtio-pci device ");
                function.print();
            }
        }
        serial::write(b": ");
    }
}

/// Checks the virtio-mmio disk at `device` (see [`check_disk`]).
fn check_mmio_disk(device: &MmioDevice, first: bool, params: &TestParams, report: &mut Report) {
    let at = DiskAt::Mmio(device.base);
    match VirtioMmio::probe(device.base) {
        Ok(transport) => check_disk(transport, at, first, params, report),
        Err(error) => {
            at.fail(report);
            error.print();
            serial::write(b"\n");
        }
    }
}

/// Checks every modern virtio-blk function on PCI bus 0 (see [`check_disk`]); `first`:
/// the first of them is the first disk. Prints nothing on a machine without PCI.
fn check_pci_disks(mut first: bool, params: &TestParams, report: &mut Report) {
    pci_io::scan(|function, vendor, device| {
        if (vendor, device) != (virtio_pci::VENDOR_ID, virtio_pci::DEVICE_ID_BLOCK) {
            return;
        }
        let at = DiskAt::Pci(function);
        match VirtioPci::probe(function) {
            Ok(transport) => check_disk(transport, at, first, params, report),
            Err(error) => {
                at.fail(report);
                virtio_pci_io::print_probe_error(&error);
                serial::write(b"\n");
            }
        }
        first = false;
    });
}

/// Brings up the disk behind `transport`, hashes it and, for the first disk, does the
/// write test.
fn check_disk<T: Transport>(
    transport: T,
    at: DiskAt,
    first: bool,
    params: &TestParams,
    report: &mut Report,
) {
    let mut disk = match VirtioBlk::init(transport) {
        Ok(disk) => disk,
        Err(error) => {
            at.fail(report);
            error.print();
            serial::write(b"\n");
            return;
        }
    };
    begin();
    serial::write(b"DISK at ");
    at.print();
    serial::write(b" capacity ");
    serial::write_dec(disk.capacity);
    serial::write(b" sectors");
    serial::write(if disk.read_only { b" ro" } else { b" rw" });
    serial::write(if disk.flush {
        b" flush\n"
    } else {
        b" noflush\n"
    });

    hash_disk(&mut disk, report);
    if let (true, Some((sector, text))) = (first, params.write) {
        write_disk(&mut disk, sector, text, report);
    }
    if let Err(error) = disk.reset() {
        at.fail(report);
        error.print();
        serial::write(b"\n");
    }
}

/// Prints `what failed: status` for a request that did not succeed.
fn request_failed(report: &mut Report, what: &[u8], sector: u64, status: BlkStatus) {
    report.fail();
    serial::write(what);
    serial::write(b" sector ");
    serial::write_dec(sector);
    serial::write(b": ");
    write_status(status);
    serial::write(b"\n");
}

fn write_status(status: BlkStatus) {
    match status {
        BlkStatus::Ok => serial::write(b"OK"),
        BlkStatus::IoErr => serial::write(b"IOERR"),
        BlkStatus::Unsupp => serial::write(b"UNSUPP"),
        BlkStatus::Other(v) => {
            serial::write(b"status ");
            serial::write_dec(u64::from(v));
        }
        BlkStatus::Timeout => serial::write(b"no completion (timeout)"),
    }
}

fn hash_disk<T: Transport>(disk: &mut VirtioBlk<T>, report: &mut Report) {
    let bytes = disk.capacity.saturating_mul(SECTOR as u64);
    if bytes > MAX_DISK_BYTES {
        line(b"DISK SHA256 skipped: disk larger than 16 MiB");
        return;
    }
    let mut hash = sha256::Sha256::new();
    let mut buf = [0u8; CHUNK];
    let mut sector = 0;
    while sector < disk.capacity {
        let sectors = (disk.capacity - sector).min((CHUNK / SECTOR) as u64);
        let chunk = &mut buf[..sectors as usize * SECTOR];
        let status = disk.read(sector, chunk);
        if status != BlkStatus::Ok {
            request_failed(report, b"DISK read", sector, status);
            return;
        }
        hash.update(chunk);
        sector += sectors;
    }
    begin();
    serial::write(b"DISK SHA256 ");
    serial::write_hex_bytes(&hash.finish());
    serial::write(b"\n");
}

/// Fills `sector` with `text` repeated, flushes, reads it back. On a read-only disk, or
/// beyond the disk's end, the write is still sent, as a probe that the device refuses it
/// (IOERR); a read-only disk's sector must be unchanged afterwards.
fn write_disk<T: Transport>(
    disk: &mut VirtioBlk<T>,
    sector: u64,
    text: &[u8],
    report: &mut Report,
) {
    let beyond_end = sector >= disk.capacity;
    let mut before = [0u8; SECTOR];
    if !beyond_end {
        let status = disk.read(sector, &mut before);
        if status != BlkStatus::Ok {
            request_failed(report, b"DISK read", sector, status);
            return;
        }
    }
    let mut pattern = [0u8; SECTOR];
    for (b, t) in pattern.iter_mut().zip(text.iter().cycle()) {
        *b = *t;
    }
    let status = disk.write(sector, &pattern);
    begin();
    serial::write(b"DISK WRITE sector ");
    serial::write_dec(sector);
    serial::write(b" ");
    write_status(status);
    serial::write(b"\n");
    if beyond_end {
        if status == BlkStatus::IoErr {
            line(b"DISK WRITE beyond the end refused by the disk, as it must be");
        } else {
            report.fail();
            serial::write(b"DISK WRITE beyond the disk's end (capacity ");
            serial::write_dec(disk.capacity);
            serial::write(b" sectors) was not refused with IOERR\n");
        }
        return;
    }
    let expected = match (status, disk.read_only) {
        (BlkStatus::Ok, false) => &pattern,
        (BlkStatus::IoErr, true) => {
            line(b"DISK WRITE refused by the read-only disk, as it must be");
            &before
        }
        (BlkStatus::Ok, true) => {
            report.fail();
            serial::write(b"DISK WRITE accepted by a read-only disk\n");
            &pattern
        }
        (status, _) => {
            request_failed(report, b"DISK write", sector, status);
            return;
        }
    };
    if disk.flush {
        let status = disk.flush();
        if status == BlkStatus::Ok {
            line(b"DISK FLUSH OK");
        } else {
            request_failed(report, b"DISK flush", sector, status);
        }
    }
    let mut after = [0u8; SECTOR];
    let status = disk.read(sector, &mut after);
    if status != BlkStatus::Ok {
        request_failed(report, b"DISK read back", sector, status);
    } else if &after == expected {
        line(b"DISK READBACK OK");
    } else {
        report.fail();
        serial::write(b"DISK READBACK differs from what the disk should hold\n");
    }
}

/// Prints the verdict and ends the VM: exit code `exit`, or power-off; any failure turns
/// into [`FAILURE_EXIT_CODE`].
fn finish(report: &Report, exit: Option<u8>) -> ! {
    let exit = if report.failures > 0 {
        begin();
        serial::write(b"FAILED ");
        serial::write_dec(u64::from(report.failures));
        serial::write(b" check(s)\n");
        Some(FAILURE_EXIT_CODE)
    } else {
        line(b"PASS");
        exit
    };
    match exit {
        Some(code) => {
            begin();
            serial::write(b"exit ");
            serial::write_dec(u64::from(code));
            serial::write(b"\n");
            io::outb(EXIT_PORT, code);
            if code == 0 {
                line(b"no debug-exit port: power off instead");
                io::outb(SLEEP_CONTROL_PORT, SLEEP_S5);
            } else {
                line(b"no debug-exit port: ending with a triple fault instead");
                io::triple_fault();
            }
        }
        None => {
            line(b"power off");
            io::outb(SLEEP_CONTROL_PORT, SLEEP_S5);
        }
    }
    line(b"FAIL the VMM did not stop the VM; ending with a triple fault");
    io::triple_fault()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    begin();
    serial::write(b"FAIL panic");
    if let Some(location) = info.location() {
        serial::write(b" at ");
        serial::write(location.file().as_bytes());
        serial::write(b":");
        serial::write_dec(u64::from(location.line()));
    }
    serial::write(b"\n");
    io::outb(EXIT_PORT, FAILURE_EXIT_CODE);
    io::triple_fault()
}

/// The precompiled `core` refers to this symbol from its unwind tables; with
/// `panic=abort` nothing ever unwinds, so it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
