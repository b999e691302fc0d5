//! The SEV-SNP confidential-computing blob (`struct cc_blob_sev_info`, SNP-FACTS §3.1):
//! found through the zero page's `setup_data` list (node type `SETUP_CC_BLOB`, payload a
//! u32 physical address), it tells an SNP guest where its secrets page and CPUID page are.
//!
//! Everything here comes from the loader, so every read is bounded: at most
//! [`MAX_SETUP_DATA`] nodes are walked (a list that loops ends there), and every structure
//! must lie inside one entry of the e820 map and below 4 GiB (the guest's identity map), so
//! junk makes the walk fail with a named error instead of hanging or faulting. The checks
//! on the blob are the ones Linux makes before it trusts it (`snp_init`,
//! `setup_cpuid_table`), so a blob this guest accepts is one Linux accepts too.

use crate::e820::E820Entry;
use crate::tables::PhysMem;

/// Offset of `hdr.setup_data` (u64: first node of the list) in `struct boot_params`.
pub const ZERO_PAGE_SETUP_DATA: u64 = 0x250;
/// `setup_data` type of a CC blob pointer.
pub const SETUP_CC_BLOB: u32 = 7;
/// `cc_blob_sev_info.magic`: "AMDE" little-endian.
pub const CC_BLOB_MAGIC: u32 = 0x4544_4d41;
/// Most `setup_data` nodes walked.
pub const MAX_SETUP_DATA: usize = 32;
/// The only secrets page length Linux accepts.
pub const SECRETS_PAGE_LEN: u32 = 4096;
/// Smallest CPUID page length Linux accepts.
pub const CPUID_PAGE_MIN_LEN: u32 = 4096;
/// Most entries of a CPUID page (`SNP_CPUID_COUNT_MAX`).
pub const CPUID_COUNT_MAX: u32 = 64;
/// Size of `struct cc_blob_sev_info`.
const CC_BLOB_LEN: u64 = 40;
/// Size of a `setup_data` header: next u64, type u32, len u32.
const SETUP_DATA_HEADER_LEN: u64 = 16;
/// End of the guest's identity map: nothing above it can be read.
const IDENTITY_MAP_END: u64 = 1 << 32;

/// A CC blob that passed Linux's checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CcBlob {
    /// Where the blob itself is.
    pub address: u64,
    /// Its `version` field (Linux does not check it).
    pub version: u16,
    /// Physical address of the secrets page.
    pub secrets_phys: u64,
    /// Length of the secrets page (always [`SECRETS_PAGE_LEN`]).
    pub secrets_len: u32,
    /// Physical address of the CPUID page.
    pub cpuid_phys: u64,
    /// Length of the CPUID page.
    pub cpuid_len: u32,
    /// Entries in the CPUID page.
    pub cpuid_count: u32,
}

/// Why the CC blob the loader points at cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CcBlobError {
    /// A `setup_data` node (header or CC blob payload) is not inside the memory map.
    NodeOutsideMemory {
        /// The node's address.
        node: u64,
    },
    /// The list has more than [`MAX_SETUP_DATA`] nodes before a CC blob (or loops).
    TooManyNodes,
    /// A `SETUP_CC_BLOB` node whose payload is shorter than its u32 address.
    PayloadTooShort {
        /// The node's `len`.
        len: u32,
    },
    /// The blob is not inside the memory map.
    BlobOutsideMemory {
        /// The blob's address.
        address: u64,
    },
    /// The blob's magic is not [`CC_BLOB_MAGIC`].
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// `secrets_phys` is 0.
    NoSecretsPage,
    /// `secrets_len` is not [`SECRETS_PAGE_LEN`].
    SecretsLen {
        /// The length found.
        found: u32,
    },
    /// The secrets page is not inside the memory map.
    SecretsOutsideMemory {
        /// `secrets_phys`.
        address: u64,
    },
    /// `cpuid_phys` is 0.
    NoCpuidPage,
    /// `cpuid_len` is below [`CPUID_PAGE_MIN_LEN`].
    CpuidLen {
        /// The length found.
        found: u32,
    },
    /// The CPUID page is not inside the memory map.
    CpuidOutsideMemory {
        /// `cpuid_phys`.
        address: u64,
    },
    /// The CPUID page's count is 0 or above [`CPUID_COUNT_MAX`].
    CpuidCount {
        /// The count found.
        found: u32,
    },
    /// Memory the map covers could not be read.
    Unreadable {
        /// The address.
        address: u64,
    },
}

impl CcBlobError {
    /// What is wrong, and the number it is about.
    pub fn describe(&self) -> (&'static str, u64) {
        match *self {
            Self::NodeOutsideMemory { node } => ("setup_data node outside the e820 map at", node),
            Self::TooManyNodes => (
                "setup_data list longer than the guest walks (or a loop); nodes walked:",
                MAX_SETUP_DATA as u64,
            ),
            Self::PayloadTooShort { len } => ("SETUP_CC_BLOB payload too short: len", len.into()),
            Self::BlobOutsideMemory { address } => ("CC blob outside the e820 map at", address),
            Self::BadMagic { found } => ("CC blob magic is not 0x45444d41 but", found.into()),
            Self::NoSecretsPage => ("CC blob secrets_phys is", 0),
            Self::SecretsLen { found } => ("CC blob secrets_len is not 4096 but", found.into()),
            Self::SecretsOutsideMemory { address } => {
                ("secrets page outside the e820 map at", address)
            }
            Self::NoCpuidPage => ("CC blob cpuid_phys is", 0),
            Self::CpuidLen { found } => ("CC blob cpuid_len is below 4096:", found.into()),
            Self::CpuidOutsideMemory { address } => ("CPUID page outside the e820 map at", address),
            Self::CpuidCount { found } => ("CPUID page count is not in 1..=64 but", found.into()),
            Self::Unreadable { address } => ("cannot read guest memory at", address),
        }
    }
}

/// True if `[address, address + len)` lies inside one entry of `map` (of any type: the
/// map describes memory, device windows are not in it) and below 4 GiB.
pub fn inside_memory(map: &[E820Entry], address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else {
        return false;
    };
    end <= IDENTITY_MAP_END
        && map.iter().any(|e| {
            e.addr <= address && e.addr.checked_add(e.size).is_some_and(|e_end| end <= e_end)
        })
}

fn read<M: PhysMem + ?Sized, const N: usize>(
    mem: &M,
    address: u64,
) -> Result<[u8; N], CcBlobError> {
    let mut buf = [0u8; N];
    if mem.read(address, &mut buf) {
        Ok(buf)
    } else {
        Err(CcBlobError::Unreadable { address })
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from(u32_at(bytes, at)) | u64::from(u32_at(bytes, at + 4)) << 32
}

/// Walks the `setup_data` list of the zero page at `zero_page` for the first
/// `SETUP_CC_BLOB` node and checks the blob it names. `Ok(None)`: the list has no CC blob
/// (not an SNP-style launch).
pub fn find<M: PhysMem + ?Sized>(
    mem: &M,
    zero_page: u64,
    map: &[E820Entry],
) -> Result<Option<CcBlob>, CcBlobError> {
    let mut node = u64_at(&read::<M, 8>(mem, zero_page + ZERO_PAGE_SETUP_DATA)?, 0);
    for _ in 0..MAX_SETUP_DATA {
        if node == 0 {
            return Ok(None);
        }
        if !inside_memory(map, node, SETUP_DATA_HEADER_LEN) {
            return Err(CcBlobError::NodeOutsideMemory { node });
        }
        let header = read::<M, 16>(mem, node)?;
        let (next, kind, len) = (u64_at(&header, 0), u32_at(&header, 8), u32_at(&header, 12));
        if kind == SETUP_CC_BLOB {
            if len < 4 {
                return Err(CcBlobError::PayloadTooShort { len });
            }
            let payload = node + SETUP_DATA_HEADER_LEN;
            if !inside_memory(map, payload, 4) {
                return Err(CcBlobError::NodeOutsideMemory { node });
            }
            let address = u64::from(u32_at(&read::<M, 4>(mem, payload)?, 0));
            return check_blob(mem, address, map).map(Some);
        }
        node = next;
    }
    if node == 0 {
        Ok(None)
    } else {
        Err(CcBlobError::TooManyNodes)
    }
}

/// Reads and checks the blob at `address` and the pages it names.
fn check_blob<M: PhysMem + ?Sized>(
    mem: &M,
    address: u64,
    map: &[E820Entry],
) -> Result<CcBlob, CcBlobError> {
    if !inside_memory(map, address, CC_BLOB_LEN) {
        return Err(CcBlobError::BlobOutsideMemory { address });
    }
    let raw = read::<M, 40>(mem, address)?;
    let magic = u32_at(&raw, 0);
    if magic != CC_BLOB_MAGIC {
        return Err(CcBlobError::BadMagic { found: magic });
    }
    let blob = CcBlob {
        address,
        version: u16_at(&raw, 4),
        secrets_phys: u64_at(&raw, 8),
        secrets_len: u32_at(&raw, 16),
        cpuid_phys: u64_at(&raw, 24),
        cpuid_len: u32_at(&raw, 32),
        cpuid_count: 0,
    };
    if blob.secrets_phys == 0 {
        return Err(CcBlobError::NoSecretsPage);
    }
    if blob.secrets_len != SECRETS_PAGE_LEN {
        return Err(CcBlobError::SecretsLen {
            found: blob.secrets_len,
        });
    }
    if !inside_memory(map, blob.secrets_phys, SECRETS_PAGE_LEN.into()) {
        return Err(CcBlobError::SecretsOutsideMemory {
            address: blob.secrets_phys,
        });
    }
    if blob.cpuid_phys == 0 {
        return Err(CcBlobError::NoCpuidPage);
    }
    if blob.cpuid_len < CPUID_PAGE_MIN_LEN {
        return Err(CcBlobError::CpuidLen {
            found: blob.cpuid_len,
        });
    }
    if !inside_memory(map, blob.cpuid_phys, blob.cpuid_len.into()) {
        return Err(CcBlobError::CpuidOutsideMemory {
            address: blob.cpuid_phys,
        });
    }
    let count = u32_at(&read::<M, 4>(mem, blob.cpuid_phys)?, 0);
    if count == 0 || count > CPUID_COUNT_MAX {
        return Err(CcBlobError::CpuidCount { found: count });
    }
    Ok(CcBlob {
        cpuid_count: count,
        ..blob
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::e820::E820_RAM;

    /// 1 MiB of guest memory at address 0.
    struct Memory(Vec<u8>);

    impl PhysMem for Memory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let start = addr as usize;
            match self.0.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl Memory {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            self.0[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
        }
    }

    const ZERO_PAGE: u64 = 0x7000;
    const NODE: u64 = 0x8000;
    const BLOB: u64 = 0x9000;
    const SECRETS: u64 = 0xa000;
    const CPUID: u64 = 0xb000;

    fn map() -> Vec<E820Entry> {
        vec![E820Entry {
            addr: 0,
            size: 1 << 20,
            kind: E820_RAM,
        }]
    }

    fn node(next: u64, kind: u32, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&next.to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(&len.to_le_bytes());
        n.extend_from_slice(payload);
        n
    }

    fn blob(secrets: u64, secrets_len: u32, cpuid: u64, cpuid_len: u32) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[0..4].copy_from_slice(&CC_BLOB_MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&1u16.to_le_bytes());
        b[8..16].copy_from_slice(&secrets.to_le_bytes());
        b[16..20].copy_from_slice(&secrets_len.to_le_bytes());
        b[24..32].copy_from_slice(&cpuid.to_le_bytes());
        b[32..36].copy_from_slice(&cpuid_len.to_le_bytes());
        b
    }

    /// A good launch: one unrelated node, then the CC blob node.
    fn good() -> Memory {
        let mut m = Memory(vec![0; 1 << 20]);
        m.put(ZERO_PAGE + ZERO_PAGE_SETUP_DATA, &0x8800u64.to_le_bytes());
        m.put(0x8800, &node(NODE, 1, 4, &[0; 4]));
        m.put(
            NODE,
            &node(0, SETUP_CC_BLOB, 8, &(BLOB as u32).to_le_bytes()),
        );
        m.put(BLOB, &blob(SECRETS, 4096, CPUID, 4096));
        m.put(CPUID, &3u32.to_le_bytes());
        m
    }

    #[test]
    fn finds_the_blob_behind_other_nodes() {
        let found = find(&good(), ZERO_PAGE, &map()).unwrap().unwrap();
        assert_eq!(
            found,
            CcBlob {
                address: BLOB,
                version: 1,
                secrets_phys: SECRETS,
                secrets_len: 4096,
                cpuid_phys: CPUID,
                cpuid_len: 4096,
                cpuid_count: 3,
            }
        );
    }

    #[test]
    fn no_setup_data_or_no_cc_node_is_none() {
        let mut m = good();
        m.put(ZERO_PAGE + ZERO_PAGE_SETUP_DATA, &0u64.to_le_bytes());
        assert_eq!(find(&m, ZERO_PAGE, &map()), Ok(None));
        let mut m = good();
        m.put(0x8800, &node(0, 1, 4, &[0; 4]));
        assert_eq!(find(&m, ZERO_PAGE, &map()), Ok(None));
    }

    #[test]
    fn a_looping_list_ends() {
        let mut m = good();
        m.put(0x8800, &node(0x8800, 1, 4, &[0; 4]));
        assert_eq!(find(&m, ZERO_PAGE, &map()), Err(CcBlobError::TooManyNodes));
    }

    #[test]
    fn junk_is_refused_by_name() {
        type Corruption = Box<dyn Fn(&mut Memory)>;
        let cases: Vec<(Corruption, CcBlobError)> = vec![
            (
                Box::new(|m| {
                    m.put(
                        ZERO_PAGE + ZERO_PAGE_SETUP_DATA,
                        &(1u64 << 40).to_le_bytes(),
                    )
                }),
                CcBlobError::NodeOutsideMemory { node: 1 << 40 },
            ),
            (
                Box::new(|m| m.put(0x8800, &node(0xffff_fffc, 1, 4, &[0; 4]))),
                CcBlobError::NodeOutsideMemory { node: 0xffff_fffc },
            ),
            (
                Box::new(|m| m.put(NODE, &node(0, SETUP_CC_BLOB, 3, &[0; 4]))),
                CcBlobError::PayloadTooShort { len: 3 },
            ),
            (
                Box::new(|m| {
                    m.put(
                        NODE,
                        &node(0, SETUP_CC_BLOB, 4, &0xfff_fff0u32.to_le_bytes()),
                    )
                }),
                CcBlobError::BlobOutsideMemory {
                    address: 0xfff_fff0,
                },
            ),
            (
                Box::new(|m| m.put(BLOB, b"AMDF")),
                CcBlobError::BadMagic {
                    found: u32::from_le_bytes(*b"AMDF"),
                },
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(0, 4096, CPUID, 4096))),
                CcBlobError::NoSecretsPage,
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(SECRETS, 8192, CPUID, 4096))),
                CcBlobError::SecretsLen { found: 8192 },
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(0xff800, 4096, CPUID, 4096))),
                CcBlobError::SecretsOutsideMemory { address: 0xff800 },
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(SECRETS, 4096, 0, 4096))),
                CcBlobError::NoCpuidPage,
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(SECRETS, 4096, CPUID, 64))),
                CcBlobError::CpuidLen { found: 64 },
            ),
            (
                Box::new(|m| m.put(BLOB, &blob(SECRETS, 4096, u64::MAX - 10, 4096))),
                CcBlobError::CpuidOutsideMemory {
                    address: u64::MAX - 10,
                },
            ),
            (
                Box::new(|m| m.put(CPUID, &0u32.to_le_bytes())),
                CcBlobError::CpuidCount { found: 0 },
            ),
            (
                Box::new(|m| m.put(CPUID, &65u32.to_le_bytes())),
                CcBlobError::CpuidCount { found: 65 },
            ),
        ];
        for (corrupt, want) in cases {
            let mut m = good();
            corrupt(&mut m);
            assert_eq!(find(&m, ZERO_PAGE, &map()), Err(want));
            // Every error can be printed.
            assert!(!want.describe().0.is_empty());
        }
    }

    #[test]
    fn memory_bounds() {
        let map = [
            E820Entry {
                addr: 0x1000,
                size: 0x1000,
                kind: E820_RAM,
            },
            E820Entry {
                addr: 0xffff_f000,
                size: 0x2000,
                kind: 2,
            },
        ];
        assert!(inside_memory(&map, 0x1000, 0x1000));
        assert!(!inside_memory(&map, 0x1000, 0x1001));
        assert!(!inside_memory(&map, 0xfff, 2));
        assert!(inside_memory(&map, 0xffff_f000, 0x1000));
        assert!(!inside_memory(&map, 0xffff_f000, 0x1001), "above 4 GiB");
        assert!(!inside_memory(&map, u64::MAX, 2));
    }
}
