//! How the `cloister` executable is laid out, which is what keeps a monitor's resident
//! memory small (README, "Numbers"; the boot benchmark measures it):
//! - it is a static PIE, without libc.so, ld.so and libgcc_s to fault in
//!   (`.cargo/config.toml`);
//! - the functions a run executes sit together at the start of its text, in `.text.hot`,
//!   placed by `vmm/hot-text.ld` (`scripts/hot-text.sh` writes it; `vmm/build.rs` links
//!   with it). If a toolchain or code change left the script's patterns matching little,
//!   the resident text would quietly grow back; the second test says so instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use cloister_tests::{cloister, workspace_root};

/// What a binutils tool (`readelf`, `nm`: the project's other binary checks use
/// `objdump`) prints about the monitor.
fn binutils(tool: &str, args: &[&str]) -> String {
    let output = Command::new(tool)
        .args(args)
        .arg(cloister())
        .output()
        .unwrap_or_else(|e| panic!("{tool} (GNU binutils) is needed to read the monitor: {e}"));
    assert!(output.status.success(), "{tool} failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A section's address and size, from `readelf -SW`.
fn section(name: &str) -> (u64, u64) {
    binutils("readelf", &["-SW"])
        .lines()
        .filter_map(|l| l.split_once(']').map(|(_, rest)| rest))
        .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .map(|f| {
            // name, type, address, offset, size (hex)
            let hex = |i: usize| u64::from_str_radix(f[i], 16).unwrap();
            (hex(2), hex(4))
        })
        .unwrap_or_else(|| panic!("the monitor has no {name} section"))
}

/// Text symbols: (name, address), from `nm`.
fn functions() -> Vec<(String, u64)> {
    binutils("nm", &["--defined-only"])
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [addr, "t" | "T", name] => {
                Some((name.to_string(), u64::from_str_radix(addr, 16).ok()?))
            }
            _ => None,
        })
        .collect()
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
    let headers = binutils("readelf", &["-hlW"]);
    assert!(
        headers
            .lines()
            .any(|l| l.trim_start().starts_with("Type:") && l.contains("DYN")),
        "not a position-independent executable"
    );
    assert!(
        !headers
            .lines()
            .any(|l| l.trim_start().starts_with("INTERP")),
        "the monitor asks for a dynamic loader: it is not statically linked \
         (is .cargo/config.toml's target and crt-static in effect?)"
    );
}

#[test]
fn the_functions_a_run_executes_are_placed_first() {
    let (hot_addr, hot_size) = section(".text.hot");
    let (text_addr, text_size) = section(".text");
    assert!(hot_addr < text_addr, ".text.hot is not ahead of .text");
    assert!(
        hot_size >= 128 << 10 && hot_size < text_size,
        ".text.hot holds {} KiB against .text's {} KiB",
        hot_size >> 10,
        text_size >> 10
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

    let functions = functions();
    let in_hot = |addr: u64| (hot_addr..hot_addr + hot_size).contains(&addr);
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
