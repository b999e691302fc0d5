//! The legacy port-I/O devices on the port bus, as the builder wires them for
//! `run --debug-exit`: the 16550 serial console (COM1), the debug-exit port, the i8042
//! controller, the ACPI sleep control register and the CMOS RTC (`cloister_vmm::devices::*`).
//!
//! Input: `[clock: u64][operation]...` (at most 256 operations), an operation being
//! `[kind][port select][port low][width][value: u32]`: a read or a write of width 1, 2 or
//! 4 (or an odd 3 or 8) at a device's port (`port select` < 200: a device and an offset
//! near its range) or at any port, or host input queued to the serial console. The RTC
//! reads the clock from the input. Seeds: what Linux does at boot: the 8250 probe and
//! console output, the i8042 probe and CPU reset, RTC reads in BCD and binary mode, the
//! debug-exit write and the ACPI S5 power-off.
//!
//! Asserted: no panic; a port no device claims reads as all-ones; the console's output
//! grows only by one byte per one-byte write at COM1's data port (bounded by the guest's
//! writes, whatever the UART mode), and queued input never exceeds what was offered; the
//! i8042 status always has its system flag; the RTC's time registers hold a valid time in
//! the mode register B selects (BCD or binary, 12 or 24 hours); the exit status the
//! devices request is exactly the one the writes call for (debug-exit byte, i8042 reset
//! command or output-port reset line, ACPI S5), the first one winning.
#![no_main]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use cloister_vmm::boot::layout::{
    ACPI_S5_SLEEP_TYPE, ACPI_SLEEP_CONTROL_PORT, CMOS_RTC_PORT, CMOS_RTC_PORT_COUNT, COM1_PORT,
    COM1_PORT_COUNT, DEBUG_EXIT_PORT, I8042_PORT,
};
use cloister_vmm::devices::bus::Bus;
use cloister_vmm::devices::exit::ExitHandle;
use cloister_vmm::devices::legacy::{AcpiSleepControl, DebugExit, I8042};
use cloister_vmm::devices::rtc::CmosRtc;
use cloister_vmm::devices::serial::SerialConsole;
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The ports of each device (base, count), as the builder inserts them.
const DEVICES: [(u64, u64); 5] = [
    (COM1_PORT, COM1_PORT_COUNT),
    (DEBUG_EXIT_PORT, 1),
    (I8042_PORT, 5),
    (ACPI_SLEEP_CONTROL_PORT, 2),
    (CMOS_RTC_PORT, CMOS_RTC_PORT_COUNT),
];
const WIDTHS: [usize; 8] = [1, 1, 2, 2, 4, 4, 3, 8];

/// The RTC's clock: the input sets it.
static CLOCK: AtomicU64 = AtomicU64::new(0);

fn clock() -> u64 {
    CLOCK.load(Ordering::Relaxed)
}

/// The console's output, shared with the test.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the writes so far call for, modelled from the devices' documentation.
#[derive(Default)]
struct ExitModel {
    code: Option<u8>,
    i8042_pending: Option<u8>,
}

impl ExitModel {
    fn request(&mut self, code: u8) {
        self.code.get_or_insert(code);
    }

    fn write(&mut self, port: u64, data: &[u8]) {
        let [value] = data else { return };
        match port {
            p if p == DEBUG_EXIT_PORT => self.request(*value),
            p if p == I8042_PORT + 4 => match value {
                0x60 | 0xd1 => self.i8042_pending = Some(*value),
                0xfe => self.request(0),
                _ => {}
            },
            p if p == I8042_PORT && self.i8042_pending.take() == Some(0xd1) && value & 1 == 0 => {
                self.request(0);
            }
            p if p == ACPI_SLEEP_CONTROL_PORT
                && value & 0x20 != 0
                && (value >> 2) & 7 == ACPI_S5_SLEEP_TYPE =>
            {
                self.request(0);
            }
            _ => {}
        }
    }
}

fn bcd_ok(v: u8) -> bool {
    v >> 4 <= 9 && v & 15 <= 9
}

/// Checks a time register read through the data port with `index` selected.
fn check_rtc(index: u8, value: u8, register_b: u8) {
    let binary = register_b & 4 != 0;
    let decode = |v: u8| {
        if binary {
            Some(v)
        } else {
            bcd_ok(v).then(|| (v >> 4) * 10 + (v & 15))
        }
    };
    let in_range = |v: u8, lo: u8, hi: u8| decode(v).is_some_and(|d| (lo..=hi).contains(&d));
    let ok = match index {
        0x00 | 0x02 => in_range(value, 0, 59),
        0x04 if register_b & 2 != 0 => in_range(value, 0, 23),
        0x04 => in_range(value & 0x7f, 1, 12),
        0x06 => in_range(value, 1, 7),
        0x07 => in_range(value, 1, 31),
        0x08 => in_range(value, 1, 12),
        0x09 | 0x32 => in_range(value, 0, 99),
        _ => true,
    };
    assert!(
        ok,
        "RTC register {index:#04x} reads {value:#04x} (register B {register_b:#04x})"
    );
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    CLOCK.store(r.u64(), Ordering::Relaxed);
    let (Ok(exit), Ok(irq)) = (ExitHandle::new(), EventFd::new(EFD_NONBLOCK)) else {
        return;
    };
    let output = Output::default();
    let serial = Arc::new(Mutex::new(SerialConsole::new(irq, output.clone())));
    let mut bus = Bus::new();
    let inserted = [
        bus.insert(serial.clone(), COM1_PORT, COM1_PORT_COUNT),
        bus.insert(Arc::new(Mutex::new(DebugExit::new(exit.clone()))), DEBUG_EXIT_PORT, 1),
        bus.insert(Arc::new(Mutex::new(I8042::new(exit.clone()))), I8042_PORT, 5),
        bus.insert(Arc::new(Mutex::new(AcpiSleepControl::new(exit.clone()))), ACPI_SLEEP_CONTROL_PORT, 2),
        bus.insert(Arc::new(Mutex::new(CmosRtc::with_clock(clock))), CMOS_RTC_PORT, CMOS_RTC_PORT_COUNT),
    ];
    assert!(inserted.iter().all(Result::is_ok), "the builder's port map is disjoint");

    let mut model = ExitModel::default();
    let mut data_writes = 0usize;
    let mut rtc_index = 0u8;
    let mut register_b = 0x02u8;
    for _ in 0..256 {
        if r.is_empty() {
            break;
        }
        let (kind, select, low, width) = (r.u8(), r.u8(), r.u8(), r.u8());
        let value = r.u32();
        let port = if select < 200 {
            let (base, count) = DEVICES[usize::from(select) % DEVICES.len()];
            base + u64::from(low) % (count + 2)
        } else {
            u64::from(u16::from_le_bytes([low, select]))
        };
        let width = WIDTHS[usize::from(width) % WIDTHS.len()];
        let bytes: Vec<u8> = value.to_le_bytes().iter().copied().cycle().take(width).collect();
        match kind % 4 {
            0 | 3 => {
                let mut buf = vec![0u8; width];
                let claimed = bus.read(port, &mut buf);
                let owner = DEVICES.iter().find(|(b, c)| port >= *b && port + width as u64 <= b + c);
                assert_eq!(claimed, owner.is_some(), "port {port:#x} width {width}");
                if !claimed {
                    assert!(buf.iter().all(|&b| b == 0xff), "an unclaimed read is all-ones");
                }
                if port == I8042_PORT + 4 && width == 1 {
                    assert_ne!(buf[0] & 4, 0, "the i8042 system flag");
                }
                if port == CMOS_RTC_PORT + 1 && width == 1 {
                    check_rtc(rtc_index, buf[0], register_b);
                }
            }
            1 => {
                let claimed = bus.write(port, &bytes);
                model.write(port, &bytes);
                if port == COM1_PORT && width == 1 {
                    data_writes += 1;
                }
                // Track the RTC's index and register B as the guest sets them (a wider
                // access covers consecutive ports).
                let rtc = CMOS_RTC_PORT..CMOS_RTC_PORT + CMOS_RTC_PORT_COUNT;
                if claimed && rtc.contains(&port) {
                    for (i, &b) in bytes.iter().enumerate() {
                        match port + i as u64 {
                            p if p == CMOS_RTC_PORT => rtc_index = b & 0x7f,
                            p if p == CMOS_RTC_PORT + 1 && rtc_index == 0x0b => register_b = b,
                            _ => {}
                        }
                    }
                }
            }
            _ => {
                let input = r.blob();
                let taken = serial.lock().unwrap_or_else(|p| p.into_inner()).enqueue_input(input);
                assert!(taken <= input.len());
            }
        }
        let out = output.0.lock().unwrap_or_else(|p| p.into_inner()).len();
        assert!(out <= data_writes, "{out} bytes of output from {data_writes} data writes");
        assert_eq!(exit.requested(), model.code, "the exit status the writes call for");
    }
});

fn op(w: &mut Writer, write: bool, port: u64, width: u8, value: u32) {
    let (base_index, base) = DEVICES
        .iter()
        .enumerate()
        .find(|(_, (b, c))| port >= *b && port < b + c)
        .map(|(i, (b, _))| (i as u8, *b))
        .unwrap_or((0, COM1_PORT));
    let width_index = WIDTHS
        .iter()
        .position(|&x| x == usize::from(width))
        .unwrap_or(0) as u8;
    w.u8(u8::from(write))
        .u8(base_index)
        .u8((port - base) as u8)
        .u8(width_index)
        .u32(value);
}

fn seeds(out: &mut Seeds) {
    const LEAP_DAY: u64 = 1_709_211_909;
    let com = COM1_PORT;
    // Linux's 8250 probe (scratch, LCR, divisor latch, FIFO, MCR loopback) and output.
    let mut w = Writer::new();
    w.u64(LEAP_DAY);
    for (write, off, value) in [
        (true, 7, 0x55),
        (false, 7, 0),
        (true, 3, 0x80),
        (true, 0, 1),
        (true, 1, 0),
        (true, 3, 3),
        (true, 2, 0xc7),
        (false, 2, 0),
        (true, 4, 0x1b),
        (false, 6, 0),
        (true, 4, 0x0b),
        (true, 1, 0x0f),
        (false, 5, 0),
        (true, 0, u32::from(b'L')),
        (true, 0, u32::from(b'\n')),
        (false, 0, 0),
        (false, 5, 0),
    ] {
        op(&mut w, write, com + off, 1, value);
    }
    w.u8(2).u8(0).u8(0).u8(0).u32(0).blob(b"root\n");
    op(&mut w, false, com, 1, 0);
    out.add("serial-8250-probe", &w.finish());
    // The i8042 probe: read CTR, self test, test ports, then the CPU reset.
    let mut w = Writer::new();
    w.u64(LEAP_DAY);
    for (write, port, value) in [
        (true, 0x64, 0x20),
        (false, 0x64, 0),
        (false, 0x60, 0),
        (true, 0x64, 0x60),
        (true, 0x60, 0x47),
        (true, 0x64, 0xaa),
        (false, 0x60, 0),
        (true, 0x64, 0xab),
        (false, 0x60, 0),
        (true, 0x64, 0xd0),
        (false, 0x60, 0),
        (true, 0x64, 0xfe),
    ] {
        op(&mut w, write, port, 1, value);
    }
    out.add("i8042-probe-reset", &w.finish());
    // The output-port reset line.
    let mut w = Writer::new();
    w.u64(0);
    op(&mut w, true, 0x64, 1, 0xd1);
    op(&mut w, true, 0x60, 1, 0xfe);
    out.add("i8042-output-port-reset", &w.finish());
    // RTC: every time register in BCD 24-hour, then binary 12-hour, at a leap day and at
    // the far end of the clock.
    for (name, t) in [("leap-day", LEAP_DAY), ("far-future", u64::MAX)] {
        let mut w = Writer::new();
        w.u64(t);
        for b in [0x02u32, 0x04] {
            op(&mut w, true, CMOS_RTC_PORT, 1, 0x0b);
            op(&mut w, true, CMOS_RTC_PORT + 1, 1, b);
            for index in [
                0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0a, 0x0c, 0x0d,
            ] {
                op(&mut w, true, CMOS_RTC_PORT, 1, index);
                op(&mut w, false, CMOS_RTC_PORT + 1, 1, 0);
            }
        }
        out.add(&format!("rtc-{name}"), &w.finish());
    }
    // Exits: the test guest's debug-exit write (then an S5 that must not win), and S5.
    let mut w = Writer::new();
    w.u64(0);
    op(&mut w, true, DEBUG_EXIT_PORT, 1, 42);
    op(&mut w, true, ACPI_SLEEP_CONTROL_PORT, 1, 0x34);
    out.add("debug-exit-then-s5", &w.finish());
    let mut w = Writer::new();
    w.u64(0);
    op(&mut w, true, ACPI_SLEEP_CONTROL_PORT + 1, 1, 0xff);
    op(&mut w, true, ACPI_SLEEP_CONTROL_PORT, 2, 0x3434);
    op(&mut w, true, ACPI_SLEEP_CONTROL_PORT, 1, 0x34);
    out.add("acpi-s5", &w.finish());
}
