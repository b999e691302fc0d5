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
    let own = cgroup::parse_proc_cgroup("4:memory:/process_api/x\n2:cpu,cpuacct:/a\n8:pids:/\n");
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
