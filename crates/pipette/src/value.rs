//! Typed messages (cargo feature `serde`): any `Serialize` value as one message, any
//! `Deserialize` type out of one.
//!
//! Each value is encoded into exactly one message (one frame), so everything the byte API
//! guarantees holds: whole messages, the receiver's size limit ([`Error::MessageTooLarge`]
//! before anything is written), timeouts, and the same wire bytes from the blocking and the
//! async API. A message that arrives whole but does not decode is [`Error::Decode`], naming
//! the type; it costs only that message, the connection goes on.
//!
//! The methods live here, in inherent `impl` blocks beside the byte API's, and use only that
//! API: the codec is a layer above the protocol, never inside it.
//!
//! # The codec
//!
//! [`Codec::Postcard`] (the default, used by `send_value` and `recv_value`) is
//! [postcard](https://docs.rs/postcard): compact (variable-length integers, no field names),
//! with a documented, stable wire format. It was chosen by measurement against bincode 2 and
//! MessagePack (`rmp-serde`): the fastest on a small struct (177 ns to encode and decode,
//! against 440-580 ns), within the noise of the others on larger values, the smallest
//! messages, and of the three the one maintained with a specified format (bincode has ceased
//! development; its last release is a `compile_error!`). The figures and the command are in
//! `docs/PERFORMANCE.md` ("Typed messages: the codec").
//!
//! [`Codec::Json`] ([serde_json](https://docs.rs/serde_json)) is for debugging and for peers in
//! other languages: a Python peer sends `json.dumps(...).encode()` as a plain message and
//! `recv_value_with::<T>(Codec::Json)` reads it. Postcard, like bincode, is not
//! self-describing: the receiver must know the type. Types that need a self-describing format
//! (`#[serde(untagged)]`, `#[serde(flatten)]`, `serde_json::Value`) need [`Codec::Json`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::{Connection, RecvHalf, SendHalf};

/// How a typed value becomes the bytes of one message.
///
/// [`Codec::Postcard`] is the default (what `send_value` and `recv_value` use); pick another
/// with `send_value_with` and `recv_value_with`. Both sides must use the same codec.
///
/// ```
/// use pipette::Codec;
///
/// let bytes = Codec::Json.encode(&("open", 3u32))?;
/// assert_eq!(bytes, br#"["open",3]"#);
/// let back: (String, u32) = Codec::Json.decode(&bytes)?;
/// assert_eq!(back, ("open".to_owned(), 3));
///
/// // A length-prefixed string and a variable-length integer.
/// let small = Codec::Postcard.encode(&("open", 3u32))?;
/// assert_eq!(small, b"\x04open\x03");
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// [postcard](https://docs.rs/postcard) 1.x: compact binary, not self-describing.
    #[default]
    Postcard,
    /// JSON text ([serde_json](https://docs.rs/serde_json)): for debugging and for peers in
    /// other languages.
    Json,
}

impl Codec {
    /// Encodes `value` as the bytes of one message.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the value cannot be encoded with this codec.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        let res = match self {
            // `to_extend` into a small allocation: `to_allocvec` grows from nothing, which
            // took 1.6-2.6 times as long on small values (docs/PERFORMANCE.md).
            Codec::Postcard => postcard::to_extend(value, Vec::with_capacity(64))
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            Codec::Json => serde_json::to_vec(value).map_err(|e| e.into()),
        };
        res.map_err(|source| Error::Encode {
            type_name: std::any::type_name::<T>(),
            source: source.into(),
        })
    }

    /// Decodes one message as a `T`. The whole message must be used: trailing bytes are an
    /// error too.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`], naming `T`, when the bytes are not a `T` in this codec.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        let res = match self {
            Codec::Postcard => match postcard::take_from_bytes::<T>(bytes) {
                Ok((value, [])) => Ok(value),
                Ok((_, rest)) => Err(format!(
                    "{} bytes left over after the value (the message is {} bytes)",
                    rest.len(),
                    bytes.len()
                )
                .into()),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            },
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.into()),
        };
        res.map_err(|source| Error::Decode {
            type_name: std::any::type_name::<T>(),
            source: source.into(),
        })
    }
}

impl Connection {
    /// Sends `value` as one message, encoded with [`Codec::Postcard`].
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use pipette::{Client, Server};
    ///
    /// #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// enum Request {
    ///     Open { path: String },
    ///     Quit,
    /// }
    ///
    /// let name = format!("doc-value-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name)?;
    /// client.send_value(&Request::Open { path: "notes.txt".into() })?;
    ///
    /// let mut conn = server.accept()?;
    /// let req: Request = conn.recv_value()?;
    /// assert_eq!(req, Request::Open { path: "notes.txt".into() });
    /// conn.send_value(&vec![1u32, 2, 3])?;
    /// assert_eq!(client.recv_value::<Vec<u32>>()?, [1, 2, 3]);
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] (nothing sent), and as [`send`](Connection::send): notably
    /// [`Error::MessageTooLarge`] when the encoded value is larger than the peer accepts
    /// (nothing sent; the connection stays usable).
    pub fn send_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send(&Codec::Postcard.encode(value)?)
    }

    /// Sends `value` as one message, waiting at most `timeout` for the peer to make room (see
    /// [`send_timeout`](Connection::send_timeout)).
    ///
    /// # Errors
    ///
    /// As [`send_value`](Connection::send_value).
    pub fn send_value_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        self.send_timeout(&Codec::Postcard.encode(value)?, timeout)
    }

    /// Sends `value` as one message, encoded with `codec`.
    ///
    /// # Errors
    ///
    /// As [`send_value`](Connection::send_value).
    pub fn send_value_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        codec: Codec,
    ) -> Result<()> {
        self.send(&codec.encode(value)?)
    }

    /// Receives one message and decodes it as a `T` ([`Codec::Postcard`]).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] (naming `T`; the message is consumed and the connection stays
    /// usable for the next one), and as [`recv`](Connection::recv).
    pub fn recv_value<T: DeserializeOwned>(&mut self) -> Result<T> {
        Codec::Postcard.decode(&self.recv()?)
    }

    /// Receives one message as a `T`, waiting at most `timeout` for data (see
    /// [`recv_timeout`](Connection::recv_timeout)).
    ///
    /// # Errors
    ///
    /// As [`recv_value`](Connection::recv_value).
    pub fn recv_value_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        Codec::Postcard.decode(&self.recv_timeout(timeout)?)
    }

    /// Receives one message and decodes it as a `T` with `codec`.
    ///
    /// ```
    /// use pipette::{Client, Codec, Server};
    ///
    /// let name = format!("doc-json-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name)?;
    /// // What a peer in another language sends: JSON text as a plain message.
    /// client.send(br#"{"cmd": "open", "args": ["a.txt", "b.txt"]}"#)?;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Command { cmd: String, args: Vec<String> }
    ///
    /// let mut conn = server.accept()?;
    /// let c: Command = conn.recv_value_with(Codec::Json)?;
    /// assert_eq!((c.cmd.as_str(), c.args.len()), ("open", 2));
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`recv_value`](Connection::recv_value).
    pub fn recv_value_with<T: DeserializeOwned>(&mut self, codec: Codec) -> Result<T> {
        codec.decode(&self.recv()?)
    }

    /// Receives one value if a whole message is already there (see
    /// [`try_recv`](Connection::try_recv)): `Ok(None)` otherwise.
    ///
    /// # Errors
    ///
    /// As [`recv_value`](Connection::recv_value), except that it never times out.
    pub fn try_recv_value<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.try_recv()? {
            Some(msg) => Codec::Postcard.decode(&msg).map(Some),
            None => Ok(None),
        }
    }
}

impl SendHalf {
    /// Sends `value` as one message. See [`Connection::send_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    pub fn send_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send(&Codec::Postcard.encode(value)?)
    }

    /// Sends `value` with a timeout. See [`Connection::send_value_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    pub fn send_value_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        self.send_timeout(&Codec::Postcard.encode(value)?, timeout)
    }

    /// Sends `value` encoded with `codec`. See [`Connection::send_value_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    pub fn send_value_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        codec: Codec,
    ) -> Result<()> {
        self.send(&codec.encode(value)?)
    }
}

impl RecvHalf {
    /// Receives one message as a `T`. See [`Connection::recv_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    pub fn recv_value<T: DeserializeOwned>(&mut self) -> Result<T> {
        Codec::Postcard.decode(&self.recv()?)
    }

    /// Receives one message as a `T`, with a timeout. See
    /// [`Connection::recv_value_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    pub fn recv_value_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        Codec::Postcard.decode(&self.recv_timeout(timeout)?)
    }

    /// Receives one message as a `T` with `codec`. See [`Connection::recv_value_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    pub fn recv_value_with<T: DeserializeOwned>(&mut self, codec: Codec) -> Result<T> {
        codec.decode(&self.recv()?)
    }

    /// Receives one value without waiting. See [`Connection::try_recv_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::try_recv_value`].
    pub fn try_recv_value<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.try_recv()? {
            Some(msg) => Codec::Postcard.decode(&msg).map(Some),
            None => Ok(None),
        }
    }
}
