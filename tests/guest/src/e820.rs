//! Checks of the memory map the loader handed over (e820 from the zero page, or the PVH
//! memory map, which uses the same entry types). Pure, shared with the host tests.

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One memory map entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type (1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable).
    pub kind: u32,
}

/// What a good map adds up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Summary {
    /// Number of entries.
    pub entries: usize,
    /// Sum of the RAM entries' sizes.
    pub ram: u64,
    /// End of the highest RAM entry.
    pub ram_top: u64,
}

/// Why a map was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Error {
    /// The map is empty.
    Empty,
    /// Entry `index` has zero size or wraps past 2^64.
    BadEntry {
        /// Index of the entry.
        index: usize,
    },
    /// Entry `index` starts before the previous one.
    NotSorted {
        /// Index of the entry.
        index: usize,
    },
    /// Entry `index` starts before the previous one ends.
    Overlap {
        /// Index of the entry.
        index: usize,
    },
    /// There is no RAM entry at all.
    NoRam,
    /// RAM does not match the expected size.
    RamSize {
        /// The `cloister_test.mem=` expectation.
        expected: u64,
        /// Sum of the RAM entries.
        found: u64,
    },
}

/// Legacy hole a PC memory map may leave out of RAM below 1 MiB.
pub const LEGACY_HOLE: u64 = 1 << 20;

/// Checks that `map` is sorted, non-overlapping and made of non-empty entries, and, when
/// `expected_ram` is given, that its RAM adds up to at most `expected_ram` and at least
/// `expected_ram - 1 MiB` (a PC map leaves part of the first MiB out of RAM).
pub fn check(map: &[E820Entry], expected_ram: Option<u64>) -> Result<E820Summary, E820Error> {
    if map.is_empty() {
        return Err(E820Error::Empty);
    }
    let mut ram: u64 = 0;
    let mut ram_top = 0;
    let mut prev_end: Option<u64> = None;
    let mut prev_start = 0;
    for (index, entry) in map.iter().enumerate() {
        let end = match entry.addr.checked_add(entry.size) {
            Some(end) if entry.size > 0 => end,
            _ => return Err(E820Error::BadEntry { index }),
        };
        if let Some(prev_end) = prev_end {
            if entry.addr < prev_start {
                return Err(E820Error::NotSorted { index });
            }
            if entry.addr < prev_end {
                return Err(E820Error::Overlap { index });
            }
        }
        prev_start = entry.addr;
        prev_end = Some(end);
        if entry.kind == E820_RAM {
            ram = ram.saturating_add(entry.size);
            ram_top = ram_top.max(end);
        }
    }
    if ram == 0 {
        return Err(E820Error::NoRam);
    }
    if let Some(expected) = expected_ram {
        if ram > expected || ram < expected.saturating_sub(LEGACY_HOLE) {
            return Err(E820Error::RamSize {
                expected,
                found: ram,
            });
        }
    }
    Ok(E820Summary {
        entries: map.len(),
        ram,
        ram_top,
    })
}

/// Drops empty entries and sorts the rest by address, in place; returns the kept part.
pub fn normalize(map: &mut [E820Entry]) -> &[E820Entry] {
    let mut kept = 0;
    for i in 0..map.len() {
        if map[i].size != 0 {
            map[kept] = map[i];
            kept += 1;
        }
    }
    let map = &mut map[..kept];
    // Insertion sort: maps are short and this needs no allocation.
    for i in 1..map.len() {
        let mut j = i;
        while j > 0 && map[j - 1].addr > map[j].addr {
            map.swap(j - 1, j);
            j -= 1;
        }
    }
    map
}
