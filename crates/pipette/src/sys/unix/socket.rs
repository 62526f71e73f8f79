//! The socket calls the blocking stream, the listener and the async side share: creating,
//! connecting and accepting (close-on-exec, in an explicit blocking mode), sending without
//! `SIGPIPE`, receiving without waiting, and waiting in `poll(2)`.
//!
//! Where the creating call cannot set close-on-exec and the blocking mode itself (macOS has
//! neither `SOCK_CLOEXEC` nor `accept4`; also portable Linux, see `build.rs`), they are set
//! right after it with `fcntl(F_SETFD)` and `ioctl(FIONBIO)`. The race this leaves: another
//! thread that forks and execs between the two calls passes the descriptor on to the new
//! program, which keeps the socket open (a connection's end is then seen only when that
//! program exits too). std, mio and tokio accept the same race on macOS.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType};

/// Every send: never wait in the kernel (callers wait in `poll`), and never raise `SIGPIPE`
/// where the flag exists (Linux, FreeBSD: `MSG_NOSIGNAL`). macOS has no `MSG_NOSIGNAL`: there
/// `SO_NOSIGPIPE`, which every socket gets when it is created or accepted (`no_sigpipe`),
/// does it. (FreeBSD sets both: the option also covers writes that are not ours, tokio's
/// `writev` and an application's own on the descriptor.)
#[cfg(not(target_os = "macos"))]
const SEND: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);
#[cfg(target_os = "macos")]
const SEND: SendFlags = SendFlags::DONTWAIT;

/// The longest single wait handed to `poll`: macOS's `poll` takes milliseconds in a C `int`
/// (about 24 days). A longer wait simply waits again (the callers loop until their deadline).
const MAX_WAIT: Duration = Duration::from_secs(1_000_000);

/// The socket address for `path`; the caller has checked the length (see `endpoint`).
pub(super) fn address(path: &Path) -> io::Result<SocketAddrUnix> {
    SocketAddrUnix::new(path).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or contains NUL",
        )
    })
}

/// A new `AF_UNIX` stream socket, close-on-exec, optionally non-blocking.
pub(super) fn socket(nonblocking: bool) -> io::Result<OwnedFd> {
    #[cfg(pipette_sock_flags)]
    let fd = {
        let mut flags = net::SocketFlags::CLOEXEC;
        if nonblocking {
            flags |= net::SocketFlags::NONBLOCK;
        }
        net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?
    };
    #[cfg(not(pipette_sock_flags))]
    let fd = {
        let fd = net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
        // A new socket is blocking: only a non-blocking one needs the extra call.
        prepare(&fd, nonblocking.then_some(true))?;
        fd
    };
    no_sigpipe(&fd)?;
    Ok(fd)
}

/// One connection the kernel has queued on `listener`, close-on-exec and in the given
/// blocking mode; `WouldBlock` when there is none.
///
/// macOS and the BSDs hand out accepted sockets with the listener's `O_NONBLOCK` (our
/// listeners are non-blocking), Linux's `accept4` and FreeBSD's without it unless asked: the
/// mode is therefore always set explicitly here, never inherited.
pub(super) fn accept(listener: BorrowedFd<'_>, nonblocking: bool) -> io::Result<OwnedFd> {
    #[cfg(pipette_sock_flags)]
    let fd = {
        let mut flags = net::SocketFlags::CLOEXEC;
        if nonblocking {
            flags |= net::SocketFlags::NONBLOCK;
        }
        net::accept_with(listener, flags)?
    };
    #[cfg(not(pipette_sock_flags))]
    let fd = {
        let fd = net::accept(listener)?;
        prepare(&fd, Some(nonblocking))?;
        fd
    };
    no_sigpipe(&fd)?;
    Ok(fd)
}

/// What `SOCK_CLOEXEC`, `SOCK_NONBLOCK` and `accept4` do in the creating call where they
/// exist: close-on-exec, and the blocking mode when it is given.
#[cfg(not(pipette_sock_flags))]
fn prepare(fd: &OwnedFd, nonblocking: Option<bool>) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
    if let Some(nonblocking) = nonblocking {
        rustix::io::ioctl_fionbio(fd, nonblocking)?;
    }
    Ok(())
}

/// `SO_NOSIGPIPE` where the system has it (macOS, FreeBSD): a write to a socket whose peer
/// has gone fails with `EPIPE` and raises no `SIGPIPE`, whoever writes. Linux has no such
/// option (`MSG_NOSIGNAL` on each of our sends does it there).
fn no_sigpipe(fd: &OwnedFd) -> io::Result<()> {
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    net::sockopt::set_socket_nosigpipe(fd, true)?;
    let _ = fd;
    Ok(())
}

/// A non-blocking socket connected to `path`. A Unix stream connect never completes
/// asynchronously: it succeeds at once or fails (so the async side needs no wait for
/// writability after it). A full accept queue is `EAGAIN` on Linux, which callers treat as
/// "busy, try again"; macOS and the BSDs answer it with `ECONNREFUSED`, as for a dead
/// endpoint, so there a client retries it only when it was told to wait.
pub(super) fn connect_nonblocking(path: &Path) -> io::Result<OwnedFd> {
    let addr = address(path)?;
    let fd = socket(true)?;
    net::connect(&fd, &addr)?;
    Ok(fd)
}

/// `recv(MSG_DONTWAIT)`: what is there right now, whatever the socket's blocking mode (and
/// whatever tokio's readiness cache says); restarted on `EINTR`.
pub(super) fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match net::recv(fd, &mut *buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `recv_now` into possibly uninitialised memory; returns how many bytes it initialised
/// (from the start of `buf`).
pub(super) fn recv_uninit_now(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<usize> {
    loop {
        match net::recv(fd, &mut *buf, RecvFlags::DONTWAIT) {
            Ok(((filled, _), _)) => return Ok(filled.len()),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `a` then `b` with one `sendmsg(2)` that never waits and never raises `SIGPIPE` (see
/// `SEND`), restarted on `EINTR`; `WouldBlock` when the buffer is full.
pub(super) fn send2_now(fd: BorrowedFd<'_>, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let iov = [io::IoSlice::new(a), io::IoSlice::new(b)];
    let iov = if b.is_empty() { &iov[..1] } else { &iov[..] };
    loop {
        let mut control = net::SendAncillaryBuffer::default();
        match net::sendmsg(fd, iov, &mut control, SEND) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `send(2)` that never waits: for the 16-byte handshake on a fresh socket, whose send
/// buffer is empty; restarted on `EINTR`.
pub(super) fn send_now(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    loop {
        match net::send(fd, buf, SEND) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `shutdown(2)` of our sending direction.
pub(super) fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(net::shutdown(fd, net::Shutdown::Write)?)
}

/// `shutdown(SHUT_RDWR)`, errors ignored (for example `ENOTCONN` after the peer left): wakes
/// every thread blocked on a connected socket, and keeps doing so for later calls.
pub(super) fn shutdown_both(fd: BorrowedFd<'_>) {
    let _ = net::shutdown(fd, net::Shutdown::Both);
}

/// Waits until `fd` has `events` (or is at its end, or in error), at most `timeout`;
/// returns early on a signal (the caller retries). `ppoll` where the system has it (Linux,
/// FreeBSD), else `poll` with the timeout rounded up to milliseconds (macOS).
pub(super) fn wait_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    let ts = timeout.map(timespec);
    match rustix::event::poll(&mut fds, ts.as_ref()) {
        Ok(_) | Err(Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A wait as a `Timespec`, at most `MAX_WAIT`.
pub(super) fn timespec(d: Duration) -> Timespec {
    let d = d.min(MAX_WAIT);
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}
