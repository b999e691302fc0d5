//! Direct 64-bit boot of a Linux-boot-protocol kernel: the guest-physical layout, the
//! structures written into guest memory before the first instruction (GDT, identity page
//! tables, zero page, e820 map, MP table), and kernel/initrd/command-line loading.

pub mod e820;
pub mod gdt;
pub mod kernel;
pub mod layout;
pub mod mptable;
pub mod paging;
pub mod plan;
pub mod verifier_plan;
pub mod zero_page;

use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::memory::GuestMemoryMmap;

/// Writes the boot GDT and an empty IDT at their fixed addresses.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), GuestMemoryError> {
    for (i, entry) in gdt::boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::BOOT_GDT_START + 8 * i as u64))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
}
