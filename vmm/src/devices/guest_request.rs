//! The simulated platform's guest-request doorbell: how a guest's SNP guest message
//! reaches the simulated secure processor (on real SNP the same message goes through the
//! GHCB guest request, answered by KVM and the PSP; the message itself is identical).
//!
//! Protocol (one 32-bit I/O port, [`crate::boot::layout::GUEST_REQUEST_PORT`]): the guest
//! writes the GPA of its request page (4 KiB aligned, below 4 GiB); the response page is
//! the next page. The device reads the request page, has the PSP answer it, writes the
//! response page, and latches the firmware status, which the guest reads back from the
//! same port: 0 = answered, a firmware status = refused, 0xFFFF_FFFF = the request could
//! not be served (bad GPA, pages outside RAM). Requests are answered one at a time; a
//! guest that floods the port only spends its own vCPU time, and nothing is logged per
//! request.

use std::sync::{Arc, Mutex};

use cloister_attestation::sim::SimPsp;
use vm_memory::{Bytes, GuestAddress};

use super::bus::BusDevice;
use crate::memory::GuestMemoryMmap;

/// Status latched when a request cannot be served at all.
pub const VMM_ERROR: u32 = 0xffff_ffff;
const PAGE: u64 = 4096;

/// The doorbell.
pub struct GuestRequestDoorbell {
    psp: Arc<Mutex<SimPsp>>,
    mem: GuestMemoryMmap,
    status: u32,
}

impl GuestRequestDoorbell {
    /// A doorbell answering through `psp`, reading and writing `mem`.
    pub fn new(psp: Arc<Mutex<SimPsp>>, mem: GuestMemoryMmap) -> Self {
        GuestRequestDoorbell {
            psp,
            mem,
            status: VMM_ERROR,
        }
    }

    fn serve(&mut self, gpa: u64) -> u32 {
        if !gpa.is_multiple_of(PAGE) {
            return VMM_ERROR;
        }
        let mut request = [0u8; 4096];
        if self
            .mem
            .read_slice(&mut request, GuestAddress(gpa))
            .is_err()
        {
            return VMM_ERROR;
        }
        let mut response = [0u8; 4096];
        let status = {
            let mut psp = self.psp.lock().unwrap_or_else(|p| p.into_inner());
            psp.guest_request(&request, &mut response)
        };
        if status.is_success()
            && self
                .mem
                .write_slice(&response, GuestAddress(gpa + PAGE))
                .is_err()
        {
            return VMM_ERROR;
        }
        status.code()
    }
}

impl BusDevice for GuestRequestDoorbell {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let bytes = self.status.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| bytes.get(o + i))
                .copied()
                .unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only a whole 32-bit write of the GPA rings the bell.
        self.status = match (offset, <[u8; 4]>::try_from(data)) {
            (0, Ok(gpa)) => self.serve(u64::from(u32::from_le_bytes(gpa))),
            _ => VMM_ERROR,
        };
    }
}
