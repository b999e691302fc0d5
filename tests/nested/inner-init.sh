#!/bin/busybox sh
# /init of the inner (second-level) guest: a Debian kernel booted by the VMM under test
# (cloister or QEMU) inside the outer TCG VM. Loads the virtio modules, reports what the
# guest sees as "NESTED-LINUX: key=value" lines on the serial console, and powers off.
/bin/busybox mkdir -p /bin /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "NESTED-LINUX: marker uptime=$(cut -d' ' -f1 /proc/uptime)"
# Modules in dependency order (listed by the harness from each module's depends= field).
for m in $(cat /lib/modules/order); do
  insmod "/lib/modules/$m.ko" || echo "NESTED-LINUX: insmod-failed=$m"
done
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
echo "NESTED-LINUX: cpus=$(grep -c '^processor' /proc/cpuinfo) online=$(cat /sys/devices/system/cpu/online)"
if [ -b /dev/vda ]; then
  echo "NESTED-LINUX: vda=present sectors=$(cat /sys/block/vda/size) head=$(head -c 32 /dev/vda | tr -cd 'A-Za-z0-9-')"
  # Which transport the disk came through (its sysfs path: a PCI function or a platform
  # device) and the interrupts its driver asked for (virtioN-config and virtioN-req.Q are
  # MSI-X vectors; a bare virtioN is one shared line).
  echo "NESTED-LINUX: vda-device=$(readlink -f /sys/block/vda/device | cut -d/ -f4-5)"
  echo "NESTED-LINUX: virtio-irqs=$(grep -o 'virtio[0-9][-a-z0-9.]*' /proc/interrupts | tr '\n' ',')"
else
  echo "NESTED-LINUX: vda=missing"
  echo "NESTED-LINUX: virtio-devices=$(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
  echo "NESTED-LINUX: platform-mmio=$(ls /sys/bus/platform/devices 2>/dev/null | grep -i -e virtio -e LNRO | tr '\n' ' ')"
fi
echo "NESTED-LINUX: done uptime=$(cut -d' ' -f1 /proc/uptime)"
# The disk benchmark (run.sh --disk-bench): present only when asked for.
if [ -x /bin/diskio ] && [ -b /dev/vda ]; then
  /bin/diskio /dev/vda --seconds "$(cat /diskio.seconds)"
fi
poweroff -f
# poweroff -f only returns if the power-off request failed.
echo "NESTED-LINUX: poweroff-failed"
sleep 5
