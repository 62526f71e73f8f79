//! Handles passed with messages (Windows; docs/PROTOCOL.md §11, "Windows"): **the receiver
//! pulls**. A named pipe cannot carry handles, so the sender makes its own duplicate of each
//! handle and sends its value; the receiver, which opened the sender's process at the
//! handshake (pid from the pipe, never from the peer's bytes), takes each one out of it with
//! `DuplicateHandle(.., DUPLICATE_CLOSE_SOURCE)`, which closes the sender's copy whether or
//! not it succeeds.
//!
//! Why pull and not push: a handle value pushed into the receiver's process cannot be checked
//! there (a hostile peer could name a handle the receiver already owns for something else);
//! a value pulled from the sender's process can only ever be one of the sender's handles.

use std::io;
use std::os::windows::io::{
    AsRawHandle, BorrowedHandle, FromRawHandle, IntoRawHandle, OwnedHandle,
};

use windows_sys::Win32::Foundation::{
    DuplicateHandle, DUPLICATE_CLOSE_SOURCE, DUPLICATE_SAME_ACCESS, HANDLE,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcess, PROCESS_DUP_HANDLE};

/// Opens the process at the other end of the pipe end `pipe` (`server`: it is a server end)
/// with `PROCESS_DUP_HANDLE`, to take handles out of it (`accept_descriptors` of either
/// stream). `None` (logged; then handles are neither offered nor agreed to) when the peer's
/// pid is unknown or its process refuses this one (usually: it runs as another user).
pub(super) fn open_peer(pipe: HANDLE, server: bool) -> Option<OwnedHandle> {
    let opened = super::stream::peer_pid(pipe, server).and_then(|pid| {
        open_process(
            pid.ok_or_else(|| io::Error::other("the pipe does not tell the peer's process id"))?,
        )
    });
    match opened {
        Ok(process) => Some(process),
        Err(e) => {
            tracing::debug!(error = %e, "cannot open the peer's process to take handles from it: handles are not passed on this connection");
            None
        }
    }
}

/// Process `pid`, opened with `PROCESS_DUP_HANDLE` (to duplicate handles out of it or into
/// it).
pub(super) fn open_process(pid: u32) -> io::Result<OwnedHandle> {
    // SAFETY: no pointers; on success we own the returned handle.
    let h = unsafe { OpenProcess(PROCESS_DUP_HANDLE, 0, pid) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a fresh, valid process handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// This process's own duplicates of `handles` (same access, not inheritable), whose values
/// are what a message sends: the caller keeps its handles whatever happens to the send. On
/// failure the duplicates made so far are closed and the error names the handle.
pub(crate) fn sender_copies(handles: &[BorrowedHandle<'_>]) -> io::Result<Vec<OwnedHandle>> {
    let mut copies = Vec::with_capacity(handles.len());
    for (i, h) in handles.iter().enumerate() {
        let mut out: HANDLE = std::ptr::null_mut();
        // SAFETY: `h` is a handle borrowed for the call, in this process (the pseudo-handle
        // of the current process as source and target process); `out` is valid for writes.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                h.as_raw_handle(),
                GetCurrentProcess(),
                &mut out,
                0,
                0,
                DUPLICATE_SAME_ACCESS,
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot duplicate handle #{i} of the message for the peer: {e}"),
            ));
        }
        // SAFETY: `out` is a fresh handle of this process that nothing else owns.
        copies.push(unsafe { OwnedHandle::from_raw_handle(out) });
    }
    Ok(copies)
}

/// The value of a sender's copy, as the message carries it (u64, little-endian).
pub(crate) fn value(copy: &OwnedHandle) -> u64 {
    copy.as_raw_handle() as usize as u64
}

/// Leaves the sender's copies open (their whole message went out: the receiver takes them
/// from it, and closing a value it has not taken yet would race with its pull). Each is
/// closed when the receiver takes it, or when this process exits.
pub(crate) fn leave(copies: Vec<OwnedHandle>) {
    for c in copies {
        let _ = c.into_raw_handle();
    }
}

/// Why a message's handles could not be taken: which one (by position) and the error.
#[derive(Debug)]
pub(crate) struct NotTaken {
    pub index: usize,
    pub error: io::Error,
}

/// Takes the handles `values` out of `process` (the sender, opened by [`open_peer`]) into
/// this process, in order, closing the sender's copies (`DUPLICATE_CLOSE_SOURCE` closes the
/// source even when the duplication fails). Every value is tried, so that whatever the
/// outcome none of them stays open in the sender; if one fails, those taken are closed again
/// and the first failure is returned (a value that is no handle of the sender: the peer does
/// not follow the protocol).
pub(crate) fn take(
    process: BorrowedHandle<'_>,
    values: &[u64],
) -> Result<Vec<OwnedHandle>, NotTaken> {
    let mut taken = Vec::with_capacity(values.len());
    let mut failed = None;
    for (index, &v) in values.iter().enumerate() {
        match take_one(process, v) {
            Ok(h) => taken.push(h),
            Err(error) => {
                failed.get_or_insert(NotTaken { index, error });
            }
        }
    }
    match failed {
        None => Ok(taken),
        Some(f) => Err(f),
    }
}

fn take_one(process: BorrowedHandle<'_>, value: u64) -> io::Result<OwnedHandle> {
    let Ok(v) = usize::try_from(value) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a handle value of this platform",
        ));
    };
    // A pseudo-handle (-1: "the current process", -2: its thread, ...) names no handle of
    // the sender's table; refused rather than resolved to the sender's process or thread.
    if (v as isize) < 0 || v == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{value:#x} is not a handle value"),
        ));
    }
    let source: HANDLE = std::ptr::without_provenance_mut(v);
    let mut out: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is an open process handle with PROCESS_DUP_HANDLE for the call;
    // `source` is only a value interpreted in that process's handle table (the call fails if
    // it names no handle there; it can never name one of ours); `out` is valid for writes.
    let ok = unsafe {
        DuplicateHandle(
            process.as_raw_handle(),
            source,
            GetCurrentProcess(),
            &mut out,
            0,
            0,
            DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `out` is a fresh handle of this process that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(out) })
}
