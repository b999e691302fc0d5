//! How the `cloister` executable is laid out, which is what keeps a monitor's resident
//! memory small (README, "Numbers"; the boot benchmark measures it):
//! - it is a static PIE, without libc.so, ld.so and libgcc_s to fault in
//!   (`.cargo/config.toml`);
//! - the functions a run executes sit together at the start of its text, in `.text.hot`,
//!   placed by `vmm/hot-text.ld` (`scripts/hot-text.sh` writes it; `vmm/build.rs` links
//!   with it). If a toolchain or code change left the script's patterns matching little,
//!   the resident text would quietly grow back; the second test says so instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloister_tests::{cloister, workspace_root};

const PT_INTERP: u32 = 3;
const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;
const ET_DYN: u16 = 3;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn usize_at(b: &[u8], at: usize) -> usize {
    usize::try_from(u64_at(b, at)).unwrap()
}

fn c_str(b: &[u8], at: usize) -> &str {
    let end = b[at..].iter().position(|&c| c == 0).unwrap();
    std::str::from_utf8(&b[at..at + end]).unwrap()
}

/// One ELF64 section header: name, type, address, file offset, size, link.
struct Section {
    name: String,
    kind: u32,
    addr: u64,
    offset: usize,
    size: usize,
    link: usize,
}

/// The little of ELF64 these tests read.
struct Elf {
    bytes: Vec<u8>,
    sections: Vec<Section>,
}

impl Elf {
    fn read(path: &std::path::Path) -> Elf {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
        assert_eq!(bytes[4], 2, "not ELF64");
        let (shoff, shentsize, shnum, shstrndx) = (
            usize_at(&bytes, 0x28),
            usize::from(u16_at(&bytes, 0x3a)),
            usize::from(u16_at(&bytes, 0x3c)),
            usize::from(u16_at(&bytes, 0x3e)),
        );
        let header = |i: usize| shoff + i * shentsize;
        let names = usize_at(&bytes, header(shstrndx) + 0x18);
        let sections = (0..shnum)
            .map(|i| {
                let h = header(i);
                Section {
                    name: c_str(&bytes, names + u32_at(&bytes, h) as usize).to_string(),
                    kind: u32_at(&bytes, h + 4),
                    addr: u64_at(&bytes, h + 0x10),
                    offset: usize_at(&bytes, h + 0x18),
                    size: usize_at(&bytes, h + 0x20),
                    link: u32_at(&bytes, h + 0x28) as usize,
                }
            })
            .collect();
        Elf { bytes, sections }
    }

    fn section(&self, name: &str) -> &Section {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("the monitor has no {name} section"))
    }

    /// Program header types.
    fn segment_types(&self) -> Vec<u32> {
        let (phoff, phentsize, phnum) = (
            usize_at(&self.bytes, 0x20),
            usize::from(u16_at(&self.bytes, 0x36)),
            usize::from(u16_at(&self.bytes, 0x38)),
        );
        (0..phnum)
            .map(|i| u32_at(&self.bytes, phoff + i * phentsize))
            .collect()
    }

    /// Function symbols: (name, address).
    fn functions(&self) -> Vec<(&str, u64)> {
        let symtab = self
            .sections
            .iter()
            .find(|s| s.kind == SHT_SYMTAB)
            .expect("the monitor has a symbol table (it is not stripped)");
        let strtab = self.sections[symtab.link].offset;
        (0..symtab.size / 24)
            .map(|i| symtab.offset + i * 24)
            .filter(|&s| self.bytes[s + 4] & 0xf == STT_FUNC)
            .map(|s| {
                let name = c_str(&self.bytes, strtab + u32_at(&self.bytes, s) as usize);
                (name, u64_at(&self.bytes, s + 8))
            })
            .collect()
    }
}

/// `*`-only glob match, as the linker script's section patterns use.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn the_monitor_is_a_static_pie() {
    let elf = Elf::read(cloister());
    assert_eq!(
        u16_at(&elf.bytes, 0x10),
        ET_DYN,
        "not a position-independent executable"
    );
    assert!(
        !elf.segment_types().contains(&PT_INTERP),
        "the monitor asks for a dynamic loader: it is not statically linked \
         (is .cargo/config.toml's target and crt-static in effect?)"
    );
}

#[test]
fn the_functions_a_run_executes_are_placed_first() {
    let elf = Elf::read(cloister());
    let hot = elf.section(".text.hot");
    let text = elf.section(".text");
    assert!(hot.addr < text.addr, ".text.hot is not ahead of .text");
    assert!(
        hot.size >= 128 << 10 && hot.size < text.size,
        ".text.hot holds {} KiB against .text's {} KiB",
        hot.size >> 10,
        text.size >> 10
    );

    // The script's patterns for Rust functions, by their section name's symbol part.
    let script = std::fs::read_to_string(workspace_root().join("vmm/hot-text.ld")).unwrap();
    let patterns: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("*(.text."))
        .filter_map(|l| l.split(' ').next())
        .filter(|p| p.starts_with("_ZN") || p.starts_with("_R"))
        .collect();
    assert!(
        patterns.len() > 100,
        "only {} Rust patterns",
        patterns.len()
    );

    let functions = elf.functions();
    let in_hot = |addr: u64| (hot.addr..hot.addr + hot.size as u64).contains(&addr);
    // A pattern counts when a function it names lies in .text.hot. (Not every match does:
    // a symbol that aliases another function's code sits wherever that code is.)
    let placed = patterns
        .iter()
        .filter(|p| functions.iter().any(|(n, a)| in_hot(*a) && glob(p, n)))
        .count();
    // Functions inlined in this profile, or renamed since the script was written, match
    // nothing; most must still be there, or the script no longer describes this code.
    assert!(
        placed * 10 >= patterns.len() * 6,
        "only {placed} of the {} Rust patterns in vmm/hot-text.ld place a function of the \
         monitor in .text.hot: run scripts/hot-text.sh",
        patterns.len()
    );
}

#[test]
fn glob_matches_like_the_linker() {
    assert!(glob("_ZN3foo3bar17h*", "_ZN3foo3bar17h0123456789abcdefE"));
    assert!(glob("_RNvCs*_3std4main", "_RNvCsabc_3std4main"));
    assert!(!glob("_RNvCs*_3std4main", "_RNvCsabc_3std4mainx"));
    assert!(!glob("_ZN3foo3baz17h*", "_ZN3foo3bar17h0123456789abcdefE"));
    assert!(glob("exact", "exact"));
    assert!(!glob("exact", "exactly"));
}
