//! The async API, on tokio (cargo feature `tokio`): the same names, meaning and wire bytes as
//! the blocking API, so a blocking client can talk to an async server and the other way
//! round.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pipette::Result<()> {
//! use std::time::Duration;
//! use pipette::tokio::{Client, Server};
//!
//! # let name = format!("doc-async-{}", std::process::id());
//! # let name = name.as_str();
//! // let name = "my-app";
//! let server = Server::bind(name)?;
//! let stop = server.shutdown_handle();
//! let echo = tokio::spawn(async move {
//!     while let Ok(mut conn) = server.accept().await {   // ends with Err(Shutdown)
//!         tokio::spawn(async move {
//!             while let Ok(msg) = conn.recv().await {
//!                 if conn.send(&msg).await.is_err() { break; }
//!             }
//!         });
//!     }
//! });
//!
//! let mut client = Client::connect_timeout(name, Duration::from_secs(5)).await?;
//! client.send(b"hello").await?;
//! assert_eq!(&client.recv_timeout(Duration::from_secs(5)).await?[..], b"hello");
//!
//! stop.shutdown();            // the same Shutdown handle as the blocking API
//! echo.await.unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! What is shared with the blocking API rather than written twice: names
//! ([`Name`](crate::Name)), options ([`ServerOptions`](crate::ServerOptions),
//! [`ClientOptions`](crate::ClientOptions)), the [`Shutdown`](crate::Shutdown) handle, the
//! [`Error`](crate::Error) type, the wire format ([`frame`](crate::frame)), the handshake
//! decisions, the endpoint claim and stale-endpoint recovery, and the connect back-off.
//!
//! Every async method states its cancel safety. `recv`, `accept` and `flush` are cancel
//! safe; `send` is not (use `feed` + `flush`).
//!
//! Options are passed the same way as in the blocking API: `Server::bind_with(name,
//! &ServerOptions)` and `Client::connect_with(name, &ClientOptions)`.

mod client;
mod connection;
mod server;
mod single_instance;
mod stream;
#[cfg(feature = "serde")]
mod value;

pub use bytes::Bytes;
pub use client::Client;
pub use connection::{Connection, RecvHalf, SendHalf};
pub use server::{Incoming, Server};
pub use single_instance::{single_instance, Instance, Primary, Secondary};
pub use stream::Stream;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use value::{ValueSink, ValueStream, Values};

/// What the options may ask that only the blocking API does, refused here as a
/// configuration error: a wait strategy other than `Block` (an async receive waits through
/// the runtime's reactor, and spinning in a task would hold up the other tasks of its thread;
/// this holds for shared-memory connections too, which wait on the reactor as well).
pub(crate) fn refuse_blocking_only(strategy: Option<crate::WaitStrategy>) -> crate::Result<()> {
    let strategy = strategy.unwrap_or_default();
    if strategy != crate::WaitStrategy::Block {
        return Err(crate::Error::InvalidConfig(format!(
            "wait strategy {strategy:?} is for the blocking API: an async receive waits through the runtime's reactor, and spinning in a task would hold up the other tasks of its thread; use WaitStrategy::Block here, or the blocking API on a thread of its own"
        )));
    }
    Ok(())
}
