//! Cloister's verifier layout (issue 9): the PSP measures the boot verifier, one manifest
//! page, the MP and ACPI tables and the VMSAs; the kernel, initrd and command line are
//! staged in unmeasured memory and checked by the verifier against the manifest's SHA-384
//! before it copies them into place. The measured set does not grow with the kernel.
//!
//! | GPA | what | launched as |
//! |---|---|---|
//! | 0x4000 | CPUID page (SNP platforms) | CPUID |
//! | 0x5000 | secrets page (SNP platforms) | SECRETS |
//! | 0x6000 | setup_data + CC blob (written by the verifier) | not launched |
//! | 0x7000 | zero page (written by the verifier) | not launched |
//! | 0x8000 | manifest | NORMAL |
//! | 0x10000 | the verifier: its bytes, then bss, page tables, scratch, stack | NORMAL + ZERO |
//! | 0x80000 | command line (copied by the verifier) | not launched |
//! | 0x9fc00 | MP table (EBDA) | NORMAL |
//! | 0xe0000 | ACPI tables | NORMAL |
//! | kernel load address | the kernel's protected-mode code (copied) | not launched |
//! | after it | the initrd (copied) | not launched |
//! | above | staging: the bzImage, the initrd, the command line | not launched (shared) |
//!
//! Everything not launched is validated by the verifier on SNP. The BSP starts at the
//! verifier in 32-bit protected mode with paging off: the same VMSA on every platform.

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::plan::{LaunchPlan, LaunchRegion, RegionContents, RegionRole};
use cloister_attestation::launch::vmsa::{Vmsa, BSP_RESET_EIP};
use cloister_boot_verifier::manifest::{self, Image, Manifest, MAX_E820};
use cloister_boot_verifier::zero_page::BzImage;
use vm_memory::{Bytes, GuestAddress};

use super::e820::E820_RAM;
use super::layout::{ACPI_START, CPUID_PAGE_START, EBDA_START, HIMEM_START, SECRETS_PAGE_START};
use super::plan::{
    check_disjoint, layout_e820, measured_regions, page_ceil, page_floor, used_extent, write_err,
    write_platform_tables, CloisterPlan, LayoutInputs, PlanBuildError, Scratch, SEV_FEATURES,
};
use crate::memory::low_ram_end;
use crate::test_guest::{VERIFIER, VERIFIER_BASE, VERIFIER_MEM_SIZE};

/// The manifest page.
pub const MANIFEST_START: u64 = 0x8000;
/// The zero page the verifier writes.
pub const VERIFIER_ZERO_PAGE: u64 = 0x7000;
/// The setup_data node and CC blob the verifier writes.
pub const VERIFIER_CC_BLOB: u64 = 0x6000;
/// Where the verifier copies the command line.
pub const VERIFIER_CMDLINE: u64 = 0x8_0000;
const TWO_MIB: u64 = 2 << 20;

fn err(what: impl Into<String>) -> PlanBuildError {
    PlanBuildError::Verifier(what.into())
}

/// Memory the verifier occupies from [`VERIFIER_BASE`].
pub fn verifier_mem_size() -> Result<u64, PlanBuildError> {
    VERIFIER_MEM_SIZE
        .trim()
        .parse()
        .map_err(|_| err("the embedded verifier's memory size is unreadable"))
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|v| v / a * a)
}

/// Builds the verifier layout's plan for `inputs` (the kernel must be a bzImage).
pub fn verifier_plan(inputs: &LayoutInputs<'_>) -> Result<CloisterPlan, PlanBuildError> {
    let mem = Scratch::new(inputs.memory)?;
    let size = inputs.memory.bytes();
    let low_end = low_ram_end(size);
    let kernel = inputs.kernel;
    let bz = BzImage::parse(kernel, kernel.len() as u64).map_err(|e| {
        err(format!(
            "{}: {} (the verifier boots bzImages through Linux's 64-bit entry)",
            inputs.kernel_name,
            e.describe()
        ))
    })?;
    let cmdline = inputs.cmdline.as_bytes();
    if cmdline.len() as u64 > manifest::MAX_CMDLINE {
        return Err(err(format!(
            "the command line is {} bytes; at most {} fit",
            cmdline.len(),
            manifest::MAX_CMDLINE
        )));
    }
    let initrd = inputs.initrd.map(|(b, _)| b).unwrap_or(&[]);

    // Where things go: the kernel at its preferred (aligned) address, the initrd after
    // its init_size room, staging after that; all below the end of low RAM.
    let load = match bz.alignment {
        Some(align) => align_up(bz.pref_address.max(HIMEM_START), align),
        None => Some(bz.pref_address),
    }
    .ok_or_else(|| err("the kernel's preferred address overflows"))?;
    let code_len = kernel.len() as u64 - bz.code_offset as u64;
    let room_end = load
        .checked_add(bz.init_size.max(code_len))
        .ok_or_else(|| err("the kernel's init_size overflows"))?;
    let initrd_load = align_up(room_end, TWO_MIB).ok_or_else(|| err("layout overflows"))?;
    let staging_start = align_up(initrd_load + initrd.len() as u64, TWO_MIB)
        .ok_or_else(|| err("layout overflows"))?;
    let kernel_staging = staging_start;
    let initrd_staging = page_ceil(kernel_staging + kernel.len() as u64);
    let cmdline_staging = page_ceil(initrd_staging + initrd.len() as u64);
    let staging_end = page_ceil(cmdline_staging + cmdline.len() as u64 + 1);
    if staging_end > low_end || load < HIMEM_START {
        return Err(err(format!(
            "{} MiB of memory cannot hold the kernel's room, the initrd and their staged \
             copies ({} MiB needed below {:#x})",
            size >> 20,
            staging_end.div_ceil(1 << 20),
            low_end
        )));
    }

    let rsdp = write_platform_tables(&mem, inputs)?;
    let _ = rsdp; // Linux finds the RSDP by scanning 0xe0000-0xfffff.
    let e820 = layout_e820(size, inputs.platform);
    if e820.len() > MAX_E820 {
        return Err(err("more e820 entries than the manifest holds"));
    }
    let mut m = Manifest {
        kernel: Image {
            staging: kernel_staging,
            load,
            size: kernel.len() as u64,
            sha384: manifest::sha384(kernel),
        },
        initrd: Image {
            staging: initrd_staging,
            load: if initrd.is_empty() { 0 } else { initrd_load },
            size: initrd.len() as u64,
            sha384: manifest::sha384(initrd),
        },
        cmdline: Image {
            staging: cmdline_staging,
            load: VERIFIER_CMDLINE,
            size: cmdline.len() as u64,
            sha384: manifest::sha384(cmdline),
        },
        zero_page: VERIFIER_ZERO_PAGE,
        cc_blob: VERIFIER_CC_BLOB,
        secrets: SECRETS_PAGE_START,
        cpuid: CPUID_PAGE_START,
        e820: [Default::default(); MAX_E820],
        e820_count: e820.len(),
    };
    for (slot, e) in m.e820.iter_mut().zip(&e820) {
        *slot = manifest::E820Entry {
            addr: e.addr,
            size: e.size,
            kind: e.kind,
        };
    }
    mem.write_slice(&m.to_page(), GuestAddress(MANIFEST_START))
        .map_err(write_err("the manifest"))?;
    mem.write_slice(VERIFIER, GuestAddress(VERIFIER_BASE))
        .map_err(write_err("the boot verifier"))?;
    let verifier_len = page_ceil(verifier_mem_size()?);

    let mut launched: Vec<(u64, u64, &'static str)> = vec![
        (MANIFEST_START, PAGE_SIZE as u64, "manifest"),
        (VERIFIER_BASE, verifier_len, "boot verifier"),
        (page_floor(EBDA_START), PAGE_SIZE as u64, "MP table"),
    ];
    let acpi_end = used_extent(&mem, ACPI_START, HIMEM_START)?;
    if acpi_end > ACPI_START {
        launched.push((ACPI_START, acpi_end - ACPI_START, "ACPI tables"));
    }
    launched.sort_by_key(|r| r.0);
    let mut regions = Vec::new();
    for &(gpa, len, what) in &launched {
        regions.extend(measured_regions(&mem, gpa, len, what)?);
    }
    let mut taken: Vec<(u64, u64)> = launched.iter().map(|&(g, l, _)| (g, g + l)).collect();
    // The verifier's writes and loads, and the staging, must not overlap what is launched.
    for (start, len) in [
        (VERIFIER_CC_BLOB, PAGE_SIZE as u64),
        (VERIFIER_ZERO_PAGE, PAGE_SIZE as u64),
        (VERIFIER_CMDLINE, page_ceil(cmdline.len() as u64 + 1)),
        (load, room_end - load),
        (kernel_staging, staging_end - kernel_staging),
    ] {
        taken.push((start, start + len));
    }
    if inputs.platform.is_snp_like() {
        for (gpa, kind, what) in [
            (CPUID_PAGE_START, PageType::Cpuid, "CPUID page"),
            (SECRETS_PAGE_START, PageType::Secrets, "secrets page"),
        ] {
            regions.push(LaunchRegion::new(
                gpa,
                PAGE_SIZE as u64,
                kind,
                RegionRole::Other(what),
                RegionContents::Zeroes,
            )?);
            taken.push((gpa, gpa + PAGE_SIZE as u64));
        }
    }
    check_disjoint(&mut taken)?;
    if !e820.iter().any(|e| {
        e.kind == E820_RAM
            && e.addr <= VERIFIER_BASE
            && e.addr + e.size >= VERIFIER_BASE + verifier_len
    }) {
        return Err(err("the verifier's memory is not RAM in the e820 map"));
    }

    let bsp = Vmsa::protected_mode(VERIFIER_BASE as u32, SEV_FEATURES);
    let ap = Vmsa::qemu_reset(BSP_RESET_EIP, 0, SEV_FEATURES);
    for vcpu in 0..u32::from(inputs.vcpus) {
        regions.push(LaunchRegion::vmsa(vcpu, if vcpu == 0 { &bsp } else { &ap }));
    }
    let mut plan = LaunchPlan::new(regions, u32::from(inputs.vcpus))?;
    plan.policy = inputs.policy;
    plan.host_data = inputs.host_data;
    let mut staged_cmdline = cmdline.to_vec();
    staged_cmdline.push(0);
    Ok(CloisterPlan {
        plan,
        entry: VERIFIER_BASE,
        staging: vec![
            (kernel_staging, kernel.to_vec()),
            (initrd_staging, initrd.to_vec()),
            (cmdline_staging, staged_cmdline),
        ],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::boot::plan::Platform;
    use crate::memory::MemorySize;
    use cloister_attestation::launch::digest::PageType;

    fn inputs<'a>(kernel: &'a [u8], initrd: Option<&'a [u8]>, memory: u64) -> LayoutInputs<'a> {
        LayoutInputs {
            kernel,
            kernel_name: "k",
            initrd: initrd.map(|b| (b, "i")),
            cmdline: "console=ttyS0",
            vcpus: 1,
            memory: MemorySize(memory),
            devices: &[],
            pci: false,
            platform: Platform::Snp,
            policy: 0x30000,
            host_data: [0; 32],
        }
    }

    fn measured_bytes(plan: &CloisterPlan) -> u64 {
        plan.plan.summary().bytes_measured
    }

    /// A bzImage as big as `size` (the test guest's header, padded).
    fn big_kernel(size: usize) -> Vec<u8> {
        let mut k = crate::test_guest::BZIMAGE.to_vec();
        k.resize(size, 0x5a);
        k
    }

    #[test]
    fn measured_set_stays_under_64k_whatever_the_kernel_and_initrd() {
        let small = verifier_plan(&inputs(crate::test_guest::BZIMAGE, None, 128 << 20)).unwrap();
        let kernel = big_kernel(12 << 20);
        let initrd = vec![0xa5u8; 64 << 20];
        let big = verifier_plan(&inputs(&kernel, Some(&initrd), 512 << 20)).unwrap();
        for plan in [&small, &big] {
            let bytes = measured_bytes(plan);
            assert!(bytes < 64 * 1024, "{bytes} bytes measured");
        }
        assert_eq!(measured_bytes(&small), measured_bytes(&big));
        // Only pages of fixed structures are launched: no ZERO pages for RAM.
        let pages: u64 = big.plan.summary().pages;
        assert!(pages < 64, "{pages} pages launched");
        // The staging holds the images exactly.
        assert_eq!(big.staging[0].1, kernel);
        assert_eq!(big.staging[1].1, initrd);
        assert_eq!(big.staging[2].1, b"console=ttyS0\0");
    }

    #[test]
    fn the_manifest_describes_the_staging_and_changes_with_every_input() {
        let plan = verifier_plan(&inputs(crate::test_guest::BZIMAGE, None, 128 << 20)).unwrap();
        let page = plan
            .plan
            .regions()
            .iter()
            .find(|r| r.gpa() == MANIFEST_START)
            .and_then(|r| r.bytes())
            .map(|b| <[u8; 4096]>::try_from(&b[..4096]).unwrap())
            .unwrap();
        let m = Manifest::parse(&page).unwrap();
        assert_eq!(m.kernel.staging, plan.staging[0].0);
        assert_eq!(
            m.kernel.sha384,
            manifest::sha384(crate::test_guest::BZIMAGE)
        );
        assert_eq!(
            m.kernel.load, 0x10_0000,
            "the test guest is not relocatable"
        );
        assert_eq!(m.cmdline.load, VERIFIER_CMDLINE);
        let digest = |i: LayoutInputs<'_>| verifier_plan(&i).unwrap().plan.measure();
        let base = digest(inputs(crate::test_guest::BZIMAGE, None, 128 << 20));
        let mut k = crate::test_guest::BZIMAGE.to_vec();
        let last = k.len() - 1;
        k[last] ^= 1;
        assert_ne!(digest(inputs(&k, None, 128 << 20)), base, "kernel byte");
        assert_ne!(
            digest(inputs(crate::test_guest::BZIMAGE, Some(b"x"), 128 << 20)),
            base,
            "initrd"
        );
        assert_ne!(
            digest(inputs(crate::test_guest::BZIMAGE, None, 256 << 20)),
            base,
            "memory size"
        );
        let mut two = inputs(crate::test_guest::BZIMAGE, None, 128 << 20);
        two.vcpus = 2;
        assert_ne!(digest(two), base, "vCPUs");
        let mut other = inputs(crate::test_guest::BZIMAGE, None, 128 << 20);
        other.cmdline = "console=ttyS1";
        assert_ne!(digest(other), base, "command line");
        // The BSP starts in 32-bit protected mode at the verifier.
        let vmsa = plan
            .plan
            .regions()
            .iter()
            .find_map(|r| r.vmsa_state())
            .unwrap();
        assert_eq!(vmsa.rip, VERIFIER_BASE);
        assert_eq!(vmsa.cr0 & (1 << 31), 0, "paging off");
        assert!(plan
            .plan
            .regions()
            .iter()
            .all(|r| r.page_type() != PageType::Zero || r.gpa() < 0x10_0000));
    }

    #[test]
    fn refuses_what_it_cannot_lay_out() {
        let e = verifier_plan(&inputs(b"not a bzImage", None, 128 << 20)).unwrap_err();
        assert!(e.to_string().contains("bzImage"), "{e}");
        let kernel = big_kernel(12 << 20);
        let initrd = vec![0u8; 64 << 20];
        let e = verifier_plan(&inputs(&kernel, Some(&initrd), 64 << 20)).unwrap_err();
        assert!(e.to_string().contains("cannot hold"), "{e}");
        let long = "x".repeat(3000);
        let mut i = inputs(crate::test_guest::BZIMAGE, None, 128 << 20);
        i.cmdline = &long;
        let e = verifier_plan(&i).unwrap_err();
        assert!(e.to_string().contains("at most 2048"), "{e}");
    }
}
