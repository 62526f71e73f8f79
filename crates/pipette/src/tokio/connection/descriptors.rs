//! Messages that carry descriptors (Unix), async: the twin of the blocking
//! `connection/descriptors.rs`, with the same wire bytes and the same errors
//! (docs/PROTOCOL.md §11).
//!
//! The engine says how many descriptors a message carries (its header); the platform stream
//! keeps those that arrive with the bytes until a message claims them.

use std::future::poll_fn;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::{bounded, Connection, RecvHalf, SendHalf};
use crate::error::{Operation, Result};

/// The descriptors of the message being received.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    /// Whether the receive being polled returns them (`recv_with_descriptors`); any other
    /// receive closes a message's descriptors as soon as the message is complete.
    keep: bool,
    /// Claimed with the message's header and kept until the message is complete, so that a
    /// receive dropped part-way through a large message loses none of them.
    fds: Vec<OwnedFd>,
}

impl Claimed {
    /// The message is complete: its descriptors stay for `recv_with_descriptors`, or are
    /// closed.
    #[inline]
    pub(super) fn complete(&mut self) {
        if !self.keep && !self.fds.is_empty() {
            self.fds.clear();
        }
    }
}

impl Connection {
    /// Sends one message with open descriptors attached (files, sockets, pipes, memory: any
    /// descriptor), on a connection that [`passes_descriptors`](Connection::passes_descriptors);
    /// the async twin of the blocking
    /// [`send_with_descriptors`](crate::Connection::send_with_descriptors), with the same
    /// wire bytes. The peer receives the message with duplicates of them
    /// ([`recv_with_descriptors`](Connection::recv_with_descriptors), or the blocking one);
    /// this side keeps its own, whatever happens (it only borrows them). At most 253 per
    /// message; none is the same as [`send`](Connection::send). Waits up to the write
    /// timeout ([`set_write_timeout`](Connection::set_write_timeout)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsFd;
    /// use std::os::unix::net::UnixStream;
    /// use pipette::{ClientOptions, ServerOptions};
    /// use pipette::tokio::{Client, Server};
    ///
    /// let name = format!("doc-async-fds-{}", std::process::id());
    /// let server = Server::bind_with(&name, &ServerOptions::new().descriptors(true))?;
    /// let peer = tokio::spawn(async move {
    ///     let mut conn = server.accept().await?;
    ///     let (msg, fds) = conn.recv_with_descriptors().await?;
    ///     assert_eq!(&msg[..], b"write here");
    ///     let mut out = UnixStream::from(fds.into_iter().next().unwrap());
    ///     out.write_all(b"hello through a passed descriptor").unwrap();
    ///     Ok::<(), pipette::Error>(())
    /// });
    ///
    /// let opts = ClientOptions::new().descriptors(true);
    /// let mut client = Client::connect_with(&name, &opts).await?;
    /// assert!(client.passes_descriptors());
    /// let (mut mine, theirs) = UnixStream::pair().unwrap();
    /// client.send_with_descriptors(b"write here", &[theirs.as_fd()]).await?;
    /// drop(theirs); // the server has its own copy now
    /// peer.await.unwrap()?; // it wrote, and closed its copy
    /// let mut text = String::new();
    /// mine.read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "hello through a passed descriptor");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the connection does not pass descriptors (both sides
    /// must ask: [`ServerOptions::descriptors`](crate::ServerOptions::descriptors),
    /// [`ClientOptions::descriptors`](crate::ClientOptions::descriptors)) or more than 253
    /// are given (nothing sent either way; the connection stays usable); otherwise as
    /// [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// **Not cancel safe**, as [`send`](Connection::send). Dropped before anything was
    /// written (waiting for room in the socket, or for messages queued with
    /// [`feed`](Connection::feed) to go out), it sent nothing, descriptors included, and the
    /// connection is unchanged. Dropped after the first bytes went out (the descriptors go
    /// with the first), the message is cut as `send` cuts it: the peer sees a truncated
    /// message and later sends fail with [`Error::Broken`](crate::Error::Broken). The caller's descriptors stay
    /// open either way.
    pub async fn send_with_descriptors(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        self.send.send_with_descriptors(msg, fds).await
    }

    /// Receives one whole message and the descriptors that came with it (none for a
    /// message sent without), owned by the caller: close-on-exec, and closed when dropped;
    /// the async twin of the blocking
    /// [`recv_with_descriptors`](crate::Connection::recv_with_descriptors). Waits up to the
    /// read timeout ([`set_read_timeout`](Connection::set_read_timeout)).
    ///
    /// Any other receive (`recv`, `recv_string`, the `Stream` of messages, ...) of a message
    /// that carries descriptors closes them once it has the message, so that nothing
    /// accumulates in a process that does not want them.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv); also, and for good (the connection is closed):
    /// [`Error::Io`](crate::Error::Io) when the descriptors could not be received because this process has
    /// reached its limit of open files (`RLIMIT_NOFILE`), and [`Error::Protocol`](crate::Error::Protocol) when a
    /// message says it carries more descriptors than arrived with it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv): what arrived of a message before the
    /// future was dropped (a timeout included) stays in the connection, its descriptors
    /// with it, and the next `recv_with_descriptors` returns the whole message and all of
    /// them (another receive that completes the message closes them instead).
    pub async fn recv_with_descriptors(&mut self) -> Result<(Bytes, Vec<OwnedFd>)> {
        self.recv.recv_with_descriptors().await
    }
}

impl SendHalf {
    /// Sends one message with descriptors. See [`Connection::send_with_descriptors`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_with_descriptors`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send_with_descriptors`]).
    pub async fn send_with_descriptors(
        &mut self,
        msg: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<()> {
        if fds.is_empty() {
            return self.send(msg).await;
        }
        self.shared.check_shutdown()?;
        let n = self.shared.descriptor_count(fds.len())?;
        self.tx.sticky.check()?;
        let t = self.timeout;
        bounded(t, Operation::Send, self.send_descriptors(msg, fds, n)).await
    }

    async fn send_descriptors(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>], n: u8) -> Result<()> {
        // Messages queued with `feed` go first.
        if !self.queue.is_empty() {
            poll_fn(|cx| self.poll_flush(cx)).await?;
        }
        let limit = self.shared.reply.limit_or_minimum();
        let mut out = self.tx.frame_with_descriptors(msg.len(), limit, n)?;
        let shared = &self.shared;
        // A direct attempt first (as `send_now`), then on the reactor's readiness. Nothing
        // goes out until the first byte does, with the descriptors.
        let first = match shared
            .stream
            .write_with_descriptors_now(out.header(), msg, fds)
        {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll_fn(|cx| {
                    shared
                        .stream
                        .poll_write_with_descriptors(cx, out.header(), msg, fds)
                })
                .await
            }
            other => other,
        };
        match first {
            Ok(0) => Err(shared.error(
                io::Error::new(io::ErrorKind::WriteZero, "the stream accepted no bytes"),
                Operation::Send,
                None,
            )),
            Ok(k) if out.advance(k) => Ok(()),
            // The descriptors went with the first byte; the rest is bytes only, written
            // under `write_all`'s guard, which cuts the message if this future is dropped.
            Ok(_) => self.write_all(out, msg).await,
            Err(e) => Err(shared.error(e, Operation::Send, None)),
        }
    }
}

impl RecvHalf {
    /// Receives one message and its descriptors. See [`Connection::recv_with_descriptors`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_with_descriptors`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (see [`Connection::recv_with_descriptors`]).
    pub async fn recv_with_descriptors(&mut self) -> Result<(Bytes, Vec<OwnedFd>)> {
        let t = self.timeout;
        let recv = poll_fn(|cx| self.poll_recv_with_descriptors(cx));
        bounded(t, Operation::Recv, recv).await
    }

    fn poll_recv_with_descriptors(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Bytes, Vec<OwnedFd>)>> {
        // Only for this poll: a receive of another kind that finishes the message after this
        // future is dropped closes them.
        self.claimed.keep = true;
        let got = self.poll_recv(cx);
        self.claimed.keep = false;
        got.map_ok(|msg| (msg, std::mem::take(&mut self.claimed.fds)))
    }

    /// The message just decoded carries descriptors: take them from those that arrived,
    /// until the message is complete ([`Claimed::complete`]).
    #[cold]
    pub(super) fn claim(&mut self) -> Result<()> {
        let n = self.rx.decoder.take_descriptors();
        match self.shared.stream.claim_descriptors(n) {
            Ok(fds) => {
                self.claimed.fds = fds;
                Ok(())
            }
            Err(why) => Err(self.rx.unclaimed(&self.shared, why)),
        }
    }
}
