//! Output on COM1, a 16550 UART at I/O port 0x3f8.
//!
//! Every port access is a VM exit, so the transmit FIFO is used: once the line status
//! register says the transmitter is empty, a 16550A takes 16 bytes without another look.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::io::{inb, outb};

const COM1: u16 = 0x3f8;
const FCR: u16 = COM1 + 2;
const IIR: u16 = COM1 + 2;
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Bytes the FIFO holds when it reports empty (1 for a UART without a FIFO).
static FIFO_DEPTH: AtomicUsize = AtomicUsize::new(1);
/// Bytes that can still be written without looking at the LSR.
static ROOM: AtomicUsize = AtomicUsize::new(0);

/// Enables the FIFOs and learns whether there is one.
pub fn init() {
    outb(FCR, 0x07);
    let depth = if inb(IIR) & 0xc0 == 0xc0 { 16 } else { 1 };
    FIFO_DEPTH.store(depth, Ordering::Relaxed);
}

/// Writes one byte.
pub fn write_byte(byte: u8) {
    let mut room = ROOM.load(Ordering::Relaxed);
    if room == 0 {
        // Bounded: a UART that never drains must not hang the guest forever.
        for _ in 0..100_000 {
            if inb(LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        room = FIFO_DEPTH.load(Ordering::Relaxed);
    }
    outb(COM1, byte);
    ROOM.store(room - 1, Ordering::Relaxed);
}

/// Writes bytes, turning `\n` into `\r\n`.
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            write_byte(b'\r');
        }
        write_byte(b);
    }
}

/// Writes `n` in decimal.
pub fn write_dec(mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    write(&buf[i..]);
}

/// Writes `n` in hexadecimal with a `0x` prefix and no leading zeros.
pub fn write_hex(n: u64) {
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = HEX[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 2;
    buf[i] = b'0';
    buf[i + 1] = b'x';
    write(&buf[i..]);
}

/// Writes bytes as lower-case hex pairs.
pub fn write_hex_bytes(bytes: &[u8]) {
    for b in bytes {
        write_byte(HEX[usize::from(b >> 4)]);
        write_byte(HEX[usize::from(b & 15)]);
    }
}

const HEX: [u8; 16] = *b"0123456789abcdef";
