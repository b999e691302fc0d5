//! ACPI tables for x86_64 guests: how a stock Linux kernel finds its CPUs (MADT), its
//! virtio-mmio devices, PCI root bridge and serial port (DSDT), and how it powers off (hardware-reduced
//! FADT with extended sleep registers).
//!
//! The tables are encoded by the rust-vmm `acpi_tables` crate (AML objects, table
//! header and checksum, RSDP, XSDT, FADT layout, local APIC and I/O APIC structures);
//! what it lacks is written here: the `IRQNoFlags` descriptor (`aml`), the MADT's
//! PCAT_COMPAT flag, interrupt source override and local APIC NMI (`madt`), and the
//! FADT's IA-PC boot architecture flags (`fadt`).
//!
//! # Interface for the VM builder
//!
//! ```text
//! let rsdp = acpi::write_tables(&mem, &AcpiConfig {
//!     vcpus: 2,
//!     virtio_mmio: vec![MmioSlot::nth(0)?],
//!     sleep_control_port: ACPI_SLEEP_CONTROL_PORT as u16,  // status register after it
//!     pci: false,                                           // PCI bus 0 and MSI
//! })?;
//! // optionally: boot_params.acpi_rsdp_addr = rsdp.0 (Linux also scans 0xe0000..0xfffff)
//! ```
//!
//! Layout in guest memory (reserved in the e820 map): the RSDP at [`ACPI_START`], then
//! the DSDT, FADT, MADT and XSDT, 16-byte aligned, below [`HIMEM_START`].
//!
//! Power-off: Linux writes `SLP_TYP << 2 | SLP_EN` (SLP_EN = bit 5, SLP_TYP from `\_S5`,
//! [`crate::boot::layout::ACPI_S5_SLEEP_TYPE`]) to the one-byte sleep control register
//! at I/O port `sleep_control_port`; it first writes WAK_STS (0x80) to the sleep status
//! register at `sleep_control_port + 1`.

mod aml;
mod dsdt;
mod fadt;
mod madt;
mod sdt;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot::layout::{MmioSlot, ACPI_START, HIMEM_START, IRQ_MAX, MAX_CPUS};
use dsdt::VirtioMmioDevice;

/// Where the tables after the RSDP start.
const TABLES_START: u64 = ACPI_START + 0x40;

/// What the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs (APIC IDs 0..vcpus).
    pub vcpus: u8,
    /// The virtio-mmio devices, in slot order.
    pub virtio_mmio: Vec<MmioSlot>,
    /// I/O port of the sleep control register; the sleep status register is the next port.
    pub sleep_control_port: u16,
    /// The machine has PCI bus 0 (the DSDT describes its root bridge and window, and the
    /// FADT no longer tells the OS to leave MSI alone).
    pub pci: bool,
}

/// Errors building or placing the ACPI tables.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    /// No vCPUs.
    #[error("the ACPI tables need at least one vCPU")]
    NoVcpus,
    /// More vCPUs than xAPIC IDs leave room for (the I/O APIC takes the next ID, 0xff is
    /// the broadcast ID).
    #[error("{0} vCPUs do not fit xAPIC IDs (at most {MAX_CPUS})")]
    TooManyVcpus(u8),
    /// More virtio-mmio devices than AML device names VR00..VRFF.
    #[error("{0} virtio-mmio devices are too many for the DSDT (at most 256)")]
    TooManyDevices(usize),
    /// A virtio-mmio window is empty or does not lie below 4 GiB.
    #[error("virtio-mmio window {base:#x}+{len:#x} must be non-empty and below 4 GiB")]
    WindowNotBelow4G {
        /// Base of the window.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// A GSI the I/O APIC does not have.
    #[error("GSI {0} is beyond the I/O APIC's last input, {IRQ_MAX}")]
    GsiOutOfRange(u32),
    /// The sleep control port is the last port, so the status port cannot follow it.
    #[error("sleep control port {0:#x} leaves no room for the status port after it")]
    BadSleepPort(u16),
    /// The tables do not fit below 1 MiB.
    #[error("the ACPI tables need {needed:#x} bytes, more than the {available:#x} bytes reserved for them")]
    TooLarge {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// Guest memory does not cover the table area.
    #[error("cannot write {len} bytes of ACPI tables at guest address {addr:#x}")]
    GuestMemory {
        /// Address of the failed write.
        addr: u64,
        /// Bytes to write.
        len: usize,
    },
}

/// All tables, serialised, with the addresses they go to.
#[derive(Debug, Clone)]
pub struct AcpiTables {
    /// (guest address, bytes) of each table, the RSDP first.
    pub placed: Vec<(GuestAddress, Vec<u8>)>,
}

/// Builds the tables for `cfg` without writing them anywhere.
pub fn build_tables(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    if cfg.vcpus == 0 {
        return Err(AcpiError::NoVcpus);
    }
    if cfg.vcpus > MAX_CPUS {
        return Err(AcpiError::TooManyVcpus(cfg.vcpus));
    }
    if cfg.virtio_mmio.len() > 256 {
        return Err(AcpiError::TooManyDevices(cfg.virtio_mmio.len()));
    }
    let sleep_status_port = cfg
        .sleep_control_port
        .checked_add(1)
        .ok_or(AcpiError::BadSleepPort(cfg.sleep_control_port))?;
    let virtio = cfg
        .virtio_mmio
        .iter()
        .map(|s| {
            let window = AcpiError::WindowNotBelow4G {
                base: s.base,
                len: s.len,
            };
            let end = s.base.checked_add(s.len).ok_or(window.clone())?;
            if s.len == 0 || end > 1 << 32 {
                return Err(window);
            }
            if s.gsi > IRQ_MAX {
                return Err(AcpiError::GsiOutOfRange(s.gsi));
            }
            Ok(VirtioMmioDevice {
                base: s.base as u32,
                len: s.len as u32,
                gsi: s.gsi,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut next = TABLES_START;
    let mut place = |bytes: Vec<u8>, placed: &mut Vec<(GuestAddress, Vec<u8>)>| {
        let addr = next;
        next = (addr + bytes.len() as u64 + 15) & !15;
        placed.push((GuestAddress(addr), bytes));
        addr
    };
    let mut placed = Vec::new();
    let dsdt_addr = place(dsdt::dsdt(&virtio, cfg.pci), &mut placed);
    let fadt_addr = place(
        fadt::fadt(
            dsdt_addr,
            cfg.sleep_control_port,
            sleep_status_port,
            cfg.pci,
        ),
        &mut placed,
    );
    let madt_addr = place(madt::madt(cfg.vcpus), &mut placed);
    let xsdt_addr = place(sdt::xsdt(&[fadt_addr, madt_addr]), &mut placed);
    if next > HIMEM_START {
        return Err(AcpiError::TooLarge {
            needed: next - ACPI_START,
            available: HIMEM_START - ACPI_START,
        });
    }
    placed.insert(0, (GuestAddress(ACPI_START), sdt::rsdp(xsdt_addr)));
    Ok(AcpiTables { placed })
}

/// Builds the tables for `cfg` and writes them into `mem`; returns the RSDP's address.
pub fn write_tables(mem: &GuestMemoryMmap, cfg: &AcpiConfig) -> Result<GuestAddress, AcpiError> {
    let tables = build_tables(cfg)?;
    for (addr, bytes) in &tables.placed {
        mem.write_slice(bytes, *addr)
            .map_err(|_| AcpiError::GuestMemory {
                addr: addr.0,
                len: bytes.len(),
            })?;
    }
    Ok(GuestAddress(ACPI_START))
}

#[cfg(test)]
mod tests;
