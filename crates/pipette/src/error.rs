//! The one error type of the crate.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::frame::DecodeError;
pub use crate::proto::Refusal;

/// A specialised `Result` for pipette operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in pipette.
///
/// Each message says what happened and, where there is something to do, what to do about it.
/// Match on the variant to react in code; show the `Display` text to a person. The `Display`
/// text never repeats the error's [`source`](std::error::Error::source): to show the whole
/// story, print the chain of sources too (as `anyhow` and the `pipette` command do).
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

    /// An option has a value that cannot work (for example a `max_message_size` below the
    /// protocol minimum, or an access policy that no user could pass with this name).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// No server is listening on the name.
    #[error("no server is listening on {name:?} ({path}): start the server first, or wait for it (ClientOptions::wait)")]
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

    /// The operating system refused: file permissions, a private directory that is not
    /// private, the endpoint's security descriptor.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The server turned this connection away in the handshake (its reply said why).
    #[error("the server of {name:?} refused the connection: {reason}")]
    Refused {
        /// The name as given.
        name: String,
        /// What the server's reply said.
        reason: Refusal,
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

    /// A blocking operation did not complete in time.
    #[error("{op} timed out after {after:?}")]
    TimedOut {
        /// The operation that timed out.
        op: Operation,
        /// The timeout that expired.
        after: Duration,
    },

    /// The operation was cancelled because this side's [`Shutdown`](crate::Shutdown) handle
    /// was triggered. (A server that turns a connection away because *it* is shutting down
    /// is [`Error::Refused`] with [`Refusal::ShuttingDown`].)
    #[error("shut down: the shutdown handle was triggered")]
    Shutdown,

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

    /// The peer broke the protocol, or does not speak it. The connection is closed.
    #[error("protocol error: {message}")]
    Protocol {
        /// What arrived, and what to do about it.
        message: String,
        /// The wire-format error behind it, where there is one.
        #[source]
        source: Option<DecodeError>,
    },

    /// An earlier error made this direction of the connection unusable (a protocol error
    /// from the peer, or a send cut part-way by a timeout or a cancel); every later call
    /// reports this, with the earlier error as its source.
    #[error("the connection can no longer be used in this direction after an earlier error")]
    Broken(#[source] Arc<Error>),

    /// A message expected to be UTF-8 text is not. The connection stays usable; the bytes
    /// are in the source ([`FromUtf8Error::into_bytes`](std::string::FromUtf8Error::into_bytes)).
    #[error("the received message is not valid UTF-8 text; use recv() for binary messages")]
    NotUtf8(#[source] std::string::FromUtf8Error),

    /// A message expected to be UTF-16LE text (see [`Encoding`](crate::Encoding)) is not:
    /// it has an odd number of bytes, or an unpaired surrogate. The connection stays usable.
    #[error("the received message is not valid UTF-16LE text: {reason}; use recv() for binary messages, or Encoding::decode_lossy")]
    NotUtf16 {
        /// What is wrong, and where.
        reason: String,
        /// The message's bytes, as received.
        bytes: Vec<u8>,
    },

    /// A message arrived whole but does not decode as the type asked for (typed messages,
    /// feature `serde`): the peer sent another type, another codec, or a value this type
    /// rejects. Only this message is skipped: the connection stays usable for the next one.
    #[error(
        "the received message is not a valid {type_name}: the peer sent another type or codec"
    )]
    Decode {
        /// The type it was decoded as (`std::any::type_name`).
        type_name: &'static str,
        /// The codec's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// A value could not be encoded (typed messages, feature `serde`; for example a map with
    /// non-string keys in JSON, or a `Serialize` impl that fails). Nothing was sent; the
    /// connection stays usable.
    #[error("{type_name} could not be encoded, nothing was sent")]
    Encode {
        /// The type of the value (`std::any::type_name`).
        type_name: &'static str,
        /// The codec's error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// Any other I/O error from the operating system; `context` says what pipette was doing.
    #[error("{context}")]
    Io {
        /// What failed.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Which operation timed out ([`Error::TimedOut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Waiting for a connection.
    Accept,
    /// Waiting for a server to appear, or for its accept queue to make room.
    Connect,
    /// Waiting for the server's handshake reply.
    Handshake,
    /// Receiving a message.
    Recv,
    /// Sending a message.
    Send,
    /// Closing the sending direction (writing what was still queued).
    Close,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Accept => "accept",
            Operation::Connect => "connect",
            Operation::Handshake => "handshake",
            Operation::Recv => "recv",
            Operation::Send => "send",
            Operation::Close => "close",
        })
    }
}

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

impl From<io::Error> for Error {
    /// An I/O error without more context (pipette's own code always adds some).
    fn from(source: io::Error) -> Error {
        Error::Io {
            context: "I/O error".to_owned(),
            source,
        }
    }
}

impl Error {
    /// An [`Error::Io`] saying what failed.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Protocol`] without a wire-format source.
    pub(crate) fn protocol(message: impl Into<String>) -> Error {
        Error::Protocol {
            message: message.into(),
            source: None,
        }
    }

    /// The error a failed I/O operation `op` stands for. `shut_down` says whether the
    /// operation's shutdown handle was triggered, which explains any failure after it.
    pub(crate) fn from_io(
        e: io::Error,
        op: Operation,
        timeout: Option<Duration>,
        shut_down: bool,
    ) -> Error {
        if shut_down {
            return Error::Shutdown;
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
            _ => Error::io(format!("{op} failed"), e),
        }
    }

    /// End of stream where a message may start: `Closed`, or `Shutdown` if we caused it.
    pub(crate) fn eof(shut_down: bool) -> Error {
        if shut_down {
            Error::Shutdown
        } else {
            Error::Closed
        }
    }

    /// A copy, for errors that are reported again later ([`Error::Broken`]). An I/O error
    /// is copied as its kind and text.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::InvalidName { name, reason } => Error::InvalidName {
                name: name.clone(),
                reason: reason.clone(),
            },
            Error::InvalidConfig(m) => Error::InvalidConfig(m.clone()),
            Error::NotFound { name, path } => Error::NotFound {
                name: name.clone(),
                path: path.clone(),
            },
            Error::AddrInUse {
                name,
                pid,
                other_user,
            } => Error::AddrInUse {
                name: name.clone(),
                pid: *pid,
                other_user: other_user.clone(),
            },
            Error::PermissionDenied(m) => Error::PermissionDenied(m.clone()),
            Error::Refused { name, reason } => Error::Refused {
                name: name.clone(),
                reason: *reason,
            },
            Error::UntrustedServer {
                name,
                path,
                server,
                trusted,
            } => Error::UntrustedServer {
                name: name.clone(),
                path: path.clone(),
                server: server.clone(),
                trusted: trusted.clone(),
            },
            Error::TimedOut { op, after } => Error::TimedOut {
                op: *op,
                after: *after,
            },
            Error::Shutdown => Error::Shutdown,
            Error::Closed => Error::Closed,
            Error::MessageTooLarge { len, max } => Error::MessageTooLarge {
                len: *len,
                max: *max,
            },
            Error::Protocol { message, source } => Error::Protocol {
                message: message.clone(),
                source: source.clone(),
            },
            Error::Broken(cause) => Error::Broken(cause.clone()),
            Error::NotUtf8(e) => Error::NotUtf8(e.clone()),
            Error::NotUtf16 { reason, bytes } => Error::NotUtf16 {
                reason: reason.clone(),
                bytes: bytes.clone(),
            },
            Error::Decode { type_name, source } => Error::Decode {
                type_name,
                source: source.clone(),
            },
            Error::Encode { type_name, source } => Error::Encode {
                type_name,
                source: source.clone(),
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
        }
    }

    /// The closest [`io::ErrorKind`], for callers that need to fit pipette into `io` code.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidName { .. } | Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::AddrInUse { .. } => io::ErrorKind::AddrInUse,
            Error::PermissionDenied(_) | Error::UntrustedServer { .. } => {
                io::ErrorKind::PermissionDenied
            }
            Error::Refused { reason, .. } => match reason {
                Refusal::AccessDenied => io::ErrorKind::PermissionDenied,
                _ => io::ErrorKind::ConnectionRefused,
            },
            Error::TimedOut { .. } => io::ErrorKind::TimedOut,
            Error::Shutdown => io::ErrorKind::ConnectionAborted,
            Error::Closed => io::ErrorKind::UnexpectedEof,
            Error::MessageTooLarge { .. }
            | Error::Protocol { .. }
            | Error::NotUtf8(_)
            | Error::NotUtf16 { .. }
            | Error::Decode { .. }
            | Error::Encode { .. } => io::ErrorKind::InvalidData,
            Error::Broken(cause) => cause.io_kind(),
            Error::Io { source, .. } => source.kind(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io { source, .. } => source,
            other => io::Error::new(other.io_kind(), other),
        }
    }
}

/// Two halves that do not belong to the same connection, returned unchanged by `reunite`.
#[derive(Debug)]
pub struct ReuniteError<S, R> {
    /// The sending half.
    pub send: S,
    /// The receiving half.
    pub recv: R,
}

impl<S, R> fmt::Display for ReuniteError<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves of two different connections")
    }
}

impl<S: fmt::Debug, R: fmt::Debug> std::error::Error for ReuniteError<S, R> {}
