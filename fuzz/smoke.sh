#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 30) without sanitizers, on stable Rust,
# each with its seeds (generated when missing) and its libFuzzer options. Fails if any
# target finds a crash (the reproducer is left in fuzz/artifacts/<target>/).
# scripts/test.sh runs it with FUZZ_SECONDS (15).
#   usage: fuzz/smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
exec ./campaign.sh "${1:-30}"
