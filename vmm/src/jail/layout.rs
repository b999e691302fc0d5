//! Where each of the VM's inputs goes inside the jail, and the config that names them there.

use super::*;

/// Which of the VM's inputs an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
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
    pub(super) fn what(self) -> &'static str {
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
pub(super) enum EntryKind {
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
pub(super) enum Need {
    Read,
    Write,
    ReadWrite,
    /// Nothing to check (the jail made it for the user).
    Nothing,
}

impl Need {
    pub(super) fn access_mode(self) -> Option<(libc::c_int, &'static str)> {
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
pub(super) struct Entry {
    /// Which input it is.
    pub(super) role: Role,
    /// The host's path, as given.
    pub(super) host: PathBuf,
    /// The path inside the jail.
    pub(super) jail: PathBuf,
    /// How it gets there.
    pub(super) kind: EntryKind,
    /// What the jailed user must be able to do with it.
    pub(super) need: Need,
}

/// Everything the VM needs inside the jail, and the VM's config with the in-jail paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailLayout {
    pub(super) entries: Vec<Entry>,
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
    pub(super) fn image_bytes(&self) -> u64 {
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
    pub(super) fn check_host(&mut self, dir: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
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
    pub(super) fn tmpfs_bytes(&self) -> u64 {
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

pub(super) fn describe_type(kind: fs::FileType) -> &'static str {
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
pub(super) fn create_serial_file(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
}

/// Creates the simulation root if missing and exports its certificates on the host (so
/// `cloister verify --certs DIR/certs` works as without the jail).
pub(super) fn prepare_sim_root(dir: &Path) -> Result<(), JailError> {
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
pub(super) fn sim_root_files(dir: &Path) -> Result<Vec<PathBuf>, JailError> {
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
