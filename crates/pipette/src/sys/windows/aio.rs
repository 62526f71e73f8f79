//! The async (tokio) side of the Windows backend: the same pipes, on tokio's named pipes.
//!
//! Accepting is the blocking backend's: its listener (`listener.rs`) claims the name, keeps
//! pipe instances listening on its pump thread and reads each client's hello; an async
//! `accept` takes the ready connections from its queue (woken through a waker the pump
//! calls) and hands each pipe to tokio. So binding, the access DACL, the instance options and
//! shutting down are the same code for both APIs, and a shut-down listener has closed its
//! instances and released the name when `finish` returns. The client's `CreateFileW`
//! (`Stream::open`: identification-level impersonation only, no `FILE_APPEND_DATA`) and the
//! peer lookup (`stream::peer_of`) are shared too.
//!
//! # Cancel and closing
//!
//! There is no `shutdown(2)`. A stream keeps its tokio pipe in an `RwLock<Option<…>>` (read
//! locked only for the short synchronous calls) so that it can be closed while shared:
//! `cancel` cancels the pipe's I/O (`CancelIoEx`), drops the pipe (the handle closes once mio
//! has collected its operations, on the reactor) and wakes the tasks parked in
//! `poll_read_ready`/`poll_write_ready` through wakers kept here (a waker is stored, under
//! the read lock, only when tokio says `Pending`: no cost per message). From then on the
//! readiness calls return at once, reads see end-of-stream and writes fail.
//!
//! `shutdown_write` closes the same way but without cancelling: mio does not cancel a write
//! in flight when the pipe is dropped, so the peer reads every byte and then end-of-stream;
//! as in the blocking backend (pipes have no half-close) our own reads end too.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, IntoRawHandle, OwnedHandle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::task::{Context, Poll, Waker};

use ::tokio::net::windows::named_pipe::{NamedPipeClient, NamedPipeServer};
use bytes::BufMut;
use windows_sys::Win32::Foundation::{GetLastError, ERROR_IO_PENDING, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Storage::FileSystem::{ReadFile, WriteFile};
use windows_sys::Win32::System::Threading::{WaitForSingleObject, INFINITE};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::stream::{is_end_of_pipe, peer_of};
use super::watch::{WatchIo, WatchState};
use super::{os_error, Event};
use crate::error::Result;
use crate::proto::HelloReader;
use crate::sys::{Cancel, ConnectOptions, ListenOptions};
use crate::{Name, PeerIdentity};

/// How long `write_now` waits for its write to finish (it fits in the empty pipe buffer of
/// a fresh connection, so it finishes at once in practice).
const WRITE_NOW_WAIT_MS: u32 = 1000;

#[derive(Debug)]
enum Pipe {
    Server(NamedPipeServer),
    Client(NamedPipeClient),
}

/// Calls the same method on either kind of pipe.
macro_rules! on_pipe {
    ($pipe:expr, $p:ident => $e:expr) => {
        match AsRef::<Pipe>::as_ref($pipe) {
            Pipe::Server($p) => $e,
            Pipe::Client($p) => $e,
        }
    };
}

impl AsRef<Pipe> for Pipe {
    fn as_ref(&self) -> &Pipe {
        self
    }
}

impl Pipe {
    fn raw(&self) -> HANDLE {
        on_pipe!(self, p => p.as_raw_handle())
    }
}

const READ: usize = 0;
const WRITE: usize = 1;

/// A connected pipe end registered with tokio's reactor.
#[derive(Debug)]
pub(crate) struct Stream {
    /// `None` once closed (`cancel` or `shutdown_write`), for good.
    pipe: RwLock<Option<Arc<Pipe>>>,
    server: bool,
    write_shut: AtomicBool,
    /// The tasks parked in `poll_read_ready` / `poll_write_ready` (one each, like tokio).
    wakers: Mutex<[Option<Waker>; 2]>,
    /// The one-byte read a shared-memory connection keeps pending on the pipe to see its
    /// end (`poll_end_watch`).
    watch: Mutex<Watch>,
    /// What the watch saw, for `read_now`: `SEEN_NOTHING`, `SEEN_END` or `SEEN_BYTE`.
    seen: AtomicU8,
    /// The peer's process, opened with `PROCESS_DUP_HANDLE` once this connection takes
    /// handles with its messages (`accept_descriptors`; see `handles.rs`).
    peer_process: Option<OwnedHandle>,
}

const SEEN_NOTHING: u8 = 0;
const SEEN_END: u8 = 1;
const SEEN_BYTE: u8 = 2;

/// The end watch of a shared-memory connection: a one-byte overlapped read of our own on
/// the pipe (its event's low bit set, so that its completion does not go to mio's port),
/// with a thread-pool wait on its event that wakes the waiting tasks. Its `OVERLAPPED` and
/// buffer live in a box that is freed only after the read has finished (`stop_watch`, which
/// `close` and `Drop` call, waits for that).
#[derive(Debug, Default)]
struct Watch {
    state: WatchState,
    // Unregistered before the event in `io` is closed (field order).
    pool: Option<super::shm::PoolWait>,
    io: Option<Box<WatchIo>>,
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the connection was shut down")
}

impl Stream {
    fn new(pipe: Pipe) -> Stream {
        Stream {
            server: matches!(pipe, Pipe::Server(_)),
            pipe: RwLock::new(Some(Arc::new(pipe))),
            write_shut: AtomicBool::new(false),
            wakers: Mutex::new([None, None]),
            watch: Mutex::new(Watch::default()),
            seen: AtomicU8::new(SEEN_NOTHING),
            peer_process: None,
        }
    }

    fn lock_watch(&self) -> MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The end watch of a shared-memory connection, whose pipe carries no bytes: ready with
    /// `Ended` once the pipe has ended (the peer is gone or closed it, or our own close) and
    /// `Byte` if, against the protocol, a byte arrived; pending otherwise, with `cx`'s task
    /// (in `slot`: 0 the receive half, 1 the send half) woken when that changes. Started on
    /// first use.
    pub(crate) fn poll_end_watch(
        &self,
        cx: &mut Context<'_>,
        slot: usize,
    ) -> Poll<io::Result<super::watch::Watched>> {
        let mut watch = self.lock_watch();
        loop {
            match watch.state {
                state @ (WatchState::Ended | WatchState::Byte) => {
                    return Poll::Ready(Ok(state.finished()))
                }
                WatchState::Pending => {
                    let pool = watch.pool.as_ref().expect("a pending watch is registered");
                    pool.signal().set_waker(slot, cx);
                    if !pool.signal().fired() {
                        return Poll::Pending;
                    }
                    // Finished (its event was set): its status and byte count are in the
                    // OVERLAPPED, which the kernel no longer touches.
                    let io = watch.io.as_ref().expect("a pending watch has its buffers");
                    let outcome = io.outcome();
                    self.watch_finished(&mut watch, outcome);
                }
                WatchState::Idle => {
                    let guard = self.pipe();
                    let Some(pipe) = guard.as_ref() else {
                        self.watch_finished(&mut watch, WatchState::Ended);
                        continue;
                    };
                    if watch.io.is_none() {
                        watch.io = Some(WatchIo::new()?);
                    }
                    if watch.pool.is_none() {
                        let event = watch.io.as_ref().expect("made above").event.raw();
                        watch.pool = Some(super::shm::PoolWait::register(event, true)?);
                    }
                    let io = watch.io.as_mut().expect("made above");
                    io.event.reset();
                    io.ov = OVERLAPPED {
                        hEvent: (io.event.raw() as usize | 1) as HANDLE,
                        ..Default::default()
                    };
                    let raw = pipe.raw();
                    // SAFETY: one ReadFile on the open pipe (the read lock keeps it open)
                    // into the boxed buffer with the boxed OVERLAPPED, which stay where they
                    // are until the read has finished: `stop_watch` waits for it before the
                    // box can go. The event's low bit keeps the completion off mio's port.
                    let ok = unsafe {
                        ReadFile(
                            raw,
                            io.buf.as_mut_ptr(),
                            1,
                            std::ptr::null_mut(),
                            &mut io.ov,
                        )
                    };
                    // SAFETY: no preconditions.
                    if ok == 0 && unsafe { GetLastError() } != ERROR_IO_PENDING {
                        // Nothing was queued: the pipe has ended (or cannot be read).
                        self.watch_finished(&mut watch, WatchState::Ended);
                        continue;
                    }
                    // Queued, or finished at once: either way its event is (or will be) set
                    // when it has finished, which the thread-pool wait reports.
                    watch.state = WatchState::Pending;
                }
            }
        }
    }

    /// Ends a pending end-watch read and waits until the kernel is done with its buffers
    /// (bounded: an aborted read finishes at once). The thread-pool wait then fires and
    /// wakes the waiting tasks, which see `Ended`.
    fn stop_watch(&self) {
        let mut watch = self.lock_watch();
        if watch.state != WatchState::Pending {
            return;
        }
        let io = watch.io.as_ref().expect("a pending watch has its buffers");
        if let Some(pipe) = self.pipe().as_ref() {
            // SAFETY: `io.ov` belongs to our read on this open pipe; it fails harmlessly if
            // the read has finished already.
            unsafe { CancelIoEx(pipe.raw(), &io.ov) };
        }
        // SAFETY: the event is open; it is set when the read has finished, and the read
        // finishes: it was cancelled just above (or the pipe was closed, which ends it).
        unsafe { WaitForSingleObject(io.event.raw(), INFINITE) };
        let outcome = io.outcome();
        self.watch_finished(&mut watch, outcome);
    }

    /// The watch finished with `outcome` (`Ended` or `Byte`), which `read_now` sees too.
    fn watch_finished(&self, watch: &mut Watch, outcome: WatchState) {
        watch.state = outcome;
        let seen = if outcome == WatchState::Byte {
            SEEN_BYTE
        } else {
            SEEN_END
        };
        self.seen.store(seen, Ordering::SeqCst);
    }

    /// The peer's process, to take the handles of its messages from (see `handles.rs`);
    /// `None` unless this connection takes handles.
    pub(crate) fn peer_process(&self) -> Option<BorrowedHandle<'_>> {
        self.peer_process.as_ref().map(|p| p.as_handle())
    }

    fn pipe(&self) -> RwLockReadGuard<'_, Option<Arc<Pipe>>> {
        // Nothing panics while the lock is held.
        self.pipe.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_wakers(&self) -> MutexGuard<'_, [Option<Waker>; 2]> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Readiness of one direction; ready at once when closed. The waker is stored while the
    /// read lock is held, so a `close` (which takes the write lock first) either happens
    /// before (we see `None`) or wakes it.
    fn poll_ready(&self, cx: &mut Context<'_>, dir: usize) -> Poll<io::Result<()>> {
        let guard = self.pipe();
        let Some(pipe) = guard.as_ref() else {
            return Poll::Ready(Ok(()));
        };
        let r = if dir == READ {
            on_pipe!(pipe, p => p.poll_read_ready(cx))
        } else {
            on_pipe!(pipe, p => p.poll_write_ready(cx))
        };
        if r.is_pending() {
            let mut wakers = self.lock_wakers();
            match &wakers[dir] {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => wakers[dir] = Some(cx.waker().clone()),
            }
        }
        r
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(cx, READ)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(cx, WRITE)
    }

    /// A read result as pipette expects it: the end of the pipe is end-of-stream.
    fn read_result(r: io::Result<usize>) -> io::Result<usize> {
        match r {
            Err(e) if is_end_of_pipe(&e) => Ok(0),
            r => r,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.pipe().as_ref() {
            None => Ok(0),
            Some(pipe) => Self::read_result(on_pipe!(pipe, p => p.try_read(buf))),
        }
    }

    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match self.pipe().as_ref() {
            None => Ok(0),
            Some(pipe) => Self::read_result(on_pipe!(pipe, p => p.try_read_buf(buf))),
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.pipe().as_ref() {
            None if self.write_shut.load(Ordering::SeqCst) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the sending direction was shut down",
            )),
            None => Err(closed_error()),
            Some(pipe) => match on_pipe!(pipe, p => p.try_write_vectored(bufs)) {
                Err(e) if is_end_of_pipe(&e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
                r => r,
            },
        }
    }

    /// Reads what tokio has right now. Unlike on Unix this cannot bypass tokio's readiness
    /// (mio keeps its own read in flight, into its own buffer), so on a fresh pipe it may
    /// say `WouldBlock` although the bytes have arrived; the caller then waits for
    /// readiness, which is correct, only slower.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.try_read(buf) {
            // A shared-memory connection's end watch may have seen the end (or a byte)
            // before mio did.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match self.seen.load(Ordering::SeqCst) {
                    SEEN_END => Ok(0),
                    SEEN_BYTE => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer wrote on the pipe of a shared-memory connection, which carries no bytes",
                    )),
                    _ => Err(e),
                }
            }
            r => r,
        }
    }

    /// Closes the pipe for good (see the module comment); `abort`: cancel its I/O first.
    fn close(&self, abort: bool) {
        // Before the pipe's lock (the watch's lock is taken first everywhere).
        self.stop_watch();
        let pipe = {
            let mut guard = self.pipe.write().unwrap_or_else(|e| e.into_inner());
            if abort {
                if let Some(p) = guard.as_ref() {
                    // SAFETY: the handle is open (we hold the lock that keeps it so); a
                    // null OVERLAPPED cancels every operation on it, which mio collects
                    // (as ERROR_OPERATION_ABORTED) like its own cancellations.
                    unsafe { CancelIoEx(p.raw(), std::ptr::null()) };
                }
            }
            guard.take()
        };
        // After taking the write lock: see `poll_ready`.
        let wakers = std::mem::take(&mut *self.lock_wakers());
        drop(pipe);
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// Pipes have no half-close: closes our end as the blocking backend does (the peer
    /// reads everything we wrote, then end-of-stream; our later reads see end-of-stream and
    /// writes fail with `BrokenPipe`). Writes still in flight are not cancelled.
    fn shutdown_write(&self) -> io::Result<()> {
        self.write_shut.store(true, Ordering::SeqCst);
        self.close(false);
        Ok(())
    }

    /// Waits until the pipe is readable; unlike `poll_read_ready`, any number of tasks may
    /// wait at once (the two halves of a connection may both wait for the reply). A cancel
    /// aborts the pipe's read, which wakes every waiter.
    async fn readable(&self) -> io::Result<()> {
        let pipe = match self.pipe().as_ref() {
            None => return Ok(()),
            Some(p) => p.clone(),
        };
        on_pipe!(&pipe, p => p.readable().await)
    }
}

/// The contract (`sys/mod.rs`), by the inherent methods above.
impl crate::sys::AsyncStream for Stream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_read_ready(self, cx)
    }

    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        Stream::readable(self)
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::try_read(self, buf)
    }

    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        Stream::try_read_buf(self, buf)
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read_now(self, buf)
    }

    /// mio reads into its own buffer first: the same as `try_read_buf`.
    fn read_buf_now<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        Stream::try_read_buf(self, buf)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Stream::poll_write_ready(self, cx)
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Stream::try_write_vectored(self, bufs)
    }

    /// mio's pipe has no write past its own buffer: the same as `try_write_vectored`.
    fn write2_now(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        Stream::try_write_vectored(self, &[IoSlice::new(a), IoSlice::new(b)])
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Stream::shutdown_write(self)
    }
}

impl crate::sys::Handshake for Stream {
    fn peer(&self) -> io::Result<PeerIdentity> {
        match self.pipe().as_ref() {
            None => Err(closed_error()),
            Some(pipe) => peer_of(pipe.raw(), self.server),
        }
    }

    /// Handles with messages (`FEATURE_DESCRIPTORS`): only when the peer's process (pid from
    /// the pipe) can be opened with `PROCESS_DUP_HANDLE`, which is kept to take them from.
    fn accept_descriptors(&mut self) -> bool {
        let process = match self.pipe().as_ref() {
            Some(pipe) => super::handles::open_peer(pipe.raw(), self.server),
            None => return false,
        };
        self.peer_process = process;
        self.peer_process.is_some()
    }

    fn peer_groups(&self) -> Option<Vec<u32>> {
        None
    }

    /// Writes `buf` right now, bypassing tokio, for the handshake on a fresh connection
    /// (tokio's `try_write` says `WouldBlock` until the reactor has seen the pipe's first
    /// event). A direct overlapped `WriteFile` whose event handle has its low bit set, which
    /// tells Windows not to post a completion to the port (mio's port would take it for one
    /// of its own operations), waited for here. No mio write is in flight on a fresh
    /// connection, so the bytes are not reordered with later writes, and 16 bytes fit in the
    /// empty pipe buffer at once; should it not finish within `WRITE_NOW_WAIT_MS` it is
    /// cancelled (and waited for) and this fails with `WouldBlock`.
    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        let guard = self.pipe();
        let Some(pipe) = guard.as_ref() else {
            return Err(closed_error());
        };
        let h = pipe.raw();
        let event = Event::new()?;
        let mut ov = OVERLAPPED {
            hEvent: (event.raw() as usize | 1) as HANDLE,
            ..Default::default()
        };
        let len = buf.len().min(1 << 30) as u32;
        // SAFETY: `h` is an open pipe (the read lock keeps it open); `buf` is valid for reads
        // of `len` bytes and `ov` is ours, and neither is freed before the operation has
        // finished: we wait for it below in every case.
        let ok = unsafe { WriteFile(h, buf.as_ptr(), len, std::ptr::null_mut(), &mut ov) };
        if ok == 0 {
            // SAFETY: no preconditions.
            let err = unsafe { GetLastError() };
            if err != ERROR_IO_PENDING {
                // Nothing was queued.
                let e = os_error(err);
                return Err(if is_end_of_pipe(&e) {
                    io::Error::new(io::ErrorKind::BrokenPipe, e)
                } else {
                    e
                });
            }
        }
        let mut timed_out = false;
        // SAFETY: the event is valid for as long as `event` lives.
        if unsafe { WaitForSingleObject(event.raw(), WRITE_NOW_WAIT_MS) } != WAIT_OBJECT_0 {
            timed_out = true;
            // SAFETY: `ov` is the OVERLAPPED of our write on `h`; then wait until it has
            // ended (completed or aborted): the event is set when it does.
            unsafe {
                CancelIoEx(h, &ov);
                WaitForSingleObject(event.raw(), INFINITE);
            }
        }
        let mut n = 0u32;
        // SAFETY: the operation has finished (its event is set), so this only reads its
        // result (bWait = FALSE).
        if unsafe { GetOverlappedResult(h, &ov, &mut n, 0) } != 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        Err(if timed_out {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the handshake write did not finish",
            )
        } else if is_end_of_pipe(&e) {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        } else {
            e
        })
    }

    /// The reply with the handle values of the shared memory behind it (duplicated into
    /// this admitted client's process already), in one write of a fresh pipe's empty buffer.
    fn write_handover(&self, reply: &[u8], region: &crate::sys::shm::Region) -> io::Result<usize> {
        region.write_handover(reply, |bytes| self.write_now(bytes))
    }

    /// The hello of a client offering shared memory: nothing goes with it here (the server
    /// makes both rings and gives them to this process).
    fn write_with_memory(
        &self,
        hello: &[u8],
        _memory: &crate::sys::shm::Memory,
    ) -> io::Result<usize> {
        self.write_now(hello)
    }
}

impl Drop for Stream {
    /// A pending end-watch read must finish before its buffers go.
    fn drop(&mut self) {
        self.stop_watch();
    }
}

impl Cancel for Stream {
    /// Cancels the pipe's I/O, closes it and wakes every parked task, for good.
    fn cancel(&self) {
        self.close(true);
    }
}

/// Connects without blocking the runtime (opening a pipe does not wait). Errors as for the
/// blocking `Stream::connect`: `NotFound`, `WouldBlock` (every instance busy),
/// `PermissionDenied`; `Unsupported` for a message pipe.
pub(crate) async fn connect(path: &Path, opts: &ConnectOptions) -> io::Result<Stream> {
    if opts.message_pipe {
        return Err(message_pipe_unsupported());
    }
    let handle = super::stream::Stream::open(path)?;
    // SAFETY: `handle` is a freshly opened pipe client end, opened with
    // FILE_FLAG_OVERLAPPED as tokio requires, whose ownership passes to tokio here.
    let client = unsafe { NamedPipeClient::from_raw_handle(handle.into_raw_handle())? };
    Ok(Stream::new(Pipe::Client(client)))
}

/// Message pipes (`message_pipe`) are blocking-only for now: the async side refuses them
/// rather than making byte pipes silently.
fn message_pipe_unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "message pipes (`message_pipe(true)`) are not supported by pipette::tokio yet: \
         use the blocking API to talk to a message-mode peer",
    )
}

/// A bound pipe name accepting for tokio: the blocking backend's listener (its pump thread
/// keeps instances listening and reads each client's hello), whose ready connections an
/// async `accept` takes. Cancel safe: a connection stays in the listener's queue until an
/// `accept` returns it. Shutting it down is the blocking listener's: synchronous, so the
/// name is free once `finish` returns.
#[derive(Debug)]
pub(crate) struct Listener {
    inner: super::listener::Listener,
}

impl Listener {
    /// Claims the name and starts listening, as the blocking listener does. Must be called
    /// within a tokio runtime.
    pub(crate) fn bind(name: &Name, opts: &ListenOptions) -> Result<Listener> {
        if opts.message_pipe {
            return Err(crate::Error::InvalidConfig(
                message_pipe_unsupported().to_string(),
            ));
        }
        Ok(Listener {
            inner: super::listener::Listener::bind(name, opts)?,
        })
    }

    /// The next connection whose hello is in (or whose first bytes cannot be one), with
    /// what arrived of it. Cancel safe.
    pub(crate) async fn accept(&self) -> io::Result<(Stream, HelloReader)> {
        let (handle, hello) = poll_fn(|cx| self.inner.poll_accept_raw(cx)).await?;
        // SAFETY: `handle` is a connected server end of a pipe created with
        // FILE_FLAG_OVERLAPPED, with no operation pending on it (the pump collected its
        // reads), whose ownership passes to tokio here.
        let server = unsafe { NamedPipeServer::from_raw_handle(handle.into_raw_handle())? };
        Ok((Stream::new(Pipe::Server(server)), hello))
    }
}

impl Cancel for Listener {
    fn cancel(&self) {
        self.inner.cancel();
    }

    fn finish(&self) {
        self.inner.finish();
    }
}
