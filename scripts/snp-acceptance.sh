#!/usr/bin/env bash
# The SEV-SNP hardware acceptance run: what a person with an AMD SEV-SNP host runs to
# prove Cloister's real path end to end. Six steps, each reported PASS, FAIL or STOPPED:
#
#   1 probe         `cloister probe`: /dev/sev, kvm_amd sev_snp=Y, /dev/kvm and the KVM
#                   capabilities an SNP launch needs (vmm/src/snp/kvm.rs); stops here,
#                   naming what is missing, on a host without SEV-SNP.
#   2 predict       `cloister measure --layout cloister --platform snp ...`: the launch
#                   measurement, computed offline, before anything runs.
#   3 launch        `cloister run --platform snp ...` with a fresh HOST_DATA, the guest's
#                   serial console captured to serial.log.
#   4 report        the guest's `CLOISTER-REPORT: <hex>` line, decoded into report.bin.
#   5 certificates  the VCEK and AMD's chain: --certs DIR (as `snpguest certificates` or
#                   `snpguest fetch` write them), or --fetch-vcek to ask AMD's key
#                   distribution service (KDS); nothing is fetched otherwise.
#   6 verify        `cloister verify` against AMD's built-in roots, with a policy that
#                   pins the predicted measurement, the HOST_DATA given at launch and the
#                   REPORT_DATA nonce the guest was told to ask for (plus --policy FILE).
#
# Exit status: 0 every step passed; 1 a step failed; 2 bad arguments; 3 stopped (the host
# cannot launch SEV-SNP guests, or an input such as the certificates is missing).
#
# What only this run proves (CI runs the same launcher on the simulated platform): that
# the kernel takes Cloister's ioctl structs as laid out, that LAUNCH_UPDATE's partial
# progress and the CPUID-page retry work against real firmware, that the PSP's launch
# digest equals the offline prediction, that the guest's memory is really encrypted and
# its report is signed by this chip's VCEK under AMD's root.
#
# Helpers (no hardware needed):
#   --kds-url REPORT       print the KDS URLs of REPORT's VCEK and chain, then exit
#   --extract-report LOG OUT
#                          decode the last CLOISTER-REPORT line of LOG into OUT, then exit
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KDS="https://kdsintf.amd.com"
REPORT_SIZE=1184

usage() {
    cat <<'EOF'
usage: scripts/snp-acceptance.sh [options]
  --cloister BIN      the cloister binary (default: $CLOISTER_BIN,
                      target/x86_64-unknown-linux-gnu/release/cloister, then cloister on PATH)
  --kernel FILE       guest kernel (default: the test guest bzImage that cargo built under
                      target/*/*/build/cloister-vmm-*/out/); it must print
                      "CLOISTER-REPORT: <hex>" on its serial console
  --initrd FILE       initial ramdisk
  --append STRING     kernel command line (default, for the test guest:
                      cloister_test.report_data=<fresh nonce>; with --append the nonce is
                      not checked)
  --vcpus N           vCPUs (default 1)
  --memory SIZE       guest memory (default 256M)
  --policy FILE       tenant policy (TOML) for run and verify; it must not set
                      measurements, host_data or report_data (this run sets them)
  --host-data HEX     32 bytes of HOST_DATA (default: fresh random bytes)
  --certs DIR         VCEK and chain as snpguest writes them (vcek.der/.pem, ask.pem,
                      ark.pem or cert_chain.pem)
  --fetch-vcek        fetch the VCEK and chain from AMD's KDS (needs curl and network)
  --product NAME      milan, genoa or turin, when the report cannot tell (version 2)
  --out DIR           keep every file of the run here (default: a new temporary dir)
  --timeout SECONDS   how long the guest may run (default 900)
  --kvm-device PATH   default /dev/kvm
  --sev-device PATH   default /dev/sev
  --kds-url REPORT    helper: print the KDS URLs for REPORT and exit
  --extract-report LOG OUT
                      helper: decode the last CLOISTER-REPORT line of LOG into OUT and exit
EOF
}

die_usage() {
    echo "snp-acceptance: $*" >&2
    echo "(run with --help for the options)" >&2
    exit 2
}

# ---------------------------------------------------------------------------------------
# Report helpers (SNP-FACTS §5.3: REPORTED_TCB at 0x180, CPUID family/model at 0x188,
# CHIP_ID at 0x1A0; TCB bytes [bl, tee, 0, 0, 0, 0, snp, ucode] on Milan/Genoa and
# [fmc, bl, tee, snp, 0, 0, 0, ucode] on Turin).

# bytes FILE OFFSET COUNT: the bytes as decimal numbers, one per word.
bytes() {
    od -An -v -tu1 -j "$2" -N "$3" "$1" | tr -s ' \n' ' '
}

# hexbytes FILE OFFSET COUNT: the bytes as one lower-case hex string.
hexbytes() {
    od -An -v -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'
}

# report_product REPORT [PRODUCT]: Milan, Genoa or Turin (KDS spelling), or nothing.
report_product() {
    local report=$1 given=${2:-}
    case "${given,,}" in
        milan) echo Milan; return ;;
        genoa) echo Genoa; return ;;
        turin) echo Turin; return ;;
        "") ;;
        *) return 1 ;;
    esac
    local version family model
    read -r version _ < <(bytes "$report" 0 1)
    if [ "$version" -ge 3 ]; then
        read -r family model < <(bytes "$report" $((0x188)) 2)
        if [ "$family" -eq $((0x19)) ]; then
            if [ "$model" -le $((0x0f)) ]; then echo Milan; return; fi
            if [ "$model" -le $((0x1f)) ] || { [ "$model" -ge $((0xa0)) ] && [ "$model" -le $((0xaf)) ]; }; then
                echo Genoa
                return
            fi
        elif [ "$family" -eq $((0x1a)) ] && [ "$model" -le $((0x1f)) ]; then
            echo Turin
            return
        fi
        return 1
    fi
    # Version 2: only Turin's chip ID has a recognisable shape (8 bytes, then zeros).
    local chip
    chip=$(hexbytes "$report" $((0x1A0)) 64)
    if [ "${chip:16}" = "$(printf '0%.0s' $(seq 1 112))" ] && [ "${chip:0:16}" != "0000000000000000" ]; then
        echo Turin
        return
    fi
    return 1
}

# kds_unservable REPORT: why AMD's KDS cannot serve the report's signing key, or nothing.
kds_unservable() {
    local key_info
    read -r key_info _ < <(bytes "$1" $((0x48)) 1)
    if [ $(((key_info >> 2) & 7)) -eq 1 ]; then
        echo "the report is signed by a VLEK, which the KDS does not serve: take the certificates from the cloud provider (in the guest: snpguest certificates PEM DIR)"
    elif [ "$(hexbytes "$1" $((0x1A0)) 64 | tr -d 0)" = "" ]; then
        echo "the report's chip ID is masked (all zero), so the KDS cannot look up its VCEK: take the certificates from the host (in the guest: snpguest certificates PEM DIR)"
    fi
}

# kds_urls REPORT PRODUCT: the VCEK URL, then the chain URL.
kds_urls() {
    local report=$1 product=$2 tcb chip
    read -r -a tcb < <(bytes "$report" $((0x180)) 8)
    chip=$(hexbytes "$report" $((0x1A0)) 64)
    if [ "$product" = Turin ]; then
        printf '%s/vcek/v1/Turin/%s?fmcSPL=%02d&blSPL=%02d&teeSPL=%02d&snpSPL=%02d&ucodeSPL=%02d\n' \
            "$KDS" "${chip:0:16}" "${tcb[0]}" "${tcb[1]}" "${tcb[2]}" "${tcb[3]}" "${tcb[7]}"
    else
        printf '%s/vcek/v1/%s/%s?blSPL=%02d&teeSPL=%02d&snpSPL=%02d&ucodeSPL=%02d\n' \
            "$KDS" "$product" "$chip" "${tcb[0]}" "${tcb[1]}" "${tcb[6]}" "${tcb[7]}"
    fi
    printf '%s/vcek/v1/%s/cert_chain\n' "$KDS" "$product"
}

# extract_report LOG OUT: decodes the last CLOISTER-REPORT line of LOG into OUT.
extract_report() {
    local log=$1 out=$2 line hex escaped i
    line=$(grep -a 'CLOISTER-REPORT: ' "$log" | tail -n 1) || {
        echo "no CLOISTER-REPORT line in $log"
        return 1
    }
    hex=${line##*CLOISTER-REPORT: }
    hex=${hex//[$'\r\n\t ']/}
    if [ "${#hex}" -ne $((2 * REPORT_SIZE)) ] || [[ ! "$hex" =~ ^[0-9a-fA-F]+$ ]]; then
        echo "the CLOISTER-REPORT line of $log is not $REPORT_SIZE bytes of hex (${#hex} characters)"
        return 1
    fi
    escaped=""
    for ((i = 0; i < ${#hex}; i += 2)); do
        escaped+="\\x${hex:i:2}"
    done
    printf '%b' "$escaped" >"$out"
}

random_hex() {
    od -An -v -tx1 -N "$1" /dev/urandom | tr -d ' \n'
}

# ---------------------------------------------------------------------------------------
# Arguments.

CLOISTER="${CLOISTER_BIN:-}"
KERNEL=""
INITRD=""
APPEND=""
APPEND_GIVEN=0
VCPUS=1
MEMORY=256M
POLICY=""
HOST_DATA=""
CERTS=""
FETCH=0
PRODUCT=""
OUT=""
TIMEOUT=900
KVM_DEVICE=/dev/kvm
SEV_DEVICE=/dev/sev
KDS_URL_REPORT=""
EXTRACT_LOG=""
EXTRACT_OUT=""

need_value() {
    [ "$2" -ge 2 ] || die_usage "$1 needs a value"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --cloister) need_value "$1" $#; CLOISTER=$2; shift 2 ;;
        --kernel) need_value "$1" $#; KERNEL=$2; shift 2 ;;
        --initrd) need_value "$1" $#; INITRD=$2; shift 2 ;;
        --append) need_value "$1" $#; APPEND=$2; APPEND_GIVEN=1; shift 2 ;;
        --vcpus) need_value "$1" $#; VCPUS=$2; shift 2 ;;
        --memory) need_value "$1" $#; MEMORY=$2; shift 2 ;;
        --policy) need_value "$1" $#; POLICY=$2; shift 2 ;;
        --host-data) need_value "$1" $#; HOST_DATA=$2; shift 2 ;;
        --certs) need_value "$1" $#; CERTS=$2; shift 2 ;;
        --fetch-vcek) FETCH=1; shift ;;
        --product) need_value "$1" $#; PRODUCT=$2; shift 2 ;;
        --out) need_value "$1" $#; OUT=$2; shift 2 ;;
        --timeout) need_value "$1" $#; TIMEOUT=$2; shift 2 ;;
        --kvm-device) need_value "$1" $#; KVM_DEVICE=$2; shift 2 ;;
        --sev-device) need_value "$1" $#; SEV_DEVICE=$2; shift 2 ;;
        --kds-url) need_value "$1" $#; KDS_URL_REPORT=$2; shift 2 ;;
        --extract-report)
            [ $# -ge 3 ] || die_usage "--extract-report needs LOG and OUT"
            EXTRACT_LOG=$2
            EXTRACT_OUT=$3
            shift 3
            ;;
        -h | --help) usage; exit 0 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
done

if [ -n "$PRODUCT" ]; then
    case "${PRODUCT,,}" in
        milan | genoa | turin) ;;
        *) die_usage "--product $PRODUCT: expected milan, genoa or turin" ;;
    esac
fi

if [ -n "$KDS_URL_REPORT" ]; then
    [ -r "$KDS_URL_REPORT" ] || die_usage "cannot read $KDS_URL_REPORT"
    [ "$(stat -c %s "$KDS_URL_REPORT")" -eq "$REPORT_SIZE" ] ||
        die_usage "$KDS_URL_REPORT is not a $REPORT_SIZE-byte attestation report"
    product=$(report_product "$KDS_URL_REPORT" "$PRODUCT") ||
        die_usage "$KDS_URL_REPORT does not say which processor made it: pass --product milan|genoa|turin"
    unservable=$(kds_unservable "$KDS_URL_REPORT")
    [ -z "$unservable" ] || die_usage "$KDS_URL_REPORT: $unservable"
    kds_urls "$KDS_URL_REPORT" "$product"
    exit 0
fi

if [ -n "$EXTRACT_LOG" ]; then
    [ -r "$EXTRACT_LOG" ] || die_usage "cannot read $EXTRACT_LOG"
    if reason=$(extract_report "$EXTRACT_LOG" "$EXTRACT_OUT"); then
        exit 0
    fi
    echo "snp-acceptance: $reason" >&2
    exit 1
fi

if [ -z "$CLOISTER" ]; then
    # .cargo/config.toml names the target, so cargo's output is under its triple.
    if [ -x "$ROOT/target/x86_64-unknown-linux-gnu/release/cloister" ]; then
        CLOISTER="$ROOT/target/x86_64-unknown-linux-gnu/release/cloister"
    else
        CLOISTER=$(command -v cloister || true)
    fi
fi
[ -n "$CLOISTER" ] && [ -x "$CLOISTER" ] ||
    die_usage "no cloister binary: build it (cargo build --release) or pass --cloister BIN"
[ "$VCPUS" -ge 1 ] 2>/dev/null || die_usage "--vcpus $VCPUS: expected a number of vCPUs"
[ "$TIMEOUT" -ge 1 ] 2>/dev/null || die_usage "--timeout $TIMEOUT: expected seconds"
if [ -n "$HOST_DATA" ]; then
    [[ "$HOST_DATA" =~ ^[0-9a-fA-F]{64}$ ]] || die_usage "--host-data: expected 32 bytes as 64 hex digits"
    HOST_DATA=${HOST_DATA,,}
else
    HOST_DATA=$(random_hex 32)
fi
if [ -n "$POLICY" ]; then
    [ -r "$POLICY" ] || die_usage "cannot read the policy $POLICY"
    if grep -Eq '^[[:space:]]*(measurements|host_data|report_data)[[:space:]]*=' "$POLICY"; then
        die_usage "$POLICY sets measurements, host_data or report_data; this run sets them itself (the predicted measurement, the HOST_DATA it launches with, its nonce)"
    fi
fi
if [ -n "$CERTS" ] && [ ! -d "$CERTS" ]; then
    die_usage "--certs $CERTS is not a directory"
fi
if [ -z "$OUT" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/cloister-snp-acceptance.XXXXXX")
else
    mkdir -p "$OUT" || die_usage "cannot create $OUT"
fi

# ---------------------------------------------------------------------------------------
# Steps. Each sets STATUS[i] and DETAIL[i]; the first step that does not pass stops the
# run, and the steps after it are reported STOPPED (not run).

STEPS=(probe predict launch report certificates verify)
declare -a STATUS DETAIL
for i in "${!STEPS[@]}"; do
    STATUS[i]=""
    DETAIL[i]=""
done

last_line() {
    grep -v '^[[:space:]]*$' "$1" | tail -n 1
}

step_probe() {
    if "$CLOISTER" probe --kvm-device "$KVM_DEVICE" --sev-device "$SEV_DEVICE" >"$OUT/probe.log" 2>&1; then
        STATUS[0]=PASS
        DETAIL[0]=$(head -n 1 "$OUT/probe.log")
    else
        STATUS[0]=STOPPED
        DETAIL[0]=$(last_line "$OUT/probe.log")
        DETAIL[0]=${DETAIL[0]#cloister probe: }
    fi
}

find_test_guest() {
    ls -t "$ROOT"/target/*/*/build/cloister-vmm-*/out/cloister-test-guest.bzImage 2>/dev/null | head -n 1
}

MEASUREMENT=""
NONCE=""
step_predict() {
    if [ -z "$KERNEL" ]; then
        KERNEL=$(find_test_guest)
        if [ -z "$KERNEL" ]; then
            STATUS[1]=STOPPED
            DETAIL[1]="no kernel: pass --kernel FILE, or build cloister (cargo build --release) so that the test guest bzImage exists"
            return
        fi
    fi
    if [ "$APPEND_GIVEN" -eq 0 ]; then
        NONCE=$(random_hex 64)
        APPEND="cloister_test.report_data=$NONCE"
    fi
    local args=(measure --layout cloister --platform snp --kernel "$KERNEL" --vcpus "$VCPUS" --memory "$MEMORY")
    [ -n "$INITRD" ] && args+=(--initrd "$INITRD")
    [ -n "$APPEND" ] && args+=(--append "$APPEND")
    [ -n "$POLICY" ] && args+=(--policy "$POLICY")
    if ! "$CLOISTER" "${args[@]}" >"$OUT/measure.out" 2>"$OUT/measure.err"; then
        STATUS[1]=FAIL
        DETAIL[1]="cloister measure failed: $(last_line "$OUT/measure.err")"
        return
    fi
    MEASUREMENT=$(grep -Eo '\b[0-9a-f]{96}\b' "$OUT/measure.out" | tail -n 1)
    if [ -z "$MEASUREMENT" ]; then
        STATUS[1]=FAIL
        DETAIL[1]="cloister measure printed no 48-byte measurement (see $OUT/measure.out)"
        return
    fi
    echo "$MEASUREMENT" >"$OUT/measurement.txt"
    STATUS[1]=PASS
    DETAIL[1]="measurement $MEASUREMENT"
}

step_launch() {
    local args=(run --platform snp --kernel "$KERNEL" --cpus "$VCPUS" --memory "$MEMORY"
        --host-data "$HOST_DATA" --serial "file=$OUT/serial.log"
        --kvm-device "$KVM_DEVICE" --sev-device "$SEV_DEVICE")
    [ -n "$INITRD" ] && args+=(--initrd "$INITRD")
    [ -n "$APPEND" ] && args+=(--cmdline "$APPEND")
    [ -n "$POLICY" ] && args+=(--policy "$POLICY")
    local status=0
    timeout "$TIMEOUT" "$CLOISTER" "${args[@]}" >"$OUT/run.log" 2>&1 </dev/null || status=$?
    if [ "$status" -eq 124 ]; then
        STATUS[2]=FAIL
        DETAIL[2]="the guest was still running after $TIMEOUT s (see $OUT/serial.log)"
    elif [ "$status" -ne 0 ]; then
        STATUS[2]=FAIL
        DETAIL[2]="cloister run ended with status $status: $(last_line "$OUT/run.log")"
    else
        STATUS[2]=PASS
        DETAIL[2]="the guest ran and ended; console in $OUT/serial.log"
    fi
}

step_report() {
    local reason
    if [ ! -s "$OUT/serial.log" ]; then
        STATUS[3]=FAIL
        DETAIL[3]="the guest printed nothing on its serial console"
        return
    fi
    if ! reason=$(extract_report "$OUT/serial.log" "$OUT/report.bin"); then
        local attest
        attest=$(grep -a 'CLOISTER-ATTEST: ' "$OUT/serial.log" | tail -n 1)
        STATUS[3]=FAIL
        DETAIL[3]="$reason${attest:+ (last: $attest)}"
        return
    fi
    STATUS[3]=PASS
    DETAIL[3]="$OUT/report.bin ($REPORT_SIZE bytes)"
}

VERIFY_CERTS=()
step_certificates() {
    if [ -n "$CERTS" ]; then
        VERIFY_CERTS=(--certs "$CERTS")
        STATUS[4]=PASS
        DETAIL[4]="given: $CERTS"
        return
    fi
    local product urls
    if ! product=$(report_product "$OUT/report.bin" "$PRODUCT"); then
        STATUS[4]=STOPPED
        DETAIL[4]="the report does not say which processor made it: pass --product milan|genoa|turin"
        return
    fi
    local unservable
    unservable=$(kds_unservable "$OUT/report.bin")
    if [ -n "$unservable" ]; then
        STATUS[4]=STOPPED
        DETAIL[4]="$unservable; then pass --certs DIR"
        return
    fi
    mapfile -t urls < <(kds_urls "$OUT/report.bin" "$product")
    if [ "$FETCH" -eq 0 ]; then
        STATUS[4]=STOPPED
        DETAIL[4]="no certificates: in the guest run 'snpguest certificates PEM DIR', or fetch them ('snpguest fetch ca pem DIR $product' and 'snpguest fetch vcek pem DIR report.bin', or the KDS: ${urls[0]} and ${urls[1]}), then pass --certs DIR; or rerun with --fetch-vcek"
        return
    fi
    mkdir -p "$OUT/certs"
    if ! curl -fsS --retry 3 -o "$OUT/certs/vcek.der" "${urls[0]}" 2>"$OUT/curl.err" ||
        ! curl -fsS --retry 3 -o "$OUT/certs/cert_chain.pem" "${urls[1]}" 2>>"$OUT/curl.err"; then
        STATUS[4]=FAIL
        DETAIL[4]="fetching from AMD's KDS failed: $(last_line "$OUT/curl.err")"
        return
    fi
    VERIFY_CERTS=(--vek "$OUT/certs/vcek.der" --chain "$OUT/certs/cert_chain.pem")
    STATUS[4]=PASS
    DETAIL[4]="fetched from AMD's KDS into $OUT/certs"
}

step_verify() {
    local policy="$OUT/verify-policy.toml"
    {
        echo "# Written by scripts/snp-acceptance.sh: what this launch must show."
        echo "measurements = [\"$MEASUREMENT\"]"
        echo "host_data = \"$HOST_DATA\""
        [ -n "$NONCE" ] && echo "report_data = \"$NONCE\""
        if [ -n "$POLICY" ]; then
            echo "# The tenant policy $POLICY:"
            cat "$POLICY"
        fi
    } >"$policy"
    local status=0
    "$CLOISTER" verify --report "$OUT/report.bin" "${VERIFY_CERTS[@]}" --policy "$policy" \
        >"$OUT/verify.out" 2>"$OUT/verify.err" || status=$?
    case "$status" in
        0)
            STATUS[5]=PASS
            DETAIL[5]="genuine (AMD root), measurement, HOST_DATA${NONCE:+, REPORT_DATA} and the policy all match"
            ;;
        1)
            STATUS[5]=FAIL
            DETAIL[5]="rejected: see $OUT/verify.out"
            ;;
        *)
            STATUS[5]=FAIL
            DETAIL[5]="cloister verify could not use its input: $(last_line "$OUT/verify.err")"
            ;;
    esac
}

echo "Cloister SEV-SNP acceptance run"
echo "  cloister: $CLOISTER"
echo "  files:    $OUT"

for i in "${!STEPS[@]}"; do
    "step_${STEPS[i]}"
    [ "${STATUS[i]}" = PASS ] || break
done

stopped_at=""
for i in "${!STEPS[@]}"; do
    if [ -z "${STATUS[i]}" ]; then
        STATUS[i]=STOPPED
        DETAIL[i]="not run (step $((stopped_at + 1)), ${STEPS[stopped_at]}, did not pass)"
    elif [ "${STATUS[i]}" != PASS ] && [ -z "$stopped_at" ]; then
        stopped_at=$i
    fi
done

echo
for i in "${!STEPS[@]}"; do
    printf '  %d %-13s %-8s %s\n' "$((i + 1))" "${STEPS[i]}" "${STATUS[i]}" "${DETAIL[i]}"
done
echo

if [ -z "$stopped_at" ]; then
    echo "VERDICT: PASS: launched on SEV-SNP with the predicted measurement $MEASUREMENT, and the report verifies against AMD's root."
    exit 0
fi
step=${STEPS[stopped_at]}
if [ "${STATUS[stopped_at]}" = FAIL ]; then
    echo "VERDICT: FAIL at step $((stopped_at + 1)) ($step): ${DETAIL[stopped_at]}"
    exit 1
fi
if [ "$stopped_at" -eq 0 ]; then
    echo "VERDICT: STOPPED at step 1 (probe): this host cannot launch SEV-SNP guests, so nothing was launched and nothing is proven. Run this script on an AMD EPYC host with SEV-SNP enabled."
else
    echo "VERDICT: STOPPED at step $((stopped_at + 1)) ($step): ${DETAIL[stopped_at]}"
fi
exit 3
