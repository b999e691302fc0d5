//! Which memory the verifier validates: every page of e820 RAM that the PSP did not
//! already validate at launch (the verifier's own image, the manifest, the CPUID and
//! secrets pages), in 2 MiB pages where a whole aligned 2 MiB fits and 4 KiB pages
//! elsewhere. The verifier PVALIDATEs each chunk after converting it to private; when
//! the hypervisor backs a 2 MiB chunk with 4 KiB pages (FAIL_SIZEMISMATCH) it falls back
//! to [`Chunk::pages_4k`]. "Already validated" on any chunk is fatal (a double-validation
//! attack: the hypervisor remapped a page the guest validated).

use crate::manifest::{E820Entry, E820_RAM};

/// 4 KiB.
pub const PAGE_4K: u64 = 4096;
/// 2 MiB.
pub const PAGE_2M: u64 = 2 << 20;

/// A chunk to validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Guest-physical address.
    pub addr: u64,
    /// Whether it is one 2 MiB page (else one 4 KiB page).
    pub huge: bool,
}

impl Chunk {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        if self.huge {
            PAGE_2M
        } else {
            PAGE_4K
        }
    }

    /// Always false (a chunk is at least a page); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The 4 KiB pages of this chunk (the fallback of a 2 MiB chunk).
    pub fn pages_4k(&self) -> impl Iterator<Item = u64> {
        let addr = self.addr;
        (0..self.len() / PAGE_4K).map(move |i| addr + i * PAGE_4K)
    }
}

/// The chunks of `ram` (only entries of type RAM are used; partial pages at their edges
/// are left out) outside every range in `launched` (`[start, end)`, any order, may
/// overlap), lowest address first.
pub struct Plan<'a> {
    ram: &'a [E820Entry],
    launched: &'a [(u64, u64)],
    entry: usize,
    cursor: u64,
}

impl<'a> Plan<'a> {
    /// A plan over `ram`, skipping `launched`.
    pub fn new(ram: &'a [E820Entry], launched: &'a [(u64, u64)]) -> Self {
        Plan {
            ram,
            launched,
            entry: 0,
            cursor: 0,
        }
    }

    /// The end of the launched range holding `addr`, if any (rounded up to a page).
    fn launched_end(&self, addr: u64) -> Option<u64> {
        self.launched
            .iter()
            .filter(|(s, e)| s & !(PAGE_4K - 1) <= addr && addr < *e)
            .map(|(_, e)| {
                e.checked_add(PAGE_4K - 1)
                    .map_or(u64::MAX, |v| v & !(PAGE_4K - 1))
            })
            .max()
    }

    /// The start of the first launched range after `addr` (rounded down to a page).
    fn next_launched(&self, addr: u64) -> u64 {
        self.launched
            .iter()
            .filter(|(s, _)| *s > addr)
            .map(|(s, _)| s & !(PAGE_4K - 1))
            .min()
            .unwrap_or(u64::MAX)
    }
}

impl Iterator for Plan<'_> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        loop {
            let entry = self.ram.get(self.entry)?;
            let start = entry
                .addr
                .checked_add(PAGE_4K - 1)
                .map(|v| v & !(PAGE_4K - 1));
            let end = entry.addr.saturating_add(entry.size) & !(PAGE_4K - 1);
            let Some(start) = start.filter(|_| entry.kind == E820_RAM) else {
                self.entry += 1;
                continue;
            };
            let cursor = self.cursor.max(start);
            if cursor >= end {
                self.entry += 1;
                continue;
            }
            if let Some(skip) = self.launched_end(cursor) {
                self.cursor = skip;
                continue;
            }
            let boundary = end.min(self.next_launched(cursor));
            let huge = cursor.is_multiple_of(PAGE_2M)
                && cursor.checked_add(PAGE_2M).is_some_and(|e| e <= boundary);
            let chunk = Chunk { addr: cursor, huge };
            self.cursor = cursor + chunk.len();
            return Some(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ram(addr: u64, size: u64) -> E820Entry {
        E820Entry {
            addr,
            size,
            kind: E820_RAM,
        }
    }

    /// Every page the plan covers, expanded to 4 KiB pages.
    fn pages(ram: &[E820Entry], launched: &[(u64, u64)]) -> Vec<u64> {
        Plan::new(ram, launched)
            .flat_map(|c| c.pages_4k().collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn covers_ram_exactly_once_outside_launched_pages() {
        let map = [
            ram(0, 0x9fc00),
            E820Entry {
                addr: 0x9fc00,
                size: 0x60400,
                kind: 2,
            },
            ram(0x10_0000, 0x7f0_0000),
        ];
        let launched = [
            (0x10_0000, 0x12_3000),
            (0x4000, 0x6000),
            (0x7f0_0000, 0x800_0000),
        ];
        let got = pages(&map, &launched);
        let mut want = Vec::new();
        for p in (0..0x9f000).step_by(4096) {
            if !(0x4000..0x6000).contains(&p) {
                want.push(p);
            }
        }
        for p in (0x12_3000..0x7f0_0000).step_by(4096) {
            want.push(p);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn uses_2m_pages_where_they_fit() {
        let map = [ram(0x10_0000, 0x7f0_0000)];
        let launched = [(0x10_0000, 0x12_3000)];
        let chunks: Vec<Chunk> = Plan::new(&map, &launched).collect();
        // 4 KiB up to 2 MiB, then 2 MiB pages to the end (0x800_0000 is 2 MiB aligned).
        let first_huge = chunks.iter().position(|c| c.huge).unwrap();
        assert_eq!(chunks[first_huge].addr, 0x20_0000);
        assert!(chunks[..first_huge].iter().all(|c| !c.huge));
        assert!(chunks[first_huge..].iter().all(|c| c.huge));
        assert_eq!(
            chunks.len() - first_huge,
            (0x800_0000 - 0x20_0000) / 0x20_0000
        );
        // A launched page in the middle of a 2 MiB region splits only that region.
        let launched = [(0x40_1000, 0x40_2000)];
        let chunks: Vec<Chunk> = Plan::new(&map, &launched).collect();
        assert!(chunks.iter().any(|c| c.huge && c.addr == 0x20_0000));
        assert!(!chunks.iter().any(|c| c.huge && c.addr == 0x40_0000));
        assert!(chunks.iter().any(|c| c.huge && c.addr == 0x60_0000));
        assert!(!chunks.iter().any(|c| c.addr == 0x40_1000));
    }

    #[test]
    fn odd_entries_are_handled() {
        // Unaligned edges are trimmed; non-RAM is skipped; an entry at the top of the
        // address space does not wrap.
        let map = [
            ram(0x1800, 0x2000),
            E820Entry {
                addr: 0x10000,
                size: 0x1000,
                kind: 3,
            },
            ram(u64::MAX - 0x1fff, 0x2000),
        ];
        assert_eq!(pages(&map, &[]), [0x2000, 0xffff_ffff_ffff_e000]);
    }

    /// A launched range that starts inside a page keeps that whole page out of the plan
    /// (the fuzzer's reproducer: RAM 0..0x2000, launched 0x800..0x1000).
    #[test]
    fn an_unaligned_launched_start_excludes_its_page() {
        assert_eq!(pages(&[ram(0, 0x2000)], &[(0x800, 0x1000)]), [0x1000]);
    }
}
