//! The SEV hashes table for measured direct boot.
//!
//! When QEMU boots a kernel directly into an SEV guest it writes a GUID-tagged table of
//! SHA-256 hashes of the kernel, initrd and command line into the page OVMF reserves for it
//! (QEMU `sev_add_kernel_loader_hashes`); OVMF checks the files it is handed against it.
//! Layout (packed): header GUID, `u16` table length (168), then three entries
//! (command line, initrd, kernel) of GUID, `u16` entry length (50), SHA-256; the whole
//! table padded with zeros to a multiple of 16 bytes (176).

use crate::guid::{
    Guid, SEV_CMDLINE_ENTRY, SEV_HASH_TABLE_HEADER, SEV_INITRD_ENTRY, SEV_KERNEL_ENTRY,
};
use ring::digest::{Context, SHA256};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Length of one table entry: GUID, `u16` length, SHA-256.
pub const ENTRY_SIZE: usize = 16 + 2 + 32;
/// Length of the table without padding.
pub const TABLE_SIZE: usize = 16 + 2 + 3 * ENTRY_SIZE;
/// Length of the table padded to 16 bytes, as QEMU writes it.
pub const PADDED_TABLE_SIZE: usize = TABLE_SIZE.div_ceil(16) * 16;
const PAGE_SIZE: usize = 4096;

/// Why the hashes page could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SevHashesError {
    /// The table would not fit in its page at this offset.
    #[error(
        "SEV hashes table ({PADDED_TABLE_SIZE} bytes) does not fit in its page at offset {0:#x}"
    )]
    DoesNotFit(usize),
}

/// SHA-256 hashes of the kernel, initrd and command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the kernel image file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file (of the empty string when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line including its terminating NUL (just `"\0"` when empty).
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// Hashes in-memory contents. `initrd: None` and an empty initrd hash the same;
    /// `cmdline` is given without its NUL, which is appended here as QEMU does.
    pub fn from_contents(kernel: &[u8], initrd: Option<&[u8]>, cmdline: &[u8]) -> Self {
        SevHashes {
            kernel: sha256(kernel),
            initrd: sha256(initrd.unwrap_or_default()),
            cmdline: cmdline_hash(cmdline),
        }
    }

    /// Hashes the kernel and initrd by streaming them from readers (no full copy in memory).
    pub fn from_readers(
        kernel: impl Read,
        initrd: Option<&mut dyn Read>,
        cmdline: &[u8],
    ) -> io::Result<Self> {
        let kernel = sha256_reader(kernel)?;
        let initrd = match initrd {
            Some(r) => sha256_reader(r)?,
            None => sha256(&[]),
        };
        Ok(SevHashes {
            kernel,
            initrd,
            cmdline: cmdline_hash(cmdline),
        })
    }

    /// Hashes a kernel and an optional initrd file, the two in parallel (they are the
    /// bulk of the work of predicting a direct-boot measurement). Errors name the file.
    pub fn from_files(
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &[u8],
    ) -> Result<Self, (PathBuf, io::Error)> {
        let hash_file = |p: &Path| {
            File::open(p)
                .and_then(sha256_reader)
                .map_err(|e| (p.to_path_buf(), e))
        };
        let (kernel, initrd) = std::thread::scope(|scope| {
            let initrd = initrd.map(|p| scope.spawn(move || hash_file(p)));
            let kernel = hash_file(kernel);
            let initrd = match initrd {
                Some(handle) => handle.join().unwrap_or_else(|_| {
                    Err((
                        PathBuf::new(),
                        io::Error::other("initrd hashing thread failed"),
                    ))
                }),
                None => Ok(sha256(&[])),
            };
            (kernel, initrd)
        });
        Ok(SevHashes {
            kernel: kernel?,
            initrd: initrd?,
            cmdline: cmdline_hash(cmdline),
        })
    }

    /// The padded table bytes, exactly as QEMU writes them into guest memory.
    pub fn table(&self) -> [u8; PADDED_TABLE_SIZE] {
        let mut out = [0u8; PADDED_TABLE_SIZE];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(SEV_HASH_TABLE_HEADER.as_bytes());
        put(&(TABLE_SIZE as u16).to_le_bytes());
        for (guid, hash) in [
            (SEV_CMDLINE_ENTRY, &self.cmdline),
            (SEV_INITRD_ENTRY, &self.initrd),
            (SEV_KERNEL_ENTRY, &self.kernel),
        ] {
            put(Guid::as_bytes(&guid));
            put(&(ENTRY_SIZE as u16).to_le_bytes());
            put(hash);
        }
        out
    }

    /// A whole page: zeros with the padded table at `offset_in_page`.
    pub fn page(&self, offset_in_page: usize) -> Result<Box<[u8; PAGE_SIZE]>, SevHashesError> {
        let end = offset_in_page
            .checked_add(PADDED_TABLE_SIZE)
            .filter(|e| *e <= PAGE_SIZE)
            .ok_or(SevHashesError::DoesNotFit(offset_in_page))?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        page[offset_in_page..end].copy_from_slice(&self.table());
        Ok(page)
    }
}

fn finish(h: Context) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Context::new(&SHA256);
    h.update(bytes);
    finish(h)
}

fn cmdline_hash(cmdline: &[u8]) -> [u8; 32] {
    let mut h = Context::new(&SHA256);
    h.update(cmdline);
    h.update(&[0u8]);
    finish(h)
}

fn sha256_reader(mut r: impl Read) -> io::Result<[u8; 32]> {
    let mut h = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(finish(h))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_match_qemu() {
        assert_eq!(ENTRY_SIZE, 50);
        assert_eq!(TABLE_SIZE, 168);
        assert_eq!(PADDED_TABLE_SIZE, 176);
    }

    #[test]
    fn table_layout_and_hashes() {
        let h = SevHashes::from_contents(b"kernel", None, b"");
        // Empty initrd hashes as sha256(""), empty command line as sha256("\0").
        assert_eq!(
            hex(&h.initrd),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&h.cmdline),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let t = h.table();
        assert_eq!(&t[..16], SEV_HASH_TABLE_HEADER.as_bytes());
        assert_eq!(&t[16..18], &168u16.to_le_bytes());
        assert_eq!(&t[18..34], SEV_CMDLINE_ENTRY.as_bytes());
        assert_eq!(&t[34..36], &50u16.to_le_bytes());
        assert_eq!(&t[36..68], &h.cmdline);
        assert_eq!(&t[68..84], SEV_INITRD_ENTRY.as_bytes());
        assert_eq!(&t[118..134], SEV_KERNEL_ENTRY.as_bytes());
        assert_eq!(&t[136..168], &h.kernel);
        assert_eq!(&t[168..], &[0u8; 8]);
    }

    #[test]
    fn readers_agree_with_contents() {
        let kernel = vec![7u8; 200_000];
        let initrd = vec![9u8; 70_000];
        let a = SevHashes::from_contents(&kernel, Some(&initrd), b"console=ttyS0");
        let mut r: &[u8] = &initrd;
        let b = SevHashes::from_readers(&kernel[..], Some(&mut r), b"console=ttyS0").unwrap();
        assert_eq!(a, b);
        let dir = std::env::temp_dir().join(format!("sev-hashes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (k, i) = (dir.join("k"), dir.join("i"));
        std::fs::write(&k, &kernel).unwrap();
        std::fs::write(&i, &initrd).unwrap();
        let c = SevHashes::from_files(&k, Some(&i), b"console=ttyS0").unwrap();
        let missing = SevHashes::from_files(&k, Some(&dir.join("missing")), b"");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(a, c);
        assert_eq!(missing.unwrap_err().0, dir.join("missing"));
    }

    #[test]
    fn page_places_table_and_refuses_overflow() {
        let h = SevHashes::from_contents(b"k", None, b"x");
        let p = h.page(0xc00).unwrap();
        assert_eq!(&p[0xc00..0xc00 + 176], &h.table());
        assert!(p[..0xc00].iter().all(|b| *b == 0));
        assert_eq!(h.page(4000).unwrap_err(), SevHashesError::DoesNotFit(4000));
        assert!(h.page(usize::MAX).is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
