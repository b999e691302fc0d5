//! The README's commands, run the way a user types them: from the workspace root, through
//! `cargo` where the README says `cargo`, through a shell where it pipes. Every indented
//! command line in the sections "Two commands" and "Examples" is run here, except the
//! test command itself (this test is part of it), which is checked to be what `.ci/run`
//! runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use cloister_tests::workspace_root;

/// The indented (code-block) lines of the README section headed `heading`.
fn commands_in(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let rest = &readme[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn readme() -> String {
    std::fs::read_to_string(workspace_root().join("README.md")).unwrap()
}

/// A shell whose PATH finds the same cargo that runs this test.
fn shell(line: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", line]).current_dir(workspace_root());
    if let Some(cargo) = std::env::var_os("CARGO") {
        let dir = Path::new(&cargo).parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    cmd
}

#[test]
fn the_two_commands_are_the_boot_and_the_test_command() {
    let cmds = commands_in(&readme(), "## Two commands");
    assert_eq!(cmds, ["cargo run --release -- run", "scripts/test.sh"]);
    let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test.sh"),
        ".ci/run must run the README's test command:\n{ci}"
    );
    let meta = std::fs::metadata(workspace_root().join("scripts/test.sh")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert!(
        meta.permissions().mode() & 0o111 != 0,
        "scripts/test.sh is not executable"
    );
}

/// `cargo run --release -- run`, exactly as the README's first command: no package or
/// binary named, from the workspace root. The built-in guest boots and passes.
#[test]
fn the_first_command_boots_the_builtin_guest() {
    let out = shell("cargo run --release -- run").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("CLOISTER-GUEST"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
}

#[test]
fn every_example_runs_as_written() {
    let examples = commands_in(&readme(), "## Examples");
    assert!(examples.len() >= 4, "examples found: {examples:?}");
    for line in &examples {
        assert!(
            line.starts_with("cargo run --release -- "),
            "an example that is not a cargo command: {line}"
        );
        let out = shell(&format!("set -o pipefail; {line}")).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // With pipefail a closed pipe would surface as 141; the README promises 0 for
        // `| head` only because head's status is the pipeline's, so check both ways.
        let status = out.status.code();
        let piped = line.contains(" | head");
        assert!(!stderr.contains("panicked"), "{line}\n{stderr}");
        // The one example the README shows being refused (exit 1, naming the rule).
        if line.contains("--policy policy/examples/tenant.toml") && line.contains("-- run") {
            assert_eq!(status, Some(1), "{line}\n{stderr}");
            assert!(
                stderr.contains("launch.allow_simulation"),
                "{line}\n{stderr}"
            );
            continue;
        }
        assert!(
            status == Some(0) || (piped && status == Some(141)),
            "{line}\nstatus {:?}\n{stdout}\n{stderr}",
            out.status
        );
        if line.contains("-- run") && line.contains("--serial file=") {
            let log = line
                .split("--serial file=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            let console = std::fs::read_to_string(workspace_root().join(log)).unwrap();
            assert!(console.contains("CLOISTER-ATTEST: ok"), "{line}\n{console}");
            assert!(console.contains("PASS"), "{line}\n{console}");
            assert!(
                stderr.contains("equal to the prediction"),
                "{line}\n{stderr}"
            );
        } else if line.contains("-- run") {
            assert!(stdout.contains("PASS"), "{line}\n{stdout}");
        }
        if line.contains("-- verify") && !piped {
            assert!(stdout.contains("VERDICT: ACCEPTED"), "{line}\n{stdout}");
        }
        if line.contains("-- measure") {
            assert_eq!(stdout.trim().len(), 96, "{line}\n{stdout}");
        }
    }
}
