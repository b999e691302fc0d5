//! A minimal MC146818 CMOS real-time clock at I/O ports 0x70 (index) and 0x71 (data),
//! for guests that boot without ACPI and expect a PC wall clock there. (An ACPI guest is
//! told by the FADT that there is no CMOS RTC and takes its wall clock from kvmclock.)
//!
//! - Index register (0x70, write-only; reads as 0xff): bits 0..=6 select one of 128
//!   registers. Bit 7 is the NMI mask on a PC; there is no NMI source here, so it is
//!   ignored.
//! - Time and date (0x00 seconds, 0x02 minutes, 0x04 hours, 0x06 day of week, 0x07 day
//!   of month, 0x08 month, 0x09 year of the century) and the century (0x32, the IBM PC AT
//!   convention) follow the host's UTC clock, read at every access, in BCD unless
//!   register B selects binary, in 24-hour mode unless register B selects 12-hour mode
//!   (then bit 7 of the hours is PM). Guest writes to them are ignored: the host clock is
//!   the time.
//! - Register A (0x0a): the divider and rate bits read back as written; UIP (bit 7, update
//!   in progress) always reads 0, so a guest waiting for it to clear never waits.
//! - Register B (0x0b): reads back as written (24-hour BCD at reset). No interrupt is
//!   wired, so its interrupt-enable bits have no effect.
//! - Register C (0x0c): the interrupt flags; none is ever raised, it reads 0.
//! - Register D (0x0d): VRT (bit 7) set, the clock's battery-backed contents are valid.
//! - Every other index, the alarm registers among them, is plain NVRAM: 128 bytes,
//!   zeroed at start.
//!
//! A guest can do nothing here but read and write these 128 bytes: nothing is logged,
//! nothing is allocated, no access fails.

use std::time::{SystemTime, UNIX_EPOCH};

use super::bus::BusDevice;

/// Register indices and bits (MC146818A data sheet; IBM PC AT CMOS map for the century).
mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const MINUTES: u8 = 0x02;
    pub const HOURS: u8 = 0x04;
    pub const DAY_OF_WEEK: u8 = 0x06;
    pub const DAY_OF_MONTH: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0a;
    pub const B: u8 = 0x0b;
    pub const C: u8 = 0x0c;
    pub const D: u8 = 0x0d;
    pub const CENTURY: u8 = 0x32;

    /// Register A: update in progress.
    pub const A_UIP: u8 = 1 << 7;
    /// Register A at reset: 32.768 kHz time base, 1024 Hz periodic rate.
    pub const A_RESET: u8 = 0x26;
    /// Register B: data mode binary (set) or BCD (clear).
    pub const B_BINARY: u8 = 1 << 2;
    /// Register B: 24-hour (set) or 12-hour (clear) mode.
    pub const B_24H: u8 = 1 << 1;
    /// Register B at reset: 24-hour, BCD, no interrupts.
    pub const B_RESET: u8 = B_24H;
    /// Register D: valid RAM and time.
    pub const D_VRT: u8 = 1 << 7;
    /// In 12-hour mode, bit 7 of the hours register: PM.
    pub const HOURS_PM: u8 = 1 << 7;
}

/// Bits of the index register that select a register; bit 7 is the NMI mask.
const INDEX_MASK: u8 = 0x7f;
/// Offset of the index register in the device's port range.
const INDEX_PORT: u64 = 0;
/// Offset of the data register.
const DATA_PORT: u64 = 1;

/// Seconds since the Unix epoch, UTC.
pub type Clock = fn() -> u64;

/// The host's UTC clock; a host clock set before 1970 reads as the epoch.
fn host_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CivilTime {
    year: u64,
    month: u8,
    day: u8,
    /// 1 = Sunday ... 7 = Saturday, as the RTC counts.
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl CivilTime {
    /// Splits `secs` since 1970-01-01T00:00:00Z into the proleptic Gregorian calendar.
    fn from_unix(secs: u64) -> Self {
        let days = secs / 86_400;
        let in_day = secs % 86_400;
        // Count from 0000-03-01, so that the leap day closes each year: a 400-year cycle
        // has 146,097 days, and 1970-01-01 is day 719,468 after 0000-03-01.
        let from_march_0000 = days + 719_468;
        let cycle = from_march_0000 / 146_097;
        let day_of_cycle = from_march_0000 % 146_097;
        // Years into the cycle (0..=399): one day less every 4 years, one more every 100,
        // and the cycle's last day (a leap day) stays in year 399.
        let year_of_cycle = (day_of_cycle - day_of_cycle / 1_460 + day_of_cycle / 36_524
            - day_of_cycle / 146_096)
            / 365;
        // Day of the year from March 1 (0..=365).
        let day_of_year =
            day_of_cycle - (365 * year_of_cycle + year_of_cycle / 4 - year_of_cycle / 100);
        // Months from March (0..=11): 31, 30, 31, 30, 31 days, twice, then 31 and 28/29.
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = cycle * 400 + year_of_cycle + u64::from(month <= 2);
        Self {
            year,
            // Each value below is at most 60, as the arithmetic above bounds it.
            month: month as u8,
            day: day as u8,
            // 1970-01-01 was a Thursday (weekday 5 counting Sunday as 1).
            weekday: ((days + 4) % 7 + 1) as u8,
            hour: (in_day / 3_600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }
}

/// The MC146818 CMOS RTC and its NVRAM.
pub struct CmosRtc {
    clock: Clock,
    index: u8,
    /// Registers A, B and every NVRAM byte; the time registers and C, D are computed.
    cmos: [u8; 128],
}

impl Default for CmosRtc {
    fn default() -> Self {
        Self::new()
    }
}

impl CmosRtc {
    /// An RTC reading the host's UTC clock.
    pub fn new() -> Self {
        Self::with_clock(host_clock)
    }

    /// An RTC reading `clock` (tests use a fixed instant).
    pub fn with_clock(clock: Clock) -> Self {
        let mut cmos = [0u8; 128];
        cmos[usize::from(reg::A)] = reg::A_RESET;
        cmos[usize::from(reg::B)] = reg::B_RESET;
        Self {
            clock,
            index: 0,
            cmos,
        }
    }

    fn register_b(&self) -> u8 {
        self.cmos[usize::from(reg::B)]
    }

    /// `value` (0..=99) in the data mode register B selects.
    fn encode(&self, value: u8) -> u8 {
        if self.register_b() & reg::B_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn hours(&self, hour: u8) -> u8 {
        if self.register_b() & reg::B_24H != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { reg::HOURS_PM } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(twelve) | pm
    }

    fn read_register(&self, index: u8) -> u8 {
        let time = || CivilTime::from_unix((self.clock)());
        match index {
            reg::SECONDS => self.encode(time().second),
            reg::MINUTES => self.encode(time().minute),
            reg::HOURS => self.hours(time().hour),
            reg::DAY_OF_WEEK => self.encode(time().weekday),
            reg::DAY_OF_MONTH => self.encode(time().day),
            reg::MONTH => self.encode(time().month),
            reg::YEAR => self.encode((time().year % 100) as u8),
            reg::CENTURY => self.encode((time().year / 100 % 100) as u8),
            reg::A => self.cmos[usize::from(reg::A)] & !reg::A_UIP,
            reg::C => 0,
            reg::D => reg::D_VRT,
            other => self.cmos[usize::from(other & INDEX_MASK)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            reg::SECONDS
            | reg::MINUTES
            | reg::HOURS
            | reg::DAY_OF_WEEK
            | reg::DAY_OF_MONTH
            | reg::MONTH
            | reg::YEAR
            | reg::CENTURY
            | reg::C
            | reg::D => {}
            reg::A => self.cmos[usize::from(reg::A)] = value & !reg::A_UIP,
            other => self.cmos[usize::from(other & INDEX_MASK)] = value,
        }
    }
}

impl BusDevice for CmosRtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A wider access covers consecutive ports, one byte each, as on an ISA bus.
        let mut port = offset;
        for byte in data.iter_mut() {
            *byte = match port {
                DATA_PORT => self.read_register(self.index),
                _ => 0xff,
            };
            port = port.wrapping_add(1);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut port = offset;
        for &value in data {
            match port {
                INDEX_PORT => self.index = value & INDEX_MASK,
                DATA_PORT => self.write_register(self.index, value),
                _ => {}
            }
            port = port.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::devices::bus::Bus;

    /// 2024-02-29T13:05:09Z, a Thursday.
    const LEAP_DAY_AFTERNOON: u64 = 1_709_211_909;

    fn at_leap_day() -> u64 {
        LEAP_DAY_AFTERNOON
    }

    fn read(rtc: &mut CmosRtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut b = [0u8];
        rtc.read(1, &mut b);
        b[0]
    }

    fn write(rtc: &mut CmosRtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    /// Seconds, minutes, hours, weekday, day, month, year, century.
    fn time_registers(rtc: &mut CmosRtc) -> [u8; 8] {
        [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|i| read(rtc, i))
    }

    #[test]
    fn reads_the_time_in_bcd_24_hour_mode_at_reset() {
        let mut rtc = CmosRtc::with_clock(at_leap_day);
        assert_eq!(
            time_registers(&mut rtc),
            [0x09, 0x05, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
        assert_eq!(read(&mut rtc, 0x0b), 0x02, "24-hour BCD at reset");
    }

    #[test]
    fn reads_the_time_in_binary_and_12_hour_mode_as_register_b_says() {
        let mut rtc = CmosRtc::with_clock(at_leap_day);
        write(&mut rtc, 0x0b, 0x06); // binary, 24-hour
        assert_eq!(time_registers(&mut rtc), [9, 5, 13, 5, 29, 2, 24, 20]);
        write(&mut rtc, 0x0b, 0x04); // binary, 12-hour: 1 PM
        assert_eq!(read(&mut rtc, 0x04), 0x80 | 1);
        write(&mut rtc, 0x0b, 0x00); // BCD, 12-hour
        assert_eq!(read(&mut rtc, 0x04), 0x81);
        assert_eq!(read(&mut rtc, 0x0b), 0x00, "register B reads back");
        let mut midnight = CmosRtc::with_clock(|| 0);
        write(&mut midnight, 0x0b, 0x00);
        assert_eq!(read(&mut midnight, 0x04), 0x12, "00:xx is 12 AM");
    }

    #[test]
    fn uip_is_never_set_and_the_time_is_valid() {
        let mut rtc = CmosRtc::new();
        write(&mut rtc, 0x0a, 0xff);
        for _ in 0..1000 {
            assert_eq!(read(&mut rtc, 0x0a) & 0x80, 0, "UIP");
        }
        assert_eq!(read(&mut rtc, 0x0a), 0x7f, "divider and rate read back");
        assert_eq!(read(&mut rtc, 0x0d), 0x80, "VRT");
        write(&mut rtc, 0x0d, 0);
        assert_eq!(read(&mut rtc, 0x0d), 0x80, "register D is read-only");
        assert_eq!(read(&mut rtc, 0x0c), 0, "no interrupt flag");
        // The host clock is after 2020 in any sensible test environment.
        assert!(read(&mut rtc, 0x32) >= 0x20);
    }

    #[test]
    fn time_writes_are_ignored_and_nvram_keeps_what_is_written() {
        let mut rtc = CmosRtc::with_clock(at_leap_day);
        write(&mut rtc, 0x00, 0x59);
        write(&mut rtc, 0x09, 0x99);
        assert_eq!(read(&mut rtc, 0x00), 0x09);
        assert_eq!(read(&mut rtc, 0x09), 0x24);
        write(&mut rtc, 0x01, 0x30); // alarm seconds: plain storage
        write(&mut rtc, 0x0e, 0xab);
        write(&mut rtc, 0x7f, 0xcd);
        assert_eq!(read(&mut rtc, 0x01), 0x30);
        assert_eq!(read(&mut rtc, 0x0e), 0xab);
        assert_eq!(read(&mut rtc, 0x7f), 0xcd);
        // Bit 7 of the index is the NMI mask: the same register.
        assert_eq!(read(&mut rtc, 0x80 | 0x0e), 0xab);
        assert_eq!(read(&mut rtc, 0x80), 0x09);
    }

    #[test]
    fn every_index_and_value_is_served_without_panicking() {
        let mut rtc = CmosRtc::with_clock(|| u64::MAX);
        for index in 0..=u8::MAX {
            for value in [0x00, 0x5a, 0xff] {
                write(&mut rtc, index, value);
                let _ = read(&mut rtc, index);
            }
        }
        let mut index = [0u8];
        rtc.read(0, &mut index);
        assert_eq!(index, [0xff], "the index register is write-only");
        rtc.read(5, &mut index);
        rtc.write(5, &[1]);
    }

    #[test]
    fn calendar_conversion_matches_known_dates() {
        let t = |y, mo, d, wd, h, mi, s| CivilTime {
            year: y,
            month: mo,
            day: d,
            weekday: wd,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(CivilTime::from_unix(0), t(1970, 1, 1, 5, 0, 0, 0));
        assert_eq!(
            CivilTime::from_unix(951_782_400),
            t(2000, 2, 29, 3, 0, 0, 0)
        );
        assert_eq!(
            CivilTime::from_unix(978_307_199),
            t(2000, 12, 31, 1, 23, 59, 59)
        );
        assert_eq!(
            CivilTime::from_unix(4_107_542_400),
            t(2100, 3, 1, 2, 0, 0, 0),
            "2100 is not a leap year"
        );
        // Day by day for 800 years, the date advances by exactly one calendar day.
        let mut prev = CivilTime::from_unix(0);
        for day in 1..(800 * 366) {
            let now = CivilTime::from_unix(day * 86_400);
            let leap =
                |y: u64| y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400));
            let month_len = match prev.month {
                2 if leap(prev.year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let expected = if prev.day < month_len {
                (prev.year, prev.month, prev.day + 1)
            } else if prev.month < 12 {
                (prev.year, prev.month + 1, 1)
            } else {
                (prev.year + 1, 1, 1)
            };
            assert_eq!((now.year, now.month, now.day), expected, "day {day}");
            assert_eq!(now.weekday, prev.weekday % 7 + 1);
            prev = now;
        }
    }

    #[test]
    fn every_access_width_through_the_port_bus() {
        let mut bus = Bus::new();
        let rtc = Arc::new(Mutex::new(CmosRtc::with_clock(at_leap_day)));
        bus.insert(rtc, 0x70, 2).unwrap();
        // Byte accesses.
        assert!(bus.write(0x70, &[0x07]));
        let mut b = [0u8];
        assert!(bus.read(0x71, &mut b));
        assert_eq!(b, [0x29]);
        // A 16-bit write at 0x70 sets the index (low byte) then writes the data (high byte).
        assert!(bus.write(0x70, &[0x20, 0x42]));
        assert!(bus.write(0x70, &[0x20]));
        let mut w = [0u8; 2];
        assert!(bus.read(0x70, &mut w));
        assert_eq!(w, [0xff, 0x42], "index reads 0xff, data follows");
        // Accesses that run past 0x71 are not the RTC's.
        assert!(!bus.read(0x71, &mut w));
        assert_eq!(w, [0xff; 2]);
        let mut d = [0u8; 4];
        assert!(!bus.read(0x70, &mut d));
        assert!(!bus.write(0x70, &[0, 0, 0, 0]));
        assert!(!bus.write(0x71, &[0, 0]));
        assert!(bus.write(0x70, &[0x20]));
        assert!(bus.read(0x71, &mut b));
        assert_eq!(b, [0x42], "refused accesses changed nothing");
    }
}
