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
fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the prctl options used here take integer arguments only.
    let ret = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
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
