//! A connected Unix domain stream socket.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
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
#[derive(Debug)]
pub(crate) struct Stream {
    fd: OwnedFd,
    /// The read timeout in nanoseconds; `NO_TIMEOUT` for none.
    read_timeout: AtomicU64,
    /// The write timeout, likewise.
    write_timeout: AtomicU64,
    /// Where descriptors that arrive with the bytes wait for the message that claims them,
    /// once this connection takes descriptors (`None`: reads are plain `recv`s, and the
    /// kernel closes any descriptor a peer attaches).
    inbox: Option<Box<Inbox>>,
}

const NO_TIMEOUT: u64 = u64::MAX;

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
            inbox: None,
        }
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
    /// in between (up to the read timeout, then `WouldBlock` as `SO_RCVTIMEO` would give).
    /// 0 is end of stream (also after `cancel`, which wakes the wait).
    fn recv_waiting(
        &self,
        mut now: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let fd = self.fd.as_fd();
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            match now(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
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
        Ok(Stream::from_fd(connect_nonblocking(path)?))
    }

    // Each read decides once whether it keeps descriptors (`inbox`), so that the plain
    // receive's loop is exactly what it was before descriptors existed.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inbox {
            None => self.recv_waiting(|fd| recv_now(fd, buf)),
            Some(inbox) => self.recv_waiting(|fd| inbox.recv(fd, buf)),
        }
    }

    /// Raw mode's receive: sockets have no message boundaries, so this is `read_append`.
    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        self.read_append(buf, chunk)
    }

    /// Reads once, appending at most `max` bytes to `buf` (growing its capacity if needed).
    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        append_with(buf, max, |spare| match &self.inbox {
            None => self.recv_waiting(|fd| recv_uninit_now(fd, spare)),
            Some(inbox) => self.recv_waiting(|fd| inbox.recv_uninit(fd, spare)),
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
