//! OVMF's footer GUID table.
//!
//! The reset vector area of an OVMF image ends with a table of GUID-tagged entries that
//! QEMU and measurement tools read. Layout (edk2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`):
//! the last 0x20 bytes of the image are the reset vector itself; just before them sits the
//! footer entry (`u16 size`, footer GUID), where `size` is the length of the whole table
//! including that footer entry. Each entry is `data`, then `u16 size` (data + 18), then its
//! GUID, so the table is walked backwards from the footer.

use crate::guid::{Guid, OVMF_TABLE_FOOTER};
use std::ops::Range;

/// Bytes between the footer entry and the end of the image (the reset vector).
pub const RESET_VECTOR_TAIL: usize = 0x20;
/// Size of an entry header: `u16` size followed by a 16-byte GUID.
pub const ENTRY_HEADER_SIZE: usize = 18;

/// Why the footer GUID table could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FooterError {
    /// The image cannot even hold the reset vector and a footer entry.
    #[error("image is {0} bytes, too small to hold an OVMF footer GUID table")]
    TooSmall(usize),
    /// The GUID just before the reset vector is not the OVMF table footer GUID.
    #[error("no OVMF footer GUID table: expected GUID {OVMF_TABLE_FOOTER} at {offset:#x} from the image start, found {found}")]
    NoFooter {
        /// Where the footer GUID was expected.
        offset: usize,
        /// What was found there.
        found: Guid,
    },
    /// The footer says the table is larger than the bytes in front of it.
    #[error("OVMF footer table length {length} is out of range (must be 18..={max})")]
    BadTableLength {
        /// Length the footer declares.
        length: usize,
        /// Largest length that fits in the image.
        max: usize,
    },
    /// An entry's size field is smaller than its own header or runs past the table start.
    #[error("OVMF footer table entry {guid} declares size {size}, but only {room} bytes of table remain (and at least 18 are needed)")]
    BadEntrySize {
        /// GUID of the entry.
        guid: Guid,
        /// Size it declares.
        size: usize,
        /// Bytes left in the table, including this entry.
        room: usize,
    },
    /// Bytes are left over at the start of the table that do not form an entry.
    #[error("OVMF footer table has {0} stray bytes before its first entry")]
    TrailingBytes(usize),
    /// The same GUID appears twice.
    #[error("OVMF footer table lists GUID {0} twice")]
    DuplicateEntry(Guid),
}

/// One entry of the footer table: its GUID and where its data sits in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterEntry {
    /// The entry's GUID.
    pub guid: Guid,
    /// Byte range of the entry's data (without its size and GUID) inside the image.
    pub data: Range<usize>,
}

/// The parsed footer GUID table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FooterTable {
    entries: Vec<FooterEntry>,
}

impl FooterTable {
    /// Parses the footer table at the end of `image`.
    pub fn parse(image: &[u8]) -> Result<Self, FooterError> {
        let footer_start = image
            .len()
            .checked_sub(RESET_VECTOR_TAIL + ENTRY_HEADER_SIZE)
            .ok_or(FooterError::TooSmall(image.len()))?;
        let (size, guid) = read_header(image, footer_start);
        if guid != OVMF_TABLE_FOOTER {
            return Err(FooterError::NoFooter {
                offset: footer_start + 2,
                found: guid,
            });
        }
        let max = footer_start + ENTRY_HEADER_SIZE;
        if size < ENTRY_HEADER_SIZE || size > max {
            return Err(FooterError::BadTableLength { length: size, max });
        }
        let table_start = footer_start + ENTRY_HEADER_SIZE - size;
        let mut end = footer_start; // exclusive end of the not-yet-walked part
        let mut entries: Vec<FooterEntry> = Vec::new();
        while end - table_start >= ENTRY_HEADER_SIZE {
            let header = end - ENTRY_HEADER_SIZE;
            let (entry_size, guid) = read_header(image, header);
            let room = end - table_start;
            if entry_size < ENTRY_HEADER_SIZE || entry_size > room {
                return Err(FooterError::BadEntrySize {
                    guid,
                    size: entry_size,
                    room,
                });
            }
            if entries.iter().any(|e| e.guid == guid) {
                return Err(FooterError::DuplicateEntry(guid));
            }
            entries.push(FooterEntry {
                guid,
                data: end - entry_size..header,
            });
            end -= entry_size;
        }
        if end != table_start {
            return Err(FooterError::TrailingBytes(end - table_start));
        }
        log::debug!("OVMF footer table: {} entries", entries.len());
        Ok(FooterTable { entries })
    }

    /// The entries, in the order they are walked (from the footer backwards).
    pub fn entries(&self) -> &[FooterEntry] {
        &self.entries
    }

    /// The data range of the entry with `guid`, if present.
    pub fn find(&self, guid: &Guid) -> Option<Range<usize>> {
        self.entries
            .iter()
            .find(|e| &e.guid == guid)
            .map(|e| e.data.clone())
    }
}

/// Reads an 18-byte entry header at `at`; the caller guarantees `at + 18 <= image.len()`.
fn read_header(image: &[u8], at: usize) -> (usize, Guid) {
    let mut size = [0u8; 2];
    let mut guid = [0u8; 16];
    if let Some(h) = image.get(at..at + ENTRY_HEADER_SIZE) {
        size.copy_from_slice(&h[..2]);
        guid.copy_from_slice(&h[2..]);
    }
    (
        usize::from(u16::from_le_bytes(size)),
        Guid::from_bytes(guid),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::guid::{SEV_ES_RESET_BLOCK, SEV_HASH_TABLE_RV};

    fn entry(guid: Guid, data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.extend_from_slice(&u16::try_from(data.len() + 18).unwrap().to_le_bytes());
        v.extend_from_slice(guid.as_bytes());
        v
    }

    fn image_with_table(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut table: Vec<u8> = entries.concat();
        let len = table.len() + 18;
        table.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes());
        table.extend_from_slice(OVMF_TABLE_FOOTER.as_bytes());
        let mut image = vec![0xccu8; 256];
        image.extend_from_slice(&table);
        image.extend_from_slice(&[0x90; RESET_VECTOR_TAIL]);
        image
    }

    #[test]
    fn walks_entries_backwards() {
        let image = image_with_table(&[
            entry(SEV_HASH_TABLE_RV, &[1, 2, 3, 4, 5, 6, 7, 8]),
            entry(SEV_ES_RESET_BLOCK, &[4, 0xb0, 0x80, 0]),
        ]);
        let table = FooterTable::parse(&image).unwrap();
        assert_eq!(table.entries().len(), 2);
        assert_eq!(table.entries()[0].guid, SEV_ES_RESET_BLOCK);
        let r = table.find(&SEV_ES_RESET_BLOCK).unwrap();
        assert_eq!(&image[r], &[4, 0xb0, 0x80, 0]);
        let r = table.find(&SEV_HASH_TABLE_RV).unwrap();
        assert_eq!(&image[r], &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn refuses_missing_footer_and_bad_lengths() {
        assert_eq!(
            FooterTable::parse(&[0u8; 10]),
            Err(FooterError::TooSmall(10))
        );
        assert!(matches!(
            FooterTable::parse(&[0u8; 4096]),
            Err(FooterError::NoFooter { .. })
        ));
        let mut image = image_with_table(&[entry(SEV_ES_RESET_BLOCK, &[0; 4])]);
        let footer_size_at = image.len() - RESET_VECTOR_TAIL - 18;
        image[footer_size_at..footer_size_at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(
            FooterTable::parse(&image),
            Err(FooterError::BadTableLength { .. })
        ));
        // Entry size smaller than its header.
        let mut image = image_with_table(&[entry(SEV_ES_RESET_BLOCK, &[0; 4])]);
        let entry_size_at = image.len() - RESET_VECTOR_TAIL - 36;
        image[entry_size_at..entry_size_at + 2].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            FooterTable::parse(&image),
            Err(FooterError::BadEntrySize { size: 3, .. })
        ));
    }

    #[test]
    fn refuses_duplicates() {
        let image = image_with_table(&[
            entry(SEV_ES_RESET_BLOCK, &[0; 4]),
            entry(SEV_ES_RESET_BLOCK, &[0; 4]),
        ]);
        assert_eq!(
            FooterTable::parse(&image),
            Err(FooterError::DuplicateEntry(SEV_ES_RESET_BLOCK))
        );
    }
}
