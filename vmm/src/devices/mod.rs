//! Emulated devices and the buses that route guest accesses to them.

pub mod bus;
pub mod exit;
pub mod guest_request;
pub mod legacy;
pub mod rtc;
pub mod serial;
pub mod virtio;
