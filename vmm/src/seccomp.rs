//! seccomp filters, one per thread kind, as Firecracker does: the system calls each
//! thread of the running monitor may make, and nothing else (default action: kill the
//! process). Installed on each thread before the guest runs: a vCPU thread installs its
//! own at its start, before its first KVM_RUN; the main thread installs the VMM filter
//! after it has started every vCPU thread (so they do not inherit it) and before it runs
//! the event loop. `cloister run --seccomp off` skips them, with a warning.
//!
//! The lists are as small as the code allows; each entry says who needs it. They were
//! taken from `strace -f` of `cloister run` on every platform and device configuration
//! the tests boot, and every test runs under them.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which thread a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread while the VM runs: the event loop (signals, terminal input, the
    /// exit and vCPU-ended events), kicking and joining vCPU threads, the final report.
    Vmm,
    /// A vCPU thread: KVM_RUN and the device emulation its exits reach (serial output,
    /// virtio register accesses, the simulated VMGEXIT, page conversions on SNP). No disk
    /// I/O: queue notifications go to the device threads.
    Vcpu,
    /// A device thread: waits on its notification eventfd, serves its virtio queues (disk
    /// reads, writes, flushes), raises the interrupt through an eventfd.
    Device,
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter does not compile (a bug in the lists).
    #[error("building the {0:?} seccomp filter: {1}")]
    Build(ThreadKind, String),
    /// The kernel refused the filter.
    #[error("installing the {0:?} seccomp filter: {1}")]
    Install(ThreadKind, String),
}

// KVM ioctl request numbers the running threads use.
/// KVM_RUN.
const KVM_RUN: u64 = 0xae80;
/// KVM_GET_REGS (the RIP in a vCPU error report).
const KVM_GET_REGS: u64 = 0x8090_ae81;
/// KVM_GET_SREGS.
const KVM_GET_SREGS: u64 = 0x8138_ae83;
/// KVM_SET_MEMORY_ATTRIBUTES (SNP page-state changes at run time).
const KVM_SET_MEMORY_ATTRIBUTES: u64 = 0x4020_aed2;
/// KVM_SET_GSI_ROUTING (a vCPU's write to a virtio-pci function's MSI-X table routes the
/// vector).
const KVM_SET_GSI_ROUTING: u64 = 0x4008_ae6a;
/// KVM_IOEVENTFD (a vCPU's write to a BAR or the command register moves a virtio-pci
/// function's notify ioeventfds).
const KVM_IOEVENTFD: u64 = 0x4040_ae79;
/// TCGETS / TCSETS (the VMM thread restores the terminal it put in raw mode).
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
/// FIONBIO.
const FIONBIO: u64 = 0x5421;

fn ioctl_rule(request: u64) -> Result<SeccompRule, String> {
    let condition = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
        .map_err(|e| e.to_string())?;
    SeccompRule::new(vec![condition]).map_err(|e| e.to_string())
}

/// System calls every thread of the monitor needs: memory management by the allocator,
/// locks, signals (the vCPU kick is a signal), writing logs, ending.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    libc::SYS_close,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The allow-list of `kind`: syscall number → rules (empty: any arguments).
fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> =
        COMMON.iter().map(|&nr| (nr, Vec::new())).collect();
    // fcntl(fd, F_GETFD) only: a debug build's standard library asserts that a file
    // descriptor is open before it closes it (seen: a vCPU thread dropping its fd at the
    // end of the run was killed); nothing else of fcntl is needed.
    let getfd = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::F_GETFD as u64,
    )
    .and_then(|c| SeccompRule::new(vec![c]))
    .map_err(|e| e.to_string())?;
    map.insert(libc::SYS_fcntl, vec![getfd]);
    match kind {
        ThreadKind::Vcpu => {
            map.insert(
                libc::SYS_ioctl,
                [
                    KVM_RUN,
                    KVM_GET_REGS,
                    KVM_GET_SREGS,
                    KVM_SET_MEMORY_ATTRIBUTES,
                    KVM_SET_GSI_ROUTING,
                    KVM_IOEVENTFD,
                ]
                .into_iter()
                .map(ioctl_rule)
                .collect::<Result<_, _>>()?,
            );
            // The simulated PSP draws fresh randomness (report IDs).
            map.insert(libc::SYS_getrandom, Vec::new());
        }
        ThreadKind::Device => {
            // virtio-blk requests on the disk files; no ioctl at all.
            for nr in [
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_fdatasync,
                libc::SYS_fsync,
                libc::SYS_lseek,
            ] {
                map.insert(nr, Vec::new());
            }
        }
        ThreadKind::Vmm => {
            map.insert(
                libc::SYS_ioctl,
                [TCGETS, TCSETS, FIONBIO]
                    .into_iter()
                    .map(ioctl_rule)
                    .collect::<Result<_, _>>()?,
            );
            // The event loop and its signal handling.
            for nr in [
                libc::SYS_epoll_create1,
                libc::SYS_epoll_ctl,
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_eventfd2,
                libc::SYS_rt_sigaction,
                libc::SYS_fcntl,
                // Kicking vCPU threads out of KVM_RUN (pthread_kill).
                libc::SYS_tgkill,
            ] {
                map.insert(nr, Vec::new());
            }
        }
    }
    Ok(map)
}

/// The compiled filter of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |e: String| SeccompError::Build(kind, e);
    let filter = SeccompFilter::new(
        rules(kind).map_err(build)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build(e.to_string()))
}

/// Installs `kind`'s filter on the calling thread (and threads it creates later).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    let program = filter(kind)?;
    seccompiler::apply_filter(&program).map_err(|e| SeccompError::Install(kind, e.to_string()))
}

/// Test hook of `cloister run --seccomp-violation`: a system call no filter allows
/// (`uname`), made by the calling thread after its filter is installed. The process must
/// die of SIGSYS.
pub fn violate() {
    let mut name = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname writes one utsname into the buffer it is given.
    let _ = unsafe { libc::uname(name.as_mut_ptr()) };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn both_filters_compile_and_keep_their_lists_apart() {
        for kind in [ThreadKind::Vmm, ThreadKind::Vcpu, ThreadKind::Device] {
            assert!(!filter(kind).unwrap().is_empty());
        }
        let vcpu = rules(ThreadKind::Vcpu).unwrap();
        let vmm = rules(ThreadKind::Vmm).unwrap();
        let device = rules(ThreadKind::Device).unwrap();
        // Disk I/O only on device threads; the event loop only on the main thread; KVM
        // and terminal ioctls not on device threads.
        assert!(device.contains_key(&libc::SYS_pwrite64));
        assert!(!vcpu.contains_key(&libc::SYS_pwrite64));
        assert!(!vcpu.contains_key(&libc::SYS_fdatasync));
        assert!(!vmm.contains_key(&libc::SYS_pwrite64));
        assert!(!device.contains_key(&libc::SYS_ioctl));
        assert!(vmm.contains_key(&libc::SYS_epoll_wait));
        assert!(!vcpu.contains_key(&libc::SYS_epoll_wait));
        // Nothing opens files, creates processes or sockets once the VM runs.
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_socket,
            libc::SYS_uname,
        ] {
            assert!(!vcpu.contains_key(&nr) && !vmm.contains_key(&nr), "{nr}");
        }
    }
}
