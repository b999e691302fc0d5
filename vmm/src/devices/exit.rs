//! The one way a device asks the monitor to stop the VM: power-off, reset, or a
//! guest-chosen exit code. Devices hold a clone of [`ExitHandle`]; the event loop waits
//! on its event and ends the VM with the recorded status.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// No request recorded yet.
const NONE: i32 = -1;

/// Shared, cloneable request to end the VM with an exit status.
#[derive(Clone)]
pub struct ExitHandle {
    event: Arc<EventFd>,
    code: Arc<AtomicI32>,
}

impl ExitHandle {
    /// A handle with nothing requested yet.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            event: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            code: Arc::new(AtomicI32::new(NONE)),
        })
    }

    /// Asks the monitor to end the VM with status `code` (0..=255). The first request
    /// wins: a guest that powers off after writing an exit code keeps that code.
    pub fn request(&self, code: u8) {
        let _ =
            self.code
                .compare_exchange(NONE, i32::from(code), Ordering::SeqCst, Ordering::SeqCst);
        if let Err(e) = self.event.write(1) {
            log::error!("cannot signal VM exit: {e}");
        }
    }

    /// The status requested so far, if any.
    pub fn requested(&self) -> Option<u8> {
        u8::try_from(self.code.load(Ordering::SeqCst)).ok()
    }

    /// The event that becomes readable once an exit was requested (for epoll).
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_request_wins() {
        let exit = ExitHandle::new().unwrap();
        assert_eq!(exit.requested(), None);
        exit.clone().request(3);
        exit.request(0);
        assert_eq!(exit.requested(), Some(3));
        assert_eq!(exit.event().read().unwrap(), 2);
    }
}
