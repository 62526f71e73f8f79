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

/// Whether this platform has the shared-memory transport (blocking and async API).
pub(crate) const SUPPORTED: bool = true;

/// Bytes that follow an agreeing reply (none here: the descriptors come with it).
pub(crate) const AFTER_REPLY: usize = 0;

/// Never called here (`AFTER_REPLY` is 0).
pub(crate) fn take_handles(_bytes: &[u8], _fds: &mut Vec<Descriptor>) -> io::Result<()> {
    Ok(())
}

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

/// `Handshake::write_with_memory` of either stream (blocking or async): the hello with the
/// client's own memory attached.
pub(crate) fn send_memory(
    socket: BorrowedFd<'_>,
    hello: &[u8],
    memory: &Memory,
) -> io::Result<usize> {
    super::fds::send_with_fds(socket, &[hello], &[memory.handover()])
}

/// `Handshake::handed_over` of either stream: the descriptors kept with the hello, taken
/// once (reads stop keeping descriptors).
pub(crate) fn handed_over(inbox: &mut Option<Box<super::fds::Inbox>>) -> Vec<Descriptor> {
    inbox
        .take()
        .map(|inbox| inbox.into_fds())
        .unwrap_or_default()
}

/// `read_handover` for the async client, without waiting: what the socket has of the reply
/// now, with its descriptors (`WouldBlock` when nothing is there, which also clears tokio's
/// read readiness, so that `readable()` then waits for the next bytes).
#[cfg(feature = "tokio")]
pub(crate) fn try_read_handover(
    stream: &super::aio::Stream,
    buf: &mut [u8],
    fds: &mut Vec<Descriptor>,
) -> io::Result<usize> {
    let socket = stream.tokio_stream();
    socket.try_io(::tokio::io::Interest::READABLE, || {
        super::fds::recv_with_fds(socket.as_fd(), buf, fds, HANDED_OVER)
    })
}

/// An async wait on one eventfd of a region and on the connection's socket, the twin of
/// [`Region::wait_on`] on tokio's reactor: the eventfd (a duplicate of it, registered with
/// the reactor) and, for a consumer, the socket's read readiness (the peer's end, or our
/// shutdown), for a producer only a real hang-up of the socket.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct AsyncWait {
    event: ::tokio::io::unix::AsyncFd<OwnedFd>,
    which: Event,
}

#[cfg(feature = "tokio")]
impl AsyncWait {
    /// Registers a duplicate of `region`'s eventfd for `which` with the reactor.
    pub(crate) fn new(region: &Region, which: Event) -> io::Result<AsyncWait> {
        let fd = region.events[which.index()].try_clone()?;
        // SAFETY: `fd` is an open eventfd (a duplicate made just above), owned by the
        // `AsyncFd` from here on: it stays open and refers to the same eventfd until the
        // `AsyncFd` is dropped.
        let event = unsafe {
            ::tokio::io::unix::AsyncFd::register_with_interest(fd, ::tokio::io::Interest::READABLE)
        }
        .map_err(io::Error::from)?;
        Ok(AsyncWait { event, which })
    }

    /// Ready when the eventfd was signalled (`Woken::Event`: drained, its readiness cleared)
    /// or the socket says what a wait on it is for (`Woken::Socket`); pending (both wakers
    /// registered) otherwise. A producer is woken by the socket only when it is hung up
    /// (the peer is gone, or our own shutdown): tokio's read readiness also fires, and stays
    /// set for good, when the peer only ended its sending direction, so the producer watches
    /// the write readiness (whose closed state is a hang-up only), checks with a
    /// zero-timeout `poll(2)` and clears anything else.
    pub(crate) fn poll_wait(
        &self,
        cx: &mut std::task::Context<'_>,
        stream: &super::aio::Stream,
    ) -> std::task::Poll<io::Result<Woken>> {
        use ::tokio::io::Interest;
        use std::task::Poll;
        loop {
            if let Poll::Ready(guard) = self.event.poll_read_ready(cx) {
                let mut guard = guard?;
                let mut counter = [0u8; 8];
                // A signal that lands after this read sets the readiness again (a later
                // tick), which `clear_ready` leaves alone.
                let _ = rustix::io::read(self.event.get_ref(), &mut counter);
                guard.clear_ready();
                return Poll::Ready(Ok(Woken::Event));
            }
            let socket = stream.tokio_stream();
            let (interest, wanted) = match self.which {
                Event::Data(_) => (Interest::READABLE, PollFlags::IN | PollFlags::RDHUP),
                // Hang-up and errors are always reported.
                Event::Room(_) => (Interest::WRITABLE, PollFlags::empty()),
            };
            let ready = match self.which {
                Event::Data(_) => socket.poll_read_ready(cx),
                Event::Room(_) => socket.poll_write_ready(cx),
            };
            if let Poll::Ready(r) = ready {
                r?;
            } else {
                return Poll::Pending;
            }
            // Checked inside `try_io`, so that readiness is cleared only when it was seen
            // to be stale (an event after the check sets it again).
            match socket.try_io(interest, || {
                let mut fds = [PollFd::from_borrowed_fd(socket.as_fd(), wanted)];
                match rustix::event::poll(&mut fds, Some(&timespec(Duration::ZERO))) {
                    Ok(n) if n > 0 && !fds[0].revents().is_empty() => Ok(()),
                    Ok(_) | Err(Errno::INTR) => Err(io::ErrorKind::WouldBlock.into()),
                    Err(e) => Err(e.into()),
                }
            }) {
                Ok(()) => return Poll::Ready(Ok(Woken::Socket)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// The seals each side puts on its own memory once it has mapped it: nobody can change its
/// size (so no access by either side can fault, `SIGBUS` past the end of a shrunk file), and
/// nobody can map it writable again or `write(2)` to it (`F_SEAL_FUTURE_WRITE`): the peer
/// gets a read-only view, so what this side writes (its ring, its words) only it can change.
const OWN_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::FUTURE_WRITE)
    .union(SealFlags::SEAL);

/// The seals a side requires on the peer's memory before mapping it (read-only).
const PEER_SEALS: SealFlags = SealFlags::SHRINK.union(SealFlags::GROW);

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

/// A shared mapping of one side's memory: its header page, then its ring mapped twice in a
/// row, so that any span of up to the ring's size is contiguous (no copy is cut at the
/// ring's end, and the send half can lend out a message's room as one slice). Unmapped when
/// dropped.
struct Mapping {
    base: NonNull<u8>,
    /// The reserved range: `HEADER_PAGE + 2 * ring`.
    len: usize,
    ring: usize,
}

// SAFETY: the mapping is owned by the `Mapping` (unmapped only in `Drop`) and every access to
// it goes through atomics or raw copies; nothing in it is tied to the thread that mapped it.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`; the shared words are atomics, and the bytes of a ring are written by
// its one producer (through the one `RingWriter`) and copied out by its one consumer.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `memfd` (`HEADER_PAGE + ring` bytes, its size sealed), read-write for the side
    /// that owns it, read-only for the peer.
    fn new(memfd: &OwnedFd, ring: usize, writable: bool) -> io::Result<Mapping> {
        let len = HEADER_PAGE + 2 * ring;
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        // SAFETY: reserves `len` bytes of fresh address space (no access), which the two
        // mappings below replace; nothing else is mapped there.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE,
            )?
        };
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        let map = Mapping { base, len, ring };
        // SAFETY: both land inside the range reserved above (which `map` owns and unmaps on
        // any failure), `MAP_FIXED` replacing its parts; the file has (at least) `HEADER_PAGE +
        // ring` bytes, sealed against shrinking, and `HEADER_PAGE` is page-aligned.
        unsafe {
            rustix::mm::mmap(
                base.as_ptr().cast(),
                HEADER_PAGE + ring,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                memfd,
                0,
            )?;
            rustix::mm::mmap(
                base.as_ptr().add(HEADER_PAGE + ring).cast(),
                ring,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                memfd,
                HEADER_PAGE as u64,
            )?;
        }
        Ok(map)
    }

    /// Copies the bytes at offset `at` (in the first `HEADER_PAGE + ring` bytes) into `dst`.
    fn read_at(&self, at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= HEADER_PAGE + self.ring);
        // SAFETY: inside the live mapping (checked above); `dst` is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), dst.as_mut_ptr(), dst.len());
        }
    }

    /// Where stream position `pos` of the ring is: any `len <= ring` bytes from there are
    /// contiguous (the mirror).
    fn ring_at(&self, pos: u64, len: usize) -> *mut u8 {
        assert!(len <= self.ring);
        let start = (pos & (self.ring as u64 - 1)) as usize;
        // SAFETY: `HEADER_PAGE + start + len <= HEADER_PAGE + 2 * ring = self.len`: inside
        // the live mapping.
        unsafe { self.base.as_ptr().add(HEADER_PAGE + start) }
    }

    /// A shared word at `at` (a multiple of 8 inside the header page).
    fn word<T: SharedWord>(&self, at: usize) -> &T {
        assert!(at % 8 == 0 && at + 8 <= HEADER_PAGE);
        // SAFETY: aligned and inside the header page of the live mapping, which outlives the
        // reference (it borrows `self`); `T` is an atomic (the peer may write its own words
        // at any time), and this side stores only into words of its own memory, which it
        // mapped writable.
        unsafe { &*self.base.as_ptr().add(at).cast::<T>() }
    }
}

/// The types a shared word may be read as: atomics of at most 8 bytes, which the peer may
/// write at any time.
trait SharedWord {}
impl SharedWord for AtomicU32 {}
impl SharedWord for AtomicU64 {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the range reserved in `new`, unmapped only here;
        // no reference into it outlives the value that owns this.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A side's own memory, created and sealed by it: mapped read-write here, and only
/// read-only anywhere else.
pub(crate) struct Memory {
    map: Mapping,
    layout: Layout,
    memfd: OwnedFd,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("ring_size", &self.layout.ring_size())
            .finish()
    }
}

impl Memory {
    /// New memory with a ring of `layout.ring_size()` bytes, its header written, mapped
    /// here read-write, then sealed ([`OWN_SEALS`]).
    pub(crate) fn create(layout: Layout) -> io::Result<Memory> {
        let memfd = rustix::fs::memfd_create(
            "pipette-shm",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&memfd, layout.region_len() as u64)?;
        let map = Mapping::new(&memfd, layout.ring_size(), true)?;
        let header = layout.header();
        // SAFETY: the header fits the live, writable header page; nobody else has the memfd.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), map.base.as_ptr(), header.len());
        }
        rustix::fs::fcntl_add_seals(&memfd, OWN_SEALS)?;
        Ok(Memory { map, layout, memfd })
    }

    /// The memfd, to hand to the peer.
    pub(crate) fn handover(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }
}

/// Maps the peer's memory read-only after checking its seals, size and header.
fn open_peer(memfd: &OwnedFd, who: &str) -> io::Result<(Mapping, Layout)> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let seals = rustix::fs::fcntl_get_seals(memfd)
        .map_err(|e| bad(format!("{who} shared memory is not a sealable memfd ({e})")))?;
    if !seals.contains(PEER_SEALS) {
        return Err(bad(format!(
            "{who} shared memory is not sealed against resizing; refusing to map it"
        )));
    }
    let size = rustix::fs::fstat(memfd)?.st_size;
    let layout = usize::try_from(size)
        .ok()
        .and_then(|l| l.checked_sub(HEADER_PAGE))
        .and_then(|ring| Layout::new(ring).ok())
        .ok_or_else(|| {
            bad(format!(
                "{who} shared memory has an impossible size ({size} bytes)"
            ))
        })?;
    let map = Mapping::new(memfd, layout.ring_size(), false)?;
    let mut header = [0u8; HEADER_LEN];
    map.read_at(0, &mut header);
    let parsed = Layout::parse(&header, layout.region_len()).map_err(|e| bad(e.to_string()))?;
    Ok((map, parsed))
}

/// One connection's shared memory as one side sees it: its own memory (its ring, and the
/// words it writes), the peer's (mapped read-only), and the four eventfds.
pub(crate) struct Region {
    own: Memory,
    peer: Mapping,
    peer_layout: Layout,
    events: [OwnedFd; 4],
    /// The ring this side writes (the other it reads).
    send: Direction,
    /// Whether the `RingWriter` was handed out (there is one per region).
    writer_taken: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("send", &self.send)
            .field("send_ring", &self.own.layout.ring_size())
            .field("recv_ring", &self.peer_layout.ring_size())
            .finish()
    }
}

impl Region {
    /// The server's side, for a client it admitted that handed over `client` (its memory)
    /// with the hello: its own memory with a ring of `layout.ring_size()` bytes, and the
    /// eventfds. Fails (and the connection stays on the socket) if the client's memory is
    /// not acceptable.
    pub(crate) fn create(
        layout: Layout,
        client: Vec<OwnedFd>,
        _pid: Option<u32>,
    ) -> io::Result<Region> {
        let Ok([client]) = <[OwnedFd; 1]>::try_from(client) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client's hello did not carry exactly one memory descriptor",
            ));
        };
        let (peer, peer_layout) = open_peer(&client, "the client's")?;
        Ok(Region {
            own: Memory::create(layout)?,
            peer,
            peer_layout,
            events: [eventfd()?, eventfd()?, eventfd()?, eventfd()?],
            send: Direction::ServerToClient,
            writer_taken: Default::default(),
        })
    }

    /// The client's side: its own memory (handed over with the hello) and `fds` as received
    /// with the reply, the server's memory first, then the eventfds.
    pub(crate) fn open(own: Memory, fds: Vec<OwnedFd>) -> io::Result<Region> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let Ok(fds) = <[OwnedFd; HANDED_OVER]>::try_from(fds) else {
            return Err(bad(format!(
                "the server's shared-memory handover carried the wrong number of descriptors (expected {HANDED_OVER})"
            )));
        };
        let [memfd, e0, e1, e2, e3] = fds;
        let (peer, peer_layout) = open_peer(&memfd, "the server's")?;
        Ok(Region {
            own,
            peer,
            peer_layout,
            events: [e0, e1, e2, e3],
            send: Direction::ClientToServer,
            writer_taken: Default::default(),
        })
    }

    /// The size of ring `d` (checked).
    pub(crate) fn ring_size(&self, d: Direction) -> usize {
        if d == self.send {
            self.own.layout.ring_size()
        } else {
            self.peer_layout.ring_size()
        }
    }

    /// What the server hands to the client: its memory, then the eventfds.
    pub(crate) fn handover(&self) -> [BorrowedFd<'_>; HANDED_OVER] {
        let [e0, e1, e2, e3] = &self.events;
        [
            self.own.handover(),
            e0.as_fd(),
            e1.as_fd(),
            e2.as_fd(),
            e3.as_fd(),
        ]
    }

    /// The memory that word `w` of ring `d` lives in: that of the side that writes it.
    fn holder(&self, d: Direction, w: Word) -> &Mapping {
        if (d == self.send) == w.written_by_producer() {
            &self.own.map
        } else {
            &self.peer
        }
    }

    /// A ring's 64-bit shared word ([`Word::Head`] or [`Word::Tail`]). Only a word this side
    /// writes may be stored to (the other is in read-only memory).
    pub(crate) fn index(&self, d: Direction, w: Word) -> &AtomicU64 {
        debug_assert!(matches!(w, Word::Head | Word::Tail));
        self.holder(d, w).word(Layout::word_offset(w))
    }

    /// A ring's 32-bit shared flag ([`Word::ConsumerWaiting`] or [`Word::ProducerWaiting`]).
    pub(crate) fn flag(&self, d: Direction, w: Word) -> &AtomicU32 {
        debug_assert!(matches!(w, Word::ConsumerWaiting | Word::ProducerWaiting));
        self.holder(d, w).word(Layout::word_offset(w))
    }

    /// `copy_out` of `n` bytes appended to `dst` (which grows as needed).
    pub(crate) fn copy_out_append(&self, pos: u64, dst: &mut Vec<u8>, n: usize) {
        dst.reserve(n);
        self.copy_out(pos, &mut dst.spare_capacity_mut()[..n]);
        // SAFETY: `copy_out` initialised the first `n` spare bytes.
        unsafe { dst.set_len(dst.len() + n) };
    }

    /// Copies `dst.len()` bytes of the ring this side reads, from stream position `pos`,
    /// into `dst` (private memory). The caller checked, from indices it validated, that they
    /// are there.
    pub(crate) fn copy_out(&self, pos: u64, dst: &mut [MaybeUninit<u8>]) {
        let src = self.peer.ring_at(pos, dst.len());
        // SAFETY: `ring_at` checked that the span lies inside the live (mirrored) mapping;
        // `dst` is ours. The peer may change these bytes concurrently only by breaking the
        // protocol; we copy them once, into private memory, and only the copy is looked at.
        unsafe {
            std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr().cast::<u8>(), dst.len());
        }
    }

    /// The one writer of this side's ring (for the send half); `None` if it was taken.
    pub(crate) fn writer(self: &std::sync::Arc<Self>) -> Option<RingWriter> {
        if self
            .writer_taken
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        Some(RingWriter {
            region: self.clone(),
        })
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

/// The one writer of a side's ring: only it writes the ring's bytes, and only through
/// `&mut self`, so a slice it lends out is the only access to those bytes in this process,
/// and the peer maps them read-only.
#[derive(Debug)]
pub(crate) struct RingWriter {
    region: std::sync::Arc<Region>,
}

impl RingWriter {
    /// Copies `src` into the ring at stream position `pos`. The caller checked that there is
    /// room (from the consumer's validated index).
    pub(crate) fn copy_in(&mut self, pos: u64, src: &[u8]) {
        self.lend(pos, src.len()).copy_from_slice(src);
    }

    /// The ring's `len` bytes at stream position `pos`, as one slice (the mirror makes any
    /// span contiguous), for the producer to write in place. The caller checked that there
    /// is room; the bytes are the consumer's only once the head covering them is published.
    pub(crate) fn lend(&mut self, pos: u64, len: usize) -> &mut [u8] {
        let at = self.region.own.map.ring_at(pos, len);
        // SAFETY: `ring_at` checked that the span lies inside the live, writable mapping,
        // which the borrowed `region` keeps alive. Nothing else in this process accesses
        // these bytes while the slice lives (there is one writer, borrowed mutably, and the
        // receive half reads only the peer's ring), and the peer cannot write them (it can
        // only map this memory read-only: `OWN_SEALS`).
        unsafe { std::slice::from_raw_parts_mut(at, len) }
    }

    /// Nothing to do here: `lend` always lends the ring itself (the mirror).
    #[inline(always)]
    pub(crate) fn finish_lend(&mut self) {}
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
    use std::sync::Arc;

    fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
        fd.try_clone_to_owned().unwrap()
    }

    /// A client's memory and a server's region made from it, and the client's region.
    fn pair(ring: usize) -> (Arc<Region>, Arc<Region>) {
        let layout = Layout::new(ring).unwrap();
        let client_memory = Memory::create(layout).unwrap();
        let server = Region::create(layout, vec![dup(client_memory.handover())], None).unwrap();
        let fds = server.handover().iter().map(|fd| dup(*fd)).collect();
        let client = Region::open(client_memory, fds).unwrap();
        (Arc::new(server), Arc::new(client))
    }

    #[test]
    fn both_sides_see_each_others_ring_and_words_across_the_wrap() {
        let (server, client) = pair(8192);
        assert_eq!(client.ring_size(Direction::ServerToClient), 8192);
        // Bytes and indices written on one side are seen on the other, across the ring's
        // end (the mirror makes the span one copy).
        let mut w = server.writer().unwrap();
        assert!(server.writer().is_none(), "one writer per region");
        w.copy_in(8190, b"wrap");
        w.lend(8194, 3).copy_from_slice(b"abc");
        server
            .index(Direction::ServerToClient, Word::Head)
            .store(8197, std::sync::atomic::Ordering::Release);
        assert_eq!(
            client
                .index(Direction::ServerToClient, Word::Head)
                .load(std::sync::atomic::Ordering::Acquire),
            8197
        );
        let mut got = Vec::new();
        client.copy_out_append(8190, &mut got, 7);
        assert_eq!(got, b"wrapabc");
        // The client's tail of that ring is in the client's memory, seen by the server.
        client
            .index(Direction::ServerToClient, Word::Tail)
            .store(8197, std::sync::atomic::Ordering::Release);
        assert_eq!(
            server
                .index(Direction::ServerToClient, Word::Tail)
                .load(std::sync::atomic::Ordering::Acquire),
            8197
        );
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
    }

    #[test]
    fn the_peer_can_neither_map_nor_write_a_sides_memory_writable() {
        let memory = Memory::create(Layout::new(4096).unwrap()).unwrap();
        let fd = memory.handover();
        // SAFETY: a fresh mapping request that must fail; nothing is mapped on failure.
        let writable = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                4096,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )
        };
        assert_eq!(writable.err(), Some(Errno::PERM), "F_SEAL_FUTURE_WRITE");
        assert!(rustix::io::pwrite(fd, b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(fd, 1 << 20).is_err(), "sealed size");
    }

    #[test]
    fn bad_memory_is_refused() {
        let layout = Layout::new(4096).unwrap();
        // An unsealed memfd.
        let unsealed = rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&unsealed, layout.region_len() as u64).unwrap();
        let e = Region::create(layout, vec![unsealed], None).unwrap_err();
        assert!(e.to_string().contains("seal"), "{e}");
        // Sealed, but with no header.
        let blank =
            rustix::fs::memfd_create("x", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&blank, layout.region_len() as u64).unwrap();
        rustix::fs::fcntl_add_seals(&blank, PEER_SEALS).unwrap();
        let e = Region::create(layout, vec![blank], None).unwrap_err();
        assert!(e.to_string().contains("PIPESHM2"), "{e}");
        // Too few descriptors, on either side.
        assert!(Region::create(layout, vec![], None).is_err());
        let own = Memory::create(layout).unwrap();
        assert!(Region::open(own, vec![eventfd().unwrap()]).is_err());
    }
}
