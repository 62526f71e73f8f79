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
//!
//! # Where a plain name lives
//!
//! In the per-user directory `D` (`runtime_dir`), as `D/<name>.sock` when that path fits
//! the portable socket address (`PLAIN_PATH_MAX`, 103 bytes: macOS's and the BSDs' 104-byte
//! `sun_path` less its NUL, so that the same rule gives the same path on every Unix), else
//! as `D/+<h>.sock`, `<h>` being the FNV-1a 64-bit hash of the name's bytes in 16 lowercase
//! hex digits (`+` is not allowed in plain names, so a hashed file never meets a plain
//! one). The server then writes the name into the lock file, which is how `endpoints()`
//! (and `pipette ls`) still show it. Beyond that (a directory over 80 bytes) the name is
//! refused with a message naming the directory. docs/PROTOCOL.md §8 has the rule with test
//! vectors.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::access::{describe_owner, euid, is_own_user};
use super::os;
use super::socket::{address, socket};
use super::stream::Stream;
use crate::error::{Error, Result};
use crate::sys::{Handshake, Holder, Probe, SysStream};

/// The longest socket path of a plain name, the same on every Unix: `sun_path` is 104
/// bytes on macOS and the BSDs (108 on Linux), one of which is the terminating NUL.
pub(crate) const PLAIN_PATH_MAX: usize = 103;
const SUFFIX: &str = ".sock";
/// The first character of a hashed file name (never in a plain name).
const HASHED: char = '+';
/// The length of a hashed file name: `+`, 16 hex digits, `.sock`.
const HASHED_LEN: usize = 1 + 16 + SUFFIX.len();

/// The per-user directory holding plain-name endpoints: `$XDG_RUNTIME_DIR/pipette` when
/// `XDG_RUNTIME_DIR` is an absolute path, else the system's own choice (`os`): Linux and
/// FreeBSD `/tmp/pipette-<uid>`, macOS `~/Library/Caches/pipette`.
pub(super) fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => in_dir(Path::new(&dir), &["pipette"]),
        _ => os::default_runtime_dir(),
    }
}

/// FNV-1a, 64 bits (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An explicit path must fit this system's socket address.
fn check_len(path: &Path) -> std::result::Result<(), String> {
    let len = path.as_os_str().len();
    let max = os::SUN_PATH_MAX;
    if len > max {
        return Err(format!(
            "the socket path {} is {len} bytes, longer than the {max} bytes a Unix socket address holds; use a shorter name or path",
            path.display()
        ));
    }
    Ok(())
}

pub(crate) fn plain_endpoint(name: &str) -> std::result::Result<PathBuf, String> {
    plain_path(&runtime_dir(), name)
}

/// `dir` joined with the file name made of `parts` (as `Path::join` would), in one
/// allocation: a client resolves its name on every connect, where `format!` and `join`
/// cost more instructions than the connect's own system calls.
fn in_dir(dir: &Path, parts: &[&str]) -> PathBuf {
    let dir = dir.as_os_str();
    let len = parts.iter().map(|p| p.len()).sum::<usize>();
    let mut path = std::ffi::OsString::with_capacity(dir.len() + 1 + len);
    path.push(dir);
    if !dir.as_bytes().ends_with(b"/") {
        path.push("/");
    }
    for part in parts {
        path.push(part);
    }
    PathBuf::from(path)
}

/// Where the plain name `name` lives in the directory `dir` (see the module's doc).
pub(crate) fn plain_path(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let full = in_dir(dir, &[name, SUFFIX]);
    if full.as_os_str().len() <= PLAIN_PATH_MAX {
        return Ok(full);
    }
    let hashed = in_dir(dir, &[&hashed_file_name(name)]);
    if hashed.as_os_str().len() <= PLAIN_PATH_MAX {
        return Ok(hashed);
    }
    let dir_len = dir.as_os_str().len();
    Err(format!(
        "the endpoint directory {} is {dir_len} bytes long, too long for this name: a Unix socket address holds {PLAIN_PATH_MAX} bytes, and a long name needs a directory of at most {} bytes (its socket then gets a short hashed file name). Set XDG_RUNTIME_DIR to a shorter directory (pipette uses its pipette/ subdirectory), use a shorter name, or bind an explicit path",
        dir.display(),
        PLAIN_PATH_MAX - 1 - HASHED_LEN
    ))
}

/// `+<FNV-1a 64 of the name, 16 lowercase hex digits>.sock`.
fn hashed_file_name(name: &str) -> String {
    format!("{HASHED}{:016x}{SUFFIX}", fnv1a64(name.as_bytes()))
}

/// Whether `path` is a hashed plain-name endpoint (its name is in its lock file).
fn is_hashed(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|f| f.as_bytes().starts_with(&[HASHED as u8]))
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
        let path = entry.path();
        if name.starts_with(HASHED) {
            // A hashed file: its name is in its lock file (see `Claim::record_name`), and
            // must lead back here.
            let recorded = std::fs::read(lock_path(&path)).ok();
            let name = recorded
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|n| crate::Name::new(n).ok())
                .filter(|n| n.is_plain() && n.path() == path);
            if let Some(name) = name {
                out.push((name.as_str().to_owned(), path));
            }
            continue;
        }
        out.push((name.to_owned(), path));
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
        loop {
            // O_NOFOLLOW refuses a planted symlink.
            let fd = rustix::fs::open(
                &lock_path,
                OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| open_error(e.into(), &lock_path))?;
            if let Err(e) = rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
                if e == Errno::WOULDBLOCK {
                    let holder = match probe(path) {
                        Ok(Probe::Live(holder)) => holder,
                        _ => Holder::default(),
                    };
                    return Err(holder.in_use(name));
                }
                return Err(io::Error::from(e).into());
            }
            // The previous holder may have removed the lock file between our open and our
            // flock; then we hold a lock on a file nobody else can see. Check and retry.
            let ours = std::fs::metadata(&lock_path)
                .ok()
                .map(|m| (m.dev(), m.ino()));
            let st = rustix::fs::fstat(&fd).map_err(io::Error::from)?;
            if ours == Some((st.st_dev as u64, st.st_ino as u64)) {
                let mut claim = Claim {
                    path: path.to_owned(),
                    lock_path,
                    lock: Some(fd),
                    socket_id: None,
                    registered: None,
                };
                if is_hashed(path) {
                    claim.record_name(name)?;
                }
                return Ok(claim);
            }
        }
    }

    /// Writes the name into the lock file of a hashed endpoint, for `list_endpoints`.
    fn record_name(&mut self, name: &str) -> Result<()> {
        let Some(fd) = self.lock.as_ref() else {
            return Ok(());
        };
        rustix::fs::ftruncate(fd, 0).map_err(io::Error::from)?;
        rustix::io::pwrite(fd, name.as_bytes(), 0).map_err(io::Error::from)?;
        Ok(())
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
        let addr = address(&self.path)?;
        let fd = socket(true)?;
        // Linux: the socket file is created with the socket inode's mode minus the umask,
        // and fchmod on an unbound socket sets that inode's mode: so the file never exists
        // with more permissions than `mode`. macOS and the BSDs refuse fchmod on a socket
        // (EINVAL) and create the file with 0777 minus the umask; there the file's mode is
        // set below, after bind and before listen: until listen, every connect is refused
        // whatever the mode, so no peer gets in through a wider mode either way.
        #[cfg(all(target_os = "linux", not(pipette_portable)))]
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io::Error::from)?;
        if let Err(e) = rustix::net::bind(&fd, &addr) {
            let e = io::Error::from(e);
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
        // The umask may have narrowed the mode (or, where fchmod cannot set it, left it
        // wider): set exactly `mode`, before listen (see above).
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))?;
        }
        // The kernel caps the backlog.
        rustix::net::listen(&fd, 4096).map_err(io::Error::from)?;
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
    format!("{:016x}.path", fnv1a64(path.as_os_str().as_bytes()))
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
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    match errno {
        // O_NOFOLLOW on a symlink: ELOOP, but EMLINK on FreeBSD.
        Some(Errno::LOOP) | Some(Errno::MLINK) => Error::PermissionDenied(format!(
            "{} is a symbolic link; pipette will not follow it. Remove it",
            path.display()
        )),
        Some(Errno::ACCESS) | Some(Errno::PERM) => Error::PermissionDenied(format!(
            "cannot open {}: {e}. Check the directory's owner and permissions",
            path.display()
        )),
        Some(Errno::NOENT) => Error::io(
            format!(
                "cannot create {}: the directory does not exist; create it first",
                path.display()
            ),
            e,
        ),
        _ => Error::io(format!("cannot open {}", path.display()), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_dir_joins_as_path_join_does() {
        for dir in ["/run/user/1000", "/run/user/1000/", "/", "/tmp/pipette-0"] {
            assert_eq!(
                in_dir(Path::new(dir), &["my-app", SUFFIX]),
                Path::new(dir).join(format!("my-app{SUFFIX}")),
                "{dir}"
            );
        }
        assert_eq!(
            in_dir(Path::new("/run/user/1000"), &["pipette"]),
            Path::new("/run/user/1000/pipette")
        );
    }

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        // From the FNV reference test suite (Fowler, Noll, Vo).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn long_names_get_a_short_hashed_file_name() {
        let dir = Path::new("/run/user/1000/pipette");
        assert_eq!(
            plain_path(dir, "my-app").unwrap(),
            Path::new("/run/user/1000/pipette/my-app.sock")
        );
        let long = "a".repeat(100);
        let p = plain_path(dir, &long).unwrap();
        assert_eq!(
            p,
            dir.join(format!("+{:016x}.sock", fnv1a64(long.as_bytes())))
        );
        assert!(is_hashed(&p));
        // The longest full path that is not hashed, and the first that is.
        let base = dir.as_os_str().len() + 1 + SUFFIX.len();
        let fits = "b".repeat(PLAIN_PATH_MAX - base);
        assert!(!is_hashed(&plain_path(dir, &fits).unwrap()));
        let over = "b".repeat(PLAIN_PATH_MAX - base + 1);
        assert!(is_hashed(&plain_path(dir, &over).unwrap()));
    }

    #[test]
    fn directories_up_to_80_bytes_take_every_name() {
        let name = "n".repeat(crate::name::MAX_PLAIN_LEN);
        let ok = PathBuf::from(format!("/{}", "d".repeat(79)));
        assert_eq!(ok.as_os_str().len(), 80);
        assert_eq!(plain_path(&ok, &name).unwrap().as_os_str().len(), 103);
        let too_long = PathBuf::from(format!("/{}", "d".repeat(80)));
        let reason = plain_path(&too_long, &name).unwrap_err();
        assert!(reason.contains(&*too_long.to_string_lossy()), "{reason}");
        assert!(reason.contains("81 bytes"), "{reason}");
        // A name short enough for its full path still fits there.
        assert!(plain_path(&too_long, "x").is_ok());
    }
}
