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
//! - `cloister_test.report_data=HEX`: the REPORT_DATA of the attestation report the guest
//!   asks for (the tenant's nonce): up to 128 hex digits (64 bytes), an even number of
//!   them, zero-padded to 64 bytes. Default: 64 zero bytes.
//! - `cloister_test.attest=off|replay|forge|wrongkey`: skip attestation, or run one negative
//!   test of the guest-message protocol (see `attest.rs`). Default: ask for the report.
//! - `cloister_test.cert_pages=N`: the certificate buffer (in 4 KiB pages, 0..=8) the
//!   guest offers with its report request (an SNP extended guest request); 0 asks without
//!   one. Default [`DEFAULT_CERT_PAGES`]. Too small a buffer makes the host answer "invalid
//!   length" with the pages it needs; the guest then resends the request without it.
//! - `cloister_test.string_io=on`: write a line to COM1 with one `rep outsb` and read the
//!   line status register eight times with one `rep insb` (checks that the VMM splits
//!   string port I/O into element accesses). Not on SEV-SNP (string I/O would need #VC).
//! - `virtio_mmio.device=SIZE@BASE:IRQ[:ID]`: a virtio-mmio device (Linux's syntax).

/// Most virtio-mmio devices the guest looks at.
pub const MAX_DEVICES: usize = 8;
/// Certificate buffer pages offered unless the command line says otherwise.
pub const DEFAULT_CERT_PAGES: u8 = 4;
/// Most certificate buffer pages the guest has.
pub const MAX_CERT_PAGES: u8 = 8;
/// Size of REPORT_DATA in MSG_REPORT_REQ.
pub const REPORT_DATA_LEN: usize = 64;

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
    /// REPORT_DATA to ask the attestation report for (`None`: all zero).
    pub report_data: Option<[u8; REPORT_DATA_LEN]>,
    /// What to do about attestation when a CC blob is present.
    pub attest: AttestMode,
    /// Certificate buffer pages to offer (`None`: [`DEFAULT_CERT_PAGES`]).
    pub cert_pages: Option<u8>,
    /// Run the string port I/O check.
    pub string_io: bool,
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

/// What the guest does about attestation (`cloister_test.attest=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttestMode {
    /// Ask for the report and print it (the default).
    #[default]
    Report,
    /// Do not attest.
    Off,
    /// Ask for the report, then send the very same request message again.
    Replay,
    /// Send a request with one ciphertext byte flipped.
    Forge,
    /// Send a request encrypted with VMPCK1 whose header names VMPCK0.
    WrongKey,
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
                b"cloister_test.report_data" => {
                    parse_report_data(value).map(|d| params.report_data = Some(d))
                }
                b"cloister_test.attest" => match value {
                    b"off" => Some(AttestMode::Off),
                    b"replay" => Some(AttestMode::Replay),
                    b"forge" => Some(AttestMode::Forge),
                    b"wrongkey" => Some(AttestMode::WrongKey),
                    _ => None,
                }
                .map(|m| params.attest = m),
                b"cloister_test.string_io" => match value {
                    b"on" => Some(true),
                    b"off" => Some(false),
                    _ => None,
                }
                .map(|v| params.string_io = v),
                b"cloister_test.cert_pages" => parse_u64(value)
                    .and_then(|v| u8::try_from(v).ok())
                    .filter(|v| *v <= MAX_CERT_PAGES)
                    .map(|v| params.cert_pages = Some(v)),
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

/// 1 to 128 hex digits, an even number of them, zero-padded to 64 bytes.
fn parse_report_data(value: &[u8]) -> Option<[u8; REPORT_DATA_LEN]> {
    if value.is_empty() || value.len() & 1 == 1 || value.len() > 2 * REPORT_DATA_LEN {
        return None;
    }
    let mut data = [0u8; REPORT_DATA_LEN];
    for (byte, pair) in data.iter_mut().zip(value.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = (high << 4 | low) as u8;
    }
    Some(data)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_is_zero_padded_hex() {
        let (p, bad) = TestParams::parse(b"cloister_test.report_data=00ffA5");
        assert_eq!(bad, None);
        let mut want = [0u8; REPORT_DATA_LEN];
        want[..3].copy_from_slice(&[0x00, 0xff, 0xa5]);
        assert_eq!(p.report_data, Some(want));
        let full = "ab".repeat(REPORT_DATA_LEN);
        let line = format!("cloister_test.report_data={full}");
        assert_eq!(
            TestParams::parse(line.as_bytes()).0.report_data,
            Some([0xab; REPORT_DATA_LEN])
        );
        for word in [
            "cloister_test.report_data=",
            "cloister_test.report_data=abc",
            "cloister_test.report_data=0g",
            "cloister_test.report_data=+1",
        ] {
            let (p, bad) = TestParams::parse(word.as_bytes());
            assert_eq!(bad.map(|b| b.word), Some(word.as_bytes()), "{word}");
            assert_eq!(p.report_data, None);
        }
        let too_long = format!("cloister_test.report_data={full}00");
        assert!(TestParams::parse(too_long.as_bytes()).1.is_some());
    }

    #[test]
    fn attest_modes() {
        assert_eq!(TestParams::parse(b"").0.attest, AttestMode::Report);
        for (word, mode) in [
            ("off", AttestMode::Off),
            ("replay", AttestMode::Replay),
            ("forge", AttestMode::Forge),
            ("wrongkey", AttestMode::WrongKey),
        ] {
            let line = format!("cloister_test.attest={word}");
            assert_eq!(
                TestParams::parse(line.as_bytes()),
                (
                    TestParams {
                        attest: mode,
                        ..TestParams::default()
                    },
                    None
                )
            );
        }
        let (p, bad) = TestParams::parse(b"cloister_test.attest=on");
        assert!(bad.is_some());
        assert_eq!(p.attest, AttestMode::Report);
    }

    #[test]
    fn cert_pages() {
        assert_eq!(TestParams::parse(b"").0.cert_pages, None);
        assert_eq!(
            TestParams::parse(b"cloister_test.cert_pages=0")
                .0
                .cert_pages,
            Some(0)
        );
        assert_eq!(
            TestParams::parse(b"cloister_test.cert_pages=8")
                .0
                .cert_pages,
            Some(8)
        );
        for bad in ["9", "-1", "x", ""] {
            let line = format!("cloister_test.cert_pages={bad}");
            let (p, b) = TestParams::parse(line.as_bytes());
            assert!(b.is_some(), "{line}");
            assert_eq!(p.cert_pages, None);
        }
    }
}
