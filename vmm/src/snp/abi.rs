//! The kernel's SEV-SNP launch ABI: `#[repr(C)]` argument structs of
//! `KVM_MEMORY_ENCRYPT_OP` and of the guest_memfd / memory-attribute ioctls, and the
//! constants that go with them. Defined here rather than taken from the `sev` crate,
//! whose launch-finish struct has the pre-merge 56-byte layout (SNP-FACTS §2.1, §6.1).
//! Every struct's size and field offsets are pinned by the tests below to the kernel's
//! `arch/x86/include/uapi/asm/kvm.h` and `include/uapi/linux/kvm.h` (SNP-FACTS §1.4-1.9).

/// `KVM_X86_SNP_VM`: the VM type of an SEV-SNP guest (`KVM_CREATE_VM` argument).
pub const KVM_X86_SNP_VM: u64 = 4;
/// `KVM_CAP_VM_TYPES`: bitmask of the VM types this KVM creates.
pub const KVM_CAP_VM_TYPES: u32 = 235;
/// `KVM_CAP_GUEST_MEMFD`.
pub const KVM_CAP_GUEST_MEMFD: u32 = 234;
/// `KVM_CAP_MEMORY_ATTRIBUTES`: returns the supported attribute mask.
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
/// `KVM_CAP_USER_MEMORY2`.
pub const KVM_CAP_USER_MEMORY2: u32 = 231;
/// `KVM_CAP_EXIT_HYPERCALL`: returns the mask of hypercalls that may exit to user space.
pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
/// `KVM_HC_MAP_GPA_RANGE`: the hypercall KVM turns SNP page-state changes into.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// MAP_GPA_RANGE attributes bit 4: the range becomes encrypted (private).
pub const MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// MAP_GPA_RANGE attributes bits 3:0: page size (0 = 4K, 1 = 2M, 2 = 1G).
pub const MAP_GPA_RANGE_PAGE_SIZE_MASK: u64 = 0xf;
/// `KVM_MEM_GUEST_MEMFD`: the memslot is backed by a guest_memfd for its private pages.
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE`: a memory-fault exit for an access that wanted private.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// `KVM_SYSTEM_EVENT_SEV_TERM`: the guest asked to terminate (GHCB MSR 0x100 / NAE).
pub const KVM_SYSTEM_EVENT_SEV_TERM: u32 = 6;
/// `KVM_EXIT_SNP_REQ_CERTS` (Linux 7.0+; 42 in the v7 patch, 43 merged: SNP-FACTS §1.11).
pub const KVM_EXIT_SNP_REQ_CERTS: u32 = 43;
/// `/dev/kvm` device-attribute group of SEV (`KVM_X86_GRP_SEV`).
pub const KVM_X86_GRP_SEV: u32 = 1;
/// Attribute: SEV_FEATURES bits INIT2 accepts.
pub const KVM_X86_SEV_VMSA_FEATURES: u64 = 0;
/// Attribute: guest-policy bits SNP_LAUNCH_START accepts (6.19+).
pub const KVM_X86_SNP_POLICY_BITS: u64 = 1;
/// Attribute: 1 when KVM offers `KVM_SEV_SNP_ENABLE_REQ_CERTS` and the certificate exit
/// (7.0+).
pub const KVM_X86_SEV_SNP_REQ_CERTS: u64 = 2;
/// Largest GHCB protocol version KVM offers.
pub const GHCB_VERSION_DEFAULT: u16 = 2;

/// SNP guest-policy bits (firmware ABI "Guest Policy"; SNP-FACTS §5.2), as far as KVM's
/// own checks in SNP_LAUNCH_START name them (SNP-FACTS §1.6).
pub mod guest_policy {
    /// ABI_MINOR (bits 7:0) and ABI_MAJOR (bits 15:8).
    pub const ABI: u64 = 0xffff;
    /// SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RSVD_MBO: u64 = 1 << 17;
    /// Migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may run on one socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
}

/// `enum sev_cmd_id` values used for SNP.
pub mod cmd {
    /// `KVM_SEV_INIT2`.
    pub const INIT2: u32 = 22;
    /// `KVM_SEV_SNP_LAUNCH_START`.
    pub const SNP_LAUNCH_START: u32 = 100;
    /// `KVM_SEV_SNP_LAUNCH_UPDATE`.
    pub const SNP_LAUNCH_UPDATE: u32 = 101;
    /// `KVM_SEV_SNP_LAUNCH_FINISH`.
    pub const SNP_LAUNCH_FINISH: u32 = 102;
    /// `KVM_SEV_SNP_ENABLE_REQ_CERTS` (7.0+).
    pub const SNP_ENABLE_REQ_CERTS: u32 = 103;
}

/// `KVM_SEV_SNP_PAGE_TYPE_*`: the page types of SNP_LAUNCH_UPDATE ("kept in sync with
/// firmware values"; VMSA 2 is KVM-internal).
pub mod page_type {
    /// Measured contents.
    pub const NORMAL: u8 = 1;
    /// Zero page, measured as zero.
    pub const ZERO: u8 = 3;
    /// Unmeasured contents.
    pub const UNMEASURED: u8 = 4;
    /// Secrets page, filled by firmware.
    pub const SECRETS: u8 = 5;
    /// CPUID page, checked by firmware.
    pub const CPUID: u8 = 6;
}

/// `struct kvm_sev_cmd`, the argument of `KVM_MEMORY_ENCRYPT_OP` (24 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmSevCmd {
    /// Subcommand ([`cmd`]).
    pub id: u32,
    /// Implicit padding in the C struct.
    pub pad0: u32,
    /// User pointer to the subcommand's struct.
    pub data: u64,
    /// Out: the firmware status (`SEV_RET_*`), written back even on failure.
    pub error: u32,
    /// File descriptor of /dev/sev.
    pub sev_fd: u32,
}

/// `struct kvm_sev_init`, the argument of `KVM_SEV_INIT2` (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmSevInit {
    /// Initial SEV_FEATURES (KVM ORs in SNP_ACTIVE itself for SNP VMs).
    pub vmsa_features: u64,
    /// Must be 0.
    pub flags: u32,
    /// Highest GHCB protocol version (0 = KVM's default, 2).
    pub ghcb_version: u16,
    /// Padding.
    pub pad1: u16,
    /// Padding.
    pub pad2: [u32; 8],
}

/// `struct kvm_sev_snp_launch_start` (64 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmSevSnpLaunchStart {
    /// Guest policy.
    pub policy: u64,
    /// Guest-OS-visible workarounds.
    pub gosvw: [u8; 16],
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad0: [u8; 6],
    /// Padding.
    pub pad1: [u64; 4],
}

/// `struct kvm_sev_snp_launch_update` (64 bytes). KVM advances `gfn_start`, `uaddr` and
/// `len` as it makes progress; the caller loops until `len` is 0.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmSevSnpLaunchUpdate {
    /// First guest frame (GPA >> 12).
    pub gfn_start: u64,
    /// User address of the source bytes (ignored for ZERO pages).
    pub uaddr: u64,
    /// Bytes left, a multiple of 4 KiB.
    pub len: u64,
    /// Page type ([`page_type`]).
    pub type_: u8,
    /// Padding.
    pub pad0: u8,
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: [u64; 4],
}

/// Size of the ID block SNP_LAUNCH_FINISH reads.
pub const ID_BLOCK_SIZE: usize = 96;
/// Size of the ID authentication information structure.
pub const ID_AUTH_SIZE: usize = 4096;

/// `struct kvm_sev_snp_launch_finish` (88 bytes; vcek_disabled at 18, host_data at 19,
/// flags at 54 — the layout the `sev` crate gets wrong).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmSevSnpLaunchFinish {
    /// User address of the 96-byte ID block (read only when `id_block_en`).
    pub id_block_uaddr: u64,
    /// User address of the 4096-byte ID authentication structure.
    pub id_auth_uaddr: u64,
    /// 1: an ID block is given.
    pub id_block_en: u8,
    /// 1: the ID auth structure carries an author key.
    pub auth_key_en: u8,
    /// 1: the guest may not use the VCEK.
    pub vcek_disabled: u8,
    /// Lands in the report's HOST_DATA.
    pub host_data: [u8; 32],
    /// Padding.
    pub pad0: [u8; 3],
    /// Must be 0.
    pub flags: u16,
    /// Padding.
    pub pad1: [u64; 4],
}

/// `struct kvm_create_guest_memfd` (64 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmCreateGuestMemfd {
    /// Size in bytes.
    pub size: u64,
    /// Flags (0 for SNP VMs).
    pub flags: u64,
    /// Reserved.
    pub reserved: [u64; 6],
}

/// `struct kvm_userspace_memory_region2` (160 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmUserspaceMemoryRegion2 {
    /// Slot number.
    pub slot: u32,
    /// Flags ([`KVM_MEM_GUEST_MEMFD`]).
    pub flags: u32,
    /// First guest physical address.
    pub guest_phys_addr: u64,
    /// Size in bytes.
    pub memory_size: u64,
    /// Host address of the shared view.
    pub userspace_addr: u64,
    /// Offset of the slot in the guest_memfd.
    pub guest_memfd_offset: u64,
    /// The guest_memfd.
    pub guest_memfd: u32,
    /// Padding.
    pub pad1: u32,
    /// Padding.
    pub pad2: [u64; 14],
}

/// `struct kvm_memory_attributes` (32 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmMemoryAttributes {
    /// First GPA.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Attributes ([`KVM_MEMORY_ATTRIBUTE_PRIVATE`] or 0 for shared).
    pub attributes: u64,
    /// Must be 0.
    pub flags: u64,
}

/// `struct kvm_exit_snp_req_certs` in `kvm_run` (24 bytes, Linux 7.0+).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmExitSnpReqCerts {
    /// Guest buffer for the certificate table (4 KiB aligned).
    pub gpa: u64,
    /// Its size in pages.
    pub npages: u64,
    /// Set by user space: 0, ENOSPC, EAGAIN or EIO.
    pub ret: u64,
}

/// `struct kvm_device_attr`, the argument of `KVM_HAS_DEVICE_ATTR` / `KVM_GET_DEVICE_ATTR`
/// (24 bytes). On /dev/kvm, group [`KVM_X86_GRP_SEV`] holds the SEV attributes; GET writes
/// a `u64` at `addr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmDeviceAttr {
    /// Must be 0.
    pub flags: u32,
    /// Attribute group.
    pub group: u32,
    /// Attribute within the group.
    pub attr: u64,
    /// User address of the value (GET) or 0 (HAS).
    pub addr: u64,
}

/// `_IOC` encoding of an ioctl request number (asm-generic/ioctl.h).
pub const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const KVMIO: u64 = 0xAE;

/// `KVM_MEMORY_ENCRYPT_OP`: `_IOWR(KVMIO, 0xba, unsigned long)`.
pub const KVM_MEMORY_ENCRYPT_OP: u64 = ioc(IOC_READ | IOC_WRITE, KVMIO, 0xba, 8);
/// `KVM_SET_USER_MEMORY_REGION2`: `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)`.
pub const KVM_SET_USER_MEMORY_REGION2: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0x49,
    std::mem::size_of::<KvmUserspaceMemoryRegion2>() as u64,
);
/// `KVM_SET_MEMORY_ATTRIBUTES`: `_IOW(KVMIO, 0xd2, struct kvm_memory_attributes)`.
pub const KVM_SET_MEMORY_ATTRIBUTES: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0xd2,
    std::mem::size_of::<KvmMemoryAttributes>() as u64,
);
/// `KVM_CREATE_GUEST_MEMFD`: `_IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)`.
pub const KVM_CREATE_GUEST_MEMFD: u64 = ioc(
    IOC_READ | IOC_WRITE,
    KVMIO,
    0xd4,
    std::mem::size_of::<KvmCreateGuestMemfd>() as u64,
);
/// `KVM_GET_DEVICE_ATTR`: `_IOW(KVMIO, 0xe2, struct kvm_device_attr)`.
pub const KVM_GET_DEVICE_ATTR: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0xe2,
    std::mem::size_of::<KvmDeviceAttr>() as u64,
);
/// `KVM_HAS_DEVICE_ATTR`: `_IOW(KVMIO, 0xe3, struct kvm_device_attr)`.
pub const KVM_HAS_DEVICE_ATTR: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0xe3,
    std::mem::size_of::<KvmDeviceAttr>() as u64,
);

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn kvm_sev_cmd_matches_the_kernel() {
        assert_eq!(size_of::<KvmSevCmd>(), 24);
        assert_eq!(offset_of!(KvmSevCmd, id), 0);
        assert_eq!(offset_of!(KvmSevCmd, data), 8);
        assert_eq!(offset_of!(KvmSevCmd, error), 16);
        assert_eq!(offset_of!(KvmSevCmd, sev_fd), 20);
    }

    #[test]
    fn kvm_sev_init_matches_the_kernel() {
        assert_eq!(size_of::<KvmSevInit>(), 48);
        assert_eq!(offset_of!(KvmSevInit, vmsa_features), 0);
        assert_eq!(offset_of!(KvmSevInit, flags), 8);
        assert_eq!(offset_of!(KvmSevInit, ghcb_version), 12);
        assert_eq!(offset_of!(KvmSevInit, pad1), 14);
        assert_eq!(offset_of!(KvmSevInit, pad2), 16);
    }

    #[test]
    fn launch_start_matches_the_kernel() {
        assert_eq!(size_of::<KvmSevSnpLaunchStart>(), 64);
        assert_eq!(offset_of!(KvmSevSnpLaunchStart, policy), 0);
        assert_eq!(offset_of!(KvmSevSnpLaunchStart, gosvw), 8);
        assert_eq!(offset_of!(KvmSevSnpLaunchStart, flags), 24);
        assert_eq!(offset_of!(KvmSevSnpLaunchStart, pad0), 26);
        assert_eq!(offset_of!(KvmSevSnpLaunchStart, pad1), 32);
    }

    #[test]
    fn launch_update_matches_the_kernel() {
        assert_eq!(size_of::<KvmSevSnpLaunchUpdate>(), 64);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, gfn_start), 0);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, uaddr), 8);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, len), 16);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, type_), 24);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, pad0), 25);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, flags), 26);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, pad1), 28);
        assert_eq!(offset_of!(KvmSevSnpLaunchUpdate, pad2), 32);
    }

    /// The layout the `sev` crate (7.x/8.x) gets wrong: 88 bytes, vcek_disabled at 18,
    /// host_data at 19, flags at 54.
    #[test]
    fn launch_finish_matches_the_kernel_not_the_sev_crate() {
        assert_eq!(size_of::<KvmSevSnpLaunchFinish>(), 88);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, id_block_uaddr), 0);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, id_auth_uaddr), 8);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, id_block_en), 16);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, auth_key_en), 17);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, vcek_disabled), 18);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, host_data), 19);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, pad0), 51);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, flags), 54);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, pad1), 56);
    }

    #[test]
    fn guest_memfd_region2_and_attributes_match_the_kernel() {
        assert_eq!(size_of::<KvmCreateGuestMemfd>(), 64);
        assert_eq!(offset_of!(KvmCreateGuestMemfd, flags), 8);
        assert_eq!(offset_of!(KvmCreateGuestMemfd, reserved), 16);
        assert_eq!(size_of::<KvmUserspaceMemoryRegion2>(), 160);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, flags), 4);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, guest_phys_addr), 8);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, memory_size), 16);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, userspace_addr), 24);
        assert_eq!(
            offset_of!(KvmUserspaceMemoryRegion2, guest_memfd_offset),
            32
        );
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, guest_memfd), 40);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, pad1), 44);
        assert_eq!(offset_of!(KvmUserspaceMemoryRegion2, pad2), 48);
        assert_eq!(size_of::<KvmMemoryAttributes>(), 32);
        assert_eq!(offset_of!(KvmMemoryAttributes, size), 8);
        assert_eq!(offset_of!(KvmMemoryAttributes, attributes), 16);
        assert_eq!(offset_of!(KvmMemoryAttributes, flags), 24);
        assert_eq!(size_of::<KvmExitSnpReqCerts>(), 24);
        assert_eq!(offset_of!(KvmExitSnpReqCerts, ret), 16);
    }

    /// The request numbers SNP-FACTS §1.3 computed from the _IOC encoding.
    #[test]
    fn ioctl_numbers_match_the_kernel() {
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, 0xC008_AEBA);
        assert_eq!(KVM_SET_USER_MEMORY_REGION2, 0x40A0_AE49);
        assert_eq!(KVM_SET_MEMORY_ATTRIBUTES, 0x4020_AED2);
        assert_eq!(KVM_CREATE_GUEST_MEMFD, 0xC040_AED4);
        assert_eq!(KVM_GET_DEVICE_ATTR, 0x4018_AEE2);
        assert_eq!(KVM_HAS_DEVICE_ATTR, 0x4018_AEE3);
    }

    #[test]
    fn device_attr_matches_the_kernel() {
        assert_eq!(size_of::<KvmDeviceAttr>(), 24);
        assert_eq!(offset_of!(KvmDeviceAttr, flags), 0);
        assert_eq!(offset_of!(KvmDeviceAttr, group), 4);
        assert_eq!(offset_of!(KvmDeviceAttr, attr), 8);
        assert_eq!(offset_of!(KvmDeviceAttr, addr), 16);
    }

    /// The `sev` crate's launch-finish struct cannot be named from here (sev 8.0.0 keeps
    /// it in `src/launch/linux/snp.rs`, and the module `launch::linux` is private), so
    /// its layout is pinned from that source as read: a `repr(C)` struct of the two ID
    /// block addresses (u64 each), the two enable bytes, then 32 bytes of host data and 6
    /// of padding — the pre-merge layout, 56 bytes, host data at 18, with no
    /// vcek_disabled and no flags. The kernel reads 88 bytes with vcek_disabled at 18 and
    /// host_data at 19 (SNP-FACTS §2.1, §6.1). This test pins the difference and what the
    /// kernel makes of the crate's bytes.
    #[test]
    fn launch_finish_differs_from_the_sev_crate() {
        const SEV_CRATE_SIZE: usize = 8 + 8 + 1 + 1 + 32 + 6;
        const SEV_CRATE_HOST_DATA: usize = 8 + 8 + 1 + 1;
        assert_eq!((SEV_CRATE_SIZE, SEV_CRATE_HOST_DATA), (56, 18));
        assert_eq!(size_of::<KvmSevSnpLaunchFinish>(), 88);
        assert_eq!(offset_of!(KvmSevSnpLaunchFinish, host_data), 19);
        assert_eq!(
            offset_of!(KvmSevSnpLaunchFinish, vcek_disabled),
            SEV_CRATE_HOST_DATA
        );

        // The crate's bytes for host_data 01 02 .. 20, as the kernel reads them (88 bytes:
        // the 32 past the crate's struct are whatever follows it; zero here).
        let host_data: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let mut kernel_view = [0u8; 88];
        kernel_view[SEV_CRATE_HOST_DATA..SEV_CRATE_HOST_DATA + 32].copy_from_slice(&host_data);
        let vcek_disabled = kernel_view[offset_of!(KvmSevSnpLaunchFinish, vcek_disabled)];
        let hd = offset_of!(KvmSevSnpLaunchFinish, host_data);
        let reported = &kernel_view[hd..hd + 32];
        // host_data[0] = 1 becomes VCEK_DISABLED, and HOST_DATA is shifted by one byte.
        assert_eq!(vcek_disabled, 1);
        assert_eq!(&reported[..31], &host_data[1..]);
        assert_eq!(reported[31], 0);
    }

    /// Our structs and kvm-bindings' agree where kvm-bindings has them.
    #[test]
    fn kvm_bindings_agree_where_they_overlap() {
        assert_eq!(
            size_of::<KvmUserspaceMemoryRegion2>(),
            size_of::<kvm_bindings::kvm_userspace_memory_region2>()
        );
        assert_eq!(
            size_of::<KvmMemoryAttributes>(),
            size_of::<kvm_bindings::kvm_memory_attributes>()
        );
        assert_eq!(
            size_of::<KvmCreateGuestMemfd>(),
            size_of::<kvm_bindings::kvm_create_guest_memfd>()
        );
        assert_eq!(
            size_of::<KvmSevCmd>(),
            size_of::<kvm_bindings::kvm_sev_cmd>()
        );
        assert_eq!(
            size_of::<KvmDeviceAttr>(),
            size_of::<kvm_bindings::kvm_device_attr>()
        );
    }
}
