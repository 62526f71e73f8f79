//! gRPC over pipette (cargo feature `tonic`): a [tonic] service served on a
//! [`pipette::tokio::Server`](crate::tokio::Server), and a tonic [`Channel`] that connects
//! by name.
//!
//! Only the transport changes; the service, its messages and the generated (or hand-written)
//! client stay as they are:
//!
//! | | over TCP | over pipette |
//! |-|----------|--------------|
//! | server | `Server::builder().add_service(svc).serve(addr)` | `…serve_with_incoming(pipette::tonic::incoming(server))` |
//! | client | `Channel::from_static(url).connect()` | `pipette::tonic::channel(name, &options)` |
//!
//! Each connection is a pipette connection turned into a byte stream after the handshake
//! ([`Connection::into_stream`](crate::tokio::Connection::into_stream)), so both sides'
//! checks (the server's [`Access`](crate::Access), the client's [`Trust`](crate::Trust)) are
//! made before HTTP/2 starts, and the server sees who called:
//!
//! # The caller's identity
//!
//! [`Stream`] implements tonic's [`Connected`] with
//! `ConnectInfo = `[`PeerIdentity`], so every request on a connection carries the identity
//! of the process that made it, as an extension:
//!
//! ```
//! # fn handler(request: tonic::Request<()>) -> Result<(), tonic::Status> {
//! let peer = request
//!     .extensions()
//!     .get::<pipette::PeerIdentity>()
//!     .ok_or_else(|| tonic::Status::internal("not served by pipette::tonic::incoming"))?;
//! let (pid, uid) = (peer.pid(), peer.uid()); // uid: Unix; sid(): Windows
//! # let _ = (pid, uid);
//! # Ok(())
//! # }
//! ```
//!
//! The identity is an empty [`PeerIdentity`] (every field `None`) where the platform could
//! not tell; on Linux and Windows it always has the pid.
//!
//! # Shutdown
//!
//! The server's [`Shutdown`](crate::Shutdown) handle ends the incoming stream, so
//! `serve_with_incoming` returns, and cuts every connection: calls in flight fail on the
//! client with a `tonic::Status` (code `Unavailable` or `Unknown`, depending on where the
//! cut falls) rather than hang. For a graceful stop, serve with
//! `serve_with_incoming_shutdown` and a signal: tonic stops taking connections and waits
//! for the calls in flight; fire pipette's handle afterwards (or not at all).
//!
//! # Example
//!
//! A whole gRPC service without `protoc` is in `examples/grpc.rs`, served over pipette and
//! over TCP by the same code. The shape:
//!
//! ```no_run
//! # async fn run<S>(svc: S) -> Result<(), Box<dyn std::error::Error>>
//! # where
//! #     S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible>
//! #         + tonic::server::NamedService + Clone + Send + Sync + 'static,
//! #     S::Future: Send + 'static,
//! # {
//! use pipette::{ClientOptions, tokio::Server};
//!
//! // Server: the service on a pipette name.
//! let server = Server::bind("my-service")?;
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .serve_with_incoming(svc, pipette::tonic::incoming(server)),
//! );
//!
//! // Client (another process): a Channel by name, for any tonic client.
//! let channel = pipette::tonic::channel("my-service", &ClientOptions::new()).await?;
//! # let _ = channel;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::tonic::transport::server::Connected;
use ::tonic::transport::{Channel, Endpoint};
use http::Uri;
use hyper_util::rt::TokioIo;

use crate::accepting::Accepting;
use crate::tokio::{Client, Server, Stream};
use crate::{ClientOptions, Error, IntoName, Name, PeerIdentity, Result};

/// The caller's identity reaches each request as an extension of type [`PeerIdentity`] (see
/// the [module docs](self)).
impl Connected for Stream {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer().cloned().unwrap_or_default()
    }
}

/// A pipette server's connections as tonic's incoming stream, for
/// `tonic::transport::Server::serve_with_incoming` (and `…_shutdown`).
///
/// Each admitted connection is turned into a byte [`Stream`] and handed to tonic. The stream
/// ends when the server's [`Shutdown`](crate::Shutdown) handle fires. A failed accept (out of
/// descriptors, say) is yielded as an error, which tonic logs and skips, and the next accept
/// waits 100 ms so that a lasting condition does not spin.
pub fn incoming(server: Server) -> Incoming {
    Incoming(Accepting::new(server, |conn| Box::pin(conn.into_stream())))
}

/// The stream of connections from [`incoming`]: `Stream<Item = Result<Stream, Error>>`.
#[derive(Debug)]
pub struct Incoming(Accepting<Stream>);

impl Incoming {
    /// The server underneath (its name, its shutdown handle).
    pub fn server(&self) -> &Server {
        self.0.server()
    }
}

impl futures_core::Stream for Incoming {
    type Item = Result<Stream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Stream>>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// Connects a tonic [`Channel`] to the pipette server named `name`: the first connection is
/// made before this returns, and the channel reconnects by name when a connection is lost.
///
/// `options` are those of every connection the channel makes ([`ClientOptions::wait`] to
/// wait for the server to appear, the [`Trust`](crate::Trust) policy, …). For the channel's
/// own settings (timeouts, concurrency limits, a lazy connection), build an [`Endpoint`] and
/// give it a [`Connector`]:
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use pipette::ClientOptions;
///
/// let channel = tonic::transport::Endpoint::from_static("http://pipette.invalid")
///     .timeout(Duration::from_secs(5))
///     .connect_with_connector_lazy(pipette::tonic::Connector::new("my-service", &ClientOptions::new())?);
/// # let _ = channel;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// An invalid name ([`Error::InvalidName`] inside tonic's error), or the first connection's
/// error (no server: [`Error::NotFound`], an untrusted one: [`Error::UntrustedServer`], …),
/// as tonic's transport error whose [source](std::error::Error::source) chain holds the
/// pipette [`Error`].
pub async fn channel(
    name: impl IntoName,
    options: &ClientOptions,
) -> std::result::Result<Channel, ::tonic::transport::Error> {
    let connector = match Connector::new(name, options) {
        Ok(c) => c,
        // tonic's transport error has no public constructor: let the connector report it.
        Err(e) => Connector::failing(e),
    };
    endpoint().connect_with_connector(connector).await
}

/// The endpoint the channels use: the URI only names the service for HTTP/2's `:authority`
/// (the [`Connector`] decides where the bytes go).
fn endpoint() -> Endpoint {
    Endpoint::from_static("http://pipette.invalid")
}

/// Opens pipette connections for a tonic [`Channel`]
/// (`Endpoint::connect_with_connector`): a `tower::Service<Uri>` that ignores the URI and
/// connects to its name.
#[derive(Clone)]
pub struct Connector {
    /// The name, or why it is not one (reported by every connection attempt).
    target: std::result::Result<Name, (String, String)>,
    options: ClientOptions,
}

impl Connector {
    /// A connector to the server named `name`, each connection made with `options`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name that is not valid.
    pub fn new(name: impl IntoName, options: &ClientOptions) -> Result<Connector> {
        Ok(Connector {
            target: Ok(name.into_name()?),
            options: options.clone(),
        })
    }

    fn failing(e: Error) -> Connector {
        let target = match e {
            Error::InvalidName { name, reason } => Err((name, reason)),
            other => Err((String::new(), other.to_string())),
        };
        Connector {
            target,
            options: ClientOptions::new(),
        }
    }

    /// The name this connector connects to.
    pub fn name(&self) -> Option<&Name> {
        self.target.as_ref().ok()
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("options", &self.options)
            .finish()
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>>> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> ConnectFuture {
        let (target, options) = (self.target.clone(), self.options.clone());
        Box::pin(async move {
            let name = target.map_err(|(name, reason)| Error::InvalidName { name, reason })?;
            let conn = Client::connect_with(name, &options).await?;
            Ok(TokioIo::new(conn.into_stream().await?))
        })
    }
}
