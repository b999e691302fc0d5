#!/usr/bin/env bash
# Installs the Debian packages the tests use (QEMU, OVMF, busybox, cpio) and glibc's static
# library (libc.a, in libc6-dev: the monitor links statically), once.
set -euo pipefail
pkgs=(libc6-dev qemu-system-x86 ovmf busybox-static cpio xz-utils zstd file acpica-tools python3 python3-venv openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ -e /dev/kvm ] || { echo "error: /dev/kvm is missing; Cloister's tests need KVM" >&2; exit 1; }
