#!/usr/bin/env bash
# Generates the seed corpora of the fuzz targets from real inputs, into
# fuzz/corpus/<target>/seed-* (git-ignored: generated, never committed).
#
#   usage: fuzz/seeds.sh [TARGET...]      (default: every target)
#
# Each target writes its own seeds: its binary, run with CLOISTER_FUZZ_SEEDS=<dir>, encodes
# them in the format its decoder reads and exits (see fuzz/src/lib.rs). The real inputs are
# AMD's signed report vectors and chains ($CLOISTER_VECTORS, default ../shared/vectors/snp
# from the repository root), Debian's OVMF (/usr/share/ovmf/OVMF.fd) and kernel
# (target/nested-cache/linux/*/boot/vmlinuz-*), the built-in test guest, the simulated
# PSP's messages, the policy examples and the TOML of the docs and policy tests, keys and
# CRLs made with the openssl CLI, and Linux's PCI enumeration and virtio-pci set-up
# (virtio_pci restates the driver's sequence of accesses). A missing input only means
# fewer seeds.
# Targets without a generator (virtio_blk, acpi_tables) are left as they are.
set -euo pipefail
cd "$(dirname "$0")"
. ./common.sh

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(fuzz_targets)
fi
fuzz_build >&2

for target in "${targets[@]}"; do
  dir="corpus/$target"
  mkdir -p "$dir"
  rm -f "$dir"/seed-*
  log="$(mktemp)"
  # -runs=0: a target without a generator does nothing either.
  if ! CLOISTER_FUZZ_SEEDS="$dir" "$(fuzz_binary "$target")" -runs=0 >"$log" 2>&1; then
    echo "$target: seed generation failed:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  if grep -q '^seeds: [0-9]* written' "$log"; then
    grep '^seeds:' "$log" | sed "s/^/$target: /"
  else
    echo "$target: no seed generator"
  fi
  rm -f "$log"
done

# The policy file's keys as a libFuzzer dictionary (options/policy_toml.options names it):
# every field of the policy structs, the tables and the words its values take.
if printf '%s\n' "${targets[@]}" | grep -qx policy_toml; then
  dict=corpus/policy_toml.dict
  {
    sed -n 's/^ *pub \([a-z_0-9]*\): .*/\1/p' ../policy/src/file.rs | sort -u |
      while read -r key; do
        printf 'key_%s="%s"\n' "$key" "$key"
        printf 'table_%s="[%s]"\n' "$key" "$key"
      done
    for word in true false any vcek vlek '"0.0"' '"1.58"' ' = ' '\x0a' '0x'; do
      printf 'word_%d="%s"\n' "$((n = ${n:-0} + 1))" "${word//\"/\\\"}"
    done
  } >"$dict"
  echo "policy_toml: dictionary of $(grep -c '^key_' "$dict") keys in fuzz/$dict"
fi
