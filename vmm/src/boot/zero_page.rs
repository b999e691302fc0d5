//! The zero page (`struct boot_params`, Documentation/arch/x86/zero-page.rst) handed to
//! the kernel's 64-bit entry in rsi.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use super::e820::E820Entry;
use super::kernel::LoadedKernel;
use super::layout::{CMDLINE_START, ZERO_PAGE_START};
use crate::memory::GuestMemoryMmap;

const BOOT_FLAG: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader ID: the loader is not in the kernel's list.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// loadflags: the protected-mode kernel is loaded at 1 MiB.
const LOADED_HIGH: u8 = 0x01;
/// Boot protocol version claimed in a header synthesized for an ELF kernel.
const SYNTHESIZED_VERSION: u16 = 0x020f;
/// Alignment claimed in a synthesized header (the kernel's usual 16 MiB).
const KERNEL_ALIGNMENT: u32 = 0x0100_0000;

/// Errors while building the zero page.
#[derive(Debug, thiserror::Error)]
pub enum ZeroPageError {
    /// More e820 entries than the zero page holds.
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    /// An address that must lie below 4 GiB does not.
    #[error("{0} lies above 4 GiB and cannot be described in the zero page")]
    Above4G(&'static str),
    /// Guest memory write failed.
    #[error("cannot write the zero page into guest memory: {0}")]
    Write(#[from] GuestMemoryError),
}

/// What the kernel is told about its environment.
#[derive(Debug, Clone)]
pub struct BootInfo<'a> {
    /// The loaded kernel (supplies the bzImage setup header).
    pub kernel: &'a LoadedKernel,
    /// Length of the command line at [`CMDLINE_START`], NUL excluded.
    pub cmdline_len: usize,
    /// Address and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The memory map.
    pub e820: &'a [E820Entry],
    /// Address of the ACPI RSDP, if ACPI tables were written.
    pub acpi_rsdp: Option<u64>,
}

/// Builds the zero page.
pub fn build_boot_params(info: &BootInfo<'_>) -> Result<boot_params, ZeroPageError> {
    let hdr = match info.kernel.setup_header {
        Some(hdr) => hdr,
        None => setup_header {
            boot_flag: BOOT_FLAG,
            header: HDRS_MAGIC,
            version: SYNTHESIZED_VERSION,
            kernel_alignment: KERNEL_ALIGNMENT,
            loadflags: LOADED_HIGH,
            ..Default::default()
        },
    };
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.cmd_line_ptr =
        u32::try_from(CMDLINE_START).map_err(|_| ZeroPageError::Above4G("the command line"))?;
    params.hdr.cmdline_size = u32::try_from(info.cmdline_len + 1)
        .map_err(|_| ZeroPageError::Above4G("the command line"))?;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image =
            u32::try_from(addr).map_err(|_| ZeroPageError::Above4G("the initrd"))?;
        params.hdr.ramdisk_size =
            u32::try_from(size).map_err(|_| ZeroPageError::Above4G("the initrd"))?;
    }
    if info.e820.len() > params.e820_table.len() {
        return Err(ZeroPageError::TooManyE820Entries(info.e820.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    if let Some(rsdp) = info.acpi_rsdp {
        params.acpi_rsdp_addr = rsdp;
    }
    Ok(params)
}

/// Writes the zero page at [`ZERO_PAGE_START`].
pub fn write_boot_params(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), ZeroPageError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::boot::e820::e820_map;
    use crate::boot::kernel::KernelFormat;
    use vm_memory::ByteValued;

    fn elf_kernel() -> LoadedKernel {
        LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x20_0000,
            end: 0x30_0000,
            written_end: 0x30_0000,
            setup_header: None,
        }
    }

    fn u32_at(bytes: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn fields_land_at_their_documented_offsets() {
        let kernel = elf_kernel();
        let map = e820_map(64 << 20);
        let params = build_boot_params(&BootInfo {
            kernel: &kernel,
            cmdline_len: 12,
            initrd: Some((0x3f0_0000, 0x1234)),
            e820: &map,
            acpi_rsdp: Some(0xe_0000),
        })
        .unwrap();
        let bytes = params.as_slice();
        assert_eq!(bytes.len(), 4096);
        assert_eq!(
            u64::from_le_bytes(bytes[0x70..0x78].try_into().unwrap()),
            0xe_0000
        );
        assert_eq!(bytes[0x1e8], 3); // e820_entries
        assert_eq!(u16::from_le_bytes([bytes[0x1fe], bytes[0x1ff]]), BOOT_FLAG);
        assert_eq!(u32_at(bytes, 0x202), HDRS_MAGIC);
        assert_eq!(bytes[0x210], 0xff); // type_of_loader
        assert_eq!(u32_at(bytes, 0x218), 0x3f0_0000); // ramdisk_image
        assert_eq!(u32_at(bytes, 0x21c), 0x1234); // ramdisk_size
        assert_eq!(u32_at(bytes, 0x228), CMDLINE_START as u32); // cmd_line_ptr
        assert_eq!(u32_at(bytes, 0x238), 13); // cmdline_size
                                              // e820_table at 0x2d0, 20 bytes an entry.
        let e = &bytes[0x2d0 + 40..0x2d0 + 60];
        assert_eq!(u64::from_le_bytes(e[0..8].try_into().unwrap()), 0x10_0000);
        assert_eq!(
            u64::from_le_bytes(e[8..16].try_into().unwrap()),
            (64 << 20) - 0x10_0000
        );
        assert_eq!(u32_at(e, 16), 1);
    }

    #[test]
    fn keeps_a_bzimage_header_and_marks_the_loader() {
        let hdr = setup_header {
            version: 0x020f,
            code32_start: 0x10_0000,
            type_of_loader: 0,
            ..Default::default()
        };
        let kernel = LoadedKernel {
            format: KernelFormat::BzImage,
            entry: 0x10_0200,
            end: 0x50_0000,
            written_end: 0x50_0000,
            setup_header: Some(hdr),
        };
        let params = build_boot_params(&BootInfo {
            kernel: &kernel,
            cmdline_len: 0,
            initrd: None,
            e820: &[],
            acpi_rsdp: None,
        })
        .unwrap();
        let (version, code32, loader, rsdp) = (
            params.hdr.version,
            params.hdr.code32_start,
            params.hdr.type_of_loader,
            params.acpi_rsdp_addr,
        );
        assert_eq!(
            (version, code32, loader, rsdp),
            (0x020f, 0x10_0000, 0xff, 0)
        );
    }

    #[test]
    fn refuses_an_initrd_above_4g() {
        let kernel = elf_kernel();
        assert!(matches!(
            build_boot_params(&BootInfo {
                kernel: &kernel,
                cmdline_len: 0,
                initrd: Some((1 << 32, 1)),
                e820: &[],
                acpi_rsdp: None
            }),
            Err(ZeroPageError::Above4G("the initrd"))
        ));
    }
}
