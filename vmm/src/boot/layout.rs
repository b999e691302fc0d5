//! Fixed guest-physical layout of a directly booted x86_64 guest.
//!
//! ```text
//! 0x0000_0500  GDT (boot segments: code 0x10, data 0x18, TSS 0x20)
//! 0x0000_0520  IDT (empty; the kernel installs its own)
//! 0x0000_4000  CPUID page, 0x5000 secrets page, 0x6000 setup_data + CC blob (SNP only)
//! 0x0000_7000  zero page (boot_params), handed to the kernel in rsi
//! 0x0000_8ff0  initial stack pointer
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000 PD (identity map of the first 1 GiB)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA: MP floating pointer and MP configuration table
//! 0x000e_0000  ACPI tables (RSDP, XSDT, FADT, MADT, DSDT)
//! 0x0010_0000  kernel (bzImage protected-mode part, or ELF segments at their addresses)
//!     ...      initrd, as high in low RAM as it fits
//! 0xc000_0000  MMIO gap up to 4 GiB: the PCI window (BARs, up to 0xd000_0000), then
//!              virtio-mmio at 0xd000_0000, the IOAPIC and the LAPIC
//! 0x1_0000_0000  RAM above 4 GiB, if the guest has more than 3 GiB
//! ```

/// Where the boot GDT is written.
pub const BOOT_GDT_START: u64 = 0x500;
/// Where the (empty) boot IDT is written.
pub const BOOT_IDT_START: u64 = 0x520;
/// SNP platforms: the CPUID page (page type CPUID, checked by the firmware).
pub const CPUID_PAGE_START: u64 = 0x4000;
/// SNP platforms: the secrets page (page type SECRETS, filled by the firmware).
pub const SECRETS_PAGE_START: u64 = 0x5000;
/// SNP platforms: the setup_data node of type SETUP_CC_BLOB.
pub const SETUP_DATA_START: u64 = 0x6000;
/// SNP platforms: the CC blob (`cc_blob_sev_info`) the setup_data node points at.
pub const CC_BLOB_START: u64 = 0x6020;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (2 MiB pages) of the boot identity map.
pub const PDE_START: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Largest command line, terminating NUL included (Linux x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area: end of the first RAM range in the e820 map,
/// home of the MP table.
pub const EBDA_START: u64 = 0x9_fc00;
/// Where the ACPI tables are written (inside the reserved range below 1 MiB): the RSDP
/// first, at this address (inside the BIOS area Linux scans for it), then the other
/// tables up to [`HIMEM_START`].
pub const ACPI_START: u64 = 0xe_0000;
/// Start of high memory: the kernel is loaded here or above.
pub const HIMEM_START: u64 = 0x10_0000;
/// First address of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End (exclusive) of the MMIO gap: 4 GiB.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Start of the PCI memory window: where BARs are placed, and what the DSDT's PCI root
/// bridge offers the guest to place them in.
pub const PCI_MMIO_START: u64 = MMIO_GAP_START;
/// Size of the PCI memory window (up to the first virtio-mmio slot).
pub const PCI_MMIO_SIZE: u64 = VIRTIO_MMIO_START - PCI_MMIO_START;
/// First GSI of MSI vectors (after the I/O APIC's inputs); each vector has its own.
pub const MSI_GSI_START: u32 = IRQ_MAX + 1;
/// Last GSI the monitor hands out to MSI vectors (KVM accepts routes for GSIs below
/// 4096, KVM_MAX_IRQ_ROUTES).
pub const MSI_GSI_END: u32 = 4095;

/// First virtio-mmio slot; slot `i` is at `VIRTIO_MMIO_START + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of one virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSI of the first virtio-mmio device; slot `i` uses `VIRTIO_GSI_START + i`.
pub const VIRTIO_GSI_START: u32 = 5;
/// Highest GSI the in-kernel IOAPIC routes (it has 24 pins, GSIs 0..=23).
pub const IRQ_MAX: u32 = 23;
/// GSI (IOAPIC pin) the PIT's ISA IRQ 0 arrives on, as KVM's in-kernel irqchip wires it;
/// the MADT says so with an interrupt source override, the MP table with its own entry.
pub const PIT_GSI: u32 = 2;
/// Address of the IOAPIC.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Address of the local APICs.
pub const APIC_START: u64 = 0xfee0_0000;
/// Largest vCPU count: APIC IDs 0..=253 for the vCPUs and the next one for the IOAPIC
/// (see [`ioapic_id`]; 0xff is the xAPIC broadcast ID).
pub const MAX_CPUS: u8 = 254;
/// KVM's identity-map page for real-mode emulation (one page, below the TSS).
pub const KVM_IDENTITY_MAP_START: u64 = 0xfffb_c000;
/// KVM's three-page TSS area.
pub const KVM_TSS_START: u64 = 0xfffb_d000;
/// I/O port of the serial console (COM1).
pub const COM1_PORT: u64 = 0x3f8;
/// Number of I/O ports of COM1 (a 16550's eight registers).
pub const COM1_PORT_COUNT: u64 = 8;
/// IRQ line of COM1.
pub const COM1_IRQ: u32 = 4;
/// I/O port of the debug-exit device: a byte written here ends the VM with that status.
pub const DEBUG_EXIT_PORT: u64 = 0xf4;
/// I/O port of the i8042 data register (0x60); the command register is at 0x64.
pub const I8042_PORT: u64 = 0x60;
/// I/O port of the CMOS RTC index register (0x70); its data register is the next port.
pub const CMOS_RTC_PORT: u64 = 0x70;
/// Number of I/O ports of the CMOS RTC: index and data.
pub const CMOS_RTC_PORT_COUNT: u64 = 2;
/// I/O port of the simulated platform's guest-request doorbell (32-bit; `sim` only).
pub const GUEST_REQUEST_PORT: u64 = 0x0e00;
/// I/O port of the ACPI hardware-reduced sleep control register (described in the FADT).
pub const ACPI_SLEEP_CONTROL_PORT: u64 = 0x3c0;
/// SLP_TYP value of the S5 (soft-off) state: the DSDT's `\_S5` package announces it, the
/// sleep control register powers off when it is written with SLP_EN.
pub const ACPI_S5_SLEEP_TYPE: u8 = 5;

/// APIC ID of the IOAPIC in a guest with `vcpus` vCPUs (APIC IDs `0..vcpus`): the first
/// ID after the vCPUs', in the MP table and the MADT alike.
///
/// Why not 0 (KVM's IOAPIC ID register after reset, and what the MADT said before): the
/// MP specification 1.4 puts local and I/O APICs on one APIC bus, one ID space (its
/// default configurations, as Linux rebuilds them in `construct_default_ISA_mptable`,
/// give the two CPUs IDs 0 and 1 and the I/O APIC ID 2), and 32-bit Linux on Intel CPUs
/// without xAPIC renumbers an I/O APIC whose ID a CPU already has ("Every APIC in a
/// system must have a unique ID", `io_apic_get_unique_id`). 64-bit Linux only needs the
/// ID to be unique among I/O APICs (it reads the register only when another I/O APIC
/// has the table's ID), and the ACPI specification asks nothing more; so the ID unique
/// among all APICs satisfies every reader. [`MAX_CPUS`] keeps it below the
/// broadcast ID 0xff.
pub const fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

/// `addr` as the 32-bit value of a table field (MP table, MADT, DSDT) that holds an
/// address below 4 GiB. Meant for `const` items, where an address at or above 4 GiB
/// stops the build.
pub const fn below_4g(addr: u64) -> u32 {
    assert!(
        addr <= u32::MAX as u64,
        "the address does not fit a 32-bit field"
    );
    addr as u32
}

/// A virtio-mmio device slot: where its registers are and which interrupt it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base address of the 4 KiB register window.
    pub base: u64,
    /// Length of the window.
    pub len: u64,
    /// Interrupt line (GSI).
    pub gsi: u32,
}

impl MmioSlot {
    /// The slot of the `index`-th virtio-mmio device: [`VIRTIO_MMIO_SIZE`] bytes at
    /// `VIRTIO_MMIO_START + index * VIRTIO_MMIO_SIZE`, GSI `VIRTIO_GSI_START + index`;
    /// `None` past the last GSI ([`IRQ_MAX`]).
    pub fn nth(index: usize) -> Option<Self> {
        let gsi = VIRTIO_GSI_START.checked_add(u32::try_from(index).ok()?)?;
        (gsi <= IRQ_MAX).then_some(MmioSlot {
            base: VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_SIZE,
            len: VIRTIO_MMIO_SIZE,
            gsi,
        })
    }

    /// Linux's command-line announcement of a virtio-mmio device in this slot.
    pub fn cmdline_arg(&self) -> String {
        format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            self.len / 1024,
            self.base,
            self.gsi
        )
    }
}

/// How virtio devices reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VirtioTransport {
    /// virtio-mmio windows with one I/O APIC line each, announced in the DSDT and on the
    /// command line (what Cloister's test guest drives).
    Mmio,
    /// virtio-pci functions on PCI bus 0 with MSI-X (what Linux drives fastest: a used
    /// buffer costs the guest no exit to the monitor).
    #[default]
    Pci,
}

impl std::str::FromStr for VirtioTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mmio" => Ok(Self::Mmio),
            "pci" => Ok(Self::Pci),
            other => Err(format!(
                "unknown virtio transport '{other}' (expected mmio or pci)"
            )),
        }
    }
}

/// A virtio-pci function's place: device number `device` on bus 0, BAR0 at `bar0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciSlot {
    /// Device number (1..=31; 0 is the host bridge).
    pub device: u8,
    /// BAR0's address, inside the PCI window.
    pub bar0: u64,
}

impl PciSlot {
    /// The slot of the `index`-th virtio-pci function, whose BAR0 is `bar_size` bytes:
    /// device `index + 1`, BAR0 at `PCI_MMIO_START + index * bar_size`; `None` past
    /// device 31 or the window's end.
    pub fn nth(index: usize, bar_size: u64) -> Option<Self> {
        let device = u8::try_from(index.checked_add(1)?)
            .ok()
            .filter(|&d| d <= 31)?;
        let bar0 = PCI_MMIO_START.checked_add(bar_size.checked_mul(index as u64)?)?;
        (bar0 + bar_size <= PCI_MMIO_START + PCI_MMIO_SIZE).then_some(Self { device, bar0 })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mmio_slots_follow_the_layout() {
        let s = MmioSlot::nth(0).unwrap();
        assert_eq!((s.base, s.len, s.gsi), (0xd000_0000, 0x1000, 5));
        assert_eq!(s.cmdline_arg(), "virtio_mmio.device=4K@0xd0000000:5");
        assert_eq!(
            MmioSlot::nth(2).unwrap().cmdline_arg(),
            "virtio_mmio.device=4K@0xd0002000:7"
        );
        assert_eq!(MmioSlot::nth(18).unwrap().gsi, 23);
        assert_eq!(MmioSlot::nth(19), None);
    }

    #[test]
    fn pci_slots_follow_the_window() {
        let s = PciSlot::nth(0, 0x8000).unwrap();
        assert_eq!((s.device, s.bar0), (1, 0xc000_0000));
        assert_eq!(PciSlot::nth(30, 0x8000).unwrap().device, 31);
        assert_eq!(PciSlot::nth(31, 0x8000), None);
        assert_eq!(PciSlot::nth(1, PCI_MMIO_SIZE), None);
        assert_eq!("pci".parse(), Ok(VirtioTransport::Pci));
        assert!("isa"
            .parse::<VirtioTransport>()
            .unwrap_err()
            .contains("mmio or pci"));
    }

    #[test]
    fn the_ioapic_id_is_unique_and_below_broadcast_for_every_cpu_count() {
        for vcpus in 1..=MAX_CPUS {
            let id = ioapic_id(vcpus);
            assert!(id >= vcpus, "{vcpus} vCPUs: IOAPIC ID {id} is a vCPU's");
            assert!(
                id < 0xff,
                "{vcpus} vCPUs: IOAPIC ID {id} is the broadcast ID"
            );
        }
    }
}
