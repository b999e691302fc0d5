//! The boot verifier's manifest page (`cloister_boot_verifier::manifest`), the measured
//! page that tells the verifier what to load and what it must hash to, and the CC blob
//! built from it.
//!
//! Input: the page (zero-padded to 4096 bytes). Seeds: the manifest pages `cloister`'s
//! verifier layout writes for the built-in test guest and for Debian's kernel, at several
//! memory sizes and vCPU counts, on sim and snp.
//!
//! Asserted: `parse` accepts exactly the pages that obey the layout's rules (restated
//! here: magic, version, zero flags and reserved bytes, images that do not wrap, a kernel,
//! a command line of at most 2048 bytes, structure addresses 4 KiB aligned below 4 GiB, at
//! most 128 e820 entries, none empty or wrapping); a parsed manifest serialises back to
//! the page (every byte but the e820 slots past the count, which the format does not
//! read) and parses again to itself; the CC blob names the manifest's secrets and CPUID
//! pages.
#![no_main]

use cloister_boot_verifier::manifest::{self, Manifest, MAX_CMDLINE, MAX_E820, PAGE_SIZE};
use cloister_boot_verifier::zero_page::{cc_blob, CC_BLOB_MAGIC, CC_BLOB_OFFSET, SETUP_CC_BLOB};
use cloister_fuzz::input::Reader;
use cloister_fuzz::{fixtures, Seeds};
use cloister_vmm::boot::plan::{BootLayout, LayoutInputs, Platform};
use cloister_vmm::memory::MemorySize;
use libfuzzer_sys::fuzz_target;

const OFF_E820_COUNT: usize = 0x108;
const OFF_E820: usize = 0x110;
const END: usize = OFF_E820 + MAX_E820 * 20;

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"))
}

/// The layout's rules, restated from the module documentation.
fn obeys_rules(p: &[u8; PAGE_SIZE]) -> bool {
    let images_ok = (0..3).all(|i| {
        let at = 0x10 + i * 72;
        let (staging, load, size) = (u64_at(p, at), u64_at(p, at + 8), u64_at(p, at + 16));
        staging.checked_add(size).is_some()
            && load.checked_add(size).is_some()
            && (i != 0 || size != 0)
            && (i != 2 || size <= MAX_CMDLINE)
    });
    let addresses_ok = [0xE8, 0xF0, 0xF8, 0x100]
        .iter()
        .all(|&at| u64_at(p, at).is_multiple_of(4096) && u64_at(p, at) < 1 << 32);
    let count = u32_at(p, OFF_E820_COUNT) as usize;
    let e820_ok = count <= MAX_E820
        && (0..count).all(|i| {
            let at = OFF_E820 + i * 20;
            let (addr, size) = (u64_at(p, at), u64_at(p, at + 8));
            size != 0 && addr.checked_add(size).is_some()
        });
    p[..8] == manifest::MAGIC
        && u32_at(p, 8) == manifest::VERSION
        && u32_at(p, 0xC) == 0
        && u32_at(p, 0x10C) == 0
        && p[END..].iter().all(|&b| b == 0)
        && images_ok
        && addresses_ok
        && e820_ok
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let page: [u8; PAGE_SIZE] = Reader::new(data).array();
    let parsed = Manifest::parse(&page);
    assert_eq!(parsed.is_ok(), obeys_rules(&page), "parse disagrees with the rules: {parsed:?}");
    let m = match parsed {
        Ok(m) => m,
        Err(e) => {
            assert!(!e.describe().is_empty());
            return;
        }
    };
    let back = m.to_page();
    let unused_e820 = OFF_E820 + m.e820_count * 20..END;
    for (i, (a, b)) in back.iter().zip(page.iter()).enumerate() {
        if unused_e820.contains(&i) {
            assert_eq!(*a, 0, "to_page writes zero past the e820 count");
        } else {
            assert_eq!(a, b, "to_page changed byte {i:#x}");
        }
    }
    assert_eq!(Manifest::parse(&back), Ok(m), "a serialised manifest parses to itself");
    assert_eq!(m.e820().len(), m.e820_count);

    let blob = cc_blob(&m);
    let word = |at: usize| u32::from_le_bytes(blob[at..at + 4].try_into().expect("4 bytes"));
    let quad = |at: usize| u64::from_le_bytes(blob[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!((quad(0), word(8), word(12)), (0, SETUP_CC_BLOB, 4), "setup_data node");
    assert_eq!(u64::from(word(16)), m.cc_blob + CC_BLOB_OFFSET);
    let at = CC_BLOB_OFFSET as usize;
    assert_eq!(word(at), CC_BLOB_MAGIC);
    assert_eq!((quad(at + 8), word(at + 16)), (m.secrets, 4096));
    assert_eq!((quad(at + 24), word(at + 32)), (m.cpuid, 4096));

    let digest = manifest::sha384(&page);
    assert!(manifest::check_digest(&page, &digest));
});

/// The manifest page of the verifier layout for `kernel`.
fn manifest_page(kernel: &[u8], memory_mib: u64, vcpus: u8, platform: Platform) -> Option<Vec<u8>> {
    let planned = BootLayout::Verifier
        .plan(&LayoutInputs {
            kernel,
            kernel_name: "seed kernel",
            initrd: Some((b"initrd bytes", "seed initrd")),
            cmdline: "console=ttyS0 panic=-1",
            vcpus,
            memory: MemorySize(memory_mib << 20),
            devices: &[],
            pci: false,
            platform,
            policy: 0x3_0000,
            host_data: [0; 32],
        })
        .map_err(|e| eprintln!("seeds: verifier layout: {e}"))
        .ok()?;
    let gpa = cloister_vmm::boot::verifier_plan::MANIFEST_START;
    planned
        .plan
        .regions()
        .iter()
        .find(|r| r.gpa() == gpa)
        .and_then(|r| r.bytes())
        .map(|b| b[..PAGE_SIZE].to_vec())
}

fn seeds(out: &mut Seeds) {
    let mut kernels = vec![(
        "test-guest".to_string(),
        cloister_vmm::test_guest::BZIMAGE.to_vec(),
    )];
    for path in fixtures::debian_kernels() {
        if let Some(bytes) = fixtures::read(&path) {
            kernels.push((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                bytes,
            ));
        }
    }
    for (name, kernel) in &kernels {
        for (mib, vcpus, platform) in [
            (128, 1, Platform::Snp),
            (512, 2, Platform::Sim),
            (4096, 4, Platform::Snp),
        ] {
            if let Some(page) = manifest_page(kernel, mib, vcpus, platform) {
                out.add(
                    &format!("{name}-{mib}M-{vcpus}cpu-{}", platform.name()),
                    &page,
                );
            }
        }
    }
}
