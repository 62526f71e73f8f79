//! The shared-memory region of one connection (Linux): a sealed memfd mapped by both
//! processes, and four eventfds to wake a sleeping side (docs/PROTOCOL.md §10). The server
//! creates both and hands them to the admitted client with its reply (`SCM_RIGHTS`); the
//! client checks the memfd's seals, size and header before it trusts a byte of it.
//!
//! Everything here is the memory access and the system calls; the ring discipline (what
//! may be read, when to wake whom) is in `crate::shm`, and every index read from the peer is
//! checked by `proto::ring` before use.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::socket::timespec;
use crate::proto::ring::{Direction, Layout, Word, HEADER_LEN, HEADER_PAGE};

/// Whether this platform has the shared-memory transport.
pub(crate) const SUPPORTED: bool = true;

/// A descriptor received with the server's reply.
pub(crate) type Descriptor = OwnedFd;

/// What travels with the server's reply: the memfd, then the eventfds in [`Event`] order.
pub(crate) const HANDED_OVER: usize = 5;

/// Reads (a client) what arrives of the server's reply into `buf`, with the descriptors sent
/// with it, waiting for bytes up to `timeout`: the number of bytes (0 at the end of the
/// stream), `WouldBlock` when the timeout expired first.
pub(crate) fn read_handover(
    stream: &super::Stream,
    buf: &mut [u8],
    fds: &mut Vec<Descriptor>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        match super::fds::recv_with_fds(stream.as_fd(), buf, fds, HANDED_OVER) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            },
        };
        super::socket::wait_for(stream.as_fd(), PollFlags::IN, left)?;
    }
}

/// The seals a region must carry: nobody can change its size, so neither side can make the
/// other's accesses fault (`SIGBUS` past the end of a shrunk file).
const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Which eventfd: who waits on it for what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Bytes were written into ring `d` (its consumer waits on it).
    Data(Direction),
    /// Room was made in ring `d` (its producer waits on it).
    Room(Direction),
}

impl Event {
    fn index(self) -> usize {
        match self {
            Event::Data(Direction::ClientToServer) => 0,
            Event::Room(Direction::ClientToServer) => 1,
            Event::Data(Direction::ServerToClient) => 2,
            Event::Room(Direction::ServerToClient) => 3,
        }
    }
}

/// What woke a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The eventfd was signalled (and is drained now).
    Event,
    /// The socket is readable: the peer ended, sent bytes it should not have, or the
    /// connection was shut down.
    Socket,
    /// Neither, and the timeout expired.
    TimedOut,
}

/// A shared, read-write mapping of a whole memfd, unmapped when dropped.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by the `Mapping` (unmapped only in `Drop`) and every access to
// it goes through atomics or raw copies that tolerate concurrent writes by the peer; nothing
// in it is tied to the thread that mapped it.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`; the shared words are atomics, and the byte copies of one ring are
// made by its one producer or its one consumer (the connection's send or receive half).
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(memfd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of `len` bytes of `memfd`, whose size is sealed at
        // (at least) `len`; nothing else is mapped at the address the kernel picks.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                memfd,
                0,
            )?
        };
        let base =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { base, len })
    }

    /// Copies the bytes at offset `at` into `dst` (private memory).
    fn read_at(&self, at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= self.len);
        // SAFETY: inside the live mapping (checked above); `dst` is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), dst.as_mut_ptr(), dst.len());
        }
    }

    /// Copies `src` to offset `at`.
    fn write_at(&self, at: usize, src: &[u8]) {
        assert!(at + src.len() <= self.len);
        // SAFETY: inside the live, writable mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.as_ptr().add(at), src.len());
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `new`, unmapped only here; no
        // reference into it outlives the region that owns this (they borrow the region).
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One connection's mapped region and its eventfds.
pub(crate) struct Region {
    map: Mapping,
    layout: Layout,
    memfd: OwnedFd,
    events: [OwnedFd; 4],
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.map.len)
            .field("ring_size", &self.layout.ring_size())
            .finish()
    }
}

impl Region {
    /// A new region with rings of `layout.ring_size()` bytes (the server's side).
    pub(crate) fn create(layout: Layout) -> io::Result<Region> {
        let len = layout.region_len();
        let memfd = rustix::fs::memfd_create(
            "pipette-shm",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&memfd, len as u64)?;
        rustix::fs::fcntl_add_seals(&memfd, SEALS)?;
        let events = [eventfd()?, eventfd()?, eventfd()?, eventfd()?];
        let map = Mapping::new(&memfd, len)?;
        map.write_at(0, &layout.header());
        Ok(Region {
            map,
            layout,
            memfd,
            events,
        })
    }

    /// The region a server handed over (the client's side): `fds` as received, the memfd
    /// first. Checks the seals, the size and the header before anything else is read.
    pub(crate) fn open(fds: Vec<OwnedFd>) -> io::Result<Region> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let Ok(fds) = <[OwnedFd; HANDED_OVER]>::try_from(fds) else {
            return Err(bad(format!(
                "the server's shared-memory handover carried the wrong number of descriptors (expected {HANDED_OVER})"
            )));
        };
        let [memfd, e0, e1, e2, e3] = fds;
        let seals = rustix::fs::fcntl_get_seals(&memfd).map_err(|e| {
            bad(format!(
                "the server's shared memory is not a sealable memfd ({e})"
            ))
        })?;
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(bad(
                "the server's shared memory is not sealed against resizing; refusing to map it"
                    .into(),
            ));
        }
        let size = rustix::fs::fstat(&memfd)?.st_size;
        let largest = HEADER_PAGE + 2 * crate::proto::ring::MAX_RING;
        let len = usize::try_from(size)
            .ok()
            .filter(|l| (HEADER_PAGE..=largest).contains(l))
            .ok_or_else(|| {
                bad(format!(
                    "the server's shared memory has an impossible size ({size} bytes)"
                ))
            })?;
        let map = Mapping::new(&memfd, len)?;
        let mut header = [0u8; HEADER_LEN];
        map.read_at(0, &mut header);
        let layout = Layout::parse(&header, len).map_err(|e| bad(e.to_string()))?;
        Ok(Region {
            map,
            layout,
            memfd,
            events: [e0, e1, e2, e3],
        })
    }

    /// The layout (checked).
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// What to hand to the client: the memfd, then the eventfds.
    pub(crate) fn handover(&self) -> [BorrowedFd<'_>; HANDED_OVER] {
        let [e0, e1, e2, e3] = &self.events;
        [
            self.memfd.as_fd(),
            e0.as_fd(),
            e1.as_fd(),
            e2.as_fd(),
            e3.as_fd(),
        ]
    }

    /// A ring's 64-bit shared word ([`Word::Head`] or [`Word::Tail`]).
    pub(crate) fn index(&self, d: Direction, w: Word) -> &AtomicU64 {
        let at = Layout::word_offset(d, w);
        debug_assert!(matches!(w, Word::Head | Word::Tail) && at + 8 <= HEADER_PAGE);
        // SAFETY: `at` is 8-aligned (a multiple of 64) and inside the header page of the
        // live mapping; the peer may write the word at any time, which an atomic allows.
        unsafe { &*self.map.base.as_ptr().add(at).cast::<AtomicU64>() }
    }

    /// A ring's 32-bit shared flag ([`Word::ConsumerWaiting`] or [`Word::ProducerWaiting`]).
    pub(crate) fn flag(&self, d: Direction, w: Word) -> &AtomicU32 {
        let at = Layout::word_offset(d, w);
        debug_assert!(matches!(w, Word::ConsumerWaiting | Word::ProducerWaiting));
        // SAFETY: as for `index`: aligned, inside the mapping, and atomic.
        unsafe { &*self.map.base.as_ptr().add(at).cast::<AtomicU32>() }
    }

    /// `copy_out` into initialised memory.
    pub(crate) fn copy_out_init(&self, d: Direction, pos: u64, dst: &mut [u8]) {
        // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and `copy_out` only writes
        // initialised bytes, so `dst` stays initialised.
        let dst = unsafe { &mut *(dst as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.copy_out(d, pos, dst);
    }

    /// `copy_out` of `n` bytes appended to `dst` (which grows as needed).
    pub(crate) fn copy_out_append(&self, d: Direction, pos: u64, dst: &mut Vec<u8>, n: usize) {
        dst.reserve(n);
        self.copy_out(d, pos, &mut dst.spare_capacity_mut()[..n]);
        // SAFETY: `copy_out` initialised the first `n` spare bytes.
        unsafe { dst.set_len(dst.len() + n) };
    }

    /// Copies `dst.len()` bytes of ring `d` from stream position `pos` into `dst` (private
    /// memory). The caller checked, from indices it validated, that they are there.
    pub(crate) fn copy_out(&self, d: Direction, pos: u64, dst: &mut [MaybeUninit<u8>]) {
        let size = self.layout.ring_size();
        let data = self.layout.data_offset(d);
        let mut done = 0;
        for span in crate::proto::ring::spans(pos, dst.len(), size) {
            let n = span.len();
            // SAFETY: `data + span` lies inside ring `d` of the live mapping (`spans` keeps
            // within `size`); `dst[done..done + n]` is ours. The peer may write these bytes
            // concurrently only by breaking the protocol; we copy them once, into private
            // memory, and only the copy is ever looked at.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.map.base.as_ptr().add(data + span.start),
                    dst.as_mut_ptr().add(done).cast::<u8>(),
                    n,
                );
            }
            done += n;
        }
    }

    /// Copies `src` into ring `d` at stream position `pos`. The caller checked that there is
    /// room (from the consumer's validated index).
    pub(crate) fn copy_in(&self, d: Direction, pos: u64, src: &[u8]) {
        let size = self.layout.ring_size();
        let data = self.layout.data_offset(d);
        let mut done = 0;
        for span in crate::proto::ring::spans(pos, src.len(), size) {
            let n = span.len();
            // SAFETY: `data + span` lies inside ring `d` of the live, writable mapping; the
            // consumer does not read these bytes until the head that covers them is
            // published (a consumer that does anyway only harms itself).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(done),
                    self.map.base.as_ptr().add(data + span.start),
                    n,
                );
            }
            done += n;
        }
    }

    /// Wakes whoever waits on `e` (at most one waiter; a signal nobody waits for is kept by
    /// the eventfd until the next wait, which then returns at once and checks again).
    pub(crate) fn signal(&self, e: Event) {
        // Fails only when the counter is at its maximum, i.e. already signalled.
        let _ = rustix::io::write(&self.events[e.index()], &1u64.to_ne_bytes());
    }

    /// Waits until `e` is signalled or the connection's `stream` says the peer ended, at most
    /// `timeout`. A consumer ([`Event::Data`]) is woken by the end of the peer's sending
    /// direction (the socket becomes readable: it reads end-of-stream); a producer
    /// ([`Event::Room`]) only by the end of the whole connection (hang-up: the peer is gone,
    /// or our own shutdown), since a peer that ended its sending direction may still read.
    pub(crate) fn wait_on(
        &self,
        e: Event,
        stream: &super::Stream,
        timeout: Option<Duration>,
    ) -> io::Result<Woken> {
        let event = &self.events[e.index()];
        let socket_events = match e {
            Event::Data(_) => PollFlags::IN,
            // Hang-up and errors are always reported.
            Event::Room(_) => PollFlags::empty(),
        };
        let mut fds = [
            PollFd::new(event, PollFlags::IN),
            PollFd::from_borrowed_fd(stream.as_fd(), socket_events),
        ];
        let ts = timeout.map(timespec);
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(Woken::TimedOut),
            Ok(_) => {}
            // A signal: the caller checks and waits again.
            Err(Errno::INTR) => return Ok(Woken::Event),
            Err(e) => return Err(e.into()),
        }
        if !fds[1].revents().is_empty() {
            return Ok(Woken::Socket);
        }
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(event, &mut counter);
        Ok(Woken::Event)
    }
}

fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_region_opens_on_the_other_side_and_bad_ones_do_not() {
        let layout = Layout::new(8192).unwrap();
        let server = Region::create(layout).unwrap();
        let fds: Vec<OwnedFd> = server
            .handover()
            .iter()
            .map(|fd| fd.try_clone_to_owned().unwrap())
            .collect();
        let client = Region::open(fds).unwrap();
        assert_eq!(client.layout(), layout);
        // Bytes and indices written on one side are seen on the other.
        server.copy_in(Direction::ServerToClient, 8190, b"wrap");
        server
            .index(Direction::ServerToClient, Word::Head)
            .store(8194, std::sync::atomic::Ordering::Release);
        assert_eq!(
            client
                .index(Direction::ServerToClient, Word::Head)
                .load(std::sync::atomic::Ordering::Acquire),
            8194
        );
        let mut got = [MaybeUninit::new(0u8); 4];
        client.copy_out(Direction::ServerToClient, 8190, &mut got);
        // SAFETY: all four were initialised (by `MaybeUninit::new` and then the copy).
        let got: [u8; 4] = unsafe { std::mem::transmute(got) };
        assert_eq!(&got, b"wrap");
        // A signal wakes the waiter; a quiet eventfd times out; the socket's end wakes it.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = super::super::Stream::from_fd(a.into());
        let data = Event::Data(Direction::ClientToServer);
        client.signal(data);
        assert_eq!(
            server.wait_on(data, &a, Some(Duration::ZERO)).unwrap(),
            Woken::Event
        );
        let quiet = server
            .wait_on(data, &a, Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!(quiet, Woken::TimedOut);
        drop(b);
        assert_eq!(server.wait_on(data, &a, None).unwrap(), Woken::Socket);

        // An unsealed memfd is refused.
        let unsealed = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, layout.region_len() as u64).unwrap();
        let mut fds = vec![unsealed];
        for _ in 0..4 {
            fds.push(eventfd().unwrap());
        }
        let e = Region::open(fds).unwrap_err();
        assert!(
            e.to_string().contains("sealable") || e.to_string().contains("sealed"),
            "{e}"
        );
        // Too few descriptors.
        assert!(Region::open(vec![eventfd().unwrap()]).is_err());
    }
}
