//! The built-in test guest (tests/guest), embedded in the `cloister` binary.
//! Placeholder until the guest build lands: empty means "not built in".

/// The test guest as an ELF64 image for the Linux 64-bit boot protocol entry.
pub const ELF: &[u8] = &[];
