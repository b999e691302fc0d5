#!/usr/bin/env bash
# Regenerates vmm/hot-text.ld, the linker script that places the code a monitor run
# executes ahead of the rest of `.text` (why: vmm/build.rs, `hot_text_first`).
#
#   scripts/hot-text.sh
#
# Builds the release monitor, runs it under gdb on the built-in test guest the ways users
# and the boot benchmark run it (plain, as `cargo run --release -p cloister-bench --bin
# boot` does, with a virtio-pci disk, with a virtio-mmio disk on two vCPUs, and on the
# simulated SEV-SNP platform; the plain runs come first), records the
# functions each run executed in first-run order (scripts/hot-text/trace.py), and writes
# their section patterns (scripts/hot-text/script.py). Needs gdb and /dev/kvm. Run it
# after changes that move a lot of start-up code; a stale script costs memory, not
# correctness. Check the result with the boot benchmark's "file-backed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v gdb >/dev/null || { echo "hot-text: gdb is needed (apt-get install gdb)" >&2; exit 1; }

cargo build --release -q -p cloister-vmm --bin cloister
bin="target/x86_64-unknown-linux-gnu/release/cloister"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
guest="$(ls -t target/x86_64-unknown-linux-gnu/release/build/cloister-vmm-*/out/cloister-test-guest.elf | head -n 1)"
truncate -s 1M "$work/disk.img"

trace() {
  echo "hot-text: tracing cloister $*" >&2
  HOT_TEXT_OUT="$work/hot.txt" gdb -q -batch -x scripts/hot-text/trace.py --args "$bin" "$@" \
    >"$work/gdb.log" 2>&1 || { cat "$work/gdb.log" >&2; exit 1; }
  grep '^hot-text:' "$work/gdb.log" >&2 || { cat "$work/gdb.log" >&2; exit 1; }
}
trace run
trace run --debug-exit --kernel "$guest" --memory 64M --cpus 1 --cmdline cloister_test.exit=0 --serial stdio
trace run --disk "path=$work/disk.img"
trace run --disk "path=$work/disk.img" --virtio mmio --cpus 2
trace run --platform sim --sim-root "$work/sim-root" --serial "file=$work/console.log"

python3 scripts/hot-text/script.py "$work/hot.txt" \
  "$(gcc -print-file-name=libc.a)" "$(gcc -print-libgcc-file-name)" >vmm/hot-text.ld
echo "hot-text: wrote vmm/hot-text.ld ($(grep -c '(' vmm/hot-text.ld) patterns)" >&2
