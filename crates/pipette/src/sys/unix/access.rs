//! The access policy on Unix: socket modes, and the credentials both sides' decisions are
//! made from (the decisions themselves are the protocol engine's: `proto::admit_peer` and
//! `proto::trusts`).

use std::io;

use crate::proto::{Credentials, TrustPolicy};
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
    rustix::process::geteuid().as_raw()
}

fn egid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// This process's identity: its effective user, and (when `with_groups`, for a group
/// policy: nothing else reads them) its effective and supplementary groups. Read afresh
/// each time: a server captures it when it binds (and compares its peers with the user that
/// owns its socket, whatever the process does later); a client before each connect (one
/// system call for the default policy).
pub(crate) fn credentials(with_groups: bool) -> Credentials {
    let (gid, groups) = if with_groups {
        (Some(egid()), own_groups())
    } else {
        (None, Vec::new())
    };
    Credentials {
        uid: Some(euid()),
        gid,
        groups,
        ..Credentials::default()
    }
}

/// A client's trust policy with `Trust::User` resolved to a uid.
pub(crate) fn trust_policy(trust: &Trust) -> io::Result<TrustPolicy> {
    let user_uid = match trust {
        Trust::User(user) => Some(resolve_user(user)?),
        _ => None,
    };
    Ok(TrustPolicy {
        trust: trust.clone(),
        user_uid,
        user_sid: None,
    })
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

/// This process's supplementary groups (`getgroups(2)`; on macOS at most 16, the kernel's
/// copy: memberships known only to the directory service are not among them).
fn own_groups() -> Vec<u32> {
    rustix::process::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default()
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
