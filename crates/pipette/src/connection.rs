//! A connection: whole messages in both directions, usable from two threads when split.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::{self, Header, HEADER_LEN, REPLY_LEN};
use crate::handshake;
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::stream::Stream;
use crate::{sys, Name, PeerIdentity};

/// Size of the receive buffer. Small messages (header and payload) arrive with one `read`
/// into it; a payload larger than this is read straight into the caller's `Vec`.
const RECV_BUF: usize = 8 * 1024;

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
    pub(crate) fn new(
        shared: Shared<sys::Stream>,
        our_limit: u32,
        reply_pending: bool,
    ) -> Connection {
        let shared = Arc::new(shared);
        Connection {
            recv: RecvHalf {
                shared: shared.clone(),
                buf: vec![0u8; RECV_BUF].into_boxed_slice(),
                start: 0,
                end: 0,
                limit: our_limit,
                timeouts: TimeoutCache::default(),
                reply_pending,
                partial: None,
                failed: None,
                expect_large: false,
                peer_ended: false,
            },
            send: SendHalf {
                shared,
                timeouts: TimeoutCache::default(),
                failed: None,
            },
        }
    }

    /// Sends one message. In framed mode, a message larger than the peer accepts fails with
    /// [`Error::MessageTooLarge`] before anything is written.
    ///
    /// Waits as long as the peer does not read, up to the write timeout
    /// ([`set_write_timeout`](Connection::set_write_timeout)); `send` of a small message
    /// is one system call.
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        let t = self.send.timeouts.default;
        self.send_inner(msg, t)
    }

    /// Sends a UTF-8 string as one message.
    pub fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send(msg.as_bytes())
    }

    /// Sends one message, waiting at most `timeout` for the peer to make room.
    ///
    /// If the timeout expires before anything was written, nothing was sent and the
    /// connection stays usable. If it expires part-way through a large message, the
    /// connection cannot carry further messages: its sending side is closed (the peer sees a
    /// truncated message) and later sends fail.
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_inner(msg, Some(timeout))
    }

    fn send_inner(&mut self, msg: &[u8], timeout: Option<Duration>) -> Result<()> {
        // A client knows the server's real limit only once the server's reply is read; up to
        // the protocol minimum it may send without waiting for it.
        if !self.send.shared.raw
            && msg.len() > frame::MIN_MESSAGE_LIMIT as usize
            && !self.send.shared.peer_limit_known()
        {
            self.recv.finish_handshake(timeout)?;
        }
        match self.send.send_with(msg, timeout) {
            // A server that refused us may already have closed the connection; its reply,
            // which says why, is waiting to be read: report that rather than "closed".
            Err(Error::Closed) if self.recv.reply_pending => {
                match self.recv.finish_handshake(timeout) {
                    Err(refusal) => Err(refusal),
                    Ok(()) => Err(Error::Closed),
                }
            }
            other => other,
        }
    }

    /// Receives one whole message.
    ///
    /// Waits up to the read timeout ([`set_read_timeout`](Connection::set_read_timeout)),
    /// forever by default. Returns [`Error::Closed`] when the peer has closed the
    /// connection and every message it sent has been received.
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        self.recv.recv()
    }

    /// Receives one whole message into `buf`, replacing its contents and reusing its
    /// allocation; returns the message length. The allocation-free way to receive in a loop.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv.recv_into(buf)
    }

    /// Receives one message that must be valid UTF-8.
    pub fn recv_string(&mut self) -> Result<String> {
        self.recv.recv_string()
    }

    /// Receives one message, waiting at most `timeout` for data.
    ///
    /// Like `std`'s read timeouts, the timeout bounds each wait for data: a large message
    /// that keeps arriving is not cut off. A timeout leaves the connection usable; a message
    /// that was partly received is completed by the next `recv`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv.recv_timeout(timeout)
    }

    /// Sets the timeout that [`recv`](Connection::recv), [`recv_into`](Connection::recv_into)
    /// and [`recv_string`](Connection::recv_string) use; `None` waits forever.
    ///
    /// Applied to the socket (`SO_RCVTIMEO`) lazily, and only when it changes.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.recv.set_read_timeout(timeout)
    }

    /// Sets the timeout that [`send`](Connection::send) uses; `None` waits forever.
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.send.set_write_timeout(timeout)
    }

    /// The current read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.recv.timeouts.default
    }

    /// The current write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        self.send.timeouts.default
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.send.shared.peer()
    }

    /// The endpoint name this connection was made through.
    pub fn name(&self) -> &Name {
        &self.send.shared.name
    }

    /// Whether this is a raw byte-stream connection (no handshake, no framing).
    pub fn is_raw(&self) -> bool {
        self.send.shared.raw
    }

    /// The largest message this side accepts.
    pub fn max_message_size(&self) -> usize {
        self.recv.limit as usize
    }

    /// The largest message the peer accepts, as far as known: a client learns it from the
    /// server's handshake reply, until then this is the protocol minimum (4096).
    pub fn peer_max_message_size(&self) -> usize {
        self.send.shared.peer_limit() as usize
    }

    /// A handle whose [`shutdown`](Shutdown::shutdown) ends every blocked and later operation
    /// on this connection with [`Error::Shutdown`]. For a connection accepted by a server this
    /// is the server's handle.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.send.shared.shutdown.clone()
    }

    /// Splits the connection into a sending and a receiving half, each usable from its own
    /// thread. A client first waits for the server's handshake reply (so that both halves know
    /// the peer's limit), bounded by the read timeout.
    pub fn split(mut self) -> Result<(SendHalf, RecvHalf)> {
        let t = self.recv.timeouts.default;
        self.recv.finish_handshake(t)?;
        Ok((self.send, self.recv))
    }

    /// Turns the connection into a plain byte stream (`Read + Write`), after the handshake.
    /// Bytes already received but not yet returned are kept and read first.
    pub fn into_stream(mut self) -> Result<Stream> {
        let t = self.recv.timeouts.default;
        self.recv.finish_handshake(t)?;
        if self.recv.partial.is_some() {
            return Err(Error::Protocol(
                "cannot turn a connection into a stream in the middle of a message; receive the rest of it first".into(),
            ));
        }
        let leftover = self.recv.buf[self.recv.start..self.recv.end].to_vec();
        Ok(Stream::new(self.send.shared.clone(), leftover))
    }

    /// Closes the connection in an orderly way: a client first checks the server's handshake
    /// reply (so a refused connection is reported here rather than silently dropped), then
    /// the sending direction is closed. Messages already sent stay readable by the peer.
    pub fn close(mut self) -> Result<()> {
        let t = self.recv.timeouts.default;
        self.recv.finish_handshake(t)?;
        self.send.end()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.send.shared.name.as_str())
            .field("raw", &self.send.shared.raw)
            .field("peer", self.peer())
            .finish()
    }
}

/// The kernel timeout of one direction, applied only when it changes.
#[derive(Debug, Default)]
struct TimeoutCache {
    /// What plain `send`/`recv` use.
    default: Option<Duration>,
    /// What the socket currently has.
    applied: Option<Duration>,
}

impl TimeoutCache {
    fn apply(
        &mut self,
        want: Option<Duration>,
        set: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.applied != want {
            set(want)?;
            self.applied = want;
        }
        Ok(())
    }
}

/// The receiving half of a [`Connection`], from [`Connection::split`].
pub struct RecvHalf {
    shared: Arc<Shared<sys::Stream>>,
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    limit: u32,
    timeouts: TimeoutCache,
    /// A client has not read the server's handshake reply yet.
    reply_pending: bool,
    /// A message whose payload was partly received when a timeout expired: (length, bytes).
    partial: Option<(usize, Vec<u8>)>,
    /// Set once the peer broke the protocol; the connection is then closed.
    failed: Option<String>,
    /// The peer ended its sending direction with the end-of-stream header: every later
    /// `recv` reports `Closed`.
    peer_ended: bool,
    /// The previous message was large. The next header is then read on its own (8 bytes),
    /// so that its payload goes straight into the caller's `Vec` instead of being read into
    /// the buffer and copied: the same two reads as without the guess, and no copy.
    expect_large: bool,
}

impl RecvHalf {
    /// Receives one whole message. See [`Connection::recv`].
    pub fn recv(&mut self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_with(&mut v, self.timeouts.default)?;
        Ok(v)
    }

    /// Receives one whole message into `buf`. See [`Connection::recv_into`].
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_with(buf, self.timeouts.default)
    }

    /// Receives one UTF-8 message. See [`Connection::recv_string`].
    pub fn recv_string(&mut self) -> Result<String> {
        let v = self.recv()?;
        String::from_utf8(v).map_err(|e| {
            Error::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the received message is not valid UTF-8 (invalid byte at offset {}); use recv() for binary messages",
                    e.utf8_error().valid_up_to()
                ),
            ))
        })
    }

    /// Receives one message with a timeout. See [`Connection::recv_timeout`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.recv_with(&mut v, Some(timeout))?;
        Ok(v)
    }

    /// Sets the read timeout. See [`Connection::set_read_timeout`].
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.default = timeout;
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.shared.peer()
    }

    /// The connection's shutdown handle. See [`Connection::shutdown_handle`].
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    fn apply_timeout(&mut self, t: Option<Duration>) -> Result<()> {
        let stream = &self.shared.stream;
        self.timeouts
            .apply(t, |t| stream.set_read_timeout(t))
            .map_err(|e| self.shared.error(e, "recv", t))
    }

    /// Reads once into the buffer; end-of-stream is an error here.
    fn fill(&mut self, t: Option<Duration>, want: usize) -> Result<()> {
        self.fill_at_most(t, want, usize::MAX)
    }

    /// Reads once into the buffer, at most `max` bytes.
    fn fill_at_most(&mut self, t: Option<Duration>, want: usize, max: usize) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() || self.buf.len() - self.start < want {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let stop = self.buf.len().min(self.end.saturating_add(max));
        match self.shared.stream.read(&mut self.buf[self.end..stop]) {
            Ok(0) => Err(self.shared.eof()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(self.shared.error(e, "recv", t)),
        }
    }

    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads the server's handshake reply, if this is a client that has not yet done so.
    pub(crate) fn finish_handshake(&mut self, t: Option<Duration>) -> Result<()> {
        if !self.reply_pending {
            return Ok(());
        }
        self.apply_timeout(t)?;
        while self.buffered() < REPLY_LEN {
            let had = self.buffered();
            match self.fill(t, REPLY_LEN) {
                Ok(()) => {}
                Err(Error::Closed) => {
                    return Err(handshake::reply_cut_short(&self.shared.name, had))
                }
                Err(e) => return Err(e),
            }
        }
        let mut bytes = [0u8; REPLY_LEN];
        bytes.copy_from_slice(&self.buf[self.start..self.start + REPLY_LEN]);
        self.start += REPLY_LEN;
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
        }
    }

    fn recv_with(&mut self, out: &mut Vec<u8>, t: Option<Duration>) -> Result<usize> {
        self.shared.check_shutdown()?;
        if let Some(why) = &self.failed {
            return Err(Error::Protocol(format!(
                "the connection was closed after an earlier error: {why}"
            )));
        }
        self.apply_timeout(t)?;
        if self.reply_pending {
            self.finish_handshake(t)?;
        }
        if self.shared.raw {
            return self.recv_raw(out, t);
        }

        if self.peer_ended {
            return Err(Error::Closed);
        }
        let len = match self.partial.take() {
            Some((len, data)) => {
                *out = data;
                len
            }
            None => {
                while self.buffered() < HEADER_LEN {
                    let max = if self.expect_large {
                        HEADER_LEN - self.buffered()
                    } else {
                        usize::MAX
                    };
                    self.fill_at_most(t, HEADER_LEN, max)
                        .map_err(|e| self.mid_message(e, 0, None))?;
                }
                let mut h = [0u8; HEADER_LEN];
                h.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
                let header = match Header::decode(&h, self.limit) {
                    Ok(h) => h,
                    Err(e) => return Err(self.fail(e)),
                };
                self.start += HEADER_LEN;
                if header.end {
                    self.peer_ended = true;
                    return Err(Error::Closed);
                }
                let len = header.len as usize;
                out.clear();
                out.reserve(len);
                let take = len.min(self.buffered());
                out.extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                len
            }
        };

        while out.len() < len {
            let need = len - out.len();
            let res = if need < self.buf.len() {
                // Small remainder: read into the buffer, which may also pick up the next
                // message(s), saving system calls.
                self.fill(t, 1).map(|()| {
                    let take = need.min(self.buffered());
                    out.extend_from_slice(&self.buf[self.start..self.start + take]);
                    self.start += take;
                })
            } else {
                match self.shared.stream.read_append(out, need) {
                    Ok(0) => Err(self.shared.eof()),
                    Ok(_) => Ok(()),
                    Err(e) => Err(self.shared.error(e, "recv", t)),
                }
            };
            if let Err(e) = res {
                return Err(self.mid_message(e, len, Some(out)));
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.expect_large = len >= RECV_BUF;
        Ok(len)
    }

    /// Classifies an error that interrupted a message: a timeout keeps what arrived for the
    /// next call; end-of-stream inside a message is a protocol error.
    fn mid_message(&mut self, e: Error, len: usize, out: Option<&mut Vec<u8>>) -> Error {
        let got = out.as_ref().map_or(self.buffered(), |o| o.len());
        match e {
            Error::TimedOut { .. } => {
                if let Some(out) = out {
                    self.partial = Some((len, std::mem::take(out)));
                }
                e
            }
            Error::Closed if out.is_some() || got > 0 => {
                let msg = match out {
                    Some(_) => format!(
                        "the peer closed the connection in the middle of a message ({got} of {len} bytes received)"
                    ),
                    None => format!(
                        "the peer closed the connection in the middle of a message header ({got} of {HEADER_LEN} bytes received)"
                    ),
                };
                self.failed = Some(msg.clone());
                Error::Protocol(msg)
            }
            e => e,
        }
    }

    /// The peer sent something invalid: close the connection and say what it was.
    fn fail(&mut self, e: frame::DecodeError) -> Error {
        use crate::sys::Cancel;
        self.shared.stream.cancel();
        self.shared.stream.finish();
        let err = Error::from_bad_header(e);
        self.failed = Some(err.to_string());
        err
    }

    fn recv_raw(&mut self, out: &mut Vec<u8>, t: Option<Duration>) -> Result<usize> {
        out.clear();
        if self.buffered() > 0 {
            out.extend_from_slice(&self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
            return Ok(out.len());
        }
        // One whole message on a message pipe, else whatever bytes have arrived.
        match self.shared.stream.read_message(out, RAW_CHUNK) {
            Ok(0) => Err(self.shared.eof()),
            Ok(n) => Ok(n),
            Err(e) => Err(self.shared.error(e, "recv", t)),
        }
    }
}

impl fmt::Debug for RecvHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvHalf")
            .field("name", &self.shared.name.as_str())
            .field("buffered", &self.buffered())
            .finish()
    }
}

/// The sending half of a [`Connection`], from [`Connection::split`].
pub struct SendHalf {
    shared: Arc<Shared<sys::Stream>>,
    timeouts: TimeoutCache,
    failed: Option<&'static str>,
}

impl SendHalf {
    /// Sends one message. See [`Connection::send`].
    pub fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.send_with(msg, self.timeouts.default)
    }

    /// Sends a UTF-8 string as one message.
    pub fn send_str(&mut self, msg: &str) -> Result<()> {
        self.send(msg.as_bytes())
    }

    /// Sends one message with a timeout. See [`Connection::send_timeout`].
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(msg, Some(timeout))
    }

    /// Sets the write timeout. See [`Connection::set_write_timeout`].
    pub fn set_write_timeout(&mut self, timeout: Option<Duration>) {
        self.timeouts.default = timeout;
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        self.shared.peer()
    }

    /// The connection's shutdown handle. See [`Connection::shutdown_handle`].
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    /// Closes the sending direction: the peer's next `recv` after the messages already sent
    /// reports [`Error::Closed`]. The [`RecvHalf`] goes on receiving what the peer sends, on
    /// every platform (Windows pipes have no half-close; in framed mode pipette sends an
    /// end-of-stream header instead, see `docs/PROTOCOL.md`; in raw mode the pipe closes).
    pub fn close(mut self) -> Result<()> {
        self.end()
    }

    /// Ends the sending direction. Where the transport has no half-close (Windows pipes),
    /// a framed connection says so in-band with the end-of-stream header and keeps the pipe
    /// open, so that the receiving half goes on working exactly as on Unix.
    fn end(&mut self) -> Result<()> {
        if !sys::HALF_CLOSE && !self.shared.raw && self.failed.is_none() {
            self.shared.check_shutdown()?;
            let t = self.timeouts.default;
            let stream = &self.shared.stream;
            self.timeouts
                .apply(t, |t| stream.set_write_timeout(t))
                .map_err(|e| self.shared.error(e, "close", t))?;
            return match self.send_frame(Header::end_of_stream().encode(), &[], t) {
                // The peer is gone already: there is nobody left to tell.
                Err(Error::Closed) => Ok(()),
                other => other,
            };
        }
        match self.shared.stream.shutdown_write() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(self.shared.error(e, "close", None)),
        }
    }

    fn send_with(&mut self, msg: &[u8], t: Option<Duration>) -> Result<()> {
        self.shared.check_shutdown()?;
        if let Some(why) = self.failed {
            return Err(Error::Protocol(format!(
                "this connection can no longer send: {why}"
            )));
        }
        let stream = &self.shared.stream;
        self.timeouts
            .apply(t, |t| stream.set_write_timeout(t))
            .map_err(|e| self.shared.error(e, "send", t))?;

        if self.shared.raw {
            let mut sent = 0;
            while sent < msg.len() {
                match stream.write(&msg[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) => return Err(self.shared.error(e, "send", t)),
                }
            }
            return Ok(());
        }

        let limit = self.shared.peer_limit();
        if msg.len() > limit as usize {
            return Err(Error::MessageTooLarge {
                len: msg.len() as u64,
                max: limit.into(),
            });
        }
        self.send_frame(Header::new(msg.len() as u32).encode(), msg, t)
    }

    /// Writes one frame: `header`, then `msg`.
    fn send_frame(
        &mut self,
        header: [u8; HEADER_LEN],
        msg: &[u8],
        t: Option<Duration>,
    ) -> Result<()> {
        let stream = &self.shared.stream;
        let total = HEADER_LEN + msg.len();
        let mut sent = 0;
        while sent < total {
            let res = if sent < HEADER_LEN {
                stream.write2(&header[sent..], msg)
            } else {
                stream.write(&msg[sent - HEADER_LEN..])
            };
            match res {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the socket accepted no bytes",
                    )))
                }
                Ok(n) => sent += n,
                Err(e) => {
                    let err = self.shared.error(e, "send", t);
                    if sent > 0 && matches!(err, Error::TimedOut { .. }) {
                        // Half a message is on the wire: the stream cannot be framed any more.
                        // Close our direction so the peer sees a truncated message at once.
                        self.failed = Some("an earlier send timed out part-way through a message");
                        let _ = stream.shutdown_write();
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SendHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendHalf")
            .field("name", &self.shared.name.as_str())
            .finish()
    }
}

/// Checks a configured `max_message_size`: at least the protocol minimum, capped at what the
/// 32-bit length field can carry.
pub(crate) fn message_limit(n: usize) -> Result<u32> {
    if n < frame::MIN_MESSAGE_LIMIT as usize {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "max_message_size {n} is below the protocol minimum of {} bytes; use at least that",
                frame::MIN_MESSAGE_LIMIT
            ),
        )));
    }
    Ok(n.min(frame::MAX_MESSAGE_LIMIT as usize) as u32)
}
