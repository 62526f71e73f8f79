//! The platform layer: everything that differs between operating systems lives below here.
//!
//! The rest of the crate is platform-free and talks to the OS only through the contract below.
//! Each backend (`unix/`, `windows/`) provides exactly these items, with the same
//! meaning; all `unsafe` code of the crate is in the backends, each block with a `SAFETY`
//! comment.
//!
//! # The contract
//!
//! Names and endpoints:
//! - `fn plain_endpoint(name: &str) -> Result<PathBuf, String>`: where a plain (already
//!   validated) name lives for the current user, or why it cannot (for example, too long).
//! - `fn explicit_endpoint(s: &str) -> Option<Result<PathBuf, String>>`: `Some` when `s` is
//!   the platform's explicit form (Unix: an absolute path), with the reason if it is unusable.
//! - `fn probe(path: &Path) -> io::Result<Probe>`: is a server answering there, its pid, and
//!   who runs it when that is another user (`Holder`).
//! - `fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>>`: this user's plain-name
//!   endpoints.
//!
//! Access policy, both ways:
//! - `Owner::current()`: the server's user, captured at bind; `fn admits(access: Access,
//!   owner: &Owner, peer: &PeerIdentity) -> bool`: may this peer connect.
//! - `fn trusts(trust: &Trust, server: &PeerIdentity) -> io::Result<bool>`: may this client
//!   talk to the server it reached (`server` is `Stream::peer` of a client stream: Unix
//!   `SO_PEERCRED`; Windows the pipe's owner and group); `InvalidInput` for a `Trust::User`
//!   that names nobody. `describe_server(&PeerIdentity) -> String` says who runs a server,
//!   and `SYSTEM_USERS` who "the system" is, for messages.
//!
//! `Listener` (one bound endpoint):
//! - `Listener::bind(&Name, &ListenOptions) -> crate::Result<Listener>`: claim the endpoint
//!   safely (never take a live server's name, recover a dead one's), with the access policy
//!   applied from the first instant. A backend whose plain names other users cannot reach
//!   (Unix: the private per-user directory) refuses a wider access policy for them with
//!   `InvalidName`, saying what to do instead.
//! - `Listener::accept(&self, timeout) -> io::Result<(Stream, [u8; HELLO_LEN], usize)>`: the
//!   next connection whose first `ListenOptions::prefix_len` bytes have arrived (or whose
//!   first bytes fail `ListenOptions::prefix_ok`); the bytes and their count are returned. A peer that is slow to send them never delays other peers: it is dropped after
//!   `ListenOptions::handshake_timeout`. Fails with `ErrorKind::TimedOut` when `timeout`
//!   expires.
//! - `Cancel for Listener`: `cancel` wakes every blocked `accept` promptly and makes later ones
//!   fail; once `finish` returns (Unix: already once `cancel` does) the endpoint is released
//!   (a new server may bind the name at once). A listener's `accept` reports its shutdown only
//!   once the endpoint is released, or the caller calls `cancel` + `finish` itself first.
//!
//! `Stream` (one connected byte stream):
//! - `Stream::connect(path, &ConnectOptions) -> io::Result<Stream>`: `NotFound` when nothing
//!   is there, `ConnectionRefused` when a dead endpoint is there, `WouldBlock` when the server
//!   is alive but its queue is full (try again later).
//! - `read`, `read_append` (into a `Vec`'s spare capacity), `write`, `write2` (header and
//!   payload in one system call): blocking, restarted on `EINTR`; a timeout set with
//!   `set_read_timeout`/`set_write_timeout` ends them with `WouldBlock` or `TimedOut`. These
//!   are byte-stream operations on every stream, message pipes included (a read may return
//!   part of a message; the rest follows).
//! - `read_message(&self, buf, chunk)`: raw mode's receive. On a message pipe
//!   (`message_pipe`, Windows only) it appends exactly one whole message to `buf`, however
//!   large; otherwise it is `read_append(buf, chunk)`.
//! - `Cancel for Stream`: `cancel` wakes every blocked read and write on the stream promptly,
//!   for good (reads then see end-of-stream, writes fail); `finish` returns once the stream's
//!   OS handle is closed (Windows: the woken threads let go of it first), so that the peer
//!   sees the end and the name is free. It costs nothing per message: it acts on the stream
//!   itself rather than on something each call would have to poll.
//! - `shutdown_write`: orderly end of our sending direction.
//! - `HALF_CLOSE: bool`: whether `shutdown_write` leaves our reading direction open. Where it
//!   does not (Windows pipes), framed connections end their sending direction with an
//!   end-of-stream header instead (`frame::FLAG_END`), so that `close` of a send half means
//!   the same everywhere.
//! - `peer(&self) -> io::Result<PeerIdentity>`: the peer's process and user.
//!
//! With the `tokio` feature, `aio` (async I/O on tokio's reactor):
//! - `aio::Listener::bind(&Name, &ListenOptions)`: the same claim as `Listener::bind`;
//!   `accept(&self).await -> io::Result<(aio::Stream, [u8; HELLO_LEN], usize)>` (cancel safe;
//!   the bytes of the hello read so far: none on Unix, whose caller reads them, the whole
//!   hello on Windows, whose pump reads it); `Cancel` as above. Its accept loop must notice
//!   the cancel itself, whatever readiness the reactor reports (a shut-down Linux listener
//!   stays readable while `accept4` says `EAGAIN`).
//! - `aio::connect(path, &ConnectOptions).await -> io::Result<aio::Stream>`, errors as for
//!   `Stream::connect`; Windows refuses `message_pipe` there (and at `aio::Listener::bind`)
//!   with `Unsupported`: message pipes are blocking-only for now.
//! - `aio::Stream`: `poll_read_ready`, `try_read`, `try_read_buf`, `poll_write_ready`,
//!   `try_write_vectored` (readiness first, then a non-blocking attempt, like tokio's own
//!   sockets, all on `&self` so that the stream can be shared with a `Shutdown` registry),
//!   `shutdown_write`, `peer`, and `Cancel` (wakes every waiting task, for good, at no
//!   per-message cost).
//!
//! # Where Windows differs (`windows/`)
//!
//! - Names: a plain name `x` is the pipe `\\.\pipe\pipette-<SID>-x` (`<SID>`: the user's);
//!   an explicit endpoint is a full `\\.\pipe\…` path (at most 256 characters). The pipe
//!   namespace is global: per-user protection comes from the pipe's DACL (who may connect)
//!   and its owner (clients check it: `trusts`), so plain names may be bound with any
//!   `Access` (unlike Unix, where they live in a private directory).
//! - A pipe disappears with its last handle: probes never find `Stale`, and
//!   `list_endpoints` lists this user's `pipette-<SID>-*` pipes.
//! - Peers are identified by pid and user SID (no uid/gid). `admits` checks the SID for
//!   `CurrentUser` and otherwise relies on the DACL, which has already refused everyone the
//!   policy does not admit (it sees the peer's groups, pipette does not).
//! - `ListenOptions::message_pipe` / `ConnectOptions::message_pipe` make message-type pipes
//!   (`PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE`): each `write` is one pipe message, and
//!   `read_message` returns one whole message (continuing after `ERROR_MORE_DATA`). Unix
//!   ignores both fields.
//! - `shutdown_write` closes the whole pipe end (pipes have no half-close): the peer reads
//!   everything sent and then end-of-stream, but our own later reads see end-of-stream too.
//!   The same holds for `aio::Stream`. So `HALF_CLOSE` is false: framed connections send
//!   the end-of-stream header and keep the pipe open for reading; raw streams (no framing
//!   to carry the marker) close the pipe.
//! - `aio` (`windows/aio.rs`) accepts through the blocking listener (its pump reads the
//!   hello) and hands each connection to tokio's named pipes. `aio::Stream::read_now` cannot
//!   bypass tokio's readiness (mio keeps its own read in flight), so on a fresh pipe it may
//!   report `WouldBlock` although the bytes are there (the caller then waits, as it must
//!   anyway); `write_now` does bypass it. `Cancel` of a stream closes the pipe and wakes the
//!   parked tasks itself; the handle closes moments later, once the reactor has collected
//!   mio's cancelled operations (so an async connection's pipe instance may outlive
//!   `Shutdown::shutdown` by that long).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(not(any(unix, windows)))]
compile_error!("pipette supports Unix (Linux) and Windows");

/// What a probe of an endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing is there.
    Absent,
    /// Something is there but nobody answers: a crashed server's leftover. Never on Windows,
    /// where a pipe disappears with its last handle.
    #[cfg_attr(windows, allow(dead_code))]
    Stale,
    /// A server answered.
    Live(Holder),
}

/// Who holds a live endpoint, as far as a probe can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The server's pid, where the platform tells.
    pub pid: Option<u32>,
    /// Who the server runs as, when that is another user than this process's.
    pub other_user: Option<String>,
}

impl Holder {
    /// The error for binding a name this holder serves.
    pub(crate) fn in_use(self, name: &str) -> crate::Error {
        crate::Error::AddrInUse {
            name: name.to_owned(),
            pid: self.pid,
            other_user: self.other_user,
        }
    }
}

/// What a backend needs to know to bind.
#[derive(Debug, Clone)]
pub(crate) struct ListenOptions {
    pub access: crate::Access,
    /// Raw mode: no hello to wait for (the protocol engine's `HelloReader` says when a
    /// connection's first bytes are enough; the listener only moves them).
    pub raw: bool,
    pub handshake_timeout: std::time::Duration,
    /// The endpoint lives in pipette's per-user directory, which is created and checked.
    /// (Windows has no such directory: plain names are global pipe names.)
    #[cfg_attr(windows, allow(dead_code))]
    pub private_dir: bool,
    /// Windows: create message-type pipe instances read in message mode. Unix: ignored.
    #[cfg_attr(unix, allow(dead_code))]
    pub message_pipe: bool,
}

/// What a backend needs to know to connect.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ConnectOptions {
    /// Windows: read the pipe in message mode (`PIPE_READMODE_MESSAGE`); the server's pipe
    /// must be a message-type pipe. Unix: ignored.
    #[cfg_attr(unix, allow(dead_code))]
    pub message_pipe: bool,
}

/// What the handshake needs of a connected stream, blocking or async: the calls that never
/// wait (see `crate::handshake`).
pub(crate) trait Handshake: Cancel + Send + Sync + 'static {
    /// The peer's identity as the operating system reports it: a server's view of its client
    /// (Unix `SO_PEERCRED`; Windows the client's token), a client's view of its server (Unix
    /// `SO_PEERCRED`; Windows the pipe's owner and group).
    fn peer(&self) -> std::io::Result<crate::PeerIdentity>;

    /// The peer's supplementary groups, where the platform tells them without a user
    /// database lookup (Linux: `SO_PEERGROUPS`); `None` elsewhere.
    fn peer_groups(&self) -> Option<Vec<u32>>;

    /// Writes without waiting (the 16-byte hello or reply, into a fresh stream's empty send
    /// buffer).
    fn write_now(&self, buf: &[u8]) -> std::io::Result<usize>;
}

/// Something a [`Shutdown`](crate::Shutdown) can wake.
///
/// Cancelling has two steps so that a shutdown of many objects costs the longest wait, not
/// the sum of them: `Shutdown::shutdown` calls `cancel` on every registered object first,
/// then `finish` on each.
pub(crate) trait Cancel: Send + Sync {
    /// Wakes every blocked operation for good. Must be idempotent and must not block (beyond
    /// short, bounded work such as removing the endpoint's files).
    fn cancel(&self);

    /// Waits until the cancel has taken full effect: the OS object's handles are closed and
    /// its endpoint released (a woken thread may still be letting go of a handle when
    /// `cancel` returns). Idempotent, and safe to call from several threads at once: each
    /// call returns only once the work is done. Bounded. Called after `cancel`.
    fn finish(&self) {}
}
