//! A connection: whole messages in both directions, usable from two threads when split.
//!
//! This is the blocking driver of the protocol engine (`proto`): it moves bytes between the
//! platform stream and the engine's decoder and encoder, and waits. Every protocol decision
//! is the engine's.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Operation, Result};
use crate::frame::HEADER_LEN;
use crate::proto::{Decoded, LARGE_MESSAGE};
use crate::shared::{Receiver, Sender, Shared, TimeoutCache};
use crate::shm;
use crate::shutdown::Shutdown;
use crate::stream::Stream;
use crate::sys::SysStream;
use crate::wait::spin_then_block;
use crate::{sys, Encoding, Name, PeerIdentity, ReuniteError, WaitStrategy};

/// Size of the receive buffer: a header and a payload just under [`LARGE_MESSAGE`] fit, so a
/// small message (and usually the next few) arrives with one `read` into it; a larger payload
/// is read straight into the caller's `Vec`.
const RECV_BUF: usize = HEADER_LEN + LARGE_MESSAGE;

#[cfg(unix)]
mod descriptors;
#[cfg(windows)]
mod handles;
mod in_place;

/// Most bytes one raw-mode `recv` returns.
const RAW_CHUNK: usize = 64 * 1024;

/// A connection between a client and a server, carrying whole messages.
///
/// Returned by [`Server::accept`](crate::Server::accept) and
/// [`Client::connect`](crate::Client::connect). In the default framed mode each
/// [`send`](Connection::send) arrives as exactly one [`recv`](Connection::recv) on the other
/// side, however large (up to the receiver's limit). In raw mode the connection is a plain
/// byte stream: `send` writes bytes, `recv` returns whatever bytes have arrived (on a
/// Windows message pipe, see [`ServerOptions::message_pipe`](crate::ServerOptions::message_pipe),
/// `send` writes one pipe message and `recv` returns one whole pipe message).
///
/// To send and receive from two threads at once, [`split`](Connection::split) it. For
/// `Read + Write`, use [`into_stream`](Connection::into_stream).
///
/// ```
/// use pipette::{Client, Server};
///
/// let name = format!("doc-conn-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let mut client = Client::connect(&name)?;
/// client.send_str("ping")?;
///
/// let mut conn = server.accept()?;
/// assert_eq!(conn.recv_string()?, "ping");
/// conn.send(b"pong")?;
/// assert_eq!(client.recv()?, b"pong");
/// # Ok::<(), pipette::Error>(())
/// ```
pub struct Connection {
    recv: RecvHalf,
    send: SendHalf,
}

impl Connection {
    pub(crate) fn new(shared: Shared<sys::Stream>, our_limit: u32) -> Connection {
        let shared = Arc::new(shared);
        let (rx, tx) = match &shared.shm {
            Some(link) => (Some(shm::Rx::new(link)), Some(shm::Tx::new(link))),
            None => (None, None),
        };
        // Shared memory answers within microseconds: spinning a little is its default.
        let strategy = match rx {
            Some(_) => WaitStrategy::Spin(shm::DEFAULT_SPIN),
            None => WaitStrategy::Block,
        };
        let mut receiver = Receiver::new(our_limit);
        if shared.accepts_descriptors {
            receiver.decoder.accept_descriptors();
        }
        Connection {
            recv: RecvHalf {
                shared: shared.clone(),
                buf: Vec::with_capacity(RECV_BUF),
                start: 0,
                rx: receiver,
                timeouts: TimeoutCache::default(),
                partial: None,
                strategy,
                shm: rx,
                #[cfg(unix)]
                claimed: descriptors::Claimed::default(),
                #[cfg(windows)]
                claimed: handles::Claimed::default(),
            },
            send: SendHalf {
                tx: Sender::new(shared.raw),
                shared,
                timeouts: TimeoutCache::default(),
                shm: tx,
            },
        }
    }

    /// A client reads the server's reply now (bounded by `t`), not with its first message.
    pub(crate) fn settle_reply(&mut self, t: Option<Duration>) -> Result<()> {
        self.recv.settle_reply(t)
    }

    /// Sends one message. In framed mode, a message larger than the peer accepts fails with
    /// [`Error::MessageTooLarge`] before anything is written.
    ///
    /// Waits as long as the peer does not read, up to the write timeout
    /// ([`set_write_timeout`](Connection::set_write_timeout)); `send` of a small message
    /// is one system call.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] (nothing sent; the connection stays usable),
    /// [`Error::TimedOut`] (see [`send_timeout`](Connection::send_timeout) for what a
    /// timeout part-way means), [`Error::Closed`] (the peer is gone), [`Error::Refused`]
    /// (a client whose server turned it away), [`Error::Shutdown`], [`Error::Broken`] (an
    /// earlier send was cut part-way).
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send.send(msg)
    }

    /// Sends a UTF-8 string as one message.
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    pub fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send.send(msg.as_bytes())
    }

    /// Sends a string as one message in `encoding`, for peers that do not speak UTF-8, such
    /// as a .NET program reading with `Encoding.Unicode`
    /// ([`Encoding::Utf16Le`](crate::Encoding::Utf16Le)). The size limit applies to the
    /// encoded bytes.
    ///
    /// ```
    /// use pipette::{Client, Encoding, Server};
    ///
    /// let name = format!("doc-text-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name)?;
    /// client.send_text("héllo", Encoding::Utf16Le)?;
    ///
    /// let mut conn = server.accept()?;
    /// assert_eq!(conn.recv_text(Encoding::Utf16Le)?, "héllo");
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    pub fn send_text(&mut self, text: &str, encoding: Encoding) -> Result<()> {
        self.send.send_text(text, encoding)
    }

    /// Sends one message, waiting at most `timeout` for the peer to make room.
    ///
    /// If the timeout expires before anything was written, nothing was sent and the
    /// connection stays usable. If it expires part-way through a large message, the
    /// connection cannot carry further messages: its sending side is closed (the peer sees a
    /// truncated message) and later sends fail with [`Error::Broken`].
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send.send_timeout(msg, timeout)
    }

    /// Receives one whole message.
    ///
    /// Waits up to the read timeout ([`set_read_timeout`](Connection::set_read_timeout)),
    /// forever by default. Returns [`Error::Closed`] when the peer has closed the
    /// connection and every message it sent has been received.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], [`Error::TimedOut`] (nothing lost: a message that was partly
    /// received is completed by the next call), [`Error::MessageTooLarge`] or
    /// [`Error::Protocol`] (the peer broke the protocol; the connection is closed, and later
    /// calls report [`Error::Broken`]), [`Error::Refused`] (a client whose server turned it
    /// away), [`Error::Shutdown`].
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv.recv()
    }

    /// Receives one whole message into `buf`, replacing its contents and reusing its
    /// allocation; returns the message length. The allocation-free way to receive in a loop.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv.recv_into(buf)
    }

    /// Receives one message that must be valid UTF-8.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), and [`Error::NotUtf8`] (which keeps the bytes; the
    /// connection stays usable).
    pub fn recv_string(&mut self) -> Result<String> {
        self.recv.recv_string()
    }

    /// Receives one message, waiting at most `timeout` for data.
    ///
    /// Like `std`'s read timeouts, the timeout bounds each wait for data: a large message
    /// that keeps arriving is not cut off. A timeout leaves the connection usable; a message
    /// that was partly received is completed by the next `recv`.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv.recv_timeout(timeout)
    }

    /// Receives one UTF-8 message, waiting at most `timeout` for data (see
    /// [`recv_timeout`](Connection::recv_timeout)).
    ///
    /// # Errors
    ///
    /// As [`recv_string`](Connection::recv_string).
    pub fn recv_string_timeout(&mut self, timeout: Duration) -> Result<String> {
        self.recv.recv_string_timeout(timeout)
    }

    /// Receives one message that must be text in `encoding` (see
    /// [`send_text`](Connection::send_text)). In raw mode that is whatever bytes have arrived,
    /// which is one message only if the peer wrote it with one write and it fits one read
    /// (docs/INTEROP.md).
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), and [`Error::NotUtf8`] or [`Error::NotUtf16`] (which
    /// keep the bytes; the connection stays usable).
    pub fn recv_text(&mut self, encoding: Encoding) -> Result<String> {
        self.recv.recv_text(encoding)
    }

    /// Receives one message in `encoding`, waiting at most `timeout` for data (see
    /// [`recv_timeout`](Connection::recv_timeout)).
    ///
    /// # Errors
    ///
    /// As [`recv_text`](Connection::recv_text).
    pub fn recv_text_timeout(&mut self, encoding: Encoding, timeout: Duration) -> Result<String> {
        self.recv.recv_text_timeout(encoding, timeout)
    }

    /// Receives one message if it can be done without waiting: `Ok(None)` when no whole
    /// message has arrived yet (what has arrived of one is kept). For event loops: see
    /// [`is_message_buffered`](Connection::is_message_buffered) for what the descriptor's
    /// readiness means.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv), except that it never times out.
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        self.recv.try_recv()
    }

    /// Whether a whole message (or the peer's end, or a failure) is already buffered, so
    /// that [`recv`](Connection::recv) returns without waiting.
    ///
    /// For event loops (`poll`, mio, GUI loops) that watch the connection's descriptor
    /// (`AsFd` on Unix): the descriptor is readable when **new bytes**
    /// have arrived. A receive reads as many bytes as are there, which may be several
    /// messages; the later ones are then buffered here while the descriptor is no longer
    /// readable. So after readiness, call [`try_recv`](Connection::try_recv) until it
    /// returns `Ok(None)` (or until this returns `false`) before waiting again.
    pub fn is_message_buffered(&self) -> bool {
        self.recv.is_message_buffered()
    }

    /// Sets the timeout that [`recv`](Connection::recv), [`recv_into`](Connection::recv_into)
    /// and [`recv_string`](Connection::recv_string) use; `None` waits forever.
    ///
    /// Applied to the socket lazily, and only when it changes.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.recv.set_read_timeout(timeout)
    }

    /// Sets the timeout that [`send`](Connection::send) uses; `None` waits forever.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.send.set_write_timeout(timeout)
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.recv.read_timeout()
    }

    /// Sets how receives wait for the peer's bytes: sleep, spin for a while, or spin (see
    /// [`WaitStrategy`]). The default is the server's or client's option
    /// ([`ServerOptions::wait_strategy`](crate::ServerOptions::wait_strategy),
    /// [`ClientOptions::wait_strategy`](crate::ClientOptions::wait_strategy)).
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.recv.set_wait_strategy(strategy)
    }

    /// How receives wait for the peer's bytes.
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.recv.wait_strategy()
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.send.write_timeout()
    }

    /// Who is on the other end, as the operating system reported it when the connection was
    /// made; `None` when it could not tell. A client's view of its server is what its
    /// [`Trust`](crate::Trust) policy was checked against.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.send.shared.peer.as_ref()
    }

    /// The endpoint name this connection was made through.
    pub fn name(&self) -> &Name {
        &self.send.shared.name
    }

    /// Whether this is a raw byte-stream connection (no handshake, no framing).
    pub fn is_raw(&self) -> bool {
        self.send.shared.raw
    }

    /// Whether messages on this connection may carry descriptors (Unix) or handles
    /// (Windows): both sides asked
    /// ([`ServerOptions::descriptors`](crate::ServerOptions::descriptors),
    /// [`ClientOptions::descriptors`](crate::ClientOptions::descriptors)) and the platform
    /// can (Unix sockets; on Windows, each side can open the other's process with
    /// `PROCESS_DUP_HANDLE`, usually: both run as the same user). Known from `connect` and
    /// `accept` on. See `send_with_descriptors` (Unix), `send_with_handles` (Windows).
    pub fn passes_descriptors(&self) -> bool {
        self.send.passes_descriptors()
    }

    /// Whether messages travel through shared memory (both sides asked for it and the
    /// platform can: see [`ClientOptions::shared_memory`](crate::ClientOptions::shared_memory))
    /// rather than the socket.
    pub fn is_shared_memory(&self) -> bool {
        self.send.shared.shm.is_some()
    }

    /// The largest message this side accepts.
    pub fn max_message_size(&self) -> usize {
        self.recv.max_message_size()
    }

    /// The largest message the peer accepts, as far as known: a client learns it from the
    /// server's handshake reply, until then this is the protocol minimum (4096).
    pub fn peer_max_message_size(&self) -> usize {
        self.send.peer_max_message_size()
    }

    /// A handle whose [`shutdown`](Shutdown::shutdown) ends every blocked and later operation
    /// on this connection with [`Error::Shutdown`]. For a connection accepted by a server this
    /// is the server's handle.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.send.shared.shutdown.clone()
    }

    /// Splits the connection into a sending and a receiving half, each usable from its own
    /// thread. Never blocks and cannot fail: a client's handshake reply is read by whichever
    /// half needs it first (the receiving half before its first message; the sending half
    /// before a message larger than the protocol minimum of 4096 bytes).
    /// [`RecvHalf::reunite`] puts them back together.
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }

    /// Turns the connection into a plain byte stream (`Read + Write`), after the handshake.
    /// Bytes already received but not yet returned are kept and read first.
    ///
    /// # Errors
    ///
    /// A client's handshake errors (as for [`recv`](Connection::recv)), and
    /// [`Error::InvalidConfig`] in the middle of a message.
    pub fn into_stream(mut self) -> Result<Stream> {
        if self.is_shared_memory() {
            return Err(shm::no_stream());
        }
        self.recv.settle_reply(self.recv.timeouts.default)?;
        self.recv.rx.at_boundary()?;
        let leftover = self.recv.buffered().to_vec();
        Ok(Stream::new(self.send.shared.clone(), leftover))
    }

    /// Closes the connection in an orderly way: a client first checks the server's handshake
    /// reply (so a refused connection is reported here rather than silently dropped), then
    /// the sending direction is closed. Messages already sent stay readable by the peer.
    ///
    /// # Errors
    ///
    /// A client's handshake errors, [`Error::Shutdown`], or an error writing the end of the
    /// stream (Windows).
    pub fn close(mut self) -> Result<()> {
        self.recv.settle_reply(self.recv.timeouts.default)?;
        self.send.end()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.send.shared.name.as_str())
            .field("raw", &self.send.shared.raw)
            .field("peer", &self.send.shared.peer)
            .finish()
    }
}

/// The receiving half of a [`Connection`], from [`Connection::split`].
pub struct RecvHalf {
    shared: Arc<Shared<sys::Stream>>,
    /// `RECV_BUF` bytes of capacity; its length is what was read into it.
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..]`.
    start: usize,
    rx: Receiver,
    timeouts: TimeoutCache,
    /// A large message whose payload was partly received when a timeout expired.
    partial: Option<Vec<u8>>,
    /// How a blocking receive waits for bytes.
    strategy: WaitStrategy,
    /// The ring this half reads, on a shared-memory connection.
    shm: Option<shm::Rx>,
    /// The descriptors of the last message received, for `recv_with_descriptors`.
    #[cfg(unix)]
    claimed: descriptors::Claimed,
    /// The handles of the message being received, for `recv_with_handles`.
    #[cfg(windows)]
    claimed: handles::Claimed,
}

/// How a receive may wait.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// Blocking reads, each bounded by the timeout (`None`: forever).
    Block(Option<Duration>),
    /// Only what is there now (`try_recv`).
    Now,
}

impl Wait {
    /// Runs one read as this says: `read(true)` takes what is there; a blocking read first
    /// checks as `strategy` says (see [`WaitStrategy`]), then `read(false)` waits, bounded by
    /// the timeout.
    #[inline]
    fn run<T>(
        self,
        strategy: WaitStrategy,
        shutdown: &Shutdown,
        mut read: impl FnMut(bool) -> io::Result<T>,
    ) -> io::Result<T> {
        match self {
            Wait::Now => read(true),
            // The default, kept out of the spin loop's code (a measured 58 instructions per
            // round trip when it went through it).
            Wait::Block(_) if strategy == WaitStrategy::Block => read(false),
            Wait::Block(t) => spin_then_block(strategy, t, shutdown, read),
        }
    }

    fn is_now(self) -> bool {
        matches!(self, Wait::Now)
    }

    fn timeout(self) -> Option<Duration> {
        match self {
            Wait::Block(t) => t,
            Wait::Now => Some(Duration::ZERO),
        }
    }
}

impl RecvHalf {
    /// Receives one whole message. See [`Connection::recv`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_with(&mut v, Wait::Block(self.timeouts.default))?;
        Ok(v)
    }

    /// Receives one whole message into `buf`. See [`Connection::recv_into`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_with(buf, Wait::Block(self.timeouts.default))
    }

    /// Receives one UTF-8 message. See [`Connection::recv_string`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_string`].
    pub fn recv_string(&mut self) -> Result<String> {
        String::from_utf8(self.recv()?).map_err(Error::NotUtf8)
    }

    /// Receives one message with a timeout. See [`Connection::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_with(&mut v, Wait::Block(Some(timeout)))?;
        Ok(v)
    }

    /// Receives one UTF-8 message with a timeout. See [`Connection::recv_string_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_string`].
    pub fn recv_string_timeout(&mut self, timeout: Duration) -> Result<String> {
        String::from_utf8(self.recv_timeout(timeout)?).map_err(Error::NotUtf8)
    }

    /// Receives one message in `encoding`. See [`Connection::recv_text`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_text`].
    pub fn recv_text(&mut self, encoding: Encoding) -> Result<String> {
        encoding.decode(self.recv()?)
    }

    /// Receives one message in `encoding` with a timeout. See
    /// [`Connection::recv_text_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_text`].
    pub fn recv_text_timeout(&mut self, encoding: Encoding, timeout: Duration) -> Result<String> {
        encoding.decode(self.recv_timeout(timeout)?)
    }

    /// Receives one message without waiting. See [`Connection::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Connection::try_recv`].
    pub fn try_recv(&mut self) -> Result<Option<Vec<u8>>> {
        let mut v = Vec::new();
        match self.recv_with(&mut v, Wait::Now) {
            Ok(_) => Ok(Some(v)),
            Err(Error::TimedOut { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// See [`Connection::is_message_buffered`].
    pub fn is_message_buffered(&self) -> bool {
        self.rx.decoder.ready(self.buffered()) || (self.shared.raw && !self.buffered().is_empty())
    }

    /// Sets the read timeout. See [`Connection::set_read_timeout`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.default = timeout;
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.timeouts.default
    }

    /// Sets how receives wait. See [`Connection::set_wait_strategy`].
    pub fn set_wait_strategy(&mut self, strategy: WaitStrategy) {
        self.strategy = strategy;
    }

    /// How receives wait. See [`Connection::wait_strategy`].
    pub fn wait_strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Who is on the other end. See [`Connection::peer`].
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.shared.peer.as_ref()
    }

    /// The largest message this side accepts.
    pub fn max_message_size(&self) -> usize {
        self.rx.decoder.limit() as usize
    }

    /// The connection's shutdown handle. See [`Connection::shutdown_handle`].
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
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

    fn apply_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        let stream = &self.shared.stream;
        self.timeouts
            .apply(t, |t| stream.set_read_timeout(t))
            .map_err(|e| self.shared.error(e, Operation::Recv, t))
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
        }
    }

    /// One read into the buffer, at most `at_most` bytes, after making room for `capacity`
    /// bytes from the start of the unconsumed ones. `Ok(0)` is end of stream.
    #[inline(always)]
    fn fill(&mut self, wait: Wait, at_most: Option<usize>, capacity: usize) -> io::Result<usize> {
        if RECV_BUF - self.start < capacity {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = RECV_BUF - self.buf.len();
        let max = at_most.map_or(room, |n| n.min(room));
        // Appended to the buffer's spare capacity: never zeroed, never grown.
        let buf = &mut self.buf;
        let stream = &*self.shared.stream;
        let shutdown = &self.shared.shutdown;
        match &mut self.shm {
            Some(rx) => wait.run(self.strategy, shutdown, |now| {
                rx.read(
                    stream,
                    &mut shm::Dst::Append(buf, max),
                    now,
                    wait.is_now(),
                    wait.timeout(),
                )
            }),
            None => wait.run(self.strategy, shutdown, |now| {
                if now {
                    stream.read_append_now(buf, max)
                } else {
                    stream.read_append(buf, max)
                }
            }),
        }
    }

    /// The error for a failed read ([`Receiver::read_failure`]).
    fn read_error(&mut self, e: io::Error, wait: Wait) -> Error {
        self.rx.read_failure(&self.shared, e, wait.timeout())
    }

    /// A client reads the server's handshake reply before its first message (unless the
    /// send half has read it already): into the receive buffer, so that the first messages
    /// usually arrive with it in one read.
    pub(crate) fn settle_reply(&mut self, t: Option<Duration>) -> Result<()> {
        if self.shared.reply.limit().is_some() || self.shared.raw {
            return Ok(());
        }
        self.rx.sticky.check()?;
        self.apply_timeout(t)?;
        self.read_reply(Wait::Block(t))
    }

    fn read_reply(&mut self, wait: Wait) -> Result<()> {
        let shared = self.shared.clone();
        let mut reader = shared.reply.lock();
        loop {
            if let Some(result) = shared.reply.settle(&reader) {
                return self.rx.reply(&shared, result);
            }
            let taken = reader.feed(self.buffered());
            self.consume(taken);
            if reader.result().is_some() {
                continue;
            }
            match self.fill(wait, None, 1) {
                Ok(0) => reader.end_of_stream(),
                Ok(_) => {}
                Err(e) => {
                    let err = self.read_error(e, wait);
                    return Err(match err {
                        Error::TimedOut { after, .. } => Error::TimedOut {
                            op: Operation::Handshake,
                            after,
                        },
                        Error::Closed => {
                            reader.end_of_stream();
                            continue;
                        }
                        other => other,
                    });
                }
            }
        }
    }

    #[inline]
    fn recv_with(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        let got = self.recv_frame(out, wait);
        // Windows: a message with handles is whole now; its payload begins with their values.
        #[cfg(windows)]
        if self.claimed.pending() && got.is_ok() {
            return self.take_handles(out);
        }
        got
    }

    #[inline]
    fn recv_frame(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        self.shared.check_shutdown()?;
        self.rx.sticky.check()?;
        if let Wait::Block(t) = wait {
            if self.timeouts.needs(t) {
                self.apply_timeout(t)?;
            }
        }
        if self.shared.raw {
            return self.recv_raw(out, wait);
        }
        if self.shared.reply.limit().is_none() {
            self.read_reply(wait)?;
        }
        if let Some(partial) = self.partial.take() {
            // A large message that a timeout interrupted: go on with it.
            *out = partial;
            let (len, _) = self.rx.decoder.large_in_progress().unwrap_or_default();
            return self.finish_large(out, len, wait);
        }
        loop {
            match self.rx.decoder.decode(&self.buf[self.start..]) {
                Decoded::Message { len } => {
                    if self.rx.decoder.descriptors() != 0 {
                        self.claim()?;
                    }
                    let s = self.start + HEADER_LEN;
                    out.clear();
                    out.extend_from_slice(&self.buf[s..s + len]);
                    self.consume(HEADER_LEN + len);
                    return Ok(len);
                }
                Decoded::NeedMore { at_most, capacity } => match self.fill(wait, at_most, capacity)
                {
                    Ok(0) => {
                        return Err(self.rx.end_of_stream(&self.shared, self.buffered().len()))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(self.read_error(e, wait)),
                },
                Decoded::LargeMessage { len } => return self.start_large(out, len, wait),
                Decoded::End { consume } => {
                    self.consume(consume);
                    return Err(Error::Closed);
                }
                Decoded::Failed(f) => return Err(self.rx.fail(&self.shared, &f)),
            }
        }
    }

    /// A large message begins: what is buffered of it is copied, the rest read straight
    /// into `out`.
    #[cold]
    fn start_large(&mut self, out: &mut Vec<u8>, len: usize, wait: Wait) -> Result<usize> {
        if self.rx.decoder.descriptors() != 0 {
            self.claim()?;
        }
        self.consume(HEADER_LEN);
        out.clear();
        out.reserve_exact(len);
        let take = len.min(self.buffered().len());
        out.extend_from_slice(&self.buf[self.start..self.start + take]);
        self.consume(take);
        if self.rx.decoder.payload_received(take) == 0 {
            // All of it was buffered already.
            return Ok(len);
        }
        self.finish_large(out, len, wait)
    }

    /// Reads the rest of a large message straight into `out` (which holds what arrived).
    fn finish_large(&mut self, out: &mut Vec<u8>, len: usize, wait: Wait) -> Result<usize> {
        while out.len() < len {
            let missing = len - out.len();
            let stream = &*self.shared.stream;
            let shutdown = &self.shared.shutdown;
            let res = match &mut self.shm {
                Some(rx) => wait.run(self.strategy, shutdown, |now| {
                    let dst = &mut shm::Dst::Append(out, missing);
                    rx.read(stream, dst, now, wait.is_now(), wait.timeout())
                }),
                None => wait.run(self.strategy, shutdown, |now| {
                    if now {
                        stream.read_append_now(out, missing)
                    } else {
                        stream.read_append(out, missing)
                    }
                }),
            };
            match res {
                Ok(0) => return Err(self.rx.end_of_stream(&self.shared, self.buffered().len())),
                Ok(n) => {
                    self.rx.decoder.payload_received(n);
                }
                Err(e) => {
                    let err = self.read_error(e, wait);
                    if matches!(err, Error::TimedOut { .. }) {
                        // Kept for the next call, which completes the message.
                        self.partial = Some(std::mem::take(out));
                    }
                    return Err(err);
                }
            }
        }
        Ok(len)
    }

    fn recv_raw(&mut self, out: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        out.clear();
        if !self.buffered().is_empty() {
            out.extend_from_slice(self.buffered());
            self.consume(self.buffered().len());
            return Ok(out.len());
        }
        // One whole message on a message pipe, else whatever bytes have arrived.
        let stream = &*self.shared.stream;
        let res = wait.run(self.strategy, &self.shared.shutdown, |now| {
            if now {
                stream.read_append_now(out, RAW_CHUNK)
            } else {
                stream.read_message(out, RAW_CHUNK)
            }
        });
        match res {
            Ok(0) => Err(self.shared.eof()),
            Ok(n) => Ok(n),
            Err(e) => Err(self.read_error(e, wait)),
        }
    }
}

impl fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("name", &self.shared.name.as_str())
            .field("buffered", &self.buffered().len())
            .finish()
    }
}

/// The sending half of a [`Connection`], from [`Connection::split`].
pub struct SendHalf {
    shared: Arc<Shared<sys::Stream>>,
    tx: Sender,
    timeouts: TimeoutCache,
    /// The ring this half writes, on a shared-memory connection.
    shm: Option<shm::Tx>,
}

impl SendHalf {
    /// Sends one message. See [`Connection::send`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_msg(msg, self.timeouts.default)
    }

    /// Sends a UTF-8 string as one message.
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send(msg.as_bytes())
    }

    /// Sends a string as one message in `encoding`. See [`Connection::send_text`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub fn send_text(&mut self, text: &str, encoding: Encoding) -> Result<()> {
        self.send(&encoding.encode(text))
    }

    /// Sends one message with a timeout. See [`Connection::send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_msg(msg, Some(timeout))
    }

    /// Sets the write timeout. See [`Connection::set_write_timeout`].
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.default = timeout;
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.timeouts.default
    }

    /// Who is on the other end. See [`Connection::peer`].
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.shared.peer.as_ref()
    }

    /// The largest message the peer accepts, as far as known. See
    /// [`Connection::peer_max_message_size`].
    pub fn peer_max_message_size(&self) -> usize {
        self.shared.peer_max_message_size()
    }

    /// The connection's shutdown handle. See [`Connection::shutdown_handle`].
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
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

    /// Closes the sending direction: the peer's next `recv` after the messages already sent
    /// reports [`Error::Closed`]. The [`RecvHalf`] goes on receiving what the peer sends, on
    /// every platform (Windows pipes have no half-close; in framed mode pipette sends an
    /// end-of-stream header instead, see `docs/PROTOCOL.md`; in raw mode the pipe closes).
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`], or an error writing the end of the stream (Windows).
    pub fn close(mut self) -> Result<()> {
        self.end()
    }

    /// Ends the sending direction. Where the transport has no half-close (Windows pipes),
    /// a framed connection says so in-band with the end-of-stream header and keeps the pipe
    /// open, so that the receiving half goes on working exactly as on Unix.
    fn end(&mut self) -> Result<()> {
        if !sys::HALF_CLOSE && !self.tx.sticky.is_set() {
            self.shared.check_shutdown()?;
            if let Ok(Some(out)) = self.tx.encoder.end() {
                let t = self.timeouts.default;
                // Over shared memory the end-of-stream header goes into the ring, behind
                // the messages (the pipe carries no bytes then).
                let sent = if self.shm.is_some() {
                    self.send_shm(out, &[], t)
                } else {
                    self.write_all(out, &[], t, None)
                };
                return match sent {
                    // The peer is gone already: there is nobody left to tell.
                    Err(Error::Closed) => Ok(()),
                    other => other,
                };
            }
        }
        match self.shared.stream.shutdown_write() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(self.shared.error(e, Operation::Close, None)),
        }
    }

    fn apply_write_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        let stream = &self.shared.stream;
        self.timeouts
            .apply(t, |t| stream.set_write_timeout(t))
            .map_err(|e| self.shared.error(e, Operation::Send, t))
    }

    /// Whether messages may carry descriptors. See [`Connection::passes_descriptors`].
    pub fn passes_descriptors(&self) -> bool {
        self.shared.passes_descriptors()
    }

    /// A client's server limit, reading the handshake reply here if the receiving half has
    /// not (exactly its bytes: nothing of the messages behind it is taken from the stream).
    #[cold]
    fn peer_limit_for(&mut self, len: usize) -> Result<u32> {
        if !self.tx.encoder.needs_peer_limit(len) {
            return Ok(self.shared.reply.limit_or_minimum());
        }
        if let Some(limit) = self.shared.reply.limit() {
            return Ok(limit);
        }
        let shared = self.shared.clone();
        let mut reader = shared.reply.lock();
        loop {
            if let Some(result) = shared.reply.settle(&reader) {
                return self.tx.reply(&shared, result);
            }
            let mut tmp = [0u8; crate::frame::REPLY_LEN];
            let want = reader.missing();
            match shared.stream.read(&mut tmp[..want]) {
                Ok(0) => reader.end_of_stream(),
                Ok(n) => {
                    reader.feed(&tmp[..n]);
                }
                Err(e) => {
                    return Err(match shared.error(e, Operation::Handshake, None) {
                        Error::Closed => {
                            reader.end_of_stream();
                            continue;
                        }
                        other => other,
                    })
                }
            }
        }
    }

    #[inline]
    fn send_msg(&mut self, msg: &[u8], t: Option<Duration>) -> Result<()> {
        self.shared.check_shutdown()?;
        if self.timeouts.needs(t) {
            self.apply_write_timeout(t)?;
        }
        // The peer's limit: known, or the minimum a client may use before the reply.
        let limit = match self.shared.reply.limit() {
            Some(limit) => limit,
            None if !self.tx.encoder.needs_peer_limit(msg.len()) => crate::frame::MIN_MESSAGE_LIMIT,
            None => self.peer_limit_for(msg.len())?,
        };
        let mut out = self.tx.frame(msg.len(), limit)?;
        if self.shm.is_some() {
            return self.send_shm(out, msg, t);
        }
        // The common case: header and payload go out in one system call.
        let first = self.shared.stream.write2(out.header(), msg);
        match first {
            Ok(n) if n > 0 => {
                if out.advance(n) {
                    return Ok(());
                }
                // Short: the rest goes out from where the first write stopped.
                self.write_rest(out, msg, t, None)
            }
            first => self.write_rest(out, msg, t, Some(first)),
        }
    }

    /// `send_msg` on a shared-memory connection: into the ring as room allows, waiting for
    /// room (a short spin, then asleep) when it is full. A failure part-way cuts the message,
    /// as on a socket.
    fn send_shm(
        &mut self,
        mut out: crate::proto::Outgoing,
        msg: &[u8],
        t: Option<Duration>,
    ) -> Result<()> {
        let stream = &*self.shared.stream;
        let Some(tx) = &mut self.shm else {
            unreachable!("called on shared-memory connections only")
        };
        loop {
            let (h, p) = out.remaining(msg);
            let res = match tx.write_now(h, p) {
                Ok(n) => {
                    if out.advance(n) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let spin = WaitStrategy::Spin(shm::DEFAULT_SPIN);
                    spin_then_block(spin, t, &self.shared.shutdown, |now| {
                        if now {
                            tx.room_now()
                        } else {
                            tx.wait_room(stream, 1, t)
                        }
                    })
                }
                Err(e) => Err(e),
            };
            let Err(e) = res else { continue };
            let err = self.shared.error(e, Operation::Send, t);
            if out.started() {
                return Err(self.tx.cut(err, || {
                    let _ = stream.shutdown_write();
                }));
            }
            return Err(err);
        }
    }

    /// The rest of `send_msg` after its first write: short (`first` is `None`, `out` has
    /// been advanced), or failed or empty (`first` is its result, `out` not advanced).
    #[cold]
    fn write_rest(
        &mut self,
        out: crate::proto::Outgoing,
        msg: &[u8],
        t: Option<Duration>,
        first: Option<io::Result<usize>>,
    ) -> Result<()> {
        match self.write_all(out, msg, t, first) {
            // A server that refused us may already have closed the connection; its reply,
            // which says why, is waiting to be read: report that rather than "closed".
            Err(Error::Closed) if self.shared.reply.limit().is_none() && !self.shared.raw => {
                match self.peer_limit_for(usize::MAX) {
                    Err(refusal) => Err(refusal),
                    Ok(_) => Err(Error::Closed),
                }
            }
            other => other,
        }
    }

    /// Writes one frame: the rest of `out`'s header, then `payload`. A failure part-way cuts
    /// the frame: the encoder is poisoned and our direction ended, so the peer sees a
    /// truncated message rather than a corrupted stream.
    fn write_all(
        &mut self,
        mut out: crate::proto::Outgoing,
        payload: &[u8],
        t: Option<Duration>,
        mut first: Option<io::Result<usize>>,
    ) -> Result<()> {
        let stream = &self.shared.stream;
        loop {
            let res = match first.take() {
                Some(res) => res,
                None => {
                    let (h, p) = out.remaining(payload);
                    if h.is_empty() {
                        stream.write(p)
                    } else {
                        stream.write2(h, p)
                    }
                }
            };
            let err = match res {
                Ok(0) if !out.is_done() => self.shared.error(
                    io::Error::new(io::ErrorKind::WriteZero, "the stream accepted no bytes"),
                    Operation::Send,
                    t,
                ),
                Ok(n) => {
                    if out.advance(n) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => self.shared.error(e, Operation::Send, t),
            };
            if out.started() {
                return Err(self.tx.cut(err, || {
                    let _ = stream.shutdown_write();
                }));
            }
            return Err(err);
        }
    }
}

impl fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("name", &self.shared.name.as_str())
            .finish()
    }
}

#[cfg(unix)]
crate::shared::impl_as_fd! {
    Connection => send.shared.stream;
    RecvHalf => shared.stream;
    SendHalf => shared.stream;
}
