//! Pipe names on Windows: where names live, probing, listing.
//!
//! A plain name `my-app` is the pipe `\\.\pipe\pipette-<SID>-my-app`, where `<SID>` is the
//! user's SID (`S-1-5-21-…`): names are per user, as on Unix, so two users who pick the same
//! plain name do not meet. The pipe namespace itself is global, though, and SIDs are not
//! secret: any local user can create another user's pipe name first (squatting). That is
//! what the rest of the backend guards against: the real server finds the name taken and
//! says by whom (`AddrInUse` with the holder's SID), and clients check the pipe's owner
//! before they send anything (`Trust`), so they refuse the squatter.
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

use std::os::windows::io::{FromRawHandle, OwnedHandle};

use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_PIPE_BUSY};
use windows_sys::Win32::System::Threading::CreateEventW;

use super::access::{describe_owner, is_own_user};
use super::stream::Stream;
use super::{wide, Event};
use crate::error::{Error, Result};
use crate::sys::{Handshake, Holder, Probe, SysStream};
use crate::Name;

/// Where pipes live.
const PIPE_ROOT: &str = r"\\.\pipe\";
/// What pipette puts in front of a plain name, before the user's SID.
const PREFIX: &str = "pipette-";

/// `pipette-<SID>-`: the start of this user's plain-name pipes.
fn user_prefix() -> Result<String, String> {
    match super::access::own_user_sid() {
        Some(sid) => Ok(format!("{PREFIX}{sid}-")),
        None => Err("cannot read this process's user SID, which plain names on Windows include; use a full pipe path (\\\\.\\pipe\\…) instead".to_owned()),
    }
}
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
    let path = format!("{PIPE_ROOT}{}{name}", user_prefix()?);
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
    match <Stream as SysStream>::connect(path, &crate::sys::ConnectOptions::default()) {
        Ok(s) => Ok(Probe::Live(match Handshake::peer(&s) {
            Ok(peer) => Holder {
                pid: peer.pid,
                other_user: (peer.sid.is_some() && !is_own_user(&peer))
                    .then(|| describe_owner(&peer)),
            },
            Err(_) => Holder::default(),
        })),
        Err(e) => match e.kind() {
            io::ErrorKind::NotFound => Ok(Probe::Absent),
            // Every instance busy: somebody is serving it.
            io::ErrorKind::WouldBlock => Ok(Probe::Live(Holder::default())),
            // A pipe we may not open exists: somebody else serves it.
            io::ErrorKind::PermissionDenied => Ok(Probe::Live(Holder {
                pid: None,
                other_user: Some("a user whose pipe this user may not open".to_owned()),
            })),
            _ => Err(e),
        },
    }
}

/// This user's plain-name endpoints: every pipe named `pipette-<own SID>-*`.
///
/// When the system does not let pipes be listed (`FindFirstFileW` on `\\.\pipe\*` fails,
/// as under Wine 8.0 with `ERROR_BAD_DEV_TYPE`), the list is empty.
pub(crate) fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>> {
    let pattern = wide(format!("{PIPE_ROOT}*").as_ref());
    let mut out = Vec::new();
    let Ok(prefix) = user_prefix() else {
        return Ok(out);
    };
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
        if let Some(name) = file.to_str().and_then(|f| f.strip_prefix(prefix.as_str())) {
            if crate::Name::new(name).is_ok_and(|n| n.is_plain()) {
                out.push((
                    name.to_owned(),
                    PathBuf::from(format!("{PIPE_ROOT}{prefix}{name}")),
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

/// Pipes vanish with their last handle: there are never leftovers to remove.
pub(crate) fn remove_stale(_name: &str, _path: &Path) -> crate::Result<bool> {
    Ok(false)
}

/// The error for a name that a live server (pipette's or not) holds.
fn in_use(name: &Name) -> Error {
    holder(name.path()).in_use(name.as_str())
}

/// The first step of binding: takes the claim on `name` and makes sure no server (pipette's
/// or not) answers there.
pub(super) fn claim_for_bind(name: &Name) -> Result<Claim> {
    let path = name.path();
    // Servers racing for one name serialise on the claim: exactly one gets it.
    let claim = match Claim::acquire(path)? {
        Some(c) => c,
        None => return Err(in_use(name)),
    };
    // Not a pipette server's name, but somebody else's pipe? Never take it over.
    // (FILE_FLAG_FIRST_PIPE_INSTANCE refuses a live name on Windows, but Wine ignores it.)
    match probe(path)? {
        Probe::Live(holder) => Err(holder.in_use(name.as_str())),
        Probe::Absent | Probe::Stale => Ok(claim),
    }
}

/// What a failure to create the first instance (`FILE_FLAG_FIRST_PIPE_INSTANCE`) of
/// `name`'s pipe means: somebody else serves it, or another error.
pub(super) fn first_instance_error(name: &Name, e: io::Error) -> Error {
    match e.raw_os_error().map(|c| c as u32) {
        Some(ERROR_ACCESS_DENIED) | Some(ERROR_PIPE_BUSY) => in_use(name),
        _ => Error::io(
            format!("cannot create the pipe {}", name.path().display()),
            e,
        ),
    }
}

/// Who serves the pipe at `path`, as far as a probe can tell.
fn holder(path: &Path) -> Holder {
    match probe(path) {
        Ok(Probe::Live(holder)) => holder,
        _ => Holder::default(),
    }
}

/// The claim on a pipe name: a named event `Local\pipette-claim-…` derived from the pipe
/// path, which the server creates and keeps open for its whole life.
///
/// `CreateEventW` on an existing name opens it and reports `ERROR_ALREADY_EXISTS`, atomically,
/// so of several servers racing for a name exactly one creates it; the others are refused with
/// `AddrInUse`. The kernel deletes the event with its last handle, however its holder ends, so
/// a crashed server leaves no claim behind (like `flock` on Unix). This is what makes binding
/// exclusive under Wine, which ignores `FILE_FLAG_FIRST_PIPE_INSTANCE`; on Windows it is a
/// second line of defence. `Local\` is the session's namespace; across sessions
/// `FILE_FLAG_FIRST_PIPE_INSTANCE` still refuses a second server.
#[derive(Debug)]
pub(super) struct Claim(#[allow(dead_code)] Event);

impl Claim {
    /// `Ok(None)` when another server holds the claim.
    fn acquire(path: &Path) -> io::Result<Option<Claim>> {
        let name = wide(claim_name(path).as_ref());
        // SAFETY: `name` is NUL-terminated; null attributes are allowed. On success we own
        // the returned handle (new or opened).
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, name.as_ptr()) };
        // SAFETY: no preconditions; read before any other call can overwrite it.
        let err = unsafe { GetLastError() };
        if h.is_null() {
            return match err {
                // Another user's claim that we may not open: the name is taken.
                ERROR_ACCESS_DENIED => Ok(None),
                _ => Err(super::os_error(err)),
            };
        }
        // SAFETY: `h` is a valid event handle that nothing else owns.
        let event = Event(unsafe { OwnedHandle::from_raw_handle(h) });
        if err == ERROR_ALREADY_EXISTS {
            return Ok(None);
        }
        Ok(Some(Claim(event)))
    }
}

/// The claim's object name for a pipe path: case-folded (pipe names are case-insensitive),
/// backslashes (not allowed in object names) replaced, and hashed when long.
fn claim_name(path: &Path) -> String {
    let key: String = path
        .to_string_lossy()
        .to_lowercase()
        .chars()
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    if key.len() <= 180 {
        return format!("Local\\pipette-claim-{key}");
    }
    // FNV-1a, 64 bits, twice with different offsets: collisions are not a practical concern.
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "Local\\pipette-claim-{}-{:016x}{:016x}",
        key.chars().take(100).collect::<String>(),
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_explicit_pipe_names() {
        let sid = super::super::access::own_user_sid().unwrap();
        assert!(sid.starts_with("S-1-"), "{sid}");
        assert_eq!(
            plain_endpoint("my-app").unwrap(),
            PathBuf::from(format!(r"\\.\pipe\pipette-{sid}-my-app"))
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
