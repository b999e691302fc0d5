//! The simulated platform's guest-request transport: a doorbell I/O port.
//!
//! The guest copies the sealed request into its request page (at a 4 KiB-aligned guest
//! physical address R below 4 GiB; the response page is at R + 0x1000), writes R with a
//! 32-bit `out` to [`DOORBELL_PORT`], then reads the 32-bit status with `in` from the same
//! port: 0 = the PSP answered and the response page is filled; 0xFFFF_FFFF = the VMM
//! cannot serve guest requests; anything else = the firmware's status of a refusal. The
//! response is copied out before the guest checks it, so the host cannot change it
//! meanwhile. (On real SNP the same messages travel by the GHCB guest request instead.)

use core::cell::UnsafeCell;

use cloister_test_guest::attest::{Transport, TransportError};
use cloister_test_guest::guest_msg::{Page, PAGE_SIZE};

use crate::io::{inl, outl};

/// The doorbell's I/O port (32-bit accesses).
pub const DOORBELL_PORT: u16 = 0x0e00;
/// Status: the PSP answered.
const STATUS_ANSWERED: u32 = 0;
/// Status: the VMM has no PSP to ask.
const STATUS_UNAVAILABLE: u32 = 0xffff_ffff;

/// The pages shared with the VMM: the request at R, the response at R + 0x1000.
#[repr(C, align(4096))]
struct SharedPages {
    request: Page,
    response: Page,
}

struct Shared(UnsafeCell<SharedPages>);
// SAFETY: one CPU runs the guest, without interrupts, and only `Doorbell::exchange` touches
// the pages; it is not re-entered, so no two accesses overlap.
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared(UnsafeCell::new(SharedPages {
    request: [0; PAGE_SIZE],
    response: [0; PAGE_SIZE],
}));

/// The doorbell transport.
pub struct Doorbell;

impl Transport for Doorbell {
    fn exchange(&mut self, request: &Page, response: &mut Page) -> Result<(), TransportError> {
        let shared = SHARED.0.get();
        // The guest is linked at 1 MiB, so its statics are below 4 GiB.
        let Ok(gpa) = u32::try_from(shared as usize) else {
            return Err(TransportError::Unavailable);
        };
        // SAFETY: `shared` points to the static pages, which nothing else accesses now
        // (see `Shared`); `request` is a different object.
        unsafe {
            (*shared).request = *request;
            (*shared).response = [0; PAGE_SIZE];
        }
        outl(DOORBELL_PORT, gpa);
        match inl(DOORBELL_PORT) {
            STATUS_ANSWERED => {
                // SAFETY: as above; the VMM wrote the response page during the `in` exit,
                // and `inl` is not `nomem`, so this read is not moved before it.
                *response = unsafe { (*shared).response };
                Ok(())
            }
            STATUS_UNAVAILABLE => Err(TransportError::Unavailable),
            status => Err(TransportError::Refused { status }),
        }
    }
}
