#!/bin/sh
# Starts one inner VM under the VMM named by $1 (cloister or qemu) inside the outer VM:
# the inner Debian kernel, its busybox initramfs and a copy of the marker disk, with the
# CPU count, memory size and kernel command line from /nested.conf.
. /nested.conf
case "$1" in
  cloister)
    exec cloister run --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio
    ;;
  qemu)
    # microvm: virtio-mmio devices described in an ACPI DSDT, like cloister's.
    exec qemu-system-x86_64 -accel kvm -cpu host -M microvm,acpi=on \
      -smp "$INNER_CPUS" -m "$INNER_MEM" -nodefaults -no-user-config -no-reboot \
      -display none -monitor none -serial stdio \
      -kernel /inner/vmlinuz -initrd /inner/initrd.cpio.gz -append "$INNER_CMDLINE" \
      -drive id=vda,file=/tmp/disk.img,format=raw,if=none \
      -device virtio-blk-device,drive=vda
    ;;
  *)
    echo "inner-vmm: unknown VMM '$1' (expected cloister or qemu)" >&2
    exit 2
    ;;
esac
