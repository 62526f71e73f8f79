//! What only FreeBSD does: peer credentials and groups (`LOCAL_PEERCRED`, with the pid on
//! FreeBSD 13 and later), the socket address size, and where plain names live without
//! `XDG_RUNTIME_DIR`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

use crate::PeerIdentity;

/// The longest socket path: `sun_path` is 104 bytes, one of them the terminating NUL.
pub(super) const SUN_PATH_MAX: usize = 103;

/// Where plain names live when `XDG_RUNTIME_DIR` is not set (FreeBSD sets it only where a
/// PAM module or the desktop does).
pub(super) fn default_runtime_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/pipette-{}", super::access::euid()))
}

/// `LOCAL_PEERCRED`: the peer's credentials when it connected (a client) or called `listen`
/// (a server): effective uid, up to 16 groups (the first is the effective gid) and, since
/// FreeBSD 13, the pid.
fn xucred(fd: BorrowedFd<'_>) -> io::Result<libc::xucred> {
    // SAFETY: xucred is plain old data; all-zero is valid.
    let mut cred: libc::xucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::xucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes, and `len` is updated in place.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_LOCAL,
            libc::LOCAL_PEERCRED,
            (&mut cred as *mut libc::xucred).cast(),
            &mut len
        ))?
    };
    if cred.cr_version != libc::XUCRED_VERSION {
        return Err(io::Error::other("LOCAL_PEERCRED: unknown xucred version"));
    }
    Ok(cred)
}

fn groups_of(cred: &libc::xucred) -> &[libc::gid_t] {
    let n = (cred.cr_ngroups.max(0) as usize).min(cred.cr_groups.len());
    &cred.cr_groups[..n]
}

/// The peer's credentials (`LOCAL_PEERCRED`).
pub(super) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerIdentity> {
    let cred = xucred(fd)?;
    // SAFETY: both members of the union are plain data of the same size; the kernel fills
    // in `cr_pid` (FreeBSD 13 and later) or leaves zero (before), any bits being a valid pid_t.
    let pid = unsafe { cred.cr_pid__c_anonymous_union.cr_pid };
    Ok(PeerIdentity {
        pid: (pid > 0).then_some(pid as u32),
        uid: Some(cred.cr_uid),
        gid: groups_of(&cred).first().copied(),
        sid: None,
        group_sid: None,
    })
}

/// The peer's groups as `LOCAL_PEERCRED` reports them: at most 16 (`XU_NGROUPS`), the
/// effective gid first. A peer in more groups may miss the server's group here, and is then
/// refused by `Access::Group` although the file mode would let it connect.
pub(super) fn peer_groups(fd: BorrowedFd<'_>) -> Option<Vec<u32>> {
    xucred(fd).ok().map(|c| groups_of(&c).to_vec())
}
