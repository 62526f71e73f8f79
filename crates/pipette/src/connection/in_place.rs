//! Writing a message in place: the caller fills the message's bytes where they will travel
//! from (on a shared-memory connection, the ring itself), so that a message costs one copy
//! (out of the ring, on the receiving side) instead of two.

use super::{Connection, SendHalf};
use crate::error::{Operation, Result};
use crate::frame::HEADER_LEN;
use crate::shm;
use crate::wait::spin_then_block;
use crate::WaitStrategy;

impl Connection {
    /// Sends one message of `len` bytes that `fill` writes in place: on a shared-memory
    /// connection straight into the ring the peer reads (no copy on this side), elsewhere
    /// into a buffer that is then sent as [`send`](Connection::send) sends.
    ///
    /// `fill` gets exactly `len` bytes to write, all of which are sent. Their contents on
    /// entry are unspecified (in the ring, whatever an earlier message left there): write
    /// every byte. Nothing is sent until `fill` returns; if it panics, nothing is sent at
    /// all. The slice is memory only this process can write (the peer maps it read-only).
    ///
    /// In place needs the message and its 8-byte header to fit in the ring whole (see
    /// [`ClientOptions::shared_memory_ring`](crate::ClientOptions::shared_memory_ring)); a
    /// larger one goes through a buffer. Waits for room as `send` does, up to the write
    /// timeout; a timeout here sends nothing and leaves the connection usable.
    ///
    /// ```
    /// use pipette::{Client, Server};
    ///
    /// let name = format!("doc-in-place-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name)?;
    /// client.send_with(5, |buf| buf.copy_from_slice(b"hello"))?;
    /// assert_eq!(server.accept()?.recv()?, b"hello");
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`send`](Connection::send).
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.send.send_with(len, fill)
    }
}

impl SendHalf {
    /// Sends one message written in place. See [`Connection::send_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    pub fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let fits = self.shm.as_ref().is_some_and(|tx| tx.fits_in_place(len));
        if !fits {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            return self.send_msg(&buf, self.timeouts.default);
        }
        self.shared.check_shutdown()?;
        let t = self.timeouts.default;
        // A shared-memory client read the reply in `connect`: the limit is known.
        let limit = self.shared.reply.limit_or_minimum();
        let out = self.tx.frame(len, limit)?;
        let need = HEADER_LEN + len;
        let stream = &*self.shared.stream;
        let Some(tx) = &mut self.shm else {
            unreachable!("checked above")
        };
        let room = spin_then_block(
            WaitStrategy::Spin(shm::DEFAULT_SPIN),
            t,
            &self.shared.shutdown,
            |now| {
                if now {
                    tx.room_for(need)
                } else {
                    tx.wait_room(stream, need, t)
                }
            },
        );
        if let Err(e) = room {
            return Err(self.shared.error(e, Operation::Send, t));
        }
        tx.write_frame_in_place(out.header(), len, fill);
        Ok(())
    }
}
