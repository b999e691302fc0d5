//! The built-in test guest (`tests/guest`), compiled by `build.rs` and embedded in the
//! `cloister` binary. `cloister run` boots [`ELF`] when no `--kernel` is given.
//!
//! The guest prints lines starting with `CLOISTER-GUEST: ` on COM1 (the first is
//! [`BOOT_MARKER`] followed by the entry it came through), checks the e820 map, counts the
//! CPUs in the MP table and the MADT, hashes every virtio-mmio block device named on the
//! command line, and ends the VM: `cloister_test.exit=N` writes N to I/O port 0xf4,
//! otherwise it powers off through the ACPI sleep control register (port 0x3c0). A failed
//! check prints a `CLOISTER-GUEST: FAIL ...` line and exits with [`FAILURE_EXIT_CODE`].
//! Command-line parameters: see `tests/guest/src/cmdline.rs`.

/// The guest as an ELF64 image linked at 1 MiB: entry (the Linux 64-bit boot protocol
/// entry) at 0x100200, and a PVH note (XEN_ELFNOTE_PHYS32_ENTRY) for a 32-bit PVH entry.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloister-test-guest.elf"));

/// The same guest as a bzImage (boot protocol 2.15, XLF_KERNEL_64, not relocatable: its
/// protected-mode part must be loaded at 1 MiB; 64-bit entry at 0x100200).
pub const BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloister-test-guest.bzImage"));

/// The start of the first line the guest prints.
pub const BOOT_MARKER: &str = "CLOISTER-GUEST: boot";

/// The exit code the guest ends with when one of its checks failed.
pub const FAILURE_EXIT_CODE: u8 = 99;
