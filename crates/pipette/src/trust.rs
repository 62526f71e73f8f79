//! Which servers a client talks to.

use std::fmt;

/// Which servers a client trusts: the client's side of the access policy.
///
/// A server checks every client against its [`Access`](crate::Access) policy; a client checks
/// the server just as carefully, **before it sends a byte**. Whoever can create an endpoint
/// where a client looks for its server (another local user squatting on a Windows pipe name,
/// or serving a socket in a shared directory) would otherwise receive the client's data and
/// have its answers believed. The server's identity is what the operating system reports
/// right after connecting, so the check costs no round trip: on Unix the user and group of
/// the server process (`SO_PEERCRED`), on Windows the owner and group of the pipe (its
/// security descriptor, as .NET's `PipeOptions.CurrentUserOnly` checks it).
///
/// Every policy trusts the client's own user and **the system** (Unix: root; Windows:
/// LocalSystem and the Administrators group), who could read everything anyway; the wider
/// policies add to that. A server outside the policy is refused with
/// [`Error::UntrustedServer`](crate::Error::UntrustedServer), which names who runs it.
///
/// ```
/// use pipette::{ClientOptions, Trust};
///
/// // The default: only servers of my own user (or the system).
/// let options = ClientOptions::new();
/// // A daemon run by another account, at a path both can reach.
/// let options = ClientOptions::new().trust(Trust::User("postgres".into()));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trust {
    /// Servers run by the client's own user, or by the system. The default.
    #[default]
    CurrentUser,
    /// Also servers whose group is one of the client's groups: the pairing of a server
    /// bound with [`Access::Group`](crate::Access::Group). Unix: the server process's
    /// effective group (which is what its `Group` policy admits) is the client's effective
    /// group or one of its supplementary groups. Windows: the pipe's group (a pipette
    /// server's primary group) is a group of the client's token.
    Group,
    /// Also servers run by this user: on Unix a user name or a numeric uid; on Windows a
    /// SID (`S-1-5-…`) or an account name (`DOMAIN\user`). Resolved when connecting; a name
    /// that does not resolve fails the connection (an `Io` error of kind `InvalidInput`
    /// naming it) before anything is sent.
    User(String),
    /// Any server at all. Only for endpoints that nobody else could have created (a
    /// directory only trusted users can write to), or for servers you do not mind
    /// impersonated.
    Everyone,
}

impl Trust {
    /// The policy as the command line spells it: `user`, `group`, `user:NAME`, `everyone`.
    pub fn as_str(&self) -> String {
        match self {
            Trust::CurrentUser => "user".into(),
            Trust::Group => "group".into(),
            Trust::User(u) => format!("user:{u}"),
            Trust::Everyone => "everyone".into(),
        }
    }
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl std::str::FromStr for Trust {
    type Err = String;

    /// `user` (or `current-user`), `group`, `everyone`, or `user:NAME` for one more user.
    fn from_str(s: &str) -> Result<Trust, String> {
        match s {
            "user" | "current-user" => Ok(Trust::CurrentUser),
            "group" => Ok(Trust::Group),
            "everyone" => Ok(Trust::Everyone),
            other => match other.strip_prefix("user:") {
                Some(u) if !u.is_empty() => Ok(Trust::User(u.to_owned())),
                _ => Err(format!(
                    "unknown trust policy {other:?}: use user, group, everyone or user:NAME"
                )),
            },
        }
    }
}
