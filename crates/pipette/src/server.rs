//! Binding a name and accepting connections.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::{message_limit, Connection};
use crate::error::{Error, Result};
use crate::frame;
use crate::handshake::{Admission, Policy};
use crate::shared::Shared;
use crate::shutdown::{Registration, Shutdown};
use crate::sys::{self, Cancel, ListenOptions};
use crate::{Access, IntoName, Name};

/// The default largest message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How long a new connection may take to send its hello before it is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to bind a [`Server`]: limits, access policy, mode.
///
/// ```
/// use pipette::{Access, ServerOptions};
///
/// let name = format!("doc-options-{}", std::process::id());
/// let server = ServerOptions::new()
///     .max_message_size(1 << 20)
///     .access(Access::CurrentUser)
///     .bind(&name)?;
/// assert_eq!(server.name().as_str(), name);
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    max_message_size: usize,
    access: Access,
    raw: bool,
    message_pipe: bool,
    handshake_timeout: Duration,
    shutdown: Option<Shutdown>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::new()
    }
}

impl ServerOptions {
    /// The defaults: framed mode, 16 MiB messages, [`Access::CurrentUser`].
    pub fn new() -> ServerOptions {
        ServerOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            access: Access::CurrentUser,
            raw: false,
            message_pipe: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown: None,
        }
    }

    /// The largest message payload this server accepts (default 16 MiB). At least 4096
    /// (the protocol minimum); values above `u32::MAX` are capped to it. A client sending
    /// more gets [`Error::MessageTooLarge`] before anything is written.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Which users may connect (default [`Access::CurrentUser`]).
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Raw mode: no handshake and no framing; every connection is a plain byte stream, for
    /// foreign peers such as `socat`, `nc -U` or Python's `socket`. Default off.
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Windows: create message-type named pipes (`PIPE_TYPE_MESSAGE |
    /// PIPE_READMODE_MESSAGE`) instead of byte pipes, for peers that exchange pipe messages,
    /// such as .NET's `NamedPipeClientStream` with `PipeTransmissionMode.Message`. Default
    /// off. **Unix: accepted and has no effect** (sockets have no message boundaries), so the
    /// same code builds everywhere.
    ///
    /// Meant for [`raw`](ServerOptions::raw) mode: there each `send` is one pipe message and
    /// each `recv` returns exactly one whole pipe message, however large (the message
    /// boundaries are the peer's). An empty message cannot be sent (nothing is written), and
    /// an empty message from the peer reads as end-of-stream. A receive timeout that expires
    /// while a message is still arriving splits it (the rest comes with the next `recv`).
    ///
    /// In framed mode it is allowed and changes nothing visible: the pipette protocol runs
    /// unchanged on top (each write is one pipe message). Clients must then not mix it up the
    /// other way: a message-mode client cannot open a byte-type pipe, while a byte-mode
    /// client can read a message pipe as a byte stream.
    ///
    /// The blocking API only, for now: on Windows, `pipette::tokio` refuses it at bind
    /// with an [`Unsupported`](std::io::ErrorKind::Unsupported) I/O error.
    ///
    /// ```
    /// use pipette::ServerOptions;
    ///
    /// let name = format!("doc-message-pipe-{}", std::process::id());
    /// let server = ServerOptions::new().raw(true).message_pipe(true).bind(&name)?;
    /// # drop(server);
    /// # Ok::<(), pipette::Error>(())
    /// ```
    pub fn message_pipe(mut self, on: bool) -> Self {
        self.message_pipe = on;
        self
    }

    /// How long a new connection may take to send its hello (default 5 s). A slow or silent
    /// peer never delays others; it only holds one slot until this expires.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Ties the server (and every connection it accepts) to an existing shutdown handle, for
    /// example one shared with other servers and clients of the same program.
    pub fn shutdown(mut self, handle: &Shutdown) -> Self {
        self.shutdown = Some(handle.clone());
        self
    }

    /// Binds the name and starts listening.
    ///
    /// Fails with [`Error::AddrInUse`] when a live server has the name (its endpoint is never
    /// touched), and recovers the endpoint left behind by a server that died. With a plain
    /// name, the per-user directory is created (mode `0700`) and checked first.
    pub fn bind(&self, name: impl IntoName) -> Result<Server> {
        let (policy, listen, shutdown) = self.prepare(name)?;
        let listener = Arc::new(sys::Listener::bind(&policy.name, &listen)?);
        let registration = shutdown
            .register(listener.clone())
            .map_err(|()| Error::Shutdown("the shutdown handle was triggered while binding"))?;
        tracing::debug!(name = %policy.name, path = %policy.name.path().display(), "listening");
        Ok(Server {
            listener,
            shutdown,
            _registration: registration,
            policy,
        })
    }

    /// Everything binding needs, checked: shared by the blocking and the async server.
    pub(crate) fn prepare(&self, name: impl IntoName) -> Result<(Policy, ListenOptions, Shutdown)> {
        let name = name.into_name()?;
        let limit = message_limit(self.max_message_size)?;
        let shutdown = self.shutdown.clone().unwrap_or_default();
        if shutdown.is_shutdown() {
            return Err(Error::Shutdown("the shutdown handle was already triggered"));
        }
        let policy = Policy {
            name,
            access: self.access,
            raw: self.raw,
            limit,
            owner: sys::Owner::current(),
        };
        let listen = ListenOptions {
            access: self.access,
            prefix_len: policy.prefix_len(),
            prefix_ok: frame::could_be_hello,
            handshake_timeout: self.handshake_timeout,
            private_dir: policy.name.is_plain(),
            message_pipe: self.message_pipe,
        };
        Ok((policy, listen, shutdown))
    }
}

/// A bound name that accepts connections.
///
/// ```no_run
/// use pipette::Server;
///
/// let server = Server::bind("my-app")?;
/// for conn in server.incoming() {
///     let mut conn = conn?;
///     let msg = conn.recv()?;
///     conn.send(&msg)?;
/// }
/// # Ok::<(), pipette::Error>(())
/// ```
///
/// Dropping the server (or calling [`Shutdown::shutdown`] on its handle) removes its
/// endpoint, if it is still the one this server created.
pub struct Server {
    listener: Arc<sys::Listener>,
    shutdown: Shutdown,
    _registration: Registration,
    policy: Policy,
}

impl Server {
    /// Binds `name` with the default [`ServerOptions`].
    pub fn bind(name: impl IntoName) -> Result<Server> {
        ServerOptions::new().bind(name)
    }

    /// Waits for the next admitted connection.
    ///
    /// Peers that the access policy refuses, that do not speak the protocol, or that do not
    /// finish the handshake in time are turned away (with a reason in the handshake where
    /// possible, and a `tracing` event) and never returned. Returns [`Error::Shutdown`] once
    /// the server's handle is shut down.
    pub fn accept(&self) -> Result<Connection> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Server::accept), but fails with [`Error::TimedOut`] after `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_inner(Some(timeout))
    }

    /// An iterator over [`accept`](Server::accept)ed connections that ends (returns `None`)
    /// when the server is shut down.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { server: self }
    }

    /// The handle that shuts this server and all its connections down.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The name this server is bound to.
    pub fn name(&self) -> &Name {
        &self.policy.name
    }

    /// The largest message this server accepts.
    pub fn max_message_size(&self) -> usize {
        self.policy.limit as usize
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Connection> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.shutdown.is_shutdown() {
                return Err(self.stopped());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (stream, prefix, got) = match self.listener.accept(left) {
                Ok(accepted) => accepted,
                Err(_) if self.shutdown.is_shutdown() => return Err(self.stopped()),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::TimedOut {
                        op: "accept",
                        after: timeout.unwrap_or_default(),
                    })
                }
                Err(e) => return Err(Error::Io(e)),
            };
            if let Some(conn) = self.admit(stream, &prefix[..got]) {
                return Ok(conn);
            }
        }
    }

    /// The error `accept` reports once the server is shut down. The endpoint is released
    /// first (or, when `Shutdown::shutdown` is releasing it on another thread right now,
    /// that release is waited for): when `accept` returns `Shutdown`, the name is free.
    fn stopped(&self) -> Error {
        self.listener.cancel();
        self.listener.finish();
        Error::Shutdown("the server was shut down")
    }

    /// Checks a new peer and completes its handshake; `None` when it was turned away.
    fn admit(&self, stream: sys::Stream, prefix: &[u8]) -> Option<Connection> {
        let peer = stream.peer().unwrap_or_default();
        let (reply, peer_limit) = match self.policy.admit(&peer, prefix) {
            Admission::Refuse { reply } => {
                if let Some(r) = reply {
                    let _ = stream.write(&r);
                }
                return None;
            }
            Admission::Accept { reply, peer_limit } => (reply, peer_limit),
        };
        let stream = Arc::new(stream);
        let Ok(registration) = self.shutdown.register(stream.clone()) else {
            if let Some(r) = self.policy.shutting_down() {
                let _ = stream.write(&r);
            }
            return None;
        };
        if let Some(reply) = reply {
            // A fresh socket's send buffer is empty, so these 16 bytes go out in one write.
            if let Err(e) = stream.write(&reply) {
                tracing::debug!(error = %e, "a peer left during the handshake");
                return None;
            }
        }
        tracing::debug!(name = %self.policy.name, pid = ?peer.pid(), uid = ?peer.uid(), "accepted a connection");
        let shared = Shared::new(
            stream,
            self.shutdown.clone(),
            registration,
            self.policy.name.clone(),
            self.policy.raw,
            Some(peer),
            Some(peer_limit),
        );
        Some(Connection::new(shared, self.policy.limit, false))
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.policy.name)
            .field("access", &self.policy.access)
            .field("raw", &self.policy.raw)
            .field("max_message_size", &self.policy.limit)
            .finish()
    }
}

/// Iterator over a server's connections; see [`Server::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    server: &'a Server,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Connection>;

    fn next(&mut self) -> Option<Result<Connection>> {
        match self.server.accept() {
            Err(Error::Shutdown(_)) => None,
            other => Some(other),
        }
    }
}
