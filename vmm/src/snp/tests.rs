//! The SNP launcher over the simulated host, on /dev/kvm: the launch sequence, the
//! kernel's preconditions as the simulated kernel enforces them, the CPUID retry, and the
//! run-time page-state changes. Fails (never skips) without a usable /dev/kvm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use cloister_attestation::launch::digest::{PageType, PAGE_SIZE};
use cloister_attestation::launch::plan::{LaunchPlan, LaunchRegion, RegionContents, RegionRole};
use cloister_attestation::launch::vmsa::{Vmsa, BSP_RESET_EIP};
use cloister_attestation::sim::{SimPsp, SimRoot};

use super::abi::{KvmMemoryAttributes, KvmSevInit, KVM_MEMORY_ATTRIBUTE_PRIVATE};
use super::host::SnpHost;
use super::launcher::{map_gpa_range, memory_fault, LaunchError, SnpLauncher};
use super::sim::SimSnpHost;
use crate::memory::{create_guest_memory, MemorySize};
use crate::vstate::vm::{open_kvm, KVM_PATH};
use crate::vstate::vmsa_regs::{regs_from_vmsa, sregs_from_vmsa};

pub(crate) fn root() -> Arc<SimRoot> {
    static ROOT: OnceLock<Arc<SimRoot>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/vmm-test-sim-root");
        Arc::new(SimRoot::load_or_create(&dir).unwrap())
    })
    .clone()
}

fn sim_host() -> (Arc<SimSnpHost>, Arc<Mutex<SimPsp>>) {
    let kvm = open_kvm(Path::new(KVM_PATH)).expect("these tests need /dev/kvm");
    let psp = Arc::new(Mutex::new(SimPsp::new(root())));
    (Arc::new(SimSnpHost::new(&kvm, psp.clone()).unwrap()), psp)
}

/// A CPUID page with one leaf-1 entry that sets TSC-deadline (ECX bit 24), which the
/// firmware refuses.
fn bad_cpuid_page() -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    page[0..4].copy_from_slice(&1u32.to_le_bytes());
    page[16..20].copy_from_slice(&1u32.to_le_bytes());
    page[16 + 32..16 + 36].copy_from_slice(&((1u32 << 24) | 1).to_le_bytes());
    page
}

fn small_plan() -> LaunchPlan<'static> {
    let normal = LaunchRegion::new(
        0x10_0000,
        3 * PAGE_SIZE as u64,
        PageType::Normal,
        RegionRole::Other("code"),
        RegionContents::Bytes(vec![0xab; 3 * PAGE_SIZE].into()),
    )
    .unwrap();
    let cpuid = LaunchRegion::new(
        0x4000,
        PAGE_SIZE as u64,
        PageType::Cpuid,
        RegionRole::Other("CPUID page"),
        RegionContents::Zeroes,
    )
    .unwrap();
    let secrets = LaunchRegion::new(
        0x5000,
        PAGE_SIZE as u64,
        PageType::Secrets,
        RegionRole::Other("secrets page"),
        RegionContents::Zeroes,
    )
    .unwrap();
    // More pages than the simulated kernel takes per call: partial progress happens.
    let zero = LaunchRegion::new(
        0x20_0000,
        (super::sim::PAGES_PER_CALL + 7) * PAGE_SIZE as u64,
        PageType::Zero,
        RegionRole::Other("RAM"),
        RegionContents::Zeroes,
    )
    .unwrap();
    let vmsa = Vmsa::qemu_reset(BSP_RESET_EIP, 0, 1);
    LaunchPlan::new(
        vec![normal, cpuid, secrets, zero, LaunchRegion::vmsa(0, &vmsa)],
        1,
    )
    .unwrap()
}

#[test]
fn the_launcher_loops_retries_the_cpuid_page_and_measures_what_was_planned() {
    let (host, psp) = sim_host();
    let mem = create_guest_memory(MemorySize(16 << 20)).unwrap();
    let mut launcher = SnpLauncher::new(host.clone()).unwrap();
    launcher.add_memory(&mem).unwrap();
    let plan = small_plan();
    launcher.launch_start(plan.policy).unwrap();
    let vcpu = launcher.create_vcpu(0).unwrap();
    let vmsa = plan.regions().iter().find_map(|r| r.vmsa_state()).unwrap();
    vcpu.set_regs(&regs_from_vmsa(vmsa)).unwrap();
    let sregs = vcpu.get_sregs().unwrap();
    vcpu.set_sregs(&sregs_from_vmsa(vmsa, sregs)).unwrap();
    let mut xsave = vcpu.get_xsave().unwrap();
    xsave.region[0] = (xsave.region[0] & !0xffff) | u32::from(vmsa.x87_fcw);
    xsave.region[6] = vmsa.mxcsr;
    // SAFETY: the buffer came from KVM_GET_XSAVE on this vCPU and keeps its layout.
    unsafe { vcpu.set_xsave(&xsave) }.unwrap();

    let stats = launcher
        .launch_regions(&plan, &bad_cpuid_page())
        .unwrap()
        .clone();
    assert_eq!(
        stats.cpuid_retries, 1,
        "the corrected CPUID page was retried"
    );
    assert!(
        stats.update_calls >= 6,
        "the ZERO range needed more than one call: {stats:?}"
    );
    launcher.finish(&plan, &[&vcpu]).unwrap();
    let measured = psp.lock().unwrap().measurement();
    assert_eq!(
        measured,
        plan.measure(),
        "the PSP measured what the plan predicts"
    );
    // The NORMAL bytes are in guest memory, the secrets page holds VMPCK0.
    let mut page = [0u8; PAGE_SIZE];
    vm_memory::Bytes::read_slice(&mem, &mut page, vm_memory::GuestAddress(0x10_0000)).unwrap();
    assert!(page.iter().all(|&b| b == 0xab));
    vm_memory::Bytes::read_slice(&mem, &mut page, vm_memory::GuestAddress(0x5000)).unwrap();
    assert_eq!(&page[0x20..0x40], &psp.lock().unwrap().vmpcks()[0][..]);
    assert!(host.is_private(0x10_0000, 3 * PAGE_SIZE as u64));
}

#[test]
fn the_simulated_kernel_enforces_the_preconditions() {
    // INIT2 after a vCPU exists is refused.
    let (host, _) = sim_host();
    let _vcpu = host.create_vcpu(0).unwrap();
    assert!(host.sev_init2(&KvmSevInit::default()).is_err());

    // LAUNCH_UPDATE of a page that is not private is refused, naming the call.
    let (host, _) = sim_host();
    let mem = create_guest_memory(MemorySize(16 << 20)).unwrap();
    let mut launcher = SnpLauncher::new(host.clone()).unwrap();
    launcher.add_memory(&mem).unwrap();
    launcher.launch_start(0x3_0000).unwrap();
    let mut src = vec![1u8; PAGE_SIZE];
    let mut update = super::abi::KvmSevSnpLaunchUpdate {
        gfn_start: 0x100,
        uaddr: src.as_mut_ptr() as u64,
        len: PAGE_SIZE as u64,
        type_: super::abi::page_type::NORMAL,
        ..Default::default()
    };
    // SAFETY: `src` is a live page-sized buffer.
    let err = unsafe { host.snp_launch_update(&mut update) }.unwrap_err();
    assert_eq!(err.errno, libc::EINVAL, "{err}");
    // Once private, it goes in; the same page twice is refused.
    host.set_memory_attributes(&KvmMemoryAttributes {
        address: 0x10_0000,
        size: PAGE_SIZE as u64,
        attributes: KVM_MEMORY_ATTRIBUTE_PRIVATE,
        flags: 0,
    })
    .unwrap();
    let mut again = update;
    // SAFETY: as above.
    unsafe { host.snp_launch_update(&mut update) }.unwrap();
    assert_eq!(update.len, 0);
    // SAFETY: as above.
    assert!(unsafe { host.snp_launch_update(&mut again) }.is_err());

    // A second LAUNCH_START is refused; so is a policy KVM does not accept (no SMT).
    assert!(launcher.launch_start(0x3_0000).is_err());
    let (host, _) = sim_host();
    let launcher = SnpLauncher::new(host).unwrap();
    match launcher.launch_start(0x2_0000) {
        Err(LaunchError::Host { source, .. }) => assert_eq!(source.errno, libc::EINVAL),
        other => panic!("{other:?}"),
    }
}

#[test]
fn page_state_changes_follow_the_guest_and_the_policy() {
    let (host, _) = sim_host();
    let mem = create_guest_memory(MemorySize(16 << 20)).unwrap();
    let mut launcher = SnpLauncher::new(host.clone()).unwrap();
    launcher.add_memory(&mem).unwrap();
    // 4 pages at 1 MiB to private (bit 4), then back to shared.
    assert_eq!(
        map_gpa_range(host.as_ref(), &[0x10_0000, 4, 0x10, 0, 0, 0], true),
        0
    );
    assert!(host.is_private(0x10_0000, 4 * PAGE_SIZE as u64));
    assert_eq!(
        map_gpa_range(host.as_ref(), &[0x10_0000, 4, 0x0, 0, 0, 0], true),
        0
    );
    assert!(!host.is_private(0x10_0000, PAGE_SIZE as u64));
    // A 2 MiB request that is *shared* (page size 1, bit 4 clear) stays shared
    // (libkrun's bug turns it private).
    assert_eq!(
        map_gpa_range(host.as_ref(), &[0x20_0000, 512, 0x1, 0, 0, 0], true),
        0
    );
    assert!(!host.is_private(0x20_0000, PAGE_SIZE as u64));
    // The policy forbids shared memory: refused, nothing changes.
    map_gpa_range(host.as_ref(), &[0x30_0000, 1, 0x10, 0, 0, 0], true);
    assert_eq!(
        map_gpa_range(host.as_ref(), &[0x30_0000, 1, 0x0, 0, 0, 0], false),
        libc::EPERM as u64
    );
    assert!(host.is_private(0x30_0000, PAGE_SIZE as u64));
    // Malformed requests fail without touching anything.
    for args in [
        [0x10_0001, 1, 0x10, 0, 0, 0],
        [0x10_0000, 0, 0x10, 0, 0, 0],
        [0x10_0000, 1, 0x30, 0, 0, 0],
        [u64::MAX - 0xfff, 2, 0x10, 0, 0, 0],
        [0x10_0000, u64::MAX, 0x10, 0, 0, 0],
    ] {
        assert_eq!(
            map_gpa_range(host.as_ref(), &args, true),
            libc::EINVAL as u64,
            "{args:x?}"
        );
    }
    // A memory-fault exit converts the page the guest touched.
    memory_fault(
        host.as_ref(),
        super::abi::KVM_MEMORY_EXIT_FLAG_PRIVATE,
        0x40_0010,
        8,
    )
    .unwrap();
    assert!(host.is_private(0x40_0000, PAGE_SIZE as u64));
    assert!(memory_fault(host.as_ref(), 1 << 40, 0x40_0000, 8).is_err());
}
