#!/usr/bin/env bash
# The project's one test command: installs what the tests need, then checks format,
# lints and runs every test. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release
