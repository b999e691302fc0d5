//! Support shared by the integration tests in `tests/tests/`: where the workspace is and
//! which `cloister` binary to run.
//!
//! This is test support: a failure here (no cargo, a build that fails) ends the test that
//! asked, with a message, which is why it may panic.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The root of the workspace (the folder that holds `Cargo.toml` and `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `cloister` binary to test: `$CLOISTER_BIN` when set, else `cloister` in the target
/// directory of the running test executable, built first (once per test process) with the
/// test's own profile so that it is never missing or stale.
pub fn cloister() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CLOISTER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test>-<hash>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable lives in target/<profile>/deps");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile directory name");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(&cargo);
        build
            .args(["build", "-p", "cloister-vmm", "--bin", "cloister"])
            .current_dir(workspace_root());
        match profile {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let status = build
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cargo} to build cloister: {e}"));
        assert!(status.success(), "building cloister failed: {status}");
        let bin = profile_dir.join("cloister");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// The simulation root every `--platform sim` test shares (`target/test-sim-root`):
/// RSA-4096 key generation is slow, so the first caller creates it once, serially, with
/// a short launch of the built-in guest, before tests run guests in parallel.
pub fn sim_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = workspace_root().join("target/test-sim-root");
        let out = Command::new(cloister())
            .args(["run", "--platform", "sim", "--serial", "off", "--sim-root"])
            .arg(&dir)
            .args(["--cmdline", "console=ttyS0 cloister_test.attest=off"])
            .output()
            .expect("cannot start cloister");
        assert!(
            out.status.success(),
            "first sim launch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}
