//! The access policy on Unix: socket modes and peer checks.

use crate::{Access, PeerIdentity};

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
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: pw_name points into `buf`, which is alive; `groups` has room for `n` entries
    // and getgrouplist writes at most that many, updating `n`.
    let rc = unsafe { libc::getgrouplist(pwd.pw_name, pwd.pw_gid, groups.as_mut_ptr(), &mut n) };
    if rc < 0 {
        return false;
    }
    groups[..n.max(0) as usize].contains(&gid)
}
