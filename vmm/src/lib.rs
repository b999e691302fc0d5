//! The Cloister monitor: KVM VM and vCPUs, guest memory, boot layout, devices, launch
//! backends, and the command-line front ends of the `cloister` binary.

pub mod cli;
pub mod devices;
pub mod test_guest;
