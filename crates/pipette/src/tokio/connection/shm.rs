//! The async driver of the shared-memory transport (docs/PROTOCOL.md §10): the ring
//! discipline is `crate::shm`'s, shared with the blocking driver (`Rx::take`, `Tx::write_now`,
//! `announce`/`withdraw` of the waiting words, `publish`); only the waiting is here, on
//! tokio's reactor (`sys::shm::AsyncWait`: the eventfd and the socket), never spinning.
//!
//! A wait announces itself in its ring's waiting word, checks again, and only then registers
//! with the reactor; it returns `Pending` still announced, so that the other side, which
//! looks at the word after each publish, signals the eventfd and the reactor wakes the task.
//! A future dropped while announced costs the peer only needless signals until the next wait.

use std::io;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BufMut;

use std::future::poll_fn;

use super::{bounded, Connection, SendHalf};
use crate::error::{Operation, Result};
use crate::frame::HEADER_LEN;
use crate::shm::{self, Dst, Link, Rx, Tx};
use crate::sys::aio;
use crate::sys::shm::{AsyncWait, Event, Region, Woken};

/// The wait both halves share, for one event of the region.
#[derive(Debug)]
struct Waiter {
    region: Arc<Region>,
    event: Event,
    wait: AsyncWait,
}

impl Waiter {
    fn new(link: &Link, event: Event) -> io::Result<Waiter> {
        let wait = AsyncWait::new(&link.region, event)?;
        Ok(Waiter {
            region: link.region.clone(),
            event,
            wait,
        })
    }

    /// `check(announced)` until it says something but `WouldBlock`: once, then announced
    /// (`announce`, check again, register with the reactor, `withdraw` when woken). A
    /// consumer's socket wake is checked by `check` (which reads the socket then); a
    /// producer's is a hang-up (`BrokenPipe`).
    fn poll_until<T>(
        &self,
        cx: &mut Context<'_>,
        stream: &aio::Stream,
        mut check: impl FnMut(bool) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match check(false) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
            shm::announce(&self.region, self.event);
            match check(true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => {
                    shm::withdraw(&self.region, self.event);
                    return Poll::Ready(other);
                }
            }
            // Still announced while pending: the other side signals the eventfd.
            let woken = ready!(self.wait.poll_wait(cx, stream));
            shm::withdraw(&self.region, self.event);
            if let (Woken::Socket, Event::Room(_)) = (woken?, self.event) {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
        }
    }
}

/// The receive half's end of its ring, waiting on the reactor.
#[derive(Debug)]
pub(super) struct ShmRecv {
    rx: Rx,
    waiter: Waiter,
}

impl ShmRecv {
    /// One read into `buf` (which must have room), as a socket read: the bytes there are,
    /// 0 at the peer's end (its sending direction ended, or our shutdown), else `Pending`
    /// until bytes are written or the socket says the peer ended.
    // Kept out of line: the socket path the drivers share stays as small as it was.
    #[inline(never)]
    pub(super) fn poll_read<B: BufMut>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &aio::Stream,
        buf: &mut B,
    ) -> Poll<io::Result<usize>> {
        let (rx, waiter) = (&mut self.rx, &self.waiter);
        let mut pending = false;
        let n = aio::read_into(buf, |spare| {
            let dst = &mut Dst::Uninit(spare);
            match waiter.poll_until(cx, stream, |look| rx.take(stream, dst, look)) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    pending = true;
                    Ok(0)
                }
            }
        })?;
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(Ok(n))
        }
    }
}

/// The send half's end of its ring, waiting for room on the reactor.
#[derive(Debug)]
pub(super) struct ShmSend {
    tx: Tx,
    waiter: Waiter,
}

impl ShmSend {
    /// Writes as much of `a` then `b` as fits; `WouldBlock` when the ring is full.
    // Kept out of line, as `ShmRecv::poll_read`.
    #[inline(never)]
    pub(super) fn write_now(&mut self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        self.tx.write_now(a, b)
    }

    /// Ready when the ring has room for `need` bytes (`Ok`), or the connection is hung up:
    /// the peer is gone, or our own shutdown (`BrokenPipe`). A peer that only ended its
    /// sending direction does not end the wait (it may still read), and costs no busy loop.
    pub(super) fn poll_room_for(
        &mut self,
        cx: &mut Context<'_>,
        stream: &aio::Stream,
        need: usize,
    ) -> Poll<io::Result<()>> {
        let tx = &self.tx;
        self.waiter.poll_until(cx, stream, |_| tx.room_for(need))
    }
}

impl Connection {
    /// Sends one message of `len` bytes that `fill` writes in place: on a shared-memory
    /// connection straight into the ring the peer reads (no copy on this side), elsewhere
    /// into a buffer that is then sent as [`send`](Connection::send) sends. The async twin
    /// of [`pipette::Connection::send_with`](crate::Connection::send_with), with the same
    /// rules: `fill` must write all `len` bytes (their contents on entry are unspecified),
    /// nothing is sent if it panics, and in place needs the message and its 8-byte header
    /// to fit in the ring whole (a larger one goes through a buffer). Messages queued with
    /// [`feed`](Connection::feed) go first. Waits for room up to the write timeout.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pipette::Result<()> {
    /// use pipette::tokio::{Client, Server};
    ///
    /// let name = format!("doc-async-in-place-{}", std::process::id());
    /// let server = Server::bind(&name)?;
    /// let mut client = Client::connect(&name).await?;
    /// client.send_with(5, |buf| buf.copy_from_slice(b"hello")).await?;
    /// assert_eq!(&server.accept().await?.recv().await?[..], b"hello");
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
    /// In place, cancel safe: nothing is written until the ring has room for the whole
    /// message, and then it is written at once (`fill` is called only then); dropped before,
    /// nothing was sent and the connection is unchanged. Through a buffer (a socket
    /// connection, or a message larger than the ring), not cancel safe, as
    /// [`send`](Connection::send).
    pub async fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.send.send_with(len, fill).await
    }
}

impl SendHalf {
    /// Sends one message written in place. See [`Connection::send_with`].
    ///
    /// # Errors
    ///
    /// As [`Connection::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Connection::send_with`].
    pub async fn send_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        let fits = self
            .shm
            .as_ref()
            .is_some_and(|ring| ring.tx.fits_in_place(len));
        if !fits {
            let mut buf = vec![0u8; len];
            fill(&mut buf);
            return self.send(&buf).await;
        }
        self.shared.check_shutdown()?;
        self.tx.sticky.check()?;
        // A shared-memory client read the reply in `connect`: the limit is known.
        let out = self.tx.frame(len, self.shared.reply.limit_or_minimum())?;
        let need = HEADER_LEN + len;
        let t = self.timeout;
        let room = async {
            // What `feed` queued goes first (cancel safe: it stays queued).
            poll_fn(|cx| self.poll_flush(cx)).await?;
            let (shared, ring) = (&self.shared, &mut self.shm);
            let ring = ring.as_mut().expect("checked above");
            poll_fn(|cx| ring.poll_room_for(cx, &shared.stream, need))
                .await
                .map_err(|e| shared.error(e, Operation::Send, None))
        };
        bounded(t, Operation::Send, room).await?;
        let ring = self.shm.as_mut().expect("checked above");
        ring.tx.write_frame_in_place(out.header(), len, fill);
        Ok(())
    }
}

/// Both halves' shared-memory ends, for a connection that agreed to it. Fails only when
/// the reactor refuses to register an eventfd.
pub(super) fn halves(link: &Link) -> io::Result<(ShmRecv, ShmSend)> {
    let (rx, tx) = (Rx::new(link), Tx::new(link));
    let recv = ShmRecv {
        waiter: Waiter::new(link, rx.event())?,
        rx,
    };
    let send = ShmSend {
        waiter: Waiter::new(link, tx.event())?,
        tx,
    };
    Ok((recv, send))
}
