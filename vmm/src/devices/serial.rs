//! The 16550 UART console (COM1), on vm-superio's `Serial`: the guest's bytes go to
//! stdout, a file, or nowhere; host input is queued into its receive FIFO; its interrupt
//! is an EventFd that KVM injects on the UART's IRQ line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// An interrupt line raised by writing an EventFd (registered with KVM as an irqfd).
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The most a guest can make the monitor write into a console file (`--serial
/// file=PATH`): the host's disk is not the guest's to fill. Past it the rest of the output
/// is discarded, after one line in the file and one warning saying so.
pub const CONSOLE_FILE_LIMIT: u64 = 64 << 20;

/// Where the console's output goes.
pub enum ConsoleOutput {
    /// The monitor's stdout, flushed after every byte so prompts appear at once.
    Stdout,
    /// A file, created or truncated, and the bytes it may still take.
    File(File, u64),
    /// Discarded.
    Off,
}

impl ConsoleOutput {
    /// Output to a file at `path`, created or truncated, of at most
    /// [`CONSOLE_FILE_LIMIT`] bytes.
    pub fn file(path: &Path) -> io::Result<Self> {
        Self::file_with_limit(path, CONSOLE_FILE_LIMIT)
    }

    fn file_with_limit(path: &Path, limit: u64) -> io::Result<Self> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map(|f| ConsoleOutput::File(f, limit))
    }
}

impl ConsoleOutput {
    fn write_through(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ConsoleOutput::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            ConsoleOutput::File(f, left) => {
                let fits = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                f.write_all(&buf[..fits])?;
                *left -= fits as u64;
                if fits < buf.len() {
                    log::warn!(
                        "the guest's console output reached {CONSOLE_FILE_LIMIT} bytes; the rest is discarded"
                    );
                    f.write_all(
                        b"\n[cloister: console output limit reached; the rest is discarded]\n",
                    )?;
                    *self = ConsoleOutput::Off;
                }
                Ok(())
            }
            ConsoleOutput::Off => Ok(()),
        }
    }
}

impl Write for ConsoleOutput {
    /// Never fails towards the UART: when the sink breaks (a closed pipe, a full disk)
    /// the console says so once and discards the rest, and the guest runs on.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.write_through(buf) {
            log::warn!("serial console output failed ({e}); discarding further output");
            *self = ConsoleOutput::Off;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ConsoleOutput::Stdout => io::stdout().flush(),
            ConsoleOutput::File(f, _) => f.flush(),
            ConsoleOutput::Off => Ok(()),
        }
    }
}

/// The serial console as a port-I/O bus device (8 registers).
pub struct SerialConsole<W: Write + Send> {
    uart: Serial<IrqLine, NoEvents, W>,
}

impl<W: Write + Send> SerialConsole<W> {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: W) -> Self {
        Self {
            uart: Serial::new(IrqLine(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fitted in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("serial input dropped: {e}");
                0
            }
        }
    }

    /// The output sink.
    pub fn output(&self) -> &W {
        self.uart.writer()
    }
}

impl<W: Write + Send> BusDevice for SerialConsole<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(reg), [byte]) if reg < 8 => *byte = self.uart.read(reg),
            (_, data) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(reg), [byte]) = (u8::try_from(offset), data) {
            if reg < 8 {
                if let Err(e) = self.uart.write(reg, *byte) {
                    log::warn!("serial write failed: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn transmits_bytes_and_receives_input_with_an_interrupt() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut uart = SerialConsole::new(irq.try_clone().unwrap(), Vec::new());
        for b in b"hi\n" {
            uart.write(THR, &[*b]);
        }
        assert_eq!(uart.output(), b"hi\n");
        let mut lsr = [0u8];
        uart.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
        assert_eq!(lsr[0] & 0x01, 0, "no data ready yet");

        // Enable the received-data interrupt, then feed input.
        uart.write(IER, &[0x01]);
        assert_eq!(uart.enqueue_input(b"ok"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        uart.read(LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x01, 0, "data ready");
        let mut byte = [0u8];
        uart.read(THR, &mut byte);
        assert_eq!(byte, *b"o");
    }

    #[test]
    fn a_broken_sink_is_dropped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console");
        let mut out = ConsoleOutput::file(&path).unwrap();
        assert_eq!(out.write(b"ok").unwrap(), 2);
        // A read-only handle makes every write fail.
        out = ConsoleOutput::File(File::open(&path).unwrap(), CONSOLE_FILE_LIMIT);
        assert_eq!(out.write(b"lost").unwrap(), 4);
        assert!(matches!(out, ConsoleOutput::Off));
        assert_eq!(std::fs::read(&path).unwrap(), b"ok");
    }

    /// A guest printing without end fills the console file up to its limit, then one
    /// notice, then nothing.
    #[test]
    fn a_console_file_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console");
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let out = ConsoleOutput::file_with_limit(&path, 100).unwrap();
        let mut uart = SerialConsole::new(irq, out);
        for i in 0..10_000u32 {
            uart.write(THR, &[b'a' + (i % 26) as u8]);
        }
        let written = std::fs::read(&path).unwrap();
        let notice = b"\n[cloister: console output limit reached; the rest is discarded]\n";
        assert_eq!(written.len(), 100 + notice.len());
        assert_eq!(&written[..3], b"abc");
        assert_eq!(&written[100..], notice);
    }

    #[test]
    fn ignores_wide_and_out_of_range_accesses() {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut uart = SerialConsole::new(irq, Vec::new());
        uart.write(THR, &[1, 2]);
        uart.write(9, &[1]);
        assert!(uart.output().is_empty());
        let mut word = [0u8; 2];
        uart.read(0, &mut word);
        assert_eq!(word, [0xff, 0xff]);
    }
}
