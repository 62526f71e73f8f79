//! The shared-memory region of one connection (Windows): two unnamed file mappings (page-file
//! backed sections), one per ring, and four auto-reset events to wake a sleeping side
//! (docs/PROTOCOL.md §10, "Windows").
//!
//! Windows cannot pass a handle over a pipe, so the **server** makes everything and
//! duplicates it into the admitted client's process (`DuplicateHandle`, the client's process
//! opened with `PROCESS_DUP_HANDLE` from the pid the pipe reports): its own ring's section
//! read-only, the client's ring's section read-write, the events with wait and set rights.
//! The handle values (valid in the client's process) follow the reply on the pipe. Nothing
//! has a name, so no other process can open any of it; the sections carry an empty DACL, so
//! a read-only handle cannot be duplicated into a writable one. A client of another user
//! (whose process the server cannot open) stays on the pipe. The server writes the header of
//! the client's section, maps it read-only and closes its handle to it: from then on only
//! the client can write its ring.
//!
//! There is no mirrored mapping here (a view's file offset must be a multiple of 64 KiB):
//! a copy that crosses the ring's end is two copies, and a span lent for `send_with` that
//! would cross it is written in a scratch buffer first (`RingWriter::lend`, `finish_lend`).
//! The wait is on the event, the connection's cancel event and a one-byte read kept pending
//! on the pipe (`Stream::end_watch`), which completes when the peer is gone.

use std::io;
use std::mem::MaybeUninit;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_CLOSE_SOURCE, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::{
    InitializeAcl, InitializeSecurityDescriptor, SetSecurityDescriptorDacl, ACL, ACL_REVISION,
    SECURITY_ATTRIBUTES, SECURITY_DESCRIPTOR,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, UnmapViewOfFile, VirtualQuery, FILE_MAP_READ,
    FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, GetCurrentProcess, SetEvent, WaitForMultipleObjects, EVENT_MODIFY_STATE,
    SYNCHRONIZATION_SYNCHRONIZE,
};

use super::timeout_ms;
use super::watch::Watched;
use crate::proto::ring::{Direction, Layout, Word, HEADER_LEN, HEADER_PAGE};

/// Whether this platform has the shared-memory transport (blocking and async API).
pub(crate) const SUPPORTED: bool = true;

/// A handle received with the server's reply (or, for a server, the client's process).
pub(crate) type Descriptor = OwnedHandle;

/// The handle values that follow the server's reply: its section, the client's section,
/// then the events in [`Event`] order.
pub(crate) const HANDED_OVER: usize = 6;

/// Bytes that follow an agreeing reply: `HANDED_OVER` u64 LE handle values.
pub(crate) const AFTER_REPLY: usize = HANDED_OVER * 8;

/// Reads (a client) what arrives of the server's reply (and then of the handle values behind
/// it) into `buf`, waiting for bytes up to `timeout`: the number of bytes (0 at the end of
/// the stream), `WouldBlock` when the timeout expired first.
pub(crate) fn read_handover(
    stream: &super::Stream,
    buf: &mut [u8],
    _handles: &mut Vec<Descriptor>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    match stream.read_within(buf, timeout) {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(io::ErrorKind::WouldBlock.into()),
        other => other,
    }
}

/// The handle values read behind an agreeing reply (`AFTER_REPLY` bytes), as this process's
/// handles now: the server duplicated them into it.
pub(crate) fn take_handles(bytes: &[u8], handles: &mut Vec<Descriptor>) -> io::Result<()> {
    for value in bytes.chunks_exact(8) {
        let value = u64::from_le_bytes(value.try_into().expect("8 bytes"));
        if value == 0 || value as HANDLE == INVALID_HANDLE_VALUE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server's shared-memory handover named a null handle",
            ));
        }
        // SAFETY: the server (whose identity the client checked before sending its hello)
        // duplicated this handle into our process for us alone and told us its value; nobody
        // else in this process knows it, so it is ours to own and close.
        handles.push(unsafe { OwnedHandle::from_raw_handle(value as HANDLE) });
    }
    Ok(())
}

/// A client's process (`pid`, as the pipe reports it), opened so that handles can be
/// duplicated into it; an error when it cannot be (another user's process, say), and the
/// feature is then not agreed to.
fn client_process(pid: Option<u32>) -> io::Result<OwnedHandle> {
    let pid = pid.ok_or_else(|| io::Error::other("the client's process id is unknown"))?;
    super::handles::open_process(pid).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open the client's process (pid {pid}) to hand it shared memory: {e} (a process of another user?)"),
        )
    })
}

/// Which event: who waits on it for what.
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
    /// The event was signalled (and, auto-reset, is clear again).
    Event,
    /// The pipe ended (the peer is gone) or the connection was shut down.
    Socket,
    /// Neither, and the timeout expired.
    TimedOut,
}

/// A view of one section: its header page, then its ring (not mirrored). Unmapped when
/// dropped.
struct Mapping {
    base: NonNull<u8>,
    ring: usize,
}

// SAFETY: the view is owned by the `Mapping` (unmapped only in `Drop`) and every access to
// it goes through atomics or raw copies; nothing in it is tied to the thread that mapped it.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`; the shared words are atomics, and the bytes of a ring are written by
// its one producer (through the one `RingWriter`) and copied out by its one consumer.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all of `section`, read-write or read-only, and checks that it is exactly `4096 +
    /// a valid ring size` bytes (`who`: whose, for errors).
    fn new(section: &OwnedHandle, writable: bool, who: &str) -> io::Result<Mapping> {
        let access = if writable {
            FILE_MAP_READ | FILE_MAP_WRITE
        } else {
            FILE_MAP_READ
        };
        // SAFETY: `section` is an open handle for the call; size 0 maps the whole section.
        let view = unsafe { MapViewOfFile(section.as_raw_handle(), access, 0, 0, 0) };
        let base = NonNull::new(view.Value.cast::<u8>()).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(
                e.kind(),
                format!("cannot map {who} shared memory ({e}); is it a file mapping?"),
            )
        })?;
        // Unmapped by `Drop` on any failure below.
        let mut map = Mapping { base, ring: 0 };
        let mut info = MaybeUninit::<MEMORY_BASIC_INFORMATION>::zeroed();
        // SAFETY: `base` is the start of the view just mapped; `info` is valid for writes of
        // its size.
        let n = unsafe {
            VirtualQuery(
                base.as_ptr().cast(),
                info.as_mut_ptr(),
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        if n == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `VirtualQuery` filled it.
        let size = unsafe { info.assume_init() }.RegionSize;
        map.ring = size
            .checked_sub(HEADER_PAGE)
            .and_then(|ring| Layout::new(ring).ok())
            .map(|l| l.ring_size())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{who} shared memory has an impossible size ({size} bytes)"),
                )
            })?;
        Ok(map)
    }

    /// Checks that its header describes it (magic, version, its ring's size).
    fn check_header(&self) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        self.read_at(0, &mut header);
        Layout::parse(&header, HEADER_PAGE + self.ring)
            .map(drop)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Copies the bytes at offset `at` (inside the view) into `dst`.
    fn read_at(&self, at: usize, dst: &mut [u8]) {
        assert!(at + dst.len() <= HEADER_PAGE + self.ring);
        // SAFETY: inside the live view (checked above); `dst` is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(at), dst.as_mut_ptr(), dst.len());
        }
    }

    /// Where ring offset `start` (below the ring's size) is.
    fn ring_ptr(&self, start: usize) -> *mut u8 {
        assert!(start < self.ring);
        // SAFETY: `HEADER_PAGE + start < HEADER_PAGE + ring`: inside the live view.
        unsafe { self.base.as_ptr().add(HEADER_PAGE + start) }
    }

    /// Stream position `pos`'s `len` bytes as at most two spans of the ring (offset, length):
    /// the second is the part that wrapped to the ring's start.
    fn spans(&self, pos: u64, len: usize) -> [(usize, usize); 2] {
        assert!(len <= self.ring);
        let start = (pos & (self.ring as u64 - 1)) as usize;
        let first = len.min(self.ring - start);
        [(start, first), (0, len - first)]
    }

    /// A shared word at `at` (a multiple of 8 inside the header page).
    fn word<T: SharedWord>(&self, at: usize) -> &T {
        assert!(at % 8 == 0 && at + 8 <= HEADER_PAGE);
        // SAFETY: aligned and inside the header page of the live view, which outlives the
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
        // SAFETY: `base` is the start of a view mapped in `new` and unmapped only here; no
        // reference into it outlives the value that owns this.
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.base.as_ptr().cast(),
            });
        }
    }
}

/// A new unnamed section of `len` bytes (page-file backed), with an empty DACL: the handle
/// returned has full access, and no handle to it can ever be given more access than it was
/// duplicated with (Chromium's read-only shared memory does the same).
fn create_section(len: usize) -> io::Result<OwnedHandle> {
    let mut acl = MaybeUninit::<ACL>::zeroed();
    let mut sd = MaybeUninit::<SECURITY_DESCRIPTOR>::zeroed();
    // SAFETY: `acl` and `sd` are valid for writes of their sizes and outlive the
    // `CreateFileMappingW` call that reads them through `sa`.
    unsafe {
        if InitializeAcl(
            acl.as_mut_ptr(),
            std::mem::size_of::<ACL>() as u32,
            ACL_REVISION,
        ) == 0
            || InitializeSecurityDescriptor(sd.as_mut_ptr().cast(), 1) == 0
            || SetSecurityDescriptorDacl(sd.as_mut_ptr().cast(), 1, acl.as_ptr(), 0) == 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let sa = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.as_mut_ptr().cast(),
        bInheritHandle: 0,
    };
    let len = len as u64;
    // SAFETY: `sa` (and what it points to) is valid for the call; a null name makes an
    // unnamed section; INVALID_HANDLE_VALUE backs it with the page file.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            &sa,
            PAGE_READWRITE,
            (len >> 32) as u32,
            len as u32,
            std::ptr::null(),
        )
    };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// An unnamed auto-reset event, not signalled.
fn event() -> io::Result<OwnedHandle> {
    // SAFETY: null attributes and name are allowed; on success we own the new handle.
    let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// A client's own memory before the handshake: nothing on Windows, where the server makes
/// both rings (its ring size applies to both); it only says that the client asked.
#[derive(Debug)]
pub(crate) struct Memory;

impl Memory {
    pub(crate) fn create(_layout: Layout) -> io::Result<Memory> {
        Ok(Memory)
    }
}

/// Handles duplicated into a client's process, closed there again unless the handover
/// reached it (`delivered`).
struct Delivery {
    process: OwnedHandle,
    values: Vec<u64>,
    delivered: AtomicBool,
}

impl Delivery {
    /// Duplicates `handle` into the client's process with `access` only.
    fn give(&mut self, handle: &OwnedHandle, access: u32) -> io::Result<()> {
        let mut out: HANDLE = std::ptr::null_mut();
        // SAFETY: both process handles and `handle` are open for the call; `out` is valid
        // for writes.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                handle.as_raw_handle(),
                self.process.as_raw_handle(),
                &mut out,
                access,
                0,
                0,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        self.values.push(out as u64);
        Ok(())
    }
}

impl Drop for Delivery {
    /// Closes in the client's process what never reached it (the reply could not be sent).
    fn drop(&mut self) {
        if self.delivered.load(Ordering::SeqCst) {
            return;
        }
        for &value in &self.values {
            // SAFETY: `value` is a handle we duplicated into that process and nobody there
            // knows of (the handover was not sent); DUPLICATE_CLOSE_SOURCE with no target
            // closes it.
            unsafe {
                DuplicateHandle(
                    self.process.as_raw_handle(),
                    value as HANDLE,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    0,
                    0,
                    DUPLICATE_CLOSE_SOURCE,
                );
            }
        }
    }
}

/// One connection's shared memory as one side sees it: its own ring's view (read-write),
/// the peer's (read-only), and the four events.
pub(crate) struct Region {
    /// This side's ring, and the peer's (each checked against its header: its `ring` is the
    /// ring's size).
    own: Mapping,
    peer: Mapping,
    events: [OwnedHandle; 4],
    /// The ring this side writes (the other it reads).
    send: Direction,
    /// Whether the `RingWriter` was handed out (there is one per region).
    writer_taken: AtomicBool,
    /// The server's handover to its client.
    delivery: Option<Delivery>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("send", &self.send)
            .field("send_ring", &self.own.ring)
            .field("recv_ring", &self.peer.ring)
            .finish()
    }
}

impl Region {
    /// The server's side, for an admitted client (process `pid`, as the pipe reports it;
    /// nothing comes with a hello here): both sections (rings of `layout.ring_size()`
    /// bytes) and the events, duplicated into the client's process. Fails (and the
    /// connection stays on the pipe) if any of it cannot be made or given.
    pub(crate) fn create(
        layout: Layout,
        _hello: Vec<OwnedHandle>,
        pid: Option<u32>,
    ) -> io::Result<Region> {
        let process = client_process(pid)?;
        let header = layout.header();
        let own_section = create_section(layout.region_len())?;
        let own = Mapping::new(&own_section, true, "our own")?;
        let client_section = create_section(layout.region_len())?;
        {
            let theirs = Mapping::new(&client_section, true, "the client's")?;
            // SAFETY: the header fits the live, writable header page of a view nobody else
            // has yet.
            unsafe {
                std::ptr::copy_nonoverlapping(header.as_ptr(), theirs.base.as_ptr(), header.len());
                std::ptr::copy_nonoverlapping(header.as_ptr(), own.base.as_ptr(), header.len());
            }
        }
        let peer = Mapping::new(&client_section, false, "the client's")?;
        let events = [event()?, event()?, event()?, event()?];
        let mut delivery = Delivery {
            process,
            values: Vec::with_capacity(HANDED_OVER),
            delivered: AtomicBool::new(false),
        };
        delivery.give(&own_section, FILE_MAP_READ)?;
        delivery.give(&client_section, FILE_MAP_READ | FILE_MAP_WRITE)?;
        for e in &events {
            delivery.give(e, SYNCHRONIZATION_SYNCHRONIZE | EVENT_MODIFY_STATE)?;
        }
        // The views keep the sections alive; our handles go (the client's section can no
        // longer be mapped writable by us).
        drop((own_section, client_section));
        Ok(Region {
            own,
            peer,
            events,
            send: Direction::ServerToClient,
            writer_taken: AtomicBool::new(false),
            delivery: Some(delivery),
        })
    }

    /// The client's side: `handles` as read after the reply (the server's section, ours,
    /// then the events). `_own` is only the request.
    pub(crate) fn open(_own: Memory, handles: Vec<OwnedHandle>) -> io::Result<Region> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let Ok(handles) = <[OwnedHandle; HANDED_OVER]>::try_from(handles) else {
            return Err(bad(format!(
                "the server's shared-memory handover carried the wrong number of handles (expected {HANDED_OVER})"
            )));
        };
        let [server_section, own_section, e0, e1, e2, e3] = handles;
        let peer = Mapping::new(&server_section, false, "the server's")?;
        peer.check_header()?;
        let own = Mapping::new(&own_section, true, "our own")?;
        own.check_header()?;
        Ok(Region {
            own,
            peer,
            events: [e0, e1, e2, e3],
            send: Direction::ClientToServer,
            writer_taken: AtomicBool::new(false),
            delivery: None,
        })
    }

    /// The size of ring `d` (checked).
    pub(crate) fn ring_size(&self, d: Direction) -> usize {
        if d == self.send {
            self.own.ring
        } else {
            self.peer.ring
        }
    }

    /// `Handshake::write_handover` of either stream (`write`: its write on a fresh pipe):
    /// the reply with the handle values of this region in the client's process behind it
    /// (u64 LE), in one write. Once that went out whole the client owns those handles;
    /// otherwise (0 is returned, and the connection is dropped) they are recalled from the
    /// client's process when the region goes.
    pub(crate) fn write_handover(
        &self,
        reply: &[u8],
        write: impl FnOnce(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let Some(d) = &self.delivery else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let mut bytes = reply.to_vec();
        bytes.extend(d.values.iter().flat_map(|v| v.to_le_bytes()));
        if write(&bytes)? < bytes.len() {
            return Ok(0);
        }
        d.delivered.store(true, Ordering::SeqCst);
        Ok(reply.len())
    }

    /// The view that word `w` of ring `d` lives in: that of the side that writes it.
    fn holder(&self, d: Direction, w: Word) -> &Mapping {
        if (d == self.send) == w.written_by_producer() {
            &self.own
        } else {
            &self.peer
        }
    }

    /// A ring's 64-bit shared word ([`Word::Head`] or [`Word::Tail`]).
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
    /// into `dst` (private memory), in two copies where the span wraps. The caller checked,
    /// from indices it validated, that they are there.
    pub(crate) fn copy_out(&self, pos: u64, dst: &mut [MaybeUninit<u8>]) {
        let mut done = 0;
        for (start, len) in self.peer.spans(pos, dst.len()) {
            if len == 0 {
                continue;
            }
            let src = self.peer.ring_ptr(start);
            // SAFETY: `spans` keeps each span inside the ring of the live view; `dst` is
            // ours. The peer may change these bytes concurrently only by breaking the
            // protocol; we copy them once, into private memory, and only the copy is looked
            // at.
            unsafe {
                std::ptr::copy_nonoverlapping(src, dst[done..].as_mut_ptr().cast::<u8>(), len);
            }
            done += len;
        }
    }

    /// The one writer of this side's ring (for the send half); `None` if it was taken.
    pub(crate) fn writer(self: &std::sync::Arc<Self>) -> Option<RingWriter> {
        if self.writer_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(RingWriter {
            region: self.clone(),
            scratch: Vec::new(),
            lent: None,
        })
    }

    /// Wakes whoever waits on `e` (an auto-reset event keeps one signal for the next wait,
    /// which then returns at once and checks again).
    pub(crate) fn signal(&self, e: Event) {
        // SAFETY: the event is open for as long as `self` lives.
        unsafe { SetEvent(self.events[e.index()].as_raw_handle()) };
    }

    /// Waits until `e` is signalled, the pipe ends (the peer is gone: a pipe has no half
    /// close, so a consumer and a producer watch the same thing) or the connection is shut
    /// down, at most `timeout`. Bytes arriving on the pipe are `InvalidData`.
    pub(crate) fn wait_on(
        &self,
        e: Event,
        stream: &super::Stream,
        timeout: Option<Duration>,
    ) -> io::Result<Woken> {
        let end = match stream.end_watch()? {
            Watched::Pending(event) => event,
            Watched::Ended => return Ok(Woken::Socket),
            Watched::Byte => return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer wrote on the pipe of a shared-memory connection, which carries no bytes",
            )),
        };
        let handles = [
            self.events[e.index()].as_raw_handle(),
            end,
            stream.cancel_event(),
        ];
        // SAFETY: the three are open events for the call (the region's, and the stream's,
        // which the caller borrows).
        let woke = unsafe { WaitForMultipleObjects(3, handles.as_ptr(), 0, timeout_ms(timeout)) };
        match woke {
            WAIT_OBJECT_0 => Ok(Woken::Event),
            WAIT_TIMEOUT => Ok(Woken::TimedOut),
            w if w == WAIT_OBJECT_0 + 1 || w == WAIT_OBJECT_0 + 2 => Ok(Woken::Socket),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// The one writer of a side's ring: only it writes the ring's bytes, and only through
/// `&mut self`; the peer maps them read-only.
pub(crate) struct RingWriter {
    region: std::sync::Arc<Region>,
    /// Where a lent span that would cross the ring's end is written first.
    scratch: Vec<u8>,
    /// The span lent in the scratch buffer, to copy in by `finish_lend`.
    lent: Option<(u64, usize)>,
}

impl std::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWriter").finish_non_exhaustive()
    }
}

impl RingWriter {
    /// Copies `src` into the ring at stream position `pos` (two copies where it wraps). The
    /// caller checked that there is room (from the consumer's validated index).
    pub(crate) fn copy_in(&mut self, pos: u64, src: &[u8]) {
        let map = &self.region.own;
        let mut done = 0;
        for (start, len) in map.spans(pos, src.len()) {
            if len == 0 {
                continue;
            }
            // SAFETY: `spans` keeps the span inside the ring of the live, writable view,
            // which only this writer writes (the peer maps it read-only).
            unsafe {
                std::ptr::copy_nonoverlapping(src[done..].as_ptr(), map.ring_ptr(start), len);
            }
            done += len;
        }
    }

    /// Room for the ring's `len` bytes at stream position `pos`, as one slice, for the
    /// producer to write in place: the ring itself, or, where the span would cross the
    /// ring's end, a scratch buffer that `finish_lend` copies in. The caller checked that
    /// there is room, and calls `finish_lend` before it publishes the bytes.
    pub(crate) fn lend(&mut self, pos: u64, len: usize) -> &mut [u8] {
        let map = &self.region.own;
        let [(start, first), (_, rest)] = map.spans(pos, len);
        if rest == 0 && first > 0 {
            self.lent = None;
            // SAFETY: `spans` checked that the span lies inside the ring of the live,
            // writable view, which the borrowed `region` keeps alive. Nothing else in this
            // process accesses these bytes while the slice lives (there is one writer,
            // borrowed mutably), and the peer can only read them.
            return unsafe { std::slice::from_raw_parts_mut(map.ring_ptr(start), len) };
        }
        self.lent = Some((pos, len));
        self.scratch.clear();
        self.scratch.resize(len, 0);
        &mut self.scratch
    }

    /// Copies a span lent in the scratch buffer into the ring (nothing if it was lent in
    /// place).
    pub(crate) fn finish_lend(&mut self) {
        if let Some((pos, len)) = self.lent.take() {
            let scratch = std::mem::take(&mut self.scratch);
            self.copy_in(pos, &scratch[..len]);
            self.scratch = scratch;
        }
    }
}

/// What a thread-pool wait tells the tasks waiting on it: that its object was signalled,
/// and their wakers (two slots: a connection's receive and send halves).
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub(super) struct Signal {
    fired: AtomicBool,
    wakers: std::sync::Mutex<[Option<std::task::Waker>; 2]>,
}

#[cfg(feature = "tokio")]
impl Signal {
    /// Whether the object was signalled since the last call that returned `true`.
    pub(super) fn take_fired(&self) -> bool {
        self.fired.swap(false, Ordering::SeqCst)
    }

    /// Whether the object was signalled (for an object that stays signalled).
    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Wakes `cx`'s task (in `slot`) at the next signal. Check `fired` after this: a signal
    /// between an earlier check and this call would otherwise be missed.
    pub(super) fn set_waker(&self, slot: usize, cx: &std::task::Context<'_>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        match &wakers[slot] {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => wakers[slot] = Some(cx.waker().clone()),
        }
    }

    /// Sets the flag and wakes the stored tasks.
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }
}

/// A thread-pool wait (`RegisterWaitForSingleObject`) on an event: each time it is
/// signalled (an auto-reset event), or once (`once`), the pool's wait thread sets the
/// [`Signal`] and wakes its tasks. Unregistered when dropped, waiting for a callback in
/// progress, so the `Signal` it points to outlives every callback.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(super) struct PoolWait {
    wait: HANDLE,
    signal: std::sync::Arc<Signal>,
}

// SAFETY: `wait` is a registration handle, used only by `Drop` (from any thread); `signal`
// is shared through an `Arc`.
#[cfg(feature = "tokio")]
unsafe impl Send for PoolWait {}
// SAFETY: as for `Send`; nothing is mutated through `&PoolWait`.
#[cfg(feature = "tokio")]
unsafe impl Sync for PoolWait {}

#[cfg(feature = "tokio")]
unsafe extern "system" fn on_signal(context: *mut std::ffi::c_void, _timed_out: bool) {
    // SAFETY: `context` is the `Signal` of a live `PoolWait` (its `Arc` is kept until the
    // registration is gone: `Drop` unregisters and waits for this callback first).
    let signal = unsafe { &*(context as *const Signal) };
    signal.fire();
}

#[cfg(feature = "tokio")]
impl PoolWait {
    /// Registers a wait on `object`, which must stay open until this is dropped.
    pub(super) fn register(object: HANDLE, once: bool) -> io::Result<PoolWait> {
        use windows_sys::Win32::System::Threading::{
            RegisterWaitForSingleObject, INFINITE, WT_EXECUTEINWAITTHREAD, WT_EXECUTEONLYONCE,
        };
        let signal = std::sync::Arc::new(Signal::default());
        let mut wait: HANDLE = std::ptr::null_mut();
        let flags = WT_EXECUTEINWAITTHREAD | if once { WT_EXECUTEONLYONCE } else { 0 };
        // SAFETY: `object` is open (the caller keeps it so while this lives); the context
        // points to the `Signal`, which `signal` (kept in the `PoolWait`) keeps alive until
        // `Drop` has unregistered the wait; the callback only touches that.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                object,
                Some(on_signal),
                std::sync::Arc::as_ptr(&signal).cast(),
                INFINITE,
                flags,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PoolWait { wait, signal })
    }

    /// What the callback sets.
    pub(super) fn signal(&self) -> &Signal {
        &self.signal
    }
}

#[cfg(feature = "tokio")]
impl Drop for PoolWait {
    fn drop(&mut self) {
        use windows_sys::Win32::System::Threading::UnregisterWaitEx;
        // SAFETY: `wait` is our registration; INVALID_HANDLE_VALUE makes this return only
        // once no callback runs any more, so `signal` may go after it.
        unsafe { UnregisterWaitEx(self.wait, INVALID_HANDLE_VALUE) };
    }
}

/// An async wait on one event of a region and on the connection's pipe (its end, seen by
/// the stream's end watch), the twin of [`Region::wait_on`] on the runtime: the pool's
/// wait thread wakes the task when the event is signalled or the pipe ends.
#[cfg(feature = "tokio")]
#[derive(Debug)]
pub(crate) struct AsyncWait {
    // Unregistered before the event is closed (field order).
    pool: PoolWait,
    _event: OwnedHandle,
    which: Event,
}

#[cfg(feature = "tokio")]
impl AsyncWait {
    /// Registers a duplicate of `region`'s event for `which` with the thread pool.
    pub(crate) fn new(region: &Region, which: Event) -> io::Result<AsyncWait> {
        let event = region.events[which.index()].try_clone()?;
        let pool = PoolWait::register(event.as_raw_handle(), false)?;
        Ok(AsyncWait {
            pool,
            _event: event,
            which,
        })
    }

    /// Ready when the event was signalled (`Woken::Event`) or the pipe ended
    /// (`Woken::Socket`; a byte on it is `InvalidData`); pending otherwise (both wakers
    /// registered).
    pub(crate) fn poll_wait(
        &self,
        cx: &mut std::task::Context<'_>,
        stream: &crate::sys::aio::Stream,
    ) -> std::task::Poll<io::Result<Woken>> {
        use std::task::Poll;
        let signal = self.pool.signal();
        if signal.take_fired() {
            return Poll::Ready(Ok(Woken::Event));
        }
        signal.set_waker(0, cx);
        if signal.take_fired() {
            return Poll::Ready(Ok(Woken::Event));
        }
        let slot = match self.which {
            Event::Data(_) => 0,
            Event::Room(_) => 1,
        };
        match stream.poll_end_watch(cx, slot) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(Watched::Pending(_) | Watched::Ended)) => Poll::Ready(Ok(Woken::Socket)),
            Poll::Ready(Ok(Watched::Byte)) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the peer wrote on the pipe of a shared-memory connection, which carries no bytes",
            ))),
        }
    }
}

/// `read_handover` for the async client, without waiting: what the pipe has now.
#[cfg(feature = "tokio")]
pub(crate) fn try_read_handover(
    stream: &crate::sys::aio::Stream,
    buf: &mut [u8],
    _handles: &mut Vec<Descriptor>,
) -> io::Result<usize> {
    crate::sys::AsyncStream::try_read(stream, buf)
}
