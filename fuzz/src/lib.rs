//! What Cloister's fuzz targets share: the byte [`input::Reader`] every target decodes its
//! input with (and the [`input::Writer`] that encodes seeds in the same format), the
//! [`fixtures`] a target loads once per process (AMD's report vectors, the simulation
//! root, Debian's OVMF and kernel), and [`init`], which every target runs before fuzzing.
//!
//! Seeds: each target knows how to write its own seed corpus from real inputs (its format
//! is defined next to the decoder, in the target's file). `fuzz/seeds.sh` runs each built
//! target once with `CLOISTER_FUZZ_SEEDS=<dir>`; [`init`] then writes that target's seeds
//! into `<dir>` and exits instead of fuzzing. No second build of the dependency tree is
//! needed, and a format change cannot leave stale seed code behind.

pub mod fixtures;
pub mod guest_msg;
pub mod input;

use std::path::{Path, PathBuf};

/// Environment variable naming the directory a target writes its seeds into.
pub const SEEDS_ENV: &str = "CLOISTER_FUZZ_SEEDS";

/// A seed corpus being written: one file per seed, named `seed-<name>`.
pub struct Seeds {
    dir: PathBuf,
    written: usize,
}

impl Seeds {
    /// Seeds written into `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Seeds {
            dir: dir.to_path_buf(),
            written: 0,
        })
    }

    /// Writes one seed. Names are sanitised to `[A-Za-z0-9._-]`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("seed-{name}"));
        match std::fs::write(&path, bytes) {
            Ok(()) => self.written += 1,
            Err(e) => eprintln!("seeds: cannot write {}: {e}", path.display()),
        }
    }

    /// How many seeds were written.
    pub fn written(&self) -> usize {
        self.written
    }
}

/// Run by every target before fuzzing (the `init:` of `fuzz_target!`). With
/// [`SEEDS_ENV`] set, writes the target's seeds there through `seeds` and exits the
/// process; otherwise runs `warm_up`, which loads the target's fixtures so that the first
/// input is not reported as a slow unit.
pub fn init(seeds: fn(&mut Seeds), warm_up: fn()) {
    if let Some(dir) = std::env::var_os(SEEDS_ENV) {
        let dir = PathBuf::from(dir);
        let code = match Seeds::new(&dir) {
            Ok(mut out) => {
                seeds(&mut out);
                eprintln!("seeds: {} written to {}", out.written(), dir.display());
                0
            }
            Err(e) => {
                eprintln!("seeds: cannot create {}: {e}", dir.display());
                1
            }
        };
        std::process::exit(code);
    }
    warm_up();
}

/// The offsets where `a` and `b` differ (over the shorter length). Compares 64-byte blocks
/// with `==` first (a `memcmp`, not instrumented), so a large unchanged buffer costs the
/// fuzzer no coverage callbacks.
pub fn differences(a: &[u8], b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for (block, (x, y)) in a.chunks(64).zip(b.chunks(64)).enumerate() {
        if x != y {
            out.extend(
                x.iter()
                    .zip(y)
                    .enumerate()
                    .filter(|(_, (p, q))| p != q)
                    .map(|(i, _)| block * 64 + i),
            );
        }
    }
    out
}

/// A directory of this process's own for files a target needs on disk
/// (`fuzz/target/scratch/<tag>-<pid>`). Directories that earlier processes left there are
/// removed when their process is gone, so campaigns do not pile files up.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let parent = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scratch");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(tag)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = parent.join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A warm-up that does nothing, for targets without fixtures.
pub fn no_warm_up() {}
