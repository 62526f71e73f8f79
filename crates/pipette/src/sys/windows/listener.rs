//! A named-pipe server whose `accept` never lets one slow peer delay another.
//!
//! A pump thread per listener keeps a few pipe instances waiting for clients
//! (`MIN_LISTENING`, so a burst of clients does not meet `ERROR_PIPE_BUSY`). Each instance
//! goes through Listening (an overlapped `ConnectNamedPipe`) → Reading (overlapped
//! `ReadFile`s of the hello into its own buffer) → ready, and the pump waits on every
//! instance's event and the cancel event together. An instance whose hello does not arrive
//! within the handshake timeout is dropped; a fresh instance replaces every one that
//! connects. Ready connections wait in a bounded queue (`MAX_QUEUED`, the equivalent of a
//! socket's backlog) for `accept`, so clients can connect while nobody is in `accept`, as
//! with a Unix listening socket. At most `MAX_INSTANCES` instances are in progress at once
//! (one wait covers at most 64 handles); beyond the limits clients see `ERROR_PIPE_BUSY` and
//! their connect loop retries.

// The instances are boxed on purpose (clippy's `vec_box` cannot know): the kernel holds
// pointers into a pending instance, so it must not move when the vector reallocates or
// `swap_remove`s.
#![allow(clippy::vec_box)]

use std::collections::VecDeque;
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
#[cfg(feature = "tokio")]
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, ERROR_MORE_DATA, ERROR_PIPE_CONNECTED,
    HANDLE, INVALID_HANDLE_VALUE, WAIT_FAILED,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::Storage::FileSystem::{
    ReadFile, FILE_FLAG_FIRST_PIPE_INSTANCE, FILE_FLAG_OVERLAPPED, PIPE_ACCESS_DUPLEX,
};
use windows_sys::Win32::System::Pipes::{
    ConnectNamedPipe, CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_READMODE_MESSAGE,
    PIPE_REJECT_REMOTE_CLIENTS, PIPE_TYPE_BYTE, PIPE_TYPE_MESSAGE, PIPE_UNLIMITED_INSTANCES,
    PIPE_WAIT,
};
use windows_sys::Win32::System::Threading::WaitForMultipleObjects;
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::access::SecurityDescriptor;
use super::endpoint::{claim_for_bind, first_instance_error, Claim};
use super::stream::Stream;
use super::{wide, Event};
use crate::error::Result;
use crate::proto::HelloReader;
use crate::sys::{Cancel, ListenOptions};
use crate::Name;

/// How many instances wait for a new client at any time.
pub(super) const MIN_LISTENING: usize = 4;
/// Most instances in progress at once: with the cancel and wake events, one
/// `WaitForMultipleObjects` (64 handles).
const MAX_INSTANCES: usize = 62;
/// Most ready connections waiting for `accept` (a socket's backlog).
const MAX_QUEUED: usize = 64;
/// Pipe buffer sizes (a hint to the system).
pub(super) const BUFFER: u32 = 64 * 1024;

pub(crate) struct Listener {
    shared: Arc<Shared>,
    pump: Mutex<Option<JoinHandle<()>>>,
    /// The instances are message pipes read in message mode.
    message: bool,
    /// Held for the server's whole life; released by `cancel` once the pump has closed every
    /// instance.
    claim: Mutex<Option<Claim>>,
    path: String,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("path", &self.path)
            .field("cancelled", &self.shared.cancelled)
            .finish()
    }
}

/// What the pump thread and `accept` share.
#[derive(Debug)]
struct Shared {
    /// Set by `cancel`: wakes the pump for good.
    cancel: Event,
    /// Set by `accept` after taking a connection: the pump may refill.
    wake: Event,
    /// Signalled while a connection is ready (or the listener is shut down): the server's
    /// readiness source for event loops.
    ready_event: Event,
    cancelled: AtomicBool,
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    /// Wakes whoever waits for a connection: blocking `accept`s and an async one. Called
    /// with the queue locked, so that nobody about to wait can miss it.
    fn notify(&self, queue: &mut Queue, all: bool) {
        self.ready_event.set();
        if all {
            self.ready.notify_all();
        } else {
            self.ready.notify_one();
        }
        if let Some(w) = queue.waker.take() {
            w.wake();
        }
    }
}

#[derive(Debug, Default)]
struct Queue {
    /// Connections whose hello is in (or whose first bytes cannot be one), with it.
    items: VecDeque<(OwnedHandle, HelloReader)>,
    /// The pump could not create any instance: the last error, for `accept`.
    error: Option<(io::ErrorKind, String)>,
    /// The task of an async `accept` waiting for a connection (the async server lets one
    /// `accept` at a time wait).
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `ConnectNamedPipe` issued: waiting for a client.
    Listening,
    /// A client is connected; reading its first bytes.
    Reading,
}

/// One pipe instance on its way from "waiting for a client" to "handed over".
///
/// # The overlapped-I/O invariant
///
/// While `pending` is true, the kernel owns `ov` and the hello reader's spare bytes and may
/// write to them at any moment. The instance is boxed, so neither moves; nothing reads `hello` or reuses
/// `ov` until the operation's result has been collected; and `Drop` cancels a pending
/// operation and waits for it (`GetOverlappedResult(.., TRUE)`) before the memory and the
/// handle go away. An instance is handed over (`into_parts`) only when nothing is pending.
struct Instance {
    handle: Option<OwnedHandle>,
    ov: OVERLAPPED,
    event: Event,
    phase: Phase,
    pending: bool,
    /// `ConnectNamedPipe` found a client already connected (no completion will be posted).
    connected_now: bool,
    /// The client came and went before we noticed; drop this instance.
    broken: bool,
    /// The protocol engine's view of the client's first bytes: how many more to read.
    hello: HelloReader,
    deadline: Option<Instant>,
}

// SAFETY: `Instance` is not `Send` only because of the raw pointers inside `ov` (its event
// handle, which refers to `event`, owned by the instance) and the handle values. Handles may
// be used from any thread, and the kernel's use of `ov` does not depend on which thread owns
// the instance. An instance is created by `bind` (the first) or by the pump, and is moved to
// the pump thread before any operation on it is collected; from then on only that thread
// touches it (it is never shared: there is no lock around instances).
unsafe impl Send for Instance {}

enum Progress {
    Ready,
    Waiting,
    Gone,
}

impl Instance {
    /// A new instance of the pipe, already listening for a client; a message-type pipe read
    /// in message mode when `message`, else a byte pipe (`raw`: no hello to read).
    fn new(
        path: &[u16],
        sd: &SecurityDescriptor,
        first: bool,
        message: bool,
        raw: bool,
    ) -> io::Result<Box<Instance>> {
        let attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: sd.as_ptr(),
            bInheritHandle: 0,
        };
        let mut open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
        if first {
            open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
        }
        let pipe_mode = if message {
            PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE
        } else {
            PIPE_TYPE_BYTE | PIPE_READMODE_BYTE
        };
        // SAFETY: `path` is NUL-terminated; `attrs` and the descriptor it points to outlive
        // the call. On success we own the returned handle.
        let h = unsafe {
            CreateNamedPipeW(
                path.as_ptr(),
                open_mode,
                pipe_mode | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
                PIPE_UNLIMITED_INSTANCES,
                BUFFER,
                BUFFER,
                0,
                &attrs,
            )
        };
        if h == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `h` is a fresh pipe handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(h) };
        let mut inst = Box::new(Instance {
            handle: Some(handle),
            ov: OVERLAPPED::default(),
            event: Event::new()?,
            phase: Phase::Listening,
            pending: false,
            connected_now: false,
            broken: false,
            hello: HelloReader::new(raw),
            deadline: None,
        });
        inst.start_connect();
        Ok(inst)
    }

    fn raw(&self) -> HANDLE {
        self.handle
            .as_ref()
            .map_or(INVALID_HANDLE_VALUE, |h| h.as_raw_handle())
    }

    fn fresh_overlapped(&mut self) -> *mut OVERLAPPED {
        debug_assert!(!self.pending);
        self.event.reset();
        self.ov = OVERLAPPED {
            hEvent: self.event.raw(),
            ..Default::default()
        };
        &mut self.ov
    }

    /// Records how a just-started operation went (`ok` is what the starter returned).
    fn started(&mut self, ok: i32) -> Option<u32> {
        if ok != 0 {
            // Completed at once; its completion is still posted through `ov`.
            self.pending = true;
            return None;
        }
        // SAFETY: no preconditions.
        let err = unsafe { GetLastError() };
        // ERROR_MORE_DATA: a message-mode read got part of a longer first message; it has
        // completed and its result is collected through `ov` like any other.
        if err == ERROR_IO_PENDING || err == ERROR_MORE_DATA {
            self.pending = true;
            None
        } else {
            Some(err)
        }
    }

    fn start_connect(&mut self) {
        let ov = self.fresh_overlapped();
        // SAFETY: the handle is an open pipe instance; `ov` is this boxed instance's own
        // OVERLAPPED, not in use (nothing is pending), and stays put until the operation is
        // collected or cancelled-and-waited-for (see the type's invariant).
        let ok = unsafe { ConnectNamedPipe(self.raw(), ov) };
        match self.started(ok) {
            None => {}
            // The client connected between CreateNamedPipeW and ConnectNamedPipe.
            Some(ERROR_PIPE_CONNECTED) => self.connected_now = true,
            Some(err) => {
                tracing::debug!(error = err, "a pipe instance failed to listen");
                self.broken = true;
            }
        }
    }

    fn start_read(&mut self) {
        let ov = self.fresh_overlapped();
        let spare = self.hello.spare();
        let (buf, len) = (spare.as_mut_ptr(), spare.len() as u32);
        // SAFETY: `buf` points into this boxed instance's hello reader, valid for `len` bytes,
        // and nothing touches it until the read is collected or cancelled-and-waited-for.
        let ok = unsafe { ReadFile(self.raw(), buf, len, std::ptr::null_mut(), ov) };
        if let Some(err) = self.started(ok) {
            tracing::debug!(error = err, "a peer left before completing the handshake");
            self.broken = true;
        }
    }

    /// Advances as far as possible without blocking.
    fn progress(&mut self, handshake: Duration, now: Instant) -> Progress {
        loop {
            if self.broken {
                return Progress::Gone;
            }
            let n = if self.connected_now {
                self.connected_now = false;
                0
            } else if self.pending {
                let mut n = 0u32;
                // SAFETY: `ov` belongs to the pending operation on this handle; bWait = FALSE
                // only looks at its state.
                let done = unsafe { GetOverlappedResult(self.raw(), &self.ov, &mut n, 0) };
                if done == 0 {
                    // SAFETY: no preconditions.
                    let err = unsafe { GetLastError() };
                    if err == ERROR_IO_INCOMPLETE {
                        break;
                    }
                    self.pending = false;
                    // Message mode: the first message is longer than the prefix; what we
                    // read is the prefix (the rest stays in the pipe).
                    if err != ERROR_MORE_DATA {
                        tracing::debug!(error = err, "a peer left before completing the handshake");
                        return Progress::Gone;
                    }
                } else {
                    self.pending = false;
                }
                n
            } else {
                // Nothing pending and nothing to collect: cannot happen; drop it to be safe.
                return Progress::Gone;
            };
            match self.phase {
                Phase::Listening => {
                    self.phase = Phase::Reading;
                    self.deadline = Some(now + handshake);
                }
                Phase::Reading => {
                    if n == 0 {
                        tracing::debug!(
                            "a peer closed its connection before completing the handshake"
                        );
                        return Progress::Gone;
                    }
                    self.hello.filled(n as usize);
                }
            }
            if self.hello.is_done() {
                return Progress::Ready;
            }
            self.start_read();
        }
        match self.deadline {
            Some(d) if now >= d => {
                tracing::warn!(
                    received = self.hello.bytes().len(),
                    missing = self.hello.missing(),
                    "dropping a connection that did not complete the handshake in time"
                );
                Progress::Gone
            }
            _ => Progress::Waiting,
        }
    }

    /// Takes the connected handle and what arrived of the hello; only when nothing is
    /// pending.
    fn take_parts(&mut self) -> (Option<OwnedHandle>, HelloReader) {
        debug_assert!(!self.pending);
        (self.handle.take(), self.hello.clone())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.pending {
            let h = self.raw();
            let mut n = 0u32;
            // SAFETY: `ov` belongs to the pending operation on `h`. CancelIoEx asks it to end;
            // GetOverlappedResult with bWait = TRUE returns only once it has, so the kernel is
            // done with `ov` and `prefix` before they are freed. This is the invariant.
            unsafe {
                CancelIoEx(h, &self.ov);
                GetOverlappedResult(h, &self.ov, &mut n, 1);
            }
            self.pending = false;
        }
    }
}

impl crate::sys::SysListener for Listener {
    type Stream = Stream;

    fn bind(name: &Name, opts: &ListenOptions) -> Result<Listener> {
        Listener::bind(name, opts)
    }

    fn accept(&self, timeout: Option<Duration>) -> io::Result<(Stream, HelloReader)> {
        Listener::accept(self, timeout)
    }
}

impl Listener {
    pub(super) fn bind(name: &Name, opts: &ListenOptions) -> Result<Listener> {
        // Plain names are global on Windows (see endpoint.rs), so every access policy works
        // with them: the DACL decides who may connect.
        let path = name.path();
        let claim = claim_for_bind(name)?;
        let sd = SecurityDescriptor::for_access(opts.access)?;
        let wpath = wide(path.as_os_str());
        let first = Instance::new(&wpath, &sd, true, opts.message_pipe, opts.raw)
            .map_err(|e| first_instance_error(name, e))?;
        let shared = Arc::new(Shared {
            cancel: Event::new()?,
            wake: Event::new()?,
            ready_event: Event::new()?,
            cancelled: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let mut pump = Pump {
            shared: shared.clone(),
            path: wpath,
            sd,
            opts: opts.clone(),
            instances: vec![first],
        };
        pump.refill();
        let thread = std::thread::Builder::new()
            .name("pipette-pipe-pump".into())
            .spawn(move || pump.run())?;
        Ok(Listener {
            shared,
            pump: Mutex::new(Some(thread)),
            message: opts.message_pipe,
            claim: Mutex::new(Some(claim)),
            path: path.display().to_string(),
        })
    }

    fn aborted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the listener was shut down",
        )
    }

    fn accept(&self, timeout: Option<Duration>) -> io::Result<(Stream, HelloReader)> {
        let deadline = timeout.map(|d| Instant::now() + d);
        let mut queue = self.shared.lock();
        loop {
            if let Some(r) = self.take_ready(&mut queue) {
                drop(queue);
                let (handle, hello) = r?;
                return Ok((Stream::from_server(handle, self.message)?, hello));
            }
            queue = match deadline {
                None => self
                    .shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "accept timed out"));
                    }
                    self.shared
                        .ready
                        .wait_timeout(queue, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The async side's `accept`: a ready connection's handle (for tokio), its prefix and
    /// the prefix's length; `Pending` (with the task's waker kept) while there is none.
    #[cfg(feature = "tokio")]
    pub(super) fn poll_accept_raw(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(OwnedHandle, HelloReader)>> {
        let mut queue = self.shared.lock();
        if let Some(r) = self.take_ready(&mut queue) {
            return Poll::Ready(r);
        }
        match &queue.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// What `accept` returns now, if anything: a ready connection (the pump is told it may
    /// refill), the pump's error, or the listener's shutdown.
    #[allow(clippy::type_complexity)]
    fn take_ready(&self, queue: &mut Queue) -> Option<io::Result<(OwnedHandle, HelloReader)>> {
        if self.shared.cancelled.load(Ordering::SeqCst) {
            return Some(Err(Self::aborted()));
        }
        if let Some(item) = queue.items.pop_front() {
            self.shared.wake.set();
            if queue.items.is_empty() && queue.error.is_none() {
                self.shared.ready_event.reset();
            }
            return Some(Ok(item));
        }
        if let Some((kind, msg)) = queue.error.take() {
            return Some(Err(io::Error::new(kind, msg)));
        }
        None
    }

    /// The readiness source for event loops (see `Shared::ready_event`).
    pub(crate) fn ready_event(&self) -> std::os::windows::io::RawHandle {
        self.shared.ready_event.raw()
    }

    /// Wakes the pump and every blocked `accept` for good (they return `ConnectionAborted`).
    /// Does not wait: `teardown` does.
    fn signal(&self) {
        self.shared.cancelled.store(true, Ordering::SeqCst);
        self.shared.cancel.set();
        // Under the queue's lock, so that an `accept` about to wait cannot miss it.
        let mut queue = self.shared.lock();
        self.shared.notify(&mut queue, true);
    }

    /// Stops the pump (which closes every instance it holds), drops the queued connections,
    /// then releases the claim. Idempotent; concurrent calls are serialised, and each
    /// returns only once the name is released.
    fn teardown(&self) {
        let mut pump = self.pump.lock().unwrap_or_else(|e| e.into_inner());
        self.signal();
        let queued = std::mem::take(&mut self.shared.lock().items);
        drop(queued);
        if let Some(thread) = pump.take() {
            // The pump wakes at once on the cancel event; it only has to cancel and collect
            // its instances' pending operations.
            if thread.join().is_err() {
                tracing::error!("the pipe pump thread panicked");
            }
        }
        // Only now that no instance is left may another server claim the name.
        let claim = self.claim.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(claim);
        // `pump` (the lock serialising teardowns) is released last.
        drop(pump);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Cancel for Listener {
    /// Wakes a blocked `accept` and makes later ones fail.
    fn cancel(&self) {
        self.signal();
    }

    /// Closes every pipe instance that is not yet a connection and releases the claim, so
    /// the name is free once this returns (instances handed over as connections are closed
    /// by their own cancel).
    fn finish(&self) {
        self.teardown();
    }
}

/// The pump thread's state: the instances on their way to the queue.
struct Pump {
    shared: Arc<Shared>,
    path: Vec<u16>,
    sd: SecurityDescriptor,
    opts: ListenOptions,
    instances: Vec<Box<Instance>>,
}

impl Pump {
    /// Tops up the instances waiting for a client to `MIN_LISTENING`, within the limits.
    fn refill(&mut self) {
        let queued = self.shared.lock().items.len();
        let mut listening = self
            .instances
            .iter()
            .filter(|i| i.phase == Phase::Listening)
            .count();
        while listening < MIN_LISTENING
            && self.instances.len() < MAX_INSTANCES
            && self.instances.len() + queued < MAX_INSTANCES + MAX_QUEUED
        {
            match Instance::new(
                &self.path,
                &self.sd,
                false,
                self.opts.message_pipe,
                self.opts.raw,
            ) {
                Ok(i) => self.instances.push(i),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create another pipe instance");
                    if self.instances.is_empty() {
                        let mut queue = self.shared.lock();
                        queue.error = Some((e.kind(), e.to_string()));
                        self.shared.notify(&mut queue, true);
                    }
                    break;
                }
            }
            listening += 1;
        }
    }

    fn run(mut self) {
        let mut handles: Vec<HANDLE> = Vec::with_capacity(MAX_INSTANCES + 2);
        while !self.shared.cancelled.load(Ordering::SeqCst) {
            self.shared.wake.reset();
            let now = Instant::now();
            let mut i = 0;
            while i < self.instances.len() {
                match self.instances[i].progress(self.opts.handshake_timeout, now) {
                    Progress::Ready => {
                        let mut inst = self.instances.swap_remove(i);
                        let (handle, hello) = inst.take_parts();
                        if let Some(handle) = handle {
                            let mut queue = self.shared.lock();
                            queue.items.push_back((handle, hello));
                            self.shared.notify(&mut queue, false);
                        }
                    }
                    // Dropping cancels and waits for any pending operation.
                    Progress::Gone => drop(self.instances.swap_remove(i)),
                    Progress::Waiting => i += 1,
                }
            }
            self.refill();
            if self.instances.iter().any(|i| !i.pending) {
                // A fresh instance found its client already connected (or failed): it posts
                // no completion to wait for, so look at it again now.
                continue;
            }
            let ms = match self.instances.iter().filter_map(|p| p.deadline).min() {
                // Round up so that we never wake just before the deadline.
                Some(d) => d
                    .saturating_duration_since(now)
                    .as_micros()
                    .div_ceil(1000)
                    .min(u128::from(u32::MAX - 1)) as u32,
                // Nothing to time out; with no instance at all (creating them failed), retry
                // now and then.
                None if self.instances.is_empty() => 100,
                None => u32::MAX,
            };
            handles.clear();
            handles.push(self.shared.cancel.raw());
            handles.push(self.shared.wake.raw());
            handles.extend(self.instances.iter().map(|i| i.event.raw()));
            // SAFETY: `handles` holds at most 65 - 1 valid event handles (cancel, wake, and
            // those of our live instances, which stay alive during the wait).
            let woke =
                unsafe { WaitForMultipleObjects(handles.len() as u32, handles.as_ptr(), 0, ms) };
            if woke == WAIT_FAILED {
                let e = io::Error::last_os_error();
                tracing::error!(error = %e, "the pipe pump cannot wait; stopping");
                let mut queue = self.shared.lock();
                queue.error = Some((e.kind(), e.to_string()));
                self.shared.notify(&mut queue, true);
                break;
            }
        }
        // Dropping the instances cancels their pending operations and waits for them.
        self.instances.clear();
    }
}
