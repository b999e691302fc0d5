//! Cloister's boot verifier: the only code the PSP measures in Cloister's verifier layout
//! (with the manifest page and the VMSAs). The decisions are the pure library
//! `cloister-boot-verifier`; this is the machine around them.
//!
//! 1. Entered at `verifier_entry` in 32-bit protected mode, paging off (on SEV-SNP every
//!    access is then private). It reads the C-bit position from the CPUID page the
//!    manifest names (leaf 0x8000001F, when EAX says SEV-SNP), builds an identity map of
//!    4 GiB with that bit in every entry, and enters long mode. The measured bytes are
//!    the same on every platform; only the CPUID page differs.
//! 2. With a C-bit (an SNP guest) it checks SEV_STATUS, converts to private and
//!    PVALIDATEs every e820 RAM page not launched and not staging (2 MiB pages, 4 KiB
//!    fallback; "already validated" is fatal), and reads staging through an alias mapping
//!    without the C-bit. Without one (sim, none) it says so on COM1 and skips that.
//! 3. It copies the kernel's setup sectors into its own scratch and its protected-mode
//!    code to the load address, the initrd and the command line to theirs, hashes the
//!    private copies and compares them with the manifest's SHA-384. On any mismatch it
//!    stops the guest (SNP: a GHCB termination request; otherwise a console line and the
//!    debug-exit port) and never jumps.
//! 4. On SNP it then validates the staging pages too, builds the zero page with the CC
//!    blob, and enters Linux's 64-bit entry with RSI = zero page, interrupts off.

#![no_std]
#![no_main]

/// memcpy, memmove, memset, memcmp, bcmp: the test guest's, shared by path (both are
/// bare-metal images without a C library).
#[path = "../../../tests/guest/src/mem.rs"]
mod mem;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use cloister_boot_verifier::manifest::{check_digest, digest_eq, Image, Manifest, PAGE_SIZE};
use cloister_boot_verifier::validate::{Chunk, Plan, PAGE_4K};
use cloister_boot_verifier::zero_page::{self, ZERO_PAGE_SIZE};
use sha2::{Digest, Sha384};

/// Where the VMM puts the manifest (measured).
const MANIFEST_GPA: u64 = 0x8000;
/// Largest setup area (setup sectors + boot sector) accepted.
const SETUP_MAX: usize = 64 * 1024;
/// The shared alias of the first 4 GiB: staging GPA P is read at ALIAS + P on SNP.
const ALIAS_BASE: u64 = 1 << 39;
/// The debug-exit port and the status the verifier ends a refused boot with.
const EXIT_PORT: u16 = 0xf4;
/// Exit status of a refused boot on sim and none.
const EXIT_REFUSED: u8 = 97;
/// GHCB MSR.
const GHCB_MSR: u32 = 0xC001_0130;
/// SEV_STATUS MSR.
const SEV_STATUS_MSR: u32 = 0xC001_0131;
/// GHCB termination reason set of the verifier.
const REASON_SET: u64 = 2;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .code32
    .globl verifier_entry
verifier_entry:
    cli
    cld
    # EBP = the C-bit as a mask of the entries' high dword, from the CPUID page named by
    # the manifest (offset 0x100): leaf 0x8000001F with EAX bit 4 (SEV-SNP), EBX[5:0].
    xorl %ebp, %ebp
    movl 0x8100, %esi
    movl (%esi), %ecx
    cmpl $64, %ecx
    ja 3f
    leal 16(%esi), %edi
1:  testl %ecx, %ecx
    jz 3f
    cmpl $0x8000001f, (%edi)
    jne 2f
    testl $0x10, 24(%edi)
    jz 3f
    movl 28(%edi), %eax
    andl $0x3f, %eax
    cmpl $32, %eax
    jb 3f
    subl $32, %eax
    btsl %eax, %ebp
    jmp 3f
2:  addl $48, %edi
    decl %ecx
    jmp 1b
3:
    # Identity map 0..4 GiB: PML4[0] -> PDPT, PDPT[0..4] -> PD0..PD3 of 2 MiB pages.
    movl $__page_tables, %ebx
    movl %ebx, %edi
    xorl %eax, %eax
    movl $(6 * 4096 / 4), %ecx
    rep stosl
    leal 0x1003(%ebx), %eax
    movl %eax, (%ebx)
    movl %ebp, 4(%ebx)
    leal 0x2003(%ebx), %eax
    leal 0x1000(%ebx), %edi
    movl $4, %ecx
4:  movl %eax, (%edi)
    movl %ebp, 4(%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop 4b
    leal 0x2000(%ebx), %edi
    movl $0x83, %eax
    movl $2048, %ecx
5:  movl %eax, (%edi)
    movl %ebp, 4(%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 5b
    movl %ebx, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                 # PAE
    movl %eax, %cr4
    movl $0xc0000080, %ecx          # EFER.LME
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax           # PG, PE
    movl %eax, %cr0
    lgdt gdt_descriptor
    ljmp $0x10, $6f

    .code64
6:  movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    leaq __stack_top(%rip), %rsp
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq
    movl %ebp, %edi
    shlq $32, %rdi
    call verifier_main
7:  cli
    hlt
    jmp 7b

    .section .rodata.gdt, "a"
    .balign 16
gdt:
    .quad 0
    .quad 0
    .quad 0x00af9a000000ffff        # 0x10: 64-bit code
    .quad 0x00cf92000000ffff        # 0x18: data
gdt_end:
    .balign 8
gdt_descriptor:
    .word gdt_end - gdt - 1
    .quad gdt
    "#,
    options(att_syntax)
);

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __page_tables: u8;
}

/// Whether this is an SEV-SNP guest (the CPUID page said so).
static SNP: AtomicBool = AtomicBool::new(false);

fn snp() -> bool {
    SNP.load(Ordering::Relaxed)
}

// ---- console (sim and none only: on SNP port I/O would need the GHCB) ----

fn outb(port: u16, value: u8) {
    // SAFETY: port output to the VMM's devices; no memory effects.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

fn print(bytes: &[u8]) {
    if snp() {
        return;
    }
    for &b in bytes {
        if b == b'\n' {
            outb(0x3f8, b'\r');
        }
        outb(0x3f8, b);
    }
}

fn print_hex(mut v: u64) {
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    buf[i] = b'0';
    buf[i + 1] = b'x';
    print(&buf[i..]);
}

// ---- MSRs, VMGEXIT, PVALIDATE ----

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads an MSR this guest may read (the GHCB MSR, SEV_STATUS on SNP).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: writes the GHCB MSR, which only tells the hypervisor what is asked.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

fn vmgexit() {
    // SAFETY: VMGEXIT (`rep vmmcall`); the hypervisor answers in the GHCB MSR.
    unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack)) };
}

/// Stops the guest: on SNP with a GHCB termination request (set 2, `reason`), otherwise
/// with a console line and the debug-exit port.
fn refuse(reason: u8, why: &str) -> ! {
    if snp() {
        loop {
            wrmsr(
                GHCB_MSR,
                (u64::from(reason) << 16) | (REASON_SET << 12) | 0x100,
            );
            vmgexit();
        }
    }
    print(b"CLOISTER-VERIFIER: REFUSED ");
    print(why.as_bytes());
    print(b"\n");
    outb(EXIT_PORT, EXIT_REFUSED);
    // Without a debug-exit port: a triple fault, which the monitor reports as a failure
    // (a halted vCPU would wait for an interrupt forever).
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    loop {
        // SAFETY: an empty IDT and #BP: the exception cannot be delivered, the VM shuts
        // down; nothing returns.
        unsafe {
            asm!("lidt [{}]", "int3", in(reg) core::ptr::addr_of!(empty), options(nostack))
        };
    }
}

/// Termination reasons (set 2).
mod reason {
    pub const MANIFEST: u8 = 1;
    pub const SEV_STATUS: u8 = 2;
    pub const PSC: u8 = 3;
    pub const PVALIDATE: u8 = 4;
    pub const DOUBLE_VALIDATION: u8 = 5;
    pub const KERNEL_DIGEST: u8 = 6;
    pub const INITRD_DIGEST: u8 = 7;
    pub const CMDLINE_DIGEST: u8 = 8;
    pub const KERNEL_FORMAT: u8 = 9;
    pub const GHCB_VERSION: u8 = 10;
}

/// One MSR-protocol exchange: `request` in the GHCB MSR, VMGEXIT, the response.
fn msr_protocol(request: u64) -> u64 {
    let saved = rdmsr(GHCB_MSR);
    wrmsr(GHCB_MSR, request);
    vmgexit();
    let response = rdmsr(GHCB_MSR);
    wrmsr(GHCB_MSR, saved);
    response
}

/// GHCB protocol version 2 must be offered (SEV information), and the hypervisor must
/// support SNP (HV features bit 0): SNP-FACTS §3.6 point 4.
fn check_hypervisor() {
    let info = msr_protocol(0x002);
    let (max, min) = (info >> 48, (info >> 32) & 0xffff);
    if info & 0xfff != 0x001 || !(min..=max).contains(&2) {
        refuse(reason::GHCB_VERSION, "the hypervisor does not speak GHCB protocol 2");
    }
    let features = msr_protocol(0x080);
    if features & 0xfff != 0x081 || (features >> 12) & 1 == 0 {
        refuse(reason::GHCB_VERSION, "the hypervisor does not offer SNP (HV features)");
    }
}

/// MSR-protocol page state change of one 4 KiB frame to private.
fn make_private(gpa: u64) {
    let request = (1u64 << 52) | ((gpa >> 12) << 12) | 0x014;
    let response = msr_protocol(request);
    if response & 0xfff != 0x015 || response >> 32 != 0 {
        refuse(reason::PSC, "page state change to private refused");
    }
}

/// PVALIDATE return: FAIL_SIZEMISMATCH.
const PVALIDATE_FAIL_SIZEMISMATCH: u64 = 6;

/// PVALIDATE(validate) of the page at `va`; returns RAX and whether CF said "unchanged".
fn pvalidate(va: u64, huge: bool) -> (u64, bool) {
    let rc: u64;
    let unchanged: u8;
    // SAFETY: PVALIDATE (F2 0F 01 FF) of guest memory this verifier owns and has just
    // converted to private; it changes no memory contents Rust knows of.
    unsafe {
        asm!(".byte 0xf2, 0x0f, 0x01, 0xff", "setc {cf}",
             cf = out(reg_byte) unchanged,
             inout("rax") va => rc,
             in("ecx") u32::from(huge), in("edx") 1u32,
             options(nostack))
    };
    (rc, unchanged != 0)
}

fn validate_4k(addr: u64) {
    match pvalidate(addr, false) {
        (0, false) => {}
        (0, true) => refuse(reason::DOUBLE_VALIDATION, "page already validated"),
        _ => refuse(reason::PVALIDATE, "PVALIDATE failed"),
    }
}

fn validate_chunk(chunk: Chunk) {
    for page in chunk.pages_4k() {
        make_private(page);
    }
    if !chunk.huge {
        return validate_4k(chunk.addr);
    }
    match pvalidate(chunk.addr, true) {
        (0, false) => {}
        (0, true) => refuse(reason::DOUBLE_VALIDATION, "2 MiB page already validated"),
        (PVALIDATE_FAIL_SIZEMISMATCH, _) => chunk.pages_4k().for_each(validate_4k),
        _ => refuse(reason::PVALIDATE, "PVALIDATE (2 MiB) failed"),
    }
}

fn page_range(image: &Image) -> (u64, u64) {
    let start = image.staging & !(PAGE_4K - 1);
    let end = image.staging.saturating_add(image.size).saturating_add(PAGE_4K - 1) & !(PAGE_4K - 1);
    (start, end)
}

// ---- the alias mapping and copies ----

#[repr(C, align(4096))]
struct AliasTables {
    pdpt: [u64; 512],
    pd: [[u64; 512]; 4],
}

static mut ALIAS: AliasTables = AliasTables {
    pdpt: [0; 512],
    pd: [[0; 512]; 4],
};

#[repr(C, align(4096))]
struct Scratch([u8; SETUP_MAX]);
static mut SETUP: Scratch = Scratch([0; SETUP_MAX]);

/// Maps 0..4 GiB again at ALIAS_BASE without the C-bit (SNP: shared accesses).
fn map_alias(c_bit: u64) {
    // SAFETY: ALIAS is only touched here, once, before anything reads through it; the PML4
    // is entry's table at __page_tables, slot 1 unused.
    unsafe {
        let tables = &mut *core::ptr::addr_of_mut!(ALIAS);
        for (g, pd) in tables.pd.iter_mut().enumerate() {
            for (i, e) in pd.iter_mut().enumerate() {
                *e = (((g as u64) << 30) + ((i as u64) << 21)) | 0x83;
            }
            tables.pdpt[g] = (pd.as_ptr() as u64) | 0x3 | c_bit;
        }
        let pml4 = core::ptr::addr_of!(__page_tables) as *mut u64;
        pml4.add(1).write_volatile((tables.pdpt.as_ptr() as u64) | 0x3 | c_bit);
        asm!("mov rax, cr3", "mov cr3, rax", out("rax") _, options(nostack));
    }
}

/// The staged bytes of `image`, as the verifier may read them (through the alias on
/// SNP). Untrusted: read each byte once, into private memory.
fn staged(image: &Image, offset: u64) -> *const u8 {
    let base = if snp() { ALIAS_BASE } else { 0 };
    (base + image.staging + offset) as *const u8
}

fn copy_in(dst: *mut u8, image: &Image, offset: u64, len: usize) {
    // SAFETY: source is staging memory named by the measured manifest (below 4 GiB,
    // mapped), destination private memory the manifest assigns; they do not overlap
    // (the VMM places staging above every load address, and the kernel's room was
    // checked against the other structures by the zero-page builder's rules).
    unsafe { core::ptr::copy_nonoverlapping(staged(image, offset), dst, len) };
}

fn bytes_at(addr: u64, len: u64) -> &'static [u8] {
    // SAFETY: `addr..addr+len` is private memory this verifier just filled.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
}

#[no_mangle]
extern "C" fn verifier_main(c_bit: u64) -> ! {
    SNP.store(c_bit != 0, Ordering::Relaxed);
    print(b"CLOISTER-VERIFIER: start\n");
    // SAFETY: the manifest page is measured, private memory at a fixed address.
    let page = unsafe { &*(MANIFEST_GPA as *const [u8; PAGE_SIZE]) };
    let m = match Manifest::parse(page) {
        Ok(m) => m,
        Err(e) => refuse(reason::MANIFEST, e.describe()),
    };
    // Linker symbols; only their addresses are used.
    let (image_start, image_end) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    );
    let launched = [
        (image_start, image_end),
        (MANIFEST_GPA, MANIFEST_GPA + PAGE_4K),
        (m.cpuid, m.cpuid + PAGE_4K),
        (m.secrets, m.secrets + PAGE_4K),
    ];
    let staging = [
        page_range(&m.kernel),
        page_range(&m.initrd),
        page_range(&m.cmdline),
    ];
    if snp() {
        let status = rdmsr(SEV_STATUS_MSR);
        // SEV, SEV-ES and SNP active; vTOM, ReflectVC and the injection modes would
        // change the memory and interrupt model this verifier assumes.
        if status & 0b111 != 0b111 || status & 0b111_1000 != 0 {
            refuse(reason::SEV_STATUS, "unexpected SEV_STATUS");
        }
        check_hypervisor();
        let skip = [
            launched[0], launched[1], launched[2], launched[3], staging[0], staging[1],
            staging[2],
        ];
        Plan::new(m.e820(), &skip).for_each(validate_chunk);
        map_alias(c_bit);
    } else {
        print(b"CLOISTER-VERIFIER: not an SEV-SNP guest (no SNP in the CPUID page): memory is not validated, nothing here is confidential\n");
    }

    // The kernel: setup sectors into the scratch, protected-mode code to its load address.
    let mut hash = Sha384::new();
    let first = m.kernel.size.min(SETUP_MAX as u64) as usize;
    // SAFETY: the scratch is this verifier's own static, used only here.
    let setup = unsafe { &mut (*core::ptr::addr_of_mut!(SETUP)).0 };
    copy_in(setup.as_mut_ptr(), &m.kernel, 0, first.min(512));
    let sects = match setup[0x1F1] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_len = (sects + 1) * 512;
    if setup_len > first || setup_len as u64 >= m.kernel.size {
        refuse(reason::KERNEL_FORMAT, "kernel setup sectors too large or the image too short");
    }
    copy_in(setup[512..].as_mut_ptr(), &m.kernel, 512, setup_len - 512);
    let code_len = m.kernel.size - setup_len as u64;
    copy_in(m.kernel.load as *mut u8, &m.kernel, setup_len as u64, code_len as usize);
    hash.update(&setup[..setup_len]);
    hash.update(bytes_at(m.kernel.load, code_len));
    if !digest_eq(&hash.finalize(), &m.kernel.sha384) {
        refuse(reason::KERNEL_DIGEST, "kernel SHA-384 differs from the manifest");
    }
    print(b"CLOISTER-VERIFIER: kernel SHA-384 ok\n");
    if m.initrd.size > 0 {
        copy_in(m.initrd.load as *mut u8, &m.initrd, 0, m.initrd.size as usize);
        if !check_digest(bytes_at(m.initrd.load, m.initrd.size), &m.initrd.sha384) {
            refuse(reason::INITRD_DIGEST, "initrd SHA-384 differs from the manifest");
        }
        print(b"CLOISTER-VERIFIER: initrd SHA-384 ok\n");
    }
    copy_in(m.cmdline.load as *mut u8, &m.cmdline, 0, m.cmdline.size as usize);
    if !check_digest(bytes_at(m.cmdline.load, m.cmdline.size), &m.cmdline.sha384) {
        refuse(reason::CMDLINE_DIGEST, "command line SHA-384 differs from the manifest");
    }
    // SAFETY: one byte after the command line, inside its page-rounded load area.
    unsafe { ((m.cmdline.load + m.cmdline.size) as *mut u8).write_volatile(0) };
    print(b"CLOISTER-VERIFIER: command line SHA-384 ok\n");

    if snp() {
        for (start, end) in staging {
            let mut addr = start;
            while addr < end {
                validate_chunk(Chunk { addr, huge: false });
                addr += PAGE_4K;
            }
        }
    }

    // SAFETY: the zero page and the CC blob page are RAM the manifest assigns to them,
    // validated above (SNP) and not used by anything else.
    let zp = unsafe { &mut *(m.zero_page as *mut [u8; ZERO_PAGE_SIZE]) };
    let entry = match zero_page::build(&setup[..setup_len], &m, zp) {
        Ok(entry) => entry,
        Err(e) => refuse(reason::KERNEL_FORMAT, e.describe()),
    };
    let blob = zero_page::cc_blob(&m);
    // SAFETY: as above.
    unsafe { core::ptr::copy_nonoverlapping(blob.as_ptr(), m.cc_blob as *mut u8, blob.len()) };
    print(b"CLOISTER-VERIFIER: entering the kernel at ");
    print_hex(entry);
    print(b"\n");
    // SAFETY: the kernel was checked against the measured manifest; Linux's 64-bit boot
    // protocol: RSI = zero page, interrupts off, identity-mapped, flat segments 0x10/0x18.
    unsafe {
        asm!("xor ebp, ebp", "jmp rax", in("rsi") m.zero_page, in("rax") entry,
             options(noreturn))
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    refuse(0x7f, "verifier panic")
}

/// Referenced by the precompiled `core`'s unwind tables; never called (panic=abort).
#[no_mangle]
extern "C" fn rust_eh_personality() {}
