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
//! what keeps the kernel from writing into freed memory; see `overlapped::run_overlapped` and
//! `listener::Instance`.

mod access;
#[cfg(feature = "tokio")]
pub(crate) mod aio;
mod endpoint;
pub(crate) mod handles;
mod listener;
mod overlapped;
pub(crate) mod shm;
mod stream;
mod watch;

pub(crate) use listener::Listener;
pub(crate) use stream::Stream;

/// The Windows backend; see `sys/mod.rs` for the contract.
pub(crate) struct Platform;

impl crate::sys::Backend for Platform {
    type Stream = Stream;
    type Listener = Listener;

    /// Pipes have no half-close: `shutdown_write` closes the whole pipe end.
    const HALF_CLOSE: bool = false;
    /// The pipe's DACL refuses everyone the policy does not admit (see `access.rs`).
    const ACCESS_ENFORCED_BY_OS: bool = true;
    const SYSTEM_USERS: &'static str = "the system (LocalSystem, Administrators)";

    fn plain_endpoint(name: &str) -> Result<std::path::PathBuf, String> {
        endpoint::plain_endpoint(name)
    }

    fn explicit_endpoint(s: &str) -> Option<Result<std::path::PathBuf, String>> {
        endpoint::explicit_endpoint(s)
    }

    fn probe(path: &std::path::Path) -> io::Result<crate::sys::Probe> {
        endpoint::probe(path)
    }

    fn list_endpoints() -> io::Result<Vec<(String, std::path::PathBuf)>> {
        endpoint::list_endpoints()
    }

    fn remove_stale(name: &str, path: &std::path::Path) -> crate::Result<bool> {
        endpoint::remove_stale(name, path)
    }

    fn credentials(with_groups: bool) -> crate::proto::Credentials {
        access::credentials(with_groups)
    }

    fn trust_policy(trust: &crate::Trust) -> io::Result<crate::proto::TrustPolicy> {
        access::trust_policy(trust)
    }

    fn describe_server(server: &crate::PeerIdentity) -> String {
        access::describe_server(server)
    }
}

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
