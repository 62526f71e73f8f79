//! tarpc over pipette (cargo feature `tarpc`): a pipette connection as a [tarpc] transport,
//! on both sides.
//!
//! tarpc takes any `Stream` + `Sink` of its messages as a transport. Here each tarpc message
//! (a `ClientMessage` one way, a `Response` the other) is **one pipette message**, encoded by
//! the `serde` feature's [`Codec`] (postcard unless you choose JSON): pipette's own framing
//! carries it, with no second length prefix, and the connection's size limit applies to each
//! message ([`ServerOptions::max_message_size`](crate::ServerOptions::max_message_size); a
//! larger request fails that call with [`Error::MessageTooLarge`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use tarpc::server::{BaseChannel, Channel};
//!
//! #[tarpc::service]
//! trait Hello {
//!     async fn hello(name: String) -> String;
//! }
//!
//! #[derive(Clone)]
//! struct HelloServer;
//!
//! impl Hello for HelloServer {
//!     async fn hello(self, _: tarpc::context::Context, name: String) -> String {
//!         format!("Hello, {name}!")
//!     }
//! }
//!
//! # let name = format!("doc-tarpc-{}", std::process::id());
//! # let name = name.as_str();
//! // let name = "my-service";
//! // Server: every connection becomes a tarpc channel.
//! let server = pipette::tokio::Server::bind(name)?;
//! let stop = server.shutdown_handle();
//! tokio::spawn(pipette::tarpc::incoming(server).for_each(|transport| async move {
//!     let Ok(transport) = transport else { return };   // one failed connection
//!     tokio::spawn(
//!         BaseChannel::with_defaults(transport)
//!             .execute(HelloServer.serve())
//!             .for_each(|call| async move { tokio::spawn(call); }),
//!     );
//! }));
//!
//! // Client (usually another process): a transport by name.
//! let transport = pipette::tarpc::connect(name, &pipette::ClientOptions::new()).await?;
//! let client = HelloClient::new(tarpc::client::Config::default(), transport).spawn();
//! let greeting = client.hello(tarpc::context::current(), "pipette".into()).await?;
//! assert_eq!(greeting, "Hello, pipette!");
//! stop.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! # Failures
//!
//! When the server process dies or its [`Shutdown`](crate::Shutdown) handle fires, the
//! transport ends and every call in flight fails at once (`RpcError::Shutdown`), never
//! waiting for its deadline. A message that does not decode is reported by the stream as
//! [`Error::Decode`] and the connection goes on.
//!
//! The server does not learn the caller's identity through tarpc's API; to use it, accept
//! connections yourself and read [`Connection::peer`] before [`transport`].

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::tarpc::{ClientMessage, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::accepting::Accepting;
use crate::tokio::{Client, Connection, Server, Values};
use crate::{ClientOptions, Codec, Error, IntoName, Result};

/// A connection as a tarpc transport: a `Stream` of received `In` and a `Sink` of `Out`,
/// one pipette message each (over [`Values`]).
///
/// One difference from [`Values`]: `poll_flush` also waits for what `poll_ready` waits for
/// (on a new client connection, the server's handshake reply). tarpc's dispatcher, finding
/// the sink not ready, flushes until it is, and would otherwise spin until the server
/// answers.
pub struct Transport<In, Out>(Values<In, Out>);

impl<In, Out> Transport<In, Out> {
    /// The connection underneath, as a stream and sink of values.
    pub fn get_ref(&self) -> &Values<In, Out> {
        &self.0
    }

    /// Gives the connection back, as a stream and sink of values.
    pub fn into_inner(self) -> Values<In, Out> {
        self.0
    }
}

impl<In, Out> fmt::Debug for Transport<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Transport").field(&self.0).finish()
    }
}

/// Received messages; see [`Values`]' `Stream`.
impl<In: DeserializeOwned, Out> futures_core::Stream for Transport<In, Out> {
    type Item = Result<In>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<In>>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Messages to send; see [`Values`]' `Sink`.
impl<In, Out: Serialize> futures_sink::Sink<Out> for Transport<In, Out> {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Out) -> Result<()> {
        Pin::new(&mut self.0).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(Pin::new(&mut self.0).poll_ready(cx))?;
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// The client's side of a tarpc service with requests `Req` and responses `Resp` (the
/// transport for `tarpc::client::new` or a generated `…Client::new`).
pub type ClientTransport<Req, Resp> = Transport<Response<Resp>, ClientMessage<Req>>;

/// The server's side (the transport for `tarpc::server::BaseChannel`).
pub type ServerTransport<Req, Resp> = Transport<ClientMessage<Req>, Response<Resp>>;

/// Makes `conn` (either side) a tarpc transport, with the default codec (postcard).
pub fn transport<In, Out>(conn: Connection) -> Transport<In, Out> {
    transport_with(conn, Codec::Postcard)
}

/// Makes `conn` a tarpc transport with `codec` (both sides must use the same).
pub fn transport_with<In, Out>(conn: Connection, codec: Codec) -> Transport<In, Out> {
    Transport(conn.into_values_with(codec))
}

/// Connects to the server named `name` and returns the client's transport.
///
/// # Errors
///
/// As [`Client::connect_with`](crate::tokio::Client::connect_with).
pub async fn connect<Req, Resp>(
    name: impl IntoName,
    options: &ClientOptions,
) -> Result<ClientTransport<Req, Resp>> {
    Ok(transport(Client::connect_with(name, options).await?))
}

/// A pipette server's connections as tarpc server transports; ends when the server's
/// [`Shutdown`](crate::Shutdown) handle fires. A failed accept is yielded as an error (skip
/// it), and the next accept waits 100 ms so that a lasting condition does not spin.
pub fn incoming<Req, Resp>(server: Server) -> Incoming<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    Incoming(Accepting::new(server, |conn| {
        Box::pin(async move { Ok(transport(conn)) })
    }))
}

/// The stream of transports from [`incoming`]:
/// `Stream<Item = Result<ServerTransport<Req, Resp>, Error>>`.
#[derive(Debug)]
pub struct Incoming<Req, Resp>(Accepting<ServerTransport<Req, Resp>>);

impl<Req, Resp> Incoming<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// The server underneath (its name, its shutdown handle).
    pub fn server(&self) -> &Server {
        self.0.server()
    }
}

impl<Req, Resp> futures_core::Stream for Incoming<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    type Item = Result<ServerTransport<Req, Resp>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}
