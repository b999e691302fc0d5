use super::*;

/// The signals forwarded to the jailed monitor.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The jailed child's pid, for the parent's handler (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// The forwarded signals that were not blocked before [`block`].
pub(super) struct Blocked(Vec<libc::c_int>);

extern "C" fn forward(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill(2) is async-signal-safe; `child` is not reaped while it is
        // stored here (the parent waits with WNOWAIT, clears it, then reaps), so the
        // pid cannot have been reused.
        unsafe { libc::kill(child, num) };
    }
}

extern "C" fn exit_now(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: _exit(2) is async-signal-safe; the status is what the monitor's own
    // handler reports for a terminating signal (128 + N).
    unsafe { libc::_exit(128 + num) };
}

/// Blocks the forwarded signals (until [`restore`]).
pub(super) fn block() -> Result<Blocked, JailError> {
    let already = vmm_sys_util::signal::get_blocked_signals()
        .map_err(|e| setup("reading the signal mask", io::Error::other(e.to_string())))?;
    let mut blocked = Vec::new();
    for num in FORWARDED {
        if already.contains(&num) {
            continue;
        }
        vmm_sys_util::signal::block_signal(num).map_err(|e| {
            setup(
                format!("blocking signal {num}"),
                io::Error::other(e.to_string()),
            )
        })?;
        blocked.push(num);
    }
    Ok(Blocked(blocked))
}

/// Unblocks what [`block`] blocked.
pub(super) fn restore(blocked: &Blocked) {
    for &num in &blocked.0 {
        if let Err(e) = vmm_sys_util::signal::unblock_signal(num) {
            log::warn!("cannot unblock signal {num}: {e}");
        }
    }
}

/// The parent's handlers: forward to `child`.
pub(super) fn forward_to(child: libc::pid_t) {
    CHILD.store(child, Ordering::SeqCst);
    for num in FORWARDED {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(num, forward) {
            log::warn!("cannot forward signal {num} to the jailed monitor: {e}");
        }
    }
}

/// The child is gone: nothing to forward to.
pub(super) fn stop_forwarding() {
    CHILD.store(0, Ordering::SeqCst);
}

/// The child's handlers until the monitor's own: end with 128 + N.
pub(super) fn exit_on_forwarded_signals() {
    for num in FORWARDED {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(num, exit_now) {
            log::warn!("cannot handle signal {num} in the jail: {e}");
        }
    }
}
