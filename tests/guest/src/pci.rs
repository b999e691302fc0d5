//! A PCI function's configuration space (PCI Local Bus 3.0, 6): walking its capability
//! list (6.7) and sizing and enabling its memory BARs (6.2.5.1). Every access goes
//! through [`ConfigSpace`] (port I/O in the guest, `pci_io.rs`; a model in the tests).
//!
//! In the guest each configuration access costs VM exits, so whole doublewords are read
//! and nothing is read that is not needed.

// Type 0 configuration header registers.
/// Vendor ID (low 16 bits) and device ID (high 16 bits).
pub const REG_ID: u8 = 0x00;
/// Command (low 16 bits) and status (high 16 bits).
pub const REG_COMMAND: u8 = 0x04;
/// The first BAR.
pub const REG_BAR0: u8 = 0x10;
/// The capabilities pointer (low byte).
pub const REG_CAPABILITIES: u8 = 0x34;
/// BARs of a type 0 header.
pub const BARS: u8 = 6;

/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: the function may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Status register bit 4, as seen in the REG_COMMAND doubleword: a capability list.
const STATUS_CAPABILITIES: u32 = 1 << (16 + 4);

/// Capabilities live past the 64-byte header.
const CAPABILITIES_START: u8 = 0x40;
/// Most capabilities configuration space holds (4 bytes at least each): a longer chain
/// loops.
const MAX_CAPABILITIES: usize = (256 - CAPABILITIES_START as usize) / 4;

/// The guest's identity map ends here; a BAR it uses must lie below.
const MAPPED_END: u64 = 1 << 32;

/// Configuration space of one function.
pub trait ConfigSpace {
    /// Reads the doubleword holding `reg`.
    fn read32(&self, reg: u8) -> u32;
    /// Writes the doubleword holding `reg`.
    fn write32(&self, reg: u8, value: u32);
    /// Writes the word at `reg` (2-byte aligned) alone.
    fn write16(&self, reg: u8, value: u16);
    /// Reads the doubleword at `reg`, writes all ones, reads what sticks and writes the
    /// first value back: (value, what sticks). An implementation may do it with fewer
    /// accesses (port I/O: one address write for the four data accesses).
    fn probe32(&self, reg: u8) -> (u32, u32) {
        let value = self.read32(reg);
        self.write32(reg, u32::MAX);
        let mask = self.read32(reg);
        self.write32(reg, value);
        (value, mask)
    }
}

/// Why a capability list cannot be walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// Status bit 4 is clear: the function has no capability list.
    NoList,
    /// A pointer into the configuration header (below 0x40).
    BadPointer(u8),
    /// The chain is longer than configuration space can hold: it loops.
    Loop,
}

/// One capability: where it is, its ID, and its first doubleword (ID, next pointer and
/// two bytes of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Its offset in configuration space.
    pub at: u8,
    /// Its capability ID.
    pub id: u8,
    /// Its first doubleword.
    pub header: u32,
}

/// A function's capability list, in list order; it ends after an error.
pub struct Capabilities<'a, C: ConfigSpace + ?Sized> {
    config: &'a C,
    next: u8,
    left: usize,
}

/// The capability list of the function behind `config`.
pub fn capabilities<C: ConfigSpace + ?Sized>(config: &C) -> Result<Capabilities<'_, C>, CapError> {
    if config.read32(REG_COMMAND) & STATUS_CAPABILITIES == 0 {
        return Err(CapError::NoList);
    }
    Ok(Capabilities {
        config,
        next: config.read32(REG_CAPABILITIES) as u8,
        left: MAX_CAPABILITIES,
    })
}

impl<C: ConfigSpace + ?Sized> Iterator for Capabilities<'_, C> {
    type Item = Result<Capability, CapError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The two low bits of a pointer are reserved (6.7).
        let at = self.next & 0xfc;
        if at == 0 {
            return None;
        }
        self.next = 0;
        if at < CAPABILITIES_START {
            return Some(Err(CapError::BadPointer(at)));
        }
        if self.left == 0 {
            return Some(Err(CapError::Loop));
        }
        self.left -= 1;
        let header = self.config.read32(at);
        self.next = (header >> 8) as u8;
        Some(Ok(Capability {
            at,
            id: header as u8,
            header,
        }))
    }
}

/// A memory BAR as assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its base address.
    pub base: u64,
    /// Its size in bytes (a power of two).
    pub size: u64,
}

/// Why a BAR cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// Its address reads 0: not assigned.
    Unassigned,
    /// An I/O space BAR: the driver uses memory BARs only.
    Io,
    /// Memory type 1 or 3 (reserved).
    ReservedType(u8),
    /// It is the upper half of the 64-bit BAR before it.
    UpperHalf,
    /// A 64-bit BAR in the last slot, without a slot for its upper half.
    NoUpperHalf,
    /// After all ones were written it reads back no size mask (this, address bits only):
    /// it does not answer sizing.
    BadSizeMask(u64),
    /// Its base is not a multiple of its size.
    Misaligned(Bar),
    /// It reaches past 4 GiB, outside the guest's identity map.
    AboveMapped(Bar),
}

/// Sizes the memory BARs whose bits are set in `wanted` (bit n: BAR n) with memory
/// decoding off (6.2.5.1), then turns on memory decoding and bus mastering. Returns them
/// by index (`Some` for each wanted one), or the first wanted BAR that cannot be used and
/// why; the command register is then left as it was found.
pub fn memory_bars<C: ConfigSpace + ?Sized>(
    config: &C,
    wanted: u8,
) -> Result<[Option<Bar>; BARS as usize], (u8, BarError)> {
    let command = config.read32(REG_COMMAND) as u16;
    let sizing = command & !COMMAND_MEMORY;
    if sizing != command {
        config.write16(REG_COMMAND, sizing);
    }
    let bars = size_bars(config, wanted);
    let after = match bars {
        Ok(_) => command | COMMAND_MEMORY | COMMAND_BUS_MASTER,
        Err(_) => command,
    };
    if after != sizing {
        config.write16(REG_COMMAND, after);
    }
    bars
}

fn size_bars<C: ConfigSpace + ?Sized>(
    config: &C,
    wanted: u8,
) -> Result<[Option<Bar>; BARS as usize], (u8, BarError)> {
    let mut bars = [None; BARS as usize];
    let mut index = 0;
    // The BARs before a wanted one are read too (not sized): a 64-bit one takes the next
    // slot.
    while index < BARS && wanted >> index != 0 {
        let reg = REG_BAR0 + 4 * index;
        let here = wanted & 1 << index != 0;
        let (low, low_mask) = if here {
            config.probe32(reg)
        } else {
            (config.read32(reg), 0)
        };
        if low & 1 != 0 {
            if here {
                return Err((index, BarError::Io));
            }
            index += 1;
            continue;
        }
        let wide = match (low >> 1) & 3 {
            0 => false,
            2 => true,
            kind => {
                if here {
                    return Err((index, BarError::ReservedType(kind as u8)));
                }
                index += 1;
                continue;
            }
        };
        if wide && index + 1 == BARS {
            if here {
                return Err((index, BarError::NoUpperHalf));
            }
            break;
        }
        if wide && wanted & 1 << (index + 1) != 0 {
            return Err((index + 1, BarError::UpperHalf));
        }
        if here {
            let (high, high_mask) = if wide {
                config.probe32(reg + 4)
            } else {
                (0, u32::MAX)
            };
            let base = (u64::from(high) << 32 | u64::from(low)) & !0xf;
            let mask = (u64::from(high_mask) << 32 | u64::from(low_mask)) & !0xf;
            bars[usize::from(index)] = Some(check_bar(base, mask).map_err(|e| (index, e))?);
        }
        index += if wide { 2 } else { 1 };
    }
    Ok(bars)
}

/// A BAR from its base and the size mask it read after all ones were written.
fn check_bar(base: u64, mask: u64) -> Result<Bar, BarError> {
    if base == 0 {
        return Err(BarError::Unassigned);
    }
    // The mask is all ones above the size: its two's complement is the size.
    let size = mask.wrapping_neg();
    if !size.is_power_of_two() {
        return Err(BarError::BadSizeMask(mask));
    }
    let bar = Bar { base, size };
    if base & (size - 1) != 0 {
        return Err(BarError::Misaligned(bar));
    }
    match base.checked_add(size) {
        Some(end) if end <= MAPPED_END => Ok(bar),
        _ => Err(BarError::AboveMapped(bar)),
    }
}

/// A model of one function's configuration space for the tests: 256 bytes, BARs whose
/// address bits below their size read as zero after a write, as in hardware (or that
/// ignore writes), and a record of the command register at every BAR write.
#[cfg(test)]
pub(crate) mod model {
    use std::cell::RefCell;

    use super::*;

    pub struct Function {
        bytes: RefCell<[u8; 256]>,
        /// The writable address bits of each BAR slot (all: plain storage).
        pub writable: [u32; BARS as usize],
        /// BAR writes have no effect.
        pub bars_ignore_writes: bool,
        /// The command register at every write to a BAR.
        pub command_at_bar_writes: RefCell<Vec<u16>>,
    }

    impl Function {
        pub fn new() -> Self {
            Function {
                bytes: RefCell::new([0; 256]),
                writable: [u32::MAX; BARS as usize],
                bars_ignore_writes: false,
                command_at_bar_writes: RefCell::new(Vec::new()),
            }
        }

        pub fn put32(&self, reg: u8, value: u32) {
            let at = usize::from(reg);
            self.bytes.borrow_mut()[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }

        pub fn get32(&self, reg: u8) -> u32 {
            let at = usize::from(reg & 0xfc);
            let bytes = self.bytes.borrow();
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        }

        pub fn command(&self) -> u16 {
            self.get32(REG_COMMAND) as u16
        }

        /// A 64-bit memory BAR of `size` (below 4 GiB) in slots `index` and `index + 1`.
        pub fn bar64(&mut self, index: u8, base: u64, size: u32) {
            self.put32(REG_BAR0 + 4 * index, base as u32 | 0x4);
            self.put32(REG_BAR0 + 4 * index + 4, (base >> 32) as u32);
            self.writable[usize::from(index)] = !(size - 1) & !0xf;
        }

        /// A 32-bit memory BAR of `size` in slot `index`.
        pub fn bar32(&mut self, index: u8, base: u32, size: u32) {
            self.put32(REG_BAR0 + 4 * index, base);
            self.writable[usize::from(index)] = !(size - 1) & !0xf;
        }

        /// Status bit 4 set and the capabilities pointer at `first`.
        pub fn cap_list(&self, first: u8) {
            let command = self.get32(REG_COMMAND);
            self.put32(REG_COMMAND, command | STATUS_CAPABILITIES);
            self.put32(REG_CAPABILITIES, first.into());
        }
    }

    impl ConfigSpace for Function {
        fn read32(&self, reg: u8) -> u32 {
            self.get32(reg)
        }

        fn write32(&self, reg: u8, value: u32) {
            let reg = reg & 0xfc;
            let value = if (REG_BAR0..REG_BAR0 + 4 * BARS).contains(&reg) {
                self.command_at_bar_writes.borrow_mut().push(self.command());
                let writable = self.writable[usize::from((reg - REG_BAR0) / 4)];
                if self.bars_ignore_writes {
                    self.get32(reg)
                } else if writable == u32::MAX {
                    value
                } else {
                    value & writable | self.get32(reg) & 0xf
                }
            } else {
                value
            };
            self.put32(reg, value);
        }

        fn write16(&self, reg: u8, value: u16) {
            let at = usize::from(reg & 0xfe);
            self.bytes.borrow_mut()[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::model::Function;
    use super::*;

    #[test]
    fn capability_list_is_walked_in_order_and_ends() {
        let f = Function::new();
        f.cap_list(0x40);
        f.put32(0x40, 0x11 | 0x50 << 8);
        f.put32(0x50, 0x09 | 0x62 << 8 | 0x10 << 16 | 0x01 << 24);
        // Pointer 0x62: the reserved low bits are masked, so 0x60.
        f.put32(0x60, 0x05);
        let caps: Vec<_> = capabilities(&f).unwrap().collect();
        assert_eq!(
            caps,
            vec![
                Ok(Capability {
                    at: 0x40,
                    id: 0x11,
                    header: 0x5011
                }),
                Ok(Capability {
                    at: 0x50,
                    id: 0x09,
                    header: 0x0110_6209
                }),
                Ok(Capability {
                    at: 0x60,
                    id: 0x05,
                    header: 0x05
                }),
            ]
        );
    }

    #[test]
    fn broken_capability_lists_are_errors_not_hangs() {
        let f = Function::new();
        f.put32(REG_CAPABILITIES, 0x40);
        assert!(matches!(capabilities(&f), Err(CapError::NoList)));

        let f = Function::new();
        f.cap_list(0x40);
        f.put32(0x40, 0x09 | 0x40 << 8);
        let caps: Vec<_> = capabilities(&f).unwrap().collect();
        assert_eq!(caps.len(), MAX_CAPABILITIES + 1);
        assert_eq!(caps.last(), Some(&Err(CapError::Loop)));

        let f = Function::new();
        f.cap_list(0x40);
        f.put32(0x40, 0x09 | 0x10 << 8);
        let caps: Vec<_> = capabilities(&f).unwrap().collect();
        assert_eq!(caps.last(), Some(&Err(CapError::BadPointer(0x10))));
        assert_eq!(caps.len(), 2);

        let f = Function::new();
        f.cap_list(0x3c);
        assert_eq!(
            capabilities(&f).unwrap().next(),
            Some(Err(CapError::BadPointer(0x3c)))
        );
    }

    #[test]
    fn a_64_bit_bar_is_sized_with_decoding_off_then_enabled() {
        let mut f = Function::new();
        f.put32(REG_COMMAND, u32::from(COMMAND_MEMORY));
        f.bar64(0, 0xc000_0000, 0x4000);
        let bars = memory_bars(&f, 1).unwrap();
        assert_eq!(
            bars[0],
            Some(Bar {
                base: 0xc000_0000,
                size: 0x4000
            })
        );
        assert_eq!(bars[1..], [None; 5]);
        assert_eq!(f.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
        let during = f.command_at_bar_writes.borrow();
        assert!(!during.is_empty());
        assert!(during.iter().all(|c| c & COMMAND_MEMORY == 0), "{during:?}");
        // Put back as found.
        assert_eq!(f.get32(REG_BAR0), 0xc000_0004);
        assert_eq!(f.get32(REG_BAR0 + 4), 0);
    }

    #[test]
    fn earlier_bars_are_stepped_over_by_their_width() {
        // QEMU's layout: BAR0 I/O, BAR1 32-bit (MSI-X), BAR4 64-bit.
        let mut f = Function::new();
        f.put32(REG_BAR0, 0xc041);
        f.bar32(1, 0xfebd_1000, 0x1000);
        f.bar64(2, 0xfe00_0000, 0x4000);
        f.bar64(4, 0xfe00_4000, 0x4000);
        let bars = memory_bars(&f, 1 << 4).unwrap();
        assert_eq!(
            bars[4],
            Some(Bar {
                base: 0xfe00_4000,
                size: 0x4000
            })
        );
        let bars = memory_bars(&f, 1 << 1 | 1 << 4).unwrap();
        assert_eq!(
            bars[1],
            Some(Bar {
                base: 0xfebd_1000,
                size: 0x1000
            })
        );
        assert_eq!(memory_bars(&f, 1 << 3), Err((3, BarError::UpperHalf)));
        assert_eq!(memory_bars(&f, 1), Err((0, BarError::Io)));
    }

    #[test]
    fn unusable_bars_are_named() {
        let mut f = Function::new();
        f.bar64(0, 0, 0x4000);
        f.put32(REG_COMMAND, 0x0400);
        assert_eq!(memory_bars(&f, 1), Err((0, BarError::Unassigned)));
        assert_eq!(
            f.command(),
            0x0400,
            "the command register changed on failure"
        );

        let mut f = Function::new();
        f.bar64(0, 0x1_0000_0000, 0x4000);
        assert_eq!(
            memory_bars(&f, 1),
            Err((
                0,
                BarError::AboveMapped(Bar {
                    base: 0x1_0000_0000,
                    size: 0x4000
                })
            ))
        );

        let mut f = Function::new();
        f.bar32(0, 0xffff_f000, 0x2000);
        assert_eq!(
            memory_bars(&f, 1),
            Err((
                0,
                BarError::Misaligned(Bar {
                    base: 0xffff_f000,
                    size: 0x2000
                })
            ))
        );

        // A 64-bit BAR that ignores writes: the mask has the address's bits only.
        let mut f = Function::new();
        f.bar64(0, 0xc000_0000, 0x4000);
        f.bars_ignore_writes = true;
        assert_eq!(
            memory_bars(&f, 1),
            Err((0, BarError::BadSizeMask(0xc000_0000)))
        );

        let mut f = Function::new();
        f.bar64(4, 0xc000_0000, 0x4000);
        f.put32(REG_BAR0 + 20, 0xc000_0004);
        assert_eq!(memory_bars(&f, 1 << 5), Err((5, BarError::UpperHalf)));
        let f = Function::new();
        f.put32(REG_BAR0 + 20, 0xc000_0004);
        assert_eq!(memory_bars(&f, 1 << 5), Err((5, BarError::NoUpperHalf)));
        f.put32(REG_BAR0 + 20, 0xc000_0002);
        assert_eq!(memory_bars(&f, 1 << 5), Err((5, BarError::ReservedType(1))));
    }
}
