//! The async client.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connection::{AsyncShared, Connection};
use super::server::TokenCancel;
use crate::client::{check_server, connect_error, short_hello, Backoff, CLIENT_SHUT_DOWN};
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
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    pub async fn connect(name: impl IntoName) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new(), None).await
    }

    /// Connects, waiting up to `timeout` for a server to appear (see
    /// [`ClientOptions::connect_timeout`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    pub async fn connect_timeout(name: impl IntoName, timeout: Duration) -> Result<Connection> {
        Client::connect_with(name, &ClientOptions::new(), Some(timeout)).await
    }

    /// Connects with `options`, waiting up to `wait` for a server to appear (`None`: not at
    /// all). The options' shutdown handle cancels the wait.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the attempt; nothing is left behind.
    pub async fn connect_with(
        name: impl IntoName,
        options: &ClientOptions,
        wait: Option<Duration>,
    ) -> Result<Connection> {
        let name: Name = name.into_name()?;
        let (limit, raw, shutdown) = options.settings()?;
        let stream = connect_waiting(&name, &options.connect_options(), &shutdown, wait).await?;
        // Who is there, before a single byte goes out.
        let server = check_server(&name, options.trust_policy(), stream.peer())?;
        let stream = Arc::new(stream);
        let registration = shutdown
            .register(stream.clone())
            .map_err(|()| Error::Shutdown(CLIENT_SHUT_DOWN))?;
        if !raw {
            let hello = handshake::hello(limit);
            // A fresh socket's send buffer is empty: the 16 bytes go out at once.
            match stream.write_now(&hello) {
                Ok(n) if n == hello.len() => {}
                Ok(_) => return Err(short_hello()),
                Err(e) => return Err(connect_error(&name, e)),
            }
        }
        let shared = AsyncShared::new(
            stream,
            shutdown,
            registration,
            name,
            raw,
            Some(server),
            raw.then_some(u32::MAX),
        );
        Ok(Connection::new(shared, limit, !raw))
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
    let token = CancellationToken::new();
    let mut _registration = None;
    loop {
        if shutdown.is_shutdown() {
            return Err(Error::Shutdown(CLIENT_SHUT_DOWN));
        }
        let e = match aio::connect(name.path(), connect).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let pause = backoff.after_failure(name, e)?;
        if _registration.is_none() {
            // Only a client that waits needs to be woken by the handle.
            _registration = Some(
                shutdown
                    .register(Arc::new(TokenCancel(token.clone())))
                    .map_err(|()| Error::Shutdown(CLIENT_SHUT_DOWN))?,
            );
        }
        ::tokio::select! {
            _ = token.cancelled() => return Err(Error::Shutdown(CLIENT_SHUT_DOWN)),
            _ = ::tokio::time::sleep(pause) => {}
        }
    }
}
