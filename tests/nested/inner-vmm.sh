#!/bin/sh
# Starts one inner VM under the VMM named by $1 (cloister, cloister-mmio, cloister-sim,
# cloister-verifier[-guest], cloister-tamper-*, qemu-microvm or qemu-pc) inside
# the outer VM: the inner Debian kernel, its busybox initramfs and a copy of the marker
# disk, with the CPU count, memory size and kernel command line from /nested.conf. Each
# VMM is configured as its users would start a Linux kernel with one virtio disk.
. /nested.conf
case "$1" in
  cloister)
    exec cloister run --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio
    ;;
  cloister-mmio)
    # The same, the disk on the virtio-mmio transport.
    exec cloister run --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio --virtio mmio
    ;;
  cloister-sim)
    # The same launch on the simulated SEV-SNP platform: the launch plan through the SNP
    # launcher and the simulated kernel + secure processor, with the simulation root the
    # harness made on the host (RSA key generation is slow under TCG).
    exec cloister run --platform sim --sim-root /inner/sim-root \
      --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio
    ;;
  cloister-verifier)
    # Debian through Cloister's boot verifier on the simulated platform: the PSP measures
    # only the verifier and its manifest; the verifier checks the staged kernel, initrd
    # and command line against the manifest's SHA-384 before it enters Linux.
    exec cloister run --platform sim --sim-root /inner/sim-root --boot verifier \
      --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio
    ;;
  cloister-verifier-guest)
    # The built-in test guest (a bzImage) through the verifier: it attests.
    exec cloister run --platform sim --sim-root /inner/sim-root --boot verifier \
      --cmdline "console=ttyS0 cloister_test.report_data=ab" --serial stdio
    ;;
  cloister-tamper-kernel|cloister-tamper-initrd|cloister-tamper-cmdline)
    # A host that changes the staged kernel, initrd or command line after the launch: the
    # verifier must refuse, and Linux must never run.
    exec cloister run --platform sim --sim-root /inner/sim-root --boot verifier \
      --tamper-staging "${1#cloister-tamper-}" --debug-exit \
      --kernel /inner/vmlinuz --initrd /inner/initrd.cpio.gz \
      --cmdline "$INNER_CMDLINE" --cpus "$INNER_CPUS" --memory "$INNER_MEM" \
      --disk path=/tmp/disk.img --serial stdio
    ;;
  qemu-microvm)
    # microvm: virtio-mmio devices described in an ACPI DSDT, like cloister's. rtc=on:
    # under KVM microvm has no CMOS RTC by default, yet its FADT does not say so, and
    # Debian's kernel then probes the absent one for 12-40 s here (rtc_cmos, with soft
    # lockup warnings); its documented switch gives the guest the wall clock it expects.
    exec qemu-system-x86_64 -accel kvm -cpu host -M microvm,acpi=on,rtc=on \
      -smp "$INNER_CPUS" -m "$INNER_MEM" -nodefaults -no-user-config -no-reboot \
      -display none -monitor none -serial stdio \
      -kernel /inner/vmlinuz -initrd /inner/initrd.cpio.gz -append "$INNER_CMDLINE" \
      -drive id=vda,file=/tmp/disk.img,format=raw,if=none \
      -device virtio-blk-device,drive=vda
    ;;
  qemu-pc)
    # The default PC machine (i440FX, SeaBIOS, its default devices), the disk as
    # virtio-blk-pci.
    exec qemu-system-x86_64 -M pc -accel kvm -cpu host \
      -smp "$INNER_CPUS" -m "$INNER_MEM" \
      -kernel /inner/vmlinuz -initrd /inner/initrd.cpio.gz -append "$INNER_CMDLINE" \
      -drive file=/tmp/disk.img,format=raw,if=virtio \
      -nographic -no-reboot
    ;;
  *)
    echo "inner-vmm: unknown VMM '$1' (expected cloister, cloister-mmio, cloister-sim, cloister-verifier, cloister-verifier-guest, cloister-tamper-kernel|initrd|cmdline, qemu-microvm or qemu-pc)" >&2
    exit 2
    ;;
esac
