//! The guest's command-line parameters. Pure parsing, shared with the host tests.
//!
//! Parameters (all optional; unknown words are ignored, as Linux ignores them):
//! - `cloister_test.mem=SIZE`: RAM the e820 map must describe (bytes, or with a K/M/G
//!   suffix). The check fails unless the map's usable RAM lies within 1 MiB below SIZE
//!   (only the legacy hole below 1 MiB may be missing) and does not exceed it.
//! - `cloister_test.exit=N`: end with exit code N (0..=255) through I/O port 0xf4 instead
//!   of powering off through the ACPI sleep control register (I/O port 0x3c0).
//! - `cloister_test.write=SECTOR:TEXT`: fill 512-byte sector SECTOR of the first disk with
//!   TEXT repeated, flush, read it back and compare. On a read-only disk or past the
//!   disk's end the write is sent anyway and must be refused with IOERR.
//! - `cloister_test.cpus=N`: the number of CPUs the MP table and the MADT must list.
//! - `cloister_test.fault=ud|pf`: after the checks, raise an invalid-opcode or page-fault
//!   exception (tests that a fault is reported and ends the VM with the failure code).
//! - `virtio_mmio.device=SIZE@BASE:IRQ[:ID]`: a virtio-mmio device (Linux's syntax).

/// Most virtio-mmio devices the guest looks at.
pub const MAX_DEVICES: usize = 8;

/// A virtio-mmio device announced on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Physical base address of its register window.
    pub base: u64,
    /// Size of the window in bytes.
    pub size: u64,
    /// Its interrupt line (unused: the guest polls).
    pub irq: u32,
}

/// What the command line asks of the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestParams<'a> {
    /// Expected RAM size.
    pub mem: Option<u64>,
    /// Exit code to end with.
    pub exit: Option<u8>,
    /// Sector and fill text to write.
    pub write: Option<(u64, &'a [u8])>,
    /// Expected CPU count.
    pub cpus: Option<u32>,
    /// Exception to raise at the end.
    pub fault: Option<Fault>,
    /// virtio-mmio devices, in command-line order.
    pub devices: [Option<MmioDevice>; MAX_DEVICES],
}

/// An exception the guest can be asked to raise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `ud2`: invalid opcode (vector 6).
    InvalidOpcode,
    /// A read above the 4 GiB identity map: page fault (vector 14).
    PageFault,
}

/// A parameter the guest understands but could not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadParam<'a> {
    /// The whole `key=value` word.
    pub word: &'a [u8],
}

impl<'a> TestParams<'a> {
    /// Parses `cmdline`; a word it understands but cannot parse is reported in `bad`
    /// (the last one wins) and otherwise ignored.
    pub fn parse(cmdline: &'a [u8]) -> (Self, Option<BadParam<'a>>) {
        let mut params = Self::default();
        let mut bad = None;
        let mut next_device = 0;
        for word in cmdline
            .split(|b| b.is_ascii_whitespace() || *b == 0)
            .filter(|w| !w.is_empty())
        {
            let (key, value) = match word.iter().position(|b| *b == b'=') {
                Some(i) => (&word[..i], &word[i + 1..]),
                None => (word, &word[word.len()..]),
            };
            let ok = match key {
                b"cloister_test.mem" => parse_size(value).map(|v| params.mem = Some(v)),
                b"cloister_test.exit" => parse_u64(value)
                    .and_then(|v| u8::try_from(v).ok())
                    .map(|v| params.exit = Some(v)),
                b"cloister_test.cpus" => parse_u64(value)
                    .and_then(|v| u32::try_from(v).ok())
                    .map(|v| params.cpus = Some(v)),
                b"cloister_test.fault" => match value {
                    b"ud" => Some(Fault::InvalidOpcode),
                    b"pf" => Some(Fault::PageFault),
                    _ => None,
                }
                .map(|f| params.fault = Some(f)),
                b"cloister_test.write" => parse_write(value).map(|w| params.write = Some(w)),
                b"virtio_mmio.device" => parse_device(value).map(|d| {
                    if next_device < MAX_DEVICES {
                        params.devices[next_device] = Some(d);
                        next_device += 1;
                    }
                }),
                _ => Some(()),
            };
            if ok.is_none() {
                bad = Some(BadParam { word });
            }
        }
        (params, bad)
    }
}

/// `SECTOR:TEXT` with a non-empty TEXT.
fn parse_write(value: &[u8]) -> Option<(u64, &[u8])> {
    let colon = value.iter().position(|b| *b == b':')?;
    let sector = parse_u64(&value[..colon])?;
    let text = &value[colon + 1..];
    if text.is_empty() {
        return None;
    }
    Some((sector, text))
}

/// `SIZE@BASE:IRQ[:ID]`.
fn parse_device(value: &[u8]) -> Option<MmioDevice> {
    let at = value.iter().position(|b| *b == b'@')?;
    let size = parse_size(&value[..at])?;
    let rest = &value[at + 1..];
    let mut parts = rest.split(|b| *b == b':');
    let base = parse_u64(parts.next()?)?;
    let irq = u32::try_from(parse_u64(parts.next()?)?).ok()?;
    if let Some(id) = parts.next() {
        parse_u64(id)?;
    }
    if parts.next().is_some() || size == 0 {
        return None;
    }
    Some(MmioDevice { base, size, irq })
}

/// A number with an optional K/M/G (binary) suffix.
pub fn parse_size(value: &[u8]) -> Option<u64> {
    let (digits, shift) = match value.last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 10),
        b'm' | b'M' => (&value[..value.len() - 1], 20),
        b'g' | b'G' => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let n = parse_u64(digits)?;
    n.checked_mul(1u64 << shift)
}

/// A decimal number, or hexadecimal with a `0x` prefix.
pub fn parse_u64(value: &[u8]) -> Option<u64> {
    let (digits, radix) = match value {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (value, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in digits {
        let d = char::from(*b).to_digit(radix)?;
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(n)
}
