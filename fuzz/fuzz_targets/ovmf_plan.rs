//! OVMF firmware images: the footer GUID table and SEV metadata parser, and the QEMU+OVMF
//! launch plan and digest built on it. Any image is parsed or refused, never a panic.
#![no_main]

use cloister_attestation::launch::{qemu_ovmf_plan, QemuOvmfParams, VmmType};
use cloister_firmware::OvmfImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the plan's parameters; the rest is the image.
    let Some((&knobs, image)) = data.split_first() else {
        return;
    };
    let Ok(ovmf) = OvmfImage::parse(image) else {
        return;
    };
    let vmm = match knobs % 3 {
        0 => VmmType::Qemu,
        1 => VmmType::Ec2,
        _ => VmmType::Gce,
    };
    let params = QemuOvmfParams {
        vcpus: u32::from(knobs >> 5) + 1,
        vcpu_signature: 0x00a0_0f11,
        guest_features: 1,
        kernel_hashes: None,
        vmm,
    };
    if let Ok(plan) = qemu_ovmf_plan(&ovmf, &params) {
        let _ = plan.measure();
    }
});
