//! The certificate table a guest's extended report request receives
//! (`cloister_vmm::snp::certs::CertTable`): built from a bundle, delivered into a
//! guest buffer of the guest's choosing.
//!
//! Input: `[bundle][delivery: gpa u64, pages u64]...` (at most 8 deliveries). `bundle`
//! picks the certificates (AMD's vector chains and VCEK/VLEK, or the simulation root's)
//! and which roles of them go in. Guest memory is 48 KiB in two regions with a hole
//! (0..0x8000, 0x10000..0x14000), filled with 0xa5. Seeds: a buffer of 4 pages, too small
//! a buffer, buffers straddling the end of each region.
//!
//! Asserted: the table is entries {GUID, offset, length} for the ARK, ASK, VCEK and VLEK
//! present (in that order), an all-zero terminator, then each certificate's DER where its
//! entry points, and `pages()` is its length in pages; a delivery is `Written` exactly when
//! the buffer is aligned, large enough and in RAM, and then guest memory holds the table
//! there and nothing else changed; `TooSmall` names the pages needed and `BadBuffer` and
//! `TooSmall` change nothing (the documented "nothing was written").
#![no_main]

use cloister_attestation::certs::{CertBundle, Certificate};
use cloister_fuzz::input::{Reader, Writer};
use cloister_fuzz::{fixtures, Seeds};
use cloister_vmm::memory::GuestMemoryMmap;
use cloister_vmm::snp::certs::{guid, CertTable, Delivery, ENTRY_SIZE};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};

const RAM: [(u64, usize); 2] = [(0, 0x8000), (0x1_0000, 0x4000)];

/// Every certificate a bundle can be made of: AMD's vector chains and endorsement keys,
/// and the simulation root's chain.
fn certificate_sources() -> &'static [Vec<Certificate>] {
    static SOURCES: std::sync::OnceLock<Vec<Vec<Certificate>>> = std::sync::OnceLock::new();
    SOURCES.get_or_init(|| {
        let mut out: Vec<Vec<Certificate>> = fixtures::vector_sets()
            .iter()
            .map(|s| {
                let mut certs = Certificate::parse_all(&s.chain_pem, s.name).unwrap_or_default();
                certs.push(s.vek.clone());
                certs
            })
            .collect();
        let sim = fixtures::sim_root().cert_bundle();
        out.push([sim.ark, sim.ask, sim.vcek].into_iter().flatten().collect());
        out
    })
}

fn bundle(selector: u8) -> CertBundle {
    let sources = certificate_sources();
    let certs = &sources[usize::from(selector >> 5) % sources.len()];
    let mut b = CertBundle::default();
    for (i, c) in certs.iter().enumerate() {
        if selector & (1 << (i % 5)) != 0 {
            let _ = b.add(c.clone(), "bundle");
        }
    }
    b
}

fn check_table(table: &CertTable, bundle: &CertBundle) {
    let bytes = table.bytes();
    let expected: Vec<(&str, [u8; 16], &Certificate)> = [
        ("ARK", guid::ARK, bundle.ark.as_ref()),
        ("ASK", guid::ASK, bundle.ask.as_ref()),
        ("VCEK", guid::VCEK, bundle.vcek.as_ref()),
        ("VLEK", guid::VLEK, bundle.vlek.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, g, c)| c.map(|c| (n, g, c)))
    .collect();
    assert_eq!(
        table.names(),
        expected.iter().map(|e| e.0).collect::<Vec<_>>()
    );
    let table_len = (expected.len() + 1) * ENTRY_SIZE;
    assert!(
        bytes[(table_len - ENTRY_SIZE)..table_len]
            .iter()
            .all(|&b| b == 0),
        "terminator"
    );
    let mut end = table_len;
    for (i, (_, g, cert)) in expected.iter().enumerate() {
        let e = &bytes[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        assert_eq!(&e[..16], g);
        let offset = u32::from_le_bytes(e[16..20].try_into().expect("4 bytes")) as usize;
        let length = u32::from_le_bytes(e[20..24].try_into().expect("4 bytes")) as usize;
        assert!(offset >= table_len);
        assert_eq!(&bytes[offset..offset + length], cert.der());
        end = end.max(offset + length);
    }
    assert_eq!(end, bytes.len());
    assert_eq!(table.pages(), (bytes.len() as u64).div_ceil(4096));
}

fn snapshot(mem: &GuestMemoryMmap) -> Vec<u8> {
    let mut out = Vec::new();
    for &(a, l) in &RAM {
        let mut v = vec![0u8; l];
        mem.read_slice(&mut v, GuestAddress(a)).expect("RAM reads");
        out.extend(v);
    }
    out
}

fn in_ram(gpa: u64, len: u64) -> bool {
    RAM.iter()
        .any(|&(a, l)| gpa >= a && gpa.checked_add(len).is_some_and(|e| e <= a + l as u64))
}

/// The index of `gpa` in a snapshot, if it is RAM.
fn index(gpa: u64) -> Option<usize> {
    let mut base = 0;
    for &(a, l) in &RAM {
        if (a..a + l as u64).contains(&gpa) {
            return Some(base + (gpa - a) as usize);
        }
        base += l;
    }
    None
}

/// The guest-physical address of index `i` of a snapshot.
fn gpa_of(mut i: usize) -> u64 {
    for &(a, l) in &RAM {
        if i < l {
            return a + i as u64;
        }
        i -= l;
    }
    u64::MAX
}

fuzz_target!(init: cloister_fuzz::init(seeds, warm_up), |data: &[u8]| {
    let mut r = Reader::new(data);
    let bundle = bundle(r.u8());
    let table = CertTable::from_bundle(&bundle);
    check_table(&table, &bundle);
    if bundle.ark.is_none() && bundle.ask.is_none() && bundle.vcek.is_none() && bundle.vlek.is_none() {
        assert_eq!(table, CertTable::empty());
    }
    let regions: Vec<(GuestAddress, usize)> = RAM.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    let Ok(mem) = GuestMemoryMmap::from_ranges(&regions) else {
        return;
    };
    for &(a, l) in &RAM {
        mem.write_slice(&vec![0xa5; l], GuestAddress(a)).expect("RAM writes");
    }
    for _ in 0..8 {
        if r.is_empty() {
            break;
        }
        let (gpa, npages) = (r.u64(), r.u64());
        let before = snapshot(&mem);
        let delivery = table.deliver(&mem, gpa, npages);
        let after = snapshot(&mem);
        let len = table.bytes().len() as u64;
        match delivery {
            Delivery::Written => {
                assert!(gpa % 4096 == 0 && npages >= table.pages() && in_ram(gpa, len));
                for i in cloister_fuzz::differences(&before, &after) {
                    let at = gpa_of(i);
                    assert!((gpa..gpa + len).contains(&at), "a delivery wrote {at:#x}, outside its buffer");
                }
                let start = index(gpa).expect("in RAM");
                assert_eq!(&after[start..start + len as usize], table.bytes());
            }
            Delivery::TooSmall { needed } => {
                assert!(gpa % 4096 == 0 && npages < table.pages());
                assert_eq!(needed, table.pages());
                assert!(before == after, "TooSmall wrote into guest memory");
            }
            Delivery::BadBuffer => {
                assert!(gpa % 4096 != 0 || (npages >= table.pages() && !in_ram(gpa, len)));
                let written = cloister_fuzz::differences(&before, &after);
                assert!(
                    written.is_empty(),
                    "BadBuffer wrote {} bytes into guest memory (the buffer at {gpa:#x} is partly RAM)",
                    written.len()
                );
            }
        }
    }
});

fn warm_up() {
    let _ = certificate_sources();
}

fn seeds(out: &mut Seeds) {
    let sources = certificate_sources().len() as u8;
    for source in 0..sources {
        let selector = source << 5 | 0x1f;
        let mut w = Writer::new();
        w.u8(selector);
        // The test guest's buffer, too small a one, then one straddling the end of RAM.
        w.u64(0x2000)
            .u64(4)
            .u64(0x2000)
            .u64(0)
            .u64(0x7000)
            .u64(4)
            .u64(0x1_3000)
            .u64(2);
        out.add(&format!("bundle{source}"), &w.finish());
        // Only the endorsement key.
        out.add(
            &format!("bundle{source}-vek-only"),
            &Writer::new()
                .u8(source << 5 | 0x10)
                .u64(0x1000)
                .u64(1)
                .finish(),
        );
    }
}
