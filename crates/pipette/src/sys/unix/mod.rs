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

pub(crate) use access::{credentials, describe_server, trust_policy};

/// Whether the operating system enforces the server's access policy before pipette sees a
/// peer (Windows: the pipe's DACL). On Unix the socket file's mode does for other users, but
/// not for root, so pipette's own check decides.
pub(crate) const ACCESS_ENFORCED_BY_OS: bool = false;

/// Who "the system" is in a client's trust policy (see `Trust`).
pub(crate) const SYSTEM_USERS: &str = "the system (root)";
pub(crate) use endpoint::{explicit_endpoint, list_endpoints, plain_endpoint, probe, remove_stale};
pub(crate) use listener::Listener;
pub(crate) use stream::Stream;

/// Whether `shutdown_write` leaves the reading direction open (see `sys/mod.rs`).
/// `shutdown(SHUT_WR)` ends only our sending direction.
pub(crate) const HALF_CLOSE: bool = true;

/// Turns a `Duration` into a `timeval`, saturating; `None` (no timeout) is all zeros, and a
/// zero duration becomes one microsecond so that it does not mean "no timeout".
fn timeval(d: Option<std::time::Duration>) -> libc::timeval {
    match d {
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        Some(d) => {
            let secs = d.as_secs().min(i32::MAX as u64) as libc::time_t;
            let mut usecs = d.subsec_micros() as libc::suseconds_t;
            if secs == 0 && usecs == 0 {
                usecs = 1;
            }
            libc::timeval {
                tv_sec: secs,
                tv_usec: usecs,
            }
        }
    }
}
