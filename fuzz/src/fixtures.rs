//! Real inputs the targets and their seeds use, loaded once per process: AMD's signed
//! report vectors (`../shared/vectors/snp` from the repository, or `CLOISTER_VECTORS`),
//! the Cloister simulation root (made on first use under `fuzz/target/sim-root`; slow, so
//! kept in a static), Debian's OVMF and kernel when installed, and the policy examples.
//!
//! Everything here is optional except the simulation root: a missing file makes the
//! fixture absent and the target fuzz without it (a target never fails for a missing
//! fixture, so the smoke run works on any checkout).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cloister_attestation::certs::Certificate;
use cloister_attestation::sim::SimRoot;
use time::OffsetDateTime;

/// The repository root (the fuzz crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where AMD's report vectors are: `$CLOISTER_VECTORS`, else `../shared/vectors/snp`
/// relative to the repository.
pub fn vectors_dir() -> PathBuf {
    std::env::var_os("CLOISTER_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/vectors/snp"))
}

/// A file's bytes, or `None` when it cannot be read.
pub fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// The files of `dir` (not recursive) whose names end with one of `suffixes`, sorted.
pub fn files_in(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One set of AMD's vectors: a report signed by real hardware, its VCEK or VLEK, the
/// chain, and an instant at which every certificate of it is valid.
pub struct VectorSet {
    /// Directory name (`milan-v2-vcek`, ...).
    pub name: &'static str,
    /// The 1184-byte report.
    pub report: Vec<u8>,
    /// The VCEK or VLEK, DER.
    pub vek_der: Vec<u8>,
    /// The VCEK or VLEK, parsed.
    pub vek: Certificate,
    /// AMD's chain as the KDS serves it (PEM).
    pub chain_pem: Vec<u8>,
    /// An instant inside every certificate's validity.
    pub valid_at: OffsetDateTime,
}

/// The sets with a report, and when their certificates are valid (the VLEK expired on
/// 2025-12-10).
const SETS: [(&str, i64); 4] = [
    ("milan-v2-vcek", 1_793_491_200),     // 2026-11-01
    ("milan-v2-tcb-skew", 1_793_491_200), // 2026-11-01
    ("milan-v3-vlek", 1_748_736_000),     // 2025-06-01
    ("turin-v5-vcek", 1_793_491_200),     // 2026-11-01
];

/// The vector sets found (empty when the vectors are not there).
pub fn vector_sets() -> &'static [VectorSet] {
    static SETS_LOADED: OnceLock<Vec<VectorSet>> = OnceLock::new();
    SETS_LOADED.get_or_init(|| {
        let dir = vectors_dir();
        SETS.iter()
            .filter_map(|&(name, at)| {
                let set = dir.join(name);
                let vek_der = read(&set.join("vek.der"))?;
                Some(VectorSet {
                    name,
                    report: read(&set.join("report.bin"))?,
                    vek: Certificate::from_der(&vek_der, name).ok()?,
                    vek_der,
                    chain_pem: read(&set.join("chain.pem"))?,
                    valid_at: OffsetDateTime::from_unix_timestamp(at).ok()?,
                })
            })
            .collect()
    })
}

/// Every certificate file of the vectors (`.pem`, `.der`), for seeds.
pub fn vector_certificate_files() -> Vec<PathBuf> {
    let dir = vectors_dir();
    let mut out = Vec::new();
    let mut dirs = vec![dir.clone()];
    while let Some(d) = dirs.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| matches!(x, "pem" | "der"))
                {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// The simulation root of the fuzz workspace (`fuzz/target/sim-root`), made on first use
/// (RSA-4096 key generation: seconds) and loaded afterwards.
pub fn sim_root() -> Arc<SimRoot> {
    static ROOT: OnceLock<Arc<SimRoot>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sim-root");
        match SimRoot::load_or_create(&dir) {
            Ok(root) => Arc::new(root),
            // Without a root no simulated PSP exists: nothing of these targets can run.
            Err(e) => panic!("simulation root in {}: {e}", dir.display()),
        }
    })
    .clone()
}

/// Debian's OVMF (`/usr/share/ovmf/OVMF.fd`, package ovmf), when installed.
pub fn debian_ovmf() -> Option<Vec<u8>> {
    read(Path::new("/usr/share/ovmf/OVMF.fd"))
}

/// Debian kernels the nested harness cached (`target/nested-cache/linux/*/boot/vmlinuz-*`).
pub fn debian_kernels() -> Vec<PathBuf> {
    let cache = repo_root().join("target/nested-cache/linux");
    let mut out = Vec::new();
    for pkg in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        out.extend(
            files_in(&pkg.path().join("boot"), &[""])
                .into_iter()
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-"))
                }),
        );
    }
    out.sort();
    out
}

/// The policy examples of the repository (`policy/examples/*.toml`).
pub fn policy_examples() -> Vec<PathBuf> {
    files_in(&repo_root().join("policy/examples"), &[".toml"])
}
