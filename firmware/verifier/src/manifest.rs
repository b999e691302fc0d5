//! The manifest: one 4 KiB page the VMM writes and the PSP measures, telling the verifier
//! what to load and what it must hash to. Everything that changes what the guest runs
//! is in it (digests, sizes, addresses, the memory map), so the launch digest covers it.
//!
//! Layout (little-endian):
//!
//! | off | size | field |
//! |---|---|---|
//! | 0x000 | 8 | magic `CLVRFY01` |
//! | 0x008 | 4 | version (1) |
//! | 0x00C | 4 | flags (0) |
//! | 0x010 | 3 × 72 | kernel, initrd, command line: staging GPA u64, load GPA u64, size u64, SHA-384 \[48\] |
//! | 0x0E8 | 8 | zero page GPA |
//! | 0x0F0 | 8 | CC blob GPA (the verifier writes the blob and its setup_data node there) |
//! | 0x0F8 | 8 | secrets page GPA |
//! | 0x100 | 8 | CPUID page GPA |
//! | 0x108 | 4 | e820 entry count (≤ 128) |
//! | 0x10C | 4 | reserved (0) |
//! | 0x110 | 128 × 20 | e820 entries: addr u64, size u64, type u32 |
//!
//! The rest of the page is zero. The kernel image is a bzImage: its setup header is
//! read from the staged copy after the digest check, and its protected-mode code (after
//! the setup sectors) is what goes to the kernel's load GPA.

use sha2::{Digest, Sha384};

/// Size of the manifest page.
pub const PAGE_SIZE: usize = 4096;
/// The magic.
pub const MAGIC: [u8; 8] = *b"CLVRFY01";
/// The version this verifier reads.
pub const VERSION: u32 = 1;
/// Most e820 entries (as in Linux's zero page).
pub const MAX_E820: usize = 128;
/// SHA-384 digest size.
pub const DIGEST_SIZE: usize = 48;

const OFF_IMAGES: usize = 0x010;
const IMAGE_SIZE: usize = 72;
const OFF_ZERO_PAGE: usize = 0x0E8;
const OFF_CC_BLOB: usize = 0x0F0;
const OFF_SECRETS: usize = 0x0F8;
const OFF_CPUID: usize = 0x100;
const OFF_E820_COUNT: usize = 0x108;
const OFF_E820: usize = 0x110;
const E820_ENTRY_SIZE: usize = 20;
const END: usize = OFF_E820 + MAX_E820 * E820_ENTRY_SIZE;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One image the verifier loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image {
    /// Where the VMM staged it (unmeasured, untrusted memory).
    pub staging: u64,
    /// Where the verifier copies it (private memory).
    pub load: u64,
    /// Its size in bytes (0: absent; only the initrd may be absent).
    pub size: u64,
    /// Its SHA-384.
    pub sha384: [u8; DIGEST_SIZE],
}

impl Default for Image {
    fn default() -> Self {
        Image {
            staging: 0,
            load: 0,
            size: 0,
            sha384: [0; DIGEST_SIZE],
        }
    }
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// Start.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// Type (1 RAM, 2 reserved, ...).
    pub kind: u32,
}

/// The manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The kernel (a bzImage, setup sectors included).
    pub kernel: Image,
    /// The initrd.
    pub initrd: Image,
    /// The command line, without its NUL (the verifier adds it).
    pub cmdline: Image,
    /// Where the zero page goes.
    pub zero_page: u64,
    /// Where the CC blob and its setup_data node go.
    pub cc_blob: u64,
    /// The secrets page.
    pub secrets: u64,
    /// The CPUID page.
    pub cpuid: u64,
    /// e820 entries, `e820_count` of them used.
    pub e820: [E820Entry; MAX_E820],
    /// How many entries are used.
    pub e820_count: usize,
}

/// Why a manifest is refused. Every variant names what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// The magic is not `CLVRFY01`.
    Magic,
    /// A version this verifier does not read.
    Version(u32),
    /// Non-zero flags or reserved bytes.
    Reserved,
    /// More than 128 e820 entries.
    E820Count(u32),
    /// Image `which` (0 kernel, 1 initrd, 2 command line) wraps around or is empty where
    /// it must not be.
    BadImage(usize),
    /// A structure address that is not 4 KiB aligned or is at or above 4 GiB.
    BadAddress(u64),
    /// Entry `index` of the e820 map is empty or wraps around.
    BadE820(usize),
}

impl ManifestError {
    /// A description, for the console and the termination reason.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Magic => "manifest magic is not CLVRFY01",
            Self::Version(_) => "manifest version unknown",
            Self::Reserved => "manifest flags or reserved bytes are not zero",
            Self::E820Count(_) => "manifest has more than 128 e820 entries",
            Self::BadImage(0) => "manifest kernel entry is empty or wraps",
            Self::BadImage(1) => "manifest initrd entry wraps",
            Self::BadImage(_) => "manifest command line entry wraps or is too long",
            Self::BadAddress(_) => "manifest structure address not 4 KiB aligned below 4 GiB",
            Self::BadE820(_) => "manifest e820 entry empty or wrapping",
        }
    }
}

fn u32_at(page: &[u8; PAGE_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
}

fn u64_at(page: &[u8; PAGE_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Longest command line accepted (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const MAX_CMDLINE: u64 = 2048;

impl Manifest {
    /// Parses and checks a manifest page.
    pub fn parse(page: &[u8; PAGE_SIZE]) -> Result<Self, ManifestError> {
        if page[..8] != MAGIC {
            return Err(ManifestError::Magic);
        }
        let version = u32_at(page, 8);
        if version != VERSION {
            return Err(ManifestError::Version(version));
        }
        if u32_at(page, 0xC) != 0 || u32_at(page, 0x10C) != 0 || page[END..].iter().any(|&b| b != 0)
        {
            return Err(ManifestError::Reserved);
        }
        let mut images = [Image::default(); 3];
        for (i, image) in images.iter_mut().enumerate() {
            let at = OFF_IMAGES + i * IMAGE_SIZE;
            image.staging = u64_at(page, at);
            image.load = u64_at(page, at + 8);
            image.size = u64_at(page, at + 16);
            image.sha384.copy_from_slice(&page[at + 24..at + 72]);
            let wraps = image.staging.checked_add(image.size).is_none()
                || image.load.checked_add(image.size).is_none();
            let empty_kernel = i == 0 && image.size == 0;
            let long_cmdline = i == 2 && image.size > MAX_CMDLINE;
            if wraps || empty_kernel || long_cmdline {
                return Err(ManifestError::BadImage(i));
            }
        }
        let [kernel, initrd, cmdline] = images;
        let addresses = [
            u64_at(page, OFF_ZERO_PAGE),
            u64_at(page, OFF_CC_BLOB),
            u64_at(page, OFF_SECRETS),
            u64_at(page, OFF_CPUID),
        ];
        for &a in &addresses {
            if !a.is_multiple_of(PAGE_SIZE as u64) || a >= 1 << 32 {
                return Err(ManifestError::BadAddress(a));
            }
        }
        let count = u32_at(page, OFF_E820_COUNT);
        if count as usize > MAX_E820 {
            return Err(ManifestError::E820Count(count));
        }
        let mut e820 = [E820Entry::default(); MAX_E820];
        for (i, entry) in e820.iter_mut().enumerate().take(count as usize) {
            let at = OFF_E820 + i * E820_ENTRY_SIZE;
            *entry = E820Entry {
                addr: u64_at(page, at),
                size: u64_at(page, at + 8),
                kind: u32_at(page, at + 16),
            };
            if entry.size == 0 || entry.addr.checked_add(entry.size).is_none() {
                return Err(ManifestError::BadE820(i));
            }
        }
        Ok(Manifest {
            kernel,
            initrd,
            cmdline,
            zero_page: addresses[0],
            cc_blob: addresses[1],
            secrets: addresses[2],
            cpuid: addresses[3],
            e820,
            e820_count: count as usize,
        })
    }

    /// The page (the VMM's side).
    pub fn to_page(&self) -> [u8; PAGE_SIZE] {
        let mut page = [0u8; PAGE_SIZE];
        page[..8].copy_from_slice(&MAGIC);
        page[8..12].copy_from_slice(&VERSION.to_le_bytes());
        for (i, image) in [self.kernel, self.initrd, self.cmdline].iter().enumerate() {
            let at = OFF_IMAGES + i * IMAGE_SIZE;
            page[at..at + 8].copy_from_slice(&image.staging.to_le_bytes());
            page[at + 8..at + 16].copy_from_slice(&image.load.to_le_bytes());
            page[at + 16..at + 24].copy_from_slice(&image.size.to_le_bytes());
            page[at + 24..at + 72].copy_from_slice(&image.sha384);
        }
        for (at, value) in [
            (OFF_ZERO_PAGE, self.zero_page),
            (OFF_CC_BLOB, self.cc_blob),
            (OFF_SECRETS, self.secrets),
            (OFF_CPUID, self.cpuid),
        ] {
            page[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        let count = self.e820_count.min(MAX_E820);
        page[OFF_E820_COUNT..OFF_E820_COUNT + 4].copy_from_slice(&(count as u32).to_le_bytes());
        for (i, e) in self.e820.iter().take(count).enumerate() {
            let at = OFF_E820 + i * E820_ENTRY_SIZE;
            page[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
            page[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
            page[at + 16..at + 20].copy_from_slice(&e.kind.to_le_bytes());
        }
        page
    }

    /// The e820 entries in use.
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820[..self.e820_count.min(MAX_E820)]
    }
}

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut out = [0u8; DIGEST_SIZE];
    out.copy_from_slice(&Sha384::digest(data));
    out
}

/// Whether `data` (already copied into private memory) hashes to `expected`. The
/// comparison looks at every byte whatever the first difference.
pub fn check_digest(data: &[u8], expected: &[u8; DIGEST_SIZE]) -> bool {
    digest_eq(&sha384(data), expected)
}

/// Whether a computed digest (`found`, possibly hashed in several parts) equals
/// `expected`, looking at every byte whatever the first difference.
pub fn digest_eq(found: &[u8], expected: &[u8; DIGEST_SIZE]) -> bool {
    found.len() == DIGEST_SIZE
        && found
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let mut e820 = [E820Entry::default(); MAX_E820];
        e820[0] = E820Entry {
            addr: 0,
            size: 0x9fc00,
            kind: E820_RAM,
        };
        e820[1] = E820Entry {
            addr: 0x10_0000,
            size: 0x7f0_0000,
            kind: E820_RAM,
        };
        Manifest {
            kernel: Image {
                staging: 0x400_0000,
                load: 0x100_0000,
                size: 0x80_0000,
                sha384: sha384(b"kernel"),
            },
            initrd: Image {
                staging: 0x500_0000,
                load: 0x600_0000,
                size: 0x1000,
                sha384: sha384(b"initrd"),
            },
            cmdline: Image {
                staging: 0x3000,
                load: 0x2_0000,
                size: 12,
                sha384: sha384(b"console=ttyS0"),
            },
            zero_page: 0x7000,
            cc_blob: 0x6000,
            secrets: 0x5000,
            cpuid: 0x4000,
            e820,
            e820_count: 2,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let page = m.to_page();
        assert_eq!(&page[..8], b"CLVRFY01");
        assert_eq!(Manifest::parse(&page), Ok(m));
        assert_eq!(Manifest::parse(&page).unwrap().e820().len(), 2);
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let good = sample().to_page();
        let mutate = |f: &dyn Fn(&mut [u8; PAGE_SIZE])| {
            let mut p = good;
            f(&mut p);
            Manifest::parse(&p)
        };
        assert_eq!(mutate(&|p| p[0] = b'X'), Err(ManifestError::Magic));
        assert_eq!(mutate(&|p| p[8] = 2), Err(ManifestError::Version(2)));
        assert_eq!(mutate(&|p| p[0xC] = 1), Err(ManifestError::Reserved));
        assert_eq!(mutate(&|p| p[4095] = 1), Err(ManifestError::Reserved));
        assert_eq!(
            mutate(&|p| p[OFF_E820_COUNT] = 129),
            Err(ManifestError::E820Count(129))
        );
        // Kernel size 0; initrd wrapping; command line too long.
        assert_eq!(
            mutate(&|p| p[0x20..0x28].fill(0)),
            Err(ManifestError::BadImage(0))
        );
        assert_eq!(
            mutate(&|p| p[0x10 + 72..0x10 + 80].fill(0xff)),
            Err(ManifestError::BadImage(1))
        );
        assert_eq!(
            mutate(&|p| p[0x10 + 144 + 16..0x10 + 144 + 24]
                .copy_from_slice(&(MAX_CMDLINE + 1).to_le_bytes())),
            Err(ManifestError::BadImage(2))
        );
        assert_eq!(
            mutate(&|p| p[OFF_ZERO_PAGE] = 8),
            Err(ManifestError::BadAddress(0x7008))
        );
        assert_eq!(
            mutate(&|p| p[OFF_CPUID + 4] = 1),
            Err(ManifestError::BadAddress(0x1_0000_4000))
        );
        assert_eq!(
            mutate(&|p| p[OFF_E820 + 8..OFF_E820 + 16].fill(0)),
            Err(ManifestError::BadE820(0))
        );
        for e in [
            ManifestError::Magic,
            ManifestError::BadImage(1),
            ManifestError::BadE820(3),
        ] {
            assert!(!e.describe().is_empty());
        }
    }

    #[test]
    fn digests() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            sha384(b"abc")[..8],
            [0xcb, 0x00, 0x75, 0x3f, 0x45, 0xa3, 0x5e, 0x8b]
        );
        let d = sha384(b"kernel");
        assert!(check_digest(b"kernel", &d));
        assert!(!check_digest(b"kernem", &d));
        let mut flipped = d;
        flipped[47] ^= 1;
        assert!(!check_digest(b"kernel", &flipped));
    }
}
