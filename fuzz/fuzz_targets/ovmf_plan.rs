//! OVMF firmware images: the footer GUID table and SEV metadata parser, the SEV hashes
//! table, and the QEMU+OVMF launch plan and digest built on them.
//!
//! Input: `[knobs][layout][kernel hashes inputs][image part]`. Two kinds of image:
//! - raw (layout bit 7 clear): the image part is placed at the end of an image of whole
//!   pages, `layout & 15` extra zero pages in front. The parser reads only the end of an
//!   image, so a few KiB reach everything; seeds carry the last pages of Debian's OVMF
//!   (and the whole 2 MiB image, within `max_len`).
//! - synthetic (layout bit 7 set): the image part describes a footer table and an SEV
//!   metadata section list (`SyntheticOvmf`), which is built and parsed; the parser must
//!   accept it exactly when the description obeys the metadata rules, and then give back
//!   what was described.
//!
//! Asserted besides no panic: a parsed image's sections are non-empty, page-aligned,
//! disjoint, below the image, one page for secrets and CPUID; its footer entries lie in
//! the image; the plan's errors are the ones the image calls for; a plan's digest computed
//! page by page from `pages()` equals `measure()`; the kernel-hashes page holds the SEV
//! hashes table at the announced address; the table itself has QEMU's layout with the
//! SHA-256 of each input, and `page(offset)` places it only where it fits.
#![no_main]

use cloister_attestation::launch::{
    qemu_ovmf_plan, LaunchDigest, LaunchPlan, PageType, PlanError, QemuOvmfParams, RegionRole,
    VmmType,
};
use cloister_firmware::footer::{ENTRY_HEADER_SIZE, RESET_VECTOR_TAIL};
use cloister_firmware::guid::{
    SEV_CMDLINE_ENTRY, SEV_HASH_TABLE_HEADER, SEV_INITRD_ENTRY, SEV_KERNEL_ENTRY,
};
use cloister_firmware::sev_hashes::{PADDED_TABLE_SIZE, TABLE_SIZE};
use cloister_firmware::synthetic::SyntheticOvmf;
use cloister_firmware::{
    GpaRange, OvmfError, OvmfImage, SectionKind, SevHashes, SevMetadataSection,
};
use cloister_fuzz::fixtures;
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::Seeds;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const PAGE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;
/// Plans with more pages than this are checked but not measured (a section may announce
/// up to 4 GiB; hashing that is not what this target is for).
const MEASURE_LIMIT_PAGES: u64 = 1 << 14;

const KINDS: [SectionKind; 5] = [
    SectionKind::SecMemory,
    SectionKind::Secrets,
    SectionKind::Cpuid,
    SectionKind::SvsmCaa,
    SectionKind::KernelHashes,
];

/// Reads a `SyntheticOvmf`: size in pages, seed, optional entries, sections.
fn read_synthetic(r: &mut Reader) -> SyntheticOvmf {
    let flags = r.u8();
    let size = usize::from(r.u8() % 64 + 1) * PAGE;
    let seed = r.u64();
    let range = |r: &mut Reader| GpaRange {
        gpa: r.u32(),
        size: r.u32(),
    };
    let sev_es_reset_eip = (flags & 1 != 0).then(|| r.u32());
    let sev_hashes_table = (flags & 2 != 0).then(|| range(r));
    let sev_secret_block = (flags & 4 != 0).then(|| range(r));
    let sections = (flags & 8 != 0).then(|| {
        let n = usize::from(r.u8() % 8);
        (0..n)
            .map(|_| SevMetadataSection {
                gpa: r.u32(),
                size: r.u32(),
                kind: KINDS[usize::from(r.u8()) % KINDS.len()],
            })
            .collect()
    });
    SyntheticOvmf {
        size,
        seed,
        sev_es_reset_eip,
        sev_hashes_table,
        sev_secret_block,
        sections,
    }
}

fn write_synthetic(w: &mut Writer, s: &SyntheticOvmf) {
    let flags = u8::from(s.sev_es_reset_eip.is_some())
        | u8::from(s.sev_hashes_table.is_some()) << 1
        | u8::from(s.sev_secret_block.is_some()) << 2
        | u8::from(s.sections.is_some()) << 3;
    w.u8(flags).u8((s.size / PAGE - 1) as u8).u64(s.seed);
    if let Some(eip) = s.sev_es_reset_eip {
        w.u32(eip);
    }
    for r in [s.sev_hashes_table, s.sev_secret_block]
        .into_iter()
        .flatten()
    {
        w.u32(r.gpa).u32(r.size);
    }
    if let Some(sections) = &s.sections {
        w.u8(sections.len() as u8);
        for x in sections {
            let kind = KINDS.iter().position(|k| *k == x.kind).unwrap_or(0);
            w.u32(x.gpa).u32(x.size).u8(kind as u8);
        }
    }
}

/// The metadata rules (`sev_metadata::parse`, `OvmfImage::parse`) restated.
fn sections_valid(sections: &[SevMetadataSection], image_len: usize) -> bool {
    let image_gpa = FOUR_GIB - image_len as u64;
    sections.iter().enumerate().all(|(i, s)| {
        s.size != 0
            && s.gpa % 4096 == 0
            && s.size % 4096 == 0
            && s.end() <= image_gpa
            && (!matches!(s.kind, SectionKind::Secrets | SectionKind::Cpuid) || s.size == 4096)
            && sections[..i]
                .iter()
                .all(|t| !(u64::from(t.gpa) < s.end() && u64::from(s.gpa) < t.end()))
    })
}

/// What any parsed image must satisfy.
fn check_image(ovmf: &OvmfImage, len: usize) {
    assert!(len > 0 && len.is_multiple_of(PAGE));
    assert_eq!(ovmf.gpa(), FOUR_GIB - len as u64);
    assert!(sections_valid(ovmf.sections(), len));
    for e in ovmf.footer_table().entries() {
        assert!(
            e.data.start <= e.data.end && e.data.end + ENTRY_HEADER_SIZE <= len - RESET_VECTOR_TAIL
        );
    }
    for kind in KINDS {
        assert_eq!(
            ovmf.has_section(kind),
            ovmf.sections().iter().any(|s| s.kind == kind)
        );
    }
    assert!(ovmf.sev_hashes_table().is_none_or(|r| r.gpa != 0));
    assert!(ovmf.sev_secret_block().is_none_or(|r| r.gpa != 0));
}

/// The expected error of `qemu_ovmf_plan` for what the image lacks, if anything.
fn expected_plan_error(ovmf: &OvmfImage, params: &QemuOvmfParams) -> Option<PlanError> {
    if ovmf.sections().is_empty() {
        Some(PlanError::NoSevMetadata)
    } else if ovmf.sev_es_reset_eip().is_none() {
        Some(PlanError::NoResetBlock)
    } else if params.kernel_hashes.is_some() && !ovmf.has_section(SectionKind::KernelHashes) {
        Some(PlanError::NoKernelHashesSection)
    } else {
        None
    }
}

fn check_plan(ovmf: &OvmfImage, params: &QemuOvmfParams) {
    let result = qemu_ovmf_plan(ovmf, params);
    if let Some(expected) = expected_plan_error(ovmf, params) {
        assert_eq!(result.as_ref().err(), Some(&expected));
        return;
    }
    let plan = match result {
        Ok(plan) => plan,
        Err(PlanError::HashesTableOutsideSection { .. }) => {
            // Every kernel-hashes section must hold the table (an image may list several).
            let table = ovmf.sev_hashes_table();
            let all_inside = ovmf
                .sections()
                .iter()
                .filter(|s| s.kind == SectionKind::KernelHashes)
                .all(|s| {
                    table.is_some_and(|t| {
                        u64::from(t.gpa) >= u64::from(s.gpa)
                            && u64::from(t.gpa) + PADDED_TABLE_SIZE as u64 <= s.end()
                    })
                });
            assert!(params.kernel_hashes.is_some() && !all_inside);
            return;
        }
        Err(e) => panic!("unexpected plan error for a parsed image: {e}"),
    };
    assert_eq!(plan.vcpus(), params.vcpus);
    let first = &plan.regions()[0];
    assert_eq!(
        (first.role(), first.gpa(), first.len()),
        (RegionRole::Firmware, ovmf.gpa(), ovmf.bytes().len() as u64)
    );
    let vmsas: Vec<_> = plan
        .regions()
        .iter()
        .filter(|r| r.page_type() == PageType::Vmsa)
        .collect();
    assert_eq!(vmsas.len() as u32, params.vcpus);
    let summary = plan.summary();
    assert_eq!(
        summary.pages,
        plan.regions().iter().map(|r| r.page_count()).sum::<u64>()
    );
    if let (Some(hashes), Some(table)) = (&params.kernel_hashes, ovmf.sev_hashes_table()) {
        let region = plan
            .regions()
            .iter()
            .find(|r| r.role() == RegionRole::Section(SectionKind::KernelHashes))
            .expect("a kernel-hashes region");
        let at = (u64::from(table.gpa) - region.gpa()) as usize;
        let bytes = region.bytes().expect("the hashes page is measured");
        assert_eq!(&bytes[at..at + PADDED_TABLE_SIZE], &hashes.table()[..]);
    }
    if summary.pages <= MEASURE_LIMIT_PAGES {
        assert_eq!(
            digest_by_pages(&plan),
            plan.measure(),
            "pages() and measure() disagree"
        );
    }
}

/// The launch digest computed from `pages()` with the digest's own page API, a second way
/// to measure a plan.
fn digest_by_pages(plan: &LaunchPlan) -> [u8; 48] {
    let mut d = LaunchDigest::new();
    for page in plan.pages() {
        d.update_page(page.page_type, page.gpa, page.contents)
            .expect("every page of a plan is measurable");
    }
    d.digest()
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn check_hashes(kernel: &[u8], initrd: Option<&[u8]>, cmdline: &[u8], offset: usize) -> SevHashes {
    let h = SevHashes::from_contents(kernel, initrd, cmdline);
    let mut initrd_reader = initrd.unwrap_or_default();
    let streamed = SevHashes::from_readers(kernel, Some(&mut initrd_reader), cmdline)
        .expect("reading from memory");
    assert_eq!(h, streamed);
    assert_eq!(h.kernel, sha256(&[kernel]));
    assert_eq!(h.initrd, sha256(&[initrd.unwrap_or_default()]));
    assert_eq!(h.cmdline, sha256(&[cmdline, &[0]]));
    let table = h.table();
    assert_eq!(&table[..16], SEV_HASH_TABLE_HEADER.as_bytes());
    assert_eq!(
        u16::from_le_bytes([table[16], table[17]]) as usize,
        TABLE_SIZE
    );
    for (i, (guid, hash)) in [
        (SEV_CMDLINE_ENTRY, h.cmdline),
        (SEV_INITRD_ENTRY, h.initrd),
        (SEV_KERNEL_ENTRY, h.kernel),
    ]
    .iter()
    .enumerate()
    {
        let e = &table[18 + i * 50..18 + (i + 1) * 50];
        assert_eq!(&e[..16], guid.as_bytes());
        assert_eq!(u16::from_le_bytes([e[16], e[17]]), 50);
        assert_eq!(&e[18..], hash);
    }
    assert!(table[TABLE_SIZE..].iter().all(|&b| b == 0));
    match h.page(offset) {
        Ok(page) => {
            assert!(offset + PADDED_TABLE_SIZE <= PAGE);
            assert_eq!(&page[offset..offset + PADDED_TABLE_SIZE], &table[..]);
            assert!(page[..offset]
                .iter()
                .chain(&page[offset + PADDED_TABLE_SIZE..])
                .all(|&b| b == 0));
        }
        Err(_) => assert!(offset
            .checked_add(PADDED_TABLE_SIZE)
            .is_none_or(|e| e > PAGE)),
    }
    h
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let (knobs, layout) = (r.u8(), r.u8());
    let kernel_hashes = (layout & 0x10 != 0).then(|| {
        let (kernel, initrd, cmdline) = (r.blob(), r.blob(), r.blob());
        let offset = usize::from(r.u16());
        check_hashes(kernel, (!initrd.is_empty()).then_some(initrd), cmdline, offset)
    });
    let params = QemuOvmfParams {
        vcpus: u32::from(knobs >> 5) + 1,
        vcpu_signature: [0x00a0_0f11, 0x0080_0f12, 0x00a1_0f11, 0][usize::from(layout >> 5) & 3],
        guest_features: if layout & 0x40 != 0 { 0x21 } else { 1 },
        kernel_hashes,
        vmm: [VmmType::Qemu, VmmType::Ec2, VmmType::Gce][usize::from(knobs % 3)],
    };

    let image = if layout & 0x80 != 0 {
        let description = read_synthetic(&mut r);
        let Some(image) = description.build() else {
            return;
        };
        let sections = description.sections.clone().unwrap_or_default();
        let valid = sections.len() <= 64 && sections_valid(&sections, image.len());
        match OvmfImage::parse(&image) {
            Ok(ovmf) => {
                assert!(valid, "an image with invalid sections parsed: {sections:?}");
                assert_eq!(ovmf.sections(), &sections[..]);
                assert_eq!(ovmf.sev_es_reset_eip(), description.sev_es_reset_eip);
                assert_eq!(ovmf.sev_hashes_table(), description.sev_hashes_table.filter(|t| t.gpa != 0));
                assert_eq!(ovmf.sev_secret_block(), description.sev_secret_block.filter(|t| t.gpa != 0));
            }
            Err(e) => {
                assert!(!valid, "a valid synthetic image was refused: {e}");
                assert!(matches!(e, OvmfError::Metadata(_) | OvmfError::SectionOverlapsImage { .. }), "{e}");
            }
        }
        image
    } else {
        let tail = r.rest();
        let extra = usize::from(layout & 0x0f) * PAGE;
        let len = extra + tail.len().div_ceil(PAGE) * PAGE;
        let mut image = vec![0u8; len];
        image[len - tail.len()..].copy_from_slice(tail);
        image
    };

    let Ok(ovmf) = OvmfImage::parse(&image) else {
        return;
    };
    check_image(&ovmf, image.len());
    check_plan(&ovmf, &params);
});

fn seeds(out: &mut Seeds) {
    let hashes = |w: &mut Writer| {
        w.blob(b"kernel image")
            .blob(b"initrd")
            .blob(b"console=ttyS0")
            .u16(0xc00);
    };
    if let Some(ovmf) = fixtures::debian_ovmf() {
        // The last 16 KiB hold Debian's footer table and SEV metadata; the whole image
        // too (the plan over 2 MiB of firmware, as `cloister measure` sees it).
        for (name, part) in [
            ("debian-tail", &ovmf[ovmf.len().saturating_sub(4 * PAGE)..]),
            ("debian-full", &ovmf[..]),
        ] {
            out.add(name, &Writer::new().u8(0x20).u8(0).bytes(part).finish());
            out.add(
                &format!("{name}-ec2-4cpu"),
                &Writer::new().u8(0x61).u8(0).bytes(part).finish(),
            );
        }
        let mut w = Writer::new();
        w.u8(0x22).u8(0x10);
        hashes(&mut w);
        out.add(
            "debian-tail-kernel-hashes",
            &w.bytes(&ovmf[ovmf.len() - 4 * PAGE..]).finish(),
        );
    }
    for (name, description) in [
        (
            "amd-sev-minimal",
            SyntheticOvmf::amd_sev_minimal(16 * PAGE, 1),
        ),
        ("amd-sev-like", SyntheticOvmf::amd_sev_like(64 * PAGE, 2)),
    ] {
        let mut w = Writer::new();
        w.u8(0x20).u8(0x90);
        hashes(&mut w);
        write_synthetic(&mut w, &description);
        out.add(&format!("synthetic-{name}"), &w.finish());
        // The same image as raw bytes.
        if let Some(image) = description.build() {
            out.add(
                &format!("raw-{name}"),
                &Writer::new()
                    .u8(0x20)
                    .u8(0x10)
                    .blob(b"k")
                    .blob(b"")
                    .blob(b"")
                    .u16(0xc00)
                    .bytes(&image)
                    .finish(),
            );
        }
    }
}
