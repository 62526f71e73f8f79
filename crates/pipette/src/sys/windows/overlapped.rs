//! One overlapped operation, run to completion: the invariant that keeps the kernel from
//! writing into freed memory.
//!
//! Every blocking operation of the Windows backend is overlapped: it waits on its own event
//! and a cancel event together (`WaitForMultipleObjects`), and on a timeout or a cancel it
//! calls `CancelIoEx` and then **always waits for the operation to finish**
//! (`GetOverlappedResult` with `bWait = TRUE`) before its `OVERLAPPED` or buffer is freed or
//! reused.

use std::io;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_IO_PENDING, ERROR_MORE_DATA, ERROR_OPERATION_ABORTED, HANDLE,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::WaitForMultipleObjects;
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};

use super::{os_error, Event};

/// How an overlapped operation ended. In every case the operation has finished: the kernel
/// no longer touches its `OVERLAPPED` or buffer.
pub(super) enum Outcome {
    Done(u32),
    /// A message-mode read filled the buffer with part of a message (`ERROR_MORE_DATA`);
    /// the rest of that message is still in the pipe.
    More(u32),
    Failed(io::Error),
    TimedOut,
    Cancelled,
}

/// Runs one overlapped operation on `handle` to completion, waiting at most `timeout`
/// (milliseconds, `u32::MAX` for none) and until `cancel` is signalled.
///
/// # Safety
///
/// `start` must start at most one overlapped operation on `handle` that uses the given
/// `OVERLAPPED` and returns what the starting function (`ReadFile`, `WriteFile`, …) returned;
/// any buffer it passes must stay valid until `run_overlapped` returns. This function
/// upholds the rest: it returns only once the operation has finished.
pub(super) unsafe fn run_overlapped(
    handle: HANDLE,
    event: &Event,
    cancel: &Event,
    timeout: u32,
    start: impl FnOnce(*mut OVERLAPPED) -> i32,
) -> Outcome {
    let mut ov = OVERLAPPED {
        hEvent: event.raw(),
        ..Default::default()
    };
    event.reset();
    if start(&mut ov) == 0 {
        // SAFETY: no preconditions.
        let err = unsafe { GetLastError() };
        // ERROR_MORE_DATA: a message-mode read completed with part of a message. Its result
        // (with the byte count) is collected through `ov` below like any other.
        if err != ERROR_IO_PENDING && err != ERROR_MORE_DATA {
            // Nothing was queued: the kernel holds no reference to `ov` or the buffer.
            return Outcome::Failed(os_error(err));
        }
    }
    let wait_for = [event.raw(), cancel.raw()];
    // SAFETY: both handles are valid events for the duration of the call.
    let woke = unsafe { WaitForMultipleObjects(2, wait_for.as_ptr(), 0, timeout) };
    let interrupted = match woke {
        WAIT_OBJECT_0 => None,
        w if w == WAIT_OBJECT_0 + 1 => Some(Outcome::Cancelled),
        WAIT_TIMEOUT => Some(Outcome::TimedOut),
        _ => Some(Outcome::Failed(io::Error::last_os_error())),
    };
    if interrupted.is_some() {
        // SAFETY: `ov` is the OVERLAPPED of an operation on `handle`. If it has completed
        // meanwhile this fails with ERROR_NOT_FOUND, which is fine.
        unsafe { CancelIoEx(handle, &ov) };
    }
    let mut n = 0u32;
    // SAFETY: `ov` belongs to an operation on `handle`; bWait = TRUE returns only once that
    // operation has finished (completed, failed or aborted). This is the invariant.
    let ok = unsafe { GetOverlappedResult(handle, &ov, &mut n, 1) };
    if ok != 0 {
        // Completed, even if we tried to cancel it: the bytes moved and must be reported.
        return Outcome::Done(n);
    }
    // SAFETY: no preconditions.
    let err = unsafe { GetLastError() };
    match interrupted {
        _ if err == ERROR_MORE_DATA => Outcome::More(n),
        Some(_) if err == ERROR_OPERATION_ABORTED && n > 0 => Outcome::Done(n),
        Some(why) if err == ERROR_OPERATION_ABORTED => why,
        _ => Outcome::Failed(os_error(err)),
    }
}
