//! The KVM VM: opening /dev/kvm (telling "missing" from "no permission"), creating the
//! VM with its in-kernel interrupt controllers and PIT, and registering guest memory and
//! interrupt lines.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_pit_config, kvm_userspace_memory_region, KvmIrqRouting,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::layout::{IRQ_MAX, KVM_IDENTITY_MAP_START, KVM_TSS_START};
use crate::devices::pci::{MsiMessage, PciHost};
use crate::memory::GuestMemoryMmap;

/// The usual KVM device.
pub const KVM_PATH: &str = "/dev/kvm";

/// Errors while opening KVM or setting up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The KVM device does not exist.
    #[error("{0} does not exist: this host has no KVM (load the kvm module, or enable nested virtualization for this VM)")]
    KvmMissing(String),
    /// The KVM device exists but cannot be opened.
    #[error(
        "no permission to open {0}: run as a member of the device's group (often `kvm`) or as root"
    )]
    KvmPermission(String),
    /// Any other failure to open the device.
    #[error("cannot open {path}: {source}")]
    KvmOpen {
        /// The device path.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The path opened but is not a KVM device.
    #[error("{0} is not a KVM device (KVM_GET_API_VERSION failed)")]
    NotKvm(String),
    /// The host's KVM is too old.
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// What the kernel said.
        source: kvm_ioctls::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Opens the KVM device at `path`.
pub fn open_kvm(path: &Path) -> Result<Kvm, VmError> {
    let shown = path.display().to_string();
    let c_path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| VmError::KvmOpen {
            path: shown.clone(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| match e.errno() {
        libc::ENOENT => VmError::KvmMissing(shown.clone()),
        libc::EACCES | libc::EPERM => VmError::KvmPermission(shown.clone()),
        errno => VmError::KvmOpen {
            path: shown.clone(),
            source: std::io::Error::from_raw_os_error(errno),
        },
    })?;
    let version = kvm.get_api_version();
    if version < 0 {
        return Err(VmError::NotKvm(shown));
    }
    if version != 12 {
        return Err(VmError::ApiVersion(version));
    }
    Ok(kvm)
}

/// A KVM VM; [`Vm::create_interrupt_controllers`] gives it an in-kernel IOAPIC, PIC,
/// LAPICs and PIT.
pub struct Vm {
    fd: Arc<VmFd>,
}

impl Vm {
    /// Creates the VM (default type), without interrupt controllers yet.
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        Self::with_type(kvm, 0)
    }

    /// Creates a VM of `vm_type` (0: the default; 4: `KVM_X86_SNP_VM`), without interrupt
    /// controllers yet.
    pub fn with_type(kvm: &Kvm, vm_type: u64) -> Result<Self, VmError> {
        let fd = kvm
            .create_vm_with_type(vm_type)
            .map_err(kvm_err("creating the VM (KVM_CREATE_VM)"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_START)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.set_tss_address(KVM_TSS_START as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Creates the in-kernel interrupt controllers and the PIT; before any vCPU exists.
    ///
    /// The builder calls this after guest memory is registered: the first memory slot
    /// added after KVM_CREATE_IRQCHIP waits for an SRCU grace period (about 7 ms on this
    /// project's kvm_pvm host), one added before it does not (about 0.1 ms).
    pub fn create_interrupt_controllers(&self) -> Result<(), VmError> {
        self.fd.create_irq_chip().map_err(kvm_err(
            "creating the in-kernel interrupt controller (KVM_CREATE_IRQCHIP)",
        ))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(kvm_err("creating the PIT (KVM_CREATE_PIT2)"))?;
        Ok(())
    }

    /// Hands every region of `mem` to KVM as a memory slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::Kvm {
                    what: "finding the host mapping of guest memory",
                    source: kvm_ioctls::Error::new(libc::EFAULT),
                })?;
            let slot_region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range [host, host + len) is a live mapping owned by `mem`,
            // which the caller keeps alive (the VMM holds it) for as long as the VM runs;
            // slots do not overlap because the regions of a GuestMemoryMmap do not.
            unsafe { self.fd.set_user_memory_region(slot_region) }.map_err(kvm_err(
                "registering guest memory (KVM_SET_USER_MEMORY_REGION)",
            ))?;
        }
        Ok(())
    }

    /// Makes a write to `event` raise interrupt line `gsi`.
    pub fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(event, gsi)
            .map_err(kvm_err("KVM_IRQFD"))
    }

    /// `KVM_IOEVENTFD`: a guest write to the MMIO address `addr` signals `event` inside KVM,
    /// without an exit to the monitor.
    pub fn register_mmio_ioevent(&self, event: &EventFd, addr: u64) -> Result<(), VmError> {
        self.fd
            .register_ioevent(
                event,
                &kvm_ioctls::IoEventAddress::Mmio(addr),
                kvm_ioctls::NoDatamatch,
            )
            .map_err(kvm_err("KVM_IOEVENTFD"))
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// What PCI functions ask of KVM while the guest runs (MSI routes, ioeventfds), for
    /// this VM.
    pub fn pci_host(&self) -> Arc<KvmPciHost> {
        Arc::new(KvmPciHost {
            fd: self.fd.clone(),
            msi_routes: Mutex::new(BTreeMap::new()),
        })
    }
}

/// [`PciHost`] over KVM: MSI routes through KVM_SET_GSI_ROUTING, ioeventfds through
/// KVM_IOEVENTFD.
///
/// KVM_SET_GSI_ROUTING replaces the whole table, so every call hands KVM the in-kernel
/// irqchip's default routes (what KVM_CREATE_IRQCHIP installs: GSIs 0-15 to the PIC and
/// the I/O APIC, 16-23 to the I/O APIC) plus every MSI route so far; the legacy devices'
/// lines keep working.
pub struct KvmPciHost {
    fd: Arc<VmFd>,
    msi_routes: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl KvmPciHost {
    /// The full routing table: the irqchip defaults, then `msi`.
    pub fn routing_table(msi: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
        let irqchip = |gsi: u32, chip: u32, pin: u32| {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = chip;
            e.u.irqchip.pin = pin;
            e
        };
        let mut table = Vec::with_capacity(40 + msi.len());
        for gsi in 0..=IRQ_MAX {
            table.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < 16 {
                let pic = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                table.push(irqchip(gsi, pic, gsi % 8));
            }
        }
        for (&gsi, m) in msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = m.address as u32;
            e.u.msi.address_hi = (m.address >> 32) as u32;
            e.u.msi.data = m.data;
            table.push(e);
        }
        table
    }
}

/// A KVM ioctl's error as the `std::io::Error` the [`PciHost`] interface speaks.
fn io_error(e: kvm_ioctls::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.errno())
}

impl PciHost for KvmPciHost {
    fn set_msi_route(&self, gsi: u32, message: MsiMessage) -> std::io::Result<()> {
        let mut routes = self.msi_routes.lock().unwrap_or_else(|p| p.into_inner());
        let previous = routes.insert(gsi, message);
        let table = Self::routing_table(&routes);
        let result = KvmIrqRouting::from_entries(&table)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))
            .and_then(|routing| self.fd.set_gsi_routing(&routing).map_err(io_error));
        if result.is_err() {
            // KVM kept the old table: so does the record.
            match previous {
                Some(p) => routes.insert(gsi, p),
                None => routes.remove(&gsi),
            };
        }
        result
    }

    fn register_ioevent(&self, event: &EventFd, addr: u64) -> std::io::Result<()> {
        self.fd
            .register_ioevent(
                event,
                &kvm_ioctls::IoEventAddress::Mmio(addr),
                kvm_ioctls::NoDatamatch,
            )
            .map_err(io_error)
    }

    fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> std::io::Result<()> {
        self.fd
            .unregister_ioevent(
                event,
                &kvm_ioctls::IoEventAddress::Mmio(addr),
                kvm_ioctls::NoDatamatch,
            )
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tells_missing_from_not_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kvm");
        let err = open_kvm(&missing).err().unwrap();
        assert!(matches!(err, VmError::KvmMissing(_)), "{err}");
        std::fs::write(&missing, b"").unwrap();
        let err = open_kvm(&missing).err().unwrap();
        assert!(matches!(err, VmError::NotKvm(_)), "{err}");
        assert!(err
            .to_string()
            .ends_with("is not a KVM device (KVM_GET_API_VERSION failed)"));
    }

    #[test]
    fn opens_the_real_device() {
        // Fails loudly on a host without a usable /dev/kvm.
        open_kvm(Path::new(KVM_PATH)).unwrap();
    }
}
