//! The end watch of a shared-memory connection's pipe, which carries no bytes once the
//! memory is handed over: a one-byte overlapped read kept pending, whose event is set when
//! the pipe ends (the peer is gone or closed it, or our own close) or, against the protocol,
//! a byte arrives. The blocking stream (`Stream::end_watch`) waits on that event with the
//! ring's; the async one (`poll_end_watch`) through a thread-pool wait. The state and the
//! buffers are the same for both.

use windows_sys::Win32::System::IO::OVERLAPPED;

use super::Event;

/// What the end watch saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    /// Still pending: this event is set when the pipe ends (or a byte arrives).
    Pending(windows_sys::Win32::Foundation::HANDLE),
    /// The pipe ended, or the connection was shut down.
    Ended,
    /// A byte arrived (which a shared-memory connection's pipe never carries).
    Byte,
}

/// Where the watch is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum WatchState {
    /// Not started.
    #[default]
    Idle,
    /// The read is pending (in the blocking stream it holds one use of the handle).
    Pending,
    /// It finished: the pipe ended.
    Ended,
    /// It finished with a byte.
    Byte,
}

impl WatchState {
    /// What a finished watch (`Ended` or `Byte`) saw.
    pub(super) fn finished(self) -> Watched {
        debug_assert!(matches!(self, WatchState::Ended | WatchState::Byte));
        if self == WatchState::Byte {
            Watched::Byte
        } else {
            Watched::Ended
        }
    }
}

/// The read's `OVERLAPPED`, buffer and event: boxed, because the kernel may write the first
/// two until the read has finished; the stream frees the box only after waiting for that.
pub(super) struct WatchIo {
    pub(super) ov: OVERLAPPED,
    pub(super) buf: [u8; 1],
    pub(super) event: Event,
}

impl WatchIo {
    /// Fresh buffers with a new (manual-reset) event.
    pub(super) fn new() -> std::io::Result<Box<WatchIo>> {
        Ok(Box::new(WatchIo {
            ov: OVERLAPPED::default(),
            buf: [0],
            event: Event::new()?,
        }))
    }

    /// What a finished read saw, from its `OVERLAPPED` (status 0 and a byte: `Byte`; an
    /// error or no byte: `Ended`).
    pub(super) fn outcome(&self) -> WatchState {
        if self.ov.Internal == 0 && self.ov.InternalHigh > 0 {
            WatchState::Byte
        } else {
            WatchState::Ended
        }
    }
}

impl std::fmt::Debug for WatchIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchIo").finish_non_exhaustive()
    }
}

// SAFETY: the `OVERLAPPED`'s raw pointers are an event handle and kernel bookkeeping; the
// value is only touched under its stream's `watch` mutex, from whichever thread holds it.
unsafe impl Send for WatchIo {}
