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
//!    only what the VM needs ([`JailLayout`]), `pivot_root`s into it and detaches the old
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

/// Which of the VM's inputs an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Kvm,
    Sev,
    Kernel,
    Initrd,
    Disk,
    Serial,
    SimRoot,
    GuestCerts,
    IdBlock,
    IdAuth,
    SnpParameter,
}

impl Role {
    /// The flag that names it.
    fn flag(self) -> &'static str {
        match self {
            Role::Kvm => "--kvm-device",
            Role::Sev => "--sev-device",
            Role::Kernel => "--kernel",
            Role::Initrd => "--initrd",
            Role::Disk => "--disk",
            Role::Serial => "--serial file=",
            Role::SimRoot => "--sim-root",
            Role::GuestCerts => "--guest-certs",
            Role::IdBlock => "--id-block",
            Role::IdAuth => "--id-auth",
            Role::SnpParameter => "--platform snp",
        }
    }

    /// What it is, for messages.
    fn what(self) -> &'static str {
        match self {
            Role::Kvm => "KVM device",
            Role::Sev => "SEV device",
            Role::Kernel => "kernel image",
            Role::Initrd => "initrd",
            Role::Disk => "disk image",
            Role::Serial => "serial output file",
            Role::SimRoot => "simulation root",
            Role::GuestCerts => "guest certificate directory",
            Role::IdBlock => "ID block",
            Role::IdAuth => "ID auth structure",
            Role::SnpParameter => "kvm_amd sev_snp parameter",
        }
    }

    /// The host file types it may be, as (test, description).
    fn accepts(self) -> (fn(&fs::FileType) -> bool, &'static str) {
        match self {
            Role::Kvm | Role::Sev => (|t| t.is_char_device(), "a character device"),
            Role::Disk => (
                |t| t.is_file() || t.is_block_device(),
                "a regular file or block device",
            ),
            Role::Serial => (|t| !t.is_dir(), "a file"),
            Role::SimRoot | Role::GuestCerts => (|t| t.is_dir(), "a directory"),
            Role::Kernel | Role::Initrd | Role::IdBlock | Role::IdAuth | Role::SnpParameter => {
                (|t| t.is_file(), "a regular file")
            }
        }
    }
}

/// How an input gets into the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    /// A file bind-mounted in, read-only unless `writable`.
    File {
        /// Whether the mount is read-write.
        writable: bool,
    },
    /// A directory bind-mounted in, read-only.
    Dir,
    /// A character device node made with the host node's device number (`rdev`, filled
    /// by the host checks), owned by the jailed user, mode 0600.
    CharDevice {
        /// The host node's device number.
        rdev: u64,
    },
    /// The simulation root: its top-level regular files copied in (filled by the host
    /// checks), owned by the jailed user.
    SimRootCopy {
        /// Files to copy (host paths).
        files: Vec<PathBuf>,
    },
    /// A host file bind-mounted read-only at the same path when it exists (the kvm_amd
    /// parameter the SNP probe reads).
    HostFileIfPresent,
}

/// What the jailed user must be able to do with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Read,
    Write,
    ReadWrite,
    /// Nothing to check (the jail made it for the user).
    Nothing,
}

impl Need {
    fn access_mode(self) -> Option<(libc::c_int, &'static str)> {
        match self {
            Need::Read => Some((libc::R_OK, "read")),
            Need::Write => Some((libc::W_OK, "write")),
            Need::ReadWrite => Some((libc::R_OK | libc::W_OK, "read and write")),
            Need::Nothing => None,
        }
    }
}

/// One input of the VM and its place in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Which input it is.
    role: Role,
    /// The host's path, as given.
    host: PathBuf,
    /// The path inside the jail.
    jail: PathBuf,
    /// How it gets there.
    kind: EntryKind,
    /// What the jailed user must be able to do with it.
    need: Need,
}

/// Everything the VM needs inside the jail, and the VM's config with the in-jail paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLayout {
    entries: Vec<Entry>,
    /// The config the jailed monitor builds from.
    pub config: VmConfig,
    /// The ID block files at their in-jail paths.
    pub id_block: Option<IdBlockFiles>,
}

impl JailLayout {
    /// Plans the jail of `config` (and its ID block files): pure, no file is touched.
    /// Each file the monitor opens gets a fixed in-jail path ([`in_jail`]), and the
    /// returned config names those paths. The SEV device, the simulation root and the
    /// kvm_amd parameter are only put in the jail for the platform that uses them.
    pub fn plan(config: &VmConfig, id_block: Option<&IdBlockFiles>) -> JailLayout {
        let mut entries = Vec::new();
        let mut jailed = config.clone();
        let mut add = |role, host: &Path, jail: &str, kind, need| {
            entries.push(Entry {
                role,
                host: host.to_path_buf(),
                jail: PathBuf::from(jail),
                kind,
                need,
            });
            PathBuf::from(jail)
        };
        jailed.kvm_device = add(
            Role::Kvm,
            &config.kvm_device,
            in_jail::KVM,
            EntryKind::CharDevice { rdev: 0 },
            Need::ReadWrite,
        );
        if let KernelSource::File(path) = &config.kernel {
            jailed.kernel = KernelSource::File(add(
                Role::Kernel,
                path,
                in_jail::KERNEL,
                EntryKind::File { writable: false },
                Need::Read,
            ));
        }
        if let Some(path) = &config.initrd {
            jailed.initrd = Some(add(
                Role::Initrd,
                path,
                in_jail::INITRD,
                EntryKind::File { writable: false },
                Need::Read,
            ));
        }
        for (i, disk) in jailed.disks.iter_mut().enumerate() {
            let jail = format!("{}{i}", in_jail::DISK_PREFIX);
            disk.path = add(
                Role::Disk,
                &disk.path,
                &jail,
                EntryKind::File {
                    writable: !disk.readonly,
                },
                if disk.readonly {
                    Need::Read
                } else {
                    Need::ReadWrite
                },
            );
        }
        if let SerialMode::File(path) = &config.serial {
            jailed.serial = SerialMode::File(add(
                Role::Serial,
                path,
                in_jail::SERIAL,
                EntryKind::File { writable: true },
                Need::Write,
            ));
        }
        match config.platform {
            Platform::None => {}
            Platform::Sim => {
                jailed.sim_root = add(
                    Role::SimRoot,
                    &config.sim_root,
                    in_jail::SIM_ROOT,
                    EntryKind::SimRootCopy { files: Vec::new() },
                    Need::Nothing,
                );
            }
            Platform::Snp => {
                jailed.sev_device = add(
                    Role::Sev,
                    &config.sev_device,
                    in_jail::SEV,
                    EntryKind::CharDevice { rdev: 0 },
                    Need::ReadWrite,
                );
                let parameter =
                    Path::new(crate::snp::kvm::SYSFS_KVM_AMD).join("parameters/sev_snp");
                let same = parameter.to_string_lossy().into_owned();
                add(
                    Role::SnpParameter,
                    &parameter,
                    &same,
                    EntryKind::HostFileIfPresent,
                    Need::Nothing,
                );
            }
        }
        if let Some(dir) = &config.guest_certs {
            jailed.guest_certs = Some(add(
                Role::GuestCerts,
                dir,
                in_jail::GUEST_CERTS,
                EntryKind::Dir,
                Need::Read,
            ));
        }
        let id_block = id_block.map(|files| IdBlockFiles {
            id_block: add(
                Role::IdBlock,
                &files.id_block,
                in_jail::ID_BLOCK,
                EntryKind::File { writable: false },
                Need::Read,
            ),
            id_auth: add(
                Role::IdAuth,
                &files.id_auth,
                in_jail::ID_AUTH,
                EntryKind::File { writable: false },
                Need::Read,
            ),
            author_key_enabled: files.author_key_enabled,
        });
        JailLayout {
            entries,
            config: jailed,
            id_block,
        }
    }

    /// Which host path each in-jail path shows, for messages.
    pub fn path_map(&self) -> String {
        self.entries
            .iter()
            .filter(|e| e.kind != EntryKind::HostFileIfPresent)
            .map(|e| format!("{} = {}", e.jail.display(), e.host.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Total bytes of the kernel and initrd files (0 for the built-in guest).
    fn image_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e.role, Role::Kernel | Role::Initrd))
            .filter_map(|e| fs::metadata(&e.host).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Checks every input on the host, as root, before anything is created: each exists
    /// and is of the right type, none is inside DIR (the jail's root hides DIR's
    /// contents). Fills in device numbers and the simulation root's files (creating and
    /// exporting the root on `sim`), and creates a missing serial output file for the
    /// jailed user.
    fn check_host(&mut self, dir: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
        for entry in &mut self.entries {
            let bad = |reason: String| JailError::Input {
                flag: entry.role.flag(),
                path: entry.host.clone(),
                reason,
            };
            if entry.role == Role::Serial && fs::symlink_metadata(&entry.host).is_err() {
                create_serial_file(&entry.host, uid, gid).map_err(|e| {
                    bad(format!(
                        "cannot create the serial output file for the jail: {e}"
                    ))
                })?;
            }
            if entry.role == Role::SimRoot {
                prepare_sim_root(&entry.host)?;
            }
            let meta = match fs::metadata(&entry.host) {
                Ok(meta) => meta,
                Err(_) if entry.kind == EntryKind::HostFileIfPresent => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad("does not exist".into()))
                }
                Err(e) => return Err(bad(e.to_string())),
            };
            let (accepts, expected) = entry.role.accepts();
            if !accepts(&meta.file_type()) {
                return Err(bad(format!(
                    "is {}, not {expected}",
                    describe_type(meta.file_type())
                )));
            }
            let canonical = fs::canonicalize(&entry.host).map_err(|e| bad(e.to_string()))?;
            if canonical.starts_with(dir) {
                return Err(bad(format!(
                    "is inside the jail directory {}, which the jail's root hides: keep the \
                     VM's files outside it",
                    dir.display()
                )));
            }
            match &mut entry.kind {
                EntryKind::CharDevice { rdev } => *rdev = meta.rdev(),
                EntryKind::SimRootCopy { files } => *files = sim_root_files(&entry.host)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Bytes the jail's tmpfs needs: the simulation root's copy (twice: the monitor
    /// rewrites its certificates) and room for directories and mount points.
    fn tmpfs_bytes(&self) -> u64 {
        let copied: u64 = self
            .entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::SimRootCopy { files } => Some(files),
                _ => None,
            })
            .flatten()
            .filter_map(|f| fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        (1 << 20) + copied.saturating_mul(2).next_multiple_of(4096)
    }
}

fn describe_type(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Creates the serial output file the jailed monitor will write, owned by it.
fn create_serial_file(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
}

/// Creates the simulation root if missing and exports its certificates on the host (so
/// `cloister verify --certs DIR/certs` works as without the jail).
fn prepare_sim_root(dir: &Path) -> Result<(), JailError> {
    let fail = |reason: String| JailError::SimRoot {
        path: dir.to_path_buf(),
        reason,
    };
    let root =
        cloister_attestation::sim::SimRoot::load_or_create(dir).map_err(|e| fail(e.to_string()))?;
    root.export_cert_dir(&dir.join("certs"))
        .map_err(|e| fail(format!("exporting its certificates: {e}")))
}

/// The simulation root's top-level regular files (keys, certificates; `certs/` is
/// re-exported by the monitor itself).
fn sim_root_files(dir: &Path) -> Result<Vec<PathBuf>, JailError> {
    let fail = |reason: String| JailError::SimRoot {
        path: dir.to_path_buf(),
        reason,
    };
    let mut files = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| fail(e.to_string()))? {
        let item = item.map_err(|e| fail(e.to_string()))?;
        let kind = item.file_type().map_err(|e| fail(e.to_string()))?;
        if kind.is_file() {
            files.push(item.path());
        }
    }
    files.sort();
    Ok(files)
}

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
mod signals {
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
}

/// The jail's root: a tmpfs on DIR holding the layout's entries, and the pivot into it.
mod mounts {
    use super::*;

    fn mount(
        source: &str,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> Result<(), JailError> {
        let what = || {
            format!(
                "mount {source} on {} ({})",
                target.display(),
                fstype.unwrap_or("bind")
            )
        };
        let source_c = CString::new(source).map_err(|_| {
            setup(
                what(),
                io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"),
            )
        })?;
        let target_c = c_path(target)?;
        let fstype_c = fstype.map(CString::new).transpose().map_err(|_| {
            setup(
                what(),
                io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"),
            )
        })?;
        let data_c = data.map(CString::new).transpose().map_err(|_| {
            setup(
                what(),
                io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"),
            )
        })?;
        // SAFETY: every pointer is a NUL-terminated string alive across the call, or
        // null where mount(2) allows it (filesystem type and data of a bind or a
        // propagation change).
        let ret = unsafe {
            libc::mount(
                source_c.as_ptr(),
                target_c.as_ptr(),
                fstype_c.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                data_c
                    .as_ref()
                    .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
            )
        };
        if ret != 0 {
            return Err(setup(what(), io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Binds `source` on `target`, then sets the mount's flags: nosuid, noexec, nodev
    /// unless the source is a device, read-only unless `writable`.
    fn bind(source: &Path, target: &Path, writable: bool) -> Result<(), JailError> {
        let source_str = source.to_str().ok_or_else(|| {
            setup(
                format!("bind {}", source.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
            )
        })?;
        mount(source_str, target, None, libc::MS_BIND, None)?;
        let is_device = fs::metadata(source)
            .map(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
            .unwrap_or(false);
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC;
        if !is_device {
            flags |= libc::MS_NODEV;
        }
        if !writable {
            flags |= libc::MS_RDONLY;
        }
        mount("none", target, None, flags, None)
    }

    fn io_step(what: String) -> impl FnOnce(io::Error) -> JailError {
        move |source| setup(what, source)
    }

    /// Makes the mount tree private, mounts the jail's tmpfs on `dir` and puts every
    /// entry of `layout` into it.
    pub(super) fn build_root(
        dir: &Path,
        layout: &JailLayout,
        uid: u32,
        gid: u32,
    ) -> Result<(), JailError> {
        // Nothing done here propagates back to the host's mount namespace.
        mount(
            "none",
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )?;
        let size = layout.tmpfs_bytes();
        // No nodev: the KVM node lives here. noexec, nosuid: nothing is run from it.
        mount(
            "cloister-jail",
            dir,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(&format!("size={size},nr_inodes=4096,mode=0755")),
        )?;
        for entry in &layout.entries {
            let relative = entry.jail.strip_prefix("/").unwrap_or(&entry.jail);
            let target = dir.join(relative);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)
                    .map_err(io_step(format!("creating {}", parent.display())))?;
            }
            match &entry.kind {
                EntryKind::CharDevice { rdev } => make_device(&target, *rdev, uid, gid)?,
                EntryKind::File { writable } => {
                    mount_point_file(&target)?;
                    bind(&entry.host, &target, *writable)?;
                }
                EntryKind::HostFileIfPresent => {
                    if entry.host.exists() {
                        mount_point_file(&target)?;
                        bind(&entry.host, &target, false)?;
                    }
                }
                EntryKind::Dir => {
                    fs::create_dir(&target)
                        .map_err(io_step(format!("creating {}", target.display())))?;
                    bind(&entry.host, &target, false)?;
                }
                EntryKind::SimRootCopy { files } => copy_files(files, &target, uid, gid)?,
            }
        }
        Ok(())
    }

    fn mount_point_file(target: &Path) -> Result<(), JailError> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)
            .map(drop)
            .map_err(io_step(format!("creating {}", target.display())))
    }

    /// A character device node with `rdev`, owned by `uid`:`gid`, mode 0600 (as
    /// Firecracker's jailer makes /dev/kvm).
    fn make_device(target: &Path, rdev: u64, uid: u32, gid: u32) -> Result<(), JailError> {
        let path = c_path(target)?;
        // SAFETY: `path` is a NUL-terminated string alive across the call; mknod only
        // creates the node.
        if unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, rdev) } != 0 {
            return Err(setup(
                format!("mknod {}", target.display()),
                io::Error::last_os_error(),
            ));
        }
        std::os::unix::fs::chown(target, Some(uid), Some(gid))
            .map_err(io_step(format!("chown {}", target.display())))?;
        fs::set_permissions(target, fs::Permissions::from_mode(0o600))
            .map_err(io_step(format!("chmod {}", target.display())))
    }

    /// Copies `files` into a new directory `target`, all owned by `uid`:`gid` with the
    /// source's permission bits (the directory 0700).
    fn copy_files(files: &[PathBuf], target: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
        fs::create_dir(target).map_err(io_step(format!("creating {}", target.display())))?;
        fs::set_permissions(target, fs::Permissions::from_mode(0o700))
            .map_err(io_step(format!("chmod {}", target.display())))?;
        std::os::unix::fs::chown(target, Some(uid), Some(gid))
            .map_err(io_step(format!("chown {}", target.display())))?;
        for file in files {
            let Some(name) = file.file_name() else {
                continue;
            };
            let to = target.join(name);
            fs::copy(file, &to).map_err(io_step(format!(
                "copying {} to {}",
                file.display(),
                to.display()
            )))?;
            std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                .map_err(io_step(format!("chown {}", to.display())))?;
        }
        Ok(())
    }

    /// Makes `dir` the root and detaches the old one (pivot_root(2)'s `"."`, `"."` idiom:
    /// the old root ends up stacked on the new one and is lazily unmounted).
    pub(super) fn pivot_into(dir: &Path) -> Result<(), JailError> {
        std::env::set_current_dir(dir).map_err(io_step(format!("chdir {}", dir.display())))?;
        let dot = c_path(Path::new("."))?;
        // SAFETY: both arguments are the same NUL-terminated string, alive across the
        // call; pivot_root only changes this mount namespace's root.
        if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
            return Err(setup(
                format!("pivot_root into {}", dir.display()),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `dot` is a NUL-terminated string; MNT_DETACH unmounts the old root from
        // this namespace once nothing uses it.
        if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(setup("detaching the old root", io::Error::last_os_error()));
        }
        std::env::set_current_dir("/").map_err(io_step("chdir /".into()))
    }
}

/// Dropping to U:G with no capability, and checking that none is left.
mod privileges {
    use super::*;

    /// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): two 32-bit words per set.
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

    /// `struct __user_cap_header_struct` (linux/capability.h).
    #[repr(C)]
    pub(super) struct CapHeader {
        pub(super) version: u32,
        pub(super) pid: libc::c_int,
    }

    /// `struct __user_cap_data_struct` (linux/capability.h); version 3 takes two.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub(super) struct CapData {
        pub(super) effective: u32,
        pub(super) permitted: u32,
        pub(super) inheritable: u32,
    }

    /// Every capability set and identity of the process, as the kernel reports them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) struct CapState {
        pub(super) effective: u64,
        pub(super) permitted: u64,
        pub(super) inheritable: u64,
        pub(super) ambient: u64,
        pub(super) bounding: u64,
        pub(super) no_new_privs: u64,
        pub(super) uid: [u32; 3],
        pub(super) gid: [u32; 3],
        pub(super) groups: u64,
    }

    impl std::fmt::Display for CapState {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "uid={} gid={} groups={} cap_effective={:#x} cap_permitted={:#x} \
                 cap_inheritable={:#x} cap_ambient={:#x} cap_bounding={:#x} no_new_privs={}",
                self.uid[0],
                self.gid[0],
                self.groups,
                self.effective,
                self.permitted,
                self.inheritable,
                self.ambient,
                self.bounding,
                self.no_new_privs
            )
        }
    }

    /// Capabilities numbered from 0 until the kernel says EINVAL (past its last one),
    /// for which `test(cap)` is true.
    fn per_capability(mut test: impl FnMut(libc::c_ulong) -> io::Result<bool>) -> io::Result<u64> {
        let mut set = 0u64;
        for cap in 0..64 {
            match test(cap) {
                Ok(true) => set |= 1 << cap,
                Ok(false) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(set)
    }

    /// prctl(2) with integer arguments.
    fn prctl(
        option: libc::c_int,
        arg2: libc::c_ulong,
        arg3: libc::c_ulong,
    ) -> io::Result<libc::c_int> {
        // SAFETY: the prctl options used here take integer arguments only.
        let ret =
            unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret)
    }

    /// Reads every set with capget and prctl.
    pub(super) fn read() -> io::Result<CapState> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: `header` and `data` are live, writable structs of the layout version 3
        // of capget(2) expects (one header, two data words).
        if unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        let bounding = per_capability(|cap| Ok(prctl(libc::PR_CAPBSET_READ, cap, 0)? == 1))?;
        let ambient = per_capability(|cap| {
            Ok(prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                cap,
            )? == 1)
        })?;
        let no_new_privs = prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0)?;
        let (mut ruid, mut euid, mut suid) = (0, 0, 0);
        let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
        // SAFETY: each pointer is a live, writable uid_t/gid_t.
        unsafe {
            libc::getresuid(&mut ruid, &mut euid, &mut suid);
            libc::getresgid(&mut rgid, &mut egid, &mut sgid);
        }
        // SAFETY: size 0 asks only for the count; the null list is not written.
        let groups = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        Ok(CapState {
            effective: join(data[0].effective, data[1].effective),
            permitted: join(data[0].permitted, data[1].permitted),
            inheritable: join(data[0].inheritable, data[1].inheritable),
            ambient,
            bounding,
            no_new_privs: u64::try_from(no_new_privs).unwrap_or(0),
            uid: [ruid, euid, suid],
            gid: [rgid, egid, sgid],
            groups: u64::try_from(groups).unwrap_or(u64::MAX),
        })
    }

    /// Drops to `uid`:`gid` with no capability in any set and no_new_privs set, then
    /// checks it.
    pub(super) fn drop_to(uid: u32, gid: u32) -> Result<CapState, JailError> {
        let step = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| setup(what, e)
        };
        // The bounding set first: dropping from it needs CAP_SETPCAP, which setresuid
        // takes away.
        per_capability(|cap| prctl(libc::PR_CAPBSET_DROP, cap, 0).map(|_| false))
            .map_err(step("dropping the capability bounding set"))?;
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )
        .map_err(step("clearing ambient capabilities"))?;
        // SAFETY: setgroups with size 0 reads no list.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(setup("setgroups([])", io::Error::last_os_error()));
        }
        // SAFETY: setresgid/setresuid take plain ids.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(setup(
                format!("setresgid({gid})"),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: as above. With every uid non-zero the kernel clears the permitted,
        // effective and ambient sets.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(setup(
                format!("setresuid({uid})"),
                io::Error::last_os_error(),
            ));
        }
        // The inheritable set survives setresuid: clear it (lowering needs no privilege).
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        // SAFETY: `header` and `data` are live structs of the layout version 3 of
        // capset(2) expects; capset only reads `data`.
        if unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        } != 0
        {
            return Err(setup("capset(0, 0, 0)", io::Error::last_os_error()));
        }
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(step("PR_SET_NO_NEW_PRIVS"))?;
        // The credential change cleared the parent-death signal: set it again.
        prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
            .map_err(step("PR_SET_PDEATHSIG"))?;
        let state = read().map_err(step("reading the capability sets"))?;
        for (what, value, expected) in [
            ("the effective capability set", state.effective, 0),
            ("the permitted capability set", state.permitted, 0),
            ("the inheritable capability set", state.inheritable, 0),
            ("the ambient capability set", state.ambient, 0),
            ("the capability bounding set", state.bounding, 0),
            ("the number of supplementary groups", state.groups, 0),
            ("no_new_privs", state.no_new_privs, 1),
        ]
        .into_iter()
        .chain(state.uid.iter().map(|&u| {
            (
                "a uid (real, effective, saved)",
                u64::from(u),
                u64::from(uid),
            )
        }))
        .chain(state.gid.iter().map(|&g| {
            (
                "a gid (real, effective, saved)",
                u64::from(g),
                u64::from(gid),
            )
        })) {
            if value != expected {
                return Err(JailError::Privileges {
                    what,
                    value,
                    expected,
                });
            }
        }
        Ok(state)
    }
}

/// The job's cgroups: where they go (v2 or v1), the files written, their removal.
mod cgroup {
    use super::*;

    /// Where cgroup v2 must be mounted for the jail to use it.
    const V2_MOUNT: &str = "/sys/fs/cgroup";
    /// The controllers the limits need.
    const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

    /// A mount from /proc/self/mountinfo.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Mount {
        pub(super) root: String,
        pub(super) mount_point: String,
        pub(super) fstype: String,
        pub(super) super_options: Vec<String>,
    }

    /// Undoes mountinfo's octal escapes (`\040` is a space).
    fn unescape(field: &str) -> String {
        let bytes = field.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\\'
                && i + 4 <= bytes.len()
                && bytes[i + 1..i + 4]
                    .iter()
                    .all(|b| (b'0'..=b'7').contains(b))
            {
                let value = bytes[i + 1..i + 4]
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses /proc/self/mountinfo (proc(5)): fields 4 and 5 are the mount's root and
    /// mount point; after the `-` separator come the filesystem type, the source and the
    /// super options.
    pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
        text.lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let left: Vec<&str> = left.split(' ').collect();
                let right: Vec<&str> = right.split(' ').collect();
                Some(Mount {
                    root: unescape(left.get(3)?),
                    mount_point: unescape(left.get(4)?),
                    fstype: (*right.first()?).to_string(),
                    super_options: right.get(2)?.split(',').map(str::to_string).collect(),
                })
            })
            .collect()
    }

    /// Parses /proc/self/cgroup: `hierarchy-ID:controller-list:path` per line; returns
    /// (controllers, path).
    pub(super) fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, String)> {
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ':');
                let _id = parts.next()?;
                let controllers = parts.next()?;
                let path = parts.next()?;
                Some((
                    controllers
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    path.to_string(),
                ))
            })
            .collect()
    }

    /// The directory of cgroup `path` in a hierarchy mounted at `mount` (whose root may
    /// be a sub-cgroup); `None` when the cgroup is not visible under that mount.
    fn cgroup_dir(mount: &Mount, path: &str) -> Option<PathBuf> {
        let relative = if mount.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(mount.root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        Some(Path::new(&mount.mount_point).join(relative.trim_start_matches('/')))
    }

    /// Where this process's cgroups are.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Parent {
        /// cgroup v2: one directory with every controller.
        V2(PathBuf),
        /// cgroup v1: the process's directory in the memory, cpu and pids hierarchies.
        V1 {
            memory: PathBuf,
            cpu: PathBuf,
            pids: PathBuf,
        },
    }

    /// This process's cgroup v2 directory, if /sys/fs/cgroup is a cgroup2 mount.
    pub(super) fn v2_dir(mounts: &[Mount], own: &[(Vec<String>, String)]) -> Option<PathBuf> {
        let mount = mounts
            .iter()
            .find(|m| m.mount_point == V2_MOUNT && m.fstype == "cgroup2")?;
        let (_, path) = own.iter().find(|(controllers, _)| controllers.is_empty())?;
        cgroup_dir(mount, path)
    }

    /// This process's cgroup v1 directories of the three controllers.
    pub(super) fn v1_dirs(
        mounts: &[Mount],
        own: &[(Vec<String>, String)],
    ) -> Result<Parent, String> {
        let dir = |controller: &str| -> Result<PathBuf, String> {
            let mount = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
                .ok_or_else(|| format!("no cgroup v1 hierarchy has the {controller} controller (/proc/self/mountinfo)"))?;
            let (_, path) = own
                .iter()
                .find(|(controllers, _)| controllers.iter().any(|c| c == controller))
                .ok_or_else(|| format!("/proc/self/cgroup names no {controller} cgroup"))?;
            cgroup_dir(mount, path).ok_or_else(|| {
                format!(
                    "this process's {controller} cgroup {path} is not under the hierarchy's mount {} (root {})",
                    mount.mount_point, mount.root
                )
            })
        };
        Ok(Parent::V1 {
            memory: dir("memory")?,
            cpu: dir("cpu")?,
            pids: dir("pids")?,
        })
    }

    /// One limit file to write.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Write {
        pub(super) file: PathBuf,
        pub(super) value: String,
        /// Written only where the kernel has the file (swap accounting may be off).
        pub(super) optional: bool,
    }

    /// The job's directories (in creation order) and the limit files to write, in order.
    pub(super) fn plan(parent: &Parent, name: &str, limits: &Limits) -> (Vec<PathBuf>, Vec<Write>) {
        let write = |dir: &Path, file: &str, value: String, optional| Write {
            file: dir.join(file),
            value,
            optional,
        };
        let memory = limits.memory_bytes.to_string();
        let quota = limits.cpu_quota_us();
        match parent {
            Parent::V2(dir) => {
                let job = dir.join(name);
                let writes = vec![
                    write(&job, "memory.max", memory, false),
                    write(&job, "memory.swap.max", "0".into(), true),
                    write(&job, "cpu.max", format!("{quota} {CPU_PERIOD_US}"), false),
                    write(&job, "pids.max", limits.pids.to_string(), false),
                ];
                (vec![job], writes)
            }
            Parent::V1 {
                memory: m,
                cpu,
                pids,
            } => {
                let (m, cpu, pids) = (m.join(name), cpu.join(name), pids.join(name));
                let writes = vec![
                    write(&m, "memory.limit_in_bytes", memory.clone(), false),
                    // Swap counts too (the limit is on memory plus swap), where accounted.
                    write(&m, "memory.memsw.limit_in_bytes", memory, true),
                    write(&cpu, "cpu.cfs_period_us", CPU_PERIOD_US.to_string(), false),
                    write(&cpu, "cpu.cfs_quota_us", quota.to_string(), false),
                    write(&pids, "pids.max", limits.pids.to_string(), false),
                ];
                let mut dirs = vec![m, cpu, pids];
                // Co-mounted hierarchies (e.g. cpu with memory) share one directory.
                let mut seen = Vec::new();
                dirs.retain(|d| {
                    let new = !seen.contains(d);
                    seen.push(d.clone());
                    new
                });
                (dirs, writes)
            }
        }
    }

    /// What the child needs of the cgroups: where to join and what was written.
    #[derive(Debug, Clone)]
    pub(super) struct Record {
        version: &'static str,
        dirs: Vec<PathBuf>,
        written: Vec<(PathBuf, String)>,
    }

    impl Record {
        /// Moves this process into every job directory (writing 0 to `cgroup.procs`
        /// moves the writer).
        pub(super) fn join(&self) -> Result<(), JailError> {
            for dir in &self.dirs {
                let file = dir.join("cgroup.procs");
                fs::write(&file, "0").map_err(|source| JailError::Cgroup {
                    action: "join (write 0 to)".into(),
                    file,
                    source,
                })?;
            }
            Ok(())
        }

        /// One line: the version, then `FILE=VALUE` for each limit written.
        pub(super) fn describe(&self) -> String {
            let mut line = format!("cgroup={}", self.version);
            for (file, value) in &self.written {
                line.push_str(&format!(" {}={value}", file.display()));
            }
            line
        }
    }

    /// The job's cgroup directories, removed when dropped by the process that made them.
    #[derive(Debug)]
    pub(super) struct JobCgroups {
        record: Record,
        /// The pid that created them (a forked child must not remove them).
        owner: u32,
    }

    impl JobCgroups {
        /// Creates the job's cgroup `name` under this process's cgroups and writes
        /// `limits`; on any failure, removes what it created and names the file.
        pub(super) fn create(limits: &Limits, name: &str) -> Result<Self, JailError> {
            let read = |file: &str| {
                fs::read_to_string(file)
                    .map_err(|e| JailError::CgroupUnavailable(format!("reading {file}: {e}")))
            };
            let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?);
            let own = parse_proc_cgroup(&read("/proc/self/cgroup")?);
            let (parent, version) = match v2_dir(&mounts, &own) {
                Some(dir) => {
                    enable_v2_controllers(&dir)?;
                    (Parent::V2(dir), "v2")
                }
                None => (
                    v1_dirs(&mounts, &own).map_err(JailError::CgroupUnavailable)?,
                    "v1",
                ),
            };
            let (dirs, writes) = plan(&parent, name, limits);
            let mut job = JobCgroups {
                record: Record {
                    version,
                    dirs: Vec::new(),
                    written: Vec::new(),
                },
                owner: std::process::id(),
            };
            for dir in dirs {
                fs::create_dir(&dir).map_err(|source| JailError::Cgroup {
                    action: "create".into(),
                    file: dir.clone(),
                    source,
                })?;
                job.record.dirs.push(dir);
            }
            for w in writes {
                if w.optional && !w.file.exists() {
                    continue;
                }
                fs::write(&w.file, &w.value).map_err(|source| JailError::Cgroup {
                    action: format!("write {} to", w.value),
                    file: w.file.clone(),
                    source,
                })?;
                job.record.written.push((w.file, w.value));
            }
            Ok(job)
        }

        /// What the child needs.
        pub(super) fn record(&self) -> Record {
            self.record.clone()
        }
    }

    impl Drop for JobCgroups {
        fn drop(&mut self) {
            if std::process::id() != self.owner {
                return;
            }
            for dir in self.record.dirs.iter().rev() {
                if let Err(e) = fs::remove_dir(dir) {
                    log::warn!("cannot remove the jail's cgroup {}: {e}", dir.display());
                }
            }
        }
    }

    /// cgroup v2: the parent's controllers must include memory, cpu and pids, and be
    /// enabled for its children (`cgroup.subtree_control`).
    fn enable_v2_controllers(dir: &Path) -> Result<(), JailError> {
        let available = dir.join("cgroup.controllers");
        let text = fs::read_to_string(&available).map_err(|source| JailError::Cgroup {
            action: "read".into(),
            file: available.clone(),
            source,
        })?;
        let have: Vec<&str> = text.split_whitespace().collect();
        if let Some(missing) = CONTROLLERS.iter().find(|c| !have.contains(c)) {
            return Err(JailError::CgroupUnavailable(format!(
                "{} does not list the {missing} controller",
                available.display()
            )));
        }
        let subtree = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&subtree).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let value = wanted.join(" ");
        fs::write(&subtree, &value).map_err(|source| JailError::Cgroup {
            action: format!(
                "write {value:?} to (a cgroup v2 cgroup with processes of its own cannot \
                 enable controllers for children: start cloister from a cgroup that \
                 delegates memory, cpu and pids)"
            ),
            file: subtree.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{DiskSpec, VmRequest};

    fn config(platform: &str) -> VmConfig {
        VmConfig::new(&VmRequest {
            kernel: Some("/boot/vmlinuz".into()),
            initrd: Some("/boot/initrd.img".into()),
            cpus: 2,
            memory: "64M".into(),
            disks: vec![
                "path=/var/a.img".into(),
                "path=/var/b.img,readonly=on".into(),
            ],
            serial: "file=/var/log/console".into(),
            kvm_device: Some("/dev/kvm-other".into()),
            platform: Some(platform.into()),
            sim_root: Some("/var/sim".into()),
            guest_certs: Some("/etc/certs".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn jail_paths_are_rewritten() {
        let id = IdBlockFiles {
            id_block: "/x/id_block.bin".into(),
            id_auth: "/x/id_auth.bin".into(),
            author_key_enabled: true,
        };
        let layout = JailLayout::plan(&config("sim"), Some(&id));
        let c = &layout.config;
        assert_eq!(c.kernel, KernelSource::File("/kernel".into()));
        assert_eq!(c.initrd, Some("/initrd".into()));
        assert_eq!(
            c.disks,
            vec![
                DiskSpec {
                    path: "/disk0".into(),
                    readonly: false
                },
                DiskSpec {
                    path: "/disk1".into(),
                    readonly: true
                }
            ]
        );
        assert_eq!(c.serial, SerialMode::File("/serial".into()));
        assert_eq!(c.kvm_device, PathBuf::from("/dev/kvm"));
        assert_eq!(c.sim_root, PathBuf::from("/sim-root"));
        assert_eq!(c.guest_certs, Some("/guest-certs".into()));
        let id = layout.id_block.as_ref().unwrap();
        assert_eq!(id.id_block, PathBuf::from("/id-block"));
        assert_eq!(id.id_auth, PathBuf::from("/id-auth"));
        assert!(id.author_key_enabled);
        // Everything else is the user's.
        assert_eq!(c.cmdline, config("sim").cmdline);
        assert_eq!(c.memory, config("sim").memory);
        // Read-only where the guest may not write; the host's path kept for messages.
        let disk1 = layout
            .entries
            .iter()
            .find(|e| e.jail == Path::new("/disk1"))
            .unwrap();
        assert_eq!(disk1.kind, EntryKind::File { writable: false });
        assert_eq!(disk1.host, PathBuf::from("/var/b.img"));
        let kernel = layout
            .entries
            .iter()
            .find(|e| e.jail == Path::new("/kernel"))
            .unwrap();
        assert_eq!(kernel.kind, EntryKind::File { writable: false });
        assert!(layout.path_map().contains("/disk0 = /var/a.img"));
        // No SEV device off snp.
        assert!(!layout
            .entries
            .iter()
            .any(|e| e.jail == Path::new(in_jail::SEV)));
    }

    #[test]
    fn jail_holds_only_what_the_platform_uses() {
        let none = JailLayout::plan(&config("none"), None);
        let jails: Vec<_> = none.entries.iter().map(|e| e.jail.clone()).collect();
        assert_eq!(
            jails,
            [
                "/dev/kvm",
                "/kernel",
                "/initrd",
                "/disk0",
                "/disk1",
                "/serial",
                "/guest-certs"
            ]
            .map(PathBuf::from)
        );
        // The unused sim root is not in the jail and keeps its (unused) host path.
        assert_eq!(none.config.sim_root, PathBuf::from("/var/sim"));
        let snp = JailLayout::plan(&config("snp"), None);
        assert_eq!(snp.config.sev_device, PathBuf::from("/dev/sev"));
        assert!(snp.entries.iter().any(|e| e.jail
            == Path::new("/sys/module/kvm_amd/parameters/sev_snp")
            && e.kind == EntryKind::HostFileIfPresent));
        // The built-in guest has no kernel file.
        let builtin = VmConfig::new(&VmRequest {
            cpus: 1,
            memory: "64M".into(),
            serial: "stdio".into(),
            ..Default::default()
        })
        .unwrap();
        let layout = JailLayout::plan(&builtin, None);
        assert_eq!(layout.entries.len(), 1);
        assert_eq!(layout.config.kernel, KernelSource::BuiltIn);
    }

    #[test]
    fn jail_default_limits_follow_the_guest() {
        let l = Limits::derive(256 << 20, 2, 10 << 20, &LimitRequest::default()).unwrap();
        assert_eq!(
            l.memory_bytes,
            (256 << 20) + MEMORY_OVERHEAD_BASE + (4 << 20) + (20 << 20)
        );
        assert_eq!(l.cpu_millis, 3000);
        assert_eq!(l.cpu_quota_us(), 300_000);
        assert_eq!(l.pids, 3 + SPARE_PIDS);
    }

    #[test]
    fn jail_limit_overrides_are_checked() {
        let req = |memory: Option<&str>, cpus: Option<&str>, pids| LimitRequest {
            memory: memory.map(str::to_string),
            cpus: cpus.map(str::to_string),
            pids,
        };
        let l = Limits::derive(64 << 20, 1, 0, &req(Some("1G"), Some("0.5"), Some(4))).unwrap();
        assert_eq!(
            l,
            Limits {
                memory_bytes: 1 << 30,
                cpu_millis: 500,
                pids: 4
            }
        );
        assert_eq!(l.cpu_quota_us(), 50_000);
        for (r, needle) in [
            (
                req(Some("64M"), None, None),
                "not more than the guest's memory",
            ),
            (req(Some("lots"), None, None), "--jail-memory"),
            (req(None, Some("0.001"), None), "minimum quota"),
            (req(None, Some("0"), None), "minimum quota"),
            (req(None, Some("1.2345"), None), "three decimals"),
            (req(None, Some("-1"), None), "not a number"),
            (req(None, Some("."), None), "not a number"),
            (req(None, Some("99999999999999999999"), None), "too large"),
            (req(None, None, Some(1)), "fewer than the monitor's threads"),
        ] {
            let e = Limits::derive(64 << 20, 1, 0, &r).unwrap_err().to_string();
            assert!(e.contains(needle), "{r:?}: {e}");
        }
        assert_eq!(parse_cpus("2").unwrap(), 2000);
        assert_eq!(parse_cpus("1.5").unwrap(), 1500);
        assert_eq!(parse_cpus(".25").unwrap(), 250);
        assert_eq!(parse_cpus("0.01").unwrap(), 10);
    }

    /// This machine's shape: cgroup v1 under a tmpfs at /sys/fs/cgroup, the memory
    /// hierarchy nesting the process, a cgroup2 mount beside them (hybrid).
    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUP: &str = "\
8:pids:/
4:memory:/process_api/ffbae38e
1:cpu:/
0::/
";

    #[test]
    fn jail_cgroup_v1_is_found_under_the_process_cgroup() {
        let mounts = cgroup::parse_mountinfo(MOUNTINFO);
        let own = cgroup::parse_proc_cgroup(PROC_CGROUP);
        // /sys/fs/cgroup is a tmpfs: not v2, even with a cgroup2 mount elsewhere.
        assert_eq!(cgroup::v2_dir(&mounts, &own), None);
        let parent = cgroup::v1_dirs(&mounts, &own).unwrap();
        assert_eq!(
            parent,
            cgroup::Parent::V1 {
                memory: "/sys/fs/cgroup/memory/process_api/ffbae38e".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            }
        );
        let limits = Limits {
            memory_bytes: 300 << 20,
            cpu_millis: 2000,
            pids: 10,
        };
        let (dirs, writes) = cgroup::plan(&parent, "job", &limits);
        assert_eq!(
            dirs,
            [
                "/sys/fs/cgroup/memory/process_api/ffbae38e/job",
                "/sys/fs/cgroup/cpu/job",
                "/sys/fs/cgroup/pids/job"
            ]
            .map(PathBuf::from)
        );
        let written: Vec<(String, String, bool)> = writes
            .iter()
            .map(|w| (w.file.display().to_string(), w.value.clone(), w.optional))
            .collect();
        let m = "/sys/fs/cgroup/memory/process_api/ffbae38e/job";
        assert_eq!(
            written,
            [
                (
                    format!("{m}/memory.limit_in_bytes"),
                    "314572800".into(),
                    false
                ),
                (
                    format!("{m}/memory.memsw.limit_in_bytes"),
                    "314572800".into(),
                    true
                ),
                (
                    "/sys/fs/cgroup/cpu/job/cpu.cfs_period_us".into(),
                    "100000".into(),
                    false
                ),
                (
                    "/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us".into(),
                    "200000".into(),
                    false
                ),
                (
                    "/sys/fs/cgroup/pids/job/pids.max".into(),
                    "10".into(),
                    false
                ),
            ]
        );
    }

    #[test]
    fn jail_cgroup_v2_and_missing_hierarchies() {
        let mounts = cgroup::parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        let own = cgroup::parse_proc_cgroup("0::/user.slice/session-1.scope\n");
        let dir = cgroup::v2_dir(&mounts, &own).unwrap();
        assert_eq!(
            dir,
            PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope")
        );
        let limits = Limits {
            memory_bytes: 1 << 30,
            cpu_millis: 1500,
            pids: 9,
        };
        let (dirs, writes) = cgroup::plan(&cgroup::Parent::V2(dir.clone()), "job", &limits);
        assert_eq!(dirs, [dir.join("job")]);
        let values: Vec<(String, &str)> = writes
            .iter()
            .map(|w| {
                (
                    w.file.file_name().unwrap().to_string_lossy().into_owned(),
                    w.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            values,
            [
                ("memory.max".to_string(), "1073741824"),
                ("memory.swap.max".to_string(), "0"),
                ("cpu.max".to_string(), "150000 100000"),
                ("pids.max".to_string(), "9"),
            ]
        );
        // No v1 hierarchy with pids: refused, naming what is missing.
        let e = cgroup::v1_dirs(
            &cgroup::parse_mountinfo(MOUNTINFO.replace("rw,pids", "rw,blkio").as_str()),
            &cgroup::parse_proc_cgroup(PROC_CGROUP),
        )
        .unwrap_err();
        assert!(e.contains("pids controller"), "{e}");
        // A mount whose root is a sub-cgroup, and an escaped mount point.
        let mounts = cgroup::parse_mountinfo(
            "35 31 0:32 /process_api /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n\
             36 31 0:33 / /c rw - cgroup cgroup rw,cpu,cpuacct\n\
             37 31 0:34 / /p rw - cgroup cgroup rw,pids\n",
        );
        let own =
            cgroup::parse_proc_cgroup("4:memory:/process_api/x\n2:cpu,cpuacct:/a\n8:pids:/\n");
        assert_eq!(
            cgroup::v1_dirs(&mounts, &own).unwrap(),
            cgroup::Parent::V1 {
                memory: "/sys/fs/cgroup/mem ory/x".into(),
                cpu: "/c/a".into(),
                pids: "/p".into(),
            }
        );
        let outside = cgroup::parse_proc_cgroup("4:memory:/elsewhere\n2:cpu:/\n8:pids:/\n");
        assert!(cgroup::v1_dirs(&mounts, &outside)
            .unwrap_err()
            .contains("not under"));
    }

    #[test]
    fn jail_capability_structs_match_linux() {
        // linux/capability.h: the header is {__u32 version; int pid;}, each data word
        // {__u32 effective, permitted, inheritable;}.
        assert_eq!(std::mem::size_of::<privileges::CapHeader>(), 8);
        assert_eq!(std::mem::size_of::<privileges::CapData>(), 12);
        assert_eq!(std::mem::offset_of!(privileges::CapData, inheritable), 8);
    }

    #[test]
    fn jail_refuses_root_ids_and_bad_dirs_before_anything() {
        let options = |dir: &str, uid, gid| JailOptions {
            dir: dir.into(),
            uid,
            gid,
            limits: LimitRequest::default(),
            probe: None,
        };
        let cfg = config("none");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            let e = enter(&options("/tmp", 1, 1), &cfg, None).unwrap_err();
            assert!(matches!(e, JailError::NotRoot(_)), "{e}");
            return;
        }
        let e = enter(&options("/tmp", 0, 1), &cfg, None).unwrap_err();
        assert!(matches!(e, JailError::RootUid), "{e}");
        let e = enter(&options("/tmp", 1, 0), &cfg, None).unwrap_err();
        assert!(matches!(e, JailError::RootGid), "{e}");
        let e = enter(&options("/nonexistent/jail", 1, 1), &cfg, None).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = enter(&options("/", 1, 1), &cfg, None).unwrap_err();
        assert!(e.to_string().contains("host's root"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = enter(&options(file.path().to_str().unwrap(), 1, 1), &cfg, None).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn jail_refuses_inputs_inside_the_jail_dir() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        fs::write(&kernel, b"x").unwrap();
        // Any character device stands in for KVM (these checks do not open it).
        let request = VmRequest {
            cpus: 1,
            memory: "64M".into(),
            serial: "off".into(),
            kvm_device: Some("/dev/null".into()),
            ..Default::default()
        };
        let cfg = VmConfig::new(&VmRequest {
            kernel: Some(kernel.clone()),
            ..request.clone()
        })
        .unwrap();
        let mut layout = JailLayout::plan(&cfg, None);
        let canonical = fs::canonicalize(dir.path()).unwrap();
        let e = layout.check_host(&canonical, 1, 1).unwrap_err().to_string();
        assert!(e.contains("inside the jail directory"), "{e}");
        // A missing kernel is named with its flag.
        let cfg = VmConfig::new(&VmRequest {
            kernel: Some(dir.path().join("missing")),
            ..request
        })
        .unwrap();
        let e = JailLayout::plan(&cfg, None)
            .check_host(Path::new("/nonexistent"), 1, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--kernel ") && e.ends_with("missing: does not exist"),
            "{e}"
        );
    }
}
