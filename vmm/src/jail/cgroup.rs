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
pub(super) fn v1_dirs(mounts: &[Mount], own: &[(Vec<String>, String)]) -> Result<Parent, String> {
    let dir = |controller: &str| -> Result<PathBuf, String> {
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
            .ok_or_else(|| {
                format!(
                    "no cgroup v1 hierarchy has the {controller} controller (/proc/self/mountinfo)"
                )
            })?;
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
