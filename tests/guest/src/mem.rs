//! The memory functions the compiler calls (`memcpy`, `memmove`, `memset`, `memcmp`,
//! `bcmp`): there is no libc. Written with string instructions so that the compiler cannot
//! turn them back into calls to themselves.

use core::arch::asm;

/// # Safety
/// `dst` and `src` valid for `n` bytes, not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; `rep movsq` copies the first `n / 8`
    // quadwords and `rep movsb` the rest, forwards (the direction flag is clear: nothing
    // in the guest sets it for long). Quadwords first: this machine's KVM emulates a
    // string instruction one iteration at a time.
    unsafe {
        asm!("rep movsq", "mov ecx, {rest:e}", "rep movsb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n / 8 => _,
            options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// `dst` and `src` valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when `dst` is below `src` or past its end.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: copying backwards from the last byte is correct for an overlap with
        // `dst` above `src`; the direction flag is restored right after.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rdi") dst.wrapping_add(n).wrapping_sub(1) => _,
                inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
                inout("rcx") n => _,
                options(nostack))
        };
        dst
    }
}

/// # Safety
/// `dst` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    let byte = u64::from(value as u8);
    // SAFETY: the caller guarantees the range; `rep stosq` writes `n / 8` quadwords of the
    // byte repeated, `rep stosb` the remaining bytes: exactly `n` bytes in all.
    unsafe {
        asm!("rep stosq", "mov ecx, {rest:e}", "rep stosb",
            rest = in(reg) n % 8,
            inout("rdi") dst => _, inout("rcx") n / 8 => _,
            in("rax") byte * 0x0101_0101_0101_0101,
            options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n` and the caller guarantees `n` readable bytes; volatile reads keep
        // the compiler from recognising this loop as a call to memcmp.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
