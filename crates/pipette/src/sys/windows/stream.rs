//! One connected end of a named pipe, used as a byte stream with overlapped I/O (and, on a
//! message pipe, message by message for raw mode's `read_message`).

use std::io;
use std::mem::MaybeUninit;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_BROKEN_PIPE, ERROR_FILE_NOT_FOUND, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING,
    ERROR_NO_DATA, ERROR_PIPE_BUSY, ERROR_PIPE_NOT_CONNECTED, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, ReadFile, WriteFile, FILE_FLAG_OVERLAPPED, FILE_GENERIC_READ, FILE_WRITE_DATA,
    OPEN_EXISTING, SECURITY_IDENTIFICATION, SECURITY_SQOS_PRESENT,
};
use windows_sys::Win32::System::Pipes::{
    GetNamedPipeClientProcessId, GetNamedPipeServerProcessId, PeekNamedPipe,
    SetNamedPipeHandleState, PIPE_READMODE_MESSAGE,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::overlapped::{run_overlapped, Outcome};
use super::watch::{WatchIo, WatchState, Watched};
use super::{os_error, timeout_ms, wide, Event};
use crate::sys::{Cancel, ConnectOptions, SysStream};
use crate::PeerIdentity;

/// What a client asks for when it opens a pipe: read and write data, but not
/// `FILE_APPEND_DATA`, which on a pipe means `FILE_CREATE_PIPE_INSTANCE` and which the
/// access policy grants only to the server's own user (see `access.rs`).
pub(super) const CLIENT_ACCESS: u32 = FILE_GENERIC_READ | FILE_WRITE_DATA;

/// Largest single `ReadFile`/`WriteFile` (the length argument is a `u32`).
const MAX_IO: usize = 1 << 30;

/// Header and payload up to this size are copied into one buffer so that `write2` is one
/// `WriteFile` (pipes have no gather write); larger payloads go out in a second call.
const COALESCE: usize = 64 * 1024;

/// Longest `cancel` waits for woken operations to let go of the handle.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// `timeout_ms` value meaning "no timeout".
const NO_TIMEOUT: u32 = u32::MAX;

/// A connected pipe end (server or client side).
///
/// # The overlapped-I/O invariant
///
/// Each direction has its own event, behind a mutex that is held for the whole of an
/// operation, so one `OVERLAPPED` and one event are never used by two operations at once.
/// The `OVERLAPPED` lives on the stack of `run_overlapped` and the buffer is borrowed by the
/// caller; `run_overlapped` never returns before the kernel has finished with both (a timed
/// out or cancelled operation is cancelled with `CancelIoEx` and then waited for with
/// `GetOverlappedResult(.., TRUE)`). So neither can be freed or reused while the kernel may
/// still write to it.
///
/// # Cancel and closing
///
/// `cancel` signals a manual-reset event that every wait includes, so every blocked
/// operation returns promptly, and later ones fail at once. The handle itself is closed as
/// soon as no operation uses it any more (by `cancel` or by the last operation to finish),
/// which is what makes the peer see the end of the connection and what frees the pipe name.
/// A use count, not a lock held during I/O, guards this, so closing can never race with a
/// system call on the same (possibly reused) handle value.
#[derive(Debug)]
pub(crate) struct Stream {
    slot: Mutex<Slot>,
    /// Signalled when the last operation stops using the handle.
    idle: Condvar,
    cancel: Event,
    cancelled: AtomicBool,
    /// This is the server end (`GetNamedPipeClientProcessId` finds the peer).
    server: bool,
    /// The handle reads in message mode: `read_message` returns whole messages.
    message: bool,
    read: Mutex<Event>,
    write: Mutex<WriteState>,
    read_timeout: AtomicU32,
    write_timeout: AtomicU32,
    write_shut: AtomicBool,
    /// The one-byte read a shared-memory connection keeps pending to see the pipe end
    /// (`end_watch`).
    watch: Mutex<Watch>,
    /// The peer's process, opened with `PROCESS_DUP_HANDLE` once this connection takes
    /// handles with its messages (`accept_descriptors`; see `handles.rs`).
    peer_process: Option<OwnedHandle>,
}

/// The state of the end watch: its `OVERLAPPED` and one-byte buffer live in a box, which
/// the kernel may write until the read has finished, so the box is freed only after
/// `stop_watch` (called by `cancel` and `Drop`) has waited for that.
#[derive(Debug)]
struct Watch {
    io: Option<Box<WatchIo>>,
    state: WatchState,
}

#[derive(Debug)]
struct Slot {
    handle: Option<OwnedHandle>,
    users: usize,
}

#[derive(Debug)]
struct WriteState {
    event: Event,
    /// Reused buffer for coalescing header and payload.
    scratch: Vec<u8>,
}

/// Keeps the handle open while an operation uses it.
struct InUse<'a> {
    stream: &'a Stream,
    raw: HANDLE,
}

impl Drop for InUse<'_> {
    /// The last user of a cancelled stream closes the handle, **under the lock**: whoever
    /// then sees no users also sees no handle, so `finish` cannot return while the pipe
    /// instance still exists (and a new server's bind would find the name busy).
    fn drop(&mut self) {
        self.stream.release_use();
    }
}

pub(super) fn is_end_of_pipe(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(|c| c as u32),
        Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED)
    )
}

fn store_timeout(cell: &AtomicU32, d: Option<Duration>) {
    let ms = match d {
        None => NO_TIMEOUT,
        Some(d) => timeout_ms(Some(d)).min(NO_TIMEOUT - 1),
    };
    cell.store(ms, Ordering::Relaxed);
}

impl Stream {
    fn new(handle: OwnedHandle, server: bool, message: bool) -> io::Result<Stream> {
        Ok(Stream {
            slot: Mutex::new(Slot {
                handle: Some(handle),
                users: 0,
            }),
            idle: Condvar::new(),
            cancel: Event::new()?,
            cancelled: AtomicBool::new(false),
            server,
            message,
            read: Mutex::new(Event::new()?),
            write: Mutex::new(WriteState {
                event: Event::new()?,
                scratch: Vec::new(),
            }),
            read_timeout: AtomicU32::new(NO_TIMEOUT),
            write_timeout: AtomicU32::new(NO_TIMEOUT),
            write_shut: AtomicBool::new(false),
            watch: Mutex::new(Watch {
                io: None,
                state: WatchState::Idle,
            }),
            peer_process: None,
        })
    }

    /// The server end of a connected pipe instance, from the listener (`message`: the
    /// instance was created with `PIPE_READMODE_MESSAGE`).
    pub(super) fn from_server(handle: OwnedHandle, message: bool) -> io::Result<Stream> {
        Stream::new(handle, true, message)
    }

    /// Opens the client end of the pipe at `path` (overlapped, identification-level
    /// impersonation only).
    pub(super) fn open(path: &Path) -> io::Result<OwnedHandle> {
        let w = wide(path.as_os_str());
        // SAFETY: `w` is NUL-terminated and outlives the call; null security attributes and
        // template are allowed.
        let h = unsafe {
            CreateFileW(
                w.as_ptr(),
                CLIENT_ACCESS,
                0,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                std::ptr::null_mut(),
            )
        };
        if h == INVALID_HANDLE_VALUE {
            // SAFETY: no preconditions.
            let err = unsafe { GetLastError() };
            return Err(match err {
                ERROR_FILE_NOT_FOUND => io::Error::new(io::ErrorKind::NotFound, os_error(err)),
                // Alive, but every instance is taken: try again later.
                ERROR_PIPE_BUSY => io::Error::new(io::ErrorKind::WouldBlock, os_error(err)),
                _ => os_error(err),
            });
        }
        // SAFETY: `h` is a fresh, valid handle that nothing else owns.
        Ok(unsafe { OwnedHandle::from_raw_handle(h) })
    }

    /// Connects to the pipe at `path`.
    ///
    /// Errors: `NotFound` (no such pipe), `WouldBlock` (the server is alive but all its
    /// instances are taken), `PermissionDenied` (its security descriptor refuses us), others
    /// (with `message_pipe`, `InvalidInput` when the pipe is byte-type).
    fn connect(path: &Path, opts: &ConnectOptions) -> io::Result<Stream> {
        let handle = Stream::open(path)?;
        if opts.message_pipe {
            let mode = PIPE_READMODE_MESSAGE;
            // SAFETY: `handle` is an open pipe handle; `mode` is valid for reads for the
            // call; null collection count and timeout leave those settings alone.
            let ok = unsafe {
                SetNamedPipeHandleState(
                    handle.as_raw_handle(),
                    &mode,
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            if ok == 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "cannot read {} in message mode ({e}); is the server's pipe message-type? (connect without message_pipe for a byte pipe)",
                        path.display()
                    ),
                ));
            }
        }
        Stream::new(handle, false, opts.message_pipe)
    }

    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        // Nothing panics while the lock is held.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle, kept open until the guard is dropped; `None` once cancelled.
    fn in_use(&self) -> Option<InUse<'_>> {
        let raw = self.acquire_use()?;
        Some(InUse { stream: self, raw })
    }

    /// One more user of the handle (released by `release_use`); `None` once cancelled.
    fn acquire_use(&self) -> Option<HANDLE> {
        let mut slot = self.lock_slot();
        if self.cancelled.load(Ordering::SeqCst) {
            return None;
        }
        let raw = slot.handle.as_ref()?.as_raw_handle();
        slot.users += 1;
        Some(raw)
    }

    /// One user less; the last user of a cancelled stream closes the handle, **under the
    /// lock**: whoever then sees no users also sees no handle, so `finish` cannot return
    /// while the pipe instance still exists (and a new server's bind would find the name
    /// busy).
    fn release_use(&self) {
        let mut slot = self.lock_slot();
        slot.users -= 1;
        if slot.users == 0 {
            if self.cancelled.load(Ordering::SeqCst) {
                drop(slot.handle.take());
            }
            self.idle.notify_all();
        }
    }

    /// The raw handle while a use is held (the watch's read holds one).
    fn raw_handle(&self) -> Option<HANDLE> {
        self.lock_slot().handle.as_ref().map(|h| h.as_raw_handle())
    }

    /// The connection's cancel event (set by `cancel`), for a shared-memory wait.
    pub(crate) fn cancel_event(&self) -> HANDLE {
        self.cancel.raw()
    }

    /// The end watch of a shared-memory connection, whose pipe carries no bytes: a one-byte
    /// read kept pending, whose event is set when the pipe ends (the peer is gone or closed
    /// it) or, against the protocol, a byte arrives. Started on first use; says what it saw
    /// once it finished.
    pub(crate) fn end_watch(&self) -> io::Result<Watched> {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        let Watch { io, state } = &mut *watch;
        match *state {
            WatchState::Ended | WatchState::Byte => return Ok(state.finished()),
            WatchState::Pending => {
                let io = io.as_mut().expect("a pending watch has its buffers");
                let raw = self
                    .raw_handle()
                    .expect("a pending read keeps the handle open");
                let mut n = 0u32;
                // SAFETY: `io.ov` belongs to the read pending on `raw` (which its use keeps
                // open); bWait = FALSE only looks.
                let ok = unsafe { GetOverlappedResult(raw, &io.ov, &mut n, 0) };
                // SAFETY: no preconditions.
                if ok == 0 && unsafe { GetLastError() } == ERROR_IO_INCOMPLETE {
                    return Ok(Watched::Pending(io.event.raw()));
                }
                // Finished: the kernel no longer touches the OVERLAPPED.
                *state = io.outcome();
                self.release_use();
                return Ok(state.finished());
            }
            WatchState::Idle => {}
        }
        let Some(raw) = self.acquire_use() else {
            *state = WatchState::Ended;
            return Ok(Watched::Ended);
        };
        if io.is_none() {
            match WatchIo::new() {
                Ok(new) => *io = Some(new),
                Err(e) => {
                    self.release_use();
                    return Err(e);
                }
            }
        }
        let io = io.as_mut().expect("made above");
        io.ov = OVERLAPPED {
            hEvent: io.event.raw(),
            ..Default::default()
        };
        io.event.reset();
        // SAFETY: one ReadFile on `raw` (kept open by the use taken above) into the boxed
        // buffer with the boxed OVERLAPPED; both stay where they are until the read has
        // finished: `stop_watch` waits for it before the box can be freed.
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
        let err = unsafe { GetLastError() };
        if ok == 0 && err == ERROR_IO_PENDING {
            *state = WatchState::Pending;
            return Ok(Watched::Pending(io.event.raw()));
        }
        // Finished at once (a byte was there, or the pipe had ended).
        *state = if ok != 0 {
            io.outcome()
        } else {
            WatchState::Ended
        };
        self.release_use();
        Ok(state.finished())
    }

    /// Ends a pending end-watch read and waits until the kernel is done with its buffers
    /// (bounded: an aborted read finishes at once), releasing its use of the handle.
    fn stop_watch(&self) {
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.state != WatchState::Pending {
            return;
        }
        let io = watch.io.as_ref().expect("a pending watch has its buffers");
        let raw = self
            .raw_handle()
            .expect("a pending read keeps the handle open");
        let mut n = 0u32;
        // SAFETY: `io.ov` belongs to the read pending on `raw`, which its use keeps open;
        // after CancelIoEx (which fails harmlessly if it already finished), bWait = TRUE
        // returns only once the read has finished: then the kernel no longer touches the box.
        unsafe {
            CancelIoEx(raw, &io.ov);
            GetOverlappedResult(raw, &io.ov, &mut n, 1);
        }
        watch.state = WatchState::Ended;
        drop(watch);
        self.release_use();
    }

    fn cancelled_error() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "the connection was shut down")
    }

    /// One overlapped `ReadFile` of at most `len` bytes into `ptr`: a byte-stream read
    /// (part of a message counts as data; the rest is read next).
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes until this returns.
    unsafe fn read_raw(&self, ptr: *mut u8, len: usize) -> io::Result<usize> {
        // SAFETY: passed on from the caller.
        unsafe { self.read_part(ptr, len) }.map(|(n, _)| n)
    }

    /// One overlapped `ReadFile` of at most `len` bytes into `ptr`; also says whether more
    /// of the same pipe message is waiting (`ERROR_MORE_DATA`, message mode only).
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes until this returns.
    unsafe fn read_part(&self, ptr: *mut u8, len: usize) -> io::Result<(usize, bool)> {
        let timeout = self.read_timeout.load(Ordering::Relaxed);
        // SAFETY: passed on from the caller.
        unsafe { self.read_part_within(ptr, len, timeout) }
    }

    /// One read of at most `buf.len()` bytes waiting at most `timeout` (whatever the read
    /// timeout is): the client's read of the server's shared-memory handover.
    pub(crate) fn read_within(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let ms = match timeout {
            None => NO_TIMEOUT,
            Some(d) => timeout_ms(Some(d)).min(NO_TIMEOUT - 1),
        };
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        unsafe { self.read_part_within(buf.as_mut_ptr(), buf.len(), ms) }.map(|(n, _)| n)
    }

    /// `read_part` with the timeout given (milliseconds, `NO_TIMEOUT` for none).
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes until this returns.
    unsafe fn read_part_within(
        &self,
        ptr: *mut u8,
        len: usize,
        timeout: u32,
    ) -> io::Result<(usize, bool)> {
        if len == 0 {
            return Ok((0, false));
        }
        let Some(h) = self.in_use() else {
            // Cancelled: reads see end-of-stream, for good.
            return Ok((0, false));
        };
        let event = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let len = len.min(MAX_IO) as u32;
        // SAFETY: one ReadFile on `h.raw` with the given OVERLAPPED; the caller keeps `ptr`
        // valid for `len` bytes until we return, and run_overlapped returns only after the
        // read finished.
        let outcome = unsafe {
            run_overlapped(h.raw, &event, &self.cancel, timeout, |ov| {
                ReadFile(h.raw, ptr, len, std::ptr::null_mut(), ov)
            })
        };
        match outcome {
            // Zero bytes: the peer closed, or wrote zero bytes (its `shutdown_write`).
            Outcome::Done(n) => Ok((n as usize, false)),
            Outcome::More(n) => Ok((n as usize, true)),
            Outcome::Failed(e) if is_end_of_pipe(&e) => Ok((0, false)),
            Outcome::Failed(e) => Err(e),
            Outcome::TimedOut => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
            Outcome::Cancelled => Ok((0, false)),
        }
    }

    /// One overlapped `WriteFile` of `buf` (the event of the write direction is held).
    fn write_locked(&self, event: &Event, buf: &[u8]) -> io::Result<usize> {
        let Some(h) = self.in_use() else {
            return Err(Stream::cancelled_error());
        };
        let timeout = self.write_timeout.load(Ordering::Relaxed);
        let len = buf.len().min(MAX_IO) as u32;
        // SAFETY: one WriteFile on `h.raw` with the given OVERLAPPED; `buf` is borrowed for
        // the whole call and run_overlapped returns only after the write finished.
        let outcome = unsafe {
            run_overlapped(h.raw, event, &self.cancel, timeout, |ov| {
                WriteFile(h.raw, buf.as_ptr(), len, std::ptr::null_mut(), ov)
            })
        };
        match outcome {
            Outcome::Done(n) | Outcome::More(n) => Ok(n as usize),
            Outcome::Failed(e) if is_end_of_pipe(&e) => {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, e))
            }
            Outcome::Failed(e) => Err(e),
            Outcome::TimedOut => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            Outcome::Cancelled => Err(Stream::cancelled_error()),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        unsafe { self.read_raw(buf.as_mut_ptr(), buf.len()) }
    }

    /// Reads once, appending at most `max` bytes to `buf` (growing its capacity if needed).
    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        buf.reserve(max);
        let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max];
        // SAFETY: `spare` is valid for writes of `spare.len()` bytes; ReadFile only writes.
        let n = unsafe { self.read_raw(spare.as_mut_ptr().cast(), spare.len())? };
        // SAFETY: the kernel initialised the first `n <= max` spare bytes.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    /// Raw mode's receive. On a message-mode handle: appends exactly one whole pipe message
    /// to `buf`, reading on after `ERROR_MORE_DATA` until its end (`chunk` is only the size
    /// of the first read); 0 is end-of-stream. Otherwise: `read_append(buf, chunk)`.
    ///
    /// A timeout or error part-way through a message leaves the bytes read so far in `buf`
    /// and the rest in the pipe.
    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        if !self.message {
            return self.read_append(buf, chunk);
        }
        let start = buf.len();
        let mut want = chunk.max(1);
        loop {
            buf.reserve(want);
            let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..want];
            // SAFETY: `spare` is valid for writes of `spare.len()` bytes; ReadFile only
            // writes.
            let (n, more) = unsafe { self.read_part(spare.as_mut_ptr().cast(), spare.len())? };
            // SAFETY: the kernel initialised the first `n <= want` spare bytes.
            unsafe { buf.set_len(buf.len() + n) };
            if !more {
                return Ok(buf.len() - start);
            }
            // The rest of a large message: grow the reads geometrically.
            want = (buf.len() - start).clamp(chunk.max(1), MAX_IO);
        }
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write2(buf, &[])
    }

    /// Writes `a` then `b`; returns how many bytes went out in total. Pipes have no gather
    /// write, so up to `COALESCE` bytes are copied into one buffer and written with one
    /// `WriteFile`; beyond that only `a` is written here (the caller's send loop writes the
    /// rest right behind it, and the write lock keeps the two contiguous).
    fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        if self.write_shut.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the sending direction was shut down",
            ));
        }
        let mut state = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let WriteState { event, scratch } = &mut *state;
        if b.is_empty() || a.is_empty() {
            let buf = if a.is_empty() { b } else { a };
            if buf.is_empty() {
                return Ok(0);
            }
            return self.write_locked(event, buf);
        }
        if a.len() + b.len() > COALESCE {
            return self.write_locked(event, a);
        }
        scratch.clear();
        scratch.extend_from_slice(a);
        scratch.extend_from_slice(b);
        let res = self.write_locked(event, scratch);
        if scratch.capacity() > COALESCE {
            *scratch = Vec::new();
        }
        res
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.read_timeout, d);
        Ok(())
    }

    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.write_timeout, d);
        Ok(())
    }

    /// Pipes have no half-close, and a zero-length write is not a usable end-of-stream
    /// marker (Wine does not deliver it at all). So this closes our end of the pipe, as
    /// soon as no operation uses it (an operation blocked in another thread is woken):
    /// the peer reads every byte we wrote and then end-of-stream, as with Unix's
    /// `shutdown(SHUT_WR)`. Unlike Unix, our reading direction ends too: later reads
    /// return end-of-stream and later writes fail with `BrokenPipe`.
    fn shutdown_write(&self) -> io::Result<()> {
        self.write_shut.store(true, Ordering::SeqCst);
        self.cancel();
        self.finish();
        Ok(())
    }

    /// The peer's process id and, where it can be read, its user SID: a server reads its
    /// client's from the client's identification token (the client connects with
    /// `SECURITY_IDENTIFICATION`), a client reads the pipe's owner and group (who created
    /// the pipe: the server's user).
    fn peer_now(&self) -> io::Result<PeerIdentity> {
        let Some(h) = self.in_use() else {
            return Err(Stream::cancelled_error());
        };
        peer_of(h.raw, self.server)
    }

    /// The peer's process, to take the handles of its messages from (see `handles.rs`);
    /// `None` unless this connection takes handles.
    pub(crate) fn peer_process(&self) -> Option<BorrowedHandle<'_>> {
        self.peer_process.as_ref().map(|p| p.as_handle())
    }

    /// How many bytes can be read without waiting (`PeekNamedPipe`); `None` once the pipe
    /// has ended.
    fn available(&self) -> io::Result<Option<usize>> {
        let Some(h) = self.in_use() else {
            return Ok(None);
        };
        let mut avail = 0u32;
        // SAFETY: `h.raw` is an open pipe handle for the call; null buffer of length 0 only
        // asks for the count, written to `avail`.
        let ok = unsafe {
            PeekNamedPipe(
                h.raw,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                &mut avail,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return if is_end_of_pipe(&e) { Ok(None) } else { Err(e) };
        }
        Ok(Some(avail as usize))
    }

    /// Reads what is there right now (`WouldBlock` when nothing is; 0 at the end).
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self.available()? {
            None => Ok(0),
            Some(0) => Err(io::ErrorKind::WouldBlock.into()),
            Some(n) => {
                let n = n.min(buf.len());
                self.read(&mut buf[..n])
            }
        }
    }

    /// `read_now`, appending at most `max` bytes to `buf`.
    fn read_append_now(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self.available()? {
            None => Ok(0),
            Some(0) => Err(io::ErrorKind::WouldBlock.into()),
            Some(n) => self.read_append(buf, n.min(max)),
        }
    }
}

/// The process id of the peer of the open pipe end `handle` (`server`: it is a server end),
/// as the pipe reports it (`None`: it reports none).
pub(super) fn peer_pid(handle: HANDLE, server: bool) -> io::Result<Option<u32>> {
    let mut pid = 0u32;
    // SAFETY: the caller keeps `handle` open for the call; `pid` is valid for writes.
    let ok = unsafe {
        if server {
            GetNamedPipeClientProcessId(handle, &mut pid)
        } else {
            GetNamedPipeServerProcessId(handle, &mut pid)
        }
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pid != 0).then_some(pid))
}

/// The peer of the open pipe end `handle` (`server`: it is a server end); see
/// [`Stream::peer`]. Shared with the async stream.
pub(super) fn peer_of(handle: HANDLE, server: bool) -> io::Result<PeerIdentity> {
    let pid = peer_pid(handle, server)?;
    let (sid, group_sid) = if server {
        (super::access::pipe_client_sid(handle), None)
    } else {
        // Who serves the pipe: its owner (and group), as .NET's CurrentUserOnly checks
        // it. Unlike the server process's token, this can be read whatever user the
        // server runs as.
        match super::access::object_owner_and_group(handle) {
            Ok((owner, group)) => (Some(owner), group),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the owner of the server's pipe");
                (None, None)
            }
        }
    };
    Ok(PeerIdentity {
        pid,
        uid: None,
        gid: None,
        sid,
        group_sid,
    })
}

impl crate::sys::Handshake for Stream {
    fn peer(&self) -> io::Result<PeerIdentity> {
        self.peer_now()
    }

    fn peer_groups(&self) -> Option<Vec<u32>> {
        None
    }

    /// The 16-byte hello or reply on a fresh pipe: its buffer is empty, so the write
    /// completes at once.
    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }

    /// The hello of a client offering shared memory: nothing goes with it here (the server
    /// makes both rings and gives them to this process).
    fn write_with_memory(
        &self,
        hello: &[u8],
        _memory: &crate::sys::shm::Memory,
    ) -> io::Result<usize> {
        self.write(hello)
    }

    /// The reply with the handle values of the shared memory behind it (duplicated into
    /// this admitted client's process already), in one write of a fresh pipe's empty buffer.
    fn write_handover(&self, reply: &[u8], region: &crate::sys::shm::Region) -> io::Result<usize> {
        region.write_handover(reply, |bytes| self.write(bytes))
    }

    /// Handles with messages (`FEATURE_DESCRIPTORS`): only when the peer's process (pid from
    /// the pipe) can be opened with `PROCESS_DUP_HANDLE`, which is kept to take them from.
    fn accept_descriptors(&mut self) -> bool {
        let Some(h) = self.in_use() else {
            return false;
        };
        let process = super::handles::open_peer(h.raw, self.server);
        drop(h);
        self.peer_process = process;
        self.peer_process.is_some()
    }
}

impl Cancel for Stream {
    /// Wakes every blocked read (it returns 0) and write (it fails), for good: the cancel
    /// event is in every wait, so operations blocked in other threads return at once.
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.cancel.set();
        self.stop_watch();
    }

    /// Closes the handle as soon as no operation uses it any more, waiting (bounded,
    /// `CLOSE_WAIT`) for the woken operations to let go of it; then the peer sees the end and
    /// the pipe name is free. Should an operation take longer, the last one to finish closes
    /// the handle.
    fn finish(&self) {
        let slot = self.lock_slot();
        let (mut slot, _) = self
            .idle
            .wait_timeout_while(slot, CLOSE_WAIT, |s| s.users > 0)
            .unwrap_or_else(|e| e.into_inner());
        if slot.users == 0 {
            // Closed under the lock, as in `InUse::drop`.
            drop(slot.handle.take());
        } else {
            tracing::debug!("a cancelled operation is slow to end; it will close the pipe");
        }
    }
}

impl Drop for Stream {
    /// A pending end-watch read must finish before its buffers go.
    fn drop(&mut self) {
        self.stop_watch();
    }
}

/// The contract (`sys/mod.rs`), by the inherent methods above.
impl SysStream for Stream {
    fn connect(path: &Path, opts: &ConnectOptions) -> io::Result<Stream> {
        Stream::connect(path, opts)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read(self, buf)
    }

    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        Stream::read_append(self, buf, max)
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        Stream::read_now(self, buf)
    }

    fn read_append_now(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        Stream::read_append_now(self, buf, max)
    }

    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        Stream::read_message(self, buf, chunk)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Stream::write(self, buf)
    }

    fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        Stream::write2(self, a, b)
    }

    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        Stream::set_read_timeout(self, d)
    }

    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        Stream::set_write_timeout(self, d)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        Stream::shutdown_write(self)
    }
}
