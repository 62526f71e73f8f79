//! Who may connect to a server.

/// Which local users a server admits.
///
/// The policy is enforced twice: by the operating system's permissions on the endpoint
/// (Unix: the socket file's mode; Windows: the pipe's security descriptor), and by pipette
/// itself, which checks every accepted peer's identity before `accept` returns it. A refused
/// peer never reaches the server's code; it gets a clear `PermissionDenied` error. (On
/// Windows the DACL does the refusing for `Group` and `Everyone`: a refused client cannot
/// open the pipe and gets `PermissionDenied` from `connect`. pipette itself checks the
/// peer's user SID for `CurrentUser`.)
///
/// ```
/// use pipette::{Access, ServerOptions};
///
/// let options = ServerOptions::new().access(Access::CurrentUser); // the default
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// Only processes of the server's own user (Unix: the effective uid the server had when
    /// it bound, which owns the socket file; Windows: the pipe's DACL names only the
    /// server's user SID). The default.
    #[default]
    CurrentUser,
    /// Also processes whose user belongs to the server's group (Unix: the server's effective
    /// gid at bind, as primary or supplementary group; the socket is created `0660`. Windows: the
    /// DACL also admits the server's primary group SID).
    Group,
    /// Any local user (Unix: the socket is created `0666`; Windows: the DACL also admits
    /// Everyone, `S-1-1-0`, to read and write but not to create pipe instances). Remote
    /// clients are refused on every platform.
    Everyone,
}

impl Access {
    /// The policy's name as the command line spells it: `user`, `group` or `everyone`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Access::CurrentUser => "user",
            Access::Group => "group",
            Access::Everyone => "everyone",
        }
    }
}

impl std::str::FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Access, String> {
        match s {
            "user" | "current-user" => Ok(Access::CurrentUser),
            "group" => Ok(Access::Group),
            "everyone" => Ok(Access::Everyone),
            other => Err(format!(
                "unknown access policy {other:?}: use user, group or everyone"
            )),
        }
    }
}
