//! KVM state: the VM and its vCPUs, and the threads that run them.

pub mod vcpu;
pub mod vm;
pub mod vmsa_regs;
