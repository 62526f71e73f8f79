//! Connecting to a name (blocking), and the waiting policy both APIs share.

use std::io;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::error::{Error, Operation, Result};
use crate::handshake;
use crate::sys::SysStream;
use crate::{sys, ClientOptions, IntoName, Name};

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
    ///
    /// # Errors
    ///
    /// See [`connect_with`](Client::connect_with).
    pub fn connect(name: impl IntoName) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new())
    }

    /// Connects with the default [`ClientOptions`], waiting up to `timeout` for a server to
    /// appear (see [`ClientOptions::wait`]).
    ///
    /// # Errors
    ///
    /// See [`connect_with`](Client::connect_with).
    pub fn connect_timeout(name: impl IntoName, timeout: Duration) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new().wait(timeout))
    }

    /// Connects with `options`. While a live server's accept queue is full it waits, as a
    /// blocking `connect(2)` would (the shutdown handle cancels the wait); while no server is
    /// there it waits only as long as [`ClientOptions::wait`] says.
    ///
    /// Before anything is sent, the server is checked against the client's
    /// [`Trust`](crate::Trust) policy. In framed mode this then sends the hello and returns
    /// without waiting for the server's reply: the first message can follow right behind it.
    /// A refusal by the server is reported by the first `recv`, by a `send` larger than 4096
    /// bytes (or one that finds the connection closed), or by [`Connection::close`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidConfig`], [`Error::NotFound`] (no server, and
    /// no wait or the wait expired: then [`Error::TimedOut`]), [`Error::UntrustedServer`],
    /// [`Error::PermissionDenied`] (the endpoint's permissions refuse this user),
    /// [`Error::Shutdown`], [`Error::Io`].
    pub fn connect_with(name: impl IntoName, options: &ClientOptions) -> Result<Connection> {
        let (side, connect, shutdown, wait) = options.prepare(name)?;
        let mut backoff = Backoff::new(wait);
        let stream = loop {
            if shutdown.is_shutdown() {
                return Err(Error::Shutdown);
            }
            match sys::Stream::connect(side.name.path(), &connect) {
                Ok(s) => break s,
                Err(e) => {
                    let pause = backoff.after_failure(&side.name, e)?;
                    if shutdown.sleep(pause) {
                        return Err(Error::Shutdown);
                    }
                }
            }
        };
        // A client that asks for shared memory hands its own over with the hello.
        let memory = (side.features & crate::frame::FEATURE_SHARED_MEMORY != 0)
            .then(|| crate::shm::client_memory(side.ring_size))
            .flatten();
        let mut shared = handshake::hello(&side, shutdown, stream, memory.as_ref())?;
        if let Some(memory) = memory {
            // ... and waits for the reply, which brings the server's.
            shared.shm =
                crate::shm::client_handover(&shared, memory, crate::DEFAULT_HANDSHAKE_TIMEOUT)?;
        }
        let offers_descriptors = shared.accepts_descriptors;
        let mut conn = Connection::new(shared, side.limit);
        if let Some(s) = side.wait_strategy {
            conn.set_wait_strategy(s);
        }
        if offers_descriptors {
            // So that `passes_descriptors` knows whether the server agreed.
            conn.settle_reply(Some(crate::DEFAULT_HANDSHAKE_TIMEOUT))?;
        }
        Ok(conn)
    }
}

/// The waiting policy of a connect, shared by the blocking and the async client: which
/// failures are worth another attempt, and how long to pause first.
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
                    op: Operation::Connect,
                    after: self.wait.unwrap_or_default(),
                });
            }
            pause = pause.min(d - now);
        }
        self.next = (self.next * 2).min(MAX_BACKOFF);
        Ok(pause)
    }
}

/// What a failed connect (or a failed first write) means.
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
        io::ErrorKind::InvalidInput => Error::InvalidConfig(e.to_string()),
        _ => Error::io(format!("cannot connect to {}", name.path().display()), e),
    }
}
