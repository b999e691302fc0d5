//! TCB_VERSION values and the processor generations that decide their byte layout.
//!
//! Milan and Genoa: byte 0 boot loader, 1 TEE, 2..=5 reserved, 6 SNP, 7 microcode.
//! Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 4..=6 reserved, 7 microcode.

use serde::Serialize;

/// An EPYC generation with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Generation {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4), including Bergamo and Siena.
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Generation {
    /// All generations this verifier knows.
    pub const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];

    /// The name AMD uses in certificate names and the KDS ("Milan", "Genoa", "Turin").
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// Generation from CPUID family and model, as written in report versions 3 and later.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Self::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Self::Genoa),
            (0x1A, 0x00..=0x11) => Some(Self::Turin),
            _ => None,
        }
    }

    /// Generation from a VCEK/VLEK productName ("Milan-B0", "Genoa", "Turin-C0", ...).
    pub fn from_product_name(name: &str) -> Option<Self> {
        let base = name.split('-').next().unwrap_or(name);
        Self::ALL.into_iter().find(|g| g.name() == base)
    }

    /// Parses "milan", "genoa" or "turin" (any case).
    pub fn from_cli(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(name))
    }

    /// Length of the hwID / meaningful CHIP_ID prefix: 64 bytes, 8 on Turin.
    pub fn hwid_len(self) -> usize {
        match self {
            Self::Milan | Self::Genoa => 64,
            Self::Turin => 8,
        }
    }

    /// True when the TCB layout has an FMC field.
    pub fn has_fmc(self) -> bool {
        self == Self::Turin
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A raw TCB_VERSION (8 bytes little-endian in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcbVersion(pub u64);

/// A TCB_VERSION decoded for one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TcbParts {
    /// FMC security patch level (Turin only).
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// TEE (PSP OS) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbParts {
    /// True when every component of `self` is at least the same component of `min`
    /// (an absent FMC in `min` is not compared).
    pub fn at_least(&self, min: &TcbParts) -> bool {
        let fmc_ok = match (self.fmc, min.fmc) {
            (_, None) => true,
            (Some(a), Some(b)) => a >= b,
            (None, Some(b)) => b == 0,
        };
        fmc_ok
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }
}

impl std::fmt::Display for TcbParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bl={} tee={} snp={} ucode={:#x}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

impl TcbVersion {
    fn bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }

    /// Decodes the components for `generation`.
    pub fn parts(self, generation: Generation) -> TcbParts {
        let [b0, b1, b2, b3, _, _, b6, b7] = self.bytes();
        match generation {
            Generation::Milan | Generation::Genoa => TcbParts {
                fmc: None,
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
            },
            Generation::Turin => TcbParts {
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            },
        }
    }

    /// The reserved bytes of the layout for `generation` (they must be zero).
    pub fn reserved_bytes(self, generation: Generation) -> Vec<u8> {
        let b = self.bytes();
        match generation {
            Generation::Milan | Generation::Genoa => b.get(2..6).unwrap_or(&[]).to_vec(),
            Generation::Turin => b.get(4..7).unwrap_or(&[]).to_vec(),
        }
    }

    /// Encodes components for `generation` (reserved bytes zero).
    pub fn from_parts(parts: TcbParts, generation: Generation) -> Self {
        let b = match generation {
            Generation::Milan | Generation::Genoa => [
                parts.bootloader,
                parts.tee,
                0,
                0,
                0,
                0,
                parts.snp,
                parts.microcode,
            ],
            Generation::Turin => [
                parts.fmc.unwrap_or(0),
                parts.bootloader,
                parts.tee,
                parts.snp,
                0,
                0,
                0,
                parts.microcode,
            ],
        };
        Self(u64::from_le_bytes(b))
    }
}

impl std::fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}
