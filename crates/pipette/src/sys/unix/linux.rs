//! What only Linux does: peer credentials (`SO_PEERCRED`) with the peer's groups
//! (`SO_PEERGROUPS`), the socket address size, and where plain names live without
//! `XDG_RUNTIME_DIR`.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

use crate::PeerIdentity;

/// The longest socket path the kernel takes: `sun_path` is 108 bytes, one of them the
/// terminating NUL. (Plain names use the portable 103, see `endpoint`.)
pub(super) const SUN_PATH_MAX: usize = 107;

/// Where plain names live when `XDG_RUNTIME_DIR` is not set.
pub(super) fn default_runtime_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/pipette-{}", super::access::euid()))
}

/// The peer's credentials (`SO_PEERCRED`): its pid, effective uid and gid when it connected
/// (a client) or called `listen` (a server).
///
/// libc rather than rustix's `socket_peercred`: the kernel reports pid 0 for a peer outside
/// our pid namespace, which rustix's `UCred` (a non-zero `Pid`) cannot hold.
pub(super) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerIdentity> {
    // SAFETY: ucred is plain old data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes, and `len` is updated in place.
    unsafe {
        syscall!(getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len
        ))?
    };
    Ok(PeerIdentity {
        pid: (cred.pid > 0).then_some(cred.pid as u32),
        uid: Some(cred.uid),
        gid: Some(cred.gid),
        sid: None,
        group_sid: None,
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13 and later; not in rustix),
/// as its process had them when it connected; `None` where the kernel cannot tell.
pub(super) fn peer_groups(fd: BorrowedFd<'_>) -> Option<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes, and `len` is updated in place.
        let res = unsafe {
            syscall!(getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len
            ))
        };
        match res {
            Ok(_) => {
                groups.truncate(len as usize / size_of::<libc::gid_t>());
                return Some(groups);
            }
            // Too small: `len` says how much is needed.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && (len as usize) < 1 << 20 => {
                groups.resize((len as usize).div_ceil(size_of::<libc::gid_t>()), 0);
            }
            Err(_) => return None,
        }
    }
}
