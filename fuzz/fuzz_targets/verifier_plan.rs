//! The boot verifier's memory-validation plan (`cloister_boot_verifier::validate::Plan`):
//! which pages of e820 RAM the verifier PVALIDATEs, in 2 MiB pages where they fit.
//!
//! Input: `[n][e820 entries: addr u64, size u64, type u8]...[m][launched: start u64,
//! end u64]...` (at most 16 of each). Seeds: the e820 maps of `cloister`'s verifier layout
//! at several memory sizes, with the ranges the verifier skips (its image, the manifest,
//! the CPUID and secrets pages, the staged kernel, initrd and command line).
//!
//! Asserted, for every chunk (the first 1024 are checked): it is aligned to its size
//! (4 KiB, or 2 MiB for a huge one); it lies inside the page-trimmed range of one RAM
//! entry; it overlaps no launched range; it starts after the previous chunk ends; its 4 KiB
//! fallback pages are its own pages in order. For a map of sorted, disjoint RAM entries of
//! at most 1024 pages, every page of RAM that touches no launched range is covered.
#![no_main]

use cloister_boot_verifier::manifest::{E820Entry, E820_RAM};
use cloister_boot_verifier::validate::{Chunk, Plan, PAGE_2M, PAGE_4K};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use cloister_vmm::boot::plan::{layout_e820, BootLayout, LayoutInputs, Platform};
use cloister_vmm::memory::MemorySize;
use libfuzzer_sys::fuzz_target;

const MAX_CHUNKS: usize = 1 << 10;

/// The page-trimmed range `[start, end)` of a RAM entry (partial pages left out).
fn trimmed(e: &E820Entry) -> Option<(u64, u64)> {
    let start = e.addr.checked_add(PAGE_4K - 1)? & !(PAGE_4K - 1);
    let end = e.addr.saturating_add(e.size) & !(PAGE_4K - 1);
    (e.kind == E820_RAM && start < end).then_some((start, end))
}

fn read_input(data: &[u8]) -> (Vec<E820Entry>, Vec<(u64, u64)>) {
    let mut r = Reader::new(data);
    let n = r.u8() % 17;
    let ram = (0..n)
        .map(|_| E820Entry {
            addr: r.u64(),
            size: r.u64(),
            kind: u32::from(r.u8()),
        })
        .collect();
    let m = r.u8() % 17;
    let launched = (0..m).map(|_| (r.u64(), r.u64())).collect();
    (ram, launched)
}

fn write_input(ram: &[E820Entry], launched: &[(u64, u64)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(ram.len() as u8);
    for e in ram {
        w.u64(e.addr).u64(e.size).u8(e.kind as u8);
    }
    w.u8(launched.len() as u8);
    for &(s, e) in launched {
        w.u64(s).u64(e);
    }
    w.finish()
}

fn check_chunk(c: &Chunk, ram: &[(u64, u64)], launched: &[(u64, u64)]) {
    let len = c.len();
    assert_eq!(len, if c.huge { PAGE_2M } else { PAGE_4K });
    assert_eq!(c.addr % len, 0, "chunk {c:?} not aligned to its size");
    let end = c.addr.checked_add(len).expect("a chunk does not wrap");
    assert!(
        ram.iter().any(|&(s, e)| s <= c.addr && end <= e),
        "chunk {c:?} is not inside one RAM entry"
    );
    // A range whose end is not above its start holds nothing.
    for &(s, e) in launched.iter().filter(|(s, e)| s < e) {
        assert!(
            !(c.addr < e && s < end),
            "chunk {c:?} overlaps the launched range {s:#x}..{e:#x}"
        );
    }
    let pages: Vec<u64> = c.pages_4k().collect();
    assert_eq!(pages.len() as u64, len / PAGE_4K);
    assert!(pages
        .iter()
        .enumerate()
        .all(|(i, &p)| p == c.addr + i as u64 * PAGE_4K));
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let (map, launched) = read_input(data);
    let ram: Vec<(u64, u64)> = map.iter().filter_map(trimmed).collect();
    let mut chunks = Vec::new();
    let mut plan = Plan::new(&map, &launched);
    let mut previous_end = 0u64;
    let mut complete = false;
    while chunks.len() < MAX_CHUNKS {
        let Some(c) = plan.next() else {
            complete = true;
            break;
        };
        check_chunk(&c, &ram, &launched);
        assert!(chunks.is_empty() || c.addr >= previous_end, "chunk {c:?} not after {previous_end:#x}");
        previous_end = c.addr + c.len();
        chunks.push(c);
    }

    // Coverage, for maps laid out as the VMM lays them out.
    let sorted_disjoint = ram.windows(2).all(|w| w[0].1 <= w[1].0);
    let pages: u64 = ram.iter().map(|(s, e)| (e - s) / PAGE_4K).sum();
    if !complete || !sorted_disjoint || pages > MAX_CHUNKS as u64 {
        return;
    }
    let mut covered = chunks.iter().flat_map(|c| c.pages_4k()).peekable();
    for &(s, e) in &ram {
        let mut p = s;
        while p < e {
            let touches_launched = launched.iter().any(|&(ls, le)| p < le && ls < p + PAGE_4K);
            if !touches_launched {
                while covered.next_if(|&q| q < p).is_some() {}
                assert_eq!(covered.peek(), Some(&p), "RAM page {p:#x} is not validated");
            }
            p += PAGE_4K;
        }
    }
});

fn seeds(out: &mut Seeds) {
    let kernel = cloister_vmm::test_guest::BZIMAGE;
    for (mib, platform) in [
        (64, Platform::Snp),
        (512, Platform::Sim),
        (5120, Platform::Snp),
    ] {
        let e820: Vec<E820Entry> = layout_e820(mib << 20, platform)
            .into_iter()
            .map(|e| E820Entry {
                addr: e.addr,
                size: e.size,
                kind: e.kind,
            })
            .collect();
        // What the verifier skips, as the layout places it: its image at 64 KiB, the
        // manifest, the CPUID and secrets pages, and the staging after the kernel.
        let planned = BootLayout::Verifier.plan(&LayoutInputs {
            kernel,
            kernel_name: "test guest",
            initrd: None,
            cmdline: "console=ttyS0",
            vcpus: 1,
            memory: MemorySize(mib << 20),
            devices: &[],
            pci: false,
            platform,
            policy: 0x3_0000,
            host_data: [0; 32],
        });
        let mut launched: Vec<(u64, u64)> = match &planned {
            Ok(p) => p
                .plan
                .regions()
                .iter()
                .filter(|r| r.gpa() < 1 << 40)
                .map(|r| (r.gpa(), r.gpa() + r.len()))
                .collect(),
            Err(e) => {
                eprintln!("seeds: verifier layout at {mib} MiB: {e}");
                Vec::new()
            }
        };
        if let Ok(p) = &planned {
            launched.extend(
                p.staging
                    .iter()
                    .map(|(gpa, b)| (*gpa, gpa + b.len() as u64)),
            );
        }
        launched.truncate(16);
        out.add(
            &format!("layout-{mib}M-{}", platform.name()),
            &write_input(&e820[..e820.len().min(16)], &launched),
        );
        out.add(
            &format!("layout-{mib}M-{}-nothing-launched", platform.name()),
            &write_input(&e820[..e820.len().min(16)], &[]),
        );
    }
}
