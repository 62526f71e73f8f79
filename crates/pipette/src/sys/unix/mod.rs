//! The Unix backend: Unix domain stream sockets on Linux, macOS and FreeBSD.
//!
//! See `sys/mod.rs` for the contract this module implements and the platform table. What
//! every Unix shares is here; what one system does alone is in its own small file, `os`:
//!
//! ```text
//! mod.rs       Platform: the contract's entry points
//! socket.rs    socket, connect, accept (close-on-exec, explicit blocking mode), send
//!              without SIGPIPE, recv without waiting, poll
//! stream.rs    the blocking Stream: MSG_DONTWAIT calls, waits in ppoll/poll, timeouts
//! listener.rs  the blocking Listener: accept + the hello queue in a Poller; cancel
//! poller.rs    Poller (epoll on Linux, kqueue on macOS and FreeBSD), WakePipe
//! endpoint.rs  names to paths (hashing), private directory, lock file, stale recovery,
//!              registry
//! access.rs    socket modes, this process's credentials, user lookups
//! aio.rs       tokio: the same streams and listener on tokio's reactor
//! linux.rs     SO_PEERCRED, SO_PEERGROUPS; sun_path 108; /tmp/pipette-<uid>
//! macos.rs     getpeereid, LOCAL_PEERPID, LOCAL_PEERCRED; sun_path 104;
//!              ~/Library/Caches/pipette
//! freebsd.rs   LOCAL_PEERCRED (with the pid on 13+); sun_path 104; /tmp/pipette-<uid>
//! ```
//!
//! The code paths are named by `cfg`s that `build.rs` sets: `pipette_sock_flags` (the
//! creating call sets close-on-exec and the blocking mode: Linux, FreeBSD),
//! `pipette_shutdown_wakes` (`shutdown(2)` of a listening socket wakes its waiters: Linux),
//! and `pipette_portable` (Linux built with `PIPETTE_UNIX_PORTABLE=1` takes macOS's paths
//! wherever Linux has the calls, so the test suite runs them: `scripts/test-portable.sh`).
//!
//! Calls go through rustix; libc remains, each call behind a `SAFETY` comment, where rustix
//! lacks the call (the user database, `SO_PEERGROUPS`, `getpeereid`, `LOCAL_PEERPID`,
//! `LOCAL_PEERCRED`) or cannot hold its answer (`SO_PEERCRED`'s pid 0).

/// Calls a libc function and turns its `-1` return into `io::Error::last_os_error()`.
///
/// Every use is in an `unsafe` context with its own `SAFETY` comment.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        let res = libc::$fn($($arg),*);
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// The shared-memory methods of `Handshake`, the same for the blocking and the async stream
/// (`$fd`: the socket, from `self`): the handover descriptors go out with `sendmsg`, and a
/// hello's are kept in the stream's `inbox`. Where there is no shared memory, the region and
/// memory types cannot exist.
macro_rules! shm_handshake {
    (|$this:ident| $fd:expr) => {
        #[cfg(target_os = "linux")]
        fn write_handover(
            &self,
            reply: &[u8],
            region: &crate::sys::shm::Region,
        ) -> std::io::Result<usize> {
            let $this = self;
            super::fds::send_with_fds($fd, &[reply], &region.handover())
        }

        #[cfg(not(target_os = "linux"))]
        fn write_handover(
            &self,
            _reply: &[u8],
            region: &crate::sys::shm::Region,
        ) -> std::io::Result<usize> {
            match *region {}
        }

        #[cfg(target_os = "linux")]
        fn write_with_memory(
            &self,
            hello: &[u8],
            memory: &crate::sys::shm::Memory,
        ) -> std::io::Result<usize> {
            let $this = self;
            super::shm::send_memory($fd, hello, memory)
        }

        #[cfg(target_os = "linux")]
        fn handed_over(&mut self) -> Vec<crate::sys::shm::Descriptor> {
            super::shm::handed_over(&mut self.inbox)
        }
    };
}

mod access;
#[cfg(feature = "tokio")]
pub(crate) mod aio;
mod endpoint;
pub(crate) mod fds;
mod listener;
mod poller;
#[cfg(target_os = "linux")]
pub(crate) mod shm;
mod socket;
mod stream;
pub(crate) use fds::Unclaimed;

#[cfg(target_os = "freebsd")]
#[path = "freebsd.rs"]
mod os;
#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod os;
#[cfg(target_os = "macos")]
#[path = "macos.rs"]
mod os;

use std::io;
use std::path::{Path, PathBuf};

use crate::proto::{Credentials, TrustPolicy};
use crate::{PeerIdentity, Trust};

pub(crate) use listener::Listener;
pub(crate) use stream::Stream;

/// The Unix backend; see `sys/mod.rs` for the contract.
pub(crate) struct Platform;

impl crate::sys::Backend for Platform {
    type Stream = Stream;
    type Listener = Listener;

    /// `shutdown(SHUT_WR)` ends only our sending direction.
    const HALF_CLOSE: bool = true;
    /// The socket file's mode refuses other users, but not root, so pipette's own check of
    /// every peer decides.
    const ACCESS_ENFORCED_BY_OS: bool = false;
    const SYSTEM_USERS: &'static str = "the system (root)";

    fn plain_endpoint(name: &str) -> Result<PathBuf, String> {
        endpoint::plain_endpoint(name)
    }

    fn explicit_endpoint(s: &str) -> Option<Result<PathBuf, String>> {
        endpoint::explicit_endpoint(s)
    }

    fn probe(path: &Path) -> io::Result<crate::sys::Probe> {
        endpoint::probe(path)
    }

    fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>> {
        endpoint::list_endpoints()
    }

    fn remove_stale(name: &str, path: &Path) -> crate::Result<bool> {
        endpoint::remove_stale(name, path)
    }

    fn credentials(with_groups: bool) -> Credentials {
        access::credentials(with_groups)
    }

    fn trust_policy(trust: &Trust) -> io::Result<TrustPolicy> {
        access::trust_policy(trust)
    }

    fn describe_server(server: &PeerIdentity) -> String {
        access::describe_server(server)
    }
}

#[cfg(test)]
mod tests {
    /// `scripts/test-portable.sh` proves something only if `build.rs` really switched the
    /// code paths: a run that asked for the portable paths (or not) and got the other set
    /// fails here instead of passing for the wrong reason.
    #[test]
    fn the_build_takes_the_code_paths_it_was_asked_for() {
        let linux = cfg!(target_os = "linux");
        let asked = option_env!("PIPETTE_UNIX_PORTABLE") == Some("1");
        assert_eq!(cfg!(pipette_portable), linux && asked, "pipette_portable");
        assert_eq!(
            cfg!(pipette_shutdown_wakes),
            linux && !asked,
            "pipette_shutdown_wakes"
        );
        assert_eq!(
            cfg!(pipette_sock_flags),
            (linux && !asked) || cfg!(target_os = "freebsd"),
            "pipette_sock_flags"
        );
    }
}
