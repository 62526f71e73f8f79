//! A listening Unix socket whose `accept` never lets one slow peer delay another.
//!
//! Each accepted socket is checked for its hello at once (a read with `MSG_DONTWAIT`; the
//! socket itself stays blocking, as a `Stream` wants). One whose hello has not all arrived
//! waits in a small queue; an `epoll(7)` set watches the listener and the queue together,
//! and is also the server's readiness source for event loops. A
//! peer that sends nothing is dropped after the handshake timeout, and the queue is bounded,
//! so a flood of silent connections costs memory for at most `MAX_PENDING` sockets (the rest
//! wait in the kernel's accept queue).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::access::socket_mode;
use super::endpoint::{check_shared_dir, ensure_private_dir, Claim};
use super::stream::Stream;
use crate::error::Result;
use crate::proto::HelloReader;
use crate::sys::{Cancel, ListenOptions, SysStream};
use crate::Name;

/// Most connections kept waiting for their hello at once.
const MAX_PENDING: usize = 1024;

#[derive(Debug)]
pub(crate) struct Listener {
    fd: OwnedFd,
    /// Watches the listener and the connections waiting for their hello (`epoll(7)`); also
    /// the readiness source event loops poll (`ready_fd`).
    ep: OwnedFd,
    claim: Mutex<Claim>,
    queue: Mutex<Queue>,
    opts: ListenOptions,
    cancelled: AtomicBool,
}

#[derive(Debug)]
struct Queue {
    /// Connections waiting for their hello, each watched by the epoll set.
    pending: Vec<Pending>,
    /// Whether the epoll set watches the listener (not while `pending` is full).
    listener_watched: bool,
    /// Whether the kernel may have a connection queued: true at first and whenever the
    /// last `epoll_wait` said so; false after each accept, so that the next one asks
    /// epoll (level-triggered: it answers at once while more are queued) rather than
    /// probing with an `accept4` that fails with `EAGAIN`, one system call per connection.
    listener_ready: bool,
}

#[derive(Debug)]
struct Pending {
    stream: Stream,
    hello: HelloReader,
    deadline: Instant,
}

enum Progress {
    Ready,
    Waiting,
    Gone,
}

impl Pending {
    /// Reads what has arrived of the hello (exactly what the protocol engine's reader asks
    /// for: nothing past the hello is taken from the stream).
    fn progress(&mut self, now: Instant) -> Progress {
        while !self.hello.is_done() {
            match self.stream.read_now(self.hello.spare()) {
                Ok(0) => {
                    tracing::debug!("a peer closed its connection before completing the handshake");
                    return Progress::Gone;
                }
                Ok(n) => {
                    self.hello.filled(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "dropping a connection that failed during the handshake");
                    return Progress::Gone;
                }
            }
        }
        if self.hello.is_done() {
            Progress::Ready
        } else if now >= self.deadline {
            tracing::warn!(
                received = self.hello.bytes().len(),
                missing = self.hello.missing(),
                "dropping a connection that did not complete the handshake in time"
            );
            Progress::Gone
        } else {
            Progress::Waiting
        }
    }
}

impl crate::sys::SysListener for Listener {
    type Stream = Stream;

    fn bind(name: &Name, opts: &ListenOptions) -> Result<Listener> {
        let (fd, claim) = claim_and_bind(name, opts)?;
        // SAFETY: epoll_create1 has no memory preconditions; on success we own the result.
        let ep = unsafe { syscall!(epoll_create1(libc::EPOLL_CLOEXEC)) }?;
        // SAFETY: `ep` is a fresh descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let listener = Listener {
            fd,
            ep,
            claim: Mutex::new(claim),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                listener_watched: true,
                listener_ready: true,
            }),
            opts: opts.clone(),
            cancelled: AtomicBool::new(false),
        };
        listener.epoll_ctl(
            libc::EPOLL_CTL_ADD,
            listener.fd.as_raw_fd(),
            libc::EPOLLIN as u32,
        )?;
        Ok(listener)
    }

    /// The next connection whose hello has arrived (or whose first bytes cannot be one),
    /// with what arrived of it.
    fn accept(&self, timeout: Option<Duration>) -> io::Result<(Stream, HelloReader)> {
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        loop {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(Self::aborted());
            }
            let now = Instant::now();
            // Connections already waiting for their hello first, then new ones, each checked
            // as soon as it is accepted: a client whose hello came with its connect (the
            // usual case) costs one accept and one read, not a scan of the whole backlog.
            let mut i = 0;
            while i < queue.pending.len() {
                match queue.pending[i].progress(now) {
                    Progress::Ready => {
                        let p = queue.pending.swap_remove(i);
                        self.unwatch(&p);
                        return Ok((p.stream, p.hello));
                    }
                    Progress::Gone => {
                        let p = queue.pending.swap_remove(i);
                        self.unwatch(&p);
                    }
                    Progress::Waiting => i += 1,
                }
            }
            while queue.pending.len() < MAX_PENDING && queue.listener_ready {
                let accepted = self.accept_one(now)?;
                queue.listener_ready = false;
                let Some(mut p) = accepted else {
                    break;
                };
                match p.progress(now) {
                    Progress::Ready => return Ok((p.stream, p.hello)),
                    Progress::Gone => {}
                    Progress::Waiting => {
                        self.watch(&p)?;
                        queue.pending.push(p);
                    }
                }
            }
            // A full queue stops watching the listener (the kernel's backlog holds the
            // rest) until a place frees up, so that a flood cannot make this loop spin.
            let want_listener = queue.pending.len() < MAX_PENDING;
            if want_listener != queue.listener_watched {
                self.epoll_ctl(
                    libc::EPOLL_CTL_MOD,
                    self.fd.as_raw_fd(),
                    if want_listener {
                        libc::EPOLLIN as u32
                    } else {
                        0
                    },
                )?;
                queue.listener_watched = want_listener;
            }

            let mut wait = queue.pending.iter().map(|p| p.deadline).min();
            let mut last_look = false;
            if let Some(d) = deadline {
                // Past the deadline (at once for `try_accept`), one more look without
                // waiting: epoll says what arrived since (`listener_ready` is its answer).
                last_look = now >= d;
                wait = Some(wait.map_or(d, |w| w.min(d)));
            }
            let timeout_ms: libc::c_int = match wait {
                None => -1,
                Some(w) => {
                    let left = w.saturating_duration_since(now);
                    // Round up so that we never wake just before the deadline.
                    (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as libc::c_int
                }
            };
            // SAFETY: `events` is a valid array of `len` epoll_event structures, which
            // epoll_wait only writes.
            match unsafe {
                syscall!(epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout_ms
                ))
            } {
                Ok(n) => {
                    let listener = self.fd.as_raw_fd() as u64;
                    queue.listener_ready |=
                        events[..n as usize].iter().any(|e| ({ e.u64 }) == listener);
                    if last_look && n == 0 {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => queue.listener_ready = true,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Listener {
    /// The readiness source for event loops: an epoll descriptor that is readable when the
    /// listener has a connection queued or a connection waiting for its hello has sent more.
    /// Owned by the listener: a cancel never closes it.
    pub(crate) fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }

    fn epoll_ctl(&self, op: libc::c_int, fd: RawFd, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the call; both descriptors are open.
        unsafe { syscall!(epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev))? };
        Ok(())
    }

    /// Watches a connection waiting for its hello.
    fn watch(&self, p: &Pending) -> io::Result<()> {
        self.epoll_ctl(
            libc::EPOLL_CTL_ADD,
            p.stream.as_fd().as_raw_fd(),
            libc::EPOLLIN as u32,
        )
    }

    /// Stops watching a connection that leaves the queue (handed over or dropped).
    fn unwatch(&self, p: &Pending) {
        let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, p.stream.as_fd().as_raw_fd(), 0);
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the listener was shut down",
        )
    }

    /// Accepts one connection the kernel has queued; `None` when there is none. The socket
    /// stays blocking (what a `Stream` wants): the handshake reads use `MSG_DONTWAIT`.
    fn accept_one(&self, now: Instant) -> io::Result<Option<Pending>> {
        loop {
            // SAFETY: null address pointers are allowed (we do not need the peer address).
            let res = unsafe {
                syscall!(accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC
                ))
            };
            return match res {
                Ok(fd) => {
                    // SAFETY: accept4 returned a fresh descriptor that we now own.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    Ok(Some(Pending {
                        stream: Stream::from_fd(fd),
                        hello: HelloReader::new(self.opts.raw),
                        deadline: now + self.opts.handshake_timeout,
                    }))
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ if self.cancelled.load(Ordering::SeqCst) => Err(Self::aborted()),
                    _ => Err(e),
                },
            };
        }
    }
}

/// Claims the endpoint and binds a listening, non-blocking socket there: the part of binding
/// that the blocking and the async listener share.
pub(super) fn claim_and_bind(name: &Name, opts: &ListenOptions) -> Result<(OwnedFd, Claim)> {
    let path = name.path();
    if opts.private_dir && opts.access != crate::Access::CurrentUser {
        return Err(crate::Error::InvalidConfig(format!(
            "{:?} is a plain name, which lives in your private directory {}, which other users cannot reach, so access {:?} would admit nobody; bind an absolute path in a directory they can reach instead, such as /tmp/{}.sock",
            name.as_str(),
            path.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            opts.access.as_str(),
            name.as_str()
        )));
    }
    if opts.private_dir {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
    } else if let Some(dir) = path.parent() {
        // Issue #6: an explicit path in a directory anyone may write to without the sticky
        // bit lets any local user delete our socket and lock file and bind their own in their
        // place; refuse it rather than serve from a hijackable place.
        check_shared_dir(dir)?;
    }
    let mut claim = Claim::acquire(name.as_str(), path)?;
    claim.clear_leftover(name.as_str())?;
    let fd = claim.bind(name.as_str(), socket_mode(opts.access))?;
    if !opts.private_dir {
        claim.register();
    }
    Ok((fd, claim))
}

impl Cancel for Listener {
    fn cancel(&self) {
        cancel_listening(&self.cancelled, &self.claim, self.fd.as_raw_fd());
    }
}

/// Cancels a listener, blocking or async: releases the endpoint first (the name is free at
/// once), then shuts the listening socket down, which wakes `poll(2)`/the reactor and makes
/// `accept(2)` fail, at once and for good. The order matters: whoever is woken may end the
/// process right away, and by then the endpoint must already be gone.
///
/// The cancel flag is set only once the endpoint is released, so an `accept` that sees it
/// may report the shutdown at once. A second call (from an `accept` that saw the server's
/// shutdown handle triggered, say) waits on the claim's lock for a release in progress, so
/// when any call returns, the endpoint is gone.
pub(super) fn cancel_listening(cancelled: &AtomicBool, claim: &Mutex<Claim>, fd: RawFd) {
    claim.lock().unwrap_or_else(|e| e.into_inner()).release();
    cancelled.store(true, Ordering::SeqCst);
    // SAFETY: shutdown has no memory preconditions; the caller keeps the descriptor open.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// `accept4(2)` of one queued connection, non-blocking and close-on-exec (for the async
/// listener, whose streams are registered with tokio).
#[cfg(feature = "tokio")]
pub(super) fn accept_nonblocking(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed (we do not need the peer address).
    let new = unsafe {
        syscall!(accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK
        ))
    }?;
    // SAFETY: accept4 returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
