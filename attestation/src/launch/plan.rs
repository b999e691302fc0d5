//! The launch plan: everything loaded into an SEV-SNP guest before it runs, in order.
//!
//! A [`LaunchPlan`] is an ordered list of [`LaunchRegion`]s (GPA, page type, contents)
//! plus the launch parameters (guest policy, host data, optional ID block). It is the one
//! value both consumers read, in the same order:
//!
//! - the launch-digest engine ([`LaunchPlan::measure`]) for `cloister measure`;
//! - a launch backend (real SNP or the simulated platform), which walks
//!   [`LaunchPlan::regions`] (or page by page, [`LaunchPlan::pages`]) and issues one
//!   `SNP_LAUNCH_UPDATE` per region with its page type, copying the region's contents into
//!   guest memory first. VMSA regions carry the vCPU index they belong to; a KVM backend
//!   hands them to the vCPU (KVM adds VMSAs itself at `SNP_LAUNCH_FINISH`, after every
//!   other region, which is why they come last in the plan). Upstream KVM builds each
//!   VMSA from the vCPU's register state (`sev_es_sync_vmsa`), so a KVM backend sets the
//!   registers from [`LaunchRegion::vmsa_state`] and checks, through the digest, that KVM
//!   produced the same page; the simulated platform takes the page bytes as they are.
//!
//! Region contents:
//! - NORMAL and VMSA: the exact bytes ([`RegionContents::Bytes`]), measured by SHA-384.
//! - ZERO, SECRETS, UNMEASURED, CPUID: [`RegionContents::Zeroes`]; the firmware zeroes
//!   or fills them. A backend must write its CPUID table into CPUID pages before
//!   launching them (the firmware checks it; it is not measured), and leave secrets
//!   pages to the firmware.
//!
//! Builders: [`qemu_ovmf_plan`] reproduces what QEMU with OVMF asks the firmware to load
//! (the order of QEMU's `target/i386/sev.c` and OVMF's metadata, as sev-snp-measure
//! models it): the OVMF image, then the SEV metadata sections in the order OVMF lists them,
//! then one VMSA per vCPU.

use super::digest::{LaunchDigest, PageType, LD_SIZE, PAGE_SIZE, VMSA_GPA};
use super::vmsa::{Vmsa, BSP_RESET_EIP};
use cloister_firmware::{OvmfImage, SectionKind, SevHashes};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// Default guest policy: SMT allowed (bit 16) and the must-be-one bit 17, ABI 0.0.
pub const DEFAULT_GUEST_POLICY: u64 = 0x3_0000;
/// Default SEV features: SNP active only (sev-snp-measure's `--guest-features` default).
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;
/// Largest vCPU count a plan accepts.
pub const MAX_VCPUS: u32 = 4096;

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A region's GPA is not page aligned.
    #[error("{role} region GPA {gpa:#x} is not 4 KiB aligned")]
    UnalignedGpa {
        /// The region's role.
        role: RegionRole,
        /// Its GPA.
        gpa: u64,
    },
    /// A region is empty, not a whole number of pages, or runs past the 64-bit space.
    #[error("{role} region at {gpa:#x} has length {len:#x}; it must be a non-zero multiple of 4096 inside the address space")]
    BadLength {
        /// The region's role.
        role: RegionRole,
        /// Its GPA.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// NORMAL/VMSA pages without bytes, or bytes of the wrong length.
    #[error("{role} region of type {page_type:?} needs {len} bytes of contents, got {got}")]
    BadContents {
        /// The region's role.
        role: RegionRole,
        /// Its page type.
        page_type: PageType,
        /// Its length.
        len: u64,
        /// Bytes given (0 when none).
        got: usize,
    },
    /// A VMSA region that is not a single page at the VMSA GPA.
    #[error("the VMSA of vCPU {vcpu} must be one page at GPA {VMSA_GPA:#x}")]
    BadVmsa {
        /// The vCPU.
        vcpu: u32,
    },
    /// vCPU count out of range.
    #[error("vCPU count {0} is out of range (1..={MAX_VCPUS})")]
    VcpuCount(u32),
    /// The firmware has no SEV metadata, so it cannot run as an SEV-SNP guest.
    #[error("the OVMF image has no SEV metadata sections: it is not built for SEV-SNP (use an OVMF with SNP support, e.g. Debian's /usr/share/ovmf/OVMF.fd or OvmfPkg/AmdSev)")]
    NoSevMetadata,
    /// The firmware has no SEV-ES reset block, so APs have no start address.
    #[error("the OVMF image has no SEV-ES reset block (GUID 00f771de-1a7e-4fcb-890e-68c77e2fb44e), so vCPUs cannot be started under SEV-SNP")]
    NoResetBlock,
    /// A kernel was given but the firmware cannot check it.
    #[error("a kernel was given but the OVMF image has no SNP kernel-hashes section, so it cannot verify a directly booted kernel (use an OVMF built from OvmfPkg/AmdSev)")]
    NoKernelHashesSection,
    /// The kernel-hashes section exists but the table location is missing or outside it.
    #[error("the OVMF SEV hashes table location ({location}) is not inside its kernel-hashes section at {section_gpa:#x}..{section_end:#x}")]
    HashesTableOutsideSection {
        /// The table location found (or "missing").
        location: String,
        /// Section start.
        section_gpa: u64,
        /// Section end.
        section_end: u64,
    },
}

/// What a region is for (where its bytes come from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionRole {
    /// The firmware image.
    Firmware,
    /// An SEV metadata section of the firmware.
    Section(SectionKind),
    /// The VMSA of one vCPU.
    Vmsa {
        /// vCPU index (0 is the BSP).
        vcpu: u32,
    },
    /// Something a custom layout adds (a kernel, boot parameters, page tables...).
    Other(&'static str),
}

impl fmt::Display for RegionRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionRole::Firmware => f.write_str("firmware"),
            RegionRole::Section(kind) => write!(f, "{kind} section"),
            RegionRole::Vmsa { vcpu } => write!(f, "vCPU {vcpu} VMSA"),
            RegionRole::Other(what) => f.write_str(what),
        }
    }
}

/// The bytes of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionContents<'a> {
    /// Exactly the region's bytes (borrowed, e.g. the firmware file, or owned).
    Bytes(Cow<'a, [u8]>),
    /// No bytes: the pages are zero, or filled by the firmware or the backend (see the
    /// module documentation).
    Zeroes,
}

/// A run of pages of one type, loaded and measured in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRegion<'a> {
    gpa: u64,
    len: u64,
    page_type: PageType,
    role: RegionRole,
    contents: RegionContents<'a>,
    vmsa: Option<Box<Vmsa>>,
}

impl<'a> LaunchRegion<'a> {
    /// A region; checked here, so a built region is a valid one: GPA aligned, length a
    /// non-zero multiple of 4096, bytes present (and of that length) exactly for NORMAL
    /// and VMSA pages, VMSAs one page at [`VMSA_GPA`].
    pub fn new(
        gpa: u64,
        len: u64,
        page_type: PageType,
        role: RegionRole,
        contents: RegionContents<'a>,
    ) -> Result<Self, PlanError> {
        if !gpa.is_multiple_of(PAGE_SIZE as u64) {
            return Err(PlanError::UnalignedGpa { role, gpa });
        }
        if len == 0 || !len.is_multiple_of(PAGE_SIZE as u64) || gpa.checked_add(len).is_none() {
            return Err(PlanError::BadLength { role, gpa, len });
        }
        let got = match &contents {
            RegionContents::Bytes(b) => Some(b.len()),
            RegionContents::Zeroes => None,
        };
        let ok = match got {
            Some(n) => page_type.contents_measured() && u64::try_from(n) == Ok(len),
            None => !page_type.contents_measured(),
        };
        if !ok {
            return Err(PlanError::BadContents {
                role,
                page_type,
                len,
                got: got.unwrap_or(0),
            });
        }
        if page_type == PageType::Vmsa || matches!(role, RegionRole::Vmsa { .. }) {
            let vcpu = match role {
                RegionRole::Vmsa { vcpu } => vcpu,
                _ => u32::MAX,
            };
            if page_type != PageType::Vmsa
                || gpa != VMSA_GPA
                || len != PAGE_SIZE as u64
                || vcpu == u32::MAX
            {
                return Err(PlanError::BadVmsa { vcpu });
            }
        }
        Ok(LaunchRegion {
            gpa,
            len,
            page_type,
            role,
            contents,
            vmsa: None,
        })
    }

    /// A VMSA region for `vcpu`.
    pub fn vmsa(vcpu: u32, vmsa: &Vmsa) -> Self {
        let page: Box<[u8]> = vmsa.to_page();
        LaunchRegion {
            gpa: VMSA_GPA,
            len: PAGE_SIZE as u64,
            page_type: PageType::Vmsa,
            role: RegionRole::Vmsa { vcpu },
            contents: RegionContents::Bytes(Cow::Owned(page.into_vec())),
            vmsa: Some(Box::new(*vmsa)),
        }
    }

    /// For regions made by [`LaunchRegion::vmsa`], the register state the page encodes
    /// (what a KVM backend loads into the vCPU).
    pub fn vmsa_state(&self) -> Option<&Vmsa> {
        self.vmsa.as_deref()
    }

    /// First GPA (for VMSAs, the GPA the firmware measures them at).
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: regions hold at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// SNP page type.
    pub fn page_type(&self) -> PageType {
        self.page_type
    }

    /// What the region is for.
    pub fn role(&self) -> RegionRole {
        self.role
    }

    /// Its contents.
    pub fn contents(&self) -> &RegionContents<'a> {
        &self.contents
    }

    /// The bytes, if the region carries any.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.contents {
            RegionContents::Bytes(b) => Some(b),
            RegionContents::Zeroes => None,
        }
    }

    /// Number of pages.
    pub fn page_count(&self) -> u64 {
        self.len / PAGE_SIZE as u64
    }
}

/// One page of a plan, as a backend or the digest engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchPage<'p> {
    /// GPA of the page (for VMSAs, [`VMSA_GPA`]).
    pub gpa: u64,
    /// SNP page type.
    pub page_type: PageType,
    /// What the page belongs to.
    pub role: RegionRole,
    /// The 4096 bytes for NORMAL and VMSA pages; `None` for the others.
    pub contents: Option<&'p [u8]>,
}

/// The ID block and its authentication structure, passed to SNP_LAUNCH_FINISH as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlockAndAuth {
    /// The 96-byte ID block.
    pub id_block: Box<[u8; 96]>,
    /// The 4096-byte ID authentication information structure.
    pub id_auth: Box<[u8; 4096]>,
    /// Whether the author key in `id_auth` is used (AUTHOR_KEY_EN).
    pub author_key_enabled: bool,
}

/// The launch plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan<'a> {
    regions: Vec<LaunchRegion<'a>>,
    vcpus: u32,
    /// Guest policy for SNP_LAUNCH_START.
    pub policy: u64,
    /// HOST_DATA for SNP_LAUNCH_FINISH (reported back in attestation reports).
    pub host_data: [u8; 32],
    /// Optional ID block and auth for SNP_LAUNCH_FINISH.
    pub id_block: Option<IdBlockAndAuth>,
}

/// Counts of what a plan loads, for summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSummary {
    /// Pages per type name (types with no pages are listed with 0).
    pub pages_by_type: BTreeMap<&'static str, u64>,
    /// Bytes whose contents are hashed into the digest (NORMAL and VMSA pages).
    pub bytes_measured: u64,
    /// Total pages.
    pub pages: u64,
    /// Number of regions.
    pub regions: usize,
    /// Number of vCPUs (VMSAs).
    pub vcpus: u32,
}

impl<'a> LaunchPlan<'a> {
    /// A plan from regions already in launch order. `vcpus` must equal the number of VMSA
    /// regions, numbered 0.. in order.
    pub fn new(regions: Vec<LaunchRegion<'a>>, vcpus: u32) -> Result<Self, PlanError> {
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(PlanError::VcpuCount(vcpus));
        }
        let mut next = 0u32;
        for r in &regions {
            if let RegionRole::Vmsa { vcpu } = r.role {
                if vcpu != next {
                    return Err(PlanError::BadVmsa { vcpu });
                }
                next += 1;
            }
        }
        if next != vcpus {
            return Err(PlanError::BadVmsa { vcpu: next });
        }
        Ok(LaunchPlan {
            regions,
            vcpus,
            policy: DEFAULT_GUEST_POLICY,
            host_data: [0; 32],
            id_block: None,
        })
    }

    /// The regions, in launch order.
    pub fn regions(&self) -> &[LaunchRegion<'a>] {
        &self.regions
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// Every page, in launch order.
    pub fn pages(&self) -> impl Iterator<Item = LaunchPage<'_>> + '_ {
        self.regions.iter().flat_map(|r| {
            (0..r.page_count()).map(move |i| {
                let at = usize::try_from(i)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(PAGE_SIZE);
                LaunchPage {
                    gpa: if r.page_type == PageType::Vmsa {
                        r.gpa
                    } else {
                        r.gpa + i * PAGE_SIZE as u64
                    },
                    page_type: r.page_type,
                    role: r.role,
                    contents: r.bytes().and_then(|b| b.get(at..at + PAGE_SIZE)),
                }
            })
        })
    }

    /// Feeds every page, in order, into `digest`.
    pub fn measure_into(&self, digest: &mut LaunchDigest) {
        for region in &self.regions {
            match region.bytes() {
                Some(bytes) => {
                    for (i, page) in bytes.chunks_exact(PAGE_SIZE).enumerate() {
                        let gpa = if region.page_type == PageType::Vmsa {
                            region.gpa
                        } else {
                            region.gpa + (i * PAGE_SIZE) as u64
                        };
                        let contents = super::digest::sha384(page);
                        digest.update_with_contents_hash(region.page_type, gpa, contents);
                    }
                }
                None => {
                    for i in 0..region.page_count() {
                        digest.update_with_contents_hash(
                            region.page_type,
                            region.gpa + i * PAGE_SIZE as u64,
                            [0; LD_SIZE],
                        );
                    }
                }
            }
        }
    }

    /// The launch digest the firmware will compute for this plan.
    pub fn measure(&self) -> [u8; LD_SIZE] {
        let mut d = LaunchDigest::new();
        self.measure_into(&mut d);
        d.digest()
    }

    /// What the plan loads, counted.
    pub fn summary(&self) -> PlanSummary {
        let mut pages_by_type: BTreeMap<&'static str, u64> =
            PageType::ALL.iter().map(|t| (t.name(), 0)).collect();
        let mut bytes_measured = 0;
        let mut pages = 0;
        for r in &self.regions {
            *pages_by_type.entry(r.page_type.name()).or_default() += r.page_count();
            pages += r.page_count();
            if r.page_type.contents_measured() {
                bytes_measured += r.len;
            }
        }
        PlanSummary {
            pages_by_type,
            bytes_measured,
            pages,
            regions: self.regions.len(),
            vcpus: self.vcpus,
        }
    }
}

/// Which hypervisor's launch conventions to reproduce (sev-snp-measure's `--vmm-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmType {
    /// QEMU with KVM.
    #[default]
    Qemu,
    /// Amazon EC2: CPUID pages launched after all other sections; its reset VMSA values.
    Ec2,
    /// Google Compute Engine: SEC memory unmeasured; its reset VMSA values.
    Gce,
}

/// Inputs of the QEMU + OVMF layout beside the firmware image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuOvmfParams {
    /// Number of vCPUs.
    pub vcpus: u32,
    /// CPUID(1).EAX signature of the vCPU model (see [`super::cpu_types`]).
    pub vcpu_signature: u32,
    /// SEV_FEATURES for every VMSA.
    pub guest_features: u64,
    /// Hashes of the kernel, initrd and command line for measured direct boot.
    pub kernel_hashes: Option<SevHashes>,
    /// The hypervisor flavour.
    pub vmm: VmmType,
}

/// Builds the plan QEMU with OVMF loads: the OVMF image (NORMAL pages ending at 4 GiB);
/// the SEV metadata sections in the order OVMF lists them (SEC memory as ZERO pages,
/// secrets, CPUID, the kernel-hashes page as NORMAL with the SEV hashes table at its GPA
/// when a kernel is given and as ZERO otherwise, the SVSM calling area as ZERO); then a
/// VMSA per vCPU (BSP at the reset vector, APs at the SEV-ES reset block address).
pub fn qemu_ovmf_plan<'a>(
    ovmf: &OvmfImage<'a>,
    params: &QemuOvmfParams,
) -> Result<LaunchPlan<'a>, PlanError> {
    if params.vcpus == 0 || params.vcpus > MAX_VCPUS {
        return Err(PlanError::VcpuCount(params.vcpus));
    }
    if ovmf.sections().is_empty() {
        return Err(PlanError::NoSevMetadata);
    }
    let ap_eip = ovmf.sev_es_reset_eip().ok_or(PlanError::NoResetBlock)?;
    if params.kernel_hashes.is_some() && !ovmf.has_section(SectionKind::KernelHashes) {
        return Err(PlanError::NoKernelHashesSection);
    }
    let image = ovmf.bytes();
    let mut regions = vec![LaunchRegion::new(
        ovmf.gpa(),
        image.len() as u64,
        PageType::Normal,
        RegionRole::Firmware,
        RegionContents::Bytes(Cow::Borrowed(image)),
    )?];
    let mut cpuid_last = Vec::new();
    for s in ovmf.sections() {
        let (gpa, len, role) = (
            u64::from(s.gpa),
            u64::from(s.size),
            RegionRole::Section(s.kind),
        );
        let zeroes = |t| LaunchRegion::new(gpa, len, t, role, RegionContents::Zeroes);
        let region = match s.kind {
            SectionKind::SecMemory if params.vmm == VmmType::Gce => zeroes(PageType::Unmeasured)?,
            SectionKind::SecMemory | SectionKind::SvsmCaa => zeroes(PageType::Zero)?,
            SectionKind::Secrets => zeroes(PageType::Secrets)?,
            SectionKind::Cpuid if params.vmm == VmmType::Ec2 => {
                cpuid_last.push(zeroes(PageType::Cpuid)?);
                continue;
            }
            SectionKind::Cpuid => zeroes(PageType::Cpuid)?,
            SectionKind::KernelHashes => match &params.kernel_hashes {
                None => zeroes(PageType::Zero)?,
                Some(hashes) => {
                    let outside = |location: String| PlanError::HashesTableOutsideSection {
                        location,
                        section_gpa: gpa,
                        section_end: s.end(),
                    };
                    let table = ovmf
                        .sev_hashes_table()
                        .ok_or_else(|| outside("missing".to_string()))?;
                    let table_gpa = u64::from(table.gpa);
                    let table_end =
                        table_gpa + cloister_firmware::sev_hashes::PADDED_TABLE_SIZE as u64;
                    if table_gpa < gpa || table_end > s.end() {
                        return Err(outside(format!("{table_gpa:#x}..{table_end:#x}")));
                    }
                    let mut bytes = vec![0u8; s.size as usize];
                    let at = (table_gpa - gpa) as usize;
                    bytes[at..at + cloister_firmware::sev_hashes::PADDED_TABLE_SIZE]
                        .copy_from_slice(&hashes.table());
                    LaunchRegion::new(
                        gpa,
                        len,
                        PageType::Normal,
                        role,
                        RegionContents::Bytes(Cow::Owned(bytes)),
                    )?
                }
            },
        };
        regions.push(region);
    }
    regions.extend(cpuid_last);
    let reset = |eip: u32| match params.vmm {
        VmmType::Qemu => Vmsa::qemu_reset(eip, params.vcpu_signature, params.guest_features),
        VmmType::Ec2 => Vmsa::ec2_reset(eip, params.guest_features),
        VmmType::Gce => Vmsa::gce_reset(eip, params.guest_features),
    };
    let bsp = reset(BSP_RESET_EIP);
    let ap = reset(ap_eip);
    for vcpu in 0..params.vcpus {
        regions.push(LaunchRegion::vmsa(vcpu, if vcpu == 0 { &bsp } else { &ap }));
    }
    LaunchPlan::new(regions, params.vcpus)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use cloister_firmware::synthetic::SyntheticOvmf;
    use cloister_firmware::GpaRange;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn params(vcpus: u32, sig: u32, features: u64) -> QemuOvmfParams {
        QemuOvmfParams {
            vcpus,
            vcpu_signature: sig,
            guest_features: features,
            kernel_hashes: None,
            vmm: VmmType::Qemu,
        }
    }

    #[test]
    fn debian_ovmf_digest_matches_sev_snp_measure() {
        let bytes = std::fs::read("/usr/share/ovmf/OVMF.fd")
            .expect("Debian's /usr/share/ovmf/OVMF.fd is required (apt-get install ovmf)");
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        // `sev-snp-measure --mode snp --vcpus 2 --vcpu-type EPYC-v4 --ovmf OVMF.fd` and
        // `--vcpus 1 --vcpu-type EPYC-Milan --guest-features 0x21` (version 0.0.13,
        // Debian ovmf 2022.11-6+deb12u2).
        let plan = qemu_ovmf_plan(&ovmf, &params(2, 0x80_0f12, 1)).unwrap();
        assert_eq!(
            hex(&plan.measure()),
            "a5b54e62ae971b58274dd24cc6c47b842662617036e7bd67d7326c07ac6363f35399ef933330a5ea160cead90a00603f"
        );
        // VMSAs come last, numbered, with the BSP at the reset vector and APs at OVMF's
        // SEV-ES reset block address (0x80b004 in this image).
        let vmsas: Vec<_> = plan.regions().iter().rev().take(2).collect();
        assert_eq!(vmsas[1].role(), RegionRole::Vmsa { vcpu: 0 });
        assert_eq!(vmsas[1].vmsa_state().unwrap().rip, 0xfff0);
        assert_eq!(vmsas[0].role(), RegionRole::Vmsa { vcpu: 1 });
        assert_eq!(vmsas[0].vmsa_state().unwrap().rip, 0xb004);
        assert_eq!(vmsas[0].vmsa_state().unwrap().cs.base, 0x80_0000);
        let plan = qemu_ovmf_plan(&ovmf, &params(1, 0xa0_0f11, 0x21)).unwrap();
        assert_eq!(
            hex(&plan.measure()),
            "179c6ad39ad318c8c8d18444634df7217b63695830f1cde0b2f01fe53d2cd2f4d39207f50bf659554e2f5ec4ee0f72b6"
        );
        let s = plan.summary();
        assert_eq!(s.pages_by_type["vmsa"], 1);
        assert_eq!(s.pages_by_type["normal"], 512);
        assert_eq!(s.pages_by_type["secrets"], 1);
        assert_eq!(s.pages_by_type["cpuid"], 1);
        assert_eq!(s.bytes_measured, (512 + 1) * 4096);
    }

    #[test]
    fn pages_iterate_in_the_order_measured() {
        let bytes = synthetic().build().unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        let mut p = params(3, 0x80_0f12, 1);
        p.kernel_hashes = Some(SevHashes::from_contents(b"kernel", None, b"console=ttyS0"));
        let plan = qemu_ovmf_plan(&ovmf, &p).unwrap();
        // Walking pages one by one through the digest gives the same result as measure().
        let mut d = LaunchDigest::new();
        let mut last_type = None;
        for page in plan.pages() {
            d.update_page(page.page_type, page.gpa, page.contents)
                .unwrap();
            last_type = Some(page.page_type);
        }
        assert_eq!(d.digest(), plan.measure());
        assert_eq!(last_type, Some(PageType::Vmsa));
        // The kernel hashes page carries the table at the table GPA's offset.
        let hashes = plan
            .regions()
            .iter()
            .find(|r| r.role() == RegionRole::Section(SectionKind::KernelHashes))
            .unwrap();
        assert_eq!(hashes.page_type(), PageType::Normal);
        assert_eq!(
            &hashes.bytes().unwrap()[0xc00..0xc10],
            cloister_firmware::guid::SEV_HASH_TABLE_HEADER.as_bytes()
        );
    }

    fn synthetic() -> SyntheticOvmf {
        SyntheticOvmf {
            sev_secret_block: None,
            ..SyntheticOvmf::amd_sev_minimal(128 * 1024, 7)
        }
    }

    #[test]
    fn refuses_what_cannot_launch() {
        let mut no_hashes = synthetic();
        no_hashes.sections.as_mut().unwrap().pop();
        let bytes = no_hashes.build().unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        let mut p = params(1, 0, 1);
        p.kernel_hashes = Some(SevHashes::from_contents(b"k", None, b""));
        assert_eq!(
            qemu_ovmf_plan(&ovmf, &p),
            Err(PlanError::NoKernelHashesSection)
        );
        assert_eq!(
            qemu_ovmf_plan(&ovmf, &params(0, 0, 1)),
            Err(PlanError::VcpuCount(0))
        );

        let mut no_reset = synthetic();
        no_reset.sev_es_reset_eip = None;
        let bytes = no_reset.build().unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        assert_eq!(
            qemu_ovmf_plan(&ovmf, &params(1, 0, 1)),
            Err(PlanError::NoResetBlock)
        );

        let mut no_meta = synthetic();
        no_meta.sections = None;
        let bytes = no_meta.build().unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        assert_eq!(
            qemu_ovmf_plan(&ovmf, &params(1, 0, 1)),
            Err(PlanError::NoSevMetadata)
        );

        let mut table_outside = synthetic();
        table_outside.sev_hashes_table = Some(GpaRange {
            gpa: 0x80_ff80,
            size: 0x400,
        });
        let bytes = table_outside.build().unwrap();
        let ovmf = OvmfImage::parse(&bytes).unwrap();
        let mut p = params(1, 0, 1);
        p.kernel_hashes = Some(SevHashes::from_contents(b"k", None, b""));
        assert!(matches!(
            qemu_ovmf_plan(&ovmf, &p),
            Err(PlanError::HashesTableOutsideSection { .. })
        ));
    }

    #[test]
    fn regions_validate_themselves() {
        let r = |gpa, len, t, c| LaunchRegion::new(gpa, len, t, RegionRole::Other("test"), c);
        assert!(r(0x1001, 4096, PageType::Zero, RegionContents::Zeroes).is_err());
        assert!(r(0x1000, 100, PageType::Zero, RegionContents::Zeroes).is_err());
        assert!(r(0x1000, 4096, PageType::Normal, RegionContents::Zeroes).is_err());
        assert!(r(
            0x1000,
            8192,
            PageType::Normal,
            RegionContents::Bytes(Cow::Owned(vec![0; 4096]))
        )
        .is_err());
        assert!(r(
            0x1000,
            4096,
            PageType::Zero,
            RegionContents::Bytes(Cow::Owned(vec![0; 4096]))
        )
        .is_err());
        assert!(r(
            0x1000,
            4096,
            PageType::Vmsa,
            RegionContents::Bytes(Cow::Owned(vec![0; 4096]))
        )
        .is_err());
        assert!(r(!0xfff, 8192, PageType::Zero, RegionContents::Zeroes).is_err());
        // A plan's VMSAs must be numbered 0.. and match the vCPU count.
        let v = LaunchRegion::vmsa(1, &Vmsa::default());
        assert_eq!(
            LaunchPlan::new(vec![v], 1),
            Err(PlanError::BadVmsa { vcpu: 1 })
        );
    }
}
