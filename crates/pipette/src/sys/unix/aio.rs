//! The async (tokio) side of the Unix backend: the same endpoints, on tokio's reactor.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use bytes::BufMut;
use tokio_util::sync::CancellationToken;

use super::endpoint::Claim;
use super::fds::{send_with_fds, Inbox, Unclaimed};
use super::listener::{cancel_listening, claim_and_bind};
use super::os;
use super::socket::{self, recv_now, recv_uninit_now, send2_now, send_now, shutdown_write};
use crate::error::Result;
use crate::proto::HelloReader;
use crate::sys::aio::read_into;
use crate::sys::{Cancel, ListenOptions};
use crate::{Name, PeerIdentity};

/// A plain read (`read`: at most `room` bytes, without waiting) through tokio's readiness
/// that, as tokio's own `AsyncRead` does, takes a short read to mean that the socket is
/// drained: it clears the readiness then, with the readiness tick taken before the read (so
/// an event that arrived since is kept), and the next read waits for the reactor instead of
/// making a `recv` that only fails with `EAGAIN`: one system call fewer per message received.
#[inline]
fn read_draining(
    inner: &::tokio::net::UnixStream,
    room: usize,
    read: impl FnOnce() -> io::Result<usize>,
) -> io::Result<usize> {
    let mut short = None;
    let r = inner.try_io(Interest::READABLE, || match read() {
        Ok(n) if n > 0 && n < room => {
            short = Some(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    });
    match (r, short) {
        (Err(_), Some(n)) => Ok(n),
        (r, _) => r,
    }
}

/// A connected socket registered with tokio's reactor.
#[derive(Debug)]
pub(crate) struct Stream {
    inner: ::tokio::net::UnixStream,
    /// Where descriptors that arrive with the bytes wait for the message that claims them,
    /// once this connection takes descriptors, as in the blocking `Stream` (`None`: reads are
    /// tokio's plain ones, and the kernel closes any descriptor a peer attaches).
    inbox: Option<Box<Inbox>>,
}

impl Stream {
    fn new(inner: ::tokio::net::UnixStream) -> Stream {
        Stream { inner, inbox: None }
    }

    /// The tokio socket, for the shared-memory waits (`sys::unix::shm`).
    #[cfg(target_os = "linux")]
    pub(super) fn tokio_stream(&self) -> &::tokio::net::UnixStream {
        &self.inner
    }

    /// Takes the `n` descriptors that the message just decoded carries, as the blocking
    /// `Stream::claim_descriptors` does.
    pub(crate) fn claim_descriptors(&self, n: usize) -> Result<Vec<OwnedFd>, Unclaimed> {
        Inbox::claim(self.inbox.as_deref(), n)
    }

    /// Sends `a` then `b` with `fds` attached to their first byte with a direct `sendmsg`,
    /// whatever tokio's readiness cache says (as `write2_now`); `WouldBlock` when the socket
    /// has no room (then nothing went out: `poll_write_with_descriptors` goes on). Returns how
    /// many bytes went out (the descriptors with the first).
    pub(crate) fn write_with_descriptors_now(
        &self,
        a: &[u8],
        b: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> io::Result<usize> {
        send_with_fds(self.inner.as_fd(), &[a, b], fds)
    }

    /// `write_with_descriptors_now` on tokio's readiness: waits until the socket has room,
    /// and clears the readiness when a send finds none.
    pub(crate) fn poll_write_with_descriptors(
        &self,
        cx: &mut Context<'_>,
        a: &[u8],
        b: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Poll<io::Result<usize>> {
        let fd = self.inner.as_fd();
        loop {
            match self
                .inner
                .try_io(Interest::WRITABLE, || send_with_fds(fd, &[a, b], fds))
            {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.inner.poll_write_ready(cx))?;
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

impl crate::sys::AsyncStream for Stream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_read_ready(cx)
    }

    // Each read decides once whether it keeps descriptors (`inbox`). Both go through
    // `try_io`, which clears tokio's readiness when the receive finds nothing; the plain one
    // also after a short read (`read_draining`). A read that keeps descriptors may stop
    // early at a batch of them, so it is not taken to have drained the socket.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inbox {
            None => {
                let fd = self.inner.as_fd();
                let room = buf.len();
                read_draining(&self.inner, room, || recv_now(fd, buf))
            }
            Some(inbox) => {
                let fd = self.inner.as_fd();
                self.inner
                    .try_io(Interest::READABLE, || inbox.recv(fd, buf))
            }
        }
    }

    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match &self.inbox {
            None => {
                let fd = self.inner.as_fd();
                let room = buf.chunk_mut().len();
                read_draining(&self.inner, room, || {
                    read_into(buf, |spare| recv_uninit_now(fd, spare))
                })
            }
            Some(inbox) => {
                let fd = self.inner.as_fd();
                self.inner.try_io(Interest::READABLE, || {
                    read_into(buf, |spare| inbox.recv_uninit(fd, spare))
                })
            }
        }
    }

    /// Waits until the stream is readable; unlike `poll_read_ready`, any number of tasks may
    /// wait at once (the two halves of a connection may both wait for the reply).
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        self.inner.readable()
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_write_ready(cx)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.inner.try_write_vectored(bufs)
    }

    /// A direct `sendmsg`: tokio learns a fresh socket's writability only at the reactor's
    /// next turn, which would cost every new connection's first send a round trip through
    /// `epoll_wait`.
    fn write2_now(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        send2_now(self.inner.as_fd(), a, b)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        shutdown_write(self.inner.as_fd())
    }

    /// Reads what is there right now with a direct `recv(MSG_DONTWAIT)`, whatever tokio's
    /// readiness cache says (it may not have seen a fresh socket's first event yet). Used
    /// for the hello, so that accepting needs no extra wake-up when it has already arrived.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inbox {
            None => recv_now(self.inner.as_fd(), buf),
            Some(inbox) => inbox.recv(self.inner.as_fd(), buf),
        }
    }

    fn read_buf_now<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        let fd = self.inner.as_fd();
        match &self.inbox {
            None => read_into(buf, |spare| recv_uninit_now(fd, spare)),
            Some(inbox) => read_into(buf, |spare| inbox.recv_uninit(fd, spare)),
        }
    }
}

impl crate::sys::Handshake for Stream {
    fn peer(&self) -> io::Result<PeerIdentity> {
        os::peer_cred(self.inner.as_fd())
    }

    fn peer_groups(&self) -> Option<Vec<u32>> {
        os::peer_groups(self.inner.as_fd())
    }

    /// A direct `send(MSG_DONTWAIT)` (without `SIGPIPE`): for the 16-byte handshake on a
    /// fresh socket, whose send buffer is empty.
    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        send_now(self.inner.as_fd(), buf)
    }

    fn accept_descriptors(&mut self) -> bool {
        self.inbox.get_or_insert_with(Box::default);
        true
    }

    shm_handshake!(|this| this.inner.as_fd());
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl Cancel for Stream {
    /// As for the blocking stream: `shutdown(SHUT_RDWR)` makes the socket readable (end of
    /// stream) and hung up, which wakes every task waiting on it through the reactor.
    fn cancel(&self) {
        socket::shutdown_both(self.inner.as_fd());
    }
}

/// Connects without blocking the runtime. Errors as for the blocking `Stream::connect`.
/// The connect itself never waits (see `connect_nonblocking`), so the hello can go out at
/// once: no reactor round trip for writability, which tokio's `UnixStream::connect` makes.
pub(crate) async fn connect(
    path: &std::path::Path,
    _opts: &crate::sys::ConnectOptions,
) -> io::Result<Stream> {
    let fd = socket::connect_nonblocking(path)?;
    let inner = ::tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))?;
    Ok(Stream::new(inner))
}

/// A bound endpoint accepting on tokio's reactor.
///
/// Accepting is pipette's own loop over tokio's readiness, not `UnixListener::accept`:
/// once a listening socket is shut down, Linux reports it readable and hung up for good while
/// `accept4` fails with `EAGAIN`, and tokio keeps hung-up readiness, so tokio's own accept
/// would retry inside one poll forever. Here every attempt first checks the cancel flag, and
/// a hung-up listener that has nothing to accept ends the wait. macOS and the BSDs do not
/// wake anyone on a `shutdown(2)` of a listening socket: there a cancellation token, which
/// `cancel` triggers, ends the waits (on every system, so that one path serves all).
#[derive(Debug)]
pub(crate) struct Listener {
    fd: AsyncFd<OwnedFd>,
    claim: Mutex<Claim>,
    cancelled: AtomicBool,
    /// Wakes every waiting `accept` on `cancel`.
    token: CancellationToken,
    raw: bool,
    /// The server offers shared memory: accepted streams keep the descriptors that come
    /// with the hello (a client's memory), as the blocking listener's do. Linux only.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    shared_memory: bool,
}

impl Listener {
    /// Claims and binds the endpoint exactly as the blocking listener does. Must be called
    /// within a tokio runtime.
    pub(crate) fn bind(name: &Name, opts: &ListenOptions) -> Result<Listener> {
        let (fd, claim): (OwnedFd, Claim) = claim_and_bind(name, opts)?;
        // SAFETY: `fd` is an open listening socket, owned by the `AsyncFd` from here on: it
        // stays open and refers to the same socket until the `AsyncFd` is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Listener {
            fd,
            claim: Mutex::new(claim),
            cancelled: AtomicBool::new(false),
            token: CancellationToken::new(),
            raw: opts.raw,
            shared_memory: opts.shared_memory,
        })
    }

    /// The next connection, as soon as the kernel has one, with a reader for its hello
    /// (nothing read yet here: the caller reads it; the Windows listener reads it itself).
    /// Cancel safe: nothing is taken from the kernel's queue unless it is returned.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, HelloReader)> {
        let fd = ::tokio::select! {
            biased;
            () = self.token.cancelled() => return Err(aborted()),
            fd = poll_fn(|cx| self.poll_accept(cx)) => fd?,
        };
        let std = std::os::unix::net::UnixStream::from(fd);
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut stream = Stream::new(::tokio::net::UnixStream::from_std(std)?);
        #[cfg(target_os = "linux")]
        if self.shared_memory {
            crate::sys::Handshake::accept_descriptors(&mut stream);
        }
        Ok((stream, HelloReader::new(self.raw)))
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedFd>> {
        loop {
            // The flag is set after the endpoint is released and before anyone is woken
            // (see `cancel_listening`): whoever sees it may report the shutdown at once.
            if self.cancelled.load(Ordering::SeqCst) {
                return Poll::Ready(Err(aborted()));
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            // Non-blocking, as tokio requires (set explicitly: see `socket::accept`).
            match socket::accept(self.fd.get_ref().as_fd(), true) {
                Ok(fd) => return Poll::Ready(Ok(fd)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if guard.ready().is_read_closed() {
                        // Hung up with nothing to accept: shut down, by us or by anyone.
                        return Poll::Ready(Err(aborted()));
                    }
                    guard.clear_ready();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn aborted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the listener was shut down",
    )
}

impl Cancel for Listener {
    /// As for the blocking listener (see `cancel_listening`): the token wakes the waiting
    /// `accept`s everywhere; on Linux the listening socket is also shut down, as before.
    fn cancel(&self) {
        cancel_listening(&self.cancelled, &self.claim, || {
            self.token.cancel();
            #[cfg(pipette_shutdown_wakes)]
            socket::shutdown_both(self.fd.get_ref().as_fd());
        });
    }
}
