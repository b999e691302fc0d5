//! Port I/O and MMIO accessors.

use core::arch::asm;

/// Reads a byte from I/O port `port`.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: port input has no memory effects; the guest owns every device it talks to.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Writes a byte to I/O port `port`.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects visible to Rust; the guest owns the ports.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a 32-bit value to I/O port `port`. Not `nomem`: the VMM may read guest memory
/// while it handles the write (the doorbell's request page).
#[cfg_attr(not(feature = "attest"), allow(dead_code))]
pub fn outl(port: u16, value: u32) {
    // SAFETY: port output changes no memory Rust knows of; the asm is not `nomem`, so the
    // compiler completes every store before it (the VMM reads them).
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    };
}

/// Reads a 32-bit value from I/O port `port`. Not `nomem`: the VMM may write guest memory
/// while it handles the read (the doorbell's response page).
#[cfg_attr(not(feature = "attest"), allow(dead_code))]
pub fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: port input changes no memory Rust knows of; the asm is not `nomem`, so the
    // compiler reloads memory after it (the VMM may have written it).
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nostack, preserves_flags))
    };
    value
}

/// Reads a 32-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: the first 4 GiB are identity-mapped and `addr` is a device register window
    // announced by the loader; a volatile read is how device registers are read.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes a 32-bit MMIO register at physical (= virtual) address `addr`.
pub fn mmio_write32(addr: u64, value: u32) {
    // SAFETY: as for `mmio_read32`; the register window is not Rust memory.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts are off; `hlt` only stops the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
