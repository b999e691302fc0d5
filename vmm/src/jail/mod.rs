//! The jailer (`cloister run --jail DIR --uid U --gid G`): Firecracker's idea, in process.
//!
//! Before the VM exists, as root:
//! 1. every input is checked on the host (a missing kernel, a disk that is a directory, a
//!    KVM node that is not a character device are refused naming the flag and the path);
//!    on `sim` the simulation root is created if missing and its certificates exported;
//! 2. the job's cgroup is created under the cgroup this process is in, with memory, CPU
//!    and PID limits ([`Limits`]): cgroup v2 when /sys/fs/cgroup is a cgroup2 mount whose
//!    controllers include memory, cpu and pids, otherwise one cgroup per cgroup v1
//!    hierarchy; a limit that cannot be written is refused naming the file;
//! 3. the process forks into a new PID namespace. The parent stays outside: it forwards
//!    SIGINT, SIGTERM and SIGHUP to the child, waits, removes the cgroups and passes the
//!    child's status through (128 + N when the child died of signal N);
//! 4. the child (PID 1 of its namespace) joins the cgroups, enters new mount, IPC, UTS and
//!    network namespaces, mounts a small tmpfs on DIR as the jail's root, puts into it
//!    only what the VM needs (`JailLayout`), `pivot_root`s into it and detaches the old
//!    root (nothing else is mounted: no /proc, no /sys except, on `snp`, the one kvm_amd
//!    parameter file the SNP probe reads);
//! 5. it drops to U:G: bounding set and ambient capabilities cleared, no supplementary
//!    groups, `setresgid`, `setresuid`, inheritable set cleared, `no_new_privs`; then it
//!    checks with `capget` and `prctl` that no capability is left anywhere;
//! 6. `run` builds and runs the VM from the returned config, whose paths are the in-jail
//!    ones, exactly as without the jail (seccomp filters included).
//!
//! Why bind mounts: disk images are neither copied (they can be large, and the guest's
//! writes must reach the host's file) nor hard-linked (a link must be on the jail's
//! filesystem and outlives the jail); a bind mount shows the one file, can be read-only at
//! the mount (kernel, initrd, `readonly=on` disks) whatever the file's mode, and vanishes
//! with the jail's mount namespace. The jailed user needs no search permission on the
//! host's directories, only access to the file itself (checked after the drop, naming
//! the host path). The exception is the simulation root: its keys are root's (mode 0600)
//! and the monitor rewrites its `certs/`, so its files are copied into the jail's tmpfs,
//! owned by U:G, and are gone when the jail ends.
//!
//! Why a tmpfs on DIR rather than DIR itself: nothing is written to the host's DIR (no
//! mount points or device nodes left behind, DIR may sit on a `nodev` filesystem), and
//! the jail holds exactly what the layout puts there, whatever DIR contains.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::builder::IdBlockFiles;
use crate::config::{KernelSource, Platform, SerialMode, VmConfig};
use crate::memory::MemorySize;

/// Memory the job may use beyond the guest's RAM, at least: the monitor's own heap,
/// stacks and mappings, KVM's per-VM and per-vCPU structures.
pub const MEMORY_OVERHEAD_BASE: u64 = 128 << 20;
/// The job's memory also grows by 1/`MEMORY_OVERHEAD_DIVISOR` of guest RAM (KVM's page
/// tables and memory-slot metadata scale with it).
pub const MEMORY_OVERHEAD_DIVISOR: u64 = 64;
/// CFS period of the CPU limit, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CPU quota the kernel accepts (cgroup v1 and v2), microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// Tasks beyond the main thread and one thread per vCPU.
pub const SPARE_PIDS: u64 = 8;

/// Where each input is inside the jail (fixed names: no host path leaks into the jail,
/// and no two inputs can collide).
pub mod in_jail {
    /// The KVM device node.
    pub const KVM: &str = "/dev/kvm";
    /// The SEV device node (`--platform snp`).
    pub const SEV: &str = "/dev/sev";
    /// The kernel image.
    pub const KERNEL: &str = "/kernel";
    /// The initrd.
    pub const INITRD: &str = "/initrd";
    /// Disk `N` is `/diskN`.
    pub const DISK_PREFIX: &str = "/disk";
    /// The serial output file (`--serial file=PATH`).
    pub const SERIAL: &str = "/serial";
    /// The copy of the simulation root (`--platform sim`).
    pub const SIM_ROOT: &str = "/sim-root";
    /// The guest certificate directory (`--guest-certs`).
    pub const GUEST_CERTS: &str = "/guest-certs";
    /// The ID block (`--id-block`).
    pub const ID_BLOCK: &str = "/id-block";
    /// The ID authentication structure (`--id-auth`).
    pub const ID_AUTH: &str = "/id-auth";
}

/// Errors while jailing the monitor. Each names the flag, file or step at fault.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The jailer needs root.
    #[error(
        "--jail must start as root (it creates namespaces, mounts, device nodes and cgroups, \
         then drops to --uid/--gid); this process's effective uid is {0}"
    )]
    NotRoot(u32),
    /// `--uid 0`.
    #[error("--uid 0: the jailed monitor must not run as root; give an unprivileged uid (e.g. 65534, nobody)")]
    RootUid,
    /// `--gid 0`.
    #[error("--gid 0: the jailed monitor must not run in the root group; give an unprivileged gid (e.g. 65534)")]
    RootGid,
    /// DIR is unusable.
    #[error("--jail {path}: {reason}")]
    Dir {
        /// DIR as given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An input file is unusable.
    #[error("{flag} {path}: {reason}")]
    Input {
        /// The flag that named it.
        flag: &'static str,
        /// The path as given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bad `--jail-memory`, `--jail-cpus` or `--jail-pids`.
    #[error("{0}")]
    Limit(String),
    /// No cgroup hierarchy can hold the limits.
    #[error("cannot apply the jail's limits: {0}")]
    CgroupUnavailable(String),
    /// A cgroup file or directory could not be written or created.
    #[error("cannot apply the jail's limits: {action} {file}: {source}")]
    Cgroup {
        /// What was tried ("write 268435456 to", "create").
        action: String,
        /// The file or directory.
        file: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The process has threads (fork would copy only one).
    #[error("the jail forks, which needs a single-threaded process; this one has {0} threads")]
    Threads(usize),
    /// A system call of the jail's setup failed.
    #[error("jail setup: {what}: {source}")]
    Setup {
        /// The step.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A capability or identity survived the drop.
    #[error("after dropping privileges, {what} is {value:#x}, not {expected:#x}")]
    Privileges {
        /// The set or id.
        what: &'static str,
        /// Its value.
        value: u64,
        /// What it must be.
        expected: u64,
    },
    /// The jailed user cannot use an input.
    #[error(
        "the jailed user {uid}:{gid} cannot {need} the {what} {host} ({jail} in the jail): \
         {source}; make it accessible to that user (e.g. chown {uid}:{gid})"
    )]
    Access {
        /// uid.
        uid: u32,
        /// gid.
        gid: u32,
        /// "read", "read and write", "write".
        need: &'static str,
        /// "kernel image", "disk image", ...
        what: &'static str,
        /// The host's path.
        host: PathBuf,
        /// The in-jail path.
        jail: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The simulation root could not be prepared.
    #[error("--sim-root {path}: {reason}")]
    SimRoot {
        /// The directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// `--jail-memory`, `--jail-cpus`, `--jail-pids` as given (each `None`: the default).
#[derive(Debug, Clone, Default)]
pub struct LimitRequest {
    /// Memory limit: a size such as `512M`.
    pub memory: Option<String>,
    /// CPU limit in CPUs, a decimal such as `1.5`.
    pub cpus: Option<String>,
    /// Task limit.
    pub pids: Option<u64>,
}

/// What `--jail` asks for.
#[derive(Debug, Clone)]
pub struct JailOptions {
    /// The directory the jail's root is mounted on.
    pub dir: PathBuf,
    /// The user the monitor runs as.
    pub uid: u32,
    /// The group the monitor runs as.
    pub gid: u32,
    /// The cgroup limits asked for.
    pub limits: LimitRequest,
    /// Test hook (`--jail-probe PATH`): once jailed, try to open PATH and report the
    /// result, the capability sets and the cgroup limits.
    pub probe: Option<PathBuf>,
}

/// The job's resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory the whole job may use (guest RAM included), bytes.
    pub memory_bytes: u64,
    /// CPU time, in thousandths of a CPU.
    pub cpu_millis: u64,
    /// Tasks (processes and threads).
    pub pids: u64,
}

impl Limits {
    /// The limits for a guest of `guest_memory` bytes and `vcpus` vCPUs whose kernel and
    /// initrd are `image_bytes` long, with the user's overrides in `request`:
    /// - memory: guest RAM + [`MEMORY_OVERHEAD_BASE`] + 1/[`MEMORY_OVERHEAD_DIVISOR`] of
    ///   guest RAM + twice the images (the monitor holds them while it builds the plan);
    /// - CPU: vCPUs + 1 (the vCPUs at full speed, and the event loop's thread);
    /// - tasks: 1 + vCPUs + [`SPARE_PIDS`].
    ///
    /// An override below what the guest needs (memory not above guest RAM, fewer tasks
    /// than the monitor's threads, less CPU than the kernel's minimum quota) is refused.
    pub fn derive(
        guest_memory: u64,
        vcpus: u8,
        image_bytes: u64,
        request: &LimitRequest,
    ) -> Result<Self, JailError> {
        let threads = 1 + u64::from(vcpus);
        let memory_bytes = match &request.memory {
            None => guest_memory
                .saturating_add(MEMORY_OVERHEAD_BASE)
                .saturating_add(guest_memory / MEMORY_OVERHEAD_DIVISOR)
                .saturating_add(image_bytes.saturating_mul(2)),
            Some(text) => {
                let size: MemorySize = text
                    .parse()
                    .map_err(|e| JailError::Limit(format!("--jail-memory: {e}")))?;
                if size.bytes() <= guest_memory {
                    return Err(JailError::Limit(format!(
                        "--jail-memory {text} is not more than the guest's memory ({}): the \
                         monitor needs room beyond it",
                        MemorySize(guest_memory)
                    )));
                }
                size.bytes()
            }
        };
        let cpu_millis = match &request.cpus {
            None => threads * 1000,
            Some(text) => parse_cpus(text)?,
        };
        let pids = match request.pids {
            None => threads + SPARE_PIDS,
            Some(n) if n < threads => {
                return Err(JailError::Limit(format!(
                    "--jail-pids {n} is fewer than the monitor's threads (1 + {vcpus} vCPUs)"
                )))
            }
            Some(n) => n,
        };
        Ok(Limits {
            memory_bytes,
            cpu_millis,
            pids,
        })
    }

    /// CPU time per [`CPU_PERIOD_US`], microseconds.
    pub fn cpu_quota_us(&self) -> u64 {
        self.cpu_millis.saturating_mul(CPU_PERIOD_US) / 1000
    }
}

/// Parses `--jail-cpus`: a decimal number of CPUs with up to three decimals, into
/// thousandths of a CPU.
fn parse_cpus(text: &str) -> Result<u64, JailError> {
    let bad = |why: &str| JailError::Limit(format!("--jail-cpus {text:?}: {why}"));
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad("not a number of CPUs (e.g. 2 or 1.5)"));
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("not a number of CPUs (e.g. 2 or 1.5)"));
    }
    if frac.len() > 3 {
        return Err(bad("at most three decimals"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("too large"))?
    };
    let frac_millis: u64 = format!("{frac:0<3}")
        .parse()
        .map_err(|_| bad("bad decimals"))?;
    let millis = whole
        .checked_mul(1000)
        .and_then(|m| m.checked_add(frac_millis))
        .filter(|m| m.checked_mul(CPU_PERIOD_US).is_some())
        .ok_or_else(|| bad("too large"))?;
    if millis * CPU_PERIOD_US / 1000 < CPU_MIN_QUOTA_US {
        return Err(bad(&format!(
            "below the kernel's minimum quota ({CPU_MIN_QUOTA_US} us per {CPU_PERIOD_US} us, 0.01 CPU)"
        )));
    }
    Ok(millis)
}

mod layout;
use layout::*;

/// Which side of the jail's fork this is.
#[derive(Debug)]
pub enum Jailed {
    /// The parent, outside the jail: the jailed monitor ended with this status (128 + N
    /// for death by signal N), and its cgroups are removed.
    Parent(u8),
    /// The jailed child: build and run the VM from this.
    Child(Box<JailedVm>),
}

/// The jailed child's VM, and what the jail reports.
#[derive(Debug)]
pub struct JailedVm {
    /// The plan: the config and ID block files with in-jail paths.
    pub layout: JailLayout,
    /// `--jail-probe` lines, for the CLI to print.
    pub probe: Vec<String>,
}

/// Jails this process as [`JailOptions`] asks for `config` (see the module
/// documentation). Returns twice, once on each side of the fork: [`Jailed::Parent`] after
/// the jailed child ended, [`Jailed::Child`] inside the jail, as U:G with no capability.
/// An error before the fork leaves no cgroup behind (a serial output file or simulation
/// root it created stays, as without the jail); an error in the child is the child's to
/// report (its status reaches the parent like any other).
pub fn enter(
    options: &JailOptions,
    config: &VmConfig,
    id_block: Option<&IdBlockFiles>,
) -> Result<Jailed, JailError> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(JailError::NotRoot(euid));
    }
    if options.uid == 0 {
        return Err(JailError::RootUid);
    }
    if options.gid == 0 {
        return Err(JailError::RootGid);
    }
    let dir = check_dir(&options.dir)?;
    let mut layout = JailLayout::plan(config, id_block);
    layout.check_host(&dir, options.uid, options.gid)?;
    let limits = Limits::derive(
        config.memory.bytes(),
        config.vcpus,
        layout.image_bytes(),
        &options.limits,
    )?;
    let threads = thread_count();
    if threads > 1 {
        return Err(JailError::Threads(threads));
    }
    let cgroups =
        cgroup::JobCgroups::create(&limits, &format!("cloister-jail-{}", std::process::id()))?;

    // The forwarded signals wait, blocked, until each side has its handlers.
    let blocked = signals::block()?;
    // SAFETY: unshare takes only flags; CLONE_NEWPID affects this process's future
    // children only.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        let source = io::Error::last_os_error();
        signals::restore(&blocked);
        return Err(setup("unshare(CLONE_NEWPID)", source));
    }
    // SAFETY: the process is single-threaded (checked above), so the child is a complete
    // copy with no lock held by a thread that does not exist in it.
    match unsafe { libc::fork() } {
        -1 => {
            let source = io::Error::last_os_error();
            signals::restore(&blocked);
            Err(setup("fork", source))
        }
        0 => {
            // The parent removes the cgroups; the child must never.
            let record = cgroups.record();
            std::mem::forget(cgroups);
            signals::exit_on_forwarded_signals();
            signals::restore(&blocked);
            let probe = jail_child(options, &dir, &layout, &record)?;
            Ok(Jailed::Child(Box::new(JailedVm { layout, probe })))
        }
        child => Ok(Jailed::Parent(wait_for_child(child, cgroups, &blocked))),
    }
}

fn setup(what: impl Into<String>, source: io::Error) -> JailError {
    JailError::Setup {
        what: what.into(),
        source,
    }
}

/// DIR exists and is a directory other than `/`; returns it canonical.
fn check_dir(dir: &Path) -> Result<PathBuf, JailError> {
    let bad = |reason: String| JailError::Dir {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => bad("does not exist".into()),
        _ => bad(e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(bad(format!(
            "is {}, not a directory",
            describe_type(meta.file_type())
        )));
    }
    let canonical = fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    if canonical == Path::new("/") {
        return Err(bad("is the host's root: give a directory of its own".into()));
    }
    Ok(canonical)
}

/// The number of threads of this process (1 if it cannot be told).
fn thread_count() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// The parent's side: forwards signals to `child` until it ends, removes the cgroups,
/// returns the child's status.
fn wait_for_child(
    child: libc::pid_t,
    cgroups: cgroup::JobCgroups,
    blocked: &signals::Blocked,
) -> u8 {
    signals::forward_to(child);
    signals::restore(blocked);
    // Wait for the end without reaping, so that the pid the handler signals stays the
    // child's until forwarding stops; then reap.
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it or fails.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live, writable siginfo_t; `child` is our child.
        let ret = unsafe {
            libc::waitid(
                libc::P_PID,
                child as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if ret == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    signals::stop_forwarding();
    let mut status: libc::c_int = 0;
    let code = loop {
        // SAFETY: `status` is a live c_int; waitpid writes it or fails.
        let ret = unsafe { libc::waitpid(child, &mut status, 0) };
        if ret == child {
            if libc::WIFEXITED(status) {
                break u8::try_from(libc::WEXITSTATUS(status)).unwrap_or(1);
            }
            if libc::WIFSIGNALED(status) {
                let signal = u8::try_from(libc::WTERMSIG(status)).unwrap_or(127);
                break 128u8.saturating_add(signal);
            }
            continue;
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            continue;
        }
        log::error!("waiting for the jailed monitor (pid {child}): {e}");
        break 1;
    };
    drop(cgroups);
    code
}

/// The child's side, as root in a new PID namespace: join the cgroups, enter the other
/// namespaces, build the root, pivot into it, drop privileges, check access. Returns the
/// `--jail-probe` lines.
fn jail_child(
    options: &JailOptions,
    dir: &Path,
    layout: &JailLayout,
    cgroups: &cgroup::Record,
) -> Result<Vec<String>, JailError> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number; the monitor dies with its
    // jailer rather than outliving it unsupervised.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    close_inherited_fds();
    cgroups.join()?;
    // SAFETY: unshare takes only flags.
    if unsafe {
        libc::unshare(
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET,
        )
    } != 0
    {
        return Err(setup(
            "unshare(mount, IPC, UTS, network namespaces)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: umask only sets the process's file-creation mask.
    unsafe { libc::umask(0o022) };
    mounts::build_root(dir, layout, options.uid, options.gid)?;
    mounts::pivot_into(dir)?;
    let caps = privileges::drop_to(options.uid, options.gid)?;
    check_access(layout, options.uid, options.gid)?;
    let mut probe = Vec::new();
    if let Some(path) = &options.probe {
        let opened = match fs::File::open(path) {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("errno:{}", e.raw_os_error().unwrap_or(0)),
        };
        probe.push(format!(
            "cloister-jail-probe: open={opened} {caps} path={}",
            path.display()
        ));
        probe.push(format!("cloister-jail-probe: {}", cgroups.describe()));
    }
    Ok(probe)
}

/// Closes every descriptor above stderr: an inherited one would reach what the jail hides.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; nothing in this process uses one above
    // 2 yet (the monitor opens its files after the jail).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if ret != 0 {
        for fd in 3..1024 {
            // SAFETY: as above; closing a descriptor that is not open is harmless (EBADF).
            unsafe { libc::close(fd) };
        }
    }
}

/// After the drop, the jailed user must be able to use each input as the monitor will;
/// an error names the host's path, which the monitor's own message would not.
fn check_access(layout: &JailLayout, uid: u32, gid: u32) -> Result<(), JailError> {
    for entry in &layout.entries {
        let Some((mode, need)) = entry.need.access_mode() else {
            continue;
        };
        let path = c_path(&entry.jail)?;
        // SAFETY: `path` is a NUL-terminated string that lives across the call.
        if unsafe { libc::access(path.as_ptr(), mode) } != 0 {
            return Err(JailError::Access {
                uid,
                gid,
                need,
                what: entry.role.what(),
                host: entry.host.clone(),
                jail: entry.jail.clone(),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        setup(
            format!("path {}", path.display()),
            io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"),
        )
    })
}

/// Signals across the fork: the parent forwards them, the child (PID 1 of its namespace,
/// which the kernel spares any signal it has no handler for) ends on them until the
/// monitor's event loop installs its own handlers.
mod signals;

/// The jail's root: a tmpfs on DIR holding the layout's entries, and the pivot into it.
mod mounts;

/// Dropping to U:G with no capability, and checking that none is left.
mod privileges;

/// The job's cgroups: where they go (v2 or v1), the files written, their removal.
mod cgroup;

#[cfg(test)]
mod tests;
