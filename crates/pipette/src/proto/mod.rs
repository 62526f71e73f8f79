//! pipette's protocol engine, without I/O: the one place where bytes from a peer are
//! interpreted and bytes for a peer are produced.
//!
//! Like `rustls` or `quinn-proto`, this module never reads, writes, sleeps or looks at a
//! clock. Its drivers (the blocking API, the tokio API, and each platform's listener) move
//! bytes between the operating system and these state machines, and act on what they say:
//!
//! - [`HelloReader`]: a server's view of a new connection's first bytes: how many more to
//!   read, and when there are enough to judge (the whole hello, or bytes that cannot be one).
//! - [`admit`] and [`trusts`]: the admission decisions, both ways, from credentials passed in
//!   as data ([`Credentials`]); [`Admission`]: what a server answers a hello.
//! - [`ReplyReader`]: a client's view of the server's reply: the server's limit, or why it
//!   refused.
//! - [`Decoder`]: the receive side of a framed connection: headers, payloads (with a hint so
//!   that a large payload is read straight into its own buffer), the END header, and a
//!   sticky, typed failure.
//! - [`Encoder`] and [`Outgoing`]: the send side: the size check, headers, partial writes,
//!   and the poisoning of a direction that was cut part-way through a message.
//!
//! - [`ring`]: the shared-memory transport's layout and the bounds on every index read
//!   from the peer.
//!
//! [`wire`] (also public as `pipette::frame`) holds the byte layouts themselves.
//!
//! Everything here is deterministic and total: any sequence of bytes, split at any points,
//! leads to the same messages and the same failure (the `proto` fuzz target checks this).

#![forbid(unsafe_code)]

mod admit;
mod decoder;
mod encoder;
mod handshake;
mod hello;
pub mod ring;
pub mod wire;

pub use admit::{admit_peer, trusts, Credentials, ServerIdentity, TrustPolicy};
pub use decoder::{Decoded, Decoder, Failure, LARGE_MESSAGE};
pub use encoder::{EncodeError, Encoder, Outgoing};
pub use handshake::{
    admit, hello, hello_offering, offered_features, Admission, Refusal, ReplyError, ReplyReader,
};
pub use hello::HelloReader;
