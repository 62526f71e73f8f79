//! The Unix backend: Unix domain stream sockets (developed and tested on Linux).
//!
//! See `sys/mod.rs` for the contract this module implements.

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

mod access;
#[cfg(feature = "tokio")]
pub(crate) mod aio;
mod endpoint;
mod listener;
mod stream;

use std::io;
use std::path::{Path, PathBuf};

use crate::proto::{Credentials, TrustPolicy};
use crate::{PeerIdentity, Trust};

pub(crate) use listener::Listener;
pub(crate) use stream::Stream;

/// The Unix (Linux) backend; see `sys/mod.rs` for the contract.
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
