//! Is a server there? Which endpoints does this user have?

use std::path::PathBuf;

use crate::error::Result;
use crate::{sys, IntoName};

/// What is at an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// A server is listening. The pid is given where the platform tells it.
    Live {
        /// The server's process id.
        pid: Option<u32>,
    },
    /// The endpoint exists but nobody listens: a server died without cleaning up. The next
    /// server to bind the name recovers it.
    Stale,
    /// Nothing is there.
    Absent,
}

/// One of this user's endpoints, from [`endpoints`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The plain name; for an explicit endpoint (Unix), its path.
    pub name: String,
    /// Where it lives.
    pub path: PathBuf,
    /// Whether a server answers there.
    pub liveness: Liveness,
}

/// Checks whether a server is listening on `name`, without disturbing it (a live server sees
/// a connection that closes before its handshake, which it drops silently).
///
/// ```
/// use pipette::{probe, Liveness, Server};
///
/// let name = format!("doc-probe-{}", std::process::id());
/// assert_eq!(probe(&name)?, Liveness::Absent);
/// let server = Server::bind(&name)?;
/// assert!(matches!(probe(&name)?, Liveness::Live { .. }));
/// # Ok::<(), pipette::Error>(())
/// ```
pub fn probe(name: impl IntoName) -> Result<Liveness> {
    let name = name.into_name()?;
    Ok(match sys::probe(name.path())? {
        sys::Probe::Absent => Liveness::Absent,
        sys::Probe::Stale => Liveness::Stale,
        sys::Probe::Live(holder) => Liveness::Live { pid: holder.pid },
    })
}

/// The current user's endpoints, live and stale: its plain names, sorted, then (on Unix) the
/// explicit paths it serves or served (noted in a per-user registry when bound; the name is
/// then the path).
///
/// On Windows the list comes from the pipe namespace (`\\.\pipe\`), which Wine cannot
/// list: there it is empty.
///
/// ```
/// use pipette::{endpoints, Liveness};
///
/// for e in endpoints()? {
///     match e.liveness {
///         Liveness::Live { pid: Some(pid) } => println!("{}: live, pid {pid}", e.name),
///         Liveness::Live { pid: None } => println!("{}: live", e.name),
///         _ => println!("{}: stale; pipette::remove_stale clears it", e.name),
///     }
/// }
/// # Ok::<(), pipette::Error>(())
/// ```
pub fn endpoints() -> Result<Vec<EndpointInfo>> {
    let mut out = Vec::new();
    for (name, path) in sys::list_endpoints()? {
        let liveness = match sys::probe(&path)? {
            sys::Probe::Absent => continue,
            sys::Probe::Stale => Liveness::Stale,
            sys::Probe::Live(holder) => Liveness::Live { pid: holder.pid },
        };
        out.push(EndpointInfo {
            name,
            path,
            liveness,
        });
    }
    Ok(out)
}

/// Removes what a dead server left at `name` (on Unix its socket file, lock file and registry
/// entry), exactly as the next server to bind it would, without binding; returns whether
/// something was there. A live server's endpoint is never touched ([`Error::AddrInUse`]), nor
/// is a file that is not a socket. On Windows there is never anything to remove (a pipe
/// disappears with its server).
///
/// # Errors
///
/// [`Error::InvalidName`], [`Error::AddrInUse`], [`Error::PermissionDenied`], [`Error::Io`].
///
/// [`Error::InvalidName`]: crate::Error::InvalidName
/// [`Error::AddrInUse`]: crate::Error::AddrInUse
/// [`Error::PermissionDenied`]: crate::Error::PermissionDenied
/// [`Error::Io`]: crate::Error::Io
pub fn remove_stale(name: impl IntoName) -> Result<bool> {
    let name = name.into_name()?;
    if matches!(sys::probe(name.path())?, sys::Probe::Absent) {
        return Ok(false);
    }
    sys::remove_stale(name.as_str(), name.path())
}
