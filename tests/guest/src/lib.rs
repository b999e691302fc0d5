//! The test guest's pure parts: no hardware access, everything through slices and the
//! [`tables::PhysMem`] and [`pci::ConfigSpace`] traits, so the same code runs in the guest
//! (`no_std`) and in host tests (`cargo test --manifest-path tests/guest/Cargo.toml
//! --target x86_64-unknown-linux-gnu`). The kernel itself is `main.rs`.

#![cfg_attr(not(test), no_std)]

#[cfg(feature = "attest")]
pub mod attest;
pub mod cc_blob;
pub mod cmdline;
pub mod e820;
pub mod ghcb;
#[cfg(feature = "attest")]
pub mod guest_msg;
pub mod pci;
pub mod sha256;
pub mod tables;
pub mod virtio_pci;
