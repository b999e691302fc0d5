//! Port I/O and MMIO accessors. Port I/O goes through the GHCB when the guest is an SNP
//! guest or on the simulated SNP platform (`ghcb_io.rs`), and is the instruction itself
//! otherwise.

use core::arch::asm;

use crate::ghcb_io::{self, Mode};

fn through_ghcb() -> bool {
    ghcb_io::mode() != Mode::Direct
}

/// Reads a byte from I/O port `port`.
pub fn inb(port: u16) -> u8 {
    if through_ghcb() {
        return ghcb_io::ioio_in(port, 1) as u8;
    }
    let value: u8;
    // SAFETY: port input has no memory effects; the guest owns every device it talks to.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a byte to I/O port `port`.
pub fn outb(port: u16, value: u8) {
    if through_ghcb() {
        return ghcb_io::ioio_out(port, 1, value.into());
    }
    // SAFETY: port output has no memory effects visible to Rust; the guest owns the ports.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a 16-bit word to I/O port `port`.
pub fn outw(port: u16, value: u16) {
    if through_ghcb() {
        return ghcb_io::ioio_out(port, 2, value.into());
    }
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a 32-bit doubleword from I/O port `port`.
pub fn inl(port: u16) -> u32 {
    if through_ghcb() {
        return ghcb_io::ioio_in(port, 4);
    }
    let value: u32;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a 32-bit doubleword to I/O port `port`.
pub fn outl(port: u16, value: u32) {
    if through_ghcb() {
        return ghcb_io::ioio_out(port, 4, value);
    }
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes `bytes` to I/O port `port` with one `rep outsb` (direct port I/O only).
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: string output reads `bytes.len()` bytes from `bytes` (RSI, forwards: the
    // direction flag is clear) and writes them to the port; no memory is written.
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
             inout("rcx") bytes.len() => _, options(nostack, preserves_flags, readonly))
    };
}

/// Reads `buf.len()` bytes from I/O port `port` with one `rep insb` (direct port I/O only).
pub fn insb(port: u16, buf: &mut [u8]) {
    // SAFETY: string input writes exactly `buf.len()` bytes into `buf` (RDI, forwards),
    // which is exclusively borrowed.
    unsafe {
        asm!("rep insb", in("dx") port, inout("rdi") buf.as_mut_ptr() => _,
             inout("rcx") buf.len() => _, options(nostack, preserves_flags))
    };
}

/// Reads an 8-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_read8(addr: u64) -> u8 {
    // SAFETY: the first 4 GiB are identity-mapped and `addr` is in a device register
    // window (announced by the loader, or a PCI memory BAR checked to lie below 4 GiB); a
    // volatile read is how device registers are read.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Reads a 16-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_read16(addr: u64) -> u16 {
    // SAFETY: as for `mmio_read8`.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

/// Reads a 32-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: as for `mmio_read8`.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes an 8-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_write8(addr: u64, value: u8) {
    // SAFETY: as for `mmio_read8`; the register window is not Rust memory.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

/// Writes a 16-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_write16(addr: u64, value: u16) {
    // SAFETY: as for `mmio_write8`.
    unsafe { core::ptr::write_volatile(addr as *mut u16, value) }
}

/// Writes a 32-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: as for `mmio_write8`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Ends the VM as a failure when no debug-exit port took the exit code: an empty IDT and
/// an exception make a triple fault, which every VMM reports (Cloister: its own failure
/// status, 1). `hlt` would not do: with the in-kernel interrupt controller KVM keeps a
/// halted vCPU waiting for an interrupt, and the VM would never end.
pub fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    loop {
        // SAFETY: loads an empty IDT and raises #BP: the CPU cannot deliver it (nor the
        // #GP and #DF that follow), which shuts the VM down; nothing returns.
        unsafe {
            asm!("lidt [{}]", "int3", in(reg) core::ptr::addr_of!(empty), options(nostack))
        };
    }
}

