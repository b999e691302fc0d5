//! An IDT for the 32 CPU exceptions, so that a fault (an instruction the VMM's CPU model
//! does not support, a bad page table) is reported on the console and ends the VM with
//! the failure exit code instead of a silent triple fault.

use core::cell::UnsafeCell;

extern "C" {
    /// 32 exception entry stubs, 16 bytes apart (entry.rs).
    static exception_stubs: u8;
}

/// Exception names, by vector.
const NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved 31",
];

/// Vectors for which the CPU pushes an error code.
fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

#[repr(C, align(16))]
struct Idt([u64; 64]);

struct Table(UnsafeCell<Idt>);
// SAFETY: written once by the only CPU running, before `lidt`; never written again.
unsafe impl Sync for Table {}

static IDT: Table = Table(UnsafeCell::new(Idt([0; 64])));

/// Fills the IDT with the exception stubs and loads it.
pub fn install() {
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    let idt = IDT.0.get();
    for vector in 0..32u64 {
        let handler = stubs + vector * 16;
        // 64-bit interrupt gate: offset 15:0, selector 0x10, present, DPL 0, type 0xe,
        // offset 31:16, then offset 63:32.
        let low =
            (handler & 0xffff) | (0x10 << 16) | (0x8e << 40) | ((handler >> 16) & 0xffff) << 48;
        // SAFETY: single CPU, interrupts off, the table is not loaded yet: exclusive.
        unsafe {
            (*idt).0[2 * vector as usize] = low;
            (*idt).0[2 * vector as usize + 1] = handler >> 32;
        }
    }
    let mut descriptor = [0u8; 10];
    descriptor[..2].copy_from_slice(&(64u16 * 8 - 1).to_le_bytes());
    descriptor[2..].copy_from_slice(&(idt as u64).to_le_bytes());
    // SAFETY: the descriptor names a complete, valid IDT that lives for the whole run.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) descriptor.as_ptr(), options(readonly, nostack))
    };
}

/// Called by the stubs: prints the exception and ends the VM as a failure.
#[no_mangle]
extern "C" fn guest_exception(vector: u64, frame: *const u64) -> ! {
    let (error, rip) = if has_error_code(vector) {
        // SAFETY: the CPU pushed error code, RIP, CS, RFLAGS, RSP, SS at `frame`.
        unsafe { (Some(*frame), *frame.add(1)) }
    } else {
        // SAFETY: the CPU pushed RIP, CS, RFLAGS, RSP, SS at `frame`.
        unsafe { (None, *frame) }
    };
    crate::serial::write(b"CLOISTER-GUEST: FAIL exception ");
    crate::serial::write_dec(vector);
    crate::serial::write(b" (");
    crate::serial::write(NAMES[(vector & 31) as usize].as_bytes());
    crate::serial::write(b") at rip ");
    crate::serial::write_hex(rip);
    if let Some(error) = error {
        crate::serial::write(b" error code ");
        crate::serial::write_hex(error);
    }
    if vector == 14 {
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        crate::serial::write(b" cr2 ");
        crate::serial::write_hex(cr2);
    }
    crate::serial::write(b"\n");
    crate::io::outb(crate::EXIT_PORT, crate::FAILURE_EXIT_CODE);
    crate::io::triple_fault()
}
