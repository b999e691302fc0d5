//! Emulated devices and the buses that route guest accesses to them.

pub mod bus;
pub mod exit;
pub mod legacy;
pub mod pci;
pub mod rtc;
pub mod serial;
pub mod sim_vmgexit;
pub mod virtio;
