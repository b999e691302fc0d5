//! Cloister's own direct-boot layout as a [`LaunchPlan`]: everything `cloister run`
//! loads into a guest, in launch order, and what `cloister measure --layout cloister`
//! measures. One builder for both, so the prediction is the launch by construction.
//!
//! The structures are written into a scratch guest memory (an anonymous mapping of the
//! guest's size, of which only the written pages become resident) by the same loaders
//! the monitor always used, and then cut into regions:
//!
//! | GPA | what | page type |
//! |---|---|---|
//! | 0x0000 | boot GDT and IDT | NORMAL |
//! | 0x6000 | setup_data node (SETUP_CC_BLOB) and the CC blob (SNP platforms) | NORMAL |
//! | 0x7000 | zero page (boot_params, e820) | NORMAL |
//! | 0x9000-0xbfff | identity page tables (C-bit set on `snp`) | NORMAL |
//! | 0x20000 | command line | NORMAL |
//! | 0x9f000 | MP table (EBDA) | NORMAL |
//! | 0xe0000 | ACPI tables | NORMAL |
//! | 0x100000 | kernel | NORMAL |
//! | high in low RAM | initrd | NORMAL |
//! | 0x4000 | CPUID page (SNP platforms) | CPUID |
//! | 0x5000 | secrets page (SNP platforms) | SECRETS |
//! | every other e820 RAM page | zeroes | ZERO |
//! | — | one VMSA per vCPU | VMSA |
//!
//! Every RAM page is launched (ZERO pages are launched validated), because Linux booted
//! without UEFI cannot be told about unaccepted memory (SNP-FACTS §3.1): correct, and slow
//! on real hardware for large guests; the boot verifier of the next step removes that.
//!
//! Platform differences in measured bytes: on `snp` the page-table entries carry the
//! C-bit (bit 51 on Milan, Genoa and Turin), on `sim` and `none` they cannot (a plain KVM
//! guest would fault on a reserved physical-address bit). So a prediction names its
//! platform.

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::plan::{
    LaunchPlan, LaunchRegion, PlanError, RegionContents, RegionRole,
};
use cloister_attestation::launch::vmsa::{LongModeEntry, Vmsa, BSP_RESET_EIP};
use std::borrow::Cow;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::e820::{e820_map, E820Entry, E820_RAM, E820_RESERVED};
use super::gdt::{boot_gdt, BOOT_CS, BOOT_DS};
use super::kernel::{load_initrd, load_kernel, write_cmdline, LoadError, LoadedKernel};
use super::layout::{
    ACPI_START, BOOT_GDT_START, BOOT_STACK_POINTER, CC_BLOB_START, CMDLINE_START, CPUID_PAGE_START,
    EBDA_START, HIMEM_START, PML4_START, SECRETS_PAGE_START, SETUP_DATA_START, ZERO_PAGE_START,
};
use super::mptable::{write_mptable, MpTableError};
use super::paging::write_identity_tables_with_c_bit;
use super::zero_page::{build_boot_params, write_boot_params, BootInfo, ZeroPageError};
use crate::acpi;
use crate::boot::layout::{MmioSlot, ACPI_SLEEP_CONTROL_PORT};
use crate::memory::{create_guest_memory, low_ram_end, GuestMemoryMmap, MemoryError, MemorySize};

/// SEV_FEATURES of every vCPU: SNP active, nothing else (Linux refuses features it does
/// not implement, SNP-FACTS §3.1).
pub const SEV_FEATURES: u64 = 1;
/// The C-bit position of every SNP processor generation so far (CPUID 0x8000001F EBX).
pub const SNP_C_BIT: u8 = 51;
/// `SETUP_CC_BLOB`: the setup_data type Linux searches for the CC blob.
pub const SETUP_CC_BLOB: u32 = 7;
/// `cc_blob_sev_info.magic`: "AMDE".
pub const CC_BLOB_MAGIC: u32 = 0x4544_4d41;

/// Which platform a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Plain KVM, no SEV.
    None,
    /// The simulated SNP platform (plain KVM underneath).
    Sim,
    /// Real SEV-SNP.
    Snp,
}

impl Platform {
    /// Whether the guest gets SNP's CPUID page, secrets page and CC blob.
    pub fn is_snp_like(self) -> bool {
        matches!(self, Platform::Sim | Platform::Snp)
    }

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            Platform::None => "none",
            Platform::Sim => "sim",
            Platform::Snp => "snp",
        }
    }
}

/// How the kernel is booted in Cloister's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootLayout {
    /// The VMM loads the kernel, initrd and boot structures, and the PSP measures all of
    /// them (every RAM page is launched).
    #[default]
    Direct,
    /// The PSP measures only the boot verifier and its manifest; the verifier checks the
    /// staged kernel, initrd and command line (`verifier_plan`).
    Verifier,
}

impl BootLayout {
    /// Parses `direct` or `verifier`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "direct" => Some(BootLayout::Direct),
            "verifier" => Some(BootLayout::Verifier),
            _ => None,
        }
    }

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            BootLayout::Direct => "direct",
            BootLayout::Verifier => "verifier",
        }
    }

    /// Builds the plan of this layout.
    pub fn plan(self, inputs: &LayoutInputs<'_>) -> Result<CloisterPlan, PlanBuildError> {
        match self {
            BootLayout::Direct => cloister_plan(inputs),
            BootLayout::Verifier => super::verifier_plan::verifier_plan(inputs),
        }
    }
}

/// Errors while building the plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanBuildError {
    /// Scratch memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel, initrd or command line.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The zero page.
    #[error(transparent)]
    ZeroPage(#[from] ZeroPageError),
    /// The MP table.
    #[error(transparent)]
    MpTable(#[from] MpTableError),
    /// The ACPI tables.
    #[error("cannot write the ACPI tables: {0}")]
    Acpi(#[from] acpi::AcpiError),
    /// Another structure.
    #[error("cannot write {what}: {reason}")]
    Write {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The plan is not valid.
    #[error("launch plan: {0}")]
    Plan(#[from] PlanError),
    /// The verifier layout cannot hold these inputs.
    #[error("verifier layout: {0}")]
    Verifier(String),
}

pub(crate) fn write_err(
    what: &'static str,
) -> impl FnOnce(vm_memory::GuestMemoryError) -> PlanBuildError {
    move |e| PlanBuildError::Write {
        what,
        reason: e.to_string(),
    }
}

/// The user's inputs to the layout.
#[derive(Debug, Clone)]
pub struct LayoutInputs<'a> {
    /// Kernel image bytes (ELF or bzImage).
    pub kernel: &'a [u8],
    /// Its name for messages.
    pub kernel_name: &'a str,
    /// Initrd bytes and name.
    pub initrd: Option<(&'a [u8], &'a str)>,
    /// The full command line (device announcements included).
    pub cmdline: &'a str,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest memory.
    pub memory: MemorySize,
    /// virtio-mmio devices the guest is told about (ACPI DSDT and command line).
    pub devices: &'a [MmioSlot],
    /// The machine has PCI bus 0 (its root bridge in the DSDT; MSI allowed in the FADT).
    pub pci: bool,
    /// Platform.
    pub platform: Platform,
    /// Guest policy for LAUNCH_START.
    pub policy: u64,
    /// HOST_DATA for LAUNCH_FINISH.
    pub host_data: [u8; 32],
}

/// The plan and what the monitor needs besides it.
#[derive(Debug)]
pub struct CloisterPlan {
    /// The launch plan.
    pub plan: LaunchPlan<'static>,
    /// Where the vCPU starts: the kernel's 64-bit entry point, or the boot verifier.
    pub entry: u64,
    /// Bytes the monitor writes into guest memory outside the plan, before the guest runs:
    /// the verifier layout's unmeasured staging (kernel, initrd, command line).
    pub staging: Vec<(u64, Vec<u8>)>,
}

/// The e820 map of this layout: the usual one, with the CPUID and secrets pages reserved
/// on SNP platforms (Linux must not hand them out as free RAM).
pub fn layout_e820(memory: u64, platform: Platform) -> Vec<E820Entry> {
    let mut map = e820_map(memory);
    if platform.is_snp_like() {
        let reserved_start = CPUID_PAGE_START;
        let reserved_end = SECRETS_PAGE_START + PAGE_SIZE as u64;
        let mut out = Vec::with_capacity(map.len() + 2);
        for e in map.drain(..) {
            let end = e.addr + e.size;
            if e.kind == E820_RAM && e.addr < reserved_end && end > reserved_start {
                if e.addr < reserved_start {
                    out.push(E820Entry {
                        addr: e.addr,
                        size: reserved_start - e.addr,
                        kind: E820_RAM,
                    });
                }
                out.push(E820Entry {
                    addr: reserved_start,
                    size: reserved_end - reserved_start,
                    kind: E820_RESERVED,
                });
                if end > reserved_end {
                    out.push(E820Entry {
                        addr: reserved_end,
                        size: end - reserved_end,
                        kind: E820_RAM,
                    });
                }
            } else {
                out.push(e);
            }
        }
        map = out;
    }
    map
}

const PAGE: u64 = PAGE_SIZE as u64;

pub(crate) fn page_floor(a: u64) -> u64 {
    a & !(PAGE - 1)
}

pub(crate) fn page_ceil(a: u64) -> u64 {
    a.div_ceil(PAGE) * PAGE
}

/// The MP table and the ACPI tables of `inputs` (CPUs, virtio-mmio devices); returns the
/// RSDP's address.
pub(crate) fn write_platform_tables(
    mem: &GuestMemoryMmap,
    inputs: &LayoutInputs<'_>,
) -> Result<GuestAddress, PlanBuildError> {
    write_mptable(mem, inputs.vcpus)?;
    let acpi_cfg = acpi::AcpiConfig {
        vcpus: inputs.vcpus,
        virtio_mmio: inputs.devices.to_vec(),
        sleep_control_port: ACPI_SLEEP_CONTROL_PORT as u16,
        pci: inputs.pci,
    };
    Ok(acpi::write_tables(mem, &acpi_cfg)?)
}

/// Builds the plan for `inputs`.
pub fn cloister_plan(inputs: &LayoutInputs<'_>) -> Result<CloisterPlan, PlanBuildError> {
    let mem = Scratch::new(inputs.memory)?;
    let size = inputs.memory.bytes();
    let low_end = low_ram_end(size);
    let kernel: LoadedKernel = load_kernel(&mem, inputs.kernel, inputs.kernel_name, low_end)?;
    let cmdline_len = write_cmdline(&mem, &kernel, inputs.cmdline)?;
    let initrd = match inputs.initrd {
        Some((bytes, name)) => {
            let addr = load_initrd(&mem, &kernel, bytes, name, low_end)?;
            Some((addr, bytes.len() as u64))
        }
        None => None,
    };
    let rsdp = write_platform_tables(&mem, inputs)?;
    let e820 = layout_e820(size, inputs.platform);
    let mut params = build_boot_params(&BootInfo {
        kernel: &kernel,
        cmdline_len,
        initrd,
        e820: &e820,
        acpi_rsdp: Some(rsdp.0),
    })?;
    if inputs.platform.is_snp_like() {
        write_cc_blob(&mem)?;
        params.hdr.setup_data = SETUP_DATA_START;
    }
    write_boot_params(&mem, &params)?;
    crate::boot::write_descriptor_tables(&mem).map_err(write_err("the boot GDT"))?;
    let c_bit = (inputs.platform == Platform::Snp).then_some(SNP_C_BIT);
    let cr3 =
        write_identity_tables_with_c_bit(&mem, c_bit).map_err(write_err("the page tables"))?;

    // The measured regions, by GPA: (gpa, len, bytes from gpa that can be non-zero, what).
    // Only the kernel has less written than its length: the rest of the room it needs to
    // start (a bzImage's init_size, tens of MiB for a distribution kernel) is fresh,
    // all-zero memory, and is not read back.
    let whole = |gpa: u64, len: u64, what: &'static str| (gpa, len, len, what);
    let kernel_len = page_ceil(kernel.end) - HIMEM_START;
    let mut normal: Vec<(u64, u64, u64, &'static str)> = vec![
        whole(0, PAGE, "boot GDT and IDT"),
        whole(ZERO_PAGE_START, PAGE, "zero page"),
        whole(PML4_START, 3 * PAGE, "page tables"),
        whole(
            CMDLINE_START,
            page_ceil(cmdline_len as u64 + 1),
            "command line",
        ),
        whole(page_floor(EBDA_START), PAGE, "MP table"),
        (
            HIMEM_START,
            kernel_len,
            page_ceil(kernel.written_end) - HIMEM_START,
            "kernel",
        ),
    ];
    if inputs.platform.is_snp_like() {
        normal.push(whole(SETUP_DATA_START, PAGE, "CC blob"));
    }
    let acpi_end = used_extent(&mem, ACPI_START, HIMEM_START)?;
    if acpi_end > ACPI_START {
        normal.push(whole(ACPI_START, acpi_end - ACPI_START, "ACPI tables"));
    }
    if let Some((addr, len)) = initrd {
        if len > 0 {
            let start = page_floor(addr);
            normal.push(whole(start, page_ceil(addr + len) - start, "initrd"));
        }
    }
    normal.sort_by_key(|r| r.0);

    let mut regions = Vec::new();
    for &(gpa, len, written, what) in &normal {
        regions.extend(measured_regions_zero_tail(&mem, gpa, written, len, what)?);
    }
    let mut taken: Vec<(u64, u64)> = normal.iter().map(|&(g, l, _, _)| (g, g + l)).collect();
    if inputs.platform.is_snp_like() {
        for (gpa, kind, what) in [
            (CPUID_PAGE_START, PageType::Cpuid, "CPUID page"),
            (SECRETS_PAGE_START, PageType::Secrets, "secrets page"),
        ] {
            regions.push(LaunchRegion::new(
                gpa,
                PAGE,
                kind,
                RegionRole::Other(what),
                RegionContents::Zeroes,
            )?);
            taken.push((gpa, gpa + PAGE));
        }
    }
    check_disjoint(&mut taken)?;
    // Every other RAM page of the e820 map, launched as ZERO pages.
    for e in e820.iter().filter(|e| e.kind == E820_RAM) {
        let (start, end) = (page_floor(e.addr), page_ceil(e.addr + e.size));
        for (gpa, len) in gaps(start, end, &taken) {
            regions.push(LaunchRegion::new(
                gpa,
                len,
                PageType::Zero,
                RegionRole::Other("RAM"),
                RegionContents::Zeroes,
            )?);
        }
    }
    // One VMSA per vCPU: the BSP enters the kernel in long mode; the APs are at the
    // architectural reset state (they are started later: INIT/SIPI on plain KVM, the SNP
    // AP-creation request on real hardware).
    let gdt_limit = (std::mem::size_of_val(&boot_gdt()) - 1) as u16;
    let bsp = Vmsa::long_mode(&LongModeEntry {
        rip: kernel.entry,
        rsi: ZERO_PAGE_START,
        rsp: BOOT_STACK_POINTER,
        cr3,
        gdt_base: BOOT_GDT_START,
        gdt_limit,
        code_selector: BOOT_CS,
        data_selector: BOOT_DS,
        sev_features: SEV_FEATURES,
    });
    let ap = Vmsa::qemu_reset(BSP_RESET_EIP, 0, SEV_FEATURES);
    for vcpu in 0..u32::from(inputs.vcpus) {
        regions.push(LaunchRegion::vmsa(vcpu, if vcpu == 0 { &bsp } else { &ap }));
    }
    let mut plan = LaunchPlan::new(regions, u32::from(inputs.vcpus))?;
    plan.policy = inputs.policy;
    plan.host_data = inputs.host_data;
    Ok(CloisterPlan {
        plan,
        entry: kernel.entry,
        staging: Vec::new(),
    })
}

/// Memory a plan is laid out in and then read back from, once: the layout is written into
/// it like into a VM's memory (it derefs to [`GuestMemoryMmap`]), and scanning a range for
/// its launch regions ([`measured_regions`]) hands that range's pages back to the host, so
/// a range reads as zero after its scan. Never a VM's memory.
pub(crate) struct Scratch(GuestMemoryMmap);

impl Scratch {
    /// Scratch memory of `size`, laid out as a VM's (the same RAM ranges).
    pub(crate) fn new(size: MemorySize) -> Result<Self, MemoryError> {
        create_guest_memory(size).map(Self)
    }
}

impl std::ops::Deref for Scratch {
    type Target = GuestMemoryMmap;

    fn deref(&self) -> &GuestMemoryMmap {
        &self.0
    }
}

/// The launch regions of guest memory `gpa .. gpa + len` (page-aligned) as `mem` holds
/// it, which then releases the range (see [`Scratch`]): runs of all-zero pages (a
/// kernel's room to decompress into, its .bss) go in as ZERO pages, where the guest sees
/// the same bytes and the firmware need not hash them; the rest as NORMAL pages.
pub(crate) fn measured_regions(
    mem: &Scratch,
    gpa: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<LaunchRegion<'static>>, PlanBuildError> {
    measured_regions_zero_tail(mem, gpa, len, len, what)
}

/// [`measured_regions`] of `gpa .. gpa + len` where only the first `written` bytes
/// (page-aligned, at most `len`) can be non-zero: the rest is not read, and joins the
/// last run as ZERO pages. The regions are the same as [`measured_regions`] gives.
pub(crate) fn measured_regions_zero_tail(
    mem: &Scratch,
    gpa: u64,
    written: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<LaunchRegion<'static>>, PlanBuildError> {
    let written = written.min(len);
    let mut regions = scan_regions(mem, gpa, written, what)?;
    if written < len {
        let (tail_gpa, tail_end) = match regions.last() {
            Some(last) if last.page_type() == PageType::Zero => {
                let start = last.gpa();
                regions.pop();
                (start, gpa + len)
            }
            _ => (gpa + written, gpa + len),
        };
        regions.push(LaunchRegion::new(
            tail_gpa,
            tail_end - tail_gpa,
            PageType::Zero,
            RegionRole::Other(what),
            RegionContents::Zeroes,
        )?);
    }
    Ok(regions)
}

/// How much of a non-zero run [`scan_regions`] copies before releasing it from scratch.
const SCAN_CHUNK: usize = 1 << 20;

/// The runs of zero and non-zero pages of `gpa .. gpa + len`, read from `mem`: a first
/// pass classifies each page through one page-sized buffer, a second copies each non-zero
/// run out of `mem` once (for a Debian kernel, 8 MiB copied once instead of twice).
///
/// Each run's pages are handed back to the host as soon as the run is classified or
/// copied ([`release_scratch`]), so that the scratch copy of a kernel and initrd is not
/// resident next to the plan's copy of it (for Debian's kernel and a 3 MB initrd, about 11
/// MiB less at the peak of `measure` and of a launch).
fn scan_regions(
    mem: &Scratch,
    gpa: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<LaunchRegion<'static>>, PlanBuildError> {
    // (offset, length, all zero) of each run.
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    let mut page = [0u8; PAGE_SIZE];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(PAGE) as usize;
        mem.read_slice(&mut page[..n], GuestAddress(gpa + offset))
            .map_err(write_err(what))?;
        let zero = is_zero_page(&page[..n]);
        match runs.last_mut() {
            Some(run) if run.2 == zero => run.1 += n as u64,
            _ => runs.push((offset, n as u64, zero)),
        }
        offset += n as u64;
    }
    let mut regions = Vec::with_capacity(runs.len());
    for (offset, run_len, zero) in runs {
        let run_gpa = gpa + offset;
        regions.push(if zero {
            // Zero pages may still be resident (written with zeros): release them too.
            release_scratch(mem, run_gpa, run_len);
            LaunchRegion::new(
                run_gpa,
                run_len,
                PageType::Zero,
                RegionRole::Other(what),
                RegionContents::Zeroes,
            )?
        } else {
            // Copied a chunk at a time, each chunk's scratch pages released as soon as
            // it is out: the run is never resident twice.
            let mut bytes = vec![0u8; run_len as usize];
            let mut chunk_gpa = run_gpa;
            for chunk in bytes.chunks_mut(SCAN_CHUNK) {
                mem.read_slice(chunk, GuestAddress(chunk_gpa))
                    .map_err(write_err(what))?;
                release_scratch(mem, chunk_gpa, chunk.len() as u64);
                chunk_gpa += chunk.len() as u64;
            }
            LaunchRegion::new(
                run_gpa,
                run_len,
                PageType::Normal,
                RegionRole::Other(what),
                RegionContents::Bytes(Cow::Owned(bytes)),
            )?
        });
    }
    Ok(regions)
}

/// Gives the whole pages of `gpa .. gpa + len` of `mem` back to the host (`MADV_DONTNEED`:
/// they read as zero if touched again). Best effort: a range that is not in one region, or
/// advice that fails, only costs memory.
fn release_scratch(mem: &Scratch, gpa: u64, len: u64) {
    let start = page_ceil(gpa);
    let end = page_floor(gpa.saturating_add(len));
    let Some(count) = end.checked_sub(start).and_then(|n| usize::try_from(n).ok()) else {
        return;
    };
    if count == 0 {
        return;
    }
    let Ok(slice) = mem.get_slice(GuestAddress(start), count) else {
        return;
    };
    let host = slice.ptr_guard_mut().as_ptr();
    // SAFETY: `host .. host + count` is inside one of `mem`'s anonymous private mappings
    // (get_slice checked the range), and whole pages (the mapping is page-aligned, and so
    // are `start` and `end`). The plan owns this scratch memory and holds no reference into
    // it; MADV_DONTNEED only drops the pages' contents, and the mapping stays valid.
    if unsafe { libc::madvise(host.cast(), count, libc::MADV_DONTNEED) } != 0 {
        log::debug!(
            "releasing scratch pages at {start:#x}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The setup_data node (type 7, payload: the CC blob's u32 address) and the CC blob
/// (`cc_blob_sev_info`, 40 bytes) pointing at the secrets and CPUID pages (SNP-FACTS §3.1).
fn write_cc_blob(mem: &GuestMemoryMmap) -> Result<(), PlanBuildError> {
    let mut node = [0u8; 24];
    node[0..8].copy_from_slice(&0u64.to_le_bytes()); // next
    node[8..12].copy_from_slice(&SETUP_CC_BLOB.to_le_bytes());
    node[12..16].copy_from_slice(&8u32.to_le_bytes()); // len: u32 address + padding
    node[16..20].copy_from_slice(&(CC_BLOB_START as u32).to_le_bytes());
    mem.write_slice(&node, GuestAddress(SETUP_DATA_START))
        .map_err(write_err("the setup_data node"))?;
    let mut blob = [0u8; 40];
    blob[0..4].copy_from_slice(&CC_BLOB_MAGIC.to_le_bytes());
    blob[4..6].copy_from_slice(&1u16.to_le_bytes());
    blob[8..16].copy_from_slice(&SECRETS_PAGE_START.to_le_bytes());
    blob[16..20].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    blob[24..32].copy_from_slice(&CPUID_PAGE_START.to_le_bytes());
    blob[32..36].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    mem.write_slice(&blob, GuestAddress(CC_BLOB_START))
        .map_err(write_err("the CC blob"))
}

fn is_zero_page(page: &[u8]) -> bool {
    // An OR over the whole page (vectorised) instead of a byte loop that stops early: the
    // pages scanned are mostly kernel text, non-zero from their first bytes, or zero.
    page.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// The end of the last non-zero page in `start..end` (or `start`).
pub(crate) fn used_extent(
    mem: &GuestMemoryMmap,
    start: u64,
    end: u64,
) -> Result<u64, PlanBuildError> {
    let mut page = [0u8; PAGE_SIZE];
    let mut last = start;
    let mut at = start;
    while at < end {
        mem.read_slice(&mut page, GuestAddress(at))
            .map_err(write_err("the ACPI area"))?;
        if page.iter().any(|&b| b != 0) {
            last = at + PAGE;
        }
        at += PAGE;
    }
    Ok(last)
}

pub(crate) fn check_disjoint(taken: &mut [(u64, u64)]) -> Result<(), PlanBuildError> {
    taken.sort_unstable();
    for w in taken.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(PlanBuildError::Write {
                what: "the boot layout",
                reason: format!(
                    "regions {:#x}..{:#x} and {:#x}..{:#x} overlap",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ),
            });
        }
    }
    Ok(())
}

/// The parts of `start..end` not covered by `taken` (sorted, disjoint).
pub(crate) fn gaps(start: u64, end: u64, taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in taken {
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::boot::kernel::tests::tiny_elf;

    fn shape(regions: &[LaunchRegion<'_>]) -> Vec<(u64, u64, PageType)> {
        regions
            .iter()
            .map(|r| (r.gpa(), r.len(), r.page_type()))
            .collect()
    }

    /// Reading only the written part gives the regions a scan of the whole range gives,
    /// whether the written part ends in a zero page (the runs join) or a non-zero one.
    #[test]
    fn a_zero_tail_is_not_read_and_gives_the_same_regions() {
        let base = 0x10_0000u64;
        let page = PAGE_SIZE as u64;
        // A scan releases what it read: every scan gets memory laid out afresh.
        let laid_out = || {
            let mem = Scratch::new(MemorySize(16 << 20)).unwrap();
            mem.write_slice(&[1; 10], GuestAddress(base + page))
                .unwrap();
            mem.write_slice(&[2; 10], GuestAddress(base + 5 * page))
                .unwrap();
            mem
        };
        let len = 64 * page;
        let full = measured_regions(&laid_out(), base, len, "k").unwrap();
        for written in [6 * page, 8 * page, len] {
            let tail = measured_regions_zero_tail(&laid_out(), base, written, len, "k").unwrap();
            assert_eq!(shape(&tail), shape(&full), "written {written:#x}");
        }
        assert_eq!(
            shape(&full),
            vec![
                (base, page, PageType::Zero),
                (base + page, page, PageType::Normal),
                (base + 2 * page, 3 * page, PageType::Zero),
                (base + 5 * page, page, PageType::Normal),
                (base + 6 * page, 58 * page, PageType::Zero),
            ]
        );
        // Written part ending on a non-zero page: the tail is a run of its own.
        let tail = measured_regions_zero_tail(&laid_out(), base, 6 * page, len, "k").unwrap();
        assert_eq!(tail.last().unwrap().gpa(), base + 6 * page);
    }

    /// A scanned range's regions keep its bytes (a run longer than one copy chunk
    /// included), and the scratch pages are given back: the range reads as zero after.
    #[test]
    fn a_scan_keeps_the_bytes_and_releases_the_scratch_pages() {
        let mem = Scratch::new(MemorySize(16 << 20)).unwrap();
        let base = 0x10_0000u64;
        let len = (SCAN_CHUNK * 2 + SCAN_CHUNK / 2) as u64;
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        mem.write_slice(&bytes, GuestAddress(base)).unwrap();
        let regions = measured_regions(&mem, base, len, "k").unwrap();
        assert_eq!(shape(&regions), vec![(base, len, PageType::Normal)]);
        let RegionContents::Bytes(kept) = regions[0].contents() else {
            unreachable!("a Normal region holds its bytes");
        };
        assert!(kept[..] == bytes[..], "bytes changed");
        let mut after = vec![0xffu8; len as usize];
        mem.read_slice(&mut after, GuestAddress(base)).unwrap();
        assert!(
            after.iter().all(|&b| b == 0),
            "scratch pages were not released"
        );
    }

    fn inputs<'a>(kernel: &'a [u8], cmdline: &'a str, platform: Platform) -> LayoutInputs<'a> {
        LayoutInputs {
            kernel,
            kernel_name: "k",
            initrd: None,
            cmdline,
            vcpus: 2,
            memory: MemorySize(64 << 20),
            devices: &[],
            pci: false,
            platform,
            policy: 0x3_0000,
            host_data: [0; 32],
        }
    }

    #[test]
    fn gaps_cover_what_is_not_taken() {
        assert_eq!(
            gaps(0, 100, &[(10, 20), (30, 40)]),
            [(0, 10), (20, 10), (40, 60)]
        );
        assert_eq!(gaps(15, 35, &[(10, 20), (30, 40)]), [(20, 10)]);
        assert_eq!(gaps(0, 10, &[]), [(0, 10)]);
    }

    /// Every RAM page of the e820 map is launched exactly once, and nothing else but the
    /// structures is.
    #[test]
    fn every_ram_page_is_launched_once() {
        let k = tiny_elf(&[0xf4], 0x20_0000);
        for platform in [Platform::None, Platform::Sim, Platform::Snp] {
            let p = cloister_plan(&inputs(&k, "console=ttyS0", platform)).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for page in p.plan.pages().filter(|p| p.page_type != PageType::Vmsa) {
                assert!(seen.insert(page.gpa), "{:#x} twice", page.gpa);
            }
            for e in layout_e820(64 << 20, platform)
                .iter()
                .filter(|e| e.kind == E820_RAM)
            {
                let mut a = page_floor(e.addr);
                while a < e.addr + e.size {
                    assert!(
                        seen.contains(&a),
                        "{platform:?}: RAM page {a:#x} not launched"
                    );
                    a += PAGE;
                }
            }
            assert_eq!(p.plan.vcpus(), 2);
        }
    }

    /// Anything that changes what the guest runs changes the digest.
    #[test]
    fn inputs_change_the_measurement() {
        let k = tiny_elf(&[0xf4], 0x20_0000);
        let base = cloister_plan(&inputs(&k, "console=ttyS0", Platform::Sim))
            .unwrap()
            .plan
            .measure();
        let again = cloister_plan(&inputs(&k, "console=ttyS0", Platform::Sim))
            .unwrap()
            .plan
            .measure();
        assert_eq!(base, again, "the plan is deterministic");
        let cmd = cloister_plan(&inputs(&k, "console=ttyS1", Platform::Sim)).unwrap();
        assert_ne!(cmd.plan.measure(), base, "command line");
        let k2 = tiny_elf(&[0x90, 0xf4], 0x20_0000);
        let kern = cloister_plan(&inputs(&k2, "console=ttyS0", Platform::Sim)).unwrap();
        assert_ne!(kern.plan.measure(), base, "kernel");
        let mut i = inputs(&k, "console=ttyS0", Platform::Sim);
        i.vcpus = 3;
        assert_ne!(cloister_plan(&i).unwrap().plan.measure(), base, "vCPUs");
        let mut i = inputs(&k, "console=ttyS0", Platform::Sim);
        i.memory = MemorySize(128 << 20);
        assert_ne!(cloister_plan(&i).unwrap().plan.measure(), base, "memory");
        let snp = cloister_plan(&inputs(&k, "console=ttyS0", Platform::Snp)).unwrap();
        assert_ne!(snp.plan.measure(), base, "the C-bit in the page tables");
        let initrd = [7u8; 5000];
        let mut i = inputs(&k, "console=ttyS0", Platform::Sim);
        i.initrd = Some((&initrd, "initrd"));
        let with = cloister_plan(&i).unwrap().plan.measure();
        assert_ne!(with, base, "initrd");
        let other = [8u8; 5000];
        i.initrd = Some((&other, "initrd"));
        assert_ne!(
            cloister_plan(&i).unwrap().plan.measure(),
            with,
            "initrd byte"
        );
    }

    #[test]
    fn snp_platforms_get_the_cc_blob_and_the_none_platform_does_not() {
        let k = tiny_elf(&[0xf4], 0x20_0000);
        let sim = cloister_plan(&inputs(&k, "", Platform::Sim)).unwrap();
        let types: Vec<_> = sim.plan.regions().iter().map(|r| r.page_type()).collect();
        assert!(types.contains(&PageType::Cpuid) && types.contains(&PageType::Secrets));
        let blob = sim
            .plan
            .regions()
            .iter()
            .find(|r| r.gpa() == SETUP_DATA_START)
            .unwrap();
        let b = blob.bytes().unwrap();
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            SETUP_CC_BLOB
        );
        let off = (CC_BLOB_START - SETUP_DATA_START) as usize;
        assert_eq!(
            u32::from_le_bytes(b[off..off + 4].try_into().unwrap()),
            CC_BLOB_MAGIC
        );
        let none = cloister_plan(&inputs(&k, "", Platform::None)).unwrap();
        assert!(!none
            .plan
            .regions()
            .iter()
            .any(|r| matches!(r.page_type(), PageType::Cpuid | PageType::Secrets)));
    }
}
