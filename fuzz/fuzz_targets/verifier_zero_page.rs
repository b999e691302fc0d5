//! The boot verifier's kernel checks and Linux zero page
//! (`cloister_boot_verifier::zero_page`): `BzImage::parse` of a bzImage's setup header and
//! `build`, which places the kernel and writes `boot_params` for it.
//!
//! Input: `[placement][setup bytes]`. The placement is the part of a manifest `build`
//! reads (kernel load address and size, initrd and command line load address and size,
//! zero page, CC blob, secrets and CPUID pages, up to 8 e820 entries); it becomes a
//! manifest page that must parse, as the verifier only builds from a parsed manifest.
//! The setup bytes are the kernel's first sectors, as the verifier hands them over. Seeds:
//! the setup sectors of the built-in test guest's bzImage and of Debian's kernel, placed as
//! `cloister`'s verifier layout places them.
//!
//! Asserted: `BzImage::parse` accepts exactly the headers Linux's boot protocol 2.12+
//! allows (boot flag, "HdrS", version, 64-bit entry, header length, setup sectors inside
//! the image: restated here) and reports their fields; `build` succeeds only for a load
//! address the kernel accepts whose room (`init_size`, or the code if larger) overlaps no
//! other structure, and then returns the 64-bit entry, copies exactly the setup header,
//! and fills the loader fields, command line, initrd, setup_data and e820 table from the
//! manifest. A refusal names a structure the room really overlaps.
#![no_main]

use cloister_boot_verifier::manifest::{self, E820Entry, Image, Manifest, MAX_E820};
use cloister_boot_verifier::zero_page::{build, BootError, BzImage, ZERO_PAGE_SIZE};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::{fixtures, Seeds};
use libfuzzer_sys::fuzz_target;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Where things go: what `build` reads from a manifest.
struct Placement {
    kernel_load: u64,
    kernel_size: u64,
    initrd_load: u64,
    initrd_size: u64,
    cmdline_load: u64,
    cmdline_size: u16,
    zero_page: u32,
    cc_blob: u32,
    secrets: u32,
    cpuid: u32,
    e820: Vec<E820Entry>,
}

fn read_placement(r: &mut Reader) -> Placement {
    let mut p = Placement {
        kernel_load: r.u64(),
        kernel_size: r.u64(),
        initrd_load: r.u64(),
        initrd_size: r.u64(),
        cmdline_load: r.u64(),
        cmdline_size: r.u16(),
        zero_page: r.u32(),
        cc_blob: r.u32(),
        secrets: r.u32(),
        cpuid: r.u32(),
        e820: Vec::new(),
    };
    let n = r.u8() % 9;
    p.e820 = (0..n)
        .map(|_| E820Entry {
            addr: r.u64(),
            size: r.u64(),
            kind: u32::from(r.u8()),
        })
        .collect();
    p
}

fn write_placement(w: &mut Writer, p: &Placement) {
    w.u64(p.kernel_load)
        .u64(p.kernel_size)
        .u64(p.initrd_load)
        .u64(p.initrd_size)
        .u64(p.cmdline_load)
        .u16(p.cmdline_size)
        .u32(p.zero_page)
        .u32(p.cc_blob)
        .u32(p.secrets)
        .u32(p.cpuid)
        .u8(p.e820.len() as u8);
    for e in &p.e820 {
        w.u64(e.addr).u64(e.size).u8(e.kind as u8);
    }
}

fn manifest_of(p: &Placement) -> Option<Manifest> {
    let image = |load, size| Image {
        staging: 0x4000_0000,
        load,
        size,
        sha384: [0; 48],
    };
    let mut e820 = [E820Entry::default(); MAX_E820];
    e820[..p.e820.len()].copy_from_slice(&p.e820);
    let m = Manifest {
        kernel: image(p.kernel_load, p.kernel_size),
        initrd: image(p.initrd_load, p.initrd_size),
        cmdline: image(p.cmdline_load, u64::from(p.cmdline_size)),
        zero_page: u64::from(p.zero_page),
        cc_blob: u64::from(p.cc_blob),
        secrets: u64::from(p.secrets),
        cpuid: u64::from(p.cpuid),
        e820,
        e820_count: p.e820.len(),
    };
    // The verifier builds only from a manifest it parsed.
    Manifest::parse(&m.to_page()).ok()
}

/// Linux boot protocol 2.12+, restated: what `BzImage::parse` must accept.
fn header_ok(setup: &[u8], total_len: u64) -> bool {
    let sects = match setup.get(0x1F1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return false,
    };
    setup.len() >= 0x290
        && u16_at(setup, 0x1FE) == 0xAA55
        && &setup[0x202..0x206] == b"HdrS"
        && u16_at(setup, 0x206) >= 0x020C
        && u16_at(setup, 0x236) & 1 != 0
        && 0x202 + usize::from(setup[0x201]) <= 0x290
        && (((sects + 1) * 512) as u64) < total_len
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

fn check_build(setup: &[u8], m: &Manifest, bz: &BzImage) {
    let mut zp = [0xAAu8; ZERO_PAGE_SIZE];
    let result = build(setup, m, &mut zp);
    let load = m.kernel.load;
    let address_ok = match bz.alignment {
        Some(align) => load.is_multiple_of(align),
        None => load == bz.pref_address,
    };
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
    let overlapping = |start: u64| {
        others
            .iter()
            .any(|o| o.0 == start && o.1 > o.0 && overlaps(room, *o))
    };
    let entry = match result {
        Ok(entry) => entry,
        Err(BootError::LoadAddress(a)) => {
            assert_eq!(a, load);
            assert!(!address_ok);
            return;
        }
        Err(BootError::Overlap(start)) => {
            assert!(address_ok);
            assert!(
                overlapping(start),
                "refused for an overlap with {start:#x} that is not there"
            );
            return;
        }
        Err(BootError::Above4G(_)) => {
            assert!(load >= 1 << 32 || m.initrd.size > u64::from(u32::MAX));
            return;
        }
        Err(e) => panic!("build refused a header BzImage::parse accepted: {e:?}"),
    };
    assert!(address_ok, "a load address the kernel does not accept");
    assert!(
        !others.iter().any(|o| o.1 > o.0 && overlaps(room, *o)),
        "the kernel's room overlaps another structure"
    );
    assert_eq!(entry, load + 0x200);
    assert!(load < 1 << 32);
    // The setup header is copied; the loader fields are then set over it.
    let set_by_loader = |i: usize| {
        matches!(i, 0x210 | 0x211 | 0x214..0x218 | 0x228..0x22C | 0x250..0x258)
            || (m.initrd.size > 0 && (0x218..0x220).contains(&i))
    };
    for i in (0x1F1..bz.header_end).filter(|&i| !set_by_loader(i)) {
        assert_eq!(zp[i], setup[i], "setup header byte {i:#x}");
    }
    if bz.header_end > 0x211 {
        assert_eq!(
            zp[0x211],
            setup[0x211] | 1,
            "loadflags keep the kernel's bits"
        );
    }
    assert!(
        zp[bz.header_end..0x290]
            .iter()
            .enumerate()
            .all(|(i, &b)| { b == 0 || set_by_loader(bz.header_end + i) }),
        "nothing past the setup header is copied"
    );
    assert!(zp[..0x1F1]
        .iter()
        .enumerate()
        .all(|(i, &b)| b == 0 || (0xC0..0xCC).contains(&i) || i == 0x1E8));
    assert_eq!(zp[0x210], 0xFF, "type_of_loader");
    assert_eq!(zp[0x211] & 1, 1, "LOADED_HIGH");
    assert_eq!(u64::from(u32_at(&zp, 0x214)), load, "code32_start");
    let cmdline = u64::from(u32_at(&zp, 0x228)) | u64::from(u32_at(&zp, 0xC8)) << 32;
    assert_eq!(cmdline, m.cmdline.load);
    if m.initrd.size > 0 {
        let initrd = u64::from(u32_at(&zp, 0x218)) | u64::from(u32_at(&zp, 0xC0)) << 32;
        assert_eq!(initrd, m.initrd.load);
        assert_eq!(u64::from(u32_at(&zp, 0x21C)), m.initrd.size);
    }
    assert_eq!(u64_at(&zp, 0x250), m.cc_blob, "setup_data");
    let e820 = m.e820();
    assert_eq!(usize::from(zp[0x1E8]), e820.len());
    for (i, e) in e820.iter().enumerate() {
        let at = 0x2D0 + i * 20;
        assert_eq!(
            (u64_at(&zp, at), u64_at(&zp, at + 8), u32_at(&zp, at + 16)),
            (e.addr, e.size, e.kind)
        );
    }
}

fuzz_target!(init: cloister_fuzz::init(seeds, cloister_fuzz::no_warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let placement = read_placement(&mut r);
    let setup = r.rest();
    let Some(m) = manifest_of(&placement) else {
        return;
    };
    let parsed = BzImage::parse(setup, m.kernel.size);
    assert_eq!(parsed.is_ok(), header_ok(setup, m.kernel.size), "{parsed:?}");
    let bz = match parsed {
        Ok(bz) => bz,
        Err(e) => {
            assert!(!e.describe().is_empty());
            return;
        }
    };
    let sects = match setup[0x1F1] {
        0 => 4,
        n => usize::from(n),
    };
    assert_eq!(bz.code_offset, (sects + 1) * 512);
    assert_eq!(bz.header_end, 0x202 + usize::from(setup[0x201]));
    assert_eq!(bz.init_size, u64::from(u32_at(setup, 0x260)));
    assert_eq!(bz.pref_address, u64_at(setup, 0x258));
    assert_eq!(
        bz.alignment,
        (setup[0x234] != 0).then(|| u64::from(u32_at(setup, 0x230)).max(1))
    );
    check_build(setup, &m, &bz);
});

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
    for (name, kernel) in kernels {
        let Ok(bz) = BzImage::parse(&kernel, kernel.len() as u64) else {
            eprintln!("seeds: {name} is not a bzImage this verifier takes");
            continue;
        };
        let setup = &kernel[..bz.code_offset.min(kernel.len())];
        let load = bz.alignment.map_or(bz.pref_address, |a| {
            bz.pref_address.max(0x10_0000).div_ceil(a) * a
        });
        let room_end = load + bz.init_size.max(kernel.len() as u64);
        let placement = Placement {
            kernel_load: load,
            kernel_size: kernel.len() as u64,
            initrd_load: room_end.div_ceil(2 << 20) * (2 << 20),
            initrd_size: 0x1000,
            cmdline_load: 0x8_0000,
            cmdline_size: 22,
            zero_page: 0x7000,
            cc_blob: 0x6000,
            secrets: 0xd000,
            cpuid: 0xe000,
            e820: vec![
                E820Entry {
                    addr: 0,
                    size: 0x9_fc00,
                    kind: manifest::E820_RAM,
                },
                E820Entry {
                    addr: 0x9_fc00,
                    size: 0x400,
                    kind: manifest::E820_RESERVED,
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 0x7f0_0000,
                    kind: manifest::E820_RAM,
                },
            ],
        };
        let mut w = Writer::new();
        write_placement(&mut w, &placement);
        out.add(&format!("{name}-placed"), &w.bytes(setup).finish());
        // The same kernel loaded where it overlaps the initrd.
        let mut w = Writer::new();
        write_placement(
            &mut w,
            &Placement {
                initrd_load: load,
                ..placement
            },
        );
        out.add(&format!("{name}-overlap"), &w.bytes(setup).finish());
    }
}
