//! The Cloister monitor: KVM VM and vCPUs, guest memory, boot layout, devices, launch
//! backends, and the command-line front ends of the `cloister` binary.

pub mod acpi;
pub mod backend;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod config;
pub mod cpuid;
pub mod devices;
pub mod event_loop;
pub mod jail;
pub mod memory;
pub mod seccomp;
pub mod snp;
pub mod test_guest;
pub mod vstate;
