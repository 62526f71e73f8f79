//! The listener's readiness set: one descriptor that watches the listening socket and the
//! connections waiting for their hello, readable whenever one of them is (level-triggered).
//! `epoll(7)` on Linux, `kqueue(2)` on macOS and FreeBSD; either is itself pollable, which
//! makes it the server's readiness source for event loops (`Server`'s `AsFd`).
//!
//! Also the listener's wake-up where `shutdown(2)` of a listening socket wakes nobody
//! (everywhere but native Linux, see `build.rs`): a pipe whose read end the set watches and
//! whose write end `cancel` writes one byte to. The byte is never read, so the set stays
//! readable for good after a cancel, as a shut-down socket does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use super::socket::timespec;

/// Most events taken from the kernel per wait.
const EVENTS: usize = 16;

/// A level-triggered set of descriptors watched for readability.
#[derive(Debug)]
pub(super) struct Poller {
    fd: OwnedFd,
}

#[cfg(target_os = "linux")]
impl Poller {
    pub(super) fn new() -> io::Result<Poller> {
        use rustix::event::epoll;
        Ok(Poller {
            fd: epoll::create(epoll::CreateFlags::CLOEXEC)?,
        })
    }

    /// Watches `fd` for readability.
    pub(super) fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        use rustix::event::epoll;
        let data = epoll::EventData::new_u64(fd.as_raw_fd() as u64);
        Ok(epoll::add(&self.fd, fd, data, epoll::EventFlags::IN)?)
    }

    /// Pauses (`false`) or resumes (`true`) watching `fd`.
    pub(super) fn set_watched(&self, fd: BorrowedFd<'_>, watched: bool) -> io::Result<()> {
        use rustix::event::epoll;
        let data = epoll::EventData::new_u64(fd.as_raw_fd() as u64);
        let events = if watched {
            epoll::EventFlags::IN
        } else {
            epoll::EventFlags::empty()
        };
        Ok(epoll::modify(&self.fd, fd, data, events)?)
    }

    /// Stops watching `fd` (before it is closed).
    pub(super) fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = rustix::event::epoll::delete(&self.fd, fd);
    }

    /// Waits at most `timeout` (`None`: forever) for readiness, then calls `ready` with each
    /// ready descriptor; returns how many there were (0: the time ran out). `Interrupted`
    /// when a signal came first.
    pub(super) fn wait(
        &self,
        timeout: Option<Duration>,
        mut ready: impl FnMut(RawFd),
    ) -> io::Result<usize> {
        use rustix::event::epoll;
        let mut events = [std::mem::MaybeUninit::<epoll::Event>::uninit(); EVENTS];
        let ts = timeout.map(timespec);
        let (got, _) = epoll::wait(&self.fd, &mut events, ts.as_ref())?;
        for e in got.iter() {
            ready(e.data.u64() as RawFd);
        }
        Ok(got.len())
    }
}

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
impl Poller {
    pub(super) fn new() -> io::Result<Poller> {
        Ok(Poller {
            fd: rustix::event::kqueue::kqueue()?,
        })
    }

    /// Applies one change to the set.
    fn change(&self, fd: RawFd, flags: rustix::event::kqueue::EventFlags) -> io::Result<()> {
        use rustix::event::kqueue;
        let change = [kqueue::Event::new(
            kqueue::EventFilter::Read(fd),
            flags,
            std::ptr::null_mut(),
        )];
        let mut none: [std::mem::MaybeUninit<kqueue::Event>; 0] = [];
        // SAFETY: every descriptor in the set is removed from it (`remove`) before it is
        // closed, or closed with the kqueue itself (the listener owns both); the kernel also
        // drops a closed descriptor's events by itself.
        unsafe { kqueue::kevent_timespec(&self.fd, &change, &mut none, None) }?;
        Ok(())
    }

    /// Watches `fd` for readability (level-triggered: `EV_CLEAR` is not set).
    pub(super) fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.change(fd.as_raw_fd(), rustix::event::kqueue::EventFlags::ADD)
    }

    /// Pauses (`false`) or resumes (`true`) watching `fd`.
    pub(super) fn set_watched(&self, fd: BorrowedFd<'_>, watched: bool) -> io::Result<()> {
        use rustix::event::kqueue::EventFlags;
        let flags = if watched {
            EventFlags::ENABLE
        } else {
            EventFlags::DISABLE
        };
        self.change(fd.as_raw_fd(), flags)
    }

    /// Stops watching `fd` (before it is closed).
    pub(super) fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = self.change(fd.as_raw_fd(), rustix::event::kqueue::EventFlags::DELETE);
    }

    /// As the epoll version: waits, then reports each ready descriptor.
    pub(super) fn wait(
        &self,
        timeout: Option<Duration>,
        mut ready: impl FnMut(RawFd),
    ) -> io::Result<usize> {
        use rustix::event::kqueue;
        let mut events = [std::mem::MaybeUninit::<kqueue::Event>::uninit(); EVENTS];
        let ts = timeout.map(timespec);
        // SAFETY: as in `change`: no closed descriptor stays in the set.
        let (got, _) = unsafe { kqueue::kevent_timespec(&self.fd, &[], &mut events, ts.as_ref()) }?;
        for e in got.iter() {
            if let kqueue::EventFilter::Read(fd) = e.filter() {
                ready(fd);
            }
        }
        Ok(got.len())
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A listener's wake-up where `shutdown(2)` of a listening socket wakes nobody: a pipe whose
/// read end a `Poller` watches.
#[cfg(not(pipette_shutdown_wakes))]
#[derive(Debug)]
pub(super) struct WakePipe {
    read: OwnedFd,
    write: OwnedFd,
}

#[cfg(not(pipette_shutdown_wakes))]
impl WakePipe {
    /// Both ends close-on-exec and non-blocking.
    pub(super) fn new() -> io::Result<WakePipe> {
        #[cfg(pipette_sock_flags)]
        let (read, write) = {
            use rustix::pipe::PipeFlags;
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?
        };
        #[cfg(not(pipette_sock_flags))]
        let (read, write) = {
            // No pipe2 on macOS: the same race as for sockets (see `socket`).
            let (read, write) = rustix::pipe::pipe()?;
            for end in [&read, &write] {
                rustix::io::fcntl_setfd(end, rustix::io::FdFlags::CLOEXEC)?;
                rustix::io::ioctl_fionbio(end, true)?;
            }
            (read, write)
        };
        Ok(WakePipe { read, write })
    }

    /// The end to watch.
    pub(super) fn watched(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// Makes the read end readable for good (the byte is never read). Idempotent: a full
    /// pipe (never, in practice) is as readable as one byte.
    pub(super) fn wake(&self) {
        let _ = rustix::io::write(&self.write, &[1]);
    }
}
