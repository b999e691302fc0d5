#!/usr/bin/env bash
# The project's one test command: installs what the tests need, then checks format and
# lints, runs every fuzz target briefly, and runs every test. `.ci/run` runs exactly this.
#
#   FUZZ_SECONDS=N   seconds per fuzz target (default 15; 0 skips the fuzz smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The API documentation builds without warnings (broken links, private items, HTML).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The test guest is a crate of its own, outside the workspace: its host unit tests (command
# line, CC blob walk, guest messages and the report protocol against a model PSP).
cargo test --manifest-path tests/guest/Cargo.toml --target x86_64-unknown-linux-gnu
# The two bare-metal crates outside the workspace (the test guest, the boot verifier image)
# get the same lint gate as the workspace.
cargo clippy --manifest-path tests/guest/Cargo.toml --target x86_64-unknown-linux-gnu --all-targets -- -D warnings
cargo clippy --manifest-path firmware/verifier-image/Cargo.toml --target x86_64-unknown-linux-gnu -- -D warnings
fuzz_seconds="${FUZZ_SECONDS:-15}"
if [ "$fuzz_seconds" -gt 0 ]; then
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version '^0.13' --locked
  fuzz/smoke.sh "$fuzz_seconds"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --profile test-release 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last of
# which is often a doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
