#!/bin/busybox sh
# /init of the outer VM (QEMU TCG, -cpu EPYC,+svm,+npt). Loads kvm-amd so that /dev/kvm
# exists, then boots the inner Debian kernel under each VMM named in /nested.conf
# (cloister, QEMU -accel kvm microvm and/or pc), RUNS times each, interleaved, and reports
#   NESTED-RUN: vmm=<v> run=<n> exit=<status> marker_s=<t> done_s=<t> exit_s=<t>
# where the times are seconds from the VMM's start (outer guest clock, busybox ts).
/bin/busybox mkdir -p /bin /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
. /nested.conf

finish() {
  echo "NESTED-OUTER: end"
  sync
  poweroff -f
  sleep 5
}

echo "NESTED-OUTER: init uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /lib/modules/order); do
  args=""
  [ "$m" = kvm-amd ] && args="npt=1 nested=1"
  if ! insmod "/lib/modules/$m.ko" $args; then
    echo "NESTED-OUTER: FAIL insmod $m"
    finish
  fi
done
if [ ! -c /dev/kvm ]; then
  echo "NESTED-OUTER: FAIL no /dev/kvm after loading kvm-amd"
  dmesg | tail -20
  finish
fi
echo "NESTED-OUTER: kvm ok npt=$(cat /sys/module/kvm_amd/parameters/npt) nested=$(cat /sys/module/kvm_amd/parameters/nested)"

run=1
while [ "$run" -le "$RUNS" ]; do
  for vmm in $VMMS; do
    cp /inner/disk.img /tmp/disk.img
    truncate -s "${INNER_DISK_SIZE:-1M}" /tmp/disk.img
    echo "NESTED-RUN-BEGIN: vmm=$vmm run=$run"
    log=/tmp/run-$vmm-$run.log
    # ts -s stamps every line with the seconds since the VMM was started.
    { timeout "$INNER_TIMEOUT" /bin/inner-vmm "$vmm" </dev/null 2>&1; echo "NESTED-VMM-EXIT: status=$?"; } \
      | ts -s '%.s' | tee "$log"
    awk -v vmm="$vmm" -v run="$run" '
      { sub(/\r$/, "") }
      /NESTED-LINUX: marker/ && m == "" { m = $1 }
      /NESTED-LINUX: done/ && d == "" { d = $1 }
      /NESTED-VMM-EXIT: status=/ { e = $1; split($0, a, "status="); s = a[2] }
      END {
        if (m == "") m = "none"; if (d == "") d = "none"; if (e == "") e = "none"; if (s == "") s = "none"
        printf "NESTED-RUN: vmm=%s run=%d exit=%s marker_s=%s done_s=%s exit_s=%s\n", vmm, run, s, m, d, e
      }' "$log"
    rm -f "$log"
  done
  run=$((run + 1))
done
finish
