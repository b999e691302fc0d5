//! The monitor's main thread: an epoll loop that waits for the guest to ask for an exit,
//! for a vCPU thread to end, for a terminating signal, and forwards host terminal input
//! to the serial console.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::exit::ExitHandle;

const TOKEN_EXIT: u64 = 0;
const TOKEN_VCPU: u64 = 1;
const TOKEN_STDIN: u64 = 2;
const TOKEN_SIGNAL: u64 = 3;

/// Why the loop returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEnd {
    /// The guest asked to end the VM with this status.
    GuestExit(u8),
    /// A vCPU thread ended on its own (its result says why).
    VcpuEnded,
    /// The monitor got SIGINT or SIGTERM.
    Signal(i32),
}

/// A small epoll wrapper: file descriptors registered with a token.
pub struct EventLoop {
    epoll: Epoll,
}

impl EventLoop {
    /// An empty loop.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
        })
    }

    /// Watches `fd` for input, reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Waits (at most `timeout_ms`, -1 = forever) and returns the ready tokens with
    /// whether the peer hung up.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<Vec<(u64, bool)>> {
        let mut events = [EpollEvent::default(); 8];
        let n = loop {
            match self.epoll.wait(timeout_ms, &mut events) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(events[..n]
            .iter()
            .map(|e| {
                let set = e.event_set();
                (
                    e.data(),
                    set.contains(EventSet::HANG_UP) || set.contains(EventSet::ERROR),
                )
            })
            .collect())
    }
}

/// The eventfd the SIGINT/SIGTERM handler writes (-1 when none).
static SIGNAL_EVENT: AtomicI32 = AtomicI32::new(-1);
/// The last terminating signal received.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn handle_terminate(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    let fd = SIGNAL_EVENT.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `fd` is the eventfd owned by the
        // running event loop (kept open while it is registered here) and the buffer is
        // a live 8-byte value.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Host terminal input for the guest's console: puts a terminal stdin into
/// non-canonical, no-echo mode (Ctrl-C still stops the monitor) and restores it on drop.
pub struct TerminalInput {
    saved: Option<libc::termios>,
}

impl TerminalInput {
    /// Takes stdin if it is a terminal.
    pub fn from_stdin() -> Option<Self> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it and we check the result.
        let mut term: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `term` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
            return None;
        }
        let saved = term;
        term.c_lflag &= !(libc::ICANON | libc::ECHO);
        term.c_iflag &= !libc::ICRNL;
        term.c_cc[libc::VMIN] = 1;
        term.c_cc[libc::VTIME] = 0;
        // SAFETY: `term` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) } != 0 {
            return None;
        }
        Some(Self { saved: Some(saved) })
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reads into a live, writable buffer of the given length.
        let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl Drop for TerminalInput {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            // SAFETY: restores the termios read at construction.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved) };
        }
    }
}

/// Runs the main loop until the guest asks to exit, a vCPU thread ends, or the monitor
/// is told to terminate. `input` receives terminal bytes for the console.
pub fn run(
    exit: &ExitHandle,
    vcpu_ended: &EventFd,
    terminal: Option<&TerminalInput>,
    mut input: impl FnMut(&[u8]),
) -> io::Result<LoopEnd> {
    let events = EventLoop::new()?;
    events.add(exit.event().as_raw_fd(), TOKEN_EXIT)?;
    events.add(vcpu_ended.as_raw_fd(), TOKEN_VCPU)?;
    let signal_event = EventFd::new(EFD_NONBLOCK)?;
    events.add(signal_event.as_raw_fd(), TOKEN_SIGNAL)?;
    SIGNAL_EVENT.store(signal_event.as_raw_fd(), Ordering::SeqCst);
    let _unregister = Unregister(signal_event.as_raw_fd());
    for num in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(num, handle_terminate) {
            log::warn!("cannot handle signal {num}: {e}");
        }
    }
    if terminal.is_some() {
        events.add(libc::STDIN_FILENO, TOKEN_STDIN)?;
    }
    loop {
        for (token, hung_up) in events.wait(-1)? {
            match token {
                TOKEN_EXIT => {
                    if let Some(code) = exit.requested() {
                        return Ok(LoopEnd::GuestExit(code));
                    }
                }
                TOKEN_VCPU => return Ok(LoopEnd::VcpuEnded),
                TOKEN_SIGNAL => return Ok(LoopEnd::Signal(LAST_SIGNAL.load(Ordering::SeqCst))),
                TOKEN_STDIN => {
                    let mut buf = [0u8; 64];
                    match terminal.map(|t| t.read(&mut buf)) {
                        Some(Ok(n)) if n > 0 => input(&buf[..n]),
                        Some(Err(e))
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        _ => {
                            log::debug!("console input closed");
                            events.remove(libc::STDIN_FILENO)?;
                        }
                    }
                    if hung_up {
                        // Removal after an error is best effort: it may already be gone.
                        let _ = events.remove(libc::STDIN_FILENO);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Detaches the signal eventfd from the handler when the loop ends (unless another loop
/// in the same process, as in parallel tests, has installed its own since).
struct Unregister(RawFd);

impl Drop for Unregister {
    fn drop(&mut self) {
        let _ = SIGNAL_EVENT.compare_exchange(self.0, -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn guest_exit_ends_the_loop_with_its_code() {
        let exit = ExitHandle::new().unwrap();
        let vcpu = EventFd::new(EFD_NONBLOCK).unwrap();
        let requester = exit.clone();
        let t = std::thread::spawn(move || requester.request(7));
        let end = run(&exit, &vcpu, None, |_| {}).unwrap();
        t.join().unwrap();
        assert_eq!(end, LoopEnd::GuestExit(7));
    }

    #[test]
    fn vcpu_end_wakes_the_loop() {
        let exit = ExitHandle::new().unwrap();
        let vcpu = EventFd::new(EFD_NONBLOCK).unwrap();
        vcpu.write(1).unwrap();
        assert_eq!(run(&exit, &vcpu, None, |_| {}).unwrap(), LoopEnd::VcpuEnded);
    }

    #[test]
    fn event_loop_reports_tokens() {
        let l = EventLoop::new().unwrap();
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let b = EventFd::new(EFD_NONBLOCK).unwrap();
        l.add(a.as_raw_fd(), 10).unwrap();
        l.add(b.as_raw_fd(), 20).unwrap();
        assert!(l.wait(0).unwrap().is_empty());
        b.write(1).unwrap();
        assert_eq!(l.wait(0).unwrap(), vec![(20, false)]);
        l.remove(b.as_raw_fd()).unwrap();
        assert!(l.wait(0).unwrap().is_empty());
    }
}
