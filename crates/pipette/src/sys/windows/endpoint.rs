//! Pipe names on Windows: where names live, probing, listing.
//!
//! A plain name `my-app` is the pipe `\\.\pipe\pipette-my-app`. The pipe namespace is
//! global, not per user: two users who pick the same plain name meet (the second server gets
//! `AddrInUse`, and a client of another user's server is refused by its DACL). Per-user
//! protection comes from the pipe's security descriptor (see `access.rs`), not from the name.
//!
//! There are no files to go stale: a pipe disappears with its last handle. So a probe finds
//! a name `Absent` or `Live`, never `Stale`, and a crashed server leaves nothing to recover.

use std::io;
use std::os::windows::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_FILE_NOT_FOUND, ERROR_NO_MORE_FILES, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    FindClose, FindFirstFileW, FindNextFileW, WIN32_FIND_DATAW,
};

use super::stream::Stream;
use super::wide;
use crate::sys::Probe;

/// Where pipes live.
const PIPE_ROOT: &str = r"\\.\pipe\";
/// What pipette puts in front of a plain name.
const PREFIX: &str = "pipette-";
/// The longest pipe name, `\\.\pipe\` included.
const MAX_PIPE_NAME: usize = 256;

fn check_len(path: &str) -> Result<(), String> {
    let len = path.encode_utf16().count();
    if len > MAX_PIPE_NAME {
        return Err(format!(
            "the pipe name {path} is {len} characters, longer than the {MAX_PIPE_NAME} Windows allows; use a shorter name"
        ));
    }
    Ok(())
}

pub(crate) fn plain_endpoint(name: &str) -> Result<PathBuf, String> {
    let path = format!("{PIPE_ROOT}{PREFIX}{name}");
    check_len(&path)?;
    Ok(PathBuf::from(path))
}

/// `Some` for a full pipe path (`\\.\pipe\…`, any case), which is used as given.
pub(crate) fn explicit_endpoint(s: &str) -> Option<Result<PathBuf, String>> {
    let head = s.get(..PIPE_ROOT.len())?;
    if !head.eq_ignore_ascii_case(PIPE_ROOT) {
        return None;
    }
    Some((|| {
        let rest = &s[PIPE_ROOT.len()..];
        if rest.is_empty() {
            return Err(
                r"the pipe path has no name after \\.\pipe\; add one, such as \\.\pipe\my-app"
                    .to_owned(),
            );
        }
        if s.contains('\0') {
            return Err("the pipe path contains a NUL character".to_owned());
        }
        check_len(s)?;
        Ok(PathBuf::from(s))
    })())
}

/// Asks whether a server answers at `path` (opens the pipe as a client and closes it; the
/// server drops such a connection silently).
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    match Stream::connect(path, &crate::sys::ConnectOptions::default()) {
        Ok(s) => Ok(Probe::Live(s.peer().ok().and_then(|p| p.pid))),
        Err(e) => match e.kind() {
            io::ErrorKind::NotFound => Ok(Probe::Absent),
            // Every instance busy: somebody is serving it.
            io::ErrorKind::WouldBlock => Ok(Probe::Live(None)),
            // A pipe we may not open exists: somebody (another user) serves it.
            io::ErrorKind::PermissionDenied => Ok(Probe::Live(None)),
            _ => Err(e),
        },
    }
}

/// The plain-name endpoints on this machine: every pipe named `pipette-*`.
///
/// The pipe namespace is global, so this includes other users' servers too (a later connect
/// to one of them is refused by its DACL). When the system does not let pipes be listed
/// (`FindFirstFileW` on `\\.\pipe\*` fails, as under Wine 8.0 with `ERROR_BAD_DEV_TYPE`),
/// the list is empty.
pub(crate) fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>> {
    let pattern = wide(format!("{PIPE_ROOT}*").as_ref());
    let mut out = Vec::new();
    // SAFETY: WIN32_FIND_DATAW is plain old data; all-zero is valid and is filled in below.
    let mut data: WIN32_FIND_DATAW = unsafe { std::mem::zeroed() };
    // SAFETY: `pattern` is NUL-terminated; `data` is valid for writes.
    let find = unsafe { FindFirstFileW(pattern.as_ptr(), &mut data) };
    if find == INVALID_HANDLE_VALUE {
        // SAFETY: no preconditions.
        let err = unsafe { GetLastError() };
        tracing::debug!(error = err, "cannot list named pipes");
        return Ok(out);
    }
    loop {
        let len = data
            .cFileName
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(data.cFileName.len());
        let file = std::ffi::OsString::from_wide(&data.cFileName[..len]);
        if let Some(name) = file.to_str().and_then(|f| f.strip_prefix(PREFIX)) {
            if crate::Name::new(name).is_ok_and(|n| n.is_plain()) {
                out.push((
                    name.to_owned(),
                    PathBuf::from(format!("{PIPE_ROOT}{PREFIX}{name}")),
                ));
            }
        }
        // SAFETY: `find` is a live search handle; `data` is valid for writes.
        if unsafe { FindNextFileW(find, &mut data) } == 0 {
            // SAFETY: no preconditions.
            let err = unsafe { GetLastError() };
            if err != ERROR_NO_MORE_FILES && err != ERROR_FILE_NOT_FOUND {
                tracing::debug!(error = err, "listing named pipes stopped early");
            }
            break;
        }
    }
    // SAFETY: `find` is a live search handle, closed once.
    unsafe { FindClose(find) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_explicit_pipe_names() {
        assert_eq!(
            plain_endpoint("my-app").unwrap(),
            PathBuf::from(r"\\.\pipe\pipette-my-app")
        );
        assert!(explicit_endpoint("my-app").is_none());
        assert_eq!(
            explicit_endpoint(r"\\.\PIPE\x\y").unwrap().unwrap(),
            PathBuf::from(r"\\.\PIPE\x\y")
        );
        assert!(explicit_endpoint(r"\\.\pipe\").unwrap().is_err());
        let long = format!(r"\\.\pipe\{}", "x".repeat(250));
        assert!(explicit_endpoint(&long)
            .unwrap()
            .unwrap_err()
            .contains("256"));
    }
}
