//! A vCPU's initial state and its VMSA, both ways.
//!
//! Every platform starts its vCPUs from the launch plan's VMSA state: `none` and `sim`
//! load it with KVM_SET_REGS/SREGS/FPU, and real SNP does the same because KVM builds the
//! measured VMSA from exactly those registers (`sev_es_sync_vmsa`, SNP-FACTS §1.8). The
//! reverse translation is what the simulated kernel does at LAUNCH_FINISH: it reads the
//! registers back and builds the VMSA page the secure processor measures, so a vCPU set
//! up differently from the plan changes the measurement instead of going unnoticed.

use cloister_attestation::launch::vmsa::{Segment, Vmsa};
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

/// EFER.SVME: KVM forces it on in every VMSA; it is not a guest-visible EFER bit.
const EFER_SVME: u64 = 1 << 12;

fn segment_to_kvm(s: &Segment) -> kvm_segment {
    let a = s.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    let present = bit(7);
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 0x3) as u8,
        present,
        avl: bit(8),
        l: bit(9),
        db: bit(10),
        g: bit(11),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn segment_from_kvm(s: &kvm_segment) -> Segment {
    // KVM reports an unusable segment with its attributes cleared (SVM's VMCB does the
    // same), so the attributes are taken as they are.
    let attrib = u16::from(s.type_ & 0xf)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | u16::from(s.present & 1) << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11;
    Segment {
        selector: s.selector,
        attrib,
        limit: s.limit,
        base: s.base,
    }
}

fn dtable_to_kvm(s: &Segment) -> kvm_dtable {
    kvm_dtable {
        base: s.base,
        limit: s.limit as u16,
        padding: [0; 3],
    }
}

fn dtable_from_kvm(d: &kvm_dtable) -> Segment {
    Segment {
        selector: 0,
        attrib: 0,
        limit: u32::from(d.limit),
        base: d.base,
    }
}

/// The general registers of `vmsa`.
pub fn regs_from_vmsa(vmsa: &Vmsa) -> kvm_regs {
    kvm_regs {
        rax: vmsa.rax,
        rdx: vmsa.rdx,
        rsi: vmsa.rsi,
        rsp: vmsa.rsp,
        rip: vmsa.rip,
        rflags: vmsa.rflags,
        ..Default::default()
    }
}

/// The special registers of `vmsa`, on top of `base` (KVM's current values, which keep
/// the fields a VMSA does not carry: APIC base, interrupt bitmap, CR2, CR8).
pub fn sregs_from_vmsa(vmsa: &Vmsa, base: kvm_sregs) -> kvm_sregs {
    kvm_sregs {
        cs: segment_to_kvm(&vmsa.cs),
        ds: segment_to_kvm(&vmsa.ds),
        es: segment_to_kvm(&vmsa.es),
        fs: segment_to_kvm(&vmsa.fs),
        gs: segment_to_kvm(&vmsa.gs),
        ss: segment_to_kvm(&vmsa.ss),
        tr: segment_to_kvm(&vmsa.tr),
        ldt: segment_to_kvm(&vmsa.ldtr),
        gdt: dtable_to_kvm(&vmsa.gdtr),
        idt: dtable_to_kvm(&vmsa.idtr),
        cr0: vmsa.cr0,
        cr3: vmsa.cr3,
        cr4: vmsa.cr4,
        efer: vmsa.efer & !EFER_SVME,
        ..base
    }
}

/// The x87/SSE control state of `vmsa`.
pub fn fpu_from_vmsa(vmsa: &Vmsa) -> kvm_fpu {
    kvm_fpu {
        fcw: vmsa.x87_fcw,
        mxcsr: vmsa.mxcsr,
        ..Default::default()
    }
}

/// What the kernel would put in the VMSA for a vCPU with these registers: the model the
/// simulated platform measures. Fields KVM takes from elsewhere (G_PAT, DR6/DR7, XCR0)
/// come from `fixed`, the plan's VMSA for that vCPU, because this host cannot read them
/// back in the same form; everything a VMM sets through KVM_SET_REGS/SREGS/FPU is read.
pub fn vmsa_from_kvm(regs: &kvm_regs, sregs: &kvm_sregs, fpu: &kvm_fpu, fixed: &Vmsa) -> Vmsa {
    Vmsa {
        es: segment_from_kvm(&sregs.es),
        cs: segment_from_kvm(&sregs.cs),
        ss: segment_from_kvm(&sregs.ss),
        ds: segment_from_kvm(&sregs.ds),
        fs: segment_from_kvm(&sregs.fs),
        gs: segment_from_kvm(&sregs.gs),
        gdtr: dtable_from_kvm(&sregs.gdt),
        ldtr: segment_from_kvm(&sregs.ldt),
        idtr: dtable_from_kvm(&sregs.idt),
        tr: segment_from_kvm(&sregs.tr),
        vmpl: 0,
        efer: sregs.efer | EFER_SVME,
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        dr6: fixed.dr6,
        dr7: fixed.dr7,
        rflags: regs.rflags,
        rip: regs.rip,
        rsp: regs.rsp,
        rax: regs.rax,
        rdx: regs.rdx,
        rsi: regs.rsi,
        g_pat: fixed.g_pat,
        sev_features: fixed.sev_features,
        xcr0: fixed.xcr0,
        mxcsr: fpu.mxcsr,
        x87_fcw: fpu.fcw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_attestation::launch::vmsa::{LongModeEntry, BSP_RESET_EIP};

    fn round_trip(v: &Vmsa) -> Vmsa {
        let regs = regs_from_vmsa(v);
        let sregs = sregs_from_vmsa(v, kvm_sregs::default());
        let fpu = fpu_from_vmsa(v);
        vmsa_from_kvm(&regs, &sregs, &fpu, v)
    }

    #[test]
    fn long_mode_entry_survives_the_round_trip() {
        let v = Vmsa::long_mode(&LongModeEntry {
            rip: 0x100_0200,
            rsi: 0x7000,
            rsp: 0x8ff0,
            cr3: 0x9000,
            gdt_base: 0x500,
            gdt_limit: 0x27,
            code_selector: 0x10,
            data_selector: 0x18,
            sev_features: 1,
        });
        assert_eq!(round_trip(&v), v);
        assert_eq!(round_trip(&v).to_page(), v.to_page());
    }

    #[test]
    fn reset_state_survives_the_round_trip() {
        let v = Vmsa::qemu_reset(BSP_RESET_EIP, 0xa00f11, 1);
        assert_eq!(round_trip(&v), v);
    }

    /// A register the VMM sets differently shows up in the VMSA (and so in the digest).
    #[test]
    fn a_different_register_changes_the_page() {
        let v = Vmsa::qemu_reset(BSP_RESET_EIP, 0, 1);
        let mut regs = regs_from_vmsa(&v);
        regs.rip += 1;
        let sregs = sregs_from_vmsa(&v, kvm_sregs::default());
        let other = vmsa_from_kvm(&regs, &sregs, &fpu_from_vmsa(&v), &v);
        assert_ne!(other.to_page(), v.to_page());
    }
}
