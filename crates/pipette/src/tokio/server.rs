//! The async server.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ::tokio::sync::Mutex;
use ::tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use crate::error::{Error, Operation, Result};
use crate::handshake::{self, Policy};
use crate::proto::HelloReader;
use crate::shutdown::{Registration, Shutdown};
use crate::sys::{aio, AsyncStream, Cancel};
use crate::{IntoName, Name, ServerOptions};

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
/// A server that keeps serving: every error from `accept` but [`Error::Shutdown`] concerns one
/// connection attempt or a passing condition (such as running out of descriptors), so the
/// loop goes on; only the shutdown ends it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pipette::Result<()> {
/// use std::time::Duration;
/// use pipette::Error;
/// use pipette::tokio::Server;
///
/// let name = format!("doc-async-server-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let stop = server.shutdown_handle();
/// let task = tokio::spawn(async move {
///     loop {
///         let mut conn = match server.accept().await {
///             Ok(conn) => conn,
///             Err(Error::Shutdown) => break,
///             Err(e) => {
///                 // For example out of descriptors: say so, pause, and go on.
///                 eprintln!("accept: {e}");
///                 tokio::time::sleep(Duration::from_millis(100)).await;
///                 continue;
///             }
///         };
///         tokio::spawn(async move {
///             // A client that leaves ends only its own connection.
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
    /// Binds `name` with the default [`ServerOptions`].
    ///
    /// # Errors
    ///
    /// As the blocking [`Server::bind_with`](crate::Server::bind_with).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the listener registers with its reactor).
    pub fn bind(name: impl IntoName) -> Result<Server> {
        Server::bind_with(name, &ServerOptions::new())
    }

    /// Binds `name` with `options`, exactly as the blocking
    /// [`Server::bind_with`](crate::Server::bind_with) does.
    ///
    /// # Errors
    ///
    /// As the blocking [`Server::bind_with`](crate::Server::bind_with); also
    /// [`Error::InvalidConfig`] for a [`WaitStrategy`](crate::WaitStrategy) other than
    /// `Block`, and on Windows for `message_pipe`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the listener registers with its reactor).
    pub fn bind_with(name: impl IntoName, options: &ServerOptions) -> Result<Server> {
        let (policy, listen, shutdown) = options.prepare(name)?;
        crate::tokio::refuse_blocking_only(policy.wait_strategy)?;
        let listener = Arc::new(aio::Listener::bind(&policy.name, &listen)?);
        let token = CancellationToken::new();
        let registrations = [
            shutdown
                .register(listener.clone())
                .map_err(|()| Error::Shutdown)?,
            shutdown
                .register(Arc::new(TokenCancel(token.clone())))
                .map_err(|()| Error::Shutdown)?,
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

    /// Waits for the next admitted connection; see
    /// [`pipette::Server::accept`](crate::Server::accept).
    ///
    /// # Errors
    ///
    /// As the blocking [`Server::accept`](crate::Server::accept).
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
                    Ok((stream, hello)) => {
                        // Usually the hello is already there: finish at once, without a task.
                        match self.try_handshake_now(stream, hello) {
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
                    Err(e) => return Err(Error::io("accept failed", e)),
                },
            }
        }
    }

    /// Like [`accept`](Server::accept), failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`accept`](Server::accept), and [`Error::TimedOut`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as `accept`.
    pub async fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        match ::tokio::time::timeout(timeout, self.accept()).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimedOut {
                op: Operation::Accept,
                after: timeout,
            }),
        }
    }

    /// The accepted connections as a [`futures_core::Stream`], which ends (`None`) when the
    /// server is shut down; other errors are yielded and the stream goes on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use futures::StreamExt;
    /// use pipette::tokio::Server;
    ///
    /// let name = format!("doc-async-incoming-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// server.shutdown_handle().shutdown();
    /// let mut incoming = server.incoming();
    /// assert!(incoming.next().await.is_none(), "ended by the shutdown");
    /// # Ok(())
    /// # }
    /// ```
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            server: self,
            pending: None,
            done: false,
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

    /// The largest message this server accepts.
    pub fn max_message_size(&self) -> usize {
        self.policy.limit as usize
    }

    /// The error `accept` reports once the server is shut down, after making sure that the
    /// endpoint is released (see the blocking server's `stopped`).
    fn stopped(&self) -> Error {
        self.listener.cancel();
        self.listener.finish();
        Error::Shutdown
    }

    /// Finishes the handshake if the hello has already arrived; hands the stream (and what
    /// arrived of the hello) back when the rest has to be waited for, and `Err(None)` when
    /// the peer was turned away.
    fn try_handshake_now(
        &self,
        stream: aio::Stream,
        mut hello: HelloReader,
    ) -> std::result::Result<Connection, Option<Box<Waiting>>> {
        while !hello.is_done() {
            match stream.read_now(hello.spare()) {
                Ok(0) => return Err(None),
                Ok(n) => {
                    hello.filled(n);
                }
                // Boxed: rare, and the Windows stream is large.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(Some(Box::new(Waiting { stream, hello })))
                }
                Err(_) => return Err(None),
            }
        }
        handshake::admit(&self.policy, &self.shutdown, stream, hello.bytes())
            .and_then(|shared| Connection::admitted(shared, self.policy.limit))
            .ok_or(None)
    }
}

/// A new connection whose hello is still on its way.
pub(crate) struct Waiting {
    stream: aio::Stream,
    hello: HelloReader,
}

/// Waits (bounded) for the rest of a peer's hello, then admits or refuses it.
async fn handshake(
    waiting: Waiting,
    policy: Policy,
    shutdown: Shutdown,
    timeout: Duration,
) -> Option<Connection> {
    let Waiting { stream, mut hello } = waiting;
    let read = async {
        while !hello.is_done() {
            poll_fn(|cx| stream.poll_read_ready(cx)).await?;
            match stream.try_read(hello.spare()) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    hello.filled(n);
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
                received = hello.bytes().len(),
                missing = hello.missing(),
                "dropping a connection that did not complete the handshake in time"
            );
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a peer left during the handshake");
            None
        }
        Ok(Ok(())) => handshake::admit(&policy, &shutdown, stream, hello.bytes())
            .and_then(|shared| Connection::admitted(shared, policy.limit)),
    }
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

type AcceptFuture<'a> = Pin<Box<dyn Future<Output = Result<Connection>> + Send + 'a>>;

/// A server's connections as a stream; see [`Server::incoming`].
pub struct Incoming<'a> {
    server: &'a Server,
    pending: Option<AcceptFuture<'a>>,
    done: bool,
}

impl futures_core::Stream for Incoming<'_> {
    type Item = Result<Connection>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Connection>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let server = self.server;
        let fut = self
            .pending
            .get_or_insert_with(|| Box::pin(server.accept()));
        let r = std::task::ready!(fut.as_mut().poll(cx));
        self.pending = None;
        match r {
            Err(Error::Shutdown) => {
                self.done = true;
                Poll::Ready(None)
            }
            other => Poll::Ready(Some(other)),
        }
    }
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("server", &self.server.policy.name)
            .finish()
    }
}
