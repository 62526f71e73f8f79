//! A connected Unix domain stream socket.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;

use super::fds::{Inbox, Unclaimed};
use super::os;
use super::socket::{
    connect_nonblocking, recv_now, recv_uninit_now, send2_now, send_now, shutdown_both,
    shutdown_write, wait_for,
};
use crate::sys::{Cancel, ConnectOptions};
use crate::PeerIdentity;

/// A connected, blocking `SOCK_STREAM` Unix socket.
///
/// Reads never sleep inside `read(2)`: they try `recv(MSG_DONTWAIT)` and, when nothing is
/// there, wait in `ppoll(POLLIN)` (`poll` on macOS, which has no `ppoll`), with the read
/// timeout kept here rather than in `SO_RCVTIMEO`. A thread asleep in `read(2)` on a Unix stream socket is also woken each
/// time the peer consumes data *we* sent (the socket's wait queue gets a write-space wake-up,
/// which a plain read waiter does not filter out), so a request/response exchange costs the
/// reader an extra wake-up, often on another CPU, per round trip. `poll` waiters are woken
/// only for the events they asked for, as epoll's (tokio's) are. See docs/PERFORMANCE.md.
///
/// Writes likewise use `MSG_DONTWAIT` and wait in `ppoll(POLLOUT)` when the buffer is full,
/// so the descriptor's own blocking mode never matters (a client's socket stays as its
/// non-blocking connect left it, one `ioctl` fewer per connection; an accepted one is
/// blocking, as Linux's `accept4` gives it, on every system: see `socket::accept`).
///
/// A receive that is bound to find nothing goes straight to `ppoll`: when the last receive
/// read less than it asked for (the socket was empty then) and this side has sent since,
/// what it waits for now is the peer's answer, which needs the peer's turn first. That
/// saves the `recv` failing with `EAGAIN` in every request/response exchange (one system
/// call per receive); when the guess is wrong, `ppoll` returns at once and the receive costs
/// what one that found nothing would have. A reader that does not send (a stream of
/// messages) always tries `recv` first.
#[derive(Debug)]
pub(crate) struct Stream {
    fd: OwnedFd,
    /// The read timeout in nanoseconds; `NO_TIMEOUT` for none.
    read_timeout: AtomicU64,
    /// The write timeout, likewise.
    write_timeout: AtomicU64,
    /// `DRAINED` and `SENT` bits: where the next plain receive starts (see above). Only a
    /// hint: the halves of a split connection may race on it, which costs a system call at
    /// worst.
    hint: AtomicU8,
    /// Where descriptors that arrive with the bytes wait for the message that claims them,
    /// once this connection takes descriptors (`None`: reads are plain `recv`s, and the
    /// kernel closes any descriptor a peer attaches).
    inbox: Option<Box<Inbox>>,
}

const NO_TIMEOUT: u64 = u64::MAX;

/// The last plain receive read less than it asked for, or nothing was read yet from a
/// freshly connected socket (the server answers the hello only after a wake-up).
const DRAINED: u8 = 1;
/// This side sent something since that receive.
const SENT: u8 = 2;

/// A timeout as kept in a `Stream` (nanoseconds, at least 1; `NO_TIMEOUT` for none).
fn timeout_ns(d: Option<Duration>) -> u64 {
    match d {
        None => NO_TIMEOUT,
        Some(d) => (d.as_nanos().min(u128::from(NO_TIMEOUT - 1)) as u64).max(1),
    }
}

/// The remaining time of a wait that began (at its first `WouldBlock`) with `timeout`:
/// `Ok(None)` for no limit, `Err(WouldBlock)` once it is over (what `SO_RCVTIMEO` and
/// `SO_SNDTIMEO` would return).
fn remaining(
    deadline: &mut Option<Option<Instant>>,
    timeout: &AtomicU64,
) -> io::Result<Option<Duration>> {
    let deadline = *deadline.get_or_insert_with(|| match timeout.load(Ordering::Relaxed) {
        NO_TIMEOUT => None,
        ns => Some(Instant::now() + Duration::from_nanos(ns)),
    });
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(r) if !r.is_zero() => Ok(Some(r)),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        },
    }
}

impl Stream {
    pub(super) fn from_fd(fd: OwnedFd) -> Stream {
        Stream {
            fd,
            read_timeout: AtomicU64::new(NO_TIMEOUT),
            write_timeout: AtomicU64::new(NO_TIMEOUT),
            hint: AtomicU8::new(0),
            inbox: None,
        }
    }

    /// Notes that bytes went out (see `hint`).
    #[inline]
    fn sent(&self) {
        let hint = self.hint.load(Ordering::Relaxed);
        if hint & SENT == 0 {
            self.hint.store(hint | SENT, Ordering::Relaxed);
        }
    }

    /// A plain receive (no descriptors kept) into `len` bytes: `recv_waiting`, starting
    /// with the wait when the hint says the socket is empty, and noting whether this read
    /// drained it.
    #[inline]
    fn recv_plain(
        &self,
        len: usize,
        now: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let wait_first = self.hint.load(Ordering::Relaxed) == DRAINED | SENT;
        let n = self.recv_waiting(wait_first, now)?;
        self.hint
            .store(if n < len { DRAINED } else { 0 }, Ordering::Relaxed);
        Ok(n)
    }

    /// Takes the `n` descriptors that the message just decoded carries (the oldest
    /// unclaimed ones: they came with its header's first byte, or before it).
    pub(crate) fn claim_descriptors(&self, n: usize) -> Result<Vec<OwnedFd>, Unclaimed> {
        Inbox::claim(self.inbox.as_deref(), n)
    }

    /// Sends `a` then `b` with `fds` attached to their first byte, waiting for room as
    /// `write2` does. Returns how many bytes went out (the descriptors with the first).
    pub(crate) fn write_with_descriptors(
        &self,
        a: &[u8],
        b: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        let mut deadline = None;
        self.sent();
        loop {
            match super::fds::send_with_fds(fd, &[a, b], fds) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = remaining(&mut deadline, &self.write_timeout)?;
                    wait_for(fd, PollFlags::OUT, left)?;
                }
                other => return other,
            }
        }
    }

    /// Runs the non-waiting receive `now` until it finds something, waiting for readability
    /// in between (up to the read timeout, then `WouldBlock` as `SO_RCVTIMEO` would give),
    /// and first when `wait_first`. 0 is end of stream (also after `cancel`, which wakes the
    /// wait).
    #[inline]
    fn recv_waiting(
        &self,
        mut wait_first: bool,
        mut now: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if !std::mem::take(&mut wait_first) {
                match now(fd) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
            }
            // Nothing there: the deadline starts at the first wait of this call.
            let left = remaining(&mut deadline, &self.read_timeout)?;
            wait_for(fd, PollFlags::IN, left)?;
        }
    }
}

/// Reads into `buf`'s spare capacity, at most `max` bytes, with `read`, which returns how
/// many bytes it initialised from the start of the slice it is given.
fn append_with(
    buf: &mut Vec<u8>,
    max: usize,
    read: impl FnOnce(&mut [MaybeUninit<u8>]) -> io::Result<usize>,
) -> io::Result<usize> {
    buf.reserve(max);
    let n = read(&mut buf.spare_capacity_mut()[..max])?;
    // SAFETY: `read` initialised the first `n <= max` spare bytes (recv(2) wrote them).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

impl crate::sys::SysStream for Stream {
    /// Connects to the socket at `path` without waiting on a full accept queue.
    ///
    /// Errors: `NotFound` (no socket there), `ConnectionRefused` (a socket nobody listens
    /// on; on macOS and the BSDs also a full accept queue), `WouldBlock` (Linux: the
    /// server's accept queue is full), `PermissionDenied`, others. `ConnectOptions` only
    /// matter on Windows.
    fn connect(path: &Path, _opts: &ConnectOptions) -> io::Result<Stream> {
        // Left non-blocking: every call says how it waits (see `Stream`).
        let stream = Stream::from_fd(connect_nonblocking(path)?);
        stream.hint.store(DRAINED, Ordering::Relaxed);
        Ok(stream)
    }

    // Each read decides once whether it keeps descriptors (`inbox`), so that the plain
    // receive's loop is exactly what it was before descriptors existed.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inbox {
            None => self.recv_plain(buf.len(), |fd| recv_now(fd, buf)),
            // Reads that keep descriptors stop at a batch of them: a short one says nothing.
            Some(inbox) => self.recv_waiting(false, |fd| inbox.recv(fd, buf)),
        }
    }

    /// Raw mode's receive: sockets have no message boundaries, so this is `read_append`.
    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        self.read_append(buf, chunk)
    }

    /// Reads once, appending at most `max` bytes to `buf` (growing its capacity if needed).
    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        append_with(buf, max, |spare| match &self.inbox {
            None => self.recv_plain(max, |fd| recv_uninit_now(fd, spare)),
            Some(inbox) => self.recv_waiting(false, |fd| inbox.recv_uninit(fd, spare)),
        })
    }

    /// Reads what is there right now (`WouldBlock` when nothing is), whatever the socket's
    /// blocking mode.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inbox {
            None => recv_now(self.fd.as_fd(), buf),
            Some(inbox) => inbox.recv(self.fd.as_fd(), buf),
        }
    }

    /// `read_now`, appending at most `max` bytes to `buf`.
    fn read_append_now(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        append_with(buf, max, |spare| match &self.inbox {
            None => recv_uninit_now(self.fd.as_fd(), spare),
            Some(inbox) => inbox.recv_uninit(self.fd.as_fd(), spare),
        })
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write2(buf, &[])
    }

    /// Writes `a` then `b` with one `sendmsg(2)`; returns how many bytes went out in total.
    /// A closed peer is an `EPIPE` error, never a `SIGPIPE` (`MSG_NOSIGNAL`; on macOS the
    /// socket's `SO_NOSIGPIPE`).
    fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        let mut deadline = None;
        self.sent();
        loop {
            match send2_now(fd, a, b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = remaining(&mut deadline, &self.write_timeout)?;
                    wait_for(fd, PollFlags::OUT, left)?;
                }
                other => return other,
            }
        }
    }

    /// Kept here, for `recv_waiting`'s `ppoll` (not in `SO_RCVTIMEO`: reads never sleep in
    /// the kernel's read path). Zero is taken as the shortest wait, as `SO_RCVTIMEO` would.
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.read_timeout.store(timeout_ns(d), Ordering::Relaxed);
        Ok(())
    }

    /// Kept here too, for `write2`'s `ppoll`.
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.write_timeout.store(timeout_ns(d), Ordering::Relaxed);
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        shutdown_write(self.fd.as_fd())
    }
}

impl crate::sys::Handshake for Stream {
    fn peer(&self) -> io::Result<PeerIdentity> {
        os::peer_cred(self.fd.as_fd())
    }

    fn peer_groups(&self) -> Option<Vec<u32>> {
        os::peer_groups(self.fd.as_fd())
    }

    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.sent();
        send_now(self.fd.as_fd(), buf)
    }

    fn accept_descriptors(&mut self) -> bool {
        self.inbox.get_or_insert_with(Box::default);
        true
    }

    shm_handshake!(|this| this.fd.as_fd());
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Cancel for Stream {
    /// `shutdown(SHUT_RDWR)` wakes every thread blocked in `read` (it returns 0) or in
    /// `sendmsg` on a full buffer (it fails with `EPIPE`), and keeps doing so for later calls.
    /// (Connected sockets honour it on every Unix; only listening ones differ.)
    fn cancel(&self) {
        shutdown_both(self.fd.as_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::SysStream;
    use std::io::{Read, Write};

    /// One of our streams, as a client's would be right after its hello, and a plain peer.
    fn pair() -> (Stream, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let a = Stream::from_fd(a.into());
        a.hint.store(DRAINED, Ordering::Relaxed);
        (a, b)
    }

    #[test]
    fn a_receive_that_waits_first_still_finds_what_is_already_there() {
        let (a, mut b) = pair();
        let mut buf = [0u8; 64];
        for round in 0..3u8 {
            // Sent, then the answer arrives before the receive: the wait returns at once.
            a.write(&[round]).unwrap();
            assert_eq!(a.hint.load(Ordering::Relaxed), DRAINED | SENT);
            let mut got = [0u8; 1];
            b.read_exact(&mut got).unwrap();
            b.write_all(&[got[0], 0xaa]).unwrap();
            assert_eq!(a.read(&mut buf).unwrap(), 2);
            assert_eq!(&buf[..2], &[round, 0xaa]);
            assert_eq!(
                a.hint.load(Ordering::Relaxed),
                DRAINED,
                "a short read drained it"
            );
        }
        // A read that fills its buffer says nothing of what is left: the next one tries
        // `recv` first even after a send, and finds the rest.
        b.write_all(&[7u8; 96]).unwrap();
        assert_eq!(a.read(&mut buf).unwrap(), 64);
        assert_eq!(a.hint.load(Ordering::Relaxed), 0);
        a.write(b"x").unwrap();
        assert_eq!(a.hint.load(Ordering::Relaxed), SENT);
        let mut rest = Vec::new();
        assert_eq!(a.read_append(&mut rest, 64).unwrap(), 32);
    }

    #[test]
    fn a_receive_that_waits_first_keeps_its_timeout_and_wakes_on_cancel_and_end() {
        let (a, b) = pair();
        let mut buf = [0u8; 8];
        a.write(b"request").unwrap();
        a.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let e = a.read(&mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "the read timeout, as SO_RCVTIMEO"
        );
        // Still waiting first (nothing was read): a cancel from another thread wakes it.
        a.set_read_timeout(None).unwrap();
        a.write(b"again").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                a.cancel();
            });
            assert_eq!(a.read(&mut buf).unwrap(), 0, "cancel reads as the end");
        });
        drop(b);
        // (Set by hand: a request the peer never read would make its close a reset.)
        let (a, b) = pair();
        a.hint.store(DRAINED | SENT, Ordering::Relaxed);
        drop(b);
        assert_eq!(
            a.read(&mut buf).unwrap(),
            0,
            "the peer's end wakes the wait"
        );
    }
}
