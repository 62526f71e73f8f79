//! Local inter-process communication by **name**: no ports to pick, no port to collide.
//!
//! A server binds a name; clients connect by the same name (and may wait for it to appear);
//! both sides exchange whole messages, with a size limit, timeouts on every blocking call, and
//! one [`Shutdown`] handle that stops a server and all its connections from any thread. Under
//! the hood it is a Unix domain socket (and, on Windows, a named pipe) with a small handshake
//! and length-prefixed frames (see `docs/PROTOCOL.md`).
//!
//! ```
//! use std::time::Duration;
//! use pipette::{Client, Error, Server};
//!
//! # let name = format!("doc-crate-{}", std::process::id());
//! # let name = name.as_str();
//! // let name = "my-app";
//! let server = Server::bind(name)?;
//! let stop = server.shutdown_handle();
//! let echo = std::thread::spawn(move || loop {
//!     let mut conn = match server.accept() {
//!         Ok(conn) => conn,
//!         Err(Error::Shutdown) => break,     // `stop.shutdown()` was called
//!         Err(e) => {
//!             // A passing condition (out of descriptors, say): log it and go on.
//!             eprintln!("accept: {e}");
//!             std::thread::sleep(Duration::from_millis(100));
//!             continue;
//!         }
//!     };
//!     std::thread::spawn(move || {
//!         // A client that leaves (or misbehaves) ends only its own connection.
//!         while let Ok(msg) = conn.recv() {
//!             if conn.send(&msg).is_err() {
//!                 break;
//!             }
//!         }
//!     });
//! });
//!
//! let mut client = Client::connect_timeout(name, Duration::from_secs(5))?;
//! client.send(b"hello")?;
//! assert_eq!(client.recv_timeout(Duration::from_secs(5))?, b"hello");
//!
//! stop.shutdown();                            // accept returns, the endpoint is removed
//! echo.join().unwrap();
//! # Ok::<(), pipette::Error>(())
//! ```
//!
//! Options are passed the same way in the blocking and the async API:
//! [`Server::bind_with`] with [`ServerOptions`], [`Client::connect_with`] with
//! [`ClientOptions`].
//!
//! # Layers
//!
//! The protocol itself (the handshake, the frames, both sides' admission decisions) is
//! [`proto`], a state machine without I/O; the blocking API, the async API
//! (`pipette::tokio`, feature `tokio`) and each platform's listener drive it.
//!
//! # Security
//!
//! Both sides check the other, by default for the same user:
//!
//! - A server admits only its own user ([`Access::CurrentUser`]; wider: [`Access::Group`],
//!   [`Access::Everyone`]): on Unix the endpoint lives in a private per-user directory and the
//!   socket file is `0600`; on Windows the pipe's DACL names only the user; and every peer's
//!   credentials are checked before [`Server::accept`] returns it.
//! - A client talks only to a server of its own user or of the system
//!   ([`Trust::CurrentUser`]; wider: [`Trust::Group`], [`Trust::User`], [`Trust::Everyone`]),
//!   checked right after connecting and before it sends a byte: whoever created the endpoint
//!   first (a squatter on a Windows pipe name, a socket in a shared directory) gets nothing,
//!   and the client fails with [`Error::UntrustedServer`].
//!
//! Binding never takes over a live server's name ([`Error::AddrInUse`], which names the
//! holder when it is another user), and the leftovers of a crashed server are recovered
//! safely.
//!
//! # Typed messages
//!
//! With the cargo feature `serde`, any `Serialize` value goes as one message
//! (`Connection::send_value`, `Connection::recv_value`, and the same on the halves and in
//! the async API, which also has a `Stream` + `Sink` of values): postcard by default, JSON on
//! request (`Codec`).
//!
//! # Single instance
//!
//! [`single_instance`] makes the first launch of an app the [`Primary`], which receives the
//! arguments and working directory of later launches; each later launch is a [`Secondary`]
//! that forwards them and gets an acknowledgement.
//!
//! # gRPC and tarpc
//!
//! With the cargo feature `tonic`, `pipette::tonic` serves a tonic service on a
//! pipette server and connects a tonic channel by name, the caller's [`PeerIdentity`] in each
//! request; with `tarpc`, `pipette::tarpc` makes a connection a tarpc transport.
//!
//! # Modes
//!
//! Framed mode (the default) carries messages; raw mode ([`ServerOptions::raw`],
//! [`ClientOptions::raw`]) is a plain byte stream for foreign peers such as `socat`.

#![deny(missing_docs, missing_debug_implementations, unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "tonic", feature = "tarpc"))]
mod accepting;
mod access;
mod client;
mod connection;
mod dotnet;
mod error;
#[cfg(windows)]
mod handles;
mod handshake;
mod name;
mod options;
mod peer;
mod probe;
pub mod proto;
mod server;
mod shared;
mod shm;
mod shutdown;
mod single_instance;
mod stream;
#[allow(unsafe_code)]
mod sys;
mod text;
mod trust;
#[cfg(feature = "serde")]
mod value;
mod wait;

pub use access::Access;
pub use client::Client;
pub use connection::{Connection, RecvHalf, SendHalf};
pub use error::{Error, Operation, Refusal, Result, ReuniteError};
pub use name::{IntoName, Name, MAX_PLAIN_LEN};
pub use options::{
    ClientOptions, ServerOptions, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
};
pub use peer::PeerIdentity;
pub use probe::{endpoints, probe, remove_stale, EndpointInfo, Liveness};
pub use proto::wire as frame;
pub use server::{Incoming, Server};
pub use shutdown::Shutdown;
pub use single_instance::{single_instance, Instance, Launch, Primary, Secondary};
pub use stream::Stream;
pub use text::Encoding;
pub use trust::Trust;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use value::Codec;
pub use wait::WaitStrategy;

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[cfg(feature = "tarpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "tarpc")))]
pub mod tarpc;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

// The public handles are `Send + Sync` (a `&Connection` may be shared between threads, a
// server moved into its accept thread): part of the API, checked wherever the crate builds.
// A field that is not `Sync` (a `Cell` in a connection's state, say) fails the build here.
const _: () = {
    fn send_sync<T: Send + Sync>() {}
    #[allow(dead_code)]
    fn public_types() {
        send_sync::<Client>();
        send_sync::<Connection>();
        send_sync::<SendHalf>();
        send_sync::<RecvHalf>();
        send_sync::<Server>();
        send_sync::<Incoming<'static>>();
        send_sync::<Shutdown>();
        send_sync::<Stream>();
        send_sync::<Error>();
        #[cfg(feature = "tokio")]
        {
            send_sync::<tokio::Client>();
            send_sync::<tokio::Connection>();
            send_sync::<tokio::SendHalf>();
            send_sync::<tokio::RecvHalf>();
            send_sync::<tokio::Server>();
            send_sync::<tokio::Stream>();
        }
    }
};
