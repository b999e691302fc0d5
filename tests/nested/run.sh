#!/usr/bin/env bash
# Nested-KVM harness: boots Debian's own Linux kernel under a VMM running on a real
# (nested) KVM, on a machine whose own /dev/kvm cannot run distribution kernels.
#
#   outer VM : qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt (software emulation)
#              Debian kernel + busybox initramfs that insmods irqbypass, kvm, ccp, kvm-amd
#   inner VM : the same Debian kernel + a busybox initramfs that loads the virtio modules,
#              reports "NESTED-LINUX: ..." lines and powers off; booted by `cloister run`
#              (statically linked) and/or by `qemu-system-x86_64 -accel kvm` with the
#              `microvm` or the `pc` machine.
#
# It fetches nothing but Debian packages (apt-get download) and caches everything under
# ${CARGO_TARGET_DIR:-<repo>/target}/nested-cache. Safe to run again (idempotent).
#
# Output: the outer serial console, live, on stdout (also saved to --log). For every inner
# run the outer /init prints one summary line:
#   NESTED-RUN: vmm=<cloister|qemu-microvm|qemu-pc> run=<n> exit=<status> marker_s=<s> done_s=<s> exit_s=<s>
# (seconds from the inner VMM's start, outer guest clock; "none" when never seen), and
# "NESTED-OUTER: end" when it finished. Exit status: 0 when the outer VM reached its end,
# 1 on any harness error (which is named on stderr). The caller judges the inner results.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: tests/nested/run.sh [options]
  --vmm LIST         inner VMMs, comma-separated: cloister (virtio-pci disk), cloister-mmio
                     (the disk on virtio-mmio), cloister-sim, cloister-verifier,
                     cloister-verifier-guest, cloister-tamper-{kernel,initrd,cmdline},
                     qemu-microvm, qemu-pc
                     (default: cloister)
  --runs N           inner boots per VMM, interleaved, in one outer boot (default: 1)
  --cloister PATH    statically linked cloister to use (default: build it)
  --quiet            boot the inner kernel with `quiet`, as Debian's boot loader does
                     (benchmarks: less serial output)
  --inner-cpus N     inner vCPUs (default: 2)
  --inner-mem SIZE   inner memory, e.g. 256M (default: 256M)
  --inner-timeout S  seconds allowed per inner boot (default: 300)
  --outer-mem MB     outer VM memory in MiB (default: 1024)
  --timeout S        seconds allowed for the whole outer VM (default: 1200)
  --log FILE         where to save the outer serial log (default: <cache>/last-run.log)
  --disk-bench S     give the inner guests a 64 MiB disk and run the disk benchmark
                     (bench/src/bin/diskio.rs: sequential 1 MiB and random 4 KiB read
                     and write, S seconds each) after the checks; it prints a
                     "NESTED-DISK: ..." line
  --prepare-only     fetch and build everything, do not boot
USAGE
}

die() {
  echo "nested harness: error: $*" >&2
  exit 1
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
cache="${NESTED_CACHE:-$target_dir/nested-cache}"

vmms="cloister"
runs=1
cloister_bin=""
quiet=0
inner_cpus=2
inner_mem=256M
inner_timeout=300
outer_mem=1024
outer_timeout=1200
log=""
prepare_only=0
disk_bench=""

while [ $# -gt 0 ]; do
  case "$1" in
    --vmm) vmms="${2:?--vmm needs a value}"; shift 2 ;;
    --runs) runs="${2:?--runs needs a value}"; shift 2 ;;
    --cloister) cloister_bin="${2:?--cloister needs a path}"; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --inner-cpus) inner_cpus="${2:?}"; shift 2 ;;
    --inner-mem) inner_mem="${2:?}"; shift 2 ;;
    --inner-timeout) inner_timeout="${2:?}"; shift 2 ;;
    --outer-mem) outer_mem="${2:?}"; shift 2 ;;
    --timeout) outer_timeout="${2:?}"; shift 2 ;;
    --log) log="${2:?}"; shift 2 ;;
    --disk-bench) disk_bench="${2:?--disk-bench needs seconds}"; shift 2 ;;
    --prepare-only) prepare_only=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done

vmm_list="${vmms//,/ }"
want_cloister=0
want_sim=0
want_microvm=0
want_pc=0
for v in $vmm_list; do
  case "$v" in
    cloister|cloister-mmio) want_cloister=1 ;;
    cloister-sim|cloister-verifier|cloister-verifier-guest|cloister-tamper-kernel|cloister-tamper-initrd|cloister-tamper-cmdline)
      want_cloister=1; want_sim=1 ;;
    qemu-microvm) want_microvm=1 ;;
    qemu-pc) want_pc=1 ;;
    *) die "unknown inner VMM '$v' (expected cloister, cloister-mmio, cloister-sim, cloister-verifier, cloister-verifier-guest, cloister-tamper-{kernel,initrd,cmdline}, qemu-microvm or qemu-pc)" ;;
  esac
done
[ -n "$vmm_list" ] || die "--vmm is empty"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got '$runs'"
[ -n "$log" ] || log="$cache/last-run.log"
[ -z "$disk_bench" ] || [[ "$disk_bench" =~ ^[1-9][0-9]*$ ]] ||
  die "--disk-bench must be a positive number of seconds, got '$disk_bench'"

for tool in qemu-system-x86_64 apt-get apt-cache dpkg-deb cpio gzip file timeout; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' is not installed (scripts/install-deps.sh installs what this harness needs)"
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

mkdir -p "$cache/debs"

# --- 1. Debian packages: the current bookworm kernel and busybox-static ------------------
kernel_pkg_name() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
kpkg="$(kernel_pkg_name || true)"
if [ -z "$kpkg" ]; then
  echo "nested harness: apt lists do not know linux-image-amd64; running apt-get update" >&2
  as_root apt-get update -qq || die "apt-get update failed"
  kpkg="$(kernel_pkg_name || true)"
fi
[ -n "$kpkg" ] || die "apt-cache cannot resolve linux-image-amd64 to a linux-image-<version>-amd64 package"
kver="${kpkg#linux-image-}" # e.g. 6.1.0-56-amd64

fetch_deb() { # $1 = package name; prints the path of its .deb in the cache
  local pkg="$1" deb
  deb="$(ls "$cache/debs/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)"
  if [ -z "$deb" ]; then
    local tmp
    tmp="$(mktemp -d "$cache/debs/.dl.XXXXXX")"
    chmod 0777 "$tmp" # apt's _apt user downloads into it when we are root
    (cd "$tmp" && apt-get download -q "$pkg" >&2) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    mv "$tmp"/*.deb "$cache/debs/"
    rm -rf "$tmp"
    deb="$(ls "$cache/debs/${pkg}"_*.deb | head -n 1)"
  fi
  echo "$deb"
}

kdir="$cache/linux/$kpkg"
if [ ! -e "$kdir/.extracted" ]; then
  kdeb="$(fetch_deb "$kpkg")"
  rm -rf "$kdir"
  mkdir -p "$kdir"
  dpkg-deb -x "$kdeb" "$kdir" || die "cannot extract $kdeb"
  touch "$kdir/.extracted"
fi
vmlinuz="$kdir/boot/vmlinuz-$kver"
moddir="$kdir/lib/modules/$kver"
[ -f "$vmlinuz" ] || die "$kpkg has no /boot/vmlinuz-$kver"
[ -d "$moddir" ] || die "$kpkg has no /lib/modules/$kver"

bbdir="$cache/busybox"
if [ ! -e "$bbdir/.extracted" ]; then
  bbdeb="$(fetch_deb busybox-static)"
  rm -rf "$bbdir"
  mkdir -p "$bbdir"
  dpkg-deb -x "$bbdeb" "$bbdir" || die "cannot extract $bbdeb"
  touch "$bbdir/.extracted"
fi
busybox="$bbdir/bin/busybox"
[ -x "$busybox" ] || die "busybox-static has no /bin/busybox"

# --- 2. Kernel modules in dependency order -----------------------------------------------
# modules.dep is generated by depmod at install time, so it is not in the package; each
# module's own "depends=" field (.modinfo) gives the same information.
declare -A mod_path=()
while IFS= read -r -d '' f; do
  n="${f##*/}"
  n="${n%%.ko*}"
  mod_path["${n//-/_}"]="$f"
done < <(find "$moddir/kernel" -name '*.ko*' -print0)
declare -A builtin=()
while IFS= read -r line; do
  n="${line##*/}"
  n="${n%%.ko*}"
  builtin["${n//-/_}"]=1
done <"$moddir/modules.builtin"

mod_depends() { # $1 = module file; prints its dependencies, one per line
  local f="$1"
  case "$f" in
    *.ko.xz) xz -dc "$f" ;;
    *.ko.zst) zstd -dcq "$f" ;;
    *) cat "$f" ;;
  esac | grep -a -o -P 'depends=[^\x00]*' | head -n 1 | sed 's/^depends=//' | tr ',' '\n' | sed '/^$/d'
}

declare -A mod_seen=()
mod_order=()
mod_visit() { # depth-first: dependencies before the module
  local n="${1//-/_}"
  [ -z "${mod_seen[$n]:-}" ] || return 0
  mod_seen[$n]=1
  if [ -n "${builtin[$n]:-}" ]; then
    return 0
  fi
  local f="${mod_path[$n]:-}"
  [ -n "$f" ] || die "module $1 is neither built into $kver nor shipped in $kpkg"
  local d
  for d in $(mod_depends "$f"); do mod_visit "$d"; done
  mod_order+=("$n")
}

install_modules() { # $1 = initramfs root; rest = module names
  local root="$1" n f name
  shift
  mod_seen=()
  mod_order=()
  for n in "$@"; do mod_visit "$n"; done
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/order"
  for n in "${mod_order[@]}"; do
    f="${mod_path[$n]}"
    name="$(basename "$f")"
    name="${name%%.ko*}"
    case "$f" in
      *.ko.xz) xz -dc "$f" >"$root/lib/modules/$name.ko" ;;
      *.ko.zst) zstd -dcq "$f" >"$root/lib/modules/$name.ko" ;;
      *) cp "$f" "$root/lib/modules/$name.ko" ;;
    esac
    echo "$name" >>"$root/lib/modules/order"
  done
}

make_cpio() { # $1 = root dir, $2 = output file; $3 = "gzip" to compress
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio -o -0 -H newc -R 0:0 --quiet) >"$2.tmp"
  if [ "${3:-}" = gzip ]; then gzip -1 -n -c "$2.tmp" >"$2"; rm -f "$2.tmp"; else mv "$2.tmp" "$2"; fi
}

# --- 3. Inner guest: initramfs and marker disk ------------------------------------------
# One work directory per invocation (a benchmark and a test may run at the same time);
# removed on exit unless --prepare-only asked to keep it.
work="$(mktemp -d "$cache/work.XXXXXX")"
keep_work=0
trap '[ "$keep_work" -eq 1 ] || rm -rf "$work"' EXIT

inner_root="$work/inner-root"
mkdir -p "$inner_root/bin"
cp "$busybox" "$inner_root/bin/busybox"
install -m 0755 "$here/inner-init.sh" "$inner_root/init"
# virtio_mmio for cloister and microvm, virtio_pci for the pc machine: every inner guest
# loads both, whichever finds the disk.
install_modules "$inner_root" virtio_ring virtio virtio_mmio virtio_pci virtio_blk
echo "nested harness: inner modules: $(tr '\n' ' ' <"$inner_root/lib/modules/order")" >&2
disk_size=1M
if [ -n "$disk_bench" ]; then
  # The benchmark program, statically linked like cloister, run by the inner /init on
  # /dev/vda under every VMM alike.
  echo "nested harness: building the statically linked disk benchmark" >&2
  (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" "${CARGO:-cargo}" build --release -q \
    -p cloister-bench --bin diskio --target x86_64-unknown-linux-gnu) ||
    die "building the static disk benchmark failed"
  install -m 0755 "$target_dir/x86_64-unknown-linux-gnu/release/diskio" "$inner_root/bin/diskio"
  echo "$disk_bench" >"$inner_root/diskio.seconds"
  disk_size=64M
fi
make_cpio "$inner_root" "$work/inner-initrd.cpio.gz" gzip

disk_marker="CLOISTER-NESTED-DISK-OK"
disk="$work/disk.img"
printf '%s\n' "$disk_marker" >"$disk"
# 1 MiB in the initramfs; the outer /init extends each run's copy (sparse, on tmpfs) to
# INNER_DISK_SIZE.
truncate -s 1M "$disk"

# --- 4. Static cloister -----------------------------------------------------------------
if [ "$want_cloister" -eq 1 ]; then
  if [ -z "$cloister_bin" ]; then
    echo "nested harness: building a statically linked cloister" >&2
    # With --target, RUSTFLAGS reach only the target crates, not build scripts. The flags
    # are .cargo/config.toml's, given again in case the caller's RUSTFLAGS would replace
    # them: the build is the one `cargo run --release` makes, not a second one.
    (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" "${CARGO:-cargo}" build --release -q \
      -p cloister-vmm --bin cloister --target x86_64-unknown-linux-gnu) ||
      die "building the static cloister failed"
    cloister_bin="$target_dir/x86_64-unknown-linux-gnu/release/cloister"
  fi
  [ -x "$cloister_bin" ] || die "cloister binary '$cloister_bin' is missing or not executable"
  file -L "$cloister_bin" | grep -q -E 'statically linked|static-pie linked' ||
    die "$cloister_bin is not statically linked ($(file -b -L "$cloister_bin"))"
fi

# --- 5. Outer initramfs -----------------------------------------------------------------
outer_root="$work/outer-root"
mkdir -p "$outer_root/bin" "$outer_root/inner"
cp "$busybox" "$outer_root/bin/busybox"
install -m 0755 "$here/outer-init.sh" "$outer_root/init"
install -m 0755 "$here/inner-vmm.sh" "$outer_root/bin/inner-vmm"
install_modules "$outer_root" irqbypass kvm ccp kvm_amd
echo "nested harness: outer modules: $(tr '\n' ' ' <"$outer_root/lib/modules/order")" >&2
cp "$vmlinuz" "$outer_root/inner/vmlinuz"
cp "$work/inner-initrd.cpio.gz" "$outer_root/inner/initrd.cpio.gz"
cp "$disk" "$outer_root/inner/disk.img"

if [ "$want_cloister" -eq 1 ]; then
  install -m 0755 "$cloister_bin" "$outer_root/bin/cloister"
fi

if [ "$want_sim" -eq 1 ]; then
  # The simulation root of trust, made once on this host (by a short sim launch of the
  # built-in test guest) and copied in: generating RSA-4096 keys under TCG takes minutes.
  if [ ! -f "$cache/sim-root/ark.key" ] && [ ! -d "$cache/sim-root/certs" ]; then
    "$cloister_bin" run --platform sim --sim-root "$cache/sim-root" --serial off \
      --cmdline "cloister_test.attest=off" >/dev/null ||
      die "creating the simulation root in $cache/sim-root failed"
  fi
  cp -r "$cache/sim-root" "$outer_root/inner/sim-root"
fi

if [ "$want_microvm" -eq 1 ] || [ "$want_pc" -eq 1 ]; then
  # Debian has no static QEMU: copy the host's binary, its shared libraries (same paths,
  # so the dynamic loader finds them) and the firmware each machine loads: microvm its
  # own BIOS; pc SeaBIOS, the VGA BIOS and the default NIC's (e1000) option ROM; both the
  # Linux loader option ROM. They go where this QEMU looks (`qemu-system-x86_64 -L help`).
  qemu="$(command -v qemu-system-x86_64)"
  mkdir -p "$outer_root/usr/bin"
  cp -L "$qemu" "$outer_root/usr/bin/qemu-system-x86_64"
  ldd "$qemu" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
    mkdir -p "$outer_root$(dirname "$lib")"
    cp -L "$lib" "$outer_root$lib"
  done
  fw_list="linuxboot_dma.bin kvmvapic.bin"
  [ "$want_microvm" -eq 0 ] || fw_list="$fw_list bios-microvm.bin"
  [ "$want_pc" -eq 0 ] || fw_list="$fw_list bios-256k.bin vgabios-stdvga.bin efi-e1000.rom"
  mkdir -p "$outer_root/usr/share/qemu"
  for fw in $fw_list; do
    src=""
    for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
      [ -e "$d/$fw" ] && { src="$d/$fw"; break; }
    done
    [ -n "$src" ] || die "QEMU firmware $fw is missing (Debian packages qemu-system-data, seabios, ipxe-qemu)"
    cp -L "$src" "$outer_root/usr/share/qemu/$fw"
  done
fi

# The inner kernel's command line, the same under every VMM, with only what a user types:
#   console=ttyS0  the inner /init reports on the serial console, which every VMM here
#                  connects to its stdout;
#   panic=-1       a panicking kernel reboots at once, which ends every VMM here (QEMU
#                  runs with -no-reboot), instead of hanging until --inner-timeout;
#   quiet          (--quiet) Debian's own default: fewer console lines, each byte of
#                  which is a VM exit.
inner_cmdline="console=ttyS0 panic=-1"
[ "$quiet" -eq 0 ] || inner_cmdline="$inner_cmdline quiet"
cat >"$outer_root/nested.conf" <<CONF
VMMS="$vmm_list"
RUNS=$runs
INNER_CPUS=$inner_cpus
INNER_MEM=$inner_mem
INNER_TIMEOUT=$inner_timeout
INNER_CMDLINE="$inner_cmdline"
INNER_DISK_SIZE=$disk_size
CONF
make_cpio "$outer_root" "$work/outer-initrd.cpio"
echo "nested harness: kernel $kpkg, outer initramfs $(du -h "$work/outer-initrd.cpio" | cut -f1)," \
  "inner VMMs: $vmm_list, runs: $runs" >&2

if [ "$prepare_only" -eq 1 ]; then
  keep_work=1
  echo "nested harness: prepared in $work" >&2
  exit 0
fi

# --- 6. Boot the outer VM ---------------------------------------------------------------
# TCG with SVM and nested paging exposed, so Debian's kvm_amd gives the outer guest a
# /dev/kvm. The outer /init powers off when done; -no-reboot turns a panic into an exit.
mkdir -p "$(dirname "$log")"
outer_cmdline="console=ttyS0 panic=-1 loglevel=4 mitigations=off"
set +e
timeout --foreground "$outer_timeout" qemu-system-x86_64 \
  -accel tcg -cpu EPYC,+svm,+npt -M pc -smp 1 -m "$outer_mem" \
  -nodefaults -no-user-config -no-reboot -display none -monitor none -serial stdio \
  -kernel "$vmlinuz" -initrd "$work/outer-initrd.cpio" -append "$outer_cmdline" \
  </dev/null 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -eq 124 ]; then
  die "the outer VM did not finish within ${outer_timeout}s (log: $log)"
fi
[ "$status" -eq 0 ] || die "the outer QEMU exited with status $status (log: $log)"
tr -d '\r' <"$log" | grep -q '^NESTED-OUTER: end' ||
  die "the outer VM stopped before its /init finished (log: $log)"
exit 0
