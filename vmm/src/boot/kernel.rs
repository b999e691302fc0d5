//! Loading the kernel (ELF vmlinux or bzImage), the initrd and the command line into
//! guest memory, following the Linux x86 boot protocol (Documentation/arch/x86/boot.rst).

use std::io::Cursor;

use linux_loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START};
use crate::memory::GuestMemoryMmap;

/// `HdrS`, the setup header magic at offset 0x202 of a bzImage.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Offset of the setup header magic.
const HDRS_OFFSET: usize = 0x202;
/// Offset of the 64-bit entry point from the protected-mode kernel's load address.
const STARTUP_64_OFFSET: u64 = 0x200;
/// xloadflags: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// Boot protocol 2.12, the first with xloadflags.
const PROTOCOL_2_12: u16 = 0x020c;
/// Highest initrd address for protocols before 2.03.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
const PAGE: u64 = 0x1000;

/// Errors while loading the kernel, initrd or command line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The image is neither format.
    #[error("kernel image {0} is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat(String),
    /// The bzImage has no 64-bit entry.
    #[error("kernel image {name} is a bzImage without a 64-bit entry point (boot protocol {version:#06x}); a 64-bit kernel with boot protocol 2.12 or later is needed")]
    No64BitEntry {
        /// Image name.
        name: String,
        /// Its boot protocol version.
        version: u16,
    },
    /// linux-loader refused the image.
    #[error("cannot load kernel image {name}: {reason}")]
    Loader {
        /// Image name.
        name: String,
        /// What the loader said.
        reason: String,
    },
    /// The kernel does not fit.
    #[error("kernel image {name} needs guest memory up to {needed:#x} but the guest's RAM below 4 GiB ends at {available:#x}; give the guest more --memory")]
    KernelTooLarge {
        /// Image name.
        name: String,
        /// Highest address the kernel needs.
        needed: u64,
        /// End of low RAM.
        available: u64,
    },
    /// The initrd does not fit.
    #[error("initrd {name} ({size} bytes) does not fit in guest memory: only {room} bytes are free between the kernel's end ({kernel_end:#x}) and {limit:#x}; give the guest more --memory")]
    InitrdTooLarge {
        /// Initrd name.
        name: String,
        /// Its size.
        size: u64,
        /// Free room.
        room: u64,
        /// End of the kernel.
        kernel_end: u64,
        /// Highest address the initrd may reach.
        limit: u64,
    },
    /// The command line is too long.
    #[error("kernel command line is {len} bytes long; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's limit.
        max: usize,
    },
    /// The command line has a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// An ELF program header that cannot be loaded as given.
    #[error("kernel image {name}: program header {index}: {why}")]
    ElfSegment {
        /// Image name.
        name: String,
        /// Index of the program header.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// Writing guest memory failed.
    #[error("cannot write {what} into guest memory: {reason}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// Kernel image formats the monitor boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF64 vmlinux (or any ELF kernel entered at its 64-bit entry).
    Elf,
    /// A bzImage with a setup header.
    BzImage,
}

/// Tells the format of a kernel image from its first bytes.
pub fn detect_format(image: &[u8]) -> Option<KernelFormat> {
    if image.starts_with(b"\x7fELF") {
        return Some(KernelFormat::Elf);
    }
    let magic = image.get(HDRS_OFFSET..HDRS_OFFSET + 4)?;
    (u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]) == HDRS_MAGIC)
        .then_some(KernelFormat::BzImage)
}

/// A kernel in guest memory.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    /// Its format.
    pub format: KernelFormat,
    /// The 64-bit entry point (rip of the boot vCPU).
    pub entry: u64,
    /// End (exclusive) of the memory the kernel occupies or needs while starting.
    pub end: u64,
    /// End (exclusive) of the bytes the loader wrote; between it and `end` guest memory
    /// is as fresh (all zero) as before loading. At most `end`.
    pub written_end: u64,
    /// The bzImage's setup header, to copy into the zero page.
    pub setup_header: Option<setup_header>,
}

impl LoadedKernel {
    /// Largest command line this kernel accepts, NUL excluded.
    pub fn cmdline_max(&self) -> usize {
        let kernel_max = match &self.setup_header {
            Some(hdr) if hdr.version >= 0x0206 => hdr.cmdline_size as usize,
            Some(_) => 255,
            None => CMDLINE_MAX_SIZE - 1,
        };
        kernel_max.min(CMDLINE_MAX_SIZE - 1)
    }

    /// Highest address (inclusive) the initrd may reach.
    pub fn initrd_addr_max(&self) -> u64 {
        match &self.setup_header {
            Some(hdr) if hdr.version >= 0x0203 => u64::from(hdr.initrd_addr_max),
            Some(_) => DEFAULT_INITRD_ADDR_MAX,
            None => u64::MAX,
        }
    }
}

/// Loads `image` (named `name` in errors) into guest memory whose RAM below 4 GiB ends
/// at `low_ram_end`.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    image: &[u8],
    name: &str,
    low_ram_end: u64,
) -> Result<LoadedKernel, LoadError> {
    let loader_error = |e: linux_loader::loader::Error| LoadError::Loader {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let highmem = Some(GuestAddress(HIMEM_START));
    match detect_format(image) {
        Some(KernelFormat::Elf) => {
            check_elf_segments(image, name, low_ram_end)?;
            let result =
                Elf::load(mem, None, &mut Cursor::new(image), highmem).map_err(loader_error)?;
            Ok(LoadedKernel {
                format: KernelFormat::Elf,
                entry: result.kernel_load.0,
                end: result.kernel_end,
                written_end: result.kernel_end,
                setup_header: None,
            })
        }
        Some(KernelFormat::BzImage) => {
            let hdr =
                bzimage_header(image).ok_or_else(|| LoadError::UnknownFormat(name.to_string()))?;
            if hdr.version < PROTOCOL_2_12 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(LoadError::No64BitEntry {
                    name: name.to_string(),
                    version: hdr.version,
                });
            }
            let needed = u64::from(hdr.code32_start) + u64::from(hdr.init_size);
            if needed > low_ram_end {
                return Err(LoadError::KernelTooLarge {
                    name: name.to_string(),
                    needed,
                    available: low_ram_end,
                });
            }
            let result =
                BzImage::load(mem, None, &mut Cursor::new(image), highmem).map_err(loader_error)?;
            Ok(LoadedKernel {
                format: KernelFormat::BzImage,
                entry: result.kernel_load.0 + STARTUP_64_OFFSET,
                end: result.kernel_end.max(needed),
                written_end: result.kernel_end,
                setup_header: result.setup_header,
            })
        }
        None => Err(LoadError::UnknownFormat(name.to_string())),
    }
}

/// Checks every PT_LOAD segment of an ELF image before anything is loaded: its file bytes
/// lie inside the image, it occupies no less memory than file bytes, and its memory
/// `[p_paddr, p_paddr + p_memsz)` lies between 1 MiB (below are the boot structures the
/// monitor writes after the kernel: they would overwrite it) and the end of low RAM,
/// computed without overflow.
fn check_elf_segments(image: &[u8], name: &str, low_ram_end: u64) -> Result<(), LoadError> {
    // `at` may come from the image (a program header's offset): the end is checked too.
    let bytes_at = |at: usize, n: usize| at.checked_add(n).and_then(|end| image.get(at..end));
    let u16_at = |at: usize| bytes_at(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes_at(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at: usize| {
        bytes_at(at, 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    let loader = |reason: &str| LoadError::Loader {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err(loader("ELF header truncated"));
    };
    let phentsize = usize::from(phentsize);
    if phentsize < 0x38 {
        return Err(loader(
            "ELF program header entries are smaller than ELF64's",
        ));
    }
    for index in 0..usize::from(phnum) {
        let segment = |why: String| LoadError::ElfSegment {
            name: name.to_string(),
            index,
            why,
        };
        let at = usize::try_from(phoff)
            .ok()
            .and_then(|o| o.checked_add(index.checked_mul(phentsize)?))
            .ok_or_else(|| segment("lies outside the image".into()))?;
        let field = |off: usize| at.checked_add(off).and_then(u64_at);
        let (Some(kind), Some(offset), Some(paddr), Some(filesz), Some(memsz)) = (
            at.checked_add(0).and_then(u32_at),
            field(8),
            field(24),
            field(32),
            field(40),
        ) else {
            return Err(segment("lies outside the image".into()));
        };
        if kind != 1 {
            continue; // not PT_LOAD
        }
        if offset
            .checked_add(filesz)
            .is_none_or(|end| end > image.len() as u64)
        {
            return Err(segment(format!(
                "its {filesz} file bytes at offset {offset:#x} run past the image's end"
            )));
        }
        if filesz > memsz {
            return Err(segment(format!(
                "p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}"
            )));
        }
        if paddr < HIMEM_START {
            return Err(segment(format!(
                "loads at {paddr:#x}, below 1 MiB, where the monitor's boot structures go"
            )));
        }
        match paddr.checked_add(memsz) {
            Some(end) if end <= low_ram_end => {}
            Some(end) => {
                return Err(LoadError::KernelTooLarge {
                    name: name.to_string(),
                    needed: end,
                    available: low_ram_end,
                })
            }
            None => {
                return Err(segment(format!(
                    "p_paddr {paddr:#x} + p_memsz {memsz:#x} overflows"
                )))
            }
        }
    }
    Ok(())
}

/// The setup header of a bzImage, read from its fixed offset.
fn bzimage_header(image: &[u8]) -> Option<setup_header> {
    use vm_memory::ByteValued;
    let size = std::mem::size_of::<setup_header>();
    let bytes = image.get(0x1f1..0x1f1 + size)?;
    let mut hdr = setup_header::default();
    hdr.as_mut_slice().copy_from_slice(bytes);
    Some(hdr)
}

/// Places the initrd as high as it fits in low RAM (page aligned, below the kernel's
/// `initrd_addr_max`, above the kernel); returns its address.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    initrd: &[u8],
    name: &str,
    low_ram_end: u64,
) -> Result<u64, LoadError> {
    let size = initrd.len() as u64;
    let limit = low_ram_end.min(kernel.initrd_addr_max().saturating_add(1));
    let kernel_end = kernel
        .end
        .checked_next_multiple_of(PAGE)
        .unwrap_or(u64::MAX);
    let room = limit.saturating_sub(kernel_end);
    let too_large = || LoadError::InitrdTooLarge {
        name: name.to_string(),
        size,
        room,
        kernel_end,
        limit,
    };
    let start = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE - 1);
    if start < kernel_end {
        return Err(too_large());
    }
    mem.write_slice(initrd, GuestAddress(start))
        .map_err(|e| LoadError::GuestMemory {
            what: "the initrd",
            reason: e.to_string(),
        })?;
    Ok(start)
}

/// Writes the NUL-terminated command line at [`CMDLINE_START`]; returns its length
/// without the NUL.
pub fn write_cmdline(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
) -> Result<usize, LoadError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(LoadError::CmdlineNul);
    }
    let max = kernel.cmdline_max();
    if cmdline.len() > max {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|e| LoadError::GuestMemory {
            what: "the command line",
            reason: e.to_string(),
        })?;
    Ok(cmdline.len())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A minimal ELF64 x86_64 executable with one PT_LOAD segment holding `code` at
    /// `paddr`, entered at `paddr`.
    pub(crate) fn tiny_elf(code: &[u8], paddr: u64) -> Vec<u8> {
        let mut elf = vec![0u8; 0x78];
        elf[0..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // little endian
        elf[6] = 1; // version
        elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf[20..24].copy_from_slice(&1u32.to_le_bytes());
        elf[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
        elf[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        elf[52..54].copy_from_slice(&0x40u16.to_le_bytes()); // e_ehsize
        elf[54..56].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut elf[0x40..0x78];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        ph[8..16].copy_from_slice(&0x78u64.to_le_bytes()); // p_offset
        ph[16..24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
        ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
        ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes()); // p_align
        elf.extend_from_slice(code);
        elf
    }

    /// A fake bzImage: setup sectors plus a protected-mode part, with a 2.15 header.
    fn tiny_bzimage(xloadflags: u16, init_size: u32) -> Vec<u8> {
        let mut img = vec![0u8; 5 * 512 + 4096];
        img[0x1f1] = 4; // setup_sects
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        img[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());
        img[5 * 512] = 0xf4; // first byte of the protected-mode kernel
        img
    }

    fn mem(size: u64) -> GuestMemoryMmap {
        crate::memory::create_guest_memory(crate::memory::MemorySize(size)).unwrap()
    }

    #[test]
    fn detects_formats() {
        assert_eq!(
            detect_format(&tiny_elf(&[0xf4], 0x20_0000)),
            Some(KernelFormat::Elf)
        );
        assert_eq!(
            detect_format(&tiny_bzimage(1, 0x1000)),
            Some(KernelFormat::BzImage)
        );
        assert_eq!(detect_format(b"hello"), None);
        assert_eq!(detect_format(&[]), None);
        assert_eq!(detect_format(&[0u8; 4096]), None);
    }

    #[test]
    fn loads_elf_at_its_physical_address() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &tiny_elf(&[0xe6, 0xf4], 0x20_0000), "k", 32 << 20).unwrap();
        assert_eq!(k.format, KernelFormat::Elf);
        assert_eq!(k.entry, 0x20_0000);
        assert_eq!(
            m.read_obj::<[u8; 2]>(GuestAddress(0x20_0000)).unwrap(),
            [0xe6, 0xf4]
        );
        assert_eq!(k.cmdline_max(), CMDLINE_MAX_SIZE - 1);
    }

    #[test]
    fn loads_bzimage_and_enters_at_startup_64() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &tiny_bzimage(1, 0x40_0000), "bz", 32 << 20).unwrap();
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.entry, 0x10_0200);
        assert_eq!(k.end, 0x50_0000);
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x10_0000)).unwrap(), 0xf4);
        assert_eq!(k.cmdline_max(), 2047);
        assert_eq!(k.initrd_addr_max(), 0x37ff_ffff);
    }

    #[test]
    fn refuses_bad_images() {
        let m = mem(32 << 20);
        let err = load_kernel(&m, b"not a kernel", "/tmp/x", 32 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel image /tmp/x is neither an ELF vmlinux nor a bzImage"
        );
        assert!(matches!(
            load_kernel(&m, &tiny_bzimage(0, 0x1000), "bz", 32 << 20),
            Err(LoadError::No64BitEntry {
                version: 0x020f,
                ..
            })
        ));
        assert!(matches!(
            load_kernel(&m, &tiny_bzimage(1, 64 << 20), "bz", 32 << 20),
            Err(LoadError::KernelTooLarge { .. })
        ));
        // Truncated ELF and truncated bzImage: errors, no panic.
        let elf = tiny_elf(&[0xf4; 64], 0x20_0000);
        for cut in [4, 20, 0x40, 0x77, 0x80] {
            assert!(
                load_kernel(&m, &elf[..cut], "e", 32 << 20).is_err(),
                "cut {cut}"
            );
        }
        let bz = tiny_bzimage(1, 0x1000);
        for cut in [0x206, 0x300, 5 * 512 - 1] {
            assert!(
                load_kernel(&m, &bz[..cut], "b", 32 << 20).is_err(),
                "cut {cut}"
            );
        }
        // An ELF below 1 MiB is refused by the loader.
        assert!(load_kernel(&m, &tiny_elf(&[0xf4], 0x8000), "low", 32 << 20).is_err());
    }

    /// Sets the p_memsz / p_paddr / p_filesz of the one program header of a `tiny_elf`.
    fn with_ph(mut elf: Vec<u8>, paddr: u64, filesz: u64, memsz: u64) -> Vec<u8> {
        elf[0x40 + 24..0x40 + 32].copy_from_slice(&paddr.to_le_bytes());
        elf[0x40 + 32..0x40 + 40].copy_from_slice(&filesz.to_le_bytes());
        elf[0x40 + 40..0x40 + 48].copy_from_slice(&memsz.to_le_bytes());
        elf
    }

    #[test]
    fn elf_segments_are_checked_before_anything_is_loaded() {
        let m = mem(32 << 20);
        let base = tiny_elf(&[0xf4; 16], 0x20_0000);
        let load = |img: &[u8]| load_kernel(&m, img, "e", 32 << 20);
        // A p_memsz that overflows p_paddr + p_memsz.
        let err = load(&with_ph(base.clone(), 0x20_0000, 16, u64::MAX - 0x1000)).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
        // One that does not overflow but runs past RAM.
        let err = load(&with_ph(base.clone(), 0x20_0000, 16, 1 << 40)).unwrap_err();
        assert!(matches!(err, LoadError::KernelTooLarge { .. }), "{err}");
        // A segment below 1 MiB (the zero page, page tables and command line go there).
        let err = load(&with_ph(base.clone(), 0xf_f000, 16, 0x2000)).unwrap_err();
        assert!(err.to_string().contains("below 1 MiB"), "{err}");
        // File bytes past the image, and more file bytes than memory.
        let err = load(&with_ph(base.clone(), 0x20_0000, 1 << 20, 1 << 20)).unwrap_err();
        assert!(err.to_string().contains("past the image's end"), "{err}");
        let err = load(&with_ph(base.clone(), 0x20_0000, 16, 8)).unwrap_err();
        assert!(err.to_string().contains("larger than p_memsz"), "{err}");
        // A program header table outside the image.
        let mut far = base.clone();
        far[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(load(&far).is_err());
        // Nothing was written by the refused loads.
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x20_0000)).unwrap(), 0);
        // The initrd placement cannot overflow on a kernel ending at the top.
        let top = LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0,
            end: u64::MAX,
            written_end: u64::MAX,
            setup_header: None,
        };
        assert!(load_initrd(&m, &top, &[1; 10], "i", 32 << 20).is_err());
    }

    /// Mutated images (random bytes flipped in headers, program headers and sizes) are
    /// loaded or refused, never a panic.
    #[test]
    fn mutated_images_never_panic() {
        let m = mem(32 << 20);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let bases = [tiny_elf(&[0xf4; 32], 0x20_0000), tiny_bzimage(1, 0x1000)];
        for round in 0..20_000 {
            let mut img = bases[round % 2].clone();
            for _ in 0..1 + next() % 4 {
                // Bias mutations towards the headers, where the parsing happens.
                let span = if next() % 4 == 0 {
                    img.len()
                } else {
                    0x280.min(img.len())
                };
                let at = (next() % span as u64) as usize;
                img[at] = next() as u8;
            }
            if next() % 8 == 0 {
                img.truncate((next() % img.len() as u64) as usize);
            }
            let _ = load_kernel(&m, &img, "fuzz", 32 << 20);
        }
    }

    #[test]
    fn places_initrd_high_and_refuses_what_does_not_fit() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &tiny_elf(&[0xf4], 0x20_0000), "k", 32 << 20).unwrap();
        let initrd = vec![0xab; 5000];
        let addr = load_initrd(&m, &k, &initrd, "i", 32 << 20).unwrap();
        assert_eq!(addr % PAGE, 0);
        assert_eq!(addr, (32 << 20) - 0x2000);
        assert_eq!(m.read_obj::<u8>(GuestAddress(addr + 4999)).unwrap(), 0xab);
        let huge = vec![0; 31 << 20];
        let err = load_initrd(&m, &k, &huge, "big.cpio", 32 << 20).unwrap_err();
        assert!(matches!(err, LoadError::InitrdTooLarge { size, .. } if size == 31 << 20));
        assert!(err
            .to_string()
            .starts_with("initrd big.cpio (32505856 bytes) does not fit"));
    }

    #[test]
    fn writes_cmdline_and_enforces_limits() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &tiny_elf(&[0xf4], 0x20_0000), "k", 32 << 20).unwrap();
        assert_eq!(write_cmdline(&m, &k, "console=ttyS0").unwrap(), 13);
        let back: [u8; 14] = m.read_obj(GuestAddress(CMDLINE_START)).unwrap();
        assert_eq!(&back, b"console=ttyS0\0");
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            write_cmdline(&m, &k, &long),
            Err(LoadError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(matches!(
            write_cmdline(&m, &k, "a\0b"),
            Err(LoadError::CmdlineNul)
        ));
    }
}
