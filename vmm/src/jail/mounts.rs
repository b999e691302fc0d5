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
