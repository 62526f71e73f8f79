//! The async client.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::server::TokenCancel;
use crate::client::Backoff;
use crate::error::{Error, Result};
use crate::handshake;
use crate::sys::{self, aio};
use crate::{ClientOptions, IntoName, Name, Shutdown};

/// Connects to servers by name, asynchronously; the async twin of
/// [`pipette::Client`](crate::Client). Blocking and async peers interoperate: the bytes on
/// the wire are the same.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pipette::Result<()> {
/// use std::time::Duration;
/// use pipette::tokio::{Client, Server};
///
/// let name = format!("doc-async-client-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let mut client = Client::connect_timeout(&name, Duration::from_secs(5)).await?;
/// client.send(b"hello").await?;
/// assert_eq!(&server.accept().await?.recv().await?[..], b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// Connects; fails at once with [`Error::NotFound`] when no server is listening.
    ///
    /// # Errors
    ///
    /// As the blocking [`Client::connect_with`](crate::Client::connect_with).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    pub async fn connect(name: impl IntoName) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new()).await
    }

    /// Connects, waiting up to `timeout` for a server to appear (see
    /// [`ClientOptions::wait`]).
    ///
    /// # Errors
    ///
    /// As the blocking [`Client::connect_with`](crate::Client::connect_with).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    pub async fn connect_timeout(name: impl IntoName, timeout: Duration) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new().wait(timeout)).await
    }

    /// Connects with `options`, exactly as the blocking
    /// [`Client::connect_with`](crate::Client::connect_with) does. The options' shutdown
    /// handle cancels a wait.
    ///
    /// # Errors
    ///
    /// As the blocking [`Client::connect_with`](crate::Client::connect_with); also
    /// [`Error::InvalidConfig`] for a [`WaitStrategy`](crate::WaitStrategy) other than
    /// `Block`, and on Windows for `message_pipe`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the stream registers with its reactor).
    pub async fn connect_with(name: impl IntoName, options: &ClientOptions) -> Result<Connection> {
        let (side, connect, shutdown, wait) = options.prepare(name)?;
        crate::tokio::refuse_blocking_only(side.wait_strategy)?;
        let stream = connect_waiting(&side.name, &connect, &shutdown, wait).await?;
        // A client that asks for shared memory hands its own over with the hello, and
        // reads the reply (which brings the server's) at once, as the blocking client does.
        let memory = (side.features & crate::frame::FEATURE_SHARED_MEMORY != 0)
            .then(|| crate::shm::client_memory(side.ring_size))
            .flatten();
        let mut shared = handshake::hello(&side, shutdown, stream, memory.as_ref())?;
        if let Some(memory) = memory {
            shared.shm = crate::shm::client_handover_async(
                &shared,
                memory,
                crate::DEFAULT_HANDSHAKE_TIMEOUT,
            )
            .await?;
        }
        let offers_descriptors = shared.accepts_descriptors;
        let mut conn = Connection::new(shared, side.limit)
            .map_err(|e| Error::io("cannot wait for the shared memory on the runtime", e))?;
        if offers_descriptors {
            // So that `passes_descriptors` knows whether the server agreed.
            conn.settle_reply(crate::DEFAULT_HANDSHAKE_TIMEOUT).await?;
        }
        Ok(conn)
    }
}

/// The connect loop: the same policy as the blocking client ([`Backoff`]), with async pauses
/// that the shutdown handle cuts short.
async fn connect_waiting(
    name: &Name,
    connect: &sys::ConnectOptions,
    shutdown: &Shutdown,
    wait: Option<Duration>,
) -> Result<aio::Stream> {
    let mut backoff = Backoff::new(wait);
    // Only a client that waits needs to be woken by the handle: the token and its
    // registration are made at the first pause.
    let mut waking = None;
    loop {
        if shutdown.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let e = match aio::connect(name.path(), connect).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let pause = backoff.after_failure(name, e)?;
        let (token, _registration) = match &mut waking {
            Some(w) => w,
            None => {
                let token = CancellationToken::new();
                let registration = shutdown
                    .register(Arc::new(TokenCancel(token.clone())))
                    .map_err(|()| Error::Shutdown)?;
                waking.insert((token, registration))
            }
        };
        ::tokio::select! {
            _ = token.cancelled() => return Err(Error::Shutdown),
            _ = ::tokio::time::sleep(pause) => {}
        }
    }
}
