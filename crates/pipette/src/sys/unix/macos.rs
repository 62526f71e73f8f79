//! What only macOS does: peer credentials (`getpeereid`, the pid from `LOCAL_PEERPID`, the
//! groups from `LOCAL_PEERCRED`), the socket address size, and where plain names live
//! without `XDG_RUNTIME_DIR`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::PeerIdentity;

/// The longest socket path: `sun_path` is 104 bytes, one of them the terminating NUL.
pub(super) const SUN_PATH_MAX: usize = 103;

/// Where plain names live when `XDG_RUNTIME_DIR` is not set: `~/Library/Caches/pipette`.
///
/// Not the per-user `$TMPDIR` (`/var/folders/…/T/`), although it is private and short:
/// macOS deletes files there that nobody has touched for three days (`dirhelper`, and
/// `periodic`'s clean-up of `/tmp`), which would take a long-running server's socket and
/// lock file away while it runs (its clients would then find nothing, and a second server
/// could claim the name). The user's cache directory is private to the user (`~/Library` is
/// `0700`), local, never cleaned behind a running program's back, and short for ordinary
/// home directories (`/Users/name/Library/Caches/pipette`). It survives a reboot; the
/// endpoints a crash leaves there are recovered as stale ones are everywhere (lock, probe).
/// Without a usable `$HOME`: `/tmp/pipette-<uid>`.
pub(super) fn default_runtime_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if Path::new(&home).is_absolute() => {
            Path::new(&home).join("Library/Caches/pipette")
        }
        _ => PathBuf::from(format!("/tmp/pipette-{}", super::access::euid())),
    }
}

/// The peer's credentials: effective uid and gid from `getpeereid` (as the peer had them
/// when it connected, or called `listen`), and its pid from `LOCAL_PEERPID`, where the
/// kernel tells it.
pub(super) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerIdentity> {
    let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
    // SAFETY: `uid` and `gid` are valid for writes; getpeereid writes only them.
    unsafe { syscall!(getpeereid(fd.as_raw_fd(), &mut uid, &mut gid))? };
    let mut pid: libc::pid_t = 0;
    let mut len = size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: `pid` is valid for writes of `len` bytes, and `len` is updated in place.
    let got = unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&mut pid as *mut libc::pid_t).cast(),
            &mut len
        ))
    };
    Ok(PeerIdentity {
        pid: (got.is_ok() && pid > 0).then_some(pid as u32),
        uid: Some(uid),
        gid: Some(gid),
        sid: None,
        group_sid: None,
    })
}

/// The peer's groups as `LOCAL_PEERCRED` reports them: at most 16, the effective gid first.
/// macOS resolves further memberships through the directory service, which the kernel's
/// copy does not hold: a peer whose membership of the server's group is only known there
/// is refused by `Access::Group`.
pub(super) fn peer_groups(fd: BorrowedFd<'_>) -> Option<Vec<u32>> {
    // SAFETY: xucred is plain old data; all-zero is valid.
    let mut cred: libc::xucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes, and `len` is updated in place.
    let got = unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERCRED,
            (&mut cred as *mut libc::xucred).cast(),
            &mut len
        ))
    };
    if got.is_err() || cred.cr_version != libc::XUCRED_VERSION {
        return None;
    }
    let n = (cred.cr_ngroups.max(0) as usize).min(cred.cr_groups.len());
    Some(cred.cr_groups[..n].to_vec())
}
