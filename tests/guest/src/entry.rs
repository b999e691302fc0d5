//! Entry points of the test guest, the only assembly in it.
//!
//! Three ways in, one way on:
//! - `startup_64` (load address + 0x200, the ELF entry): Linux 64-bit boot protocol. Long
//!   mode, RSI = zero page (`struct boot_params`), paging set up by the loader.
//! - `startup_32` (load address + 0): Linux 32-bit boot protocol of a bzImage. Flat
//!   protected mode, paging off, ESI = zero page.
//! - `pvh_start` (named by the PVH ELF note): Xen/QEMU PVH. Flat protected mode, paging
//!   off, EBX = `struct hvm_start_info`.
//!
//! Each switches to its own identity map of the first 4 GiB (initialised data, 2 MiB pages;
//! 1 GiB pages with the C-bit on SEV-SNP; the loader's map may cover only 1 GiB and
//! virtio-mmio and the local APIC sit near 4 GiB), loads its own GDT
//! (code 0x10, data 0x18), sets CR4.OSFXSR (harmless; the guest is compiled without SSE,
//! which this machine's KVM emulator lacks), sets a stack, zeroes .bss and calls
//! `guest_main(boot_info, kind, c_bit)`. The 64-bit entry keeps the C-bit of the loader's
//! page tables in its own (an SEV-SNP guest's data accesses must carry it). `exception_stubs` are 32 handlers, 16 bytes apart, that
//! the guest installs in its IDT; each calls `guest_exception(vector, frame)`. Only the first CPU through gets in; any
//! other parks in `hlt` (a loader that starts every vCPU at the entry must not run the
//! guest twice).

use core::arch::global_asm;

/// `kind` value: entered through the Linux 64-bit boot protocol.
pub const KIND_LINUX64: u64 = 0;
/// `kind` value: entered through the Linux 32-bit boot protocol (bzImage).
pub const KIND_LINUX32: u64 = 1;
/// `kind` value: entered through PVH.
pub const KIND_PVH: u64 = 2;

global_asm!(
    r#"
    .section .text.head, "ax"

    .code32
    .globl startup_32
startup_32:
    cli
    lock btsl $0, boot_claimed
    jc park32
    movl $1, %ebp                   # KIND_LINUX32; ESI already holds the zero page
    jmp enter_long_mode

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    cli
    lock btsl $0, boot_claimed(%rip)
    jc park64
    movq %rsi, %r12                 # zero page
    xorl %r13d, %r13d               # KIND_LINUX64

    # The loader's C-bit: bit 51 of its PML4[0] (set only for an SEV-SNP guest, whose
    # data accesses must then carry it too). R14 = 1 << 51 or 0, ORed into the entries below.
    movq %cr3, %rax
    movabsq $0x0007fffffffff000, %rcx
    andq %rcx, %rax
    movq (%rax), %rax
    movabsq $0x0008000000000000, %r14
    andq %rax, %r14

    # Identity map 0..4 GiB: `boot_pml4`, `boot_pdpt` and `boot_pd` are initialised data
    # (PML4[0] -> PDPT, PDPT[0..4] -> four PDs of 2 MiB pages), so nothing is written here
    # one entry at a time (slow where the hypervisor emulates every guest instruction).
    # An SEV-SNP guest (C-bit set) needs the C-bit in every entry: its PDPT maps the four
    # GiB with 1 GiB pages instead, which every SNP CPU has (and CPUID would need a #VC
    # handler this early).
    testq %r14, %r14
    jz 6f
    leaq boot_pml4(%rip), %rdi
    orq %r14, (%rdi)
    leaq boot_pdpt(%rip), %rdi
    movl $0x83, %eax                # present, writable, 1 GiB page
    orq %r14, %rax
    movl $4, %ecx
1:  movq %rax, (%rdi)
    addq $0x40000000, %rax
    addq $8, %rdi
    loop 1b
6:  leaq boot_pml4(%rip), %rax
    movq %rax, %cr3

    movq %cr4, %rax
    orl $0x620, %eax                # PAE, OSFXSR, OSXMMEXCPT
    movq %rax, %cr4
    movq %cr0, %rax
    andl $~0x4, %eax                # clear EM
    orl $0x2, %eax                  # set MP
    movq %rax, %cr0

    lgdt gdt_descriptor(%rip)
    pushq $0x10
    leaq 3f(%rip), %rax
    pushq %rax
    lretq
3:  jmp common64

    .code32
    .globl pvh_start
pvh_start:
    cli
    lock btsl $0, boot_claimed
    jc park32
    movl %ebx, %esi                 # hvm_start_info
    movl $2, %ebp                   # KIND_PVH

    # Protected mode, paging off; ESI = boot info, EBP = kind.
enter_long_mode:
    # The same map as the 64-bit entry's, without a C-bit: the initialised tables as they are.
    movl $boot_pml4, %ebx

    movl %cr4, %eax
    orl $0x620, %eax                # PAE, OSFXSR, OSXMMEXCPT
    movl %eax, %cr4
    movl %ebx, %cr3
    movl $0xc0000080, %ecx          # EFER
    rdmsr
    orl $0x100, %eax                # LME
    wrmsr
    movl %cr0, %eax
    andl $~0x4, %eax                # clear EM
    orl $0x80000003, %eax           # PG, MP, PE
    movl %eax, %cr0
    lgdt gdt_descriptor
    ljmp $0x10, $3f

    .code64
3:  movl %esi, %r12d                # zero-extends: boot info
    movl %ebp, %r13d                # kind
    xorl %r14d, %r14d               # no C-bit: paging was off, no SNP loader

common64:
    movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    leaq __stack_top(%rip), %rsp
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    shrq $3, %rcx                   # .bss is 16-byte aligned and sized (guest.ld)
    xorl %eax, %eax
    rep stosq
    movq %r12, %rdi
    movq %r13, %rsi
    movq %r14, %rdx
    call guest_main
park64:
    cli
    hlt
    jmp park64

    .code32
park32:
    cli
    hlt
    jmp park32

    .code64
    # Exception stubs, 16 bytes apart: push the vector, go to the common path, which
    # calls guest_exception(vector, frame) on an aligned stack. Nothing returns.
    .section .text.exceptions, "ax"
    .balign 16
    .globl exception_stubs
exception_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    pushq $\vector
    jmp exception_common
    .endr
exception_common:
    movq (%rsp), %rdi
    leaq 8(%rsp), %rsi
    andq $-16, %rsp
    call guest_exception
    jmp park64

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
    .quad gdt                       # 32-bit lgdt reads the low 4 bytes only

    # The boot page tables: PML4[0] -> boot_pdpt, PDPT[0..4] -> boot_pd, whose 2048
    # entries map 0..4 GiB with 2 MiB pages (present, writable, PS). The loader copies
    # them in with the image.
    .section .data.page_tables, "aw"
    .balign 4096
boot_pml4:
    .quad boot_pdpt + 3
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x0003, boot_pd + 0x1003, boot_pd + 0x2003, boot_pd + 0x3003
    .fill 508, 8, 0
boot_pd:
    .set boot_pd_entry, 0x83
    .rept 2048
    .quad boot_pd_entry
    .set boot_pd_entry, boot_pd_entry + 0x200000
    .endr

    .section .data.boot_claimed, "aw"
    .balign 4
boot_claimed:
    .long 0

    # PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18), read by QEMU and linux-loader.
    .section .note.Xen, "a"
    .balign 4
    .long 4                         # namesz
    .long 8                         # descsz
    .long 18                        # type
    .asciz "Xen"
    .balign 4
    .quad pvh_start
    .balign 4
    "#,
    options(att_syntax)
);
