//! Binding a name and accepting connections.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::{message_limit, Connection, Shared};
use crate::error::{Error, Result};
use crate::frame::{self, Hello, Reply, Status, HELLO_LEN};
use crate::shutdown::{Registration, Shutdown};
use crate::sys::{self, ListenOptions};
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
        let name = name.into_name()?;
        let limit = message_limit(self.max_message_size)?;
        let shutdown = self.shutdown.clone().unwrap_or_default();
        if shutdown.is_shutdown() {
            return Err(Error::Shutdown("the shutdown handle was already triggered"));
        }
        let listen = ListenOptions {
            access: self.access,
            prefix_len: if self.raw { 0 } else { HELLO_LEN },
            prefix_ok: frame::could_be_hello,
            handshake_timeout: self.handshake_timeout,
            private_dir: name.is_plain(),
        };
        let listener = Arc::new(sys::Listener::bind(&name, &listen)?);
        let registration = shutdown
            .register(listener.clone())
            .map_err(|()| Error::Shutdown("the shutdown handle was triggered while binding"))?;
        tracing::debug!(name = %name, path = %name.path().display(), "listening");
        Ok(Server {
            listener,
            shutdown,
            _registration: registration,
            name,
            limit,
            access: self.access,
            raw: self.raw,
        })
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
    name: Name,
    limit: u32,
    access: Access,
    raw: bool,
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
        &self.name
    }

    /// The largest message this server accepts.
    pub fn max_message_size(&self) -> usize {
        self.limit as usize
    }

    fn accept_inner(&self, timeout: Option<Duration>) -> Result<Connection> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.shutdown.is_shutdown() {
                return Err(Error::Shutdown("the server was shut down"));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (stream, prefix, got) = match self.listener.accept(left) {
                Ok(accepted) => accepted,
                Err(_) if self.shutdown.is_shutdown() => {
                    return Err(Error::Shutdown("the server was shut down"))
                }
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

    /// Checks a new peer and completes its handshake; `None` when it was turned away.
    fn admit(&self, stream: sys::Stream, prefix: &[u8]) -> Option<Connection> {
        let refuse = |stream: &sys::Stream, status: Status| {
            if !self.raw {
                let _ = stream.write(&Reply::refuse(status).encode());
            }
        };
        let peer = stream.peer().unwrap_or_default();
        if !sys::admits(self.access, &peer) {
            tracing::warn!(
                name = %self.name,
                pid = ?peer.pid(), uid = ?peer.uid(),
                access = self.access.as_str(),
                "refused a peer that the access policy does not admit"
            );
            refuse(&stream, Status::AccessDenied);
            return None;
        }
        let peer_limit = if self.raw {
            u32::MAX
        } else {
            match Hello::decode_prefix(prefix) {
                Err(e) => {
                    tracing::warn!(
                        name = %self.name, pid = ?peer.pid(),
                        "protocol error: a peer that does not speak the pipette protocol connected ({e}); if it is a raw byte-stream client, run the server in raw mode"
                    );
                    refuse(&stream, Status::BadHello);
                    return None;
                }
                Ok(h) if frame::negotiate(h.version).is_none() => {
                    refuse(&stream, Status::UnsupportedVersion);
                    return None;
                }
                Ok(h) => h.max_message_size,
            }
        };
        let stream = Arc::new(stream);
        let Ok(registration) = self.shutdown.register(stream.clone()) else {
            refuse(&stream, Status::ShuttingDown);
            return None;
        };
        if !self.raw {
            let reply = Reply::accept(frame::VERSION, self.limit).encode();
            // A fresh socket's send buffer is empty, so these 16 bytes go out in one write.
            if let Err(e) = stream.write(&reply) {
                tracing::debug!(error = %e, "a peer left during the handshake");
                return None;
            }
        }
        tracing::debug!(name = %self.name, pid = ?peer.pid(), uid = ?peer.uid(), "accepted a connection");
        let shared = Shared::new(
            stream,
            self.shutdown.clone(),
            registration,
            self.name.clone(),
            self.raw,
            Some(peer),
            Some(peer_limit),
        );
        Some(Connection::new(shared, self.limit, false))
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .field("access", &self.access)
            .field("raw", &self.raw)
            .field("max_message_size", &self.limit)
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
