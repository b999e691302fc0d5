//! The Cloister monitor: KVM VM and vCPUs, guest memory, boot layout, devices, launch
//! backends, and the command-line front ends of the `cloister` binary.

pub mod cli;
pub mod devices;
pub mod test_guest;
pub mod boot;
pub mod memory;
pub mod cpuid;
pub mod vstate;
pub mod config;
pub mod event_loop;
pub mod builder;
pub mod acpi;
