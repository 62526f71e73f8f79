//! The Windows backend: named pipes (`\\.\pipe\...`) in byte mode (or message mode on
//! request), all I/O overlapped.
//!
//! See `sys/mod.rs` for the contract this module implements. Developed on `windows-sys` and
//! tested under Wine 8.0 (`scripts/test-windows.sh`).
//!
//! Every blocking operation is overlapped: it waits on its own event and on a cancel event
//! together (`WaitForMultipleObjects`), and on a timeout or a cancel it calls `CancelIoEx`
//! and then **always waits for the operation to finish** (`GetOverlappedResult` with
//! `bWait = TRUE`) before its `OVERLAPPED` or buffer is freed or reused. That invariant is
//! what keeps the kernel from writing into freed memory; see `stream::run_overlapped` and
//! `listener::Instance`.

mod access;
#[cfg(feature = "tokio")]
pub(crate) mod aio;
mod endpoint;
mod listener;
mod stream;

pub(crate) use access::{credentials, describe_server, trust_policy};

/// Whether the operating system enforces the server's access policy before pipette sees a
/// peer: the pipe's DACL does (see `access.rs`).
pub(crate) const ACCESS_ENFORCED_BY_OS: bool = true;

/// Who "the system" is in a client's trust policy (see `Trust`).
pub(crate) const SYSTEM_USERS: &str = "the system (LocalSystem, Administrators)";
pub(crate) use endpoint::{explicit_endpoint, list_endpoints, plain_endpoint, probe, remove_stale};
pub(crate) use listener::Listener;
pub(crate) use stream::Stream;

/// Whether `shutdown_write` leaves the reading direction open (see `sys/mod.rs`).
/// Pipes have no half-close: `shutdown_write` closes the whole pipe end.
pub(crate) const HALF_CLOSE: bool = false;

use std::ffi::OsStr;
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::time::Duration;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Threading::{CreateEventW, ResetEvent, SetEvent, INFINITE};

/// `s` as a NUL-terminated UTF-16 string.
fn wide(s: &OsStr) -> Vec<u16> {
    s.encode_wide().chain(Some(0)).collect()
}

/// A Win32 error code as an `io::Error`.
fn os_error(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

/// A manual-reset event, initially not signalled.
#[derive(Debug)]
struct Event(OwnedHandle);

impl Event {
    fn new() -> io::Result<Event> {
        // SAFETY: null attributes and name are allowed; on success we own the new handle.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `h` is a fresh, valid handle that nothing else owns.
        Ok(Event(unsafe { OwnedHandle::from_raw_handle(h) }))
    }

    fn raw(&self) -> HANDLE {
        self.0.as_raw_handle()
    }

    fn set(&self) {
        // SAFETY: the handle is a valid event for as long as `self` lives.
        unsafe { SetEvent(self.raw()) };
    }

    fn reset(&self) {
        // SAFETY: the handle is a valid event for as long as `self` lives.
        unsafe { ResetEvent(self.raw()) };
    }
}

/// A timeout in whole milliseconds for the wait functions, rounded up; `None` is `INFINITE`,
/// and a zero duration becomes 1 ms so that it still waits a little (as on Unix).
fn timeout_ms(d: Option<Duration>) -> u32 {
    match d {
        None => INFINITE,
        Some(d) => {
            let ms = d.as_micros().div_ceil(1000).max(1);
            ms.min(u128::from(INFINITE - 1)) as u32
        }
    }
}
