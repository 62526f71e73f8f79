//! Messages that carry handles (Windows): open files, pipes, events, processes, sections
//! (any handle `DuplicateHandle` can duplicate) sent with a message and received as owned
//! handles (docs/PROTOCOL.md §11, "Windows").
//!
//! A named pipe cannot carry handles, so **the receiver pulls them**: the sender duplicates
//! each handle in its own process and sends the values at the start of the payload; the
//! receiver takes each one out of the sender's process (opened at the handshake, its pid from
//! the pipe) and so closes the sender's copy. The engine says how many handles a message
//! carries (its header); the values are read here once the whole message has arrived.

use std::os::windows::io::{BorrowedHandle, OwnedHandle};

use super::{Connection, RecvHalf, SendHalf, Wait};
use crate::error::{Error, Result};
use crate::sys::handles;

/// The handles of the message being received.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    /// Whether the receive in progress returns them (`recv_with_handles`); any other receive
    /// takes a message's handles from the sender all the same (so that none stays open
    /// there) and closes them at once.
    keep: bool,
    /// How many handle values begin the payload of the message being received (its header
    /// said so; 0: none).
    pending: usize,
    handles: Vec<OwnedHandle>,
}

impl Claimed {
    /// The message being received carries handles: take them once it is whole.
    #[inline]
    pub(super) fn pending(&self) -> bool {
        self.pending != 0
    }
}

impl Connection {
    /// Sends one message with open handles attached (files, pipes, events, processes,
    /// sections: any handle that `DuplicateHandle` can duplicate), on a connection that
    /// [`passes_descriptors`](Connection::passes_descriptors). The peer receives the message
    /// with its own duplicates of them ([`recv_with_handles`](Connection::recv_with_handles),
    /// same access rights, not inheritable); this side keeps its own, whatever happens (it
    /// only borrows them). At most 253 per message; none is the same as
    /// [`send`](Connection::send).
    ///
    /// How they travel: this side makes its own duplicate of each handle and sends its value
    /// at the start of the payload (8 bytes each, counted against the peer's message limit);
    /// the receiver takes each duplicate out of this process, which closes it here. A message
    /// sent but never received (the peer ends first) leaves its duplicates open in this
    /// process until it exits: Windows cannot close a handle from outside the process that
    /// holds it. The message is copied once, behind the values.
    ///
    /// ```
    /// use std::io::{Read, Seek, Write};
    /// use std::os::windows::io::AsHandle;
    /// use pipette::{Client, ClientOptions, Server, ServerOptions};
    ///
    /// let name = format!("doc-handles-{}", std::process::id());
    /// let server = Server::bind_with(&name, &ServerOptions::new().descriptors(true))?;
    /// let peer = std::thread::spawn(move || -> pipette::Result<()> {
    ///     let mut conn = server.accept()?;
    ///     let (msg, handles) = conn.recv_with_handles()?;
    ///     assert_eq!(msg, b"write here");
    ///     let mut file = std::fs::File::from(handles.into_iter().next().unwrap());
    ///     file.write_all(b"hello through a passed handle").unwrap();
    ///     Ok(())
    /// });
    ///
    /// let mut client = Client::connect_with(&name, &ClientOptions::new().descriptors(true))?;
    /// assert!(client.passes_descriptors());
    /// let path = std::env::temp_dir().join(format!("{name}.txt"));
    /// let mut file = std::fs::File::options()
    ///     .read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    /// client.send_with_handles(b"write here", &[file.as_handle()])?;
    /// peer.join().unwrap()?;
    /// // The server's handle is a duplicate: the same open file, the same position.
    /// file.rewind().unwrap();
    /// let mut text = String::new();
    /// file.read_to_string(&mut text).unwrap();
    /// assert_eq!(text, "hello through a passed handle");
    /// drop(file);
    /// std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) when the connection does not
    /// pass handles (both sides must ask: [`ServerOptions::descriptors`](crate::ServerOptions::descriptors),
    /// [`ClientOptions::descriptors`](crate::ClientOptions::descriptors); and each side must
    /// be able to open the other's process with `PROCESS_DUP_HANDLE`, usually: both run as the
    /// same user) or more than 253 are given; [`Error::Io`](crate::Error::Io) when one of
    /// them cannot be duplicated (not a valid handle). In these cases nothing is sent and
    /// the connection stays usable. Otherwise as [`send`](Connection::send) (for a message of
    /// `msg.len() + 8 × handles` bytes).
    pub fn send_with_handles(&mut self, msg: &[u8], handles: &[BorrowedHandle<'_>]) -> Result<()> {
        self.send.send_with_handles(msg, handles)
    }

    /// Receives one whole message and the handles that came with it (none for a message
    /// sent without), owned by the caller (not inheritable, closed when dropped).
    ///
    /// Any other receive (`recv`, `recv_string`, ...) of a message that carries handles takes
    /// them from the sender all the same and closes them at once, so that none stays open in
    /// either process.
    ///
    /// # Errors
    ///
    /// As [`recv`](Connection::recv); also, and for good (the connection is closed; a server
    /// goes on serving its other clients): [`Error::Protocol`](crate::Error::Protocol) when a
    /// message says it carries more handles than its payload has values for, or when a value
    /// is not a handle that can be taken from the sender's process (a peer that does not
    /// follow the protocol). The handles of such a message that could be taken are closed.
    pub fn recv_with_handles(&mut self) -> Result<(Vec<u8>, Vec<OwnedHandle>)> {
        self.recv.recv_with_handles()
    }
}

impl SendHalf {
    /// Sends one message with handles. See [`Connection::send_with_handles`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send_with_handles`].
    pub fn send_with_handles(&mut self, msg: &[u8], handles: &[BorrowedHandle<'_>]) -> Result<()> {
        if handles.is_empty() {
            return self.send(msg);
        }
        self.shared.check_shutdown()?;
        let n = self.shared.descriptor_count(handles.len())?;
        let t = self.timeouts.default;
        self.apply_write_timeout(t)?;
        // Our own duplicates, whose values the message carries (closed below unless the
        // whole message goes out).
        let copies = handles::sender_copies(handles)
            .map_err(|e| Error::io("cannot send a message's handles", e))?;
        let payload = crate::handles::payload(&copies, msg);
        let limit = self.shared.reply.limit_or_minimum();
        let out = self.tx.frame_with_descriptors(payload.len(), limit, n)?;
        let sent = self.write_rest(out, &payload, t, None);
        // The receiver takes the copies once the whole message has arrived (and closes them
        // in this process when it does): they are left to it when the message went out
        // whole; otherwise (nothing sent, or the message cut part-way, which never arrives
        // whole) they are still ours alone, and closed here.
        if sent.is_ok() {
            handles::leave(copies);
        }
        sent
    }
}

impl RecvHalf {
    /// Receives one message and its handles. See [`Connection::recv_with_handles`].
    ///
    /// # Errors
    ///
    /// As [`Connection::recv_with_handles`].
    pub fn recv_with_handles(&mut self) -> Result<(Vec<u8>, Vec<OwnedHandle>)> {
        let mut msg = Vec::new();
        self.claimed.keep = true;
        let got = self.recv_with(&mut msg, Wait::Block(self.timeouts.default));
        self.claimed.keep = false;
        got?;
        Ok((msg, std::mem::take(&mut self.claimed.handles)))
    }

    /// The message just decoded carries handles: their values begin its payload, read once
    /// the message is whole ([`take_handles`](RecvHalf::take_handles)).
    #[cold]
    pub(super) fn claim(&mut self) -> Result<()> {
        self.claimed.pending = self.rx.decoder.take_descriptors();
        Ok(())
    }

    /// The whole message in `out` carries handles: takes them out of the sender's process
    /// (kept for `recv_with_handles`, else closed at once) and leaves only the message in
    /// `out`. Returns its length.
    #[cold]
    pub(super) fn take_handles(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let n = std::mem::take(&mut self.claimed.pending);
        match crate::handles::take(self.shared.stream.peer_process(), out, n) {
            Ok(taken) => {
                out.drain(..crate::handles::VALUE_LEN * n);
                // Not wanted: closed here (and the sender's copies are gone).
                if self.claimed.keep {
                    self.claimed.handles = taken;
                }
                Ok(out.len())
            }
            Err(e) => Err(self.rx.broken(&self.shared, e)),
        }
    }
}
