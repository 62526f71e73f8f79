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
    ///
    /// When that process runs as another user, `other_user` says who: on Windows, where the
    /// pipe namespace is shared by all users, that is what a squatter looks like (a user who
    /// created the pipe first, to receive your clients' data). pipette never takes over a
    /// live name, and its clients refuse such a server ([`Error::UntrustedServer`]).
    #[error("{}", addr_in_use(name, *pid, other_user.as_deref()))]
    AddrInUse {
        /// The name as given.
        name: String,
        /// The process id of the live server, where the platform can tell.
        pid: Option<u32>,
        /// Who serves it, when that is known to be another user than this process's (for
        /// example `uid 65534 (nobody)`, or a SID on Windows).
        other_user: Option<String>,
    },

    /// The server is not one this client trusts (see [`Trust`](crate::Trust) and
    /// [`ClientOptions::trust`](crate::ClientOptions::trust)). Nothing was sent to it.
    #[error("refusing to talk to the server of {}: it runs as {server}, and this client trusts only {trusted}. It may be an impostor (someone else created the endpoint first), and nothing was sent to it. If you do trust it, widen the client's trust (ClientOptions::trust, or --trust on the command line)", endpoint(name, path))]
    UntrustedServer {
        /// The name as given.
        name: String,
        /// Where the endpoint is.
        path: String,
        /// Who runs the server, as the operating system reports it.
        server: String,
        /// Whom the client trusts, in words.
        trusted: String,
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

/// An endpoint for messages: the name, and where it lives when that says more.
fn endpoint(name: &str, path: &str) -> String {
    if name == path {
        format!("{name:?}")
    } else {
        format!("{name:?} ({path})")
    }
}

fn addr_in_use(name: &str, pid: Option<u32>, other_user: Option<&str>) -> String {
    let pid = match pid {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    };
    match other_user {
        None => format!("{name:?} is already served by a live process{pid}: stop that server or pick another name"),
        Some(who) => format!(
            "{name:?} is already served by a live process{pid} of another user, {who}: it may be squatting on the name. pipette never takes over a live name, and its clients refuse a server of another user; find out who runs it, or pick another name"
        ),
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
            Error::UntrustedServer { .. } => io::ErrorKind::PermissionDenied,
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
