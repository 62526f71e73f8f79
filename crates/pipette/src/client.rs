//! Connecting to a name.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::{message_limit, Connection};
use crate::error::{Error, Result};
use crate::handshake;
use crate::server::DEFAULT_MAX_MESSAGE_SIZE;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::{sys, IntoName, Name, PeerIdentity, Trust};

/// Longest pause between two attempts while waiting for a server to appear.
const MAX_BACKOFF: Duration = Duration::from_millis(20);

/// Connects to servers by name.
///
/// ```
/// use std::time::Duration;
/// use pipette::{Client, Error, Server};
///
/// let name = format!("doc-client-{}", std::process::id());
/// // No server yet: connect fails at once.
/// assert!(matches!(Client::connect(&name), Err(Error::NotFound { .. })));
///
/// let server = Server::bind(&name)?;
/// // connect_timeout waits for the server to appear (here it already has).
/// let mut client = Client::connect_timeout(&name, Duration::from_secs(5))?;
/// client.send(b"hello")?;
/// assert_eq!(server.accept()?.recv()?, b"hello");
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Connects with the default [`ClientOptions`]; fails at once with [`Error::NotFound`]
    /// when no server is listening.
    pub fn connect(name: impl IntoName) -> Result<Connection> {
        ClientOptions::new().connect(name)
    }

    /// Connects with the default [`ClientOptions`], waiting up to `timeout` for a server to
    /// appear. See [`ClientOptions::connect_timeout`].
    pub fn connect_timeout(name: impl IntoName, timeout: Duration) -> Result<Connection> {
        ClientOptions::new().connect_timeout(name, timeout)
    }
}

/// How to connect: mode, limits, shutdown handle.
///
/// ```
/// use pipette::{ClientOptions, Shutdown};
///
/// let stop = Shutdown::new();
/// let options = ClientOptions::new().max_message_size(1 << 20).shutdown(&stop);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    max_message_size: usize,
    raw: bool,
    message_pipe: bool,
    trust: Trust,
    shutdown: Option<Shutdown>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::new()
    }
}

impl ClientOptions {
    /// The defaults: framed mode, 16 MiB messages, only servers of the same user (or the
    /// system) trusted, a fresh shutdown handle per connection.
    pub fn new() -> ClientOptions {
        ClientOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            raw: false,
            message_pipe: false,
            trust: Trust::CurrentUser,
            shutdown: None,
        }
    }

    /// Which servers this client talks to (default [`Trust::CurrentUser`]: servers of its
    /// own user, or of the system). Checked right after connecting, before anything is sent;
    /// a server outside the policy fails the connection with
    /// [`Error::UntrustedServer`]. Applies in raw mode too.
    ///
    /// ```
    /// use pipette::{ClientOptions, Trust};
    ///
    /// // A server bound with `Access::Group` by another member of one of my groups.
    /// let options = ClientOptions::new().trust(Trust::Group);
    /// # let _ = options;
    /// ```
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// The largest message this client accepts from the server (default 16 MiB, at least
    /// 4096). The server learns it in the handshake and will not send more.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Raw mode: no handshake and no framing, for servers that are not pipette (`socat`, a
    /// Python `socket` server, …).
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Windows: open the pipe in message read mode (`SetNamedPipeHandleState` with
    /// `PIPE_READMODE_MESSAGE`), to talk to a server whose pipe is message-type, such as a
    /// .NET `NamedPipeServerStream` with `PipeTransmissionMode.Message` or a pipette server
    /// with [`ServerOptions::message_pipe`](crate::ServerOptions::message_pipe). Default off.
    /// Connecting this way to a byte-type pipe fails (Windows refuses message read mode
    /// there). **Unix: accepted and has no effect.**
    ///
    /// Meant for [`raw`](ClientOptions::raw) mode: each `send` is one pipe message and each
    /// `recv` returns exactly one whole pipe message, however large. An empty message cannot
    /// be sent, and an empty message from the peer reads as end-of-stream. A receive timeout
    /// that expires while a message is still arriving splits it (the rest comes with the
    /// next `recv`). In framed mode the pipette protocol runs unchanged on top.
    ///
    /// The blocking API only, for now: on Windows, `pipette::tokio` refuses it at connect
    /// with an [`Unsupported`](std::io::ErrorKind::Unsupported) I/O error.
    pub fn message_pipe(mut self, on: bool) -> Self {
        self.message_pipe = on;
        self
    }

    /// Uses `handle` as the connection's shutdown handle: its `shutdown()` cancels a waiting
    /// [`connect_timeout`](ClientOptions::connect_timeout) and every operation of the
    /// connection.
    pub fn shutdown(mut self, handle: &Shutdown) -> Self {
        self.shutdown = Some(handle.clone());
        self
    }

    /// Connects; fails at once with [`Error::NotFound`] when no server is listening. While
    /// a live server's accept queue is full it waits, as a blocking `connect(2)` would
    /// (the connection's shutdown handle cancels the wait).
    ///
    /// In framed mode this sends the hello and returns without waiting for the server's
    /// reply: the first message can follow right behind it. A refusal by the server is
    /// reported by the first `recv`, by a `send` larger than 4096 bytes, or by
    /// [`Connection::close`].
    pub fn connect(&self, name: impl IntoName) -> Result<Connection> {
        self.connect_inner(name.into_name()?, None)
    }

    /// Connects, waiting up to `timeout` while the endpoint does not exist yet, is left over
    /// from a dead server, or is busy. The wait backs off from 1 ms to 20 ms between attempts
    /// (it never spins a core) and is cancelled by the shutdown handle.
    pub fn connect_timeout(&self, name: impl IntoName, timeout: Duration) -> Result<Connection> {
        self.connect_inner(name.into_name()?, Some(timeout))
    }

    fn connect_inner(&self, name: Name, wait: Option<Duration>) -> Result<Connection> {
        let limit = message_limit(self.max_message_size)?;
        let shutdown = self.shutdown.clone().unwrap_or_default();
        let mut backoff = Backoff::new(wait);
        let connect = self.connect_options();
        let stream = loop {
            if shutdown.is_shutdown() {
                return Err(Error::Shutdown(CLIENT_SHUT_DOWN));
            }
            match sys::Stream::connect(name.path(), &connect) {
                Ok(s) => break s,
                Err(e) => {
                    let pause = backoff.after_failure(&name, e)?;
                    if shutdown.sleep(pause) {
                        return Err(Error::Shutdown(CLIENT_SHUT_DOWN));
                    }
                }
            }
        };

        // Who is there, before a single byte goes out.
        let server = check_server(&name, &self.trust, stream.peer())?;
        let stream = Arc::new(stream);
        let registration = shutdown
            .register(stream.clone())
            .map_err(|()| Error::Shutdown(CLIENT_SHUT_DOWN))?;
        if !self.raw {
            let hello = handshake::hello(limit);
            // A fresh socket's send buffer is empty: the 16 bytes go out in one write.
            match stream.write(&hello) {
                Ok(n) if n == hello.len() => {}
                Ok(_) => return Err(short_hello()),
                Err(e) => return Err(connect_error(&name, e)),
            }
        }
        let peer_limit = self.raw.then_some(u32::MAX);
        let shared = Shared::new(
            stream,
            shutdown,
            registration,
            name,
            self.raw,
            Some(server),
            peer_limit,
        );
        Ok(Connection::new(shared, limit, !self.raw))
    }

    /// What the backend needs to know to connect (blocking and async).
    pub(crate) fn connect_options(&self) -> sys::ConnectOptions {
        sys::ConnectOptions {
            message_pipe: self.message_pipe,
        }
    }

    /// The checked settings, for the async client.
    #[cfg(feature = "tokio")]
    pub(crate) fn settings(&self) -> Result<(u32, bool, Shutdown)> {
        Ok((
            message_limit(self.max_message_size)?,
            self.raw,
            self.shutdown.clone().unwrap_or_default(),
        ))
    }

    /// The client's trust policy, for the async client.
    #[cfg(feature = "tokio")]
    pub(crate) fn trust_policy(&self) -> &Trust {
        &self.trust
    }
}

pub(crate) const CLIENT_SHUT_DOWN: &str = "the client's shutdown handle was triggered";

/// The client's check of the server (see [`Trust`]): the server at the other end of a
/// fresh connection (`identity`, as the OS reports it) must be one that `trust` admits.
/// Returns its identity. A server whose identity cannot be read is trusted only under
/// [`Trust::Everyone`].
pub(crate) fn check_server(
    name: &Name,
    trust: &Trust,
    identity: io::Result<PeerIdentity>,
) -> Result<PeerIdentity> {
    let server = identity.unwrap_or_default();
    if sys::trusts(trust, &server)? {
        return Ok(server);
    }
    Err(Error::UntrustedServer {
        name: name.as_str().to_owned(),
        path: name.path().display().to_string(),
        server: sys::describe_server(&server),
        trusted: match trust {
            Trust::CurrentUser => format!("your own user and {}", sys::SYSTEM_USERS),
            Trust::Group => format!(
                "your own user, servers of your groups, and {}",
                sys::SYSTEM_USERS
            ),
            Trust::User(u) => format!("your own user, {u}, and {}", sys::SYSTEM_USERS),
            Trust::Everyone => "everyone".to_owned(),
        },
    })
}

pub(crate) fn short_hello() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::WriteZero,
        "could not send the handshake",
    ))
}

/// The waiting policy of `connect` and `connect_timeout`, shared by the blocking and the
/// async client: which failures are worth another attempt, and how long to pause first.
#[derive(Debug)]
pub(crate) struct Backoff {
    wait: Option<Duration>,
    deadline: Option<Instant>,
    next: Duration,
}

impl Backoff {
    /// `wait`: how long to wait for a server to appear (`None`: not at all).
    pub(crate) fn new(wait: Option<Duration>) -> Backoff {
        Backoff {
            wait,
            deadline: wait.map(|w| Instant::now() + w),
            next: Duration::from_millis(1),
        }
    }

    /// After a failed attempt: the pause before the next one, or the error to give up with.
    /// A missing or dead endpoint is retried only when waiting; a live server with a full
    /// accept queue always is.
    pub(crate) fn after_failure(&mut self, name: &Name, e: io::Error) -> Result<Duration> {
        let retry = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => self.deadline.is_some(),
            io::ErrorKind::WouldBlock => true,
            _ => false,
        };
        if !retry {
            return Err(connect_error(name, e));
        }
        let mut pause = self.next;
        if let Some(d) = self.deadline {
            let now = Instant::now();
            if now >= d {
                return Err(Error::TimedOut {
                    op: "connect",
                    after: self.wait.unwrap_or_default(),
                });
            }
            pause = pause.min(d - now);
        }
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Ok(pause)
    }
}

pub(crate) fn connect_error(name: &Name, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::NotFound {
            name: name.as_str().to_owned(),
            path: name.path().display().to_string(),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied(format!(
            "cannot connect to {}: {e}; the server's access policy does not admit your user",
            name.path().display()
        )),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}
