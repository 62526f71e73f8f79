//! A listening Unix socket whose `accept` never lets one slow peer delay another.
//!
//! Each accepted socket is checked for its hello at once (a read with `MSG_DONTWAIT`; the
//! socket itself is blocking, the mode does not matter to a `Stream`). One whose hello has
//! not all arrived waits in a small queue; a readiness set (`Poller`: `epoll(7)` on Linux,
//! `kqueue(2)` on macOS and FreeBSD) watches the listener and the queue together, and is
//! also the server's readiness source for event loops. A
//! peer that sends nothing is dropped after the handshake timeout, and the queue is bounded,
//! so a flood of silent connections costs memory for at most `MAX_PENDING` sockets (the rest
//! wait in the kernel's accept queue).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::access::socket_mode;
use super::endpoint::{check_shared_dir, ensure_private_dir, Claim};
use super::poller::Poller;
#[cfg(not(pipette_shutdown_wakes))]
use super::poller::WakePipe;
use super::socket;
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
    /// Watches the listener and the connections waiting for their hello; also the readiness
    /// source event loops poll (`ready_fd`).
    poller: Poller,
    /// What `cancel` wakes the poller with where `shutdown(2)` of the listener would not.
    #[cfg(not(pipette_shutdown_wakes))]
    wake: WakePipe,
    claim: Mutex<Claim>,
    queue: Mutex<Queue>,
    opts: ListenOptions,
    cancelled: AtomicBool,
}

#[derive(Debug)]
struct Queue {
    /// Connections waiting for their hello, each watched by the poller.
    pending: Vec<Pending>,
    /// Whether the poller watches the listener (not while `pending` is full).
    listener_watched: bool,
    /// Whether the kernel may have a connection queued: true at first and whenever the
    /// last wait said so; false after each accept, so that the next one asks the poller
    /// (level-triggered: it answers at once while more are queued) rather than probing
    /// with an `accept` that fails with `EAGAIN`, one system call per connection.
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
        let listener = Listener {
            fd,
            poller: Poller::new()?,
            #[cfg(not(pipette_shutdown_wakes))]
            wake: WakePipe::new()?,
            claim: Mutex::new(claim),
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                listener_watched: true,
                listener_ready: true,
            }),
            opts: opts.clone(),
            cancelled: AtomicBool::new(false),
        };
        listener.poller.add(listener.fd.as_fd())?;
        #[cfg(not(pipette_shutdown_wakes))]
        listener.poller.add(listener.wake.watched())?;
        Ok(listener)
    }

    /// The next connection whose hello has arrived (or whose first bytes cannot be one),
    /// with what arrived of it.
    fn accept(&self, timeout: Option<Duration>) -> io::Result<(Stream, HelloReader)> {
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
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
                self.poller.set_watched(self.fd.as_fd(), want_listener)?;
                queue.listener_watched = want_listener;
            }

            let mut wait = queue.pending.iter().map(|p| p.deadline).min();
            let mut last_look = false;
            if let Some(d) = deadline {
                // Past the deadline (at once for `try_accept`), one more look without
                // waiting: the poller says what arrived since (`listener_ready` is its answer).
                last_look = now >= d;
                wait = Some(wait.map_or(d, |w| w.min(d)));
            }
            // Rounded up to milliseconds by the system call, so that we never wake just
            // before the deadline.
            let timeout = wait.map(|w| w.saturating_duration_since(now));
            let listener = self.fd.as_raw_fd();
            let mut listener_ready = false;
            match self
                .poller
                .wait(timeout, |fd| listener_ready |= fd == listener)
            {
                Ok(n) => {
                    queue.listener_ready |= listener_ready;
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
    /// The readiness source for event loops: the poller's descriptor (epoll on Linux, a
    /// kqueue on macOS and FreeBSD), readable when the listener has a connection queued or a
    /// connection waiting for its hello has sent more, and for good after a cancel. Owned by
    /// the listener: a cancel never closes it.
    pub(crate) fn ready_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    /// Watches a connection waiting for its hello.
    fn watch(&self, p: &Pending) -> io::Result<()> {
        self.poller.add(p.stream.as_fd())
    }

    /// Stops watching a connection that leaves the queue (handed over or dropped).
    fn unwatch(&self, p: &Pending) {
        self.poller.remove(p.stream.as_fd());
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the listener was shut down",
        )
    }

    /// An accepted socket as a stream; one whose hello may bring a client's shared memory
    /// keeps the descriptors that come with it (`Handshake::handed_over`).
    fn fresh(&self, fd: OwnedFd) -> Stream {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut stream = Stream::from_fd(fd);
        #[cfg(target_os = "linux")]
        if self.opts.shared_memory {
            crate::sys::Handshake::accept_descriptors(&mut stream);
        }
        stream
    }

    /// Accepts one connection the kernel has queued; `None` when there is none. The socket
    /// is blocking, as Linux's `accept4` gives it, on every system (macOS and the BSDs
    /// would otherwise hand it over non-blocking, from the listener); the handshake reads
    /// use `MSG_DONTWAIT`.
    fn accept_one(&self, now: Instant) -> io::Result<Option<Pending>> {
        loop {
            return match socket::accept(self.fd.as_fd(), false) {
                Ok(fd) => Ok(Some(Pending {
                    stream: self.fresh(fd),
                    hello: HelloReader::new(self.opts.raw),
                    deadline: now + self.opts.handshake_timeout,
                })),
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
        cancel_listening(&self.cancelled, &self.claim, || {
            #[cfg(pipette_shutdown_wakes)]
            socket::shutdown_both(self.fd.as_fd());
            #[cfg(not(pipette_shutdown_wakes))]
            self.wake.wake();
        });
    }
}

/// Cancels a listener, blocking or async: releases the endpoint first (the name is free at
/// once), then sets the cancel flag, then `wake`s whoever waits: on Linux a `shutdown(2)` of
/// the listening socket wakes `epoll`/the reactor and makes `accept(2)` fail, at once and for
/// good; macOS and the BSDs answer that with `ENOTCONN` and wake nobody, so there the
/// listener's own wake-up does it (a pipe in the blocking listener's poller, a
/// cancellation token in the async one). The order matters: whoever is woken may end the
/// process right away, and by then the endpoint must already be gone.
///
/// The cancel flag is set only once the endpoint is released, so an `accept` that sees it
/// may report the shutdown at once. A second call (from an `accept` that saw the server's
/// shutdown handle triggered, say) waits on the claim's lock for a release in progress, so
/// when any call returns, the endpoint is gone.
pub(super) fn cancel_listening(cancelled: &AtomicBool, claim: &Mutex<Claim>, wake: impl FnOnce()) {
    claim.lock().unwrap_or_else(|e| e.into_inner()).release();
    cancelled.store(true, Ordering::SeqCst);
    wake();
}
