#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) without sanitizers, on stable Rust.
# Fails if any target finds a crash (the reproducer is left in fuzz/artifacts/<target>/).
#   usage: fuzz/smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
command -v cargo-fuzz >/dev/null || {
  echo "error: cargo-fuzz is missing: cargo install cargo-fuzz --version ^0.13 --locked" >&2
  exit 1
}
for target in $(cargo fuzz list); do
  echo "== fuzz target $target: ${secs}s"
  cargo fuzz run "$target" --sanitizer none -- -max_total_time="$secs" -print_final_stats=1
done
