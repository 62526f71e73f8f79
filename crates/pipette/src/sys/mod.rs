//! The platform layer: everything that differs between operating systems lives below here.
//!
//! The rest of the crate is platform-free and talks to the OS only through the contract
//! below, written as traits so that the compiler checks every backend against it: a backend
//! (`unix/` on Linux, macOS and FreeBSD; `windows/`) provides a `Platform` type implementing [`Backend`], whose
//! associated `Stream` and `Listener` implement [`SysStream`] and [`SysListener`] (and, with
//! the `tokio` feature, `aio::Stream` implements [`AsyncStream`]). The free functions and
//! type aliases at the end of this file are the only way the rest of the crate reaches a
//! backend, and they go through the traits.
//!
//! What a backend does **not** do: interpret a byte. Hellos, replies and frames are the
//! protocol engine's (`crate::proto`); a listener moves a connection's first bytes into the
//! engine's `HelloReader` and hands the connection over when the reader is done.
//!
//! All `unsafe` code of the crate is in the backends, each block with a `SAFETY` comment.
//!
//! Another OS gets one clear `compile_error!` below (mio's `shell` backend is the model).
//!
//! # The platforms
//!
//! | | Linux | macOS | FreeBSD | Windows |
//! |---|---|---|---|---|
//! | transport | Unix stream socket | Unix stream socket | Unix stream socket | named pipe |
//! | plain name `x` lives at | `$XDG_RUNTIME_DIR/pipette/x.sock`, else `/tmp/pipette-<uid>/x.sock` | `$XDG_RUNTIME_DIR/pipette/x.sock`, else `~/Library/Caches/pipette/x.sock` | as Linux | `\\.\pipe\pipette-<SID>-x` |
//! | long plain names | file `+<fnv1a64>.sock` beyond 103 bytes | same | same | fit as they are |
//! | explicit endpoint | absolute path, ≤ 107 bytes | absolute path, ≤ 103 bytes | absolute path, ≤ 103 bytes | `\\.\pipe\…` |
//! | peer's user | `SO_PEERCRED` (uid, gid) | `getpeereid` (uid, gid) | `LOCAL_PEERCRED` (uid, first group) | client token / pipe owner (SID) |
//! | peer's pid | `SO_PEERCRED` | `LOCAL_PEERPID` | `LOCAL_PEERCRED` `cr_pid` (13 and later) | `GetNamedPipe*ProcessId` |
//! | peer's groups (`Access::Group`) | `SO_PEERGROUPS` (all) | `LOCAL_PEERCRED` (at most 16) | `LOCAL_PEERCRED` (at most 16) | the pipe's DACL |
//! | accept | `accept4(CLOEXEC)` | `accept` + `fcntl` + `ioctl(FIONBIO)` + `SO_NOSIGPIPE` | `accept4(CLOEXEC)` + `SO_NOSIGPIPE` | overlapped `ConnectNamedPipe` |
//! | no `SIGPIPE` | `MSG_NOSIGNAL` | `SO_NOSIGPIPE` | `MSG_NOSIGNAL` and `SO_NOSIGPIPE` | (none) |
//! | waits | `ppoll`; listener `epoll` | `poll`; listener `kqueue` | `ppoll`; listener `kqueue` | overlapped I/O |
//! | listener wake-up on shutdown | `shutdown(2)` of the socket | wake pipe / cancellation token | wake pipe / cancellation token | cancel event |
//! | socket file mode | `fchmod` before `bind` | `chmod` between `bind` and `listen` | same as macOS | DACL |
//!
//! # Where macOS and FreeBSD differ from Linux (`unix/`)
//!
//! - A listening socket's `shutdown(2)` fails with `ENOTCONN` and wakes nobody. The blocking
//!   listener's poller also watches a pipe that `cancel` writes to; the async listener's
//!   `accept` also waits on a cancellation token that `cancel` triggers.
//! - The readiness source of a blocking `Server` (`AsFd`) is a kqueue descriptor rather than
//!   an epoll one: pollable all the same, readable when a connection may be ready, and for
//!   good after a shutdown.
//! - macOS has no `accept4`, `SOCK_CLOEXEC`, `pipe2` or `MSG_NOSIGNAL`: close-on-exec, the
//!   blocking mode and `SO_NOSIGPIPE` are set right after the creating call (with the
//!   fork/exec race this leaves documented in `unix/socket.rs`). Accepted sockets would
//!   inherit the listener's `O_NONBLOCK`; their mode is always set explicitly.
//! - A full accept queue refuses a connect with `ECONNREFUSED`, as a dead endpoint does
//!   (Linux: `EAGAIN`, "busy"): a client retries it only when told to wait.
//! - Peer groups come from the kernel's credential copy, at most 16 (the effective gid
//!   first); a peer that belongs to the server's group beyond those (or, on macOS, only
//!   through the directory service) is refused by `Access::Group`. This process's own
//!   groups (`getgroups`, for `Trust::Group`) have the same limit on macOS.
//! - macOS's default directory is the user's cache directory, not `$TMPDIR`: macOS deletes
//!   files there that nobody touched for three days, a long-running server's socket and
//!   lock file among them (see `unix/macos.rs`).
//!
//! On Linux, `PIPETTE_UNIX_PORTABLE=1` at build time (`build.rs`, `scripts/test-portable.sh`)
//! takes macOS's code paths wherever Linux has the calls: `socket`/`accept` + `fcntl` +
//! `ioctl(FIONBIO)`, `pipe` + `fcntl`, the mode set between `bind` and `listen`, the wake
//! pipe and the cancellation token instead of `shutdown(2)` of a listening socket. What
//! only macOS or FreeBSD can run (compiled for them by CI's clippy, never executed):
//! `unix/macos.rs` and `unix/freebsd.rs` (their kernels' credential calls and directories),
//! the kqueue half of `unix/poller.rs`, `SO_NOSIGPIPE` in `unix/socket.rs::no_sigpipe`, and
//! the send flags without `MSG_NOSIGNAL` there, and `FD_CLOEXEC` set after a receive of
//! descriptors in `unix/fds.rs` (macOS has no `MSG_CMSG_CLOEXEC`).
//!
//! Shared memory (`shm`) is Linux's and Windows': `unix/shm.rs` (a sealed memfd per side, its
//! mirrored mapping, four eventfds) and `windows/shm.rs` (two unnamed file mappings and four
//! events, made by the server and duplicated into the client's process; the async waits are
//! thread-pool waits that wake the task). macOS and FreeBSD get `shm_none.rs`, whose
//! region type cannot exist, so the drivers compile unchanged and never offer the feature.
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
//! - Peers are identified by pid and user SID (no uid/gid). The DACL has already refused
//!   everyone the policy does not admit (it sees the peer's groups, pipette does not):
//!   `ACCESS_ENFORCED_BY_OS` is true, and the engine's `admit_peer` only compares the SID
//!   for `CurrentUser`. A client reads its server's identity from the pipe's owner and group.
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

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::{Credentials, HelloReader, TrustPolicy};
use crate::{Name, PeerIdentity, Trust};

#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
mod unix;
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

/// Handles with messages (Windows): the receiver pulls them from the sender's process.
#[cfg(windows)]
pub(crate) use windows::handles;

/// Messages with descriptors (Unix): why a message's descriptors could not be claimed.
#[cfg(unix)]
pub(crate) use unix::{fds::LOST as DESCRIPTORS_LOST, Unclaimed};

/// The shared-memory transport's platform layer (Linux), or a stand-in that says there is
/// none (`shm::SUPPORTED` is false, and its region type cannot exist).
#[cfg(target_os = "linux")]
pub(crate) use unix::shm;
#[cfg(windows)]
pub(crate) use windows::shm;
#[cfg(not(any(target_os = "linux", windows)))]
#[path = "shm_none.rs"]
pub(crate) mod shm;

#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "freebsd",
    windows
)))]
compile_error!(
    "pipette supports Linux, macOS, FreeBSD and Windows. Other systems (OpenBSD, NetBSD, \
     illumos, ...) differ in how a Unix socket's peer credentials are read (sys/unix/os); \
     a port is a small per-system file there."
);

/// The per-platform entry points: names, endpoints, and the credentials that the protocol
/// engine's admission decisions are made from.
pub(crate) trait Backend {
    /// A connected byte stream.
    type Stream: SysStream;
    /// A bound endpoint.
    type Listener: SysListener<Stream = Self::Stream>;

    /// Whether `shutdown_write` leaves our reading direction open. Where it does not
    /// (Windows pipes), framed connections end their sending direction with the END header
    /// instead (`frame::FLAG_END`), so that closing a send half means the same everywhere.
    const HALF_CLOSE: bool;
    /// Whether the operating system has already refused every peer the server's access
    /// policy does not admit before pipette sees it (Windows: the pipe's DACL).
    const ACCESS_ENFORCED_BY_OS: bool;
    /// Who "the system" is in a client's trust policy, for messages.
    const SYSTEM_USERS: &'static str;

    /// Where a plain (already validated) name lives for the current user, or why it cannot
    /// (for example, too long).
    fn plain_endpoint(name: &str) -> Result<PathBuf, String>;
    /// `Some` when `s` is the platform's explicit form (Unix: an absolute path; Windows:
    /// `\\.\pipe\…`), with the reason if it is unusable.
    fn explicit_endpoint(s: &str) -> Option<Result<PathBuf, String>>;
    /// Is a server answering there, its pid, and who runs it when that is another user.
    fn probe(path: &Path) -> io::Result<Probe>;
    /// This user's endpoints: (name, path).
    fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>>;
    /// Removes a dead server's leftovers at `path` without binding; `AddrInUse` when live.
    fn remove_stale(name: &str, path: &Path) -> crate::Result<bool>;
    /// This process's identity: its user, and with `with_groups` (a group policy) its groups
    /// too, where the platform has them (a Unix client of the default policy reads only
    /// its uid).
    fn credentials(with_groups: bool) -> Credentials;
    /// A client's trust policy with `Trust::User` resolved; `InvalidInput` when it names
    /// nobody.
    fn trust_policy(trust: &Trust) -> io::Result<TrustPolicy>;
    /// Who runs a server, for messages.
    fn describe_server(server: &PeerIdentity) -> String;
}

/// A connected, blocking byte stream. Every operation is on `&self`, so that the stream can
/// be shared with a `Shutdown` registry; reads and writes may block, each bounded by the
/// stream's timeout (which ends them with `WouldBlock` or `TimedOut`), and every blocked one
/// is woken by `cancel`.
pub(crate) trait SysStream: Handshake + Sized {
    /// Connects: `NotFound` when nothing is there, `ConnectionRefused` when a dead endpoint
    /// is there, `WouldBlock` when the server is alive but its queue is full (try again).
    fn connect(path: &Path, opts: &ConnectOptions) -> io::Result<Self>;
    /// One read; 0 is end of stream. Restarted on `EINTR`.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// One read appended to `buf`'s spare capacity, at most `max` bytes.
    fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
    /// What is there right now (`WouldBlock` when nothing is), whatever the timeout.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// `read_now`, appended to `buf`, at most `max` bytes.
    fn read_append_now(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
    /// Raw mode's receive: on a message pipe (Windows `message_pipe`) exactly one whole
    /// message appended to `buf`; otherwise `read_append(buf, chunk)`.
    fn read_message(&self, buf: &mut Vec<u8>, chunk: usize) -> io::Result<usize>;
    /// One write; how many bytes went out.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// `a` then `b` in one system call where the platform can (header and payload).
    fn write2(&self, a: &[u8], b: &[u8]) -> io::Result<usize>;
    /// The read timeout (`None`: forever).
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()>;
    /// The write timeout (`None`: forever).
    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()>;
    /// Orderly end of our sending direction (see `Backend::HALF_CLOSE`).
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A bound endpoint. `cancel` wakes every blocked `accept` and makes later ones fail; once
/// `finish` returns the endpoint is released (a new server may bind the name at once).
pub(crate) trait SysListener: Cancel + Sized {
    /// What `accept` hands over.
    type Stream;
    /// Claims the endpoint safely (never a live server's name, a dead one's recovered), with
    /// the access policy applied from the first instant.
    fn bind(name: &Name, opts: &ListenOptions) -> crate::Result<Self>;
    /// The next connection whose hello the engine's reader is done with (all of it, or bytes
    /// that cannot be one), with the reader. A peer slow to send it never delays others: it
    /// is dropped after `ListenOptions::handshake_timeout`. `TimedOut` when `timeout`
    /// expires; `ConnectionAborted` once cancelled.
    fn accept(&self, timeout: Option<Duration>) -> io::Result<(Self::Stream, HelloReader)>;
}

/// A connected stream on tokio's reactor: readiness first, then a non-blocking attempt, as
/// tokio's own sockets do, all on `&self`. `cancel` wakes every waiting task, for good.
#[cfg(feature = "tokio")]
pub(crate) trait AsyncStream: Handshake + Sized {
    /// Waits for read readiness (one waiting task per stream, as tokio's).
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// Waits for read readiness; any number of tasks may wait at once.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// A non-blocking read (`WouldBlock` when nothing is there; 0 at the end).
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// A non-blocking read into a `BufMut`.
    fn try_read_buf<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize>;
    /// What is there right now, bypassing the reactor's readiness where the platform can
    /// (for the hello of a fresh connection).
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// `read_now` into a `BufMut` (for a fresh connection's first read, whose bytes have
    /// usually arrived before the reactor has seen the socket). After `WouldBlock` the
    /// caller goes on with `try_read_buf` and `poll_read_ready`.
    fn read_buf_now<B: bytes::BufMut>(&self, buf: &mut B) -> io::Result<usize>;
    /// Waits for write readiness.
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// A non-blocking vectored write.
    fn try_write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize>;
    /// A non-blocking write of `a` then `b`, bypassing the reactor's readiness where the
    /// platform can (a fresh socket's first write then needs no reactor turn). After
    /// `WouldBlock` the caller goes on with `try_write_vectored` and `poll_write_ready`,
    /// which bring the reactor's view up to date.
    fn write2_now(&self, a: &[u8], b: &[u8]) -> io::Result<usize>;
    /// Orderly end of our sending direction (see `Backend::HALF_CLOSE`).
    fn shutdown_write(&self) -> io::Result<()>;
}

// ---- the one way the rest of the crate reaches a backend (through the traits) ----

/// This platform's connected stream.
pub(crate) type Stream = <imp::Platform as Backend>::Stream;
/// This platform's listener.
pub(crate) type Listener = <imp::Platform as Backend>::Listener;

/// See [`Backend::HALF_CLOSE`].
pub(crate) const HALF_CLOSE: bool = <imp::Platform as Backend>::HALF_CLOSE;
/// See [`Backend::ACCESS_ENFORCED_BY_OS`].
pub(crate) const ACCESS_ENFORCED_BY_OS: bool = <imp::Platform as Backend>::ACCESS_ENFORCED_BY_OS;
/// See [`Backend::SYSTEM_USERS`].
pub(crate) const SYSTEM_USERS: &str = <imp::Platform as Backend>::SYSTEM_USERS;

/// See [`Backend::plain_endpoint`].
pub(crate) fn plain_endpoint(name: &str) -> Result<PathBuf, String> {
    <imp::Platform as Backend>::plain_endpoint(name)
}

/// See [`Backend::explicit_endpoint`].
pub(crate) fn explicit_endpoint(s: &str) -> Option<Result<PathBuf, String>> {
    <imp::Platform as Backend>::explicit_endpoint(s)
}

/// See [`Backend::probe`].
pub(crate) fn probe(path: &Path) -> io::Result<Probe> {
    <imp::Platform as Backend>::probe(path)
}

/// See [`Backend::list_endpoints`].
pub(crate) fn list_endpoints() -> io::Result<Vec<(String, PathBuf)>> {
    <imp::Platform as Backend>::list_endpoints()
}

/// See [`Backend::remove_stale`].
pub(crate) fn remove_stale(name: &str, path: &Path) -> crate::Result<bool> {
    <imp::Platform as Backend>::remove_stale(name, path)
}

/// See [`Backend::credentials`].
pub(crate) fn credentials(with_groups: bool) -> Credentials {
    <imp::Platform as Backend>::credentials(with_groups)
}

/// See [`Backend::trust_policy`].
pub(crate) fn trust_policy(trust: &Trust) -> io::Result<TrustPolicy> {
    <imp::Platform as Backend>::trust_policy(trust)
}

/// See [`Backend::describe_server`].
pub(crate) fn describe_server(server: &PeerIdentity) -> String {
    <imp::Platform as Backend>::describe_server(server)
}

/// The async side of the platform (feature `tokio`).
#[cfg(feature = "tokio")]
pub(crate) mod aio {
    pub(crate) use super::imp::aio::{connect, Listener, Stream};

    /// Reads into `buf`'s next chunk with `read`, which returns how many bytes it initialised
    /// from the start of the slice it is given.
    pub(crate) fn read_into<B: bytes::BufMut>(
        buf: &mut B,
        read: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        // SAFETY: the slice is only written to (by recv(2) or recvmsg(2), or a copy out of a
        // shared-memory ring), never read, and only its initialised prefix is reported to
        // `advance_mut` below.
        let chunk = unsafe { buf.chunk_mut().as_uninit_slice_mut() };
        let n = read(chunk)?;
        // SAFETY: `read` initialised the first `n` bytes of the chunk.
        unsafe { buf.advance_mut(n) };
        Ok(n)
    }

    /// The contract, checked: the async stream implements `AsyncStream`.
    const _: fn() = || {
        fn check<S: super::AsyncStream>() {}
        check::<Stream>();
    };
}

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
    /// The server offers shared memory: keep the descriptors that come with a hello (a
    /// client's memory). Only the Linux listeners (blocking and async) read them.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub shared_memory: bool,
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
    /// (Unix `SO_PEERCRED`, `getpeereid`, `LOCAL_PEERCRED`; Windows the client's token), a
    /// client's view of its server (the same Unix calls; Windows the pipe's owner and group).
    fn peer(&self) -> std::io::Result<crate::PeerIdentity>;

    /// The peer's supplementary groups, where the platform tells them without a user
    /// database lookup (Linux: `SO_PEERGROUPS`; macOS and FreeBSD: `LOCAL_PEERCRED`, at most
    /// 16); `None` elsewhere.
    fn peer_groups(&self) -> Option<Vec<u32>>;

    /// Writes without waiting (the 16-byte hello or reply, into a fresh stream's empty send
    /// buffer).
    fn write_now(&self, buf: &[u8]) -> std::io::Result<usize>;

    /// `write_now` of the server's reply with a shared-memory region's descriptors attached
    /// (`SCM_RIGHTS`), for the admitted client only. Where there is no shared memory, the
    /// region type cannot exist and this is never called.
    fn write_handover(&self, reply: &[u8], region: &shm::Region) -> std::io::Result<usize>;

    /// `write_now` of a client's hello with its own shared memory attached (`SCM_RIGHTS`),
    /// when it offers shared memory. Only where the platform has it (the blocking and the
    /// async stream on Linux); never called elsewhere.
    fn write_with_memory(&self, _hello: &[u8], _memory: &shm::Memory) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// The descriptors that arrived with the hello (a client's shared memory), taken once;
    /// reads stop keeping descriptors (until `accept_descriptors`). Empty where the listener
    /// does not keep them.
    fn handed_over(&mut self) -> Vec<shm::Descriptor> {
        Vec::new()
    }

    /// Makes every later read keep the descriptors that arrive with the bytes (for messages
    /// that carry descriptors, `FEATURE_DESCRIPTORS`); `false` where the stream cannot (then
    /// the feature is neither offered nor agreed to). Called before the stream is shared.
    fn accept_descriptors(&mut self) -> bool {
        false
    }
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
