//! Binding a name and accepting connections (blocking).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::{Error, Operation, Result};
use crate::handshake::{self, Policy};
use crate::shutdown::{Registration, Shutdown};
use crate::sys::{self, Cancel, SysListener};
use crate::{IntoName, Name, ServerOptions};

/// A bound name that accepts connections.
///
/// A server that keeps serving: every error from `accept` but [`Error::Shutdown`] concerns one
/// connection attempt or a passing condition (such as running out of descriptors), so the
/// loop goes on; only the shutdown ends it.
///
/// ```no_run
/// use std::time::Duration;
/// use pipette::{Error, Server};
///
/// let server = Server::bind("my-app")?;
/// loop {
///     let mut conn = match server.accept() {
///         Ok(conn) => conn,
///         Err(Error::Shutdown) => break,
///         Err(e) => {
///             // For example out of descriptors: say so, pause, and go on.
///             eprintln!("accept: {e}");
///             std::thread::sleep(Duration::from_millis(100));
///             continue;
///         }
///     };
///     std::thread::spawn(move || {
///         // A client that leaves ends only its own connection.
///         while let Ok(msg) = conn.recv() {
///             if conn.send(&msg).is_err() {
///                 break;
///             }
///         }
///     });
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
    ///
    /// # Errors
    ///
    /// See [`bind_with`](Server::bind_with).
    pub fn bind(name: impl IntoName) -> Result<Server> {
        Server::bind_with(name, &ServerOptions::new())
    }

    /// Binds `name` with `options` and starts listening.
    ///
    /// Never takes over a live server's name, and recovers the endpoint left behind by a
    /// server that died. With a plain name on Unix, the per-user directory is created (mode
    /// `0700`) and checked first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidConfig`] (for example a `max_message_size`
    /// below 4096, or a wider access policy for a plain name, which lives in a private
    /// directory on Unix), [`Error::AddrInUse`] (a live server has the name; it names the
    /// holder when that is another user), [`Error::PermissionDenied`] (the directory is not
    /// safe, or not ours), [`Error::Shutdown`] (the options' handle was triggered), and
    /// [`Error::Io`].
    pub fn bind_with(name: impl IntoName, options: &ServerOptions) -> Result<Server> {
        let (policy, listen, shutdown) = options.prepare(name)?;
        let listener = Arc::new(sys::Listener::bind(&policy.name, &listen)?);
        let registration = shutdown
            .register(listener.clone())
            .map_err(|()| Error::Shutdown)?;
        tracing::debug!(name = %policy.name, path = %policy.name.path().display(), "listening");
        Ok(Server {
            listener,
            shutdown,
            _registration: registration,
            policy,
        })
    }

    /// Waits for the next admitted connection.
    ///
    /// Peers that the access policy refuses, that do not speak the protocol, or that do not
    /// finish the handshake in time are turned away (with a reason in the handshake where
    /// possible, and a `tracing` event) and never returned.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the server's handle is shut down (by then the endpoint is
    /// released); [`Error::Io`] for a passing condition such as running out of descriptors
    /// (the server goes on working: pause and call `accept` again).
    pub fn accept(&self) -> Result<Connection> {
        self.accept_inner(None)
    }

    /// Like [`accept`](Server::accept), but fails with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Server::accept), and [`Error::TimedOut`].
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        self.accept_inner(Some(timeout))
    }

    /// Accepts a connection if one is ready now: `Ok(None)` when none is (connections whose
    /// hello is still on its way stay with the server). For event loops, with the server's
    /// readiness source (`AsFd` on Unix, `AsRawHandle` on Windows): it becomes ready when a
    /// connection may be ready to accept (a new one arrived, or one waiting for its hello sent
    /// more); then call `try_accept` until it returns `Ok(None)`. Readiness can be spurious (a
    /// peer that sent garbage is turned away instead), never missed.
    ///
    /// # Errors
    ///
    /// As [`accept`](Server::accept).
    pub fn try_accept(&self) -> Result<Option<Connection>> {
        match self.accept_inner(Some(Duration::ZERO)) {
            Ok(conn) => Ok(Some(conn)),
            Err(Error::TimedOut { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An iterator over [`accept`](Server::accept)ed connections that ends (returns `None`)
    /// when the server is shut down. Other errors are yielded, and the iterator goes on.
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
            let (stream, hello) = match self.listener.accept(left) {
                Ok(accepted) => accepted,
                Err(_) if self.shutdown.is_shutdown() => return Err(self.stopped()),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(Error::TimedOut {
                        op: Operation::Accept,
                        after: timeout.unwrap_or_default(),
                    })
                }
                Err(e) => return Err(Error::io("accept failed", e)),
            };
            if let Some(shared) =
                handshake::admit(&self.policy, &self.shutdown, stream, hello.bytes())
            {
                let mut conn = Connection::new(shared, self.policy.limit);
                if let Some(s) = self.policy.wait_strategy {
                    conn.set_wait_strategy(s);
                }
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
        Error::Shutdown
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
            Err(Error::Shutdown) => None,
            other => Some(other),
        }
    }
}

/// The server's readiness source for event loops (see [`Server::try_accept`]): an `epoll(7)`
/// descriptor watching the listening socket and the connections waiting for their hello. It
/// is owned by the server and stays valid for as long as the server lives (a shutdown never
/// closes it; it makes it readable, and `try_accept` then reports [`Error::Shutdown`]).
#[cfg(unix)]
impl std::os::fd::AsFd for Server {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.listener.ready_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for Server {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(self))
    }
}

/// The server's readiness source for event loops (see [`Server::try_accept`]): a
/// manual-reset event that is signalled while a connection is ready to accept (or the server
/// was shut down). Owned by the server and valid for as long as it lives.
#[cfg(windows)]
impl std::os::windows::io::AsRawHandle for Server {
    fn as_raw_handle(&self) -> std::os::windows::io::RawHandle {
        self.listener.ready_event()
    }
}
