//! The certificate table the host hands an SNP guest with an extended guest request
//! (GHCB spec "SNP Extended Guest Request"; SNP-FACTS §1.11): entries {GUID\[16\],
//! offset u32, length u32} ending with an all-zero entry, followed by the DER
//! certificates the entries point at (offsets from the table's start).
//!
//! One table serves both platforms: on real SNP the monitor writes it into guest memory
//! when KVM exits with `KVM_EXIT_SNP_REQ_CERTS` (Linux 7.0+); on the simulated platform
//! the simulated VMGEXIT handler writes it the same way. Either way the guest's buffer
//! may be too small, and the answer is then "needs N pages" with nothing written.

use std::path::Path;

use cloister_attestation::certs::CertBundle;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

const PAGE: u64 = 4096;
/// Size of one table entry.
pub const ENTRY_SIZE: usize = 24;

/// The GUIDs of the table, as stored: the first three fields little-endian, the last
/// eight bytes in order.
pub mod guid {
    /// ARK: c0b406a4-a803-4952-9743-3fb6014cd0ae.
    pub const ARK: [u8; 16] = guid(0xc0b4_06a4, 0xa803, 0x4952, 0x9743_3fb6_014c_d0ae);
    /// ASK: 4ab7b379-bbac-4fe4-a02f-05aef327c782.
    pub const ASK: [u8; 16] = guid(0x4ab7_b379, 0xbbac, 0x4fe4, 0xa02f_05ae_f327_c782);
    /// VCEK: 63da758d-e664-4564-adc5-f4b93be8accd.
    pub const VCEK: [u8; 16] = guid(0x63da_758d, 0xe664, 0x4564, 0xadc5_f4b9_3be8_accd);
    /// VLEK: a8074bc2-a25a-483e-aae6-39c045a0b8a1.
    pub const VLEK: [u8; 16] = guid(0xa807_4bc2, 0xa25a, 0x483e, 0xaae6_39c0_45a0_b8a1);

    const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        let d = d.to_be_bytes();
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ]
    }
}

/// A certificate table, ready to copy into a guest buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTable {
    bytes: Vec<u8>,
    names: Vec<&'static str>,
}

/// What became of a request for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written into the guest's buffer.
    Written,
    /// The buffer has fewer pages than the table needs; nothing was written.
    TooSmall {
        /// Pages needed.
        needed: u64,
    },
    /// The buffer is not 4 KiB aligned or not in guest RAM; nothing was written.
    BadBuffer,
}

impl CertTable {
    /// The empty table (just the terminator), what KVM gives a guest when the monitor
    /// serves no certificates.
    pub fn empty() -> Self {
        CertTable {
            bytes: vec![0; ENTRY_SIZE],
            names: Vec::new(),
        }
    }

    /// A table of the ARK, ASK, VCEK and VLEK a bundle holds (in that order; absent
    /// ones are left out).
    pub fn from_bundle(bundle: &CertBundle) -> Self {
        let certs: Vec<(&'static str, [u8; 16], &[u8])> = [
            ("ARK", guid::ARK, bundle.ark.as_ref()),
            ("ASK", guid::ASK, bundle.ask.as_ref()),
            ("VCEK", guid::VCEK, bundle.vcek.as_ref()),
            ("VLEK", guid::VLEK, bundle.vlek.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, g, c)| c.map(|c| (name, g, c.der())))
        .collect();
        let table_len = (certs.len() + 1) * ENTRY_SIZE;
        let mut bytes = vec![0u8; table_len];
        let mut names = Vec::with_capacity(certs.len());
        for (i, (name, g, der)) in certs.iter().enumerate() {
            // Certificates are a few KiB each: offsets and lengths fit in u32.
            let offset = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let length = u32::try_from(der.len()).unwrap_or(u32::MAX);
            let entry = &mut bytes[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            entry[..16].copy_from_slice(g);
            entry[16..20].copy_from_slice(&offset.to_le_bytes());
            entry[20..24].copy_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(der);
            names.push(*name);
        }
        CertTable { bytes, names }
    }

    /// A table of the certificates in `dir` (snpguest's layout; see
    /// [`CertBundle::from_dir`]); the error names the directory and what is wrong.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        let bundle = CertBundle::from_dir(dir)
            .map_err(|e| format!("certificates for the guest in {}: {e}", dir.display()))?;
        Ok(Self::from_bundle(&bundle))
    }

    /// The table's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The certificates it holds, by role, in order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Pages the table needs.
    pub fn pages(&self) -> u64 {
        (self.bytes.len() as u64).div_ceil(PAGE)
    }

    /// Writes the table into the guest's buffer of `npages` pages at `gpa`.
    pub fn deliver(&self, mem: &GuestMemoryMmap, gpa: u64, npages: u64) -> Delivery {
        if !gpa.is_multiple_of(PAGE) {
            return Delivery::BadBuffer;
        }
        if npages < self.pages() {
            return Delivery::TooSmall {
                needed: self.pages(),
            };
        }
        // Where the table goes must be RAM before anything is written ("nothing was
        // written" must hold for a buffer that runs past the end of RAM).
        let len = self.bytes.len();
        if !<GuestMemoryMmap as vm_memory::GuestMemory>::check_range(
            mem,
            GuestAddress(gpa),
            len,
            vm_memory::Permissions::Write,
        ) {
            return Delivery::BadBuffer;
        }
        match mem.write_slice(&self.bytes, GuestAddress(gpa)) {
            Ok(()) => Delivery::Written,
            Err(_) => Delivery::BadBuffer,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The GUID's text form parsed the slow way, to pin the const construction.
    fn parse(text: &str) -> [u8; 16] {
        let parts: Vec<&str> = text.split('-').collect();
        let a = u32::from_str_radix(parts[0], 16).unwrap().to_le_bytes();
        let b = u16::from_str_radix(parts[1], 16).unwrap().to_le_bytes();
        let c = u16::from_str_radix(parts[2], 16).unwrap().to_le_bytes();
        let rest = format!("{}{}", parts[3], parts[4]);
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&a);
        out[4..6].copy_from_slice(&b);
        out[6..8].copy_from_slice(&c);
        for i in 0..8 {
            out[8 + i] = u8::from_str_radix(&rest[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn guids_match_the_ghcb_spec_strings() {
        assert_eq!(guid::ARK, parse("c0b406a4-a803-4952-9743-3fb6014cd0ae"));
        assert_eq!(guid::ASK, parse("4ab7b379-bbac-4fe4-a02f-05aef327c782"));
        assert_eq!(guid::VCEK, parse("63da758d-e664-4564-adc5-f4b93be8accd"));
        assert_eq!(guid::VLEK, parse("a8074bc2-a25a-483e-aae6-39c045a0b8a1"));
    }

    fn vectors_bundle() -> CertBundle {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/snp/milan-v2-vcek");
        let mut bundle = CertBundle::default();
        bundle.add_file(&dir.join("chain.pem")).unwrap();
        bundle.add_file(&dir.join("vek.der")).unwrap();
        bundle
    }

    #[test]
    fn table_layout() {
        let bundle = vectors_bundle();
        let table = CertTable::from_bundle(&bundle);
        let bytes = table.bytes();
        let n = table.names().len();
        assert_eq!(table.names(), ["ARK", "ASK", "VCEK"]);
        // Terminator after n entries, then the certificates back to back.
        assert!(bytes[n * ENTRY_SIZE..(n + 1) * ENTRY_SIZE]
            .iter()
            .all(|&b| b == 0));
        let mut expected_offset = (n + 1) * ENTRY_SIZE;
        for i in 0..n {
            let e = &bytes[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            let off = u32::from_le_bytes(e[16..20].try_into().unwrap()) as usize;
            let len = u32::from_le_bytes(e[20..24].try_into().unwrap()) as usize;
            assert_eq!(off, expected_offset);
            let der = &bytes[off..off + len];
            let role = match &e[..16] {
                g if g == guid::ARK => bundle.ark.as_ref(),
                g if g == guid::ASK => bundle.ask.as_ref(),
                g if g == guid::VCEK => bundle.vcek.as_ref(),
                g if g == guid::VLEK => bundle.vlek.as_ref(),
                _ => panic!("unknown GUID"),
            };
            assert_eq!(der, role.unwrap().der());
            expected_offset += len;
        }
        assert_eq!(bytes.len(), expected_offset);
    }

    #[test]
    fn delivery() {
        let mem = crate::memory::create_guest_memory(crate::memory::MemorySize(1 << 20)).unwrap();
        let table = CertTable::from_bundle(&vectors_bundle());
        let pages = table.pages();
        assert!(pages >= 1);
        assert_eq!(
            table.deliver(&mem, 0x10000, pages - 1),
            Delivery::TooSmall { needed: pages }
        );
        assert_eq!(table.deliver(&mem, 0x10010, pages), Delivery::BadBuffer);
        assert_eq!(table.deliver(&mem, 2 << 20, pages), Delivery::BadBuffer);
        // A buffer that starts in RAM and runs past its end: refused, nothing written
        // (the fuzzer's reproducer wrote the part that fit).
        let last = (1 << 20) - 0x1000;
        assert_eq!(table.deliver(&mem, last, pages), Delivery::BadBuffer);
        let mut untouched = [0u8; 16];
        mem.read_slice(&mut untouched, GuestAddress(last)).unwrap();
        assert_eq!(untouched, [0; 16]);
        assert_eq!(table.deliver(&mem, 0x10000, pages), Delivery::Written);
        let mut back = vec![0u8; table.bytes().len()];
        mem.read_slice(&mut back, GuestAddress(0x10000)).unwrap();
        assert_eq!(back, table.bytes());
        assert_eq!(CertTable::empty().pages(), 1);
        assert_eq!(CertTable::empty().bytes(), &[0; 24]);
    }
}
