//! The async server.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use ::tokio::sync::Mutex;
use ::tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connection::{AsyncShared, Connection};
use crate::error::{Error, Result};
use crate::frame::{self, HELLO_LEN};
use crate::handshake::{Admission, Policy};
use crate::shutdown::{Registration, Shutdown};
use crate::sys::{aio, Cancel};
use crate::{IntoName, Name, ServerOptions};

const SERVER_SHUT_DOWN: &str = "the server was shut down";

/// Lets a [`Shutdown`] handle wake tasks that wait on something other than a socket.
#[derive(Debug)]
pub(crate) struct TokenCancel(pub(crate) CancellationToken);

impl Cancel for TokenCancel {
    fn cancel(&self) {
        self.0.cancel();
    }
}

/// An async server; the async twin of [`pipette::Server`](crate::Server), with the same
/// options, checks and wire bytes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pipette::Result<()> {
/// use pipette::tokio::Server;
///
/// let name = format!("doc-async-server-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let stop = server.shutdown_handle();
/// let task = tokio::spawn(async move {
///     while let Ok(mut conn) = server.accept().await {   // Err(Shutdown) ends the loop
///         tokio::spawn(async move {
///             while let Ok(msg) = conn.recv().await {
///                 if conn.send(&msg).await.is_err() { break; }
///             }
///         });
///     }
/// });
/// stop.shutdown();
/// task.await.unwrap();
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: Arc<aio::Listener>,
    policy: Policy,
    handshake_timeout: Duration,
    shutdown: Shutdown,
    token: CancellationToken,
    _registrations: [Registration; 2],
    /// Connections whose hello has not arrived yet, each waiting in its own task so that a
    /// slow peer never delays another. Kept in the server, not in an `accept` future, so that
    /// a cancelled `accept` loses none of them.
    handshakes: Mutex<JoinSet<Option<Connection>>>,
}

impl Server {
    /// Binds `name` with the default [`ServerOptions`]. Must be called within a tokio runtime.
    pub fn bind(name: impl IntoName) -> Result<Server> {
        Server::bind_with(name, &ServerOptions::new())
    }

    /// Binds `name` with `options`, exactly as [`ServerOptions::bind`] does for the blocking
    /// server. Must be called within a tokio runtime.
    pub fn bind_with(name: impl IntoName, options: &ServerOptions) -> Result<Server> {
        let (policy, listen, shutdown) = options.prepare(name)?;
        let listener = Arc::new(aio::Listener::bind(&policy.name, &listen)?);
        let token = CancellationToken::new();
        let shut = |()| Error::Shutdown("the shutdown handle was triggered while binding");
        let registrations = [
            shutdown.register(listener.clone()).map_err(shut)?,
            shutdown
                .register(Arc::new(TokenCancel(token.clone())))
                .map_err(shut)?,
        ];
        tracing::debug!(name = %policy.name, path = %policy.name.path().display(), "listening (async)");
        Ok(Server {
            listener,
            policy,
            handshake_timeout: listen.handshake_timeout,
            shutdown,
            token,
            _registrations: registrations,
            handshakes: Mutex::new(JoinSet::new()),
        })
    }

    /// Waits for the next admitted connection; see [`pipette::Server::accept`](crate::Server::accept).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a connection that arrived while the future was pending is kept (its
    /// handshake goes on in the server) and returned by a later `accept`. Concurrent calls
    /// take turns.
    pub async fn accept(&self) -> Result<Connection> {
        let mut handshakes = self.handshakes.lock().await;
        loop {
            if self.shutdown.is_shutdown() {
                return Err(self.stopped());
            }
            ::tokio::select! {
                biased;
                _ = self.token.cancelled() => return Err(self.stopped()),
                Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return Ok(conn);
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, prefix, have)) => {
                        // Usually the hello is already there: finish at once, without a task.
                        match self.try_handshake_now(stream, prefix, have) {
                            Ok(conn) => return Ok(conn),
                            Err(Some(waiting)) => {
                                let (policy, shutdown, t) = (self.policy.clone(), self.shutdown.clone(), self.handshake_timeout);
                                handshakes.spawn(handshake(*waiting, policy, shutdown, t));
                            }
                            Err(None) => {}
                        }
                    }
                    Err(_) if self.shutdown.is_shutdown() => return Err(self.stopped()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
                    Err(e) => return Err(Error::Io(e)),
                },
            }
        }
    }

    /// Like [`accept`](Server::accept), failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as `accept`.
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        match ::tokio::time::timeout(timeout, self.accept()).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimedOut {
                op: "accept",
                after: timeout,
            }),
        }
    }

    /// The handle that shuts this server and all its connections down.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The name this server is bound to.
    pub fn name(&self) -> &Name {
        &self.policy.name
    }

    /// The error `accept` reports once the server is shut down, after making sure that the
    /// endpoint is released (see the blocking server's `stopped`).
    fn stopped(&self) -> Error {
        self.listener.cancel();
        self.listener.finish();
        Error::Shutdown(SERVER_SHUT_DOWN)
    }

    /// Finishes the handshake if the hello has already arrived; hands the stream (and what
    /// arrived of the hello) back when the rest has to be waited for, and `Err(None)` when
    /// the peer was turned away.
    fn try_handshake_now(
        &self,
        stream: aio::Stream,
        mut prefix: [u8; HELLO_LEN],
        mut have: usize,
    ) -> std::result::Result<Connection, Option<Box<Waiting>>> {
        let need = self.policy.prefix_len();
        while have < need && frame::could_be_hello(&prefix[..have]) {
            match stream.read_now(&mut prefix[have..need]) {
                Ok(0) => return Err(None),
                Ok(n) => {
                    have += n;
                    if !frame::could_be_hello(&prefix[..have]) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Boxed: rare, and the Windows stream is large.
                    return Err(Some(Box::new(Waiting {
                        stream,
                        prefix,
                        have,
                    })));
                }
                Err(_) => return Err(None),
            }
        }
        finish(stream, &prefix[..have], &self.policy, &self.shutdown).ok_or(None)
    }
}

/// A new connection whose hello is still on its way.
pub(crate) struct Waiting {
    stream: aio::Stream,
    prefix: [u8; HELLO_LEN],
    have: usize,
}

/// Waits (bounded) for the rest of a peer's hello, then admits or refuses it.
async fn handshake(
    waiting: Waiting,
    policy: Policy,
    shutdown: Shutdown,
    timeout: Duration,
) -> Option<Connection> {
    let need = policy.prefix_len();
    let Waiting {
        stream,
        mut prefix,
        mut have,
    } = waiting;
    let read = async {
        while have < need {
            poll_fn(|cx| stream.poll_read_ready(cx)).await?;
            match stream.try_read(&mut prefix[have..need]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    have += n;
                    if !frame::could_be_hello(&prefix[..have]) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok::<(), io::Error>(())
    };
    match ::tokio::time::timeout(timeout, read).await {
        Err(_) => {
            tracing::warn!(
                received = have,
                expected = need,
                "dropping a connection that did not complete the handshake in time"
            );
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a peer left during the handshake");
            None
        }
        Ok(Ok(())) => finish(stream, &prefix[..have], &policy, &shutdown),
    }
}

/// Judges the peer, answers it, and builds the connection.
fn finish(
    stream: aio::Stream,
    prefix: &[u8],
    policy: &Policy,
    shutdown: &Shutdown,
) -> Option<Connection> {
    let peer = stream.peer().unwrap_or_default();
    let (reply, peer_limit) = match policy.admit(&peer, prefix) {
        Admission::Refuse { reply } => {
            if let Some(r) = reply {
                let _ = stream.write_now(&r);
            }
            return None;
        }
        Admission::Accept { reply, peer_limit } => (reply, peer_limit),
    };
    let stream = Arc::new(stream);
    let Ok(registration) = shutdown.register(stream.clone()) else {
        if let Some(r) = policy.shutting_down() {
            let _ = stream.write_now(&r);
        }
        return None;
    };
    if let Some(reply) = reply {
        // A fresh socket's send buffer is empty: the 16 bytes go out at once.
        match stream.write_now(&reply) {
            Ok(n) if n == reply.len() => {}
            _ => return None,
        }
    }
    tracing::debug!(name = %policy.name, pid = ?peer.pid(), uid = ?peer.uid(), "accepted a connection (async)");
    let shared = AsyncShared::new(
        stream,
        shutdown.clone(),
        registration,
        policy.name.clone(),
        policy.raw,
        Some(peer),
        Some(peer_limit),
    );
    Some(Connection::new(shared, policy.limit, false))
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.policy.name)
            .field("access", &self.policy.access)
            .field("raw", &self.policy.raw)
            .finish()
    }
}
