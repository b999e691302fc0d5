//! What the benchmark binaries (`src/bin/`) share: where the workspace is and which
//! `cloister` binary to time.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the folder above `bench/`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `cloister` next to the running executable, built first with cargo for the same
/// profile, so the benchmark never times a missing or stale binary.
pub fn cloister_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("this executable has no parent directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(&cargo);
    build.args(["build", "-q", "-p", "cloister-vmm", "--bin", "cloister"]);
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
        None => return Err("cannot tell the cargo profile of this executable".into()),
    }
    let status = build
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("building cloister failed: {status}"));
    }
    Ok(dir.join("cloister"))
}
