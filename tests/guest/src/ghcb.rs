//! The Guest-Hypervisor Communication Block (GHCB, AMD publication 56421), as far as this
//! guest uses it: the GHCB page's fields and valid bitmap, the MSR protocol's requests and
//! responses (SNP-FACTS §3.4), the IOIO and guest-request exits' encodings, what a guest
//! request's SW_EXITINFO2 says, and the certificate table an extended guest request
//! brings back (SNP-FACTS §1.11). Pure: the kernel (`main.rs`, `ghcb_io.rs`) does the MSR
//! writes, VMGEXITs and page-state changes around it.

/// The GHCB MSR.
pub const GHCB_MSR: u32 = 0xC001_0130;
/// GHCB protocol version this guest speaks (2: SNP).
pub const PROTOCOL_VERSION: u16 = 2;

/// Save-area offsets of the fields used (Linux `struct ghcb_save_area`).
pub mod offset {
    /// RAX.
    pub const RAX: usize = 0x1F8;
    /// RBX.
    pub const RBX: usize = 0x318;
    /// SW_EXITCODE.
    pub const SW_EXITCODE: usize = 0x390;
    /// SW_EXITINFO1.
    pub const SW_EXITINFO1: usize = 0x398;
    /// SW_EXITINFO2.
    pub const SW_EXITINFO2: usize = 0x3A0;
    /// SW_SCRATCH.
    pub const SW_SCRATCH: usize = 0x3A8;
    /// The valid bitmap: bit n says the quadword at offset 8n is valid.
    pub const VALID_BITMAP: usize = 0x3F0;
    /// The shared buffer (2032 bytes).
    pub const SHARED_BUFFER: usize = 0x800;
    /// Protocol version (u16).
    pub const PROTOCOL_VERSION: usize = 0xFFA;
    /// GHCB usage (u32; 0 = the default layout).
    pub const USAGE: usize = 0xFFC;
}

/// NAE exit codes (Linux `arch/x86/include/uapi/asm/svm.h`).
pub mod exit {
    /// IOIO.
    pub const IOIO: u64 = 0x7B;
    /// SNP guest request.
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request (with a certificate buffer).
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// Termination request.
    pub const TERMINATE: u64 = 0x8000_FFFE;
}

/// A 4 KiB GHCB page.
pub type GhcbPage = [u8; 4096];

fn put_u64(page: &mut GhcbPage, at: usize, value: u64) {
    page[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u64(page: &GhcbPage, at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Typed access to a GHCB page.
pub struct Ghcb<'p> {
    page: &'p mut GhcbPage,
}

impl<'p> Ghcb<'p> {
    /// Wraps `page`.
    pub fn new(page: &'p mut GhcbPage) -> Self {
        Ghcb { page }
    }

    /// Starts a new exit: clears the valid bitmap (stale fields then count as absent) and
    /// writes the protocol version and usage, as before every VMGEXIT. The rest of the
    /// page is left as it is: clearing 4 KiB per port access would cost an emulated CPU
    /// more than the exit itself.
    pub fn begin(&mut self) {
        self.page[offset::VALID_BITMAP..offset::VALID_BITMAP + 16].fill(0);
        self.page[offset::PROTOCOL_VERSION..offset::PROTOCOL_VERSION + 2]
            .copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        self.page[offset::USAGE..offset::USAGE + 4].copy_from_slice(&0u32.to_le_bytes());
    }

    /// Writes the quadword at `at` and marks it valid.
    pub fn set(&mut self, at: usize, value: u64) {
        put_u64(self.page, at, value);
        let bit = at / 8;
        self.page[offset::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }

    /// Reads the quadword at `at` if the valid bitmap says it is valid.
    pub fn get(&self, at: usize) -> Option<u64> {
        let bit = at / 8;
        let valid = self.page[offset::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0;
        valid.then(|| get_u64(self.page, at))
    }

    /// Reads the quadword at `at` whatever the valid bitmap says (exit results: the
    /// hypervisor writes SW_EXITINFO1/2 back without necessarily marking them).
    pub fn raw(&self, at: usize) -> u64 {
        get_u64(self.page, at)
    }

    /// Sets SW_EXITCODE, SW_EXITINFO1 and SW_EXITINFO2.
    pub fn set_exit(&mut self, code: u64, info1: u64, info2: u64) {
        self.set(offset::SW_EXITCODE, code);
        self.set(offset::SW_EXITINFO1, info1);
        self.set(offset::SW_EXITINFO2, info2);
    }

    /// What the hypervisor said in SW_EXITINFO1 after the exit.
    pub fn result(&self) -> Result<(), ExitError> {
        let info1 = self.raw(offset::SW_EXITINFO1);
        match info1 & 0xffff_ffff {
            0 => Ok(()),
            1 => Err(ExitError::Exception {
                info2: self.raw(offset::SW_EXITINFO2),
            }),
            2 => Err(ExitError::Error {
                code: self.raw(offset::SW_EXITINFO2),
            }),
            other => Err(ExitError::Unknown { info1: other }),
        }
    }
}

/// How the hypervisor refused an exit (SW_EXITINFO1 != 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitError {
    /// SW_EXITINFO1 = 1: an exception to inject (SW_EXITINFO2 says which).
    Exception {
        /// SW_EXITINFO2.
        info2: u64,
    },
    /// SW_EXITINFO1 = 2: the request was malformed (SW_EXITINFO2: 1 GHCB not registered,
    /// 2 bad usage, 3 bad scratch area, 4 missing input, 5 invalid input, 6 invalid event).
    Error {
        /// SW_EXITINFO2.
        code: u64,
    },
    /// Any other SW_EXITINFO1.
    Unknown {
        /// SW_EXITINFO1's low 32 bits.
        info1: u64,
    },
}

impl ExitError {
    /// A name for the hypervisor's error code.
    pub fn describe(&self) -> &'static str {
        match *self {
            ExitError::Exception { .. } => "the hypervisor asked for an exception",
            ExitError::Error { code: 1 } => "GHCB not registered",
            ExitError::Error { code: 2 } => "GHCB usage not supported",
            ExitError::Error { code: 3 } => "invalid scratch area",
            ExitError::Error { code: 4 } => "missing input",
            ExitError::Error { code: 5 } => "invalid input",
            ExitError::Error { code: 6 } => "invalid event",
            ExitError::Error { .. } => "unknown GHCB error",
            ExitError::Unknown { .. } => "unknown SW_EXITINFO1",
        }
    }
}

/// SW_EXITINFO1 of an IOIO exit: `port`, an access of `size` bytes (1, 2 or 4), in or
/// out, not a string access (Linux `vc_ioio_exitinfo`).
pub fn ioio_info(port: u16, size: u8, is_in: bool) -> u64 {
    let size_bit = match size {
        1 => 1 << 4,
        2 => 1 << 5,
        _ => 1 << 6,
    };
    (u64::from(port) << 16) | size_bit | u64::from(is_in)
}

/// What SW_EXITINFO2 says after a (extended) guest request (SNP-FACTS §1.11): low 32 bits
/// the firmware's status, high 32 bits the VMM's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The firmware answered (status 0).
    Answered,
    /// The firmware refused with this status.
    Firmware(u32),
    /// VMM error 1: the certificate buffer is too small; RBX holds the pages needed.
    CertBufferTooSmall,
    /// VMM error 2: busy, try again.
    Busy,
    /// Another VMM error (0xFFFF_FFFF: generic).
    Vmm(u32),
}

impl RequestOutcome {
    /// Decodes SW_EXITINFO2.
    pub fn from_info2(info2: u64) -> Self {
        let vmm = (info2 >> 32) as u32;
        let fw = info2 as u32;
        match (vmm, fw) {
            (0, 0) => RequestOutcome::Answered,
            (0, fw) => RequestOutcome::Firmware(fw),
            (1, _) => RequestOutcome::CertBufferTooSmall,
            (2, _) => RequestOutcome::Busy,
            (vmm, _) => RequestOutcome::Vmm(vmm),
        }
    }
}

/// MSR protocol: register the GHCB at guest frame `gfn`.
pub fn msr_register(gfn: u64) -> u64 {
    (gfn << 12) | 0x012
}

/// MSR protocol: true when `response` acknowledges registering `gfn`.
pub fn msr_register_ok(response: u64, gfn: u64) -> bool {
    response & 0xfff == 0x013 && response >> 12 == gfn
}

/// Page state change operations of the MSR protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Private (assigned to the guest, encrypted).
    Private = 1,
    /// Shared (hypervisor-owned).
    Shared = 2,
}

/// MSR protocol: change the state of 4 KiB frame `gfn`.
pub fn msr_psc(gfn: u64, to: PageState) -> u64 {
    ((to as u64) << 52) | ((gfn & ((1 << 40) - 1)) << 12) | 0x014
}

/// MSR protocol: the error of a page-state-change response (0: done).
pub fn msr_psc_result(response: u64) -> Result<(), u64> {
    if response & 0xfff != 0x015 {
        return Err(response);
    }
    match response >> 32 {
        0 => Ok(()),
        error => Err(error),
    }
}

/// MSR protocol: terminate with `reason` in reason set `set`.
pub fn msr_terminate(set: u8, reason: u8) -> u64 {
    (u64::from(reason) << 16) | (u64::from(set & 0xf) << 12) | 0x100
}

/// Termination reasons this guest uses (reason set 1, Cloister's own).
pub mod reason {
    /// Cloister's reason set.
    pub const SET: u8 = 1;
    /// The GHCB could not be registered.
    pub const REGISTER: u8 = 0;
    /// A page state change failed.
    pub const PSC: u8 = 1;
    /// PVALIDATE failed.
    pub const PVALIDATE: u8 = 2;
    /// The guest's own page tables cannot map the shared pages.
    pub const MAPPING: u8 = 0x80;
}

/// GUIDs of the certificate table (GHCB spec; little-endian mixed as in the table).
pub mod guid {
    /// ARK.
    pub const ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743_3fb6014cd0ae);
    /// ASK.
    pub const ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f_05aef327c782);
    /// VCEK.
    pub const VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5_f4b93be8accd);
    /// VLEK.
    pub const VLEK: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6_39c045a0b8a1);

    /// The 16 bytes of a GUID as stored (first three fields little-endian, the last
    /// eight bytes in order).
    const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        let d = d.to_be_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ]
    }

    /// The name of a known GUID.
    pub fn name(g: &[u8; 16]) -> Option<&'static str> {
        match *g {
            ARK => Some("ARK"),
            ASK => Some("ASK"),
            VCEK => Some("VCEK"),
            VLEK => Some("VLEK"),
            _ => None,
        }
    }
}

/// One certificate table entry: what it is and where its bytes are in the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertEntry {
    /// The GUID.
    pub guid: [u8; 16],
    /// Offset of the certificate from the table's start.
    pub offset: u32,
    /// Its length.
    pub length: u32,
}

/// Why a certificate table is not well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertTableError {
    /// No all-zero terminator within the buffer.
    Unterminated,
    /// Entry `index` points outside the buffer or into the table itself.
    OutOfBounds {
        /// Entry index.
        index: usize,
    },
}

/// Size of one table entry.
pub const CERT_ENTRY_SIZE: usize = 24;

/// Parses the certificate table at the start of `buf` into `out`; returns how many
/// entries there are (more than `out` holds are counted but not stored).
pub fn parse_cert_table(buf: &[u8], out: &mut [CertEntry]) -> Result<usize, CertTableError> {
    let mut count = 0;
    let mut at = 0;
    loop {
        let Some(raw) = buf.get(at..at + CERT_ENTRY_SIZE) else {
            return Err(CertTableError::Unterminated);
        };
        if raw.iter().all(|&b| b == 0) {
            break;
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&raw[..16]);
        let offset = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]);
        let length = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]);
        if let Some(slot) = out.get_mut(count) {
            *slot = CertEntry {
                guid,
                offset,
                length,
            };
        }
        count += 1;
        at += CERT_ENTRY_SIZE;
    }
    let table_end = at + CERT_ENTRY_SIZE;
    for (index, e) in out.iter().take(count).enumerate() {
        let start = e.offset as usize;
        let end = start.checked_add(e.length as usize);
        if start < table_end || end.is_none_or(|end| end > buf.len()) || e.length == 0 {
            return Err(CertTableError::OutOfBounds { index });
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_and_valid_bits() {
        let mut page = [0xAAu8; 4096];
        let mut g = Ghcb::new(&mut page);
        g.begin();
        assert_eq!(g.get(offset::RAX), None);
        g.set(offset::RAX, 0x1234);
        g.set_exit(exit::IOIO, ioio_info(0x3f8, 1, false), 0);
        assert_eq!(g.get(offset::RAX), Some(0x1234));
        assert_eq!(g.get(offset::SW_EXITCODE), Some(0x7B));
        assert_eq!(g.get(offset::RBX), None);
        // RAX is quadword 0x3F: byte 7 of the bitmap, bit 7; SW_EXITCODE is 0x72.
        assert_eq!(page[0x3F0 + 7], 0x80);
        assert_eq!(page[0x3F0 + 14], 0b0000_0111 << 2);
        assert_eq!(&page[0xFFA..0xFFC], &[2, 0]);
        assert_eq!(&page[0xFFC..0x1000], &[0; 4]);
        // The shared buffer is left alone by `begin`.
        assert_eq!(page[0x800], 0xAA);
    }

    #[test]
    fn exit_results() {
        let mut page = [0u8; 4096];
        let mut g = Ghcb::new(&mut page);
        g.begin();
        assert_eq!(g.result(), Ok(()));
        // Stale fields from an earlier exit are not valid after `begin`.
        g.set(offset::RBX, 7);
        g.begin();
        assert_eq!(g.get(offset::RBX), None);
        assert_eq!(g.raw(offset::RBX), 7);
        put_u64(g.page, offset::SW_EXITINFO1, 2);
        put_u64(g.page, offset::SW_EXITINFO2, 6);
        assert_eq!(g.result(), Err(ExitError::Error { code: 6 }));
        assert!(matches!(g.result(), Err(e) if e.describe() == "invalid event"));
    }

    #[test]
    fn ioio_encoding_matches_linux() {
        // OUT DX, AL to 0x3f8: port in 31:16, SZ8 (bit 4), type out (bit 0 clear).
        assert_eq!(ioio_info(0x3f8, 1, false), 0x03f8_0010);
        assert_eq!(ioio_info(0x0e00, 4, true), 0x0e00_0041);
        assert_eq!(ioio_info(0x70, 2, false), 0x0070_0020);
    }

    #[test]
    fn request_outcomes() {
        assert_eq!(RequestOutcome::from_info2(0), RequestOutcome::Answered);
        assert_eq!(RequestOutcome::from_info2(0x16), RequestOutcome::Firmware(0x16));
        assert_eq!(
            RequestOutcome::from_info2(1 << 32),
            RequestOutcome::CertBufferTooSmall
        );
        assert_eq!(RequestOutcome::from_info2(2 << 32), RequestOutcome::Busy);
        assert_eq!(
            RequestOutcome::from_info2(0xffff_ffff_0000_0000),
            RequestOutcome::Vmm(0xffff_ffff)
        );
    }

    #[test]
    fn msr_protocol() {
        assert_eq!(msr_register(0x5), 0x5012);
        assert!(msr_register_ok(0x5013, 5));
        assert!(!msr_register_ok(0x6013, 5));
        assert!(!msr_register_ok(0x5015, 5));
        assert_eq!(msr_psc(0x123, PageState::Shared), (2 << 52) | 0x123014);
        assert_eq!(msr_psc_result(0x015), Ok(()));
        assert_eq!(msr_psc_result((7 << 32) | 0x015), Err(7));
        assert_eq!(msr_psc_result(0x013), Err(0x013));
        assert_eq!(msr_terminate(1, 2), 0x21100);
    }

    #[test]
    fn guid_bytes() {
        // c0b406a4-a803-4952-9743-3fb6014cd0ae
        assert_eq!(
            guid::ARK,
            [
                0xa4, 0x06, 0xb4, 0xc0, 0x03, 0xa8, 0x52, 0x49, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
                0xd0, 0xae
            ]
        );
        assert_eq!(guid::name(&guid::VCEK), Some("VCEK"));
        assert_eq!(guid::name(&[1; 16]), None);
    }

    fn table(entries: &[([u8; 16], u32, u32)]) -> [u8; 256] {
        let mut buf = [0u8; 256];
        for (i, (g, o, l)) in entries.iter().enumerate() {
            let at = i * 24;
            buf[at..at + 16].copy_from_slice(g);
            buf[at + 16..at + 20].copy_from_slice(&o.to_le_bytes());
            buf[at + 20..at + 24].copy_from_slice(&l.to_le_bytes());
        }
        buf
    }

    #[test]
    fn cert_tables() {
        let buf = table(&[(guid::ARK, 72, 10), (guid::VCEK, 82, 20)]);
        let mut out = [CertEntry {
            guid: [0; 16],
            offset: 0,
            length: 0,
        }; 4];
        assert_eq!(parse_cert_table(&buf, &mut out), Ok(2));
        assert_eq!(out[1].guid, guid::VCEK);
        assert_eq!(parse_cert_table(&[0; 24], &mut out), Ok(0));
        // Pointing into the table, past the buffer, or empty.
        let bad = table(&[(guid::ARK, 24, 10)]);
        assert_eq!(
            parse_cert_table(&bad, &mut out),
            Err(CertTableError::OutOfBounds { index: 0 })
        );
        let bad = table(&[(guid::ARK, 72, 200)]);
        assert!(parse_cert_table(&bad, &mut out).is_err());
        let bad = table(&[(guid::ARK, 72, 0)]);
        assert!(parse_cert_table(&bad, &mut out).is_err());
        // No terminator.
        assert_eq!(
            parse_cert_table(&[1; 100], &mut out),
            Err(CertTableError::Unterminated)
        );
    }
}
