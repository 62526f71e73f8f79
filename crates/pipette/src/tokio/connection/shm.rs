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

use super::AsyncShared;
use crate::error::{Error, Operation};
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
    pub(super) fn write_now(&mut self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        self.tx.write_now(a, b)
    }

    /// Ready when the ring has room (`Ok`), or the connection is hung up: the peer is gone,
    /// or our own shutdown (`BrokenPipe`). A peer that only ended its sending direction
    /// does not end the wait (it may still read), and costs no busy loop.
    pub(super) fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        stream: &aio::Stream,
    ) -> Poll<io::Result<()>> {
        let tx = &self.tx;
        self.waiter.poll_until(cx, stream, |_| tx.room_now())
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

/// The error for a failed read or write of `op`: a peer that broke the shared-memory
/// protocol (`InvalidData` from the ring's checks) closes the connection, as in the
/// blocking driver; anything else is what it would be on the socket.
pub(super) fn error(shared: &AsyncShared, e: io::Error, op: Operation) -> Error {
    if e.kind() == io::ErrorKind::InvalidData && shared.shm.is_some() {
        shm::failure(shared, e)
    } else {
        shared.error(e, op, None)
    }
}
