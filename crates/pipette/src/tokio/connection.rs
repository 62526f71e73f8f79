//! The async connection: the same messages as the blocking one, as futures, a `Stream` and a
//! `Sink`.
//!
//! This is the tokio driver of the protocol engine (`proto`): it moves bytes between tokio's
//! reactor and the engine's decoder and encoder, and waits. Every protocol decision is the
//! engine's.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::stream::Stream;
use crate::error::{Error, Operation, Result};
use crate::frame::{HEADER_LEN, REPLY_LEN};
use crate::proto::{Decoded, Outgoing, LARGE_MESSAGE};
use crate::shared::{Receiver, Sender, Shared};
use crate::shutdown::Shutdown;
use crate::sys::{aio, AsyncStream};
use crate::{Encoding, Name, PeerIdentity, ReuniteError};

/// How much room a read asks for at least. Small messages arrive whole with one read.
const RECV_BUF: usize = HEADER_LEN + LARGE_MESSAGE;

pub(crate) type AsyncShared = Shared<aio::Stream>;

#[cfg(unix)]
mod descriptors;
#[cfg(windows)]
mod handles;
mod shm;

/// An async connection carrying whole messages; the async twin of
/// [`pipette::Connection`](crate::Connection), with the same wire bytes.
///
/// Receive with [`recv`](Connection::recv) or as a [`futures_core::Stream`] of
/// `Result<Bytes>` (which ends when the peer closes, or after a fatal error); send with
/// [`send`](Connection::send), or [`feed`](Connection::feed) + [`flush`](Connection::flush),
/// or as a [`futures_sink::Sink<Bytes>`]. Received messages are [`Bytes`] cut from the receive
/// buffer without a copy.
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
    /// Fails only when a shared-memory connection cannot register its eventfds with the
    /// reactor.
    pub(crate) fn new(shared: AsyncShared, our_limit: u32) -> io::Result<Connection> {
        let (shm_recv, shm_send) = match &shared.shm {
            Some(link) => {
                let (r, s) = shm::halves(link)?;
                (Some(r), Some(s))
            }
            None => (None, None),
        };
        let shared = Arc::new(shared);
        let mut rx = Receiver::new(our_limit);
        if shared.accepts_descriptors {
            rx.decoder.accept_descriptors();
        }
        Ok(Connection {
            recv: RecvHalf {
                shared: shared.clone(),
                buf: BytesMut::new(),
                rx,
                large: None,
                timeout: None,
                terminated: false,
                fresh: true,
                shm: shm_recv,
                #[cfg(unix)]
                claimed: descriptors::Claimed::default(),
                #[cfg(windows)]
                claimed: handles::Claimed::default(),
            },
            send: SendHalf {
                tx: Sender::new(shared.raw),
                shared,
                queue: VecDeque::new(),
                timeout: None,
                shm: shm_send,
            },
        })
    }

    /// A server's connection to a client it admitted; `None` (logged, and the connection
    /// closed) in the unlikely case that `new` fails.
    pub(crate) fn admitted(shared: AsyncShared, our_limit: u32) -> Option<Connection> {
        match Connection::new(shared, our_limit) {
            Ok(conn) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for a connection's shared memory on the runtime; dropping it");
                None
            }
        }
    }

    /// A client reads the server's reply now (bounded by `t`), not with its first message.
    pub(crate) async fn settle_reply(&mut self, t: Duration) -> Result<()> {
        let reply = poll_fn(|cx| self.recv.poll_reply(cx));
        bounded(Some(t), Operation::Handshake, reply).await
    }

    /// Receives one whole message.
    ///
    /// Returns [`Error::Closed`] once the peer has closed the connection and every message it
    /// sent has been received. Waits up to the read timeout
    /// ([`set_read_timeout`](Connection::set_read_timeout)), forever by default.
    ///
    /// # Errors
    ///
    /// As the blocking [`Connection::recv`](crate::Connection::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes of a message that arrived before the future was dropped stay in
    /// the connection, and the next `recv` returns the whole message.
    pub async fn recv(&mut self) -> Result<Bytes> {
        self.recv.recv().await
    }

    /// Receives one message into `buf`, replacing its contents and reusing its allocation;
    /// returns the message length.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv) (`buf` is left unchanged).
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv.recv_into(buf).await
    }

    /// Receives one message that must be valid UTF-8.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), and [`Error::NotUtf8`] (which keeps the bytes; the
    /// connection stays usable).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv).
    pub async fn recv_string(&mut self) -> Result<String> {
        self.recv.recv_string().await
    }

    /// Receives one message that must be text in `encoding` (see
    /// [`send_text`](Connection::send_text)). In raw mode that is whatever bytes have arrived
    /// (docs/INTEROP.md).
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), and [`Error::NotUtf8`] or [`Error::NotUtf16`] (which
    /// keep the bytes; the connection stays usable).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv).
    pub async fn recv_text(&mut self, encoding: Encoding) -> Result<String> {
        self.recv.recv_text(encoding).await
    }

    /// Receives one message, failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv); a timeout loses nothing either.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Bytes> {
        self.recv.recv_timeout(timeout).await
    }

    /// Receives one message if it can be done without waiting: `Ok(None)` when no whole
    /// message has arrived yet (what has arrived of one is kept).
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), except that it never times out.
    pub fn try_recv(&mut self) -> Result<Option<Bytes>> {
        self.recv.try_recv()
    }

    /// Sends one message: one vectored write of header and payload when the socket has
    /// room. A message larger than the peer accepts fails with [`Error::MessageTooLarge`]
    /// before anything is written. Waits up to the write timeout
    /// ([`set_write_timeout`](Connection::set_write_timeout)), forever by default.
    ///
    /// # Errors
    ///
    /// As the blocking [`Connection::send`](crate::Connection::send).
    ///
    /// # Cancel safety
    ///
    /// **Not cancel safe.** Dropped before anything was written, it sent nothing and the
    /// connection is unchanged. Dropped after part of the message was written (a large
    /// message, a slow reader), the connection can no longer send: its sending direction is
    /// closed, the peer sees a truncated message (a protocol error), and later sends fail
    /// with [`Error::Broken`], exactly as after a blocking
    /// [`send_timeout`](crate::Connection::send_timeout) that expires part-way (in raw mode
    /// the bytes written so far simply stay written). Giving up never costs a copy of the
    /// message. The cancel-safe way to send is [`feed`](Connection::feed) (synchronous, takes
    /// an owned [`Bytes`]) followed by [`flush`](Connection::flush), which never cut a
    /// message.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send.send(msg).await
    }

    /// Sends a UTF-8 string as one message.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send.send(msg.as_bytes()).await
    }

    /// Sends a string as one message in `encoding`, for peers that do not speak UTF-8, such
    /// as a .NET program reading with `Encoding.Unicode`
    /// ([`Encoding::Utf16Le`](crate::Encoding::Utf16Le)). The size limit applies to the
    /// encoded bytes.
    ///
    /// ```
    /// use pipette::Encoding;
    /// use pipette::tokio::{Client, Server};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// let name = format!("doc-async-text-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name).await?;
    /// client.send_text("héllo", Encoding::Utf16Le).await?;
    ///
    /// let mut conn = server.accept().await?;
    /// assert_eq!(conn.recv_text(Encoding::Utf16Le).await?, "héllo");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_text(&mut self, text: &str, encoding: Encoding) -> Result<()> {
        self.send.send_text(text, encoding).await
    }

    /// Sends one message, failing with [`Error::TimedOut`] after `timeout`.
    ///
    /// If the timeout expires before anything was written, nothing was sent and the
    /// connection stays usable. If it expires part-way through a large message, the
    /// connection cannot carry further messages, as with the blocking
    /// [`send_timeout`](crate::Connection::send_timeout).
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as [`send`](Connection::send).
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send.send_timeout(msg, timeout).await
    }

    /// Queues one message without waiting; [`flush`](Connection::flush) writes it. Checks the
    /// size limit at once.
    ///
    /// A client that has not yet received the server's handshake reply knows only the
    /// protocol's minimum limit (4096 bytes); `feed` of a larger message then fails with
    /// `MessageTooLarge` (use `send`, which reads the reply first, or `recv` first).
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`], [`Error::Shutdown`], [`Error::Broken`].
    pub fn feed(&mut self, msg: Bytes) -> Result<()> {
        self.send.feed(msg)
    }

    /// Writes every queued message.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was written stays written, the rest stays queued for the next
    /// `flush` (or `send`).
    pub async fn flush(&mut self) -> Result<()> {
        self.send.flush().await
    }

    /// Sets the timeout that [`recv`](Connection::recv) and its variants use; `None` waits
    /// forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.recv.set_read_timeout(timeout)
    }

    /// Sets the timeout that [`send`](Connection::send) and [`flush`](Connection::flush)
    /// use; `None` waits forever.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.send.set_write_timeout(timeout)
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.recv.timeout
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.send.timeout
    }

    /// Who is on the other end, if the platform could tell (see
    /// [`pipette::Connection::peer`](crate::Connection::peer)).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.send.shared.peer.as_ref()
    }

    /// The endpoint name this connection was made through.
    pub fn name(&self) -> &Name {
        &self.send.shared.name
    }

    /// Whether this is a raw byte-stream connection.
    pub fn is_raw(&self) -> bool {
        self.send.shared.raw
    }

    /// Whether messages on this connection may carry descriptors (Unix) or handles
    /// (Windows): both sides asked
    /// ([`ServerOptions::descriptors`](crate::ServerOptions::descriptors),
    /// [`ClientOptions::descriptors`](crate::ClientOptions::descriptors)) and the platform
    /// can (Unix sockets; on Windows, each side can open the other's process with
    /// `PROCESS_DUP_HANDLE`). Known from `connect` and `accept` on. See
    /// `send_with_descriptors` (Unix), `send_with_handles` (Windows).
    pub fn passes_descriptors(&self) -> bool {
        self.send.passes_descriptors()
    }

    /// Whether messages travel through shared memory (both sides asked for it and the
    /// platform can: see [`ClientOptions::shared_memory`](crate::ClientOptions::shared_memory))
    /// rather than the socket. Such a connection waits for the ring on the runtime's reactor.
    pub fn is_shared_memory(&self) -> bool {
        self.send.shared.shm.is_some()
    }

    /// The largest message this side accepts.
    pub fn max_message_size(&self) -> usize {
        self.recv.rx.decoder.limit() as usize
    }

    /// The largest message the peer accepts, as far as known (see
    /// [`pipette::Connection::peer_max_message_size`](crate::Connection::peer_max_message_size)).
    pub fn peer_max_message_size(&self) -> usize {
        self.send.peer_max_message_size()
    }

    /// Whether a whole message (or the peer's end, or a failure) is already buffered, so
    /// that [`recv`](Connection::recv) returns without waiting (see
    /// [`pipette::Connection::is_message_buffered`](crate::Connection::is_message_buffered)).
    pub fn is_message_buffered(&self) -> bool {
        self.recv.is_message_buffered()
    }

    /// The handle whose `shutdown()` ends every operation of this connection.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.send.shared.shutdown.clone()
    }

    /// Splits into owned halves for two tasks. Never waits and cannot fail: a client's
    /// handshake reply is read by whichever half needs it first (see
    /// [`pipette::Connection::split`](crate::Connection::split)).
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }

    /// Turns the connection into a raw byte stream (`AsyncRead + AsyncWrite`) after the
    /// handshake; bytes already received are read first.
    ///
    /// # Errors
    ///
    /// A client's handshake errors, [`Error::InvalidConfig`] in the middle of a message or
    /// on a shared-memory connection (its messages do not travel through the socket), and
    /// errors writing what was queued.
    ///
    /// # Cancel safety
    ///
    /// Consumes the connection: dropping the future drops the connection.
    pub async fn into_stream(mut self) -> Result<Stream> {
        if self.is_shared_memory() {
            return Err(crate::shm::no_stream());
        }
        poll_fn(|cx| self.recv.poll_reply(cx)).await?;
        self.recv.rx.at_boundary()?;
        self.send.flush().await?;
        Ok(Stream::new(self.recv.shared, self.recv.buf))
    }

    /// Closes in an orderly way: a client first checks the server's handshake reply, queued
    /// messages are written, then the sending direction is closed.
    ///
    /// # Errors
    ///
    /// A client's handshake errors, and errors writing what was queued.
    ///
    /// # Cancel safety
    ///
    /// Consumes the connection: dropping the future drops the connection.
    pub async fn close(mut self) -> Result<()> {
        poll_fn(|cx| self.recv.poll_reply(cx)).await?;
        self.send.close().await
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
    rx: Receiver,
    /// The payload of a large message being received straight into its own buffer.
    large: Option<BytesMut>,
    timeout: Option<Duration>,
    /// The `Stream` of messages has ended (the peer closed, or a fatal error was yielded).
    terminated: bool,
    /// No message read yet: the first read bypasses the reactor's readiness (see
    /// `poll_read_into`). On a client too, although it has read the server's reply through
    /// the reactor by then: the server sends its first answer right after the reply, so
    /// when the reply came alone the answer has usually arrived by the time this read runs,
    /// and asking the socket finds it without a turn of the reactor (measured per process:
    /// waiting for the reactor instead saved the `recv` that failed in about 15 % of the
    /// connections and cost 0.4–1.1 more `epoll_wait` per connection).
    fresh: bool,
    /// The ring messages arrive through, on a shared-memory connection.
    shm: Option<shm::ShmRecv>,
    /// The descriptors of the message being received, for `recv_with_descriptors`.
    #[cfg(unix)]
    claimed: descriptors::Claimed,
    /// The handles of the message being received, for `recv_with_handles`.
    #[cfg(windows)]
    claimed: handles::Claimed,
}

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

/// Reads what the socket has into `buf`, waiting for readiness when it has nothing (a
/// read the reactor knows would block costs no system call). `Ok(0)`: end of stream.
/// `fresh`: the connection's first read, which asks the socket directly: its first message
/// has usually arrived before the reactor has seen the socket at all. On a shared-memory
/// connection (`ring`), the same read out of the ring (out of line).
#[inline(always)]
fn poll_read_into<B: BufMut>(
    shared: &AsyncShared,
    ring: &mut Option<shm::ShmRecv>,
    cx: &mut Context<'_>,
    buf: &mut B,
    fresh: bool,
) -> Poll<io::Result<usize>> {
    if let Some(ring) = ring {
        return ring.poll_read(cx, &shared.stream, buf);
    }
    if fresh {
        match shared.stream.read_buf_now(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return Poll::Ready(other),
        }
    }
    loop {
        match shared.stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(shared.stream.poll_read_ready(cx))?;
            }
            other => return Poll::Ready(other),
        }
    }
}

/// Runs `f` with `timeout` when one is set; an expired timeout is `TimedOut { op }`.
async fn bounded<T>(
    timeout: Option<Duration>,
    op: Operation,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        None => f.await,
        Some(t) => match ::tokio::time::timeout(t, f).await {
            Ok(r) => r,
            Err(_) => Err(Error::TimedOut { op, after: t }),
        },
    }
}

impl RecvHalf {
    /// Receives one whole message. See [`Connection::recv`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Result<Bytes> {
        match self.timeout {
            None => poll_fn(|cx| self.poll_recv(cx)).await,
            t => bounded(t, Operation::Recv, poll_fn(|cx| self.poll_recv(cx))).await,
        }
    }

    /// Receives one message into `buf`. See [`Connection::recv_into`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        let msg = self.recv().await?;
        buf.clear();
        buf.extend_from_slice(&msg);
        Ok(msg.len())
    }

    /// Receives one UTF-8 message. See [`Connection::recv_string`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_string`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_string(&mut self) -> Result<String> {
        let msg = self.recv().await?;
        String::from_utf8(msg.into()).map_err(Error::NotUtf8)
    }

    /// Receives one message in `encoding`. See [`Connection::recv_text`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_text`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_text(&mut self, encoding: Encoding) -> Result<String> {
        encoding.decode(self.recv().await?)
    }

    /// Receives one message with a timeout. See [`Connection::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Bytes> {
        bounded(
            Some(timeout),
            Operation::Recv,
            poll_fn(|cx| self.poll_recv(cx)),
        )
        .await
    }

    /// Receives one message without waiting. See [`Connection::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Bytes>> {
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        match self.poll_recv(&mut cx) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// See [`Connection::is_message_buffered`].
    pub fn is_message_buffered(&self) -> bool {
        self.rx.decoder.ready(&self.buf) || (self.shared.raw && !self.buf.is_empty())
    }

    /// Sets the read timeout. See [`Connection::set_read_timeout`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Who is on the other end.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.shared.peer.as_ref()
    }

    /// The largest message this side accepts.
    pub fn max_message_size(&self) -> usize {
        self.rx.decoder.limit() as usize
    }

    /// Puts the two halves of one connection back together.
    ///
    /// # Errors
    ///
    /// The two halves, unchanged, when they come from different connections.
    #[allow(clippy::result_large_err)] // rare, and the halves are given back whole
    pub fn reunite(
        self,
        send: SendHalf,
    ) -> std::result::Result<Connection, ReuniteError<SendHalf, RecvHalf>> {
        if Arc::ptr_eq(&self.shared, &send.shared) {
            Ok(Connection { recv: self, send })
        } else {
            Err(ReuniteError { send, recv: self })
        }
    }

    /// Reads and checks the server's handshake reply, if this half is the first to need it:
    /// into the receive buffer, so that the first messages usually come with it.
    #[cold]
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.shared.reply.limit().is_some() || self.shared.raw {
            return Poll::Ready(Ok(()));
        }
        self.rx.sticky.check()?;
        let shared = self.shared.clone();
        loop {
            {
                let mut reader = shared.reply.lock();
                if let Some(result) = shared.reply.settle(&reader) {
                    return Poll::Ready(self.rx.reply(&shared, result));
                }
                let n = reader.feed(&self.buf);
                self.buf.advance(n);
                if reader.result().is_some() {
                    continue;
                }
                // Read under the lock (never waiting), so that the send half, which may read
                // the reply too, sees every byte in order.
                self.buf.reserve(RECV_BUF);
                match shared.stream.try_read_buf(&mut self.buf) {
                    Ok(0) => {
                        reader.end_of_stream();
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        return Poll::Ready(Err(
                            match shared.error(e, Operation::Handshake, None) {
                                Error::Closed => {
                                    reader.end_of_stream();
                                    continue;
                                }
                                other => other,
                            },
                        ))
                    }
                }
            }
            if let Err(e) = ready!(shared.stream.poll_read_ready(cx)) {
                return Poll::Ready(Err(shared.error(e, Operation::Handshake, None)));
            }
        }
    }

    /// The one receive path, behind `recv`, `try_recv` and the `Stream` impls.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes>> {
        self.shared.check_shutdown()?;
        self.rx.sticky.check()?;
        if self.shared.raw {
            return self.poll_raw(cx);
        }
        if self.shared.reply.limit().is_none() {
            ready!(self.poll_reply(cx))?;
        }
        loop {
            if let Some(payload) = &mut self.large {
                let missing = self
                    .rx
                    .decoder
                    .large_in_progress()
                    .map_or(0, |(len, received)| len - received);
                if missing > 0 {
                    match ready!(poll_read_into(
                        &self.shared,
                        &mut self.shm,
                        cx,
                        &mut payload.limit(missing),
                        false
                    )) {
                        Ok(0) => {
                            return Poll::Ready(Err(self
                                .rx
                                .end_of_stream(&self.shared, self.buf.len())))
                        }
                        Ok(n) => {
                            self.rx.decoder.payload_received(n);
                        }
                        Err(e) => return Poll::Ready(Err(self.read_error(e))),
                    }
                    continue;
                }
                let msg = self.large.take().unwrap_or_default().freeze();
                self.complete();
                return Poll::Ready(self.finished(msg));
            }
            match self.rx.decoder.decode(&self.buf) {
                Decoded::Message { len } => {
                    if self.rx.decoder.descriptors() != 0 {
                        self.claim()?;
                        self.complete();
                    }
                    self.buf.advance(HEADER_LEN);
                    let msg = self.buf.split_to(len).freeze();
                    return Poll::Ready(self.finished(msg));
                }
                Decoded::NeedMore { at_most, capacity } => {
                    if self.buf.capacity() < capacity
                        || self.buf.capacity() - self.buf.len() < RECV_BUF / 2
                    {
                        self.buf.reserve(capacity.max(RECV_BUF));
                    }
                    let fresh = std::mem::take(&mut self.fresh);
                    let (shared, ring) = (&self.shared, &mut self.shm);
                    let read = match at_most {
                        Some(n) => {
                            poll_read_into(shared, ring, cx, &mut (&mut self.buf).limit(n), fresh)
                        }
                        None => poll_read_into(shared, ring, cx, &mut self.buf, fresh),
                    };
                    match ready!(read) {
                        Ok(0) => {
                            return Poll::Ready(Err(self
                                .rx
                                .end_of_stream(&self.shared, self.buf.len())))
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Err(self.read_error(e))),
                    }
                }
                Decoded::LargeMessage { len } => {
                    if self.rx.decoder.descriptors() != 0 {
                        self.claim()?;
                    }
                    // Its own buffer, sized once; only what already arrived is copied.
                    self.buf.advance(HEADER_LEN);
                    let mut payload = payload_buffer(len);
                    let take = len.min(self.buf.len());
                    payload.extend_from_slice(&self.buf.split_to(take));
                    self.rx.decoder.payload_received(take);
                    self.large = Some(payload);
                }
                Decoded::End { consume } => {
                    self.buf.advance(consume);
                    return Poll::Ready(Err(Error::Closed));
                }
                Decoded::Failed(f) => return Poll::Ready(Err(self.rx.fail(&self.shared, &f))),
            }
        }
    }

    /// The error for a failed read (`Receiver::read_failure`).
    #[cold]
    fn read_error(&mut self, e: io::Error) -> Error {
        self.rx.read_failure(&self.shared, e, None)
    }

    /// A message is complete: the descriptors it carried, if any, stay for
    /// `recv_with_descriptors` or are closed.
    #[inline]
    fn complete(&mut self) {
        #[cfg(unix)]
        self.claimed.complete();
    }

    /// A whole message, as received (Windows: without the values of the handles it
    /// carries, which are taken now; see `handles.rs`).
    #[cfg(unix)]
    #[inline(always)]
    fn finished(&mut self, msg: Bytes) -> Result<Bytes> {
        Ok(msg)
    }

    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes>> {
        if self.buf.is_empty() {
            self.buf.reserve(RECV_BUF);
            match ready!(poll_read_into(
                &self.shared,
                &mut self.shm,
                cx,
                &mut self.buf,
                false
            )) {
                Ok(0) => return Poll::Ready(Err(self.shared.eof())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(self.shared.error(e, Operation::Recv, None))),
            }
        }
        Poll::Ready(Ok(self.buf.split().freeze()))
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

/// The sending half of an async [`Connection`].
pub struct SendHalf {
    shared: Arc<AsyncShared>,
    tx: Sender,
    /// Messages fed and not yet flushed.
    queue: VecDeque<(Outgoing, Bytes)>,
    timeout: Option<Duration>,
    /// The ring messages leave through, on a shared-memory connection.
    shm: Option<shm::ShmSend>,
}

/// What is left of a send after its synchronous first attempt.
enum Rest {
    /// The message is out.
    Nothing,
    /// Framed: the rest of it (possibly all of it) still to write.
    Write(Outgoing),
    /// Queued messages or the server's reply first: the whole path.
    Everything,
}

/// Writes what it can of the rest of a message now, into the ring on a shared-memory
/// connection (`ring`), else into the socket; `WouldBlock` when there is no room.
fn write_some(
    shared: &AsyncShared,
    ring: &mut Option<shm::ShmSend>,
    out: &Outgoing,
    payload: &[u8],
) -> io::Result<usize> {
    match ring {
        Some(ring) => {
            let (h, p) = out.remaining(payload);
            ring.write_now(h, p)
        }
        None => shared.stream.try_write_vectored(&io_slices(out, payload)),
    }
}

/// Ready when `write_some` may find room: in the ring (or the peer is gone), or the socket.
fn poll_writable(
    shared: &AsyncShared,
    ring: &mut Option<shm::ShmSend>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match ring {
        Some(ring) => ring.poll_room_for(cx, &shared.stream, 1),
        None => shared.stream.poll_write_ready(cx),
    }
}

/// The two slices still to write of a message.
fn io_slices<'a>(out: &'a Outgoing, payload: &'a [u8]) -> [IoSlice<'a>; 2] {
    let (h, p) = out.remaining(payload);
    [IoSlice::new(h), IoSlice::new(p)]
}

impl SendHalf {
    /// Sends one message. See [`Connection::send`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send`]); use `feed` + `flush`.
    pub async fn send(&mut self, msg: &[u8]) -> Result<()> {
        match self.send_now(msg)? {
            Rest::Nothing => Ok(()),
            rest => {
                let t = self.timeout;
                bounded(t, Operation::Send, self.send_rest(rest, msg)).await
            }
        }
    }

    /// Sends a UTF-8 string as one message.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send`]).
    pub async fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send(msg.as_bytes()).await
    }

    /// Sends a string as one message in `encoding`. See [`Connection::send_text`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send`]).
    pub async fn send_text(&mut self, text: &str, encoding: Encoding) -> Result<()> {
        self.send(&encoding.encode(text)).await
    }

    /// Sends one message with a timeout. See [`Connection::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send`]).
    pub async fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        match self.send_now(msg)? {
            Rest::Nothing => Ok(()),
            rest => bounded(Some(timeout), Operation::Send, self.send_rest(rest, msg)).await,
        }
    }

    /// Queues a message for [`flush`](SendHalf::flush). See [`Connection::feed`].
    ///
    /// # Errors
    ///
    /// As [`Connection::feed`].
    pub fn feed(&mut self, msg: Bytes) -> Result<()> {
        self.shared.check_shutdown()?;
        let out = self
            .tx
            .frame(msg.len(), self.shared.reply.limit_or_minimum())?;
        self.queue.push_back((out, msg));
        Ok(())
    }

    /// Writes every queued message. See [`Connection::flush`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn flush(&mut self) -> Result<()> {
        let t = self.timeout;
        bounded(t, Operation::Send, poll_fn(|cx| self.poll_flush(cx))).await
    }

    /// Writes queued messages, then closes the sending direction.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub async fn close(mut self) -> Result<()> {
        let t = self.timeout;
        bounded(t, Operation::Close, poll_fn(|cx| self.poll_end(cx))).await
    }

    /// Sets the write timeout. See [`Connection::set_write_timeout`].
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Who is on the other end.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.shared.peer.as_ref()
    }

    /// The largest message the peer accepts, as far as known.
    pub fn peer_max_message_size(&self) -> usize {
        self.shared.peer_max_message_size()
    }

    /// Whether messages may carry descriptors. See [`Connection::passes_descriptors`].
    pub fn passes_descriptors(&self) -> bool {
        self.shared.passes_descriptors()
    }

    /// Puts the two halves of one connection back together. See [`RecvHalf::reunite`].
    ///
    /// # Errors
    ///
    /// The two halves, unchanged, when they come from different connections.
    #[allow(clippy::result_large_err)] // rare, and the halves are given back whole
    pub fn reunite(
        self,
        recv: RecvHalf,
    ) -> std::result::Result<Connection, ReuniteError<SendHalf, RecvHalf>> {
        recv.reunite(self)
    }

    /// The common case of a send, without waiting: nothing queued, the peer's limit known,
    /// and room in the socket for the whole message, which goes out in one system call.
    /// Returns what is left to do, which `send_rest` does at once (in the same poll: a
    /// message written in part is always in the hands of `write_all`'s guard before the
    /// future can be dropped).
    #[inline]
    fn send_now(&mut self, msg: &[u8]) -> Result<Rest> {
        self.shared.check_shutdown()?;
        self.tx.sticky.check()?;
        if !self.queue.is_empty() {
            return Ok(Rest::Everything);
        }
        let limit = match self.shared.reply.limit() {
            Some(limit) => limit,
            None if !self.tx.encoder.needs_peer_limit(msg.len()) => crate::frame::MIN_MESSAGE_LIMIT,
            None => return Ok(Rest::Everything),
        };
        let mut out = self.tx.frame(msg.len(), limit)?;
        let first = match &mut self.shm {
            Some(ring) => ring.write_now(out.header(), msg),
            None => self.shared.stream.write2_now(out.header(), msg),
        };
        match first {
            Ok(n) if out.advance(n) => Ok(Rest::Nothing),
            // Short, would block, or failed (the retry reports the error): `write_all`
            // goes on from where this stopped.
            Ok(_) | Err(_) => Ok(Rest::Write(out)),
        }
    }

    async fn send_rest(&mut self, rest: Rest, msg: &[u8]) -> Result<()> {
        match rest {
            Rest::Nothing => Ok(()),
            Rest::Write(out) => self.write_framed(out, msg).await,
            Rest::Everything => self.send_inner(msg).await,
        }
    }

    async fn send_inner(&mut self, msg: &[u8]) -> Result<()> {
        self.shared.check_shutdown()?;
        self.tx.sticky.check()?;
        poll_fn(|cx| self.poll_flush(cx)).await?;
        let limit = self.peer_limit_for(msg.len()).await?;
        let out = self.tx.frame(msg.len(), limit)?;
        self.write_framed(out, msg).await
    }

    /// Writes a framed message; a client whose server closed the connection reports the
    /// refusal that explains it, when there is one.
    async fn write_framed(&mut self, out: Outgoing, msg: &[u8]) -> Result<()> {
        match self.write_all(out, msg).await {
            // A server that refused us may already have closed the connection; its reply,
            // which says why, is waiting to be read: report that rather than "closed".
            Err(Error::Closed) if self.shared.reply.limit().is_none() && !self.shared.raw => {
                match self.peer_limit_for(usize::MAX).await {
                    Err(refusal) => Err(refusal),
                    Ok(_) => Err(Error::Closed),
                }
            }
            other => other,
        }
    }

    /// A client's server limit, reading the handshake reply here if the receiving half has
    /// not (exactly its bytes, under the slot's lock: nothing of the messages behind it is
    /// taken from the stream).
    async fn peer_limit_for(&mut self, len: usize) -> Result<u32> {
        if !self.tx.encoder.needs_peer_limit(len) {
            return Ok(self.shared.reply.limit_or_minimum());
        }
        let shared = self.shared.clone();
        loop {
            if let Some(limit) = shared.reply.limit() {
                return Ok(limit);
            }
            {
                let mut reader = shared.reply.lock();
                if let Some(result) = shared.reply.settle(&reader) {
                    return self.tx.reply(&shared, result);
                }
                let mut tmp = [0u8; REPLY_LEN];
                let want = reader.missing();
                match shared.stream.try_read(&mut tmp[..want]) {
                    Ok(0) => {
                        reader.end_of_stream();
                        continue;
                    }
                    Ok(n) => {
                        reader.feed(&tmp[..n]);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => match shared.error(e, Operation::Handshake, None) {
                        Error::Closed => {
                            reader.end_of_stream();
                            continue;
                        }
                        other => return Err(other),
                    },
                }
            }
            // Readiness for any number of waiters: the receive half may be waiting too.
            shared.check_shutdown()?;
            shared
                .stream
                .readable()
                .await
                .map_err(|e| shared.error(e, Operation::Handshake, None))?;
        }
    }

    /// Writes one message straight from `payload`, without copying it. If this future is
    /// dropped part-way (a cancel or a timeout), or the write fails part-way, a guard cuts
    /// the message (see `proto::Encoder::cut`): the sending side is poisoned and our direction
    /// ended, so the peer sees a truncated message at once. Giving up costs nothing
    /// proportional to the message.
    async fn write_all(&mut self, out: Outgoing, payload: &[u8]) -> Result<()> {
        struct Guard<'a> {
            half: &'a mut SendHalf,
            out: Outgoing,
        }
        impl Drop for Guard<'_> {
            fn drop(&mut self) {
                if self.out.started() && !self.out.is_done() {
                    let stream = &self.half.shared.stream;
                    self.half.tx.cut(
                        Error::protocol(
                            "an earlier send was cancelled or failed part-way through a message",
                        ),
                        || {
                            let _ = stream.shutdown_write();
                        },
                    );
                }
            }
        }
        let mut g = Guard { half: self, out };
        loop {
            let (shared, ring) = (&g.half.shared, &mut g.half.shm);
            match write_some(shared, ring, &g.out, payload) {
                Ok(n) => {
                    if g.out.advance(n) {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    shared.check_shutdown()?;
                    poll_fn(|cx| poll_writable(shared, ring, cx))
                        .await
                        .map_err(|e| shared.error(e, Operation::Send, None))?;
                }
                Err(e) => return Err(shared.error(e, Operation::Send, None)),
            }
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while let Some((out, payload)) = self.queue.front_mut() {
            self.shared.check_shutdown()?;
            self.tx.sticky.check()?;
            if let Err(e) = ready!(poll_writable(&self.shared, &mut self.shm, cx)) {
                return Poll::Ready(Err(self.shared.error(e, Operation::Send, None)));
            }
            match write_some(&self.shared, &mut self.shm, out, payload) {
                Ok(n) => {
                    if out.advance(n) {
                        self.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    let err = self.shared.error(e, Operation::Send, None);
                    if out.started() {
                        let stream = &self.shared.stream;
                        return Poll::Ready(Err(self.tx.cut(err, || {
                            let _ = stream.shutdown_write();
                        })));
                    }
                    return Poll::Ready(Err(err));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes queued messages, then ends the sending direction. Where the transport has no
    /// half-close (Windows pipes), a framed connection says so in-band with the end-of-stream
    /// header and keeps the pipe open, so that the receiving half goes on working as on Unix.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if !crate::sys::HALF_CLOSE && !self.tx.sticky.is_set() {
            if let Ok(Some(end)) = self.tx.encoder.end() {
                self.queue.push_back((end, Bytes::new()));
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
            Err(e) => Poll::Ready(Err(self.shared.error(e, Operation::Close, None))),
        }
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

/// A waker that does nothing, for `try_recv`'s single poll.
fn futures_task_noop() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    std::task::Waker::from(Arc::new(Noop))
}

// ---- futures traits ----

/// A stream of received messages; ends (`None`) when the peer closes the connection, and
/// after yielding an error that ends the connection (every error but a timeout).
impl futures_core::Stream for RecvHalf {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>> {
        if self.terminated {
            return Poll::Ready(None);
        }
        match ready!(self.poll_recv(cx)) {
            Ok(msg) => Poll::Ready(Some(Ok(msg))),
            Err(Error::Closed) => {
                self.terminated = true;
                Poll::Ready(None)
            }
            Err(e) => {
                if !matches!(e, Error::TimedOut { .. } | Error::NotUtf8(_)) {
                    self.terminated = true;
                }
                Poll::Ready(Some(Err(e)))
            }
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
        ready!(self.recv.poll_reply(cx))?;
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

#[cfg(unix)]
crate::shared::impl_as_fd! {
    Connection => send.shared.stream;
    RecvHalf => shared.stream;
    SendHalf => shared.stream;
}
