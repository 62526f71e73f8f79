//! The access policy on Unix: socket modes and peer checks.

use std::io;

use crate::{Access, PeerIdentity, Trust};

/// The mode of the socket file for a policy.
pub(super) fn socket_mode(access: Access) -> u32 {
    match access {
        Access::CurrentUser => 0o600,
        Access::Group => 0o660,
        Access::Everyone => 0o666,
    }
}

pub(super) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// The server's user, read once when it binds: the user that owns its socket file. Access
/// decisions compare peers with it, not with whatever the process's effective ids are
/// later (a server that drops privileges after binding keeps the socket of the user it
/// bound as), and a connection costs no `geteuid`/`getegid`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    /// The calling process's effective user and group.
    pub(crate) fn current() -> Owner {
        Owner {
            uid: euid(),
            gid: egid(),
        }
    }
}

/// Whether `peer` may connect under `access` to a server bound by `owner`. A peer whose
/// identity is unknown is refused unless everyone is admitted.
pub(crate) fn admits(access: Access, owner: &Owner, peer: &PeerIdentity) -> bool {
    let Some(uid) = peer.uid else {
        return access == Access::Everyone;
    };
    match access {
        Access::Everyone => true,
        Access::CurrentUser => uid == owner.uid,
        Access::Group => {
            uid == owner.uid || peer.gid == Some(owner.gid) || user_in_group(uid, owner.gid)
        }
    }
}

/// Whether user `uid` has `gid` among its supplementary groups (from the user database).
fn user_in_group(uid: u32, gid: u32) -> bool {
    let Some((name, primary)) = passwd_by_uid(uid) else {
        return false;
    };
    if primary == gid {
        return true;
    }
    // getgrouplist says how many groups there are when the buffer is too small: grow it
    // (a user may belong to more than any fixed number of groups).
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `name` is NUL-terminated and alive; `groups` has room for `n` entries and
        // getgrouplist writes at most that many, updating `n`.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), primary, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            return groups[..n.max(0) as usize].contains(&gid);
        }
        let want = (n.max(0) as usize).max(groups.len() * 2);
        if want > 1 << 16 {
            return false;
        }
        groups.resize(want, 0);
    }
}

/// The name and primary group of user `uid`, from the user database.
fn passwd_by_uid(uid: u32) -> Option<(std::ffi::CString, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is valid and is filled in below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given; getpwuid_r writes only into `pwd`
    // and `buf`, and sets `result` to null or to `&mut pwd`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside `buf`, which is alive.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_owned();
    Some((name, pwd.pw_gid))
}

/// The uid of a user given by name or number.
fn resolve_user(user: &str) -> io::Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    let not_found = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no user named {user:?} on this system (Trust::User takes a user name or a numeric uid)"),
        )
    };
    let name = std::ffi::CString::new(user).map_err(|_| not_found())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is valid and is filled in below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; the other pointers are valid for the sizes given;
    // getpwnam_r writes only into `pwd` and `buf`, and sets `result` to null or `&mut pwd`.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(not_found());
    }
    Ok(pwd.pw_uid)
}

/// This process's effective group and supplementary groups.
fn own_groups() -> Vec<u32> {
    let mut groups = vec![egid()];
    // SAFETY: a size query: no buffer is written with a count of 0.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n > 0 {
        let mut more = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `more` has room for `n` entries.
        let got = unsafe { libc::getgroups(n, more.as_mut_ptr()) };
        if got > 0 {
            groups.extend_from_slice(&more[..got as usize]);
        }
    }
    groups
}

/// Whether this process trusts the server `server` (its `SO_PEERCRED`) under `trust`: the
/// client's side of the access policy (see [`Trust`]). Errors: a `Trust::User` that names
/// no user.
pub(crate) fn trusts(trust: &Trust, server: &PeerIdentity) -> io::Result<bool> {
    if *trust == Trust::Everyone {
        return Ok(true);
    }
    let Some(uid) = server.uid else {
        return Ok(false);
    };
    if uid == euid() || uid == 0 {
        return Ok(true);
    }
    Ok(match trust {
        Trust::Group => server.gid.is_some_and(|gid| own_groups().contains(&gid)),
        Trust::User(user) => uid == resolve_user(user)?,
        _ => false,
    })
}

/// A user for messages: `uid 65534 (nobody)`.
pub(crate) fn describe_user(uid: u32) -> String {
    match passwd_by_uid(uid) {
        Some((name, _)) => format!("uid {uid} ({})", name.to_string_lossy()),
        None => format!("uid {uid}"),
    }
}

/// The user (and group) a server runs as, for messages: `uid 65534 (nobody), gid 65534`.
pub(crate) fn describe_owner(server: &PeerIdentity) -> String {
    let user = match server.uid {
        Some(uid) => describe_user(uid),
        None => "an unknown user".to_owned(),
    };
    match server.gid {
        Some(gid) => format!("{user}, gid {gid}"),
        None => user,
    }
}

/// Who runs a server, for messages: `uid 65534 (nobody), gid 65534, pid 123`.
pub(crate) fn describe_server(server: &PeerIdentity) -> String {
    match server.pid {
        Some(pid) => format!("{}, pid {pid}", describe_owner(server)),
        None => describe_owner(server),
    }
}

/// Whether `server` runs as this process's own user (for telling a squatter from a second
/// server of ours).
pub(crate) fn is_own_user(server: &PeerIdentity) -> bool {
    server.uid == Some(euid())
}
