//! Finding a modern virtio-pci function's structures (virtio 1.2, 4.1.4): the common
//! configuration, the notification region, the ISR status and the device configuration,
//! each through its vendor-specific capability, checked to lie inside an assigned memory
//! BAR below 4 GiB. Nothing about their place is assumed. The guest drives the device
//! through the result in `virtio_pci_io.rs`.

use crate::pci::{self, BarError, CapError, ConfigSpace};

/// The virtio vendor ID.
pub const VENDOR_ID: u16 = 0x1af4;
/// 0x1040 + virtio device ID 2: a modern (non-transitional) virtio-blk function.
pub const DEVICE_ID_BLOCK: u16 = 0x1042;

/// Capability ID of a vendor-specific capability.
const CAP_VENDOR: u8 = 0x09;
/// Bytes of struct virtio_pci_cap; the notify capability adds a u32 multiplier.
const CAP_LEN: u8 = 16;
const NOTIFY_CAP_LEN: u8 = 20;
/// Largest BAR number a virtio capability may name; a capability naming a larger one
/// (reserved) is ignored (4.1.4).
const LAST_BAR: u8 = 5;

/// Offsets in the common configuration structure (4.1.4.3).
pub mod common {
    /// le32 device_feature_select.
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    /// le32 device_feature.
    pub const DEVICE_FEATURE: u64 = 0x04;
    /// le32 driver_feature_select.
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    /// le32 driver_feature.
    pub const DRIVER_FEATURE: u64 = 0x0c;
    /// u8 device_status.
    pub const DEVICE_STATUS: u64 = 0x14;
    /// u8 config_generation.
    pub const CONFIG_GENERATION: u64 = 0x15;
    /// le16 queue_select.
    pub const QUEUE_SELECT: u64 = 0x16;
    /// le16 queue_size.
    pub const QUEUE_SIZE: u64 = 0x18;
    /// le16 queue_enable.
    pub const QUEUE_ENABLE: u64 = 0x1c;
    /// le16 queue_notify_off.
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    /// le64 queue_desc.
    pub const QUEUE_DESC: u64 = 0x20;
    /// le64 queue_driver.
    pub const QUEUE_DRIVER: u64 = 0x28;
    /// le64 queue_device.
    pub const QUEUE_DEVICE: u64 = 0x30;
    /// The structure up to the end of queue_device.
    pub const LEN: u64 = 0x38;
}

/// virtio_blk_config up to the end of capacity (5.2.4).
const BLK_CONFIG_LEN: u64 = 8;

/// The structures the driver looks for, by cfg_type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// VIRTIO_PCI_CAP_COMMON_CFG.
    Common,
    /// VIRTIO_PCI_CAP_NOTIFY_CFG.
    Notify,
    /// VIRTIO_PCI_CAP_ISR_CFG (a polling driver never reads it; checked all the same).
    Isr,
    /// VIRTIO_PCI_CAP_DEVICE_CFG.
    Device,
}

impl Structure {
    /// Every structure, in index order.
    const ALL: [Structure; 4] = [
        Structure::Common,
        Structure::Notify,
        Structure::Isr,
        Structure::Device,
    ];

    fn from_cfg_type(cfg_type: u8) -> Option<Self> {
        match cfg_type {
            1 => Some(Structure::Common),
            2 => Some(Structure::Notify),
            3 => Some(Structure::Isr),
            4 => Some(Structure::Device),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Common => "common configuration",
            Structure::Notify => "notification",
            Structure::Isr => "ISR status",
            Structure::Device => "device configuration",
        }
    }

    /// The least length the driver needs.
    pub fn min_len(self) -> u64 {
        match self {
            Structure::Common => common::LEN,
            Structure::Notify => 2,
            Structure::Isr => 1,
            Structure::Device => BLK_CONFIG_LEN,
        }
    }

    /// The alignment its offset needs (4.1.4.3.1, 4.1.4.4.1, 4.1.4.6.1).
    pub fn align(self) -> u32 {
        match self {
            Structure::Common | Structure::Device => 4,
            Structure::Notify => 2,
            Structure::Isr => 1,
        }
    }
}

/// Why a virtio-blk function cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The capability list cannot be walked.
    Capabilities(CapError),
    /// A virtio capability with a cap_len too short for its fields.
    ShortCapability {
        /// Its offset in configuration space.
        at: u8,
        /// Its cap_len.
        cap_len: u8,
    },
    /// A virtio capability runs past the end of configuration space.
    PastConfigSpace {
        /// Its offset in configuration space.
        at: u8,
    },
    /// No capability for a structure the driver needs.
    Missing(Structure),
    /// notify_off_multiplier is neither 0 nor an even power of two (4.1.4.4.1).
    NotifyMultiplier(u32),
    /// A structure's offset is not aligned as its section requires.
    Misaligned(Structure, u32),
    /// A structure is shorter than the driver needs (its length).
    TooShort(Structure, u32),
    /// A BAR a capability names cannot be used.
    Bar(u8, BarError),
    /// A structure runs past the end of its BAR.
    PastBar {
        /// The structure.
        structure: Structure,
        /// Its BAR.
        bar: u8,
        /// Its offset in the BAR.
        offset: u32,
        /// Its length.
        length: u32,
        /// The BAR's size.
        bar_size: u64,
    },
}

/// Where a function's structures are (guest-physical addresses, below 4 GiB, each inside
/// its BAR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The common configuration (at least [`common::LEN`] bytes).
    pub common: u64,
    /// The notification region.
    pub notify: u64,
    /// Its length (at least 2).
    pub notify_len: u64,
    /// notify_off_multiplier: 0 or an even power of two.
    pub notify_multiplier: u32,
    /// The ISR status byte.
    pub isr: u64,
    /// The device configuration (at least virtio_blk_config's capacity).
    pub device: u64,
    /// Its length.
    pub device_len: u64,
}

impl Layout {
    /// Offset in the notification region of the queue whose queue_notify_off is
    /// `notify_off` (4.1.4.4), or `None` if the 16-bit notification would not fit in it.
    pub fn notify_offset(&self, notify_off: u16) -> Option<u64> {
        let offset = u64::from(notify_off) * u64::from(self.notify_multiplier);
        (offset + 2 <= self.notify_len).then_some(offset)
    }
}

/// One structure's place as its capability gives it.
#[derive(Clone, Copy, Debug)]
struct Place {
    bar: u8,
    offset: u32,
    length: u32,
}

/// Finds the structures of the virtio function behind `config` and turns on its memory
/// decoding (and bus mastering). Checks first what needs no BAR (every structure present,
/// capability lengths, alignment, least lengths), then sizes the BARs named and checks
/// that each structure lies inside its own.
pub fn probe<C: ConfigSpace + ?Sized>(config: &C) -> Result<Layout, ProbeError> {
    let (places, notify_multiplier) = find_capabilities(config)?;
    let wanted = places.iter().fold(0u8, |bits, place| bits | 1 << place.bar);
    let bars =
        pci::memory_bars(config, wanted).map_err(|(bar, error)| ProbeError::Bar(bar, error))?;
    let mut addresses = [0u64; 4];
    for (structure, place) in Structure::ALL.into_iter().zip(places) {
        let bar =
            bars[usize::from(place.bar)].ok_or(ProbeError::Bar(place.bar, BarError::Unassigned))?;
        if u64::from(place.offset) + u64::from(place.length) > bar.size {
            return Err(ProbeError::PastBar {
                structure,
                bar: place.bar,
                offset: place.offset,
                length: place.length,
                bar_size: bar.size,
            });
        }
        addresses[structure.index()] = bar.base + u64::from(place.offset);
    }
    Ok(Layout {
        common: addresses[Structure::Common.index()],
        notify: addresses[Structure::Notify.index()],
        notify_len: places[Structure::Notify.index()].length.into(),
        notify_multiplier,
        isr: addresses[Structure::Isr.index()],
        device: addresses[Structure::Device.index()],
        device_len: places[Structure::Device.index()].length.into(),
    })
}

/// Walks the capability list for the first usable capability of each structure (in the
/// order of [`Structure::ALL`]) and notify_off_multiplier, and checks what needs no BAR.
fn find_capabilities<C: ConfigSpace + ?Sized>(config: &C) -> Result<([Place; 4], u32), ProbeError> {
    let mut found: [Option<Place>; 4] = [None; 4];
    let mut multiplier = 0;
    for capability in pci::capabilities(config).map_err(ProbeError::Capabilities)? {
        let capability = capability.map_err(ProbeError::Capabilities)?;
        if capability.id != CAP_VENDOR {
            continue;
        }
        let cap_len = (capability.header >> 16) as u8;
        // cfg_type 5 (PCI configuration access) and others the driver has no use for.
        let Some(structure) = Structure::from_cfg_type((capability.header >> 24) as u8) else {
            continue;
        };
        if found[structure.index()].is_some() {
            continue;
        }
        let needed = match structure {
            Structure::Notify => NOTIFY_CAP_LEN,
            _ => CAP_LEN,
        };
        let at = capability.at;
        if cap_len < needed {
            return Err(ProbeError::ShortCapability { at, cap_len });
        }
        // Inside configuration space, every field read below (at most at `at + needed -
        // 4`) has an offset that fits a u8.
        if u16::from(at) + u16::from(needed) > 256 {
            return Err(ProbeError::PastConfigSpace { at });
        }
        let bar = config.read32(at + 4) as u8;
        if bar > LAST_BAR {
            continue;
        }
        let place = Place {
            bar,
            offset: config.read32(at + 8),
            length: config.read32(at + 12),
        };
        if place.offset % structure.align() != 0 {
            return Err(ProbeError::Misaligned(structure, place.offset));
        }
        if u64::from(place.length) < structure.min_len() {
            return Err(ProbeError::TooShort(structure, place.length));
        }
        if structure == Structure::Notify {
            multiplier = config.read32(at + 16);
            if multiplier == 1 || !(multiplier == 0 || multiplier.is_power_of_two()) {
                return Err(ProbeError::NotifyMultiplier(multiplier));
            }
        }
        found[structure.index()] = Some(place);
    }
    let mut places = [Place {
        bar: 0,
        offset: 0,
        length: 0,
    }; 4];
    for (structure, place) in Structure::ALL.into_iter().zip(places.iter_mut()) {
        *place = found[structure.index()].ok_or(ProbeError::Missing(structure))?;
    }
    Ok((places, multiplier))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pci::model::Function;
    use crate::pci::{Bar, COMMAND_BUS_MASTER, COMMAND_MEMORY};

    /// A virtio capability at `at`, linked to `next`.
    fn cap(f: &Function, at: u8, next: u8, cfg_type: u8, bar: u8, offset: u32, length: u32) {
        let cap_len = if cfg_type == 2 { 20 } else { 16 };
        f.put32(
            at,
            0x09 | u32::from(next) << 8 | cap_len << 16 | u32::from(cfg_type) << 24,
        );
        f.put32(at + 4, bar.into());
        f.put32(at + 8, offset);
        f.put32(at + 12, length);
    }

    /// The host contract's function: BAR0 64-bit at 0xc000_0000 (16 KiB), memory decoding
    /// off; common at 0, ISR at 0x1000, device at 0x2000, notify at 0x3000 (multiplier 4),
    /// a PCI cfg access capability and MSI-X.
    fn contract_function() -> Function {
        let mut f = Function::new();
        f.bar64(0, 0xc000_0000, 0x4000);
        f.cap_list(0x98);
        f.put32(0x98, 0x11 | 0x40 << 8);
        cap(&f, 0x40, 0x50, 1, 0, 0, 0x38);
        cap(&f, 0x50, 0x60, 3, 0, 0x1000, 1);
        cap(&f, 0x60, 0x70, 4, 0, 0x2000, 0x3c);
        cap(&f, 0x70, 0x88, 2, 0, 0x3000, 0x1000);
        f.put32(0x80, 4);
        cap(&f, 0x88, 0x00, 5, 0, 0, 0);
        f
    }

    #[test]
    fn the_contract_layout_is_found() {
        let f = contract_function();
        let layout = probe(&f).unwrap();
        assert_eq!(
            layout,
            Layout {
                common: 0xc000_0000,
                notify: 0xc000_3000,
                notify_len: 0x1000,
                notify_multiplier: 4,
                isr: 0xc000_1000,
                device: 0xc000_2000,
                device_len: 0x3c,
            }
        );
        assert_eq!(f.command(), COMMAND_MEMORY | COMMAND_BUS_MASTER);
        assert_eq!(layout.notify_offset(0), Some(0));
        assert_eq!(layout.notify_offset(0x3ff), Some(0xffc));
        assert_eq!(layout.notify_offset(0x400), None);
    }

    #[test]
    fn qemus_layout_in_bar4_is_found() {
        // QEMU's modern virtio-blk-pci: BAR1 MSI-X (32-bit), BAR4 64-bit with common at 0,
        // ISR 0x1000, device 0x2000, notify 0x3000 (multiplier 4). A capability of another
        // cfg_type, one naming a reserved BAR, and a second notify capability (even one
        // that would run past configuration space) are ignored.
        let mut f = Function::new();
        f.bar32(1, 0xfebd_1000, 0x1000);
        f.bar64(4, 0xfe00_0000, 0x4000);
        f.cap_list(0x40);
        cap(&f, 0x40, 0x50, 8, 4, 0, 0);
        f.put32(0x50, 0x11 | 0x60 << 8);
        cap(&f, 0x60, 0x80, 2, 7, 0x3000, 0x1000);
        f.put32(0x70, 2);
        cap(&f, 0x80, 0xa0, 2, 4, 0x3000, 0x1000);
        f.put32(0x90, 4);
        cap(&f, 0xa0, 0xc0, 4, 4, 0x2000, 0x1000);
        cap(&f, 0xc0, 0xe0, 3, 4, 0x1000, 0x1000);
        cap(&f, 0xe0, 0xf0, 1, 4, 0, 0x1000);
        cap(&f, 0xf0, 0x00, 2, 4, 0, 0x10);
        let layout = probe(&f).unwrap();
        assert_eq!(
            layout,
            Layout {
                common: 0xfe00_0000,
                notify: 0xfe00_3000,
                notify_len: 0x1000,
                notify_multiplier: 4,
                isr: 0xfe00_1000,
                device: 0xfe00_2000,
                device_len: 0x1000,
            }
        );
    }

    #[test]
    fn each_malformed_function_is_named() {
        /// What is wrong, how to make it so, and the error it must give.
        type Case = (&'static str, fn(&Function), ProbeError);
        let cases: [Case; 11] = [
            (
                "no capability list",
                |f| f.put32(pci::REG_COMMAND, 0),
                ProbeError::Capabilities(CapError::NoList),
            ),
            (
                "common capability missing",
                |f| f.put32(0x40, 0x09 | 0x50 << 8 | 16 << 16 | 6 << 24),
                ProbeError::Missing(Structure::Common),
            ),
            (
                "only capability naming a reserved BAR",
                |f| f.put32(0x60 + 4, 6),
                ProbeError::Missing(Structure::Device),
            ),
            (
                "BAR0 unassigned",
                |f| {
                    f.put32(pci::REG_BAR0, 4);
                },
                ProbeError::Bar(0, BarError::Unassigned),
            ),
            (
                "device configuration past the BAR",
                |f| f.put32(0x60 + 8, 0x3ff0),
                ProbeError::PastBar {
                    structure: Structure::Device,
                    bar: 0,
                    offset: 0x3ff0,
                    length: 0x3c,
                    bar_size: 0x4000,
                },
            ),
            (
                "notification in a BAR that is the upper half",
                |f| f.put32(0x70 + 4, 1),
                ProbeError::Bar(1, BarError::UpperHalf),
            ),
            (
                "short notify capability",
                |f| f.put32(0x70, 0x09 | 0x88 << 8 | 16 << 16 | 2 << 24),
                ProbeError::ShortCapability {
                    at: 0x70,
                    cap_len: 16,
                },
            ),
            (
                "odd notify_off_multiplier",
                |f| f.put32(0x80, 6),
                ProbeError::NotifyMultiplier(6),
            ),
            (
                "misaligned common configuration",
                |f| f.put32(0x40 + 8, 2),
                ProbeError::Misaligned(Structure::Common, 2),
            ),
            (
                "short common configuration",
                |f| f.put32(0x40 + 12, 0x30),
                ProbeError::TooShort(Structure::Common, 0x30),
            ),
            (
                "capability at the end of configuration space",
                |f| {
                    f.put32(0x88, 0x09 | 0xf8 << 8 | 16 << 16 | 5 << 24);
                    f.put32(0xf8, 0x09 | 16 << 16 | 4 << 24);
                    f.put32(0x60, 0x09 | 0x70 << 8 | 16 << 16 | 8 << 24);
                },
                ProbeError::PastConfigSpace { at: 0xf8 },
            ),
        ];
        for (what, break_it, expected) in cases {
            let f = contract_function();
            break_it(&f);
            assert_eq!(probe(&f), Err(expected), "{what}");
            if !matches!(expected, ProbeError::PastBar { .. }) {
                assert_eq!(
                    f.command() & COMMAND_MEMORY,
                    0,
                    "{what}: decoding turned on"
                );
            }
        }
    }

    #[test]
    fn a_bar_above_4_gib_is_refused() {
        let f = contract_function();
        f.put32(pci::REG_BAR0 + 4, 1);
        assert_eq!(
            probe(&f),
            Err(ProbeError::Bar(
                0,
                BarError::AboveMapped(Bar {
                    base: 0x1_c000_0000,
                    size: 0x4000
                })
            ))
        );
    }
}
