//! vCPU models and their CPUID signatures.
//!
//! QEMU puts the CPUID(1).EAX family/model/stepping signature of the vCPU model in RDX of
//! the reset VMSA, so the launch digest depends on the model. The names are QEMU's
//! (`-cpu EPYC-Milan-v2`); the signature is computed as AMD's CPUID specification
//! (publication 25481, CPUID Fn0000_0001_EAX) describes.

/// Why a vCPU type could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuTypeError {
    /// A name QEMU does not define for an AMD EPYC model.
    #[error("unknown vCPU type {name:?}; valid types: {}", valid_names().join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
}

/// CPUID(1).EAX signature from family, model and stepping.
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

const EPYC: u32 = cpu_signature(23, 1, 2);
const ROME: u32 = cpu_signature(23, 49, 0);
const MILAN: u32 = cpu_signature(25, 1, 1);
const GENOA: u32 = cpu_signature(25, 17, 0);
const TURIN: u32 = cpu_signature(26, 0, 0);

/// QEMU's AMD EPYC vCPU models and versions with their signatures. Versions of one model
/// differ in features, not in family/model/stepping.
pub const VCPU_TYPES: &[(&str, u32)] = &[
    ("EPYC", EPYC),
    ("EPYC-v1", EPYC),
    ("EPYC-v2", EPYC),
    ("EPYC-IBPB", EPYC),
    ("EPYC-v3", EPYC),
    ("EPYC-v4", EPYC),
    ("EPYC-v5", EPYC),
    ("EPYC-Rome", ROME),
    ("EPYC-Rome-v1", ROME),
    ("EPYC-Rome-v2", ROME),
    ("EPYC-Rome-v3", ROME),
    ("EPYC-Rome-v4", ROME),
    ("EPYC-Rome-v5", ROME),
    ("EPYC-Milan", MILAN),
    ("EPYC-Milan-v1", MILAN),
    ("EPYC-Milan-v2", MILAN),
    ("EPYC-Milan-v3", MILAN),
    ("EPYC-Genoa", GENOA),
    ("EPYC-Genoa-v1", GENOA),
    ("EPYC-Genoa-v2", GENOA),
    ("EPYC-Turin", TURIN),
    ("EPYC-Turin-v1", TURIN),
];

/// The signature of a QEMU vCPU model name.
pub fn vcpu_signature(name: &str) -> Result<u32, CpuTypeError> {
    VCPU_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sig)| *sig)
        .ok_or_else(|| CpuTypeError::Unknown {
            name: name.to_string(),
        })
}

/// All valid names, in table order.
pub fn valid_names() -> Vec<&'static str> {
    VCPU_TYPES.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures() {
        // Family 23 (0x17) = base 0xf + extended 0x8.
        assert_eq!(EPYC, 0x0080_0f12);
        assert_eq!(ROME, 0x0083_0f10);
        assert_eq!(MILAN, 0x00a0_0f11);
        assert_eq!(GENOA, 0x00a1_0f10);
        assert_eq!(TURIN, 0x00b0_0f00);
        assert_eq!(vcpu_signature("EPYC-Milan-v2"), Ok(MILAN));
    }

    #[test]
    fn unknown_type_lists_valid_ones() {
        let e = vcpu_signature("EPYC-Zen9").unwrap_err().to_string();
        assert!(e.contains("EPYC-Zen9"));
        assert!(e.contains("EPYC-Genoa-v1"));
    }
}
