//! Cloister's boot verifier, the pure part: everything the verifier decides, as functions
//! over byte slices, so that the same code runs in the verifier (no_std, bare metal) and
//! in host unit tests and fuzz targets.
//!
//! The layout it serves (issue 9): the PSP measures only the verifier, one manifest page
//! and the VMSAs. The kernel, initrd and command line are staged in unmeasured memory;
//! the manifest ([`manifest`]) carries their SHA-384 digests, where they are staged and
//! where they go, and the e820 map. The verifier validates the RAM that was not launched
//! ([`validate`]), copies each image into private memory, checks its digest against the
//! manifest ([`manifest::check_digest`]), builds Linux's zero page with the CC blob
//! ([`zero_page`]) and enters the kernel.

#![cfg_attr(not(test), no_std)]

pub mod manifest;
pub mod validate;
pub mod zero_page;
