//! The async connection: the same messages as the blocking one, as futures, a `Stream` and a
//! `Sink`.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::stream::Stream;
use crate::error::{Error, Result};
use crate::frame::{self, Header, HEADER_LEN, REPLY_LEN};
use crate::handshake;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::sys::aio;
use crate::{Name, PeerIdentity};

/// How much room a read asks for at least. Small messages arrive whole with one read.
const RECV_BUF: usize = 8 * 1024;

pub(crate) type AsyncShared = Shared<aio::Stream>;

/// An async connection carrying whole messages; the async twin of
/// [`pipette::Connection`](crate::Connection), with the same wire bytes.
///
/// Receive with [`recv`](Connection::recv) or as a [`futures_core::Stream`] of
/// `Result<Bytes>` (which ends when the peer closes); send with [`send`](Connection::send),
/// or [`feed`](Connection::feed) + [`flush`](Connection::flush), or as a
/// [`futures_sink::Sink<Bytes>`]. Received messages are `Bytes` cut from the receive buffer
/// without a copy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pipette::Result<()> {
/// use pipette::tokio::{Client, Server};
///
/// let name = format!("doc-async-conn-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let mut client = Client::connect(&name).await?;
/// client.send(b"ping").await?;
///
/// let mut conn = server.accept().await?;
/// assert_eq!(&conn.recv().await?[..], b"ping");
/// conn.send(b"pong").await?;
/// assert_eq!(&client.recv().await?[..], b"pong");
/// # Ok(())
/// # }
/// ```
pub struct Connection {
    recv: RecvHalf,
    send: SendHalf,
}

impl Connection {
    pub(crate) fn new(shared: AsyncShared, our_limit: u32, reply_pending: bool) -> Connection {
        let shared = Arc::new(shared);
        Connection {
            recv: RecvHalf {
                shared: shared.clone(),
                buf: BytesMut::with_capacity(RECV_BUF),
                limit: our_limit,
                reply_pending,
                failed: None,
                peer_ended: false,
                large: None,
                expect_large: false,
            },
            send: SendHalf {
                shared,
                queue: VecDeque::new(),
                failed: None,
                end_queued: false,
            },
        }
    }

    /// Receives one whole message.
    ///
    /// Returns [`Error::Closed`] once the peer has closed the connection and every message it
    /// sent has been received.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes of a message that arrived before the future was dropped stay in
    /// the connection, and the next `recv` returns the whole message.
    pub async fn recv(&mut self) -> Result<Bytes> {
        self.recv.recv().await
    }

    /// Receives one message, failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv); a timeout loses nothing either.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Bytes> {
        self.recv.recv_timeout(timeout).await
    }

    /// Sends one message: one vectored write of header and payload when the socket has
    /// room. A message larger than the peer accepts fails with [`Error::MessageTooLarge`]
    /// before anything is written.
    ///
    /// # Cancel safety
    ///
    /// **Not cancel safe.** Dropped before anything was written, it sent nothing and the
    /// connection is unchanged. Dropped after part of the message was written (a large
    /// message, a slow reader), the connection can no longer send: its sending direction is
    /// closed, the peer sees a truncated message (a protocol error), and later sends fail,
    /// exactly as after a blocking [`send_timeout`](crate::Connection::send_timeout) that
    /// expires part-way (in raw mode the bytes written so far simply stay written). Giving
    /// up never costs a copy of the message. The cancel-safe way to
    /// send is [`feed`](Connection::feed) (synchronous, takes an owned `Bytes`) followed by
    /// [`flush`](Connection::flush), which never cut a message.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.wait_for_limit(msg.len()).await?;
        match self.send.send(msg).await {
            // A server that refused us may already have closed the connection; its reply,
            // which says why, is waiting to be read: report that rather than "closed".
            Err(Error::Closed) if self.recv.reply_pending => {
                match self.recv.finish_handshake().await {
                    Err(refusal) => Err(refusal),
                    Ok(()) => Err(Error::Closed),
                }
            }
            other => other,
        }
    }

    /// Sends one message, failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// If the timeout expires before anything was written, nothing was sent and the
    /// connection stays usable. If it expires part-way through a large message, the
    /// connection cannot carry further messages: its sending side is closed (the peer sees a
    /// truncated message) and later sends fail, as with the blocking
    /// [`send_timeout`](crate::Connection::send_timeout).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        match ::tokio::time::timeout(timeout, self.send(msg)).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimedOut {
                op: "send",
                after: timeout,
            }),
        }
    }

    /// Queues one message without waiting; [`flush`](Connection::flush) writes it. Checks the
    /// size limit at once.
    ///
    /// A client that has not yet received the server's handshake reply knows only the
    /// protocol's minimum limit (4096 bytes); `feed` of a larger message then fails with
    /// `MessageTooLarge` (use `send`, which waits for the reply, or `recv` first).
    pub fn feed(&mut self, msg: Bytes) -> Result<()> {
        self.send.feed(msg)
    }

    /// Writes every queued message.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was written stays written, the rest stays queued for the next
    /// `flush` (or `send`).
    pub async fn flush(&mut self) -> Result<()> {
        self.send.flush().await
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.send.shared.peer()
    }

    /// The endpoint name this connection was made through.
    pub fn name(&self) -> &Name {
        &self.send.shared.name
    }

    /// Whether this is a raw byte-stream connection.
    pub fn is_raw(&self) -> bool {
        self.send.shared.raw
    }

    /// The largest message the peer accepts, as far as known (see
    /// [`pipette::Connection::peer_max_message_size`](crate::Connection::peer_max_message_size)).
    pub fn peer_max_message_size(&self) -> usize {
        self.send.shared.peer_limit() as usize
    }

    /// The handle whose `shutdown()` ends every operation of this connection.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.send.shared.shutdown.clone()
    }

    /// Splits into owned halves for two tasks. A client first waits for the server's
    /// handshake reply.
    ///
    /// # Cancel safety
    ///
    /// Consumes the connection: dropping the future drops the connection.
    pub async fn split(mut self) -> Result<(SendHalf, RecvHalf)> {
        self.recv.finish_handshake().await?;
        Ok((self.send, self.recv))
    }

    /// Turns the connection into a raw byte stream (`AsyncRead + AsyncWrite`) after the
    /// handshake; bytes already received are read first.
    ///
    /// # Cancel safety
    ///
    /// Consumes the connection: dropping the future drops the connection.
    pub async fn into_stream(mut self) -> Result<Stream> {
        self.recv.finish_handshake().await?;
        if self.recv.large.is_some() {
            return Err(Error::Protocol(
                "cannot turn a connection into a stream in the middle of a message; receive the rest of it first".into(),
            ));
        }
        self.send.flush().await?;
        Ok(Stream::new(self.recv.shared, self.recv.buf))
    }

    /// Closes in an orderly way: a client first checks the server's handshake reply, queued
    /// messages are written, then the sending direction is closed.
    ///
    /// # Cancel safety
    ///
    /// Consumes the connection: dropping the future drops the connection.
    pub async fn close(mut self) -> Result<()> {
        self.recv.finish_handshake().await?;
        self.send.close().await
    }

    /// A client may send up to the protocol minimum before the server's reply is in; a larger
    /// message waits for the reply (and its real limit).
    async fn wait_for_limit(&mut self, len: usize) -> Result<()> {
        if !self.send.shared.raw
            && len > frame::MIN_MESSAGE_LIMIT as usize
            && !self.send.shared.peer_limit_known()
        {
            self.recv.finish_handshake().await?;
        }
        Ok(())
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.send.shared.name.as_str())
            .field("raw", &self.send.shared.raw)
            .finish()
    }
}

/// The receiving half of an async [`Connection`].
pub struct RecvHalf {
    shared: Arc<AsyncShared>,
    buf: BytesMut,
    limit: u32,
    reply_pending: bool,
    failed: Option<String>,
    /// The peer sent the end-of-stream header: every later `recv` reports `Closed`.
    peer_ended: bool,
    /// A large message being received straight into its own buffer: (payload so far,
    /// its length).
    large: Option<(BytesMut, usize)>,
    /// The previous message was large: read the next header alone, so that a large payload
    /// lands in its own buffer rather than being read into `buf` and copied out.
    expect_large: bool,
}

/// Messages at least this long are read into a buffer of their own (see `RecvHalf::large`).
const LARGE: usize = RECV_BUF;

/// An empty buffer for a payload of `len` bytes whose start is not 1 to 31 bytes past a
/// page boundary: the kernel's copy into such a destination runs far slower on common x86
/// CPUs (4 KiB aliasing; measured in docs/PERFORMANCE.md).
fn payload_buffer(len: usize) -> BytesMut {
    let mut b = BytesMut::with_capacity(len + 32);
    let off = b.as_ptr() as usize % 4096;
    if (1..32).contains(&off) {
        let pad = 32 - off;
        b.resize(pad, 0);
        b.advance(pad);
    }
    b
}

/// Reads what the socket has into `buf`, waiting for readiness first.
fn poll_read_into<B: BufMut>(
    shared: &AsyncShared,
    cx: &mut Context<'_>,
    buf: &mut B,
) -> Poll<Result<()>> {
    loop {
        if let Err(e) = ready!(shared.stream.poll_read_ready(cx)) {
            return Poll::Ready(Err(shared.error(e, "recv", None)));
        }
        match shared.stream.try_read_buf(buf) {
            Ok(0) => return Poll::Ready(Err(shared.eof())),
            Ok(_) => return Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(shared.error(e, "recv", None))),
        }
    }
}

impl RecvHalf {
    /// Receives one whole message. See [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Bytes> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives one message with a timeout. See [`Connection::recv_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Bytes> {
        match ::tokio::time::timeout(timeout, self.recv()).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimedOut {
                op: "recv",
                after: timeout,
            }),
        }
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.shared.peer()
    }

    async fn finish_handshake(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_reply(cx)).await
    }

    /// Reads and checks the server's handshake reply, if still pending.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while self.reply_pending {
            if self.buf.len() >= REPLY_LEN {
                let mut bytes = [0u8; REPLY_LEN];
                self.buf.copy_to_slice(&mut bytes);
                return Poll::Ready(
                    match handshake::interpret_reply(&self.shared.name, &bytes) {
                        Ok(limit) => {
                            self.shared.set_peer_limit(limit);
                            self.reply_pending = false;
                            Ok(())
                        }
                        Err(e) => {
                            self.failed = Some(e.to_string());
                            Err(e)
                        }
                    },
                );
            }
            let had = self.buf.len();
            match ready!(self.poll_fill(cx)) {
                Ok(()) => {}
                Err(Error::Closed) => {
                    return Poll::Ready(Err(handshake::reply_cut_short(&self.shared.name, had)))
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The one receive path, behind `recv` and the `Stream` impls.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes>> {
        self.shared.check_shutdown()?;
        if let Some(why) = &self.failed {
            return Poll::Ready(Err(Error::Protocol(format!(
                "the connection was closed after an earlier error: {why}"
            ))));
        }
        ready!(self.poll_reply(cx))?;
        if self.peer_ended {
            return Poll::Ready(Err(Error::Closed));
        }
        loop {
            if let Some((payload, len)) = &mut self.large {
                if payload.len() == *len {
                    let msg = std::mem::take(payload).freeze();
                    self.large = None;
                    return Poll::Ready(Ok(msg));
                }
                let want = *len - payload.len();
                if let Err(e) = ready!(poll_read_into(&self.shared, cx, &mut payload.limit(want))) {
                    return Poll::Ready(Err(self.mid_message(e)));
                }
                continue;
            }
            if self.shared.raw {
                if !self.buf.is_empty() {
                    return Poll::Ready(Ok(self.buf.split().freeze()));
                }
            } else if self.buf.len() >= HEADER_LEN {
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&self.buf[..HEADER_LEN]);
                let len = match Header::decode(&h, self.limit) {
                    Ok(h) if h.end => {
                        self.buf.advance(HEADER_LEN);
                        self.peer_ended = true;
                        return Poll::Ready(Err(Error::Closed));
                    }
                    Ok(h) => h.len as usize,
                    Err(e) => return Poll::Ready(Err(self.fail(e))),
                };
                self.expect_large = len >= LARGE;
                if self.buf.len() >= HEADER_LEN + len {
                    self.buf.advance(HEADER_LEN);
                    return Poll::Ready(Ok(self.buf.split_to(len).freeze()));
                }
                if len >= LARGE {
                    // Its own buffer, sized once; only what already arrived is copied.
                    self.buf.advance(HEADER_LEN);
                    let mut payload = payload_buffer(len);
                    payload.extend_from_slice(&self.buf.split());
                    self.large = Some((payload, len));
                    continue;
                }
                self.buf.reserve(HEADER_LEN + len - self.buf.len());
            }
            if let Err(e) = ready!(self.poll_fill(cx)) {
                return Poll::Ready(Err(self.mid_message(e)));
            }
        }
    }

    /// Reads what the socket has into the buffer (only the next header, after a large
    /// message, see `expect_large`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.buf.capacity() - self.buf.len() < RECV_BUF / 2 {
            self.buf.reserve(RECV_BUF);
        }
        if self.expect_large && !self.shared.raw && self.buf.len() < HEADER_LEN {
            let want = HEADER_LEN - self.buf.len();
            return poll_read_into(&self.shared, cx, &mut (&mut self.buf).limit(want));
        }
        poll_read_into(&self.shared, cx, &mut self.buf)
    }

    /// End of stream inside a message is a protocol error.
    fn mid_message(&mut self, e: Error) -> Error {
        let got = self.buf.len() + self.large.as_ref().map_or(0, |(p, _)| p.len());
        if matches!(e, Error::Closed) && got > 0 && !self.shared.raw {
            let msg = format!(
                "the peer closed the connection in the middle of a message ({got} bytes of it received)"
            );
            self.failed = Some(msg.clone());
            return Error::Protocol(msg);
        }
        e
    }

    fn fail(&mut self, e: frame::DecodeError) -> Error {
        use crate::sys::Cancel;
        self.shared.stream.cancel();
        self.shared.stream.finish();
        let err = Error::from_bad_header(e);
        self.failed = Some(err.to_string());
        err
    }
}

impl fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("name", &self.shared.name.as_str())
            .field("buffered", &self.buf.len())
            .finish()
    }
}

/// A message on its way out: header and payload, and how much of both is written.
struct Outgoing {
    header: [u8; HEADER_LEN],
    header_len: usize,
    payload: Bytes,
    written: usize,
}

impl Outgoing {
    fn total(&self) -> usize {
        self.header_len + self.payload.len()
    }
}

/// The sending half of an async [`Connection`].
pub struct SendHalf {
    shared: Arc<AsyncShared>,
    queue: VecDeque<Outgoing>,
    failed: Option<&'static str>,
    /// `close` queued the end-of-stream header (transports without half-close).
    end_queued: bool,
}

/// The two slices still to write of a message whose first `written` bytes are out.
fn remaining<'a>(header: &'a [u8], payload: &'a [u8], written: usize) -> [IoSlice<'a>; 2] {
    let h = written.min(header.len());
    let p = written.saturating_sub(header.len());
    [IoSlice::new(&header[h..]), IoSlice::new(&payload[p..])]
}

impl SendHalf {
    /// Sends one message. See [`Connection::send`] (a send half has no handshake reply to
    /// wait for: a client's connection reads it before it splits).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send`]); use `feed` + `flush`.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.flush().await?;
        let header = self.check(msg.len())?;
        let header: &[u8] = if self.shared.raw { &[] } else { &header };
        let total = header.len() + msg.len();
        let mut written = 0;
        loop {
            match self
                .shared
                .stream
                .try_write_vectored(&remaining(header, msg, written))
            {
                Ok(n) => {
                    written += n;
                    if written == total {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if written > 0 {
                        // Part of the message is out: write the rest straight from `msg`.
                        return self.send_rest(header, msg, written).await;
                    }
                    // Nothing written yet: dropping the future here sends nothing.
                    poll_fn(|cx| self.shared.stream.poll_write_ready(cx))
                        .await
                        .map_err(|e| self.shared.error(e, "send", None))?;
                }
                Err(e) => return Err(self.shared.error(e, "send", None)),
            }
        }
    }

    /// Finishes a message of which `written` bytes (of `header` then `msg`) are out, straight
    /// from `msg`: no copy. If this future is dropped before the end (a cancel or a timeout)
    /// or the write fails, half a frame is on the wire and the stream cannot be framed any
    /// more: a guard poisons the sending side and ends our sending direction, so the peer
    /// sees a truncated message (a protocol error) at once, as after a blocking send that
    /// timed out part-way. Giving up costs nothing proportional to the message (this path
    /// once queued a copy of the rest, which cost milliseconds for a large message at a
    /// shutdown that was going to discard it anyway).
    async fn send_rest(&mut self, header: &[u8], msg: &[u8], written: usize) -> Result<()> {
        struct Rest<'a> {
            shared: &'a AsyncShared,
            failed: &'a mut Option<&'static str>,
            written: usize,
            done: bool,
        }
        impl Drop for Rest<'_> {
            fn drop(&mut self) {
                // Raw mode has no frames to break: the bytes written so far stay written.
                if !self.done && !self.shared.raw {
                    *self.failed =
                        Some("an earlier send was cancelled or failed part-way through a message");
                    let _ = self.shared.stream.shutdown_write();
                }
            }
        }
        let total = header.len() + msg.len();
        let mut rest = Rest {
            shared: &self.shared,
            failed: &mut self.failed,
            written,
            done: false,
        };
        loop {
            rest.shared.check_shutdown()?;
            if let Err(e) = poll_fn(|cx| rest.shared.stream.poll_write_ready(cx)).await {
                return Err(rest.shared.error(e, "send", None));
            }
            match rest
                .shared
                .stream
                .try_write_vectored(&remaining(header, msg, rest.written))
            {
                Ok(n) => {
                    rest.written += n;
                    if rest.written == total {
                        rest.done = true;
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(rest.shared.error(e, "send", None)),
            }
        }
    }

    /// Queues a message for [`flush`](SendHalf::flush). See [`Connection::feed`].
    pub fn feed(&mut self, msg: Bytes) -> Result<()> {
        let header = self.check(msg.len())?;
        self.queue.push_back(Outgoing {
            header,
            header_len: if self.shared.raw { 0 } else { HEADER_LEN },
            payload: msg,
            written: 0,
        });
        Ok(())
    }

    /// Writes every queued message. See [`Connection::flush`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Writes queued messages, then closes the sending direction.
    pub async fn close(mut self) -> Result<()> {
        poll_fn(|cx| self.poll_end(cx)).await
    }

    /// Writes queued messages, then ends the sending direction. Where the transport has no
    /// half-close (Windows pipes), a framed connection says so in-band with the end-of-stream
    /// header and keeps the pipe open, so that the receiving half goes on working as on Unix.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !crate::sys::HALF_CLOSE && !self.shared.raw && (self.end_queued || self.failed.is_none())
        {
            if !self.end_queued {
                self.queue.push_back(Outgoing {
                    header: Header::end_of_stream().encode(),
                    header_len: HEADER_LEN,
                    payload: Bytes::new(),
                    written: 0,
                });
                self.end_queued = true;
                self.failed = Some("its sending direction was closed");
            }
            return match ready!(self.poll_flush(cx)) {
                // The peer is gone already: there is nobody left to tell.
                Err(Error::Closed) => Poll::Ready(Ok(())),
                other => Poll::Ready(other),
            };
        }
        ready!(self.poll_flush(cx))?;
        match self.shared.stream.shutdown_write() {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(self.shared.error(e, "close", None))),
        }
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.shared.peer()
    }

    /// Checks the state and the size; returns the header to send.
    fn check(&self, len: usize) -> Result<[u8; HEADER_LEN]> {
        self.shared.check_shutdown()?;
        if let Some(why) = self.failed {
            return Err(Error::Protocol(format!(
                "this connection can no longer send: {why}"
            )));
        }
        if self.shared.raw {
            return Ok([0; HEADER_LEN]);
        }
        let limit = self.shared.peer_limit();
        if len > limit as usize {
            return Err(Error::MessageTooLarge {
                len: len as u64,
                max: limit.into(),
            });
        }
        Ok(Header::new(len as u32).encode())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while let Some(out) = self.queue.front_mut() {
            self.shared.check_shutdown()?;
            if let Err(e) = ready!(self.shared.stream.poll_write_ready(cx)) {
                return Poll::Ready(Err(self.shared.error(e, "send", None)));
            }
            let res = self.shared.stream.try_write_vectored(&remaining(
                &out.header[..out.header_len],
                &out.payload,
                out.written,
            ));
            match res {
                Ok(n) => {
                    out.written += n;
                    if out.written == out.total() {
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    self.failed = Some("an earlier send failed part-way through a message");
                    return Poll::Ready(Err(self.shared.error(e, "send", None)));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("name", &self.shared.name.as_str())
            .field("queued", &self.queue.len())
            .finish()
    }
}

// ---- futures traits ----

/// A stream of received messages; ends (`None`) when the peer closes the connection.
impl futures_core::Stream for RecvHalf {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        match ready!(self.poll_recv(cx)) {
            Err(Error::Closed) => Poll::Ready(None),
            other => Poll::Ready(Some(other)),
        }
    }
}

/// A sink of messages. `poll_ready` first flushes what is queued, so at most one message
/// waits in the connection (backpressure comes from the socket).
impl futures_sink::Sink<Bytes> for SendHalf {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        SendHalf::poll_flush(&mut self, cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        self.feed(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        SendHalf::poll_flush(&mut self, cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_end(cx)
    }
}

/// See [`RecvHalf`]'s `Stream` impl.
impl futures_core::Stream for Connection {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        Pin::new(&mut self.recv).poll_next(cx)
    }
}

/// See [`SendHalf`]'s `Sink` impl.
impl futures_sink::Sink<Bytes> for Connection {
    type Error = Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        // A client learns the server's limit from its reply; read it before accepting items
        // so that `start_send` checks against the real limit.
        if !self.send.shared.raw && !self.send.shared.peer_limit_known() {
            ready!(self.recv.poll_reply(cx))?;
        }
        Pin::new(&mut self.send).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<()> {
        Pin::new(&mut self.send).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        futures_sink::Sink::<Bytes>::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        futures_sink::Sink::<Bytes>::poll_close(Pin::new(&mut self.send), cx)
    }
}
