//! Who is on the other end of a connection.

/// The identity of a connection's peer, as the operating system reports it.
///
/// Every field is optional because not every platform reports every field:
///
/// | field | Linux (`SO_PEERCRED`) | Windows |
/// |-------|-----------------------|---------|
/// | `pid` | yes                   | yes (`GetNamedPipe{Client,Server}ProcessId`) |
/// | `uid` | yes                   | no      |
/// | `gid` | yes (primary group)   | no      |
/// | `sid` | no                    | a server's view: the client's user SID; a client's view: the owner of the server's pipe (its user) |
///
/// The identity is taken when the connection is made: a pid may since have exited. A
/// client's view of its server is what its [`Trust`](crate::Trust) policy was checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub(crate) pid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) sid: Option<String>,
    /// Windows, a client's view of its server: the pipe's group SID (for `Trust::Group`).
    pub(crate) group_sid: Option<String>,
}

impl PeerIdentity {
    /// The peer's process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The peer's effective user id (Unix).
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The peer's effective group id (Unix).
    pub fn gid(&self) -> Option<u32> {
        self.gid
    }

    /// The peer's user SID in string form, such as `S-1-5-21-…` (Windows).
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }
}
