//! A connected Unix domain stream socket.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{Cancel, ConnectOptions};
use crate::PeerIdentity;

/// A connected, blocking `SOCK_STREAM` Unix socket.
///
/// Reads never sleep inside `read(2)`: they try `recv(MSG_DONTWAIT)` and, when nothing is
/// there, wait in `ppoll(POLLIN)`, with the read timeout kept here rather than in
/// `SO_RCVTIMEO`. A thread asleep in `read(2)` on a Unix stream socket is also woken each
/// time the peer consumes data *we* sent (the socket's wait queue gets a write-space wake-up,
/// which a plain read waiter does not filter out), so a request/response exchange costs the
/// reader an extra wake-up, often on another CPU, per round trip. `poll` waiters are woken
/// only for the events they asked for, as epoll's (tokio's) are. See docs/PERFORMANCE.md.
///
/// Writes likewise use `MSG_DONTWAIT` and wait in `ppoll(POLLOUT)` when the buffer is full,
/// so the descriptor's own blocking mode never matters (a client's socket stays as its
/// non-blocking connect left it, one `ioctl` fewer per connection).
#[derive(Debug)]
pub(crate) struct Stream {
    fd: OwnedFd,
    /// The read timeout in nanoseconds; `NO_TIMEOUT` for none.
    read_timeout: AtomicU64,
    /// The write timeout, likewise.
    write_timeout: AtomicU64,
}

const NO_TIMEOUT: u64 = u64::MAX;

/// Builds a `sockaddr_un` for `path`. The caller has checked the length (see `endpoint`).
pub(super) fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or contains NUL",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A new `AF_UNIX` stream socket, close-on-exec, optionally non-blocking.
pub(super) fn socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let flags =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: socket has no memory preconditions; on success we own the new descriptor.
    let fd = unsafe { syscall!(socket(libc::AF_UNIX, flags, 0))? };
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking socket connected to `path`, errors as for [`Stream::connect`]. A Unix
/// stream connect never completes asynchronously: it succeeds at once, or fails with EAGAIN
/// when the listener's queue is full, which callers treat as "busy, try again". (So the
/// async side needs no wait for writability after it, unlike tokio's own `connect`.)
pub(super) fn connect_nonblocking(path: &Path) -> io::Result<OwnedFd> {
    let (addr, len) = sockaddr(path)?;
    let fd = socket(true)?;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes that outlives the call.
    unsafe {
        syscall!(connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len
        ))?
    };
    Ok(fd)
}

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
        }
    }

    /// `recv(MSG_DONTWAIT)` into `len` bytes at `ptr`, waiting for readability (up to the
    /// read timeout, then `WouldBlock` as `SO_RCVTIMEO` would give) whenever nothing is
    /// there. `Ok(0)` is end of stream (also after `cancel`, which wakes the wait).
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes.
    unsafe fn recv_waiting(&self, ptr: *mut libc::c_void, len: usize) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            // SAFETY: the caller guarantees `ptr` is valid for writes of `len` bytes.
            match unsafe { syscall!(recv(fd, ptr, len, libc::MSG_DONTWAIT)) } {
                Ok(n) => return Ok(n as usize),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Nothing there: the deadline starts at the first wait of this call.
            let left = remaining(&mut deadline, &self.read_timeout)?;
            wait_for(fd, libc::POLLIN, left)?;
        }
    }
}

/// Waits until `fd` has `events` (or is at its end, or in error), at most `timeout`;
/// returns early on a signal (the caller retries).
fn wait_for(fd: RawFd, events: libc::c_short, timeout: Option<Duration>) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `pfd` is one valid pollfd; `ts_ptr` is null or points at a live timespec; no
    // signal mask is passed.
    match unsafe { syscall!(ppoll(&mut pfd, 1, ts_ptr, std::ptr::null())) } {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(e),
    }
}

impl crate::sys::SysStream for Stream {
    /// Connects to the socket at `path` without waiting on a full accept queue.
    ///
    /// Errors: `NotFound` (no socket there), `ConnectionRefused` (a socket nobody listens
    /// on), `WouldBlock` (the server's accept queue is full), `PermissionDenied`, others.
    /// `ConnectOptions` only matter on Windows.
    fn connect(path: &Path, _opts: &ConnectOptions) -> io::Result<Stream> {
        // Left non-blocking: every call says how it waits (see `Stream`).
        Ok(Stream::from_fd(connect_nonblocking(path)?))
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        unsafe { self.recv_waiting(buf.as_mut_ptr().cast(), buf.len()) }
    }

    /// Raw mode's receive: sockets have no message boundaries, so this is `read_append`.
    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        self.read_append(buf, chunk)
    }

    /// Reads once, appending at most `max` bytes to `buf` (growing its capacity if needed).
    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max];
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes; recv(2) only writes.
        let n = unsafe { self.recv_waiting(spare.as_mut_ptr().cast(), spare.len())? };
        // SAFETY: the kernel initialised the first `n <= max` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Reads what is there right now (`WouldBlock` when nothing is), whatever the socket's
    /// blocking mode.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_now(self.fd.as_raw_fd(), buf)
    }

    /// `read_now`, appending at most `max` bytes to `buf`.
    fn read_append_now(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max];
        let n = loop {
            // SAFETY: `spare` is valid for writes of `spare.len()` bytes; recv(2) only writes.
            match unsafe {
                syscall!(recv(
                    self.fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    spare.len(),
                    libc::MSG_DONTWAIT
                ))
            } {
                Ok(n) => break n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        // SAFETY: the kernel initialised the first `n <= max` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write2(buf, &[])
    }

    /// Writes `a` then `b` with one `sendmsg(2)`; returns how many bytes went out in total.
    /// `MSG_NOSIGNAL`: a closed peer is an `EPIPE` error, never a `SIGPIPE`.
    fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let fd = self.fd.as_raw_fd();
        let mut deadline = None;
        loop {
            match send2_now(fd, a, b) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = remaining(&mut deadline, &self.write_timeout)?;
                    wait_for(fd, libc::POLLOUT, left)?;
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
        shutdown(self.fd.as_raw_fd(), libc::SHUT_WR)
    }
}

impl crate::sys::Handshake for Stream {
    fn peer(&self) -> io::Result<PeerIdentity> {
        peer_cred(self.fd.as_raw_fd())
    }

    fn peer_groups(&self) -> Option<Vec<u32>> {
        peer_groups(self.fd.as_raw_fd())
    }

    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        send_now(self.fd.as_raw_fd(), buf)
    }
}

impl std::os::fd::AsFd for Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Cancel for Stream {
    /// `shutdown(SHUT_RDWR)` wakes every thread blocked in `read` (it returns 0) or in
    /// `sendmsg` on a full buffer (it fails with `EPIPE`), and keeps doing so for later calls.
    fn cancel(&self) {
        // Errors (for example ENOTCONN after the peer left) are irrelevant here.
        let _ = shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR);
    }
}

// ---- socket calls shared by the blocking `Stream` and the async `aio::Stream` ----

/// `recv(MSG_DONTWAIT)`: what is there right now, whatever the socket's blocking mode (and
/// whatever tokio's readiness cache says); restarted on `EINTR`.
pub(super) fn recv_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        match unsafe {
            syscall!(recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT
            ))
        } {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `a` then `b` with one `sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)`, restarted on `EINTR`;
/// `WouldBlock` when the buffer is full.
pub(super) fn send2_now(fd: RawFd, a: &[u8], b: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut libc::c_void,
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        },
    ];
    // SAFETY: msghdr is plain old data; all-zero is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = if b.is_empty() { 1 } else { 2 };
    loop {
        // SAFETY: `msg` points at `iov`, whose buffers are valid for reads of their lengths
        // for the duration of the call; sendmsg does not write through them.
        match unsafe { syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)) } {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `send(MSG_DONTWAIT | MSG_NOSIGNAL)`: for the 16-byte handshake on a fresh socket, whose
/// send buffer is empty; restarted on `EINTR`.
pub(super) fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        match unsafe {
            syscall!(send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
            ))
        } {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `shutdown(2)` of one or both directions.
pub(super) fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: shutdown has no memory preconditions; the caller's descriptor is open.
    unsafe { syscall!(shutdown(fd, how))? };
    Ok(())
}

/// The peer's credentials (`SO_PEERCRED`).
pub(super) fn peer_cred(fd: RawFd) -> io::Result<PeerIdentity> {
    // SAFETY: ucred is plain old data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes, and `len` is updated in place.
    unsafe {
        syscall!(getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len
        ))?
    };
    Ok(PeerIdentity {
        pid: (cred.pid > 0).then_some(cred.pid as u32),
        uid: Some(cred.uid),
        gid: Some(cred.gid),
        sid: None,
        group_sid: None,
    })
}

/// The peer's supplementary groups (`SO_PEERGROUPS`, Linux 4.13 and later), as its process
/// had them when it connected; `None` where the kernel cannot tell.
pub(super) fn peer_groups(fd: RawFd) -> Option<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is valid for writes of `len` bytes, and `len` is updated in place.
        let res = unsafe {
            syscall!(getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len
            ))
        };
        match res {
            Ok(_) => {
                groups.truncate(len as usize / size_of::<libc::gid_t>());
                return Some(groups);
            }
            // Too small: `len` says how much is needed.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && (len as usize) < 1 << 20 => {
                groups.resize((len as usize).div_ceil(size_of::<libc::gid_t>()), 0);
            }
            Err(_) => return None,
        }
    }
}
