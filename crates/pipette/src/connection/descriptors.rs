//! Messages that carry descriptors (Unix): open files, sockets, pipes or memory sent with a
//! message (`SCM_RIGHTS`) and received as owned descriptors (docs/PROTOCOL.md §11).
//!
//! The engine says how many descriptors a message carries (its header); the platform stream
//! keeps those that arrive with the bytes until a message claims them.

use std::os::fd::{BorrowedFd, OwnedFd};

use super::{Connection, RecvHalf, SendHalf, Wait};
use crate::error::Result;

/// The descriptors of the message being received.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    /// Whether the receive in progress returns them (`recv_with_descriptors`); any other
    /// receive closes a message's descriptors as soon as it claims them.
    keep: bool,
    fds: Vec<OwnedFd>,
}

impl Connection {
    /// Sends one message with open descriptors attached (files, sockets, pipes, memory: any
    /// descriptor), on a connection that [`passes_descriptors`](Connection::passes_descriptors).
    /// The peer receives the message with duplicates of them
    /// ([`recv_with_descriptors`](Connection::recv_with_descriptors)); this side keeps its
    /// own, whatever happens (it only borrows them). At most 253 per message; none is the
    /// same as [`send`](Connection::send).
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsFd;
    /// use std::os::unix::net::UnixStream;
    /// use pipette::{Client, ClientOptions, Server, ServerOptions};
    ///
    /// let name = format!("doc-fds-{}", std::process::id());
    /// let server = Server::bind_with(&name, &ServerOptions::new().descriptors(true))?;
    /// let peer = std::thread::spawn(move || -> pipette::Result<()> {
    ///     let mut conn = server.accept()?;
    ///     let (msg, fds) = conn.recv_with_descriptors()?;
    ///     assert_eq!(msg, b"write here");
    ///     let mut out = UnixStream::from(fds.into_iter().next().unwrap());
    ///     out.write_all(b"hello through a passed descriptor").unwrap();
    ///     Ok(())
    /// });
    ///
    /// let mut client = Client::connect_with(&name, &ClientOptions::new().descriptors(true))?;
    /// assert!(client.passes_descriptors());
    /// let (mut mine, theirs) = UnixStream::pair().unwrap();
    /// client.send_with_descriptors(b"write here", &[theirs.as_fd()])?;
    /// drop(theirs); // the server has its own copy now
    /// let mut text = String::new();
    /// mine.read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "hello through a passed descriptor");
    /// peer.join().unwrap()?;
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the connection does not pass descriptors (both sides
    /// must ask: [`ServerOptions::descriptors`](crate::ServerOptions::descriptors),
    /// [`ClientOptions::descriptors`](crate::ClientOptions::descriptors)) or more than 253
    /// are given (nothing sent either way; the connection stays usable); otherwise as
    /// [`send`](Connection::send).
    pub fn send_with_descriptors(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send.send_with_descriptors(msg, fds)
    }

    /// Receives one whole message and the descriptors that came with it (none for a
    /// message sent without), owned by the caller: close-on-exec, and closed when dropped.
    ///
    /// Any other receive (`recv`, `recv_string`, ...) of a message that carries descriptors
    /// closes them at once, so that nothing accumulates in a process that does not want
    /// them.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv); also, and for good (the connection is closed):
    /// [`Error::Io`](crate::Error::Io) when the descriptors could not be received because this process has
    /// reached its limit of open files (`RLIMIT_NOFILE`), and [`Error::Protocol`](crate::Error::Protocol) when a
    /// message says it carries more descriptors than arrived with it.
    pub fn recv_with_descriptors(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        self.recv.recv_with_descriptors()
    }
}

impl SendHalf {
    /// Sends one message with descriptors. See [`Connection::send_with_descriptors`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_with_descriptors`].
    pub fn send_with_descriptors(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.is_empty() {
            return self.send(msg);
        }
        self.shared.check_shutdown()?;
        let n = self.shared.descriptor_count(fds.len())?;
        let t = self.timeouts.default;
        self.apply_write_timeout(t)?;
        let limit = self.shared.reply.limit_or_minimum();
        let mut out = self.tx.frame_with_descriptors(msg.len(), limit, n)?;
        match self
            .shared
            .stream
            .write_with_descriptors(out.header(), msg, fds)
        {
            Ok(k) if k > 0 => {
                if out.advance(k) {
                    return Ok(());
                }
                // The descriptors went with the first byte; the rest is bytes only.
                self.write_rest(out, msg, t, None)
            }
            first => self.write_rest(out, msg, t, Some(first)),
        }
    }
}

impl RecvHalf {
    /// Receives one message and its descriptors. See [`Connection::recv_with_descriptors`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_with_descriptors`].
    pub fn recv_with_descriptors(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        let mut msg = Vec::new();
        self.claimed.keep = true;
        let got = self.recv_with(&mut msg, Wait::Block(self.timeouts.default));
        self.claimed.keep = false;
        got?;
        Ok((msg, std::mem::take(&mut self.claimed.fds)))
    }

    /// The message just decoded carries descriptors: take them from those that arrived.
    #[cold]
    pub(super) fn claim(&mut self) -> Result<()> {
        let n = self.rx.decoder.take_descriptors();
        match self.shared.stream.claim_descriptors(n) {
            Ok(fds) if self.claimed.keep => {
                self.claimed.fds = fds;
                Ok(())
            }
            // Not wanted: closed here.
            Ok(_) => Ok(()),
            Err(why) => Err(self.rx.unclaimed(&self.shared, why)),
        }
    }
}
