//! Linux's zero page (`struct boot_params`) and the CC blob, as the verifier builds them
//! for the kernel it checked: the bzImage's setup header copied in, the loader fields
//! set (type 0xFF, LOADED_HIGH, command line, initrd), the e820 map from the manifest,
//! and one setup_data node of type SETUP_CC_BLOB pointing at the blob (SNP-FACTS §3.1:
//! Linux finds the CC blob only there, below 4 GiB, with secrets_len 4096).
//!
//! Offsets are Linux's `arch/x86/include/uapi/asm/bootparam.h` (boot protocol 2.12+).

use crate::manifest::Manifest;

/// Size of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;

const OFF_EXT_RAMDISK_IMAGE: usize = 0x0C0;
const OFF_EXT_RAMDISK_SIZE: usize = 0x0C4;
const OFF_EXT_CMD_LINE_PTR: usize = 0x0C8;
const OFF_E820_ENTRIES: usize = 0x1E8;
const OFF_SETUP_SECTS: usize = 0x1F1;
const OFF_BOOT_FLAG: usize = 0x1FE;
const OFF_JUMP: usize = 0x200;
const OFF_HEADER: usize = 0x202;
const OFF_VERSION: usize = 0x206;
const OFF_TYPE_OF_LOADER: usize = 0x210;
const OFF_LOADFLAGS: usize = 0x211;
const OFF_CODE32_START: usize = 0x214;
const OFF_RAMDISK_IMAGE: usize = 0x218;
const OFF_RAMDISK_SIZE: usize = 0x21C;
const OFF_CMD_LINE_PTR: usize = 0x228;
const OFF_KERNEL_ALIGNMENT: usize = 0x230;
const OFF_RELOCATABLE: usize = 0x234;
const OFF_XLOADFLAGS: usize = 0x236;
const OFF_SETUP_DATA: usize = 0x250;
const OFF_PREF_ADDRESS: usize = 0x258;
const OFF_INIT_SIZE: usize = 0x260;
const OFF_E820_TABLE: usize = 0x2D0;
/// The setup header may not run past here (`edd_mbr_sig_buffer` follows).
const HEADER_LIMIT: usize = 0x290;

const BOOT_FLAG: u16 = 0xAA55;
const HDRS: &[u8; 4] = b"HdrS";
/// Boot protocol 2.12: xloadflags.
const MIN_VERSION: u16 = 0x020C;
const XLF_KERNEL_64: u16 = 1;
const LOADED_HIGH: u8 = 1;
const LOADER_UNDEFINED: u8 = 0xFF;

/// `SETUP_CC_BLOB`.
pub const SETUP_CC_BLOB: u32 = 7;
/// `cc_blob_sev_info.magic` ("AMDE").
pub const CC_BLOB_MAGIC: u32 = 0x4544_4D41;
/// Where the blob sits in its page, after the setup_data node.
pub const CC_BLOB_OFFSET: u64 = 0x20;
/// Bytes of the node and blob.
pub const CC_BLOB_PAGE_USED: usize = 0x20 + 40;

/// Why a kernel or its placement is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// Shorter than its setup sectors, or than the setup header.
    Truncated,
    /// No 0xAA55 boot flag.
    BootFlag,
    /// No "HdrS" magic.
    Magic,
    /// Boot protocol older than 2.12.
    Version(u16),
    /// The kernel has no 64-bit entry (XLF_KERNEL_64 clear).
    No64BitEntry,
    /// The setup header claims to run past 0x290.
    HeaderTooLong,
    /// The load address is not what the kernel accepts (alignment or pref_address).
    LoadAddress(u64),
    /// The kernel's room `[load, load + init_size)` overlaps another structure.
    Overlap(u64),
    /// A pointer the zero page keeps in 32 bits is at or above 4 GiB.
    Above4G(u64),
}

impl BootError {
    /// A description, for the console and the termination reason.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Truncated => "kernel image shorter than its setup header or setup sectors",
            Self::BootFlag => "kernel image has no 0xAA55 boot flag",
            Self::Magic => "kernel image has no HdrS setup header",
            Self::Version(_) => "kernel boot protocol older than 2.12",
            Self::No64BitEntry => "kernel has no 64-bit entry (XLF_KERNEL_64)",
            Self::HeaderTooLong => "kernel setup header runs past 0x290",
            Self::LoadAddress(_) => "kernel load address not accepted by the kernel",
            Self::Overlap(_) => "kernel's init_size room overlaps another structure",
            Self::Above4G(_) => "a zero-page structure lies at or above 4 GiB",
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// What the verifier needs of a bzImage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// Offset of the protected-mode code in the image (after the setup sectors).
    pub code_offset: usize,
    /// The setup header's bytes: `[0x1F1, header_end)`.
    pub header_end: usize,
    /// The kernel's `init_size`: the room it needs at its load address.
    pub init_size: u64,
    /// `kernel_alignment`, when relocatable; `None` when it must load at `pref_address`.
    pub alignment: Option<u64>,
    /// `pref_address`.
    pub pref_address: u64,
}

impl BzImage {
    /// Reads and checks the setup header at the start of `image`, a bzImage of
    /// `total_len` bytes (`image` may hold only its first bytes: the setup sectors).
    pub fn parse(image: &[u8], total_len: u64) -> Result<Self, BootError> {
        if image.len() < HEADER_LIMIT {
            return Err(BootError::Truncated);
        }
        if u16_at(image, OFF_BOOT_FLAG) != BOOT_FLAG {
            return Err(BootError::BootFlag);
        }
        if &image[OFF_HEADER..OFF_HEADER + 4] != HDRS {
            return Err(BootError::Magic);
        }
        let version = u16_at(image, OFF_VERSION);
        if version < MIN_VERSION {
            return Err(BootError::Version(version));
        }
        if u16_at(image, OFF_XLOADFLAGS) & XLF_KERNEL_64 == 0 {
            return Err(BootError::No64BitEntry);
        }
        // The header ends where the 2-byte jump at 0x200 lands.
        let header_end = OFF_HEADER + usize::from(image[OFF_JUMP + 1]);
        if header_end > HEADER_LIMIT {
            return Err(BootError::HeaderTooLong);
        }
        let setup_sects = match image[OFF_SETUP_SECTS] {
            0 => 4,
            n => usize::from(n),
        };
        let code_offset = (setup_sects + 1) * 512;
        if code_offset as u64 >= total_len {
            return Err(BootError::Truncated);
        }
        let alignment = (image[OFF_RELOCATABLE] != 0)
            .then(|| u64::from(u32_at(image, OFF_KERNEL_ALIGNMENT)).max(1));
        let mut pref = [0u8; 8];
        pref.copy_from_slice(&image[OFF_PREF_ADDRESS..OFF_PREF_ADDRESS + 8]);
        Ok(BzImage {
            code_offset,
            header_end,
            init_size: u64::from(u32_at(image, OFF_INIT_SIZE)),
            alignment,
            pref_address: u64::from_le_bytes(pref),
        })
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn low32(what: u64) -> Result<u32, BootError> {
    u32::try_from(what).map_err(|_| BootError::Above4G(what))
}

/// Builds the zero page for the kernel `m.kernel` (a bzImage of `m.kernel.size` bytes
/// whose setup sectors are `setup`) placed as `m` says, into `out`; returns the kernel's
/// 64-bit entry (load address + 0x200).
pub fn build(setup: &[u8], m: &Manifest, out: &mut [u8; ZERO_PAGE_SIZE]) -> Result<u64, BootError> {
    let bz = BzImage::parse(setup, m.kernel.size)?;
    let load = m.kernel.load;
    let ok_address = match bz.alignment {
        Some(align) => load.is_multiple_of(align),
        None => load == bz.pref_address,
    };
    if !ok_address {
        return Err(BootError::LoadAddress(load));
    }
    let code_len = m.kernel.size - bz.code_offset as u64;
    let room = (load, load.saturating_add(bz.init_size.max(code_len)));
    let others = [
        (m.zero_page, m.zero_page + ZERO_PAGE_SIZE as u64),
        (m.cc_blob, m.cc_blob + 4096),
        (
            m.cmdline.load,
            m.cmdline.load.saturating_add(m.cmdline.size + 1),
        ),
        (m.initrd.load, m.initrd.load.saturating_add(m.initrd.size)),
        (m.secrets, m.secrets + 4096),
        (m.cpuid, m.cpuid + 4096),
    ];
    if let Some(other) = others.iter().find(|o| o.1 > o.0 && overlaps(room, **o)) {
        return Err(BootError::Overlap(other.0));
    }
    out.fill(0);
    out[OFF_SETUP_SECTS..bz.header_end].copy_from_slice(&setup[OFF_SETUP_SECTS..bz.header_end]);
    out[OFF_TYPE_OF_LOADER] = LOADER_UNDEFINED;
    out[OFF_LOADFLAGS] |= LOADED_HIGH;
    put_u32(out, OFF_CODE32_START, low32(load)?);
    let cmdline = m.cmdline.load;
    put_u32(out, OFF_CMD_LINE_PTR, cmdline as u32);
    put_u32(out, OFF_EXT_CMD_LINE_PTR, (cmdline >> 32) as u32);
    if m.initrd.size > 0 {
        let size = u32::try_from(m.initrd.size).map_err(|_| BootError::Above4G(m.initrd.size))?;
        put_u32(out, OFF_RAMDISK_IMAGE, m.initrd.load as u32);
        put_u32(out, OFF_EXT_RAMDISK_IMAGE, (m.initrd.load >> 32) as u32);
        put_u32(out, OFF_RAMDISK_SIZE, size);
        put_u32(out, OFF_EXT_RAMDISK_SIZE, 0);
    }
    // SNP-FACTS §3.1: the CC blob is found through setup_data, below 4 GiB.
    low32(m.cc_blob)?;
    put_u64(out, OFF_SETUP_DATA, m.cc_blob);
    let e820 = m.e820();
    out[OFF_E820_ENTRIES] = e820.len() as u8;
    for (i, e) in e820.iter().enumerate() {
        let at = OFF_E820_TABLE + i * 20;
        put_u64(out, at, e.addr);
        put_u64(out, at + 8, e.size);
        put_u32(out, at + 16, e.kind);
    }
    Ok(load + 0x200)
}

/// The setup_data node (type SETUP_CC_BLOB) and the `cc_blob_sev_info` after it, as the
/// bytes to write at `m.cc_blob`.
pub fn cc_blob(m: &Manifest) -> [u8; CC_BLOB_PAGE_USED] {
    let mut b = [0u8; CC_BLOB_PAGE_USED];
    let blob = m.cc_blob + CC_BLOB_OFFSET;
    // struct setup_data { u64 next; u32 type; u32 len; u8 data[]; }: data = the blob's
    // address (u32, as Linux reads it).
    put_u32(&mut b, 8, SETUP_CC_BLOB);
    put_u32(&mut b, 12, 4);
    put_u32(&mut b, 16, blob as u32);
    let at = CC_BLOB_OFFSET as usize;
    put_u32(&mut b, at, CC_BLOB_MAGIC);
    b[at + 4..at + 6].copy_from_slice(&1u16.to_le_bytes());
    put_u64(&mut b, at + 8, m.secrets);
    put_u32(&mut b, at + 16, 4096);
    put_u64(&mut b, at + 24, m.cpuid);
    put_u32(&mut b, at + 32, 4096);
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manifest::tests::sample;

    /// A minimal bzImage: 1 setup sector + `code` bytes, protocol 2.15, 64-bit,
    /// relocatable with 2 MiB alignment, init_size 16 MiB.
    fn bzimage(code: usize) -> Vec<u8> {
        let mut img = vec![0u8; 1024 + code];
        img[OFF_SETUP_SECTS] = 1;
        img[OFF_BOOT_FLAG..OFF_BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        img[OFF_JUMP] = 0xEB;
        img[OFF_JUMP + 1] = 0x6A; // header ends at 0x26C
        img[OFF_HEADER..OFF_HEADER + 4].copy_from_slice(HDRS);
        img[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&0x020Fu16.to_le_bytes());
        img[OFF_KERNEL_ALIGNMENT..OFF_KERNEL_ALIGNMENT + 4]
            .copy_from_slice(&0x20_0000u32.to_le_bytes());
        img[OFF_RELOCATABLE] = 1;
        img[OFF_XLOADFLAGS..OFF_XLOADFLAGS + 2].copy_from_slice(&3u16.to_le_bytes());
        img[OFF_INIT_SIZE..OFF_INIT_SIZE + 4].copy_from_slice(&(16u32 << 20).to_le_bytes());
        img[0x238] = 0xff; // cmdline_size, a header field that must be copied
        img
    }

    #[test]
    fn builds_the_zero_page() {
        let mut m = sample();
        let img = bzimage(4096);
        m.kernel.size = img.len() as u64;
        let mut zp = [0xAAu8; ZERO_PAGE_SIZE];
        let entry = build(&img, &m, &mut zp).unwrap();
        assert_eq!(entry, m.kernel.load + 0x200);
        assert_eq!(u16_at(&zp, OFF_BOOT_FLAG), BOOT_FLAG);
        assert_eq!(&zp[OFF_HEADER..OFF_HEADER + 4], HDRS);
        assert_eq!(zp[0x238], 0xff);
        assert_eq!(zp[0x26C], 0, "nothing past the header is copied");
        assert_eq!(zp[OFF_TYPE_OF_LOADER], 0xFF);
        assert_eq!(zp[OFF_LOADFLAGS] & 1, 1);
        assert_eq!(u32_at(&zp, OFF_CMD_LINE_PTR), m.cmdline.load as u32);
        assert_eq!(u32_at(&zp, OFF_RAMDISK_IMAGE), m.initrd.load as u32);
        assert_eq!(u32_at(&zp, OFF_RAMDISK_SIZE), 0x1000);
        assert_eq!(u32_at(&zp, OFF_SETUP_DATA), m.cc_blob as u32);
        assert_eq!(zp[OFF_E820_ENTRIES], 2);
        assert_eq!(u32_at(&zp, OFF_E820_TABLE + 20), 0x10_0000);
        assert_eq!(u32_at(&zp, OFF_E820_TABLE + 20 + 16), 1);
        // The rest of the page is zero (the 0xAA fill is gone).
        assert!(zp[0x2D0 + 40..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_bad_kernels_and_placements() {
        let mut m = sample();
        let mut zp = [0u8; ZERO_PAGE_SIZE];
        let good = bzimage(4096);
        m.kernel.size = good.len() as u64;
        let case = |f: &dyn Fn(&mut Vec<u8>), m: &Manifest| {
            let mut img = good.clone();
            f(&mut img);
            let mut m = *m;
            m.kernel.size = img.len() as u64;
            build(&img, &m, &mut [0u8; ZERO_PAGE_SIZE])
        };
        assert_eq!(case(&|i| i.truncate(0x200), &m), Err(BootError::Truncated));
        assert_eq!(case(&|i| i.truncate(1024), &m), Err(BootError::Truncated));
        assert_eq!(
            case(&|i| i[OFF_BOOT_FLAG] = 0, &m),
            Err(BootError::BootFlag)
        );
        assert_eq!(case(&|i| i[OFF_HEADER] = b'h', &m), Err(BootError::Magic));
        assert_eq!(
            case(&|i| i[OFF_VERSION] = 0x0B, &m),
            Err(BootError::Version(0x020B))
        );
        assert_eq!(
            case(&|i| i[OFF_XLOADFLAGS] = 2, &m),
            Err(BootError::No64BitEntry)
        );
        assert_eq!(
            case(&|i| i[OFF_JUMP + 1] = 0x90, &m),
            Err(BootError::HeaderTooLong)
        );
        // setup_sects = 0 means 4: 5 sectors are more than a 2 KiB image holds.
        assert_eq!(
            case(
                &|i| {
                    i.truncate(2048);
                    i[OFF_SETUP_SECTS] = 0
                },
                &m
            ),
            Err(BootError::Truncated)
        );
        let mut unaligned = m;
        unaligned.kernel.load += 0x1000;
        assert_eq!(
            case(&|_| {}, &unaligned),
            Err(BootError::LoadAddress(unaligned.kernel.load))
        );
        // Not relocatable: only pref_address is accepted.
        assert_eq!(
            case(&|i| i[OFF_RELOCATABLE] = 0, &m),
            Err(BootError::LoadAddress(m.kernel.load))
        );
        // The initrd inside the kernel's init_size room.
        let mut crowded = m;
        crowded.initrd.load = m.kernel.load + (8 << 20);
        assert_eq!(
            case(&|_| {}, &crowded),
            Err(BootError::Overlap(crowded.initrd.load))
        );
        let mut high = m;
        high.cc_blob = 1 << 32;
        assert_eq!(case(&|_| {}, &high), Err(BootError::Above4G(1 << 32)));
        assert!(build(&good, &m, &mut zp).is_ok());
        for e in [
            BootError::Truncated,
            BootError::Overlap(0),
            BootError::Above4G(0),
        ] {
            assert!(!e.describe().is_empty());
        }
    }

    #[test]
    fn cc_blob_layout() {
        let m = sample();
        let b = cc_blob(&m);
        assert_eq!(u32_at(&b, 8), SETUP_CC_BLOB);
        assert_eq!(u32_at(&b, 12), 4);
        assert_eq!(u32_at(&b, 16) as u64, m.cc_blob + 0x20);
        assert_eq!(u32_at(&b, 0x20), 0x4544_4D41);
        assert_eq!(u32_at(&b, 0x28) as u64, m.secrets);
        assert_eq!(u32_at(&b, 0x30), 4096);
        assert_eq!(u32_at(&b, 0x38) as u64, m.cpuid);
        assert_eq!(u32_at(&b, 0x40), 4096);
    }
}
