//! What the loader handed over: the Linux zero page (`struct boot_params`) or the PVH
//! `struct hvm_start_info`, read into one form.

use crate::entry::KIND_PVH;
use cloister_test_guest::e820::E820Entry;

/// Most memory map entries kept (the zero page holds at most 128).
pub const MAX_E820: usize = 128;
/// Longest command line read.
const MAX_CMDLINE: usize = 4096;
/// `hvm_start_info.magic`.
const PVH_MAGIC: u32 = 0x336e_c578;

/// The loader's hand-over, whichever protocol was used.
pub struct BootInfo {
    /// The command line, without its NUL.
    pub cmdline: &'static [u8],
    /// The memory map.
    pub e820: [E820Entry; MAX_E820],
    /// Entries used in `e820`.
    pub e820_len: usize,
    /// The map had more entries than `MAX_E820`.
    pub e820_truncated: bool,
    /// RSDP address the loader gave (0: none).
    pub rsdp: u64,
    /// initrd address and size (size 0: none).
    pub initrd: (u64, u64),
    /// Entered through PVH (the memory map is then the firmware's, not the VMM's).
    pub pvh: bool,
    /// Address of the Linux zero page (`None` for PVH), for its `setup_data` list.
    pub zero_page: Option<u64>,
}

/// Reads `T` from physical address `addr` (identity-mapped).
fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: the loader placed its structure in RAM below 4 GiB, which is identity-mapped;
    // unaligned reads are used since the zero page packs its fields.
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// The NUL-terminated string at `addr`, at most `MAX_CMDLINE` bytes.
fn c_string(addr: u64) -> &'static [u8] {
    if addr == 0 || addr >= 1 << 32 {
        return &[];
    }
    let mut len = 0;
    while len < MAX_CMDLINE && read::<u8>(addr + len as u64) != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes at `addr` were just read; nothing in the guest writes them.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }
}

impl BootInfo {
    /// Reads the structure at `info` for entry `kind`; `Err` names what is wrong.
    pub fn read(info: u64, kind: u64) -> Result<Self, &'static str> {
        if info == 0 {
            return Err("the loader passed no boot information (null pointer)");
        }
        let mut boot = BootInfo {
            cmdline: &[],
            e820: [E820Entry::default(); MAX_E820],
            e820_len: 0,
            e820_truncated: false,
            rsdp: 0,
            initrd: (0, 0),
            pvh: kind == KIND_PVH,
            zero_page: (kind != KIND_PVH).then_some(info),
        };
        if kind == KIND_PVH {
            if read::<u32>(info) != PVH_MAGIC {
                return Err("hvm_start_info magic is wrong");
            }
            let version = read::<u32>(info + 4);
            let nr_modules = read::<u32>(info + 12);
            let modlist = read::<u64>(info + 16);
            boot.cmdline = c_string(read::<u64>(info + 24));
            boot.rsdp = read::<u64>(info + 32);
            if nr_modules > 0 && modlist != 0 {
                boot.initrd = (read::<u64>(modlist), read::<u64>(modlist + 8));
            }
            if version >= 1 {
                let map = read::<u64>(info + 40);
                let entries = read::<u32>(info + 48) as usize;
                boot.e820_truncated = entries > MAX_E820;
                boot.e820_len = entries.min(MAX_E820);
                for (i, e) in boot.e820[..boot.e820_len].iter_mut().enumerate() {
                    let at = map + 24 * i as u64;
                    *e = E820Entry {
                        addr: read(at),
                        size: read(at + 8),
                        kind: read(at + 16),
                    };
                }
            }
        } else {
            let cmd_line_ptr =
                u64::from(read::<u32>(info + 0x228)) | u64::from(read::<u32>(info + 0x0c8)) << 32;
            boot.cmdline = c_string(cmd_line_ptr);
            boot.rsdp = read::<u64>(info + 0x070);
            let ramdisk =
                u64::from(read::<u32>(info + 0x218)) | u64::from(read::<u32>(info + 0x0c0)) << 32;
            let ramdisk_size =
                u64::from(read::<u32>(info + 0x21c)) | u64::from(read::<u32>(info + 0x0c4)) << 32;
            boot.initrd = (ramdisk, ramdisk_size);
            let entries = usize::from(read::<u8>(info + 0x1e8));
            boot.e820_truncated = entries > MAX_E820;
            boot.e820_len = entries.min(MAX_E820);
            for (i, e) in boot.e820[..boot.e820_len].iter_mut().enumerate() {
                let at = info + 0x2d0 + 20 * i as u64;
                *e = E820Entry {
                    addr: read(at),
                    size: read(at + 8),
                    kind: read(at + 16),
                };
            }
        }
        Ok(boot)
    }
}
