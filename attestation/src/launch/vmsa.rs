//! The initial VMSA (VM save area) of an SEV-ES/SNP vCPU: the register state the secure
//! processor encrypts and measures with SNP_LAUNCH_UPDATE (page type VMSA).
//!
//! Layout: AMD64 Architecture Programmer's Manual vol. 2, appendix B, table B-4
//! ("VMSA layout, state save area for SEV-ES"); one 4 KiB page, little endian. Only the
//! fields a launch sets are modelled; everything else stays zero, as QEMU/KVM leave it.

/// Size of a VMSA page.
pub const VMSA_SIZE: usize = 4096;

/// Byte offsets of the VMSA fields used here (APM vol. 2, table B-4).
pub mod offsets {
    /// ES segment (each segment: u16 selector, u16 attrib, u32 limit, u64 base).
    pub const ES: usize = 0x000;
    /// CS segment.
    pub const CS: usize = 0x010;
    /// SS segment.
    pub const SS: usize = 0x020;
    /// DS segment.
    pub const DS: usize = 0x030;
    /// FS segment.
    pub const FS: usize = 0x040;
    /// GS segment.
    pub const GS: usize = 0x050;
    /// GDTR.
    pub const GDTR: usize = 0x060;
    /// LDTR.
    pub const LDTR: usize = 0x070;
    /// IDTR.
    pub const IDTR: usize = 0x080;
    /// TR.
    pub const TR: usize = 0x090;
    /// VMPL the vCPU runs at (u8).
    pub const VMPL: usize = 0x0ca;
    /// CPL (u8).
    pub const CPL: usize = 0x0cb;
    /// EFER.
    pub const EFER: usize = 0x0d0;
    /// CR4.
    pub const CR4: usize = 0x148;
    /// CR3.
    pub const CR3: usize = 0x150;
    /// CR0.
    pub const CR0: usize = 0x158;
    /// DR7.
    pub const DR7: usize = 0x160;
    /// DR6.
    pub const DR6: usize = 0x168;
    /// RFLAGS.
    pub const RFLAGS: usize = 0x170;
    /// RIP.
    pub const RIP: usize = 0x178;
    /// RSP.
    pub const RSP: usize = 0x1d8;
    /// RAX.
    pub const RAX: usize = 0x1f8;
    /// G_PAT (guest PAT MSR).
    pub const G_PAT: usize = 0x268;
    /// RDX.
    pub const RDX: usize = 0x310;
    /// RSI.
    pub const RSI: usize = 0x330;
    /// SEV_FEATURES.
    pub const SEV_FEATURES: usize = 0x3b0;
    /// XCR0.
    pub const XCR0: usize = 0x3e8;
    /// MXCSR (u32).
    pub const MXCSR: usize = 0x408;
    /// x87 FCW (u16).
    pub const X87_FCW: usize = 0x410;
}

/// A segment register as the VMSA stores it (the VMCB "compressed" attribute format).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes: bits 0-7 of the descriptor's access byte, bits 8-11 its AVL/L/DB/G.
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

impl Segment {
    const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Segment {
            selector,
            attrib,
            limit,
            base,
        }
    }
}

/// Initial register state of one vCPU, as it goes into the VMSA page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vmsa {
    /// ES.
    pub es: Segment,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// GDTR (selector and attributes unused).
    pub gdtr: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// IDTR (selector and attributes unused).
    pub idtr: Segment,
    /// TR.
    pub tr: Segment,
    /// VMPL.
    pub vmpl: u8,
    /// EFER.
    pub efer: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RAX.
    pub rax: u64,
    /// RDX (QEMU puts the CPUID family/model/stepping signature here at reset).
    pub rdx: u64,
    /// RSI (the Linux boot protocol's boot_params pointer for a direct 64-bit entry).
    pub rsi: u64,
    /// Guest PAT MSR.
    pub g_pat: u64,
    /// SEV_FEATURES (bit 0 SNP active, ...): the guest's enabled SEV features.
    pub sev_features: u64,
    /// XCR0.
    pub xcr0: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// x87 control word.
    pub x87_fcw: u16,
}

/// PAT MSR reset value (APM vol. 2, section A.3).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;
/// Where the BSP starts: the x86 reset vector.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;

const EFER_SVME: u64 = 1 << 12;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_MCE: u64 = 1 << 6;

/// Entry state for a 64-bit direct boot (the VMM's own layout): the vCPU starts in long
/// mode with paging on, flat 64-bit code and data segments from the guest's GDT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongModeEntry {
    /// Entry point.
    pub rip: u64,
    /// RSI at entry (boot_params GPA for Linux's 64-bit boot protocol).
    pub rsi: u64,
    /// RSP at entry.
    pub rsp: u64,
    /// Page-table root (CR3).
    pub cr3: u64,
    /// GDT base and limit the guest will keep using.
    pub gdt_base: u64,
    /// GDT limit.
    pub gdt_limit: u16,
    /// Code segment selector in that GDT.
    pub code_selector: u16,
    /// Data segment selector in that GDT.
    pub data_selector: u16,
    /// SEV_FEATURES.
    pub sev_features: u64,
}

impl Vmsa {
    /// The reset state QEMU (with KVM) gives an SEV-SNP vCPU that starts executing at
    /// `eip` in real mode: CS base `eip & 0xffff0000`, RIP `eip & 0xffff`. `eip` is
    /// [`BSP_RESET_EIP`] for the BSP and OVMF's SEV-ES reset block address for APs.
    /// `vcpu_signature` is the CPUID(1).EAX value QEMU puts in RDX.
    pub fn qemu_reset(eip: u32, vcpu_signature: u32, sev_features: u64) -> Self {
        let data = Segment::new(0, 0x93, 0xffff, 0);
        Vmsa {
            es: data,
            cs: Segment::new(0xf000, 0x9b, 0xffff, u64::from(eip & 0xffff_0000)),
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment::new(0, 0, 0xffff, 0),
            ldtr: Segment::new(0, 0x82, 0xffff, 0),
            idtr: Segment::new(0, 0, 0xffff, 0),
            tr: Segment::new(0, 0x8b, 0xffff, 0),
            efer: EFER_SVME,
            cr4: CR4_MCE,
            cr0: CR0_ET,
            dr7: 0x400,
            dr6: 0xffff_0ff0,
            rflags: 0x2,
            rip: u64::from(eip & 0xffff),
            rdx: u64::from(vcpu_signature),
            g_pat: PAT_RESET,
            sev_features,
            xcr0: 0x1,
            mxcsr: 0x1f80,
            x87_fcw: 0x37f,
            ..Vmsa::default()
        }
    }

    /// The reset state as Amazon EC2's hypervisor sets it (as sev-snp-measure models it):
    /// CS type 0x9a for the BSP, SS 0x92, TR 0x83, RDX 0x600, MXCSR and FCW zero.
    pub fn ec2_reset(eip: u32, sev_features: u64) -> Self {
        let mut v = Self::qemu_reset(eip, 0x600, sev_features);
        if eip == BSP_RESET_EIP {
            v.cs.attrib = 0x9a;
        }
        v.ss.attrib = 0x92;
        v.tr.attrib = 0x83;
        v.mxcsr = 0;
        v.x87_fcw = 0;
        v
    }

    /// The reset state as Google Compute Engine's hypervisor sets it (as sev-snp-measure
    /// models it): G_PAT 0x70106, RDX 0x600, MXCSR and FCW zero.
    pub fn gce_reset(eip: u32, sev_features: u64) -> Self {
        let mut v = Self::qemu_reset(eip, 0x600, sev_features);
        v.g_pat = 0x0007_0106;
        v.mxcsr = 0;
        v.x87_fcw = 0;
        v
    }

    /// The state for entering a 64-bit kernel directly (long mode, paging on).
    pub fn long_mode(entry: &LongModeEntry) -> Self {
        // Attributes: 0x9b/0x93 = present, DPL 0, code exec/read or data read/write,
        // accessed; 0xa00 = G|L for 64-bit code, 0xc00 = G|DB for data.
        let data = Segment::new(entry.data_selector, 0xc93, 0xffff_ffff, 0);
        Vmsa {
            es: data,
            cs: Segment::new(entry.code_selector, 0xa9b, 0xffff_ffff, 0),
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment::new(0, 0, u32::from(entry.gdt_limit), entry.gdt_base),
            ldtr: Segment::new(0, 0x82, 0xffff, 0),
            idtr: Segment::new(0, 0, 0xffff, 0),
            tr: Segment::new(0, 0x8b, 0xffff, 0),
            efer: EFER_SVME | EFER_LME | EFER_LMA,
            cr0: CR0_PE | CR0_ET | CR0_NE | CR0_PG,
            cr3: entry.cr3,
            cr4: CR4_PAE | CR4_MCE,
            dr7: 0x400,
            dr6: 0xffff_0ff0,
            rflags: 0x2,
            rip: entry.rip,
            rsp: entry.rsp,
            rsi: entry.rsi,
            g_pat: PAT_RESET,
            sev_features: entry.sev_features,
            xcr0: 0x1,
            mxcsr: 0x1f80,
            x87_fcw: 0x37f,
            ..Vmsa::default()
        }
    }

    /// The state for entering flat 32-bit protected mode with paging off at `eip` (how
    /// Cloister's boot verifier starts: the same state on every platform, no page tables
    /// needed). Segments are flat 4 GiB (code 0x10, data 0x18; the verifier loads its own
    /// GDT before it reloads them).
    pub fn protected_mode(eip: u32, sev_features: u64) -> Self {
        // 0xc9b / 0xc93: present, DPL 0, code exec/read or data read/write, accessed,
        // G (4 KiB granularity) and DB (32-bit).
        let data = Segment::new(0x18, 0xc93, 0xffff_ffff, 0);
        Vmsa {
            es: data,
            cs: Segment::new(0x10, 0xc9b, 0xffff_ffff, 0),
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: Segment::new(0, 0, 0xffff, 0),
            ldtr: Segment::new(0, 0x82, 0xffff, 0),
            idtr: Segment::new(0, 0, 0xffff, 0),
            tr: Segment::new(0, 0x8b, 0xffff, 0),
            efer: EFER_SVME,
            cr0: CR0_PE | CR0_ET | CR0_NE,
            cr4: CR4_MCE,
            dr7: 0x400,
            dr6: 0xffff_0ff0,
            rflags: 0x2,
            rip: u64::from(eip),
            g_pat: PAT_RESET,
            sev_features,
            xcr0: 0x1,
            mxcsr: 0x1f80,
            x87_fcw: 0x37f,
            ..Vmsa::default()
        }
    }

    /// Encodes the VMSA page.
    pub fn to_page(&self) -> Box<[u8; VMSA_SIZE]> {
        use offsets as o;
        let mut p = Box::new([0u8; VMSA_SIZE]);
        let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
        for (at, s) in [
            (o::ES, self.es),
            (o::CS, self.cs),
            (o::SS, self.ss),
            (o::DS, self.ds),
            (o::FS, self.fs),
            (o::GS, self.gs),
            (o::GDTR, self.gdtr),
            (o::LDTR, self.ldtr),
            (o::IDTR, self.idtr),
            (o::TR, self.tr),
        ] {
            put(at, &s.selector.to_le_bytes());
            put(at + 2, &s.attrib.to_le_bytes());
            put(at + 4, &s.limit.to_le_bytes());
            put(at + 8, &s.base.to_le_bytes());
        }
        put(o::VMPL, &[self.vmpl]);
        for (at, v) in [
            (o::EFER, self.efer),
            (o::CR4, self.cr4),
            (o::CR3, self.cr3),
            (o::CR0, self.cr0),
            (o::DR7, self.dr7),
            (o::DR6, self.dr6),
            (o::RFLAGS, self.rflags),
            (o::RIP, self.rip),
            (o::RSP, self.rsp),
            (o::RAX, self.rax),
            (o::G_PAT, self.g_pat),
            (o::RDX, self.rdx),
            (o::RSI, self.rsi),
            (o::SEV_FEATURES, self.sev_features),
            (o::XCR0, self.xcr0),
        ] {
            put(at, &v.to_le_bytes());
        }
        put(o::MXCSR, &self.mxcsr.to_le_bytes());
        put(o::X87_FCW, &self.x87_fcw.to_le_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// APM vol. 2 table B-4, field by field (name, size in bytes), in order. The offsets
    /// in [`offsets`] must equal the running sums.
    #[rustfmt::skip]
    const TABLE_B4: &[(&str, usize)] = &[
        ("es", 16), ("cs", 16), ("ss", 16), ("ds", 16), ("fs", 16), ("gs", 16),
        ("gdtr", 16), ("ldtr", 16), ("idtr", 16), ("tr", 16),
        ("vmpl0_ssp", 8), ("vmpl1_ssp", 8), ("vmpl2_ssp", 8), ("vmpl3_ssp", 8), ("u_cet", 8),
        ("reserved_0xc8", 2), ("vmpl", 1), ("cpl", 1), ("reserved_0xcc", 4), ("efer", 8),
        ("reserved_0xd8", 104), ("xss", 8), ("cr4", 8), ("cr3", 8), ("cr0", 8), ("dr7", 8),
        ("dr6", 8), ("rflags", 8), ("rip", 8), ("dr0", 8), ("dr1", 8), ("dr2", 8), ("dr3", 8),
        ("dr0_addr_mask", 8), ("dr1_addr_mask", 8), ("dr2_addr_mask", 8), ("dr3_addr_mask", 8),
        ("reserved_0x1c0", 24), ("rsp", 8), ("s_cet", 8), ("ssp", 8), ("isst_addr", 8),
        ("rax", 8), ("star", 8), ("lstar", 8), ("cstar", 8), ("sfmask", 8),
        ("kernel_gs_base", 8), ("sysenter_cs", 8), ("sysenter_esp", 8), ("sysenter_eip", 8),
        ("cr2", 8), ("reserved_0x248", 32), ("g_pat", 8), ("dbgctl", 8), ("br_from", 8),
        ("br_to", 8), ("last_excp_from", 8), ("last_excp_to", 8), ("reserved_0x298", 80),
        ("pkru", 4), ("tsc_aux", 4), ("reserved_0x2f0", 24), ("rcx", 8), ("rdx", 8),
        ("rbx", 8), ("reserved_0x320", 8), ("rbp", 8), ("rsi", 8), ("rdi", 8), ("r8", 8),
        ("r9", 8), ("r10", 8), ("r11", 8), ("r12", 8), ("r13", 8), ("r14", 8), ("r15", 8),
        ("reserved_0x380", 16), ("guest_exit_info_1", 8), ("guest_exit_info_2", 8),
        ("guest_exit_int_info", 8), ("guest_nrip", 8), ("sev_features", 8),
        ("vintr_ctrl", 8), ("guest_exit_code", 8), ("virtual_tom", 8), ("tlb_id", 8),
        ("pcpu_id", 8), ("event_inj", 8), ("xcr0", 8), ("reserved_0x3f0", 16),
        ("x87_dp", 8), ("mxcsr", 4), ("x87_ftw", 2), ("x87_fsw", 2), ("x87_fcw", 2),
    ];

    fn offset_of(name: &str) -> usize {
        let mut at = 0;
        for (n, size) in TABLE_B4 {
            if *n == name {
                return at;
            }
            at += size;
        }
        usize::MAX
    }

    #[test]
    fn offsets_match_table_b4() {
        use offsets as o;
        #[rustfmt::skip]
        let pairs = [
            ("es", o::ES), ("cs", o::CS), ("ss", o::SS), ("ds", o::DS), ("fs", o::FS),
            ("gs", o::GS), ("gdtr", o::GDTR), ("ldtr", o::LDTR), ("idtr", o::IDTR),
            ("tr", o::TR), ("vmpl", o::VMPL), ("cpl", o::CPL), ("efer", o::EFER),
            ("cr4", o::CR4), ("cr3", o::CR3), ("cr0", o::CR0), ("dr7", o::DR7),
            ("dr6", o::DR6), ("rflags", o::RFLAGS), ("rip", o::RIP), ("rsp", o::RSP),
            ("rax", o::RAX), ("g_pat", o::G_PAT), ("rdx", o::RDX), ("rsi", o::RSI),
            ("sev_features", o::SEV_FEATURES), ("xcr0", o::XCR0), ("mxcsr", o::MXCSR),
            ("x87_fcw", o::X87_FCW),
        ];
        for (name, off) in pairs {
            assert_eq!(offset_of(name), off, "offset of {name}");
        }
        // A few spot values straight from the APM table.
        assert_eq!(o::EFER, 0xd0);
        assert_eq!(o::RIP, 0x178);
        assert_eq!(o::SEV_FEATURES, 0x3b0);
        assert_eq!(o::XCR0, 0x3e8);
    }

    fn u64_at(p: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[at..at + 8]);
        u64::from_le_bytes(b)
    }

    #[test]
    fn bsp_reset_state() {
        let p = Vmsa::qemu_reset(BSP_RESET_EIP, 0x00a0_0f11, 0x1).to_page();
        // CS: selector 0xf000, attrib 0x9b, limit 0xffff, base 0xffff0000.
        assert_eq!(
            &p[0x10..0x20],
            &[0x00, 0xf0, 0x9b, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(u64_at(&p[..], offsets::RIP), 0xfff0);
        assert_eq!(u64_at(&p[..], offsets::RDX), 0x00a0_0f11);
        assert_eq!(u64_at(&p[..], offsets::SEV_FEATURES), 1);
        assert_eq!(u64_at(&p[..], offsets::EFER), 0x1000);
        assert_eq!(u64_at(&p[..], offsets::G_PAT), PAT_RESET);
        assert_eq!(
            &p[offsets::MXCSR..offsets::MXCSR + 4],
            &0x1f80u32.to_le_bytes()
        );
        assert_eq!(
            &p[offsets::X87_FCW..offsets::X87_FCW + 2],
            &0x37fu16.to_le_bytes()
        );
        assert!(p[0x420..].iter().all(|b| *b == 0));
    }

    #[test]
    fn ap_reset_state_uses_reset_block_address() {
        let p = Vmsa::qemu_reset(0x0080_b004, 0x0080_0f12, 0x1).to_page();
        assert_eq!(u64_at(&p[..], offsets::CS + 8), 0x0080_0000);
        assert_eq!(u64_at(&p[..], offsets::RIP), 0xb004);
    }

    #[test]
    fn long_mode_entry_state() {
        let v = Vmsa::long_mode(&LongModeEntry {
            rip: 0x100_0000,
            rsi: 0x7000,
            rsp: 0x8ff0,
            cr3: 0x9000,
            gdt_base: 0x500,
            gdt_limit: 0x1f,
            code_selector: 0x8,
            data_selector: 0x10,
            sev_features: 1,
        });
        let p = v.to_page();
        assert_eq!(u64_at(&p[..], offsets::EFER), 0x1500);
        assert_eq!(u64_at(&p[..], offsets::CR0) & 0x8000_0001, 0x8000_0001);
        assert_eq!(u64_at(&p[..], offsets::CR4) & 0x20, 0x20);
        assert_eq!(u64_at(&p[..], offsets::CR3), 0x9000);
        assert_eq!(u64_at(&p[..], offsets::RIP), 0x100_0000);
        assert_eq!(u64_at(&p[..], offsets::RSI), 0x7000);
        // CS: selector 8, L=1 (bit 9 of the attributes), D=0.
        assert_eq!(&p[offsets::CS..offsets::CS + 2], &8u16.to_le_bytes());
        let attrib = u16::from_le_bytes([p[offsets::CS + 2], p[offsets::CS + 3]]);
        assert_eq!(attrib & 0x600, 0x200);
        assert_eq!(u64_at(&p[..], offsets::GDTR + 8), 0x500);
    }

    #[test]
    fn reset_pages_hash_as_sev_snp_measure_builds_them() {
        // SHA-384 of the VMSA pages sev-snp-measure 0.0.13 builds for AP EIP 0x80b004,
        // signature 0xa00f11 (EPYC-Milan), guest features 0x1: [BSP, AP] per VMM type.
        let hex = |p: &[u8; VMSA_SIZE]| -> String {
            crate::launch::digest::sha384(p)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let cases = [
            (
                Vmsa::qemu_reset(BSP_RESET_EIP, 0xa0_0f11, 1),
                Vmsa::qemu_reset(0x80_b004, 0xa0_0f11, 1),
                "728af287318db5f3fc4d2357a969483c4225956dc555b514a78d64ee372112d13b3dca8afd02cdbd1c55697d8ce087f5",
                "24d6d6fe1cc2fd76d9504a2e411e2a1e229a6723c94521c373c21dd97514c44895fc07fea07e04b4186d90160c8dad0b",
            ),
            (
                Vmsa::ec2_reset(BSP_RESET_EIP, 1),
                Vmsa::ec2_reset(0x80_b004, 1),
                "d08442e8bcdb6a5dcd7f22e4f7fd6979beffb9f0bb54a9d1977407fe84f482abf23c1baae6ce95a6a9e7a94c3c51f412",
                "acff2d22db95b8eb82272d844aa2ad1f8f84218ccbab003697acade12228a6e901256e160d41713c22fed92e0a1ed0e1",
            ),
            (
                Vmsa::gce_reset(BSP_RESET_EIP, 1),
                Vmsa::gce_reset(0x80_b004, 1),
                "f9e03177dad7f4819ee193af7cfb70507d8a923ab513412e908bc73460a9dfdaa54215d58952816118ffb2ec281e7fd2",
                "5302d262c88780a7a13159a327fa99cf188cab234c680e1f3b6729171380a4312511813a354cab136d69c778050c245a",
            ),
        ];
        for (bsp, ap, bsp_hash, ap_hash) in cases {
            assert_eq!(hex(&bsp.to_page()), bsp_hash);
            assert_eq!(hex(&ap.to_page()), ap_hash);
        }
    }
}
