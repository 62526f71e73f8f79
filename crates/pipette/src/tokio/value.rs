//! Typed messages on the async API (features `tokio` and `serde`): the twin of the blocking
//! `send_value` / `recv_value` (same codecs, same wire bytes), and [`Values`], a
//! `Stream` + `Sink` of typed values over the byte-level `Stream` + `Sink` of a connection.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Connection, RecvHalf, SendHalf};
use crate::error::{Error, Result};
use crate::value::Codec;

impl Connection {
    /// Sends `value` as one message, encoded with [`Codec::Postcard`]; the async twin of the
    /// blocking [`Connection::send_value`](crate::Connection::send_value).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use pipette::tokio::{Client, Server};
    ///
    /// let name = format!("doc-async-value-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name).await?;
    /// client.send_value(&("open", vec!["a.txt", "b.txt"])).await?;
    ///
    /// let mut conn = server.accept().await?;
    /// let (cmd, args): (String, Vec<String>) = conn.recv_value().await?;
    /// assert_eq!((cmd.as_str(), args.len()), ("open", 2));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As the blocking [`Connection::send_value`](crate::Connection::send_value).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send) (the value is encoded before the first
    /// await); the cancel-safe way is [`feed_value`](Connection::feed_value) +
    /// [`flush`](Connection::flush).
    pub async fn send_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let msg = Codec::Postcard.encode(value)?;
        self.send(&msg).await
    }

    /// Sends `value`, failing with [`Error::TimedOut`] after `timeout` (see
    /// [`send_timeout`](Connection::send_timeout)).
    ///
    /// # Errors
    ///
    /// As [`send_value`](Connection::send_value).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_value_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        let msg = Codec::Postcard.encode(value)?;
        self.send_timeout(&msg, timeout).await
    }

    /// Sends `value` encoded with `codec`.
    ///
    /// # Errors
    ///
    /// As [`send_value`](Connection::send_value).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_value_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        codec: Codec,
    ) -> Result<()> {
        let msg = codec.encode(value)?;
        self.send(&msg).await
    }

    /// Encodes `value` and queues it without waiting, as [`feed`](Connection::feed);
    /// [`flush`](Connection::flush) writes it.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`], and as [`feed`](Connection::feed).
    pub fn feed_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.feed(Bytes::from(Codec::Postcard.encode(value)?))
    }

    /// Receives one message and decodes it as a `T` ([`Codec::Postcard`]).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] (naming `T`; the message is consumed and the connection stays
    /// usable), and as [`recv`](Connection::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv): decoding happens after the last await.
    pub async fn recv_value<T: DeserializeOwned>(&mut self) -> Result<T> {
        Codec::Postcard.decode(&self.recv().await?)
    }

    /// Receives one message as a `T`, failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_value`](Connection::recv_value).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv).
    pub async fn recv_value_timeout<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<T> {
        Codec::Postcard.decode(&self.recv_timeout(timeout).await?)
    }

    /// Receives one message and decodes it as a `T` with `codec`.
    ///
    /// # Errors
    ///
    /// As [`recv_value`](Connection::recv_value).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv).
    pub async fn recv_value_with<T: DeserializeOwned>(&mut self, codec: Codec) -> Result<T> {
        codec.decode(&self.recv().await?)
    }

    /// Receives one value if a whole message is already there: `Ok(None)` otherwise.
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

    /// This connection as a [`Stream`](futures_core::Stream) of received `In` values and a
    /// [`Sink`](futures_sink::Sink) of `Out` values ([`Codec::Postcard`]), over the
    /// connection's own `Stream` and `Sink` of messages.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use futures::{SinkExt, StreamExt};
    /// use pipette::tokio::{Client, Server};
    ///
    /// let name = format!("doc-values-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let client = Client::connect(&name).await?;
    /// let mut conn = server.accept().await?.into_values::<String, u64>();
    /// // The client's sink waits for the server's handshake reply, sent once accepted.
    /// let mut client = client.into_values::<u64, String>();
    /// client.send("three".to_owned()).await?;
    ///
    /// let word = conn.next().await.unwrap()?;
    /// conn.send(word.len() as u64).await?;
    /// assert_eq!(client.next().await.unwrap()?, 5);
    /// # Ok(())
    /// # }
    /// ```
    pub fn into_values<In, Out>(self) -> Values<In, Out> {
        Values::new(self, Codec::Postcard)
    }

    /// As [`into_values`](Connection::into_values), with `codec`.
    pub fn into_values_with<In, Out>(self, codec: Codec) -> Values<In, Out> {
        Values::new(self, codec)
    }
}

impl SendHalf {
    /// Sends `value` as one message. See [`Connection::send_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Connection::send_value`].
    pub async fn send_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let msg = Codec::Postcard.encode(value)?;
        self.send(&msg).await
    }

    /// Sends `value` with a timeout. See [`Connection::send_value_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Connection::send_value`].
    pub async fn send_value_timeout<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        timeout: Duration,
    ) -> Result<()> {
        let msg = Codec::Postcard.encode(value)?;
        self.send_timeout(&msg, timeout).await
    }

    /// Sends `value` encoded with `codec`. See [`Connection::send_value_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_value`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`Connection::send_value`].
    pub async fn send_value_with<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        codec: Codec,
    ) -> Result<()> {
        let msg = codec.encode(value)?;
        self.send(&msg).await
    }

    /// Encodes `value` and queues it. See [`Connection::feed_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::feed_value`].
    pub fn feed_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.feed(Bytes::from(Codec::Postcard.encode(value)?))
    }

    /// This half as a [`Sink`](futures_sink::Sink) of `Out` values ([`Codec::Postcard`]).
    /// See [`Connection::into_values`].
    pub fn into_values<Out>(self) -> ValueSink<Out> {
        Values::new(self, Codec::Postcard)
    }

    /// As [`into_values`](SendHalf::into_values), with `codec`.
    pub fn into_values_with<Out>(self, codec: Codec) -> ValueSink<Out> {
        Values::new(self, codec)
    }
}

impl RecvHalf {
    /// Receives one message as a `T`. See [`Connection::recv_value`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Connection::recv_value`].
    pub async fn recv_value<T: DeserializeOwned>(&mut self) -> Result<T> {
        Codec::Postcard.decode(&self.recv().await?)
    }

    /// Receives one message as a `T`, with a timeout. See
    /// [`Connection::recv_value_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Connection::recv_value`].
    pub async fn recv_value_timeout<T: DeserializeOwned>(
        &mut self,
        timeout: Duration,
    ) -> Result<T> {
        Codec::Postcard.decode(&self.recv_timeout(timeout).await?)
    }

    /// Receives one message as a `T` with `codec`. See [`Connection::recv_value_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_value`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Connection::recv_value`].
    pub async fn recv_value_with<T: DeserializeOwned>(&mut self, codec: Codec) -> Result<T> {
        codec.decode(&self.recv().await?)
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

    /// This half as a [`Stream`](futures_core::Stream) of `In` values ([`Codec::Postcard`]).
    /// See [`Connection::into_values`].
    pub fn into_values<In>(self) -> ValueStream<In> {
        Values::new(self, Codec::Postcard)
    }

    /// As [`into_values`](RecvHalf::into_values), with `codec`.
    pub fn into_values_with<In>(self, codec: Codec) -> ValueStream<In> {
        Values::new(self, codec)
    }
}

/// A [`Stream`](futures_core::Stream) of received `In` values and a
/// [`Sink`](futures_sink::Sink) of `Out` values, over `S`'s stream and sink of messages
/// (from [`Connection::into_values`]; the halves give [`ValueStream`] and [`ValueSink`]).
///
/// The stream yields `Err(`[`Error::Decode`]`)` for a message that does not decode and goes
/// on with the next one; it ends as the connection's stream of messages does (when the peer
/// closes, or after an error that ends the connection). The sink encodes each item into one
/// message when it is given (`start_send`), so an [`Error::Encode`] or
/// [`Error::MessageTooLarge`] is reported there and nothing is queued.
pub struct Values<In, Out, S = Connection> {
    inner: S,
    codec: Codec,
    _types: PhantomData<fn(Out) -> In>,
}

/// The receiving half as a stream of values ([`RecvHalf::into_values`]).
pub type ValueStream<In> = Values<In, (), RecvHalf>;

/// The sending half as a sink of values ([`SendHalf::into_values`]).
pub type ValueSink<Out> = Values<(), Out, SendHalf>;

impl<In, Out, S> Values<In, Out, S> {
    fn new(inner: S, codec: Codec) -> Self {
        Values {
            inner,
            codec,
            _types: PhantomData,
        }
    }

    /// The codec in use.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The connection (or half) underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The connection (or half) underneath, to use its byte API between values.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives the connection (or half) back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<In, Out, S: fmt::Debug> fmt::Debug for Values<In, Out, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Values")
            .field("inner", &self.inner)
            .field("codec", &self.codec)
            .field("in", &std::any::type_name::<In>())
            .field("out", &std::any::type_name::<Out>())
            .finish()
    }
}

/// Received values: `Err(Error::Decode)` for a message that does not decode (the stream goes
/// on), otherwise as the connection's stream of messages.
impl<In, Out, S> futures_core::Stream for Values<In, Out, S>
where
    In: DeserializeOwned,
    S: futures_core::Stream<Item = Result<Bytes>> + Unpin,
{
    type Item = Result<In>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<In>>> {
        let codec = self.codec;
        Poll::Ready(match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            Some(Ok(msg)) => Some(codec.decode(&msg)),
            Some(Err(e)) => Some(Err(e)),
            None => None,
        })
    }
}

/// Values to send, each encoded into one message at `start_send`.
impl<In, Out, S> futures_sink::Sink<Out> for Values<In, Out, S>
where
    Out: Serialize,
    S: futures_sink::Sink<Bytes, Error = Error> + Unpin,
{
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Out) -> Result<()> {
        let msg = self.codec.encode(&item)?;
        Pin::new(&mut self.inner).start_send(Bytes::from(msg))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
