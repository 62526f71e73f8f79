//! The one error type of the crate.

use std::io;
use std::time::Duration;

/// A specialised `Result` for pipette operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pipette.
///
/// Each message says what happened and, where there is something to do, what to do about it.
/// Match on the variant to react in code; show the `Display` text to a person.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint name cannot be used.
    #[error("invalid endpoint name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused, and what would be accepted.
        reason: String,
    },

    /// No server is listening on the name.
    #[error("no server is listening on {name:?} ({path}): start the server first, or connect with a timeout to wait for it")]
    NotFound {
        /// The name as given.
        name: String,
        /// Where the endpoint was looked for.
        path: String,
    },

    /// Another live process already serves the name.
    #[error("{name:?} is already served by a live process{}: stop that server or pick another name", pid_suffix(*.pid))]
    AddrInUse {
        /// The name as given.
        name: String,
        /// The process id of the live server, where the platform can tell.
        pid: Option<u32>,
    },

    /// The operating system or the server's access policy refused.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A blocking operation did not complete in time.
    #[error("{op} timed out after {after:?}")]
    TimedOut {
        /// The operation that timed out ("accept", "connect", "recv", "send").
        op: &'static str,
        /// The timeout that expired.
        after: Duration,
    },

    /// The operation was cancelled because shutdown was requested, on this side through a
    /// [`Shutdown`](crate::Shutdown) handle, or by the server refusing new connections while it
    /// shuts down.
    #[error("shut down: {0}")]
    Shutdown(&'static str),

    /// The peer closed the connection in an orderly way (no more messages will come).
    #[error("the peer closed the connection")]
    Closed,

    /// A message is larger than the receiving side accepts. Nothing was sent, or, on the
    /// receiving side, the connection was closed without reading the payload.
    #[error("message of {len} bytes exceeds the limit of {max} bytes: raise max_message_size on the receiving side, or split the message")]
    MessageTooLarge {
        /// The message length in bytes.
        len: u64,
        /// The limit in bytes.
        max: u64,
    },

    /// The peer broke the protocol, or does not speak it.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// Any other I/O error from the operating system.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

pub(crate) const SHUTDOWN_TRIGGERED: &str = "the connection's shutdown handle was triggered";

fn pid_suffix(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

impl Error {
    /// The error a failed I/O operation `op` stands for. `shut_down` says whether the
    /// operation's shutdown handle was triggered, which explains any failure after it.
    pub(crate) fn from_io(
        e: io::Error,
        op: &'static str,
        timeout: Option<Duration>,
        shut_down: bool,
    ) -> Error {
        if shut_down {
            return Error::Shutdown(SHUTDOWN_TRIGGERED);
        }
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut {
                op,
                after: timeout.unwrap_or_default(),
            },
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected => Error::Closed,
            _ => Error::Io(e),
        }
    }

    /// What an invalid message header from the peer means for the user: a message over the
    /// limit, or a protocol error naming what arrived.
    pub(crate) fn from_bad_header(e: crate::frame::DecodeError) -> Error {
        match e {
            crate::frame::DecodeError::TooLarge { len, max } => Error::MessageTooLarge {
                len: len.into(),
                max: max.into(),
            },
            other => Error::Protocol(format!("invalid message header from the peer: {other}")),
        }
    }

    /// End of stream where a message may start: `Closed`, or `Shutdown` if we caused it.
    pub(crate) fn eof(shut_down: bool) -> Error {
        if shut_down {
            Error::Shutdown(SHUTDOWN_TRIGGERED)
        } else {
            Error::Closed
        }
    }

    /// The closest [`io::ErrorKind`], for callers that need to fit pipette into `io` code.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidName { .. } => io::ErrorKind::InvalidInput,
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::AddrInUse { .. } => io::ErrorKind::AddrInUse,
            Error::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Shutdown(_) => io::ErrorKind::ConnectionAborted,
            Error::Closed => io::ErrorKind::UnexpectedEof,
            Error::MessageTooLarge { .. } => io::ErrorKind::InvalidData,
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::Io(e) => e.kind(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}
