//! Guest memory: the size a user asks for, laid out around the MMIO gap below 4 GiB, and
//! backed by anonymous host mappings.

use std::fmt;
use std::str::FromStr;

use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};

use crate::boot::layout::{MMIO_GAP_END, MMIO_GAP_START};

/// The guest memory type used by every part of the monitor.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Smallest guest the monitor builds: room for the boot structures below 1 MiB, a small
/// kernel and its initrd.
pub const MIN_MEMORY: u64 = 16 * MIB;
/// Largest guest the monitor builds, whatever the host has.
pub const MAX_MEMORY: u64 = 64 * GIB;
/// Guest page size: memory sizes must be a multiple of it.
pub const PAGE_SIZE: u64 = 4 * KIB;

/// Errors about a memory size or about creating guest memory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The size is not a number with an optional unit.
    #[error("memory size {0:?} is not a size: use a number of bytes or a number with a unit K, M, G or T (for example 512M or 2GiB)")]
    Unparsable(String),
    /// The size overflows 64 bits.
    #[error("memory size {0:?} is too large to represent")]
    Overflow(String),
    /// The size is below the minimum.
    #[error("memory size {size} is too small: a guest needs at least {min}")]
    TooSmall {
        /// Requested size.
        size: MemorySize,
        /// Minimum size.
        min: MemorySize,
    },
    /// The size is above the maximum or the host's memory.
    #[error("memory size {size} is too large: at most {max} ({why})")]
    TooLarge {
        /// Requested size.
        size: MemorySize,
        /// Largest size allowed.
        max: MemorySize,
        /// Which limit applies.
        why: &'static str,
    },
    /// The size is not page aligned.
    #[error("memory size {0} is not a multiple of 4 KiB")]
    Unaligned(MemorySize),
    /// The host refused the mapping.
    #[error("cannot map {size} of guest memory: {reason}")]
    Map {
        /// Requested size.
        size: MemorySize,
        /// What the host said.
        reason: String,
    },
}

/// A guest memory size in bytes, parsed from text such as `512M`, `1G`, `2GiB` or
/// `67108864`. Binary units: K, M, G, T (with optional `B` or `iB`) are powers of 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if b >= unit && b.is_multiple_of(unit) {
                return write!(f, "{} {name}", b / unit);
            }
        }
        if b >= MIB {
            return write!(f, "{b} bytes ({:.1} MiB)", b as f64 / MIB as f64);
        }
        write!(f, "{b} bytes")
    }
}

impl FromStr for MemorySize {
    type Err = MemoryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let s = text.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(MemoryError::Unparsable(text.to_string()));
        }
        let number: u64 = digits
            .parse()
            .map_err(|_| MemoryError::Overflow(text.to_string()))?;
        let multiplier = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => KIB,
            "m" | "mb" | "mib" => MIB,
            "g" | "gb" | "gib" => GIB,
            "t" | "tb" | "tib" => TIB,
            _ => return Err(MemoryError::Unparsable(text.to_string())),
        };
        number
            .checked_mul(multiplier)
            .map(MemorySize)
            .ok_or_else(|| MemoryError::Overflow(text.to_string()))
    }
}

/// Checks a guest memory size against the minimum, the maximum and the host's RAM
/// (`host_ram`, when known).
pub fn validate_size(size: MemorySize, host_ram: Option<u64>) -> Result<(), MemoryError> {
    if size.0 < MIN_MEMORY {
        return Err(MemoryError::TooSmall {
            size,
            min: MemorySize(MIN_MEMORY),
        });
    }
    if size.0 > MAX_MEMORY {
        return Err(MemoryError::TooLarge {
            size,
            max: MemorySize(MAX_MEMORY),
            why: "the monitor's limit",
        });
    }
    if let Some(host) = host_ram {
        if size.0 > host {
            return Err(MemoryError::TooLarge {
                size,
                max: MemorySize(host),
                why: "the host's RAM",
            });
        }
    }
    if !size.0.is_multiple_of(PAGE_SIZE) {
        return Err(MemoryError::Unaligned(size));
    }
    Ok(())
}

/// The host's total RAM from /proc/meminfo, if it can be read.
pub fn host_ram() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(KIB)
}

/// Guest RAM ranges for `size` bytes: from 0 up to the MMIO gap, the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}

/// End (exclusive) of the RAM below the MMIO gap.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

/// Alignment of guest memory in the host's address space: 2 MiB, so that the host (or an
/// outer hypervisor's KVM, in nested setups) can back the guest with huge pages, as QEMU
/// and Cloud Hypervisor do. Without it every 4 KiB of guest RAM costs its own nested page
/// fault.
const HOST_ALIGNMENT: usize = 2 << 20;

/// Maps `len` bytes of anonymous memory at a [`HOST_ALIGNMENT`]-aligned host address and
/// asks for transparent huge pages on it.
///
/// The mapping lives for the rest of the process (the monitor runs one VM per process):
/// vm-memory only unmaps regions it mapped itself, and it cannot map at an aligned
/// address.
fn map_aligned(len: usize, size: MemorySize) -> Result<*mut u8, MemoryError> {
    let map_err = |reason: String| MemoryError::Map { size, reason };
    let padded = len
        .checked_add(HOST_ALIGNMENT)
        .ok_or_else(|| map_err("size overflows the address space".into()))?;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: a fresh anonymous mapping with a null hint touches no existing memory; the
    // result is checked below.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), padded, prot, flags, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(map_err(std::io::Error::last_os_error().to_string()));
    }
    let start = (base as usize).next_multiple_of(HOST_ALIGNMENT);
    let head = start - base as usize;
    let tail = padded - head - len;
    // SAFETY: [base, base + head) and [start + len, start + len + tail) lie inside the
    // mapping just created, which nothing else references yet; unmapping them leaves
    // exactly [start, start + len) mapped.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: advice on our own mapping; failure (THP disabled) only costs performance.
    if unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) } != 0 {
        log::debug!(
            "no transparent huge pages for guest memory: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(start as *mut u8)
}

/// Maps memory of a validated `size` for building or predicting a guest image that no VM
/// runs on: vm-memory's own mappings, unmapped when the last clone is dropped. A process
/// may make any number of these (`measure`, `id-block` and the fuzz targets predict many
/// launches).
pub fn create_guest_memory(size: MemorySize) -> Result<GuestMemoryMmap, MemoryError> {
    let ranges = ram_ranges(size.0)
        .into_iter()
        .map(|(start, len)| {
            usize::try_from(len)
                .map(|len| (start, len))
                .map_err(|_| MemoryError::TooLarge {
                    size,
                    max: MemorySize(usize::MAX as u64),
                    why: "the host's address space",
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_ranges(&ranges).map_err(|e| MemoryError::Map {
        size,
        reason: e.to_string(),
    })
}

/// Maps the RAM of the one VM this process runs: each region at a 2 MiB-aligned host
/// address with transparent huge pages asked for (see `HOST_ALIGNMENT`). vm-memory
/// cannot map at an aligned address and does not unmap mappings it did not make, so these
/// live until the process exits; use [`create_guest_memory`] for anything else.
pub fn create_vm_memory(size: MemorySize) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(size.0) {
        let len = usize::try_from(len).map_err(|_| MemoryError::TooLarge {
            size,
            max: MemorySize(usize::MAX as u64),
            why: "the host's address space",
        })?;
        let host = map_aligned(len, size)?;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: [host, host + len) is the live anonymous mapping map_aligned just made
        // with these protections and flags, and it is never unmapped.
        let mapping = unsafe { MmapRegion::build_raw(host, len, prot, flags) }.map_err(|e| {
            MemoryError::Map {
                size,
                reason: e.to_string(),
            }
        })?;
        let region = GuestRegionMmap::new(mapping, start).ok_or_else(|| MemoryError::Map {
            size,
            reason: format!(
                "region at {:#x} wraps around the guest address space",
                start.0
            ),
        })?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Map {
        size,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn parses_units() {
        let p = |s: &str| s.parse::<MemorySize>().map(|m| m.0);
        assert_eq!(p("64M"), Ok(64 * MIB));
        assert_eq!(p("1G"), Ok(GIB));
        assert_eq!(p("512MiB"), Ok(512 * MIB));
        assert_eq!(p("512mb"), Ok(512 * MIB));
        assert_eq!(p("2 GiB"), Ok(2 * GIB));
        assert_eq!(p("67108864"), Ok(64 * MIB));
        assert_eq!(p("4096k"), Ok(4 * MIB));
        assert_eq!(p("1T"), Ok(TIB));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in ["", "M", "-1G", "1.5G", "12X", "G1", "1GG", "0x100"] {
            assert!(
                matches!(bad.parse::<MemorySize>(), Err(MemoryError::Unparsable(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            "99999999999999999999".parse::<MemorySize>(),
            Err(MemoryError::Overflow(_))
        ));
        assert!(matches!(
            "100000000T".parse::<MemorySize>(),
            Err(MemoryError::Overflow(_))
        ));
    }

    #[test]
    fn validates_limits() {
        assert!(matches!(
            validate_size(MemorySize(8 * MIB), None),
            Err(MemoryError::TooSmall { .. })
        ));
        assert!(matches!(
            validate_size(MemorySize(128 * GIB), None),
            Err(MemoryError::TooLarge {
                why: "the monitor's limit",
                ..
            })
        ));
        assert!(matches!(
            validate_size(MemorySize(8 * GIB), Some(4 * GIB)),
            Err(MemoryError::TooLarge {
                why: "the host's RAM",
                ..
            })
        ));
        assert_eq!(
            validate_size(MemorySize(64 * MIB + 1), None),
            Err(MemoryError::Unaligned(MemorySize(64 * MIB + 1)))
        );
        assert_eq!(validate_size(MemorySize(64 * MIB), Some(GIB)), Ok(()));
        let msg = validate_size(MemorySize(MIB), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "memory size 1 MiB is too small: a guest needs at least 16 MiB"
        );
    }

    #[test]
    fn splits_around_the_mmio_gap() {
        assert_eq!(ram_ranges(GIB), vec![(GuestAddress(0), GIB)]);
        assert_eq!(
            ram_ranges(4 * GIB),
            vec![(GuestAddress(0), 3 * GIB), (GuestAddress(4 * GIB), GIB)]
        );
        assert_eq!(low_ram_end(4 * GIB), 3 * GIB);
        assert_eq!(low_ram_end(64 * MIB), 64 * MIB);
    }

    #[test]
    fn maps_memory_above_4g_at_huge_page_aligned_host_addresses() {
        let mem = create_vm_memory(MemorySize(3 * GIB + 64 * MIB)).unwrap();
        let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
        assert_eq!(regions, vec![(0, 3 * GIB), (4 * GIB, 64 * MIB)]);
        for region in mem.iter() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap();
            assert_eq!(host as usize % HOST_ALIGNMENT, 0);
        }
        // The memory is usable and zeroed.
        use vm_memory::Bytes;
        let addr = GuestAddress(4 * GIB + 64 * MIB - 8);
        assert_eq!(mem.read_obj::<u64>(addr).unwrap(), 0);
        mem.write_obj(0x1234_5678u64, addr).unwrap();
        assert_eq!(mem.read_obj::<u64>(addr).unwrap(), 0x1234_5678);
    }

    fn vm_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * KIB
    }

    /// Predicting launches must not leak: each prediction maps the guest's whole memory
    /// (the fuzz targets and `measure` make thousands). 256 predictions of 256 MiB would
    /// leave 64 GiB of address space behind; other tests of this process running at the
    /// same time map far less than the 16 GiB allowed.
    #[test]
    fn prediction_memory_is_unmapped_when_dropped() {
        let before = vm_size();
        for _ in 0..256 {
            let mem = create_guest_memory(MemorySize(256 * MIB)).unwrap();
            vm_memory::Bytes::write_obj(&mem, 0xa5u8, GuestAddress(128 * MIB)).unwrap();
        }
        let grown = vm_size().saturating_sub(before);
        assert!(grown < 16 * GIB, "address space grew by {grown} bytes");
    }
}
