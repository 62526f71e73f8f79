//! Messages that carry handles (Windows), async: the twin of the blocking
//! `connection/handles.rs`, with the same wire bytes and the same errors (docs/PROTOCOL.md
//! §11, "Windows": the receiver pulls the handles from the sender's process).

use std::future::poll_fn;
use std::os::windows::io::{BorrowedHandle, OwnedHandle};
use std::task::{Context, Poll};

use bytes::Bytes;

use super::{bounded, Connection, RecvHalf, SendHalf};
use crate::error::{Error, Operation, Result};
use crate::sys::handles;

/// The handles of the message being received.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    /// Whether the receive being polled returns them (`recv_with_handles`); any other
    /// receive takes a message's handles from the sender all the same and closes them.
    keep: bool,
    /// How many handle values begin the payload of the message being received (its header
    /// said so; 0: none). Kept until the message is whole, so that a receive dropped
    /// part-way through a large message loses nothing.
    pending: usize,
    handles: Vec<OwnedHandle>,
}

/// This side's copies of a message's handles (whose values it sends), until the whole
/// message has gone out: closed when the send ends before that (failed, or its future
/// dropped: the message was not sent, or was cut, and the receiver takes handles only from a
/// whole message); left open after, for the receiver to take (which closes them).
struct Copies(Vec<OwnedHandle>);

impl Copies {
    fn sent(&mut self) {
        handles::leave(std::mem::take(&mut self.0));
    }
}

impl Connection {
    /// Sends one message with open handles attached (files, pipes, events, processes,
    /// sections: any handle that `DuplicateHandle` can duplicate), on a connection that
    /// [`passes_descriptors`](Connection::passes_descriptors); the async twin of the blocking
    /// [`send_with_handles`](crate::Connection::send_with_handles), with the same wire bytes
    /// and the same rules (the receiver takes this side's duplicates out of this process; a
    /// message never received leaves them open here until this process exits). This side
    /// keeps its own handles, whatever happens. At most 253 per message; none is the same as
    /// [`send`](Connection::send). Waits up to the write timeout
    /// ([`set_write_timeout`](Connection::set_write_timeout)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use std::io::{Read, Seek, Write};
    /// use std::os::windows::io::AsHandle;
    /// use pipette::{ClientOptions, ServerOptions};
    /// use pipette::tokio::{Client, Server};
    ///
    /// let name = format!("doc-async-handles-{}", std::process::id());
    /// let server = Server::bind_with(&name, &ServerOptions::new().descriptors(true))?;
    /// let peer = tokio::spawn(async move {
    ///     let mut conn = server.accept().await?;
    ///     let (msg, handles) = conn.recv_with_handles().await?;
    ///     assert_eq!(&msg[..], b"write here");
    ///     let mut file = std::fs::File::from(handles.into_iter().next().unwrap());
    ///     file.write_all(b"hello through a passed handle").unwrap();
    ///     Ok::<(), pipette::Error>(())
    /// });
    ///
    /// let opts = ClientOptions::new().descriptors(true);
    /// let mut client = Client::connect_with(&name, &opts).await?;
    /// assert!(client.passes_descriptors());
    /// let path = std::env::temp_dir().join(format!("{name}.txt"));
    /// let mut file = std::fs::File::options()
    ///     .read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    /// client.send_with_handles(b"write here", &[file.as_handle()]).await?;
    /// peer.await.unwrap()?;
    /// file.rewind().unwrap(); // the server's handle is the same open file
    /// let mut text = String::new();
    /// file.read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "hello through a passed handle");
    /// drop(file);
    /// std::fs::remove_file(&path).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As the blocking [`send_with_handles`](crate::Connection::send_with_handles):
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the connection does not
    /// pass handles or more than 253 are given, [`Error::Io`](crate::Error::Io) when one
    /// cannot be duplicated (nothing sent in these cases; the connection stays usable);
    /// otherwise as [`send`](Connection::send).
    ///
    /// # Cancel safety
    ///
    /// **Not cancel safe**, as [`send`](Connection::send). Dropped before anything was
    /// written, it sent nothing and closed its duplicates; dropped after the first bytes went
    /// out, the message is cut as `send` cuts it, and its duplicates stay open in this
    /// process (the peer may have taken some). The caller's handles stay open either way.
    pub async fn send_with_handles(
        &mut self,
        msg: &[u8],
        handles: &[BorrowedHandle<'_>],
    ) -> Result<()> {
        self.send.send_with_handles(msg, handles).await
    }

    /// Receives one whole message and the handles that came with it (none for a message
    /// sent without), owned by the caller (not inheritable, closed when dropped); the async
    /// twin of the blocking [`recv_with_handles`](crate::Connection::recv_with_handles).
    /// Waits up to the read timeout ([`set_read_timeout`](Connection::set_read_timeout)).
    ///
    /// Any other receive (`recv`, `recv_string`, the `Stream` of messages, ...) of a message
    /// that carries handles takes them from the sender all the same and closes them, so that
    /// none stays open in either process.
    ///
    /// # Errors
    ///
    /// As the blocking [`recv_with_handles`](crate::Connection::recv_with_handles): also,
    /// for good, [`Error::Protocol`](crate::Error::Protocol) for a message whose payload is
    /// shorter than its handle values or with a value that cannot be taken from the sender.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`recv`](Connection::recv): what arrived of a message before the
    /// future was dropped stays in the connection, and its handles are taken only once the
    /// message is whole (by the receive that completes it: closed at once unless that is a
    /// `recv_with_handles`).
    pub async fn recv_with_handles(&mut self) -> Result<(Bytes, Vec<OwnedHandle>)> {
        self.recv.recv_with_handles().await
    }
}

impl SendHalf {
    /// Sends one message with handles. See [`Connection::send_with_handles`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_with_handles`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe (see [`Connection::send_with_handles`]).
    pub async fn send_with_handles(
        &mut self,
        msg: &[u8],
        handles: &[BorrowedHandle<'_>],
    ) -> Result<()> {
        if handles.is_empty() {
            return self.send(msg).await;
        }
        self.shared.check_shutdown()?;
        let n = self.shared.descriptor_count(handles.len())?;
        self.tx.sticky.check()?;
        let copies = handles::sender_copies(handles)
            .map_err(|e| Error::io("cannot send a message's handles", e))?;
        let payload = crate::handles::payload(&copies, msg);
        let t = self.timeout;
        bounded(
            t,
            Operation::Send,
            self.send_handles(&payload, n, Copies(copies)),
        )
        .await
    }

    async fn send_handles(&mut self, payload: &[u8], n: u8, mut copies: Copies) -> Result<()> {
        // Messages queued with `feed` go first.
        if !self.queue.is_empty() {
            poll_fn(|cx| self.poll_flush(cx)).await?;
        }
        let limit = self.shared.reply.limit_or_minimum();
        let out = self.tx.frame_with_descriptors(payload.len(), limit, n)?;
        // The receiver takes the copies once the whole message has arrived: they are left
        // to it then, and closed here if the message is not sent or cut instead (a failure,
        // or this future dropped: `write_all`'s guard cuts it), since a cut message never
        // arrives whole.
        self.write_all(out, payload).await?;
        copies.sent();
        Ok(())
    }
}

impl RecvHalf {
    /// Receives one message and its handles. See [`Connection::recv_with_handles`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_with_handles`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (see [`Connection::recv_with_handles`]).
    pub async fn recv_with_handles(&mut self) -> Result<(Bytes, Vec<OwnedHandle>)> {
        let t = self.timeout;
        let recv = poll_fn(|cx| self.poll_recv_with_handles(cx));
        bounded(t, Operation::Recv, recv).await
    }

    fn poll_recv_with_handles(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(Bytes, Vec<OwnedHandle>)>> {
        // Only for this poll: a receive of another kind that finishes the message after this
        // future is dropped closes them.
        self.claimed.keep = true;
        let got = self.poll_recv(cx);
        self.claimed.keep = false;
        got.map_ok(|msg| (msg, std::mem::take(&mut self.claimed.handles)))
    }

    /// The message just decoded carries handles: their values begin its payload, read once
    /// the message is whole ([`finished`](RecvHalf::finished)).
    #[cold]
    pub(super) fn claim(&mut self) -> Result<()> {
        self.claimed.pending = self.rx.decoder.take_descriptors();
        Ok(())
    }

    /// A whole message: when it carries handles, they are taken out of the sender's process
    /// now (kept for `recv_with_handles`, else closed at once) and their values removed.
    #[inline(always)]
    pub(super) fn finished(&mut self, msg: Bytes) -> Result<Bytes> {
        if self.claimed.pending != 0 {
            return self.take_handles(msg);
        }
        Ok(msg)
    }

    #[cold]
    fn take_handles(&mut self, mut msg: Bytes) -> Result<Bytes> {
        let n = std::mem::take(&mut self.claimed.pending);
        match crate::handles::take(self.shared.stream.peer_process(), &msg, n) {
            Ok(taken) => {
                let _ = msg.split_to(crate::handles::VALUE_LEN * n);
                // Not wanted: closed here (and the sender's copies are gone).
                if self.claimed.keep {
                    self.claimed.handles = taken;
                }
                Ok(msg)
            }
            Err(e) => Err(self.rx.broken(&self.shared, e)),
        }
    }
}
