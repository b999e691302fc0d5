//! Identity page tables for the 64-bit boot entry: the first 1 GiB mapped with 2 MiB
//! pages (Intel SDM Vol. 3, 4.5), enough for the kernel's early startup code, which
//! builds its own tables.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::layout::{PDE_START, PDPTE_START, PML4_START};
use crate::memory::GuestMemoryMmap;

/// Present | writable.
const PRESENT_RW: u64 = 0x3;
/// Present | writable | page size (a 2 MiB page in a page directory).
const PRESENT_RW_2M: u64 = 0x83;

/// The three tables as (guest address, 512 entries).
pub fn identity_tables() -> [(u64, [u64; 512]); 3] {
    identity_tables_with_c_bit(None)
}

/// The three tables, with the SEV C-bit (encrypted) at position `c_bit` set in every
/// entry when given, so that the guest's memory is mapped private (SNP-FACTS §3.6).
pub fn identity_tables_with_c_bit(c_bit: Option<u8>) -> [(u64, [u64; 512]); 3] {
    let c = c_bit.map_or(0, |b| 1u64 << (b & 63));
    let mut pml4 = [0u64; 512];
    pml4[0] = PDPTE_START | PRESENT_RW | c;
    let mut pdpt = [0u64; 512];
    pdpt[0] = PDE_START | PRESENT_RW | c;
    let mut pd = [0u64; 512];
    for (i, entry) in pd.iter_mut().enumerate() {
        *entry = ((i as u64) << 21) | PRESENT_RW_2M | c;
    }
    [(PML4_START, pml4), (PDPTE_START, pdpt), (PDE_START, pd)]
}

/// Writes the identity tables into guest memory; returns the value for CR3.
pub fn write_identity_tables(mem: &GuestMemoryMmap) -> Result<u64, GuestMemoryError> {
    write_identity_tables_with_c_bit(mem, None)
}

/// Writes the identity tables, with the C-bit when given; returns the value for CR3.
pub fn write_identity_tables_with_c_bit(
    mem: &GuestMemoryMmap,
    c_bit: Option<u8>,
) -> Result<u64, GuestMemoryError> {
    for (addr, table) in identity_tables_with_c_bit(c_bit) {
        let mut bytes = [0u8; 4096];
        for (chunk, entry) in bytes.chunks_exact_mut(8).zip(table) {
            chunk.copy_from_slice(&entry.to_le_bytes());
        }
        mem.write_slice(&bytes, GuestAddress(addr))?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Walks the tables the way the MMU does for a 2 MiB mapping.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 0x1ff) * 8))
            .unwrap();
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .unwrap();
        if pdpte & 1 == 0 {
            return None;
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .unwrap();
        if pde & 1 == 0 || pde & 0x80 == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff) + (va & 0x1f_ffff))
    }

    #[test]
    fn maps_first_gib_one_to_one() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_tables(&mem).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [0u64, 0x1000, 0x10_0000, 0x123_4567, 0x3fff_ffff] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&mem, cr3, 0x4000_0000), None);
    }
}
