//! Endpoint files on Unix: where names live, the private directory, claiming a name safely,
//! recovering a dead server's leftovers, and removing only what we created.
//!
//! Claiming a name works with a lock file beside the socket (`<socket>.lock`), held with
//! `flock(LOCK_EX)` for the whole life of the server. The kernel drops the lock when its
//! holder dies, however it dies, so:
//!
//! - lock held by someone else: a live server owns the name, `AddrInUse`;
//! - lock acquired and a socket file present: the previous owner is dead, but the socket may
//!   still belong to a non-pipette server, so it is probed, and removed only if nobody answers;
//! - two servers racing for a stale name serialise on the lock: exactly one wins.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::access::{describe_owner, euid, is_own_user};
use super::stream::{sockaddr, socket, Stream};
use crate::error::{Error, Result};
use crate::sys::{Handshake, Holder, Probe, SysStream};

/// `sun_path` is 108 bytes on Linux, one of which is the terminating NUL.
const MAX_PATH: usize = 107;
const SUFFIX: &str = ".sock";

/// The per-user directory holding plain-name endpoints.
pub(super) fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Path::new(&dir).join("pipette"),
        _ => PathBuf::from(format!("/tmp/pipette-{}", euid())),
    }
}

fn check_len(path: &Path) -> std::result::Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_PATH {
        return Err(format!(
            "the socket path {} is {len} bytes, longer than the {MAX_PATH} bytes a Unix socket address holds; use a shorter name or path",
            path.display()
        ));
    }
    Ok(())
}

pub(crate) fn plain_endpoint(name: &str) -> std::result::Result<PathBuf, String> {
    let path = runtime_dir().join(format!("{name}{SUFFIX}"));
    check_len(&path)?;
    Ok(path)
}

pub(crate) fn explicit_endpoint(s: &str) -> Option<std::result::Result<PathBuf, String>> {
    if !s.starts_with('/') {
        return None;
    }
    Some((|| {
        if s.contains('\0') {
            return Err("the path contains a NUL byte".to_owned());
        }
        if s.ends_with('/') {
            return Err("the path names a directory; add a file name such as app.sock".into());
        }
        let path = PathBuf::from(s);
        check_len(&path)?;
        Ok(path)
    })())
}

/// Creates the private directory if needed and checks it: a real directory (not a symlink),
/// owned by us, mode not wider than `0700`.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::io(
                format!(
                    "cannot create the endpoint directory {}: its parent does not exist (is XDG_RUNTIME_DIR set to a real directory?)",
                    dir.display()
                ),
                e,
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Error::PermissionDenied(format!(
                "cannot create the endpoint directory {}: {e}",
                dir.display()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                format!("cannot create the endpoint directory {}", dir.display()),
                e,
            ))
        }
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let problem = if meta.file_type().is_symlink() {
        Some("is a symbolic link".to_owned())
    } else if !meta.is_dir() {
        Some("is not a directory".to_owned())
    } else if meta.uid() != euid() {
        Some(format!(
            "is owned by uid {}, not by you (uid {})",
            meta.uid(),
            euid()
        ))
    } else if meta.permissions().mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:o}, wider than 0700",
            meta.permissions().mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::PermissionDenied(format!(
            "the endpoint directory {} {p}; someone may be trying to intercept your endpoints. Remove it, or set XDG_RUNTIME_DIR to a private directory",
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// Issue #6: refuses an explicit endpoint's directory when every user may write to it and
/// it lacks the sticky bit (`/tmp`-like directories have it): there, anyone could replace
/// the socket. A missing directory is left to binding, which reports it.
pub(super) fn check_shared_dir(dir: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return Err(Error::PermissionDenied(format!(
            "the directory {} is writable by every user (mode {:o}) and has no sticky bit, so anyone could replace the endpoint; bind in a directory only trusted users can write to, or set its sticky bit (chmod +t)",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Asks whether a server answers at `path`.
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    match Stream::connect(path, &crate::sys::ConnectOptions::default()) {
        Ok(s) => Ok(Probe::Live(match s.peer() {
            Ok(peer) => Holder {
                pid: peer.pid,
                other_user: (peer.uid.is_some() && !is_own_user(&peer))
                    .then(|| describe_owner(&peer)),
            },
            Err(_) => Holder::default(),
        })),
        Err(e) => match e.kind() {
            io::ErrorKind::NotFound => Ok(Probe::Absent),
            io::ErrorKind::ConnectionRefused => Ok(Probe::Stale),
            // A full accept queue still means somebody is listening.
            io::ErrorKind::WouldBlock => Ok(Probe::Live(Holder::default())),
            _ => Err(e),
        },
    }
}

/// This user's endpoints: (name, socket path): the plain names, then the explicit paths it
/// serves (from its registry; the name is then the path).
pub(crate) fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>> {
    let dir = runtime_dir();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        out.push((name.to_owned(), entry.path()));
    }
    out.sort();
    // Then the explicit endpoints this user serves (by path).
    let mut explicit: Vec<(String, PathBuf)> = registered_endpoints()
        .into_iter()
        .map(|p| (p.display().to_string(), p))
        .collect();
    explicit.sort();
    out.extend(explicit);
    Ok(out)
}

/// A claimed name: the lock, the bound socket file's identity, and cleanup.
#[derive(Debug)]
pub(super) struct Claim {
    path: PathBuf,
    lock_path: PathBuf,
    lock: Option<OwnedFd>,
    /// (device, inode) of the socket file we created, to remove only that file.
    socket_id: Option<(u64, u64)>,
    /// This user's registry entry for an explicit path (see `register`), removed on release.
    registered: Option<PathBuf>,
}

impl Claim {
    /// Takes the name's lock; fails with `AddrInUse` when a live server holds it.
    pub(super) fn acquire(name: &str, path: &Path) -> Result<Claim> {
        let lock_path = lock_path(path);
        let c = cpath(&lock_path)?;
        loop {
            // SAFETY: `c` is a valid NUL-terminated path. O_NOFOLLOW refuses a planted symlink.
            let fd = unsafe {
                syscall!(open(
                    c.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o600 as libc::c_uint
                ))
            }
            .map_err(|e| open_error(e, &lock_path))?;
            // SAFETY: `fd` is fresh and owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: flock has no memory preconditions.
            let locked = unsafe { syscall!(flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)) };
            if let Err(e) = locked {
                if e.kind() == io::ErrorKind::WouldBlock {
                    let holder = match probe(path) {
                        Ok(Probe::Live(holder)) => holder,
                        _ => Holder::default(),
                    };
                    return Err(holder.in_use(name));
                }
                return Err(e.into());
            }
            // The previous holder may have removed the lock file between our open and our
            // flock; then we hold a lock on a file nobody else can see. Check and retry.
            let ours = std::fs::metadata(&lock_path)
                .ok()
                .map(|m| (m.dev(), m.ino()));
            // SAFETY: stat is plain old data; fstat fills it in.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `st` is valid for writes.
            unsafe { syscall!(fstat(fd.as_raw_fd(), &mut st))? };
            if ours == Some((st.st_dev, st.st_ino)) {
                return Ok(Claim {
                    path: path.to_owned(),
                    lock_path,
                    lock: Some(fd),
                    socket_id: None,
                    registered: None,
                });
            }
        }
    }

    /// With the lock held: clears a dead server's socket file, refusing to touch anything
    /// that is not a socket or that still answers.
    pub(super) fn clear_leftover(&self, name: &str) -> Result<()> {
        let meta = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(Error::io(
                format!(
                    "{} exists and is not a socket; pipette will not remove it. Move it away or pick another name",
                    self.path.display()
                ),
                io::ErrorKind::AlreadyExists.into(),
            ));
        }
        match probe(&self.path)? {
            Probe::Live(holder) => Err(holder.in_use(name)),
            Probe::Absent => Ok(()),
            Probe::Stale => {
                tracing::info!(path = %self.path.display(), "removing a stale endpoint left by a server that is gone");
                match std::fs::remove_file(&self.path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Binds a listening socket at the claimed path with the given file mode, without a
    /// moment where the file is more open than `mode`.
    pub(super) fn bind(&mut self, name: &str, mode: u32) -> Result<OwnedFd> {
        let (addr, len) = sockaddr(&self.path)?;
        let fd = socket(true)?;
        // The socket file is created with the socket inode's mode minus the umask, and
        // fchmod on an unbound socket sets that inode's mode: so the file never exists with
        // more permissions than `mode`.
        // SAFETY: fchmod has no memory preconditions.
        unsafe { syscall!(fchmod(fd.as_raw_fd(), mode as libc::mode_t))? };
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let bound = unsafe {
            syscall!(bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len
            ))
        };
        if let Err(e) = bound {
            return Err(match e.kind() {
                // Only a non-pipette process can get here (we hold the lock): it bound the
                // path after our check.
                io::ErrorKind::AddrInUse => Holder::default().in_use(name),
                io::ErrorKind::PermissionDenied => Error::PermissionDenied(format!(
                    "cannot create the socket {}: {e}",
                    self.path.display()
                )),
                // Issue #6: on a full (ENOSPC) or read-only (EROFS) file system, say which
                // socket could not be created instead of a bare OS error.
                _ => Error::io(
                    format!("cannot create the socket {}", self.path.display()),
                    e,
                ),
            });
        }
        let meta = std::fs::symlink_metadata(&self.path)?;
        self.socket_id = Some((meta.dev(), meta.ino()));
        // The umask may have narrowed the mode; widen it back to exactly `mode` (widening
        // after creation opens no window: the file was only ever narrower).
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))?;
        }
        // SAFETY: listen has no memory preconditions. The kernel caps the backlog.
        unsafe { syscall!(listen(fd.as_raw_fd(), 4096))? };
        Ok(fd)
    }

    /// Removes the socket file (only if it is still the one we created) and the lock file,
    /// and releases the lock. Idempotent.
    pub(super) fn release(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        if let Some(id) = self.socket_id.take() {
            if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
                if (meta.dev(), meta.ino()) == id {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
        // We still hold the lock, so the lock file at this path is ours to remove.
        let _ = std::fs::remove_file(&self.lock_path);
        if let Some(entry) = self.registered.take() {
            let _ = std::fs::remove_file(entry);
        }
        drop(lock);
    }

    /// Notes an explicit endpoint in this user's registry (`<runtime dir>/registry/`), so
    /// that `endpoints()` (and `pipette ls`) can list it; best effort: a registry that cannot
    /// be written only means the endpoint is not listed.
    pub(super) fn register(&mut self) {
        let dir = registry_dir();
        let made = ensure_private_dir(&runtime_dir()).and_then(|()| ensure_private_dir(&dir));
        if let Err(e) = made {
            tracing::debug!(error = %e, "cannot use the endpoint registry");
            return;
        }
        let entry = dir.join(registry_file(&self.path));
        match std::fs::write(&entry, self.path.as_os_str().as_bytes()) {
            Ok(()) => self.registered = Some(entry),
            Err(e) => tracing::debug!(error = %e, "cannot write the endpoint registry"),
        }
    }
}

/// Where this user's explicit endpoints are noted.
fn registry_dir() -> PathBuf {
    runtime_dir().join("registry")
}

/// The registry file of an explicit endpoint: a hash of its path (FNV-1a, 64 bits).
fn registry_file(path: &Path) -> String {
    let h = path
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{h:016x}.path")
}

/// The explicit endpoints in this user's registry. An entry whose socket file is gone is
/// left over from a server that died: it is removed.
fn registered_endpoints() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(registry_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
        if path.is_absolute() && std::fs::symlink_metadata(&path).is_ok() {
            out.push(path);
        } else {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    out
}

/// Removes a dead server's leftovers at `path` (socket and lock file, and its registry
/// entry), exactly as a new server would before binding, without binding. `Ok(false)` when
/// there was nothing to remove; `AddrInUse` when a server is live there.
pub(crate) fn remove_stale(name: &str, path: &Path) -> Result<bool> {
    let existed = std::fs::symlink_metadata(path).is_ok();
    let claim = Claim::acquire(name, path)?;
    claim.clear_leftover(name)?;
    if let Ok(bytes) = std::fs::read(registry_dir().join(registry_file(path))) {
        if bytes == path.as_os_str().as_bytes() {
            let _ = std::fs::remove_file(registry_dir().join(registry_file(path)));
        }
    }
    drop(claim);
    Ok(existed)
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.release();
    }
}

fn open_error(e: io::Error, path: &Path) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Error::PermissionDenied(format!(
            "{} is a symbolic link; pipette will not follow it. Remove it",
            path.display()
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied(format!(
            "cannot open {}: {e}. Check the directory's owner and permissions",
            path.display()
        )),
        Some(libc::ENOENT) => Error::io(
            format!(
                "cannot create {}: the directory does not exist; create it first",
                path.display()
            ),
            e,
        ),
        _ => Error::io(format!("cannot open {}", path.display()), e),
    }
}
