//! How to bind and how to connect: one shape for the blocking and the async API.
//!
//! Both APIs take the same options the same way: `Server::bind_with(name, &ServerOptions)`
//! and `Client::connect_with(name, &ClientOptions)`, blocking (`pipette::Server`,
//! `pipette::Client`) or async (`pipette::tokio::Server`, `pipette::tokio::Client`).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::handshake::{ClientSide, Policy};
use crate::shared::message_limit;
use crate::shutdown::Shutdown;
use crate::sys::{self, ConnectOptions, ListenOptions};
use crate::{Access, IntoName, Trust, WaitStrategy};

/// The default largest message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How long a new connection may take to send its hello before it is dropped.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to bind a server: limits, access policy, mode. Used by
/// [`Server::bind_with`](crate::Server::bind_with) and, identically, by the async
/// `pipette::tokio::Server::bind_with`.
///
/// ```
/// use pipette::{Access, Server, ServerOptions};
///
/// let name = format!("doc-options-{}", std::process::id());
/// let options = ServerOptions::new()
///     .max_message_size(1 << 20)
///     .access(Access::CurrentUser);
/// let server = Server::bind_with(&name, &options)?;
/// assert_eq!(server.name().as_str(), name);
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to bind_with"]
pub struct ServerOptions {
    max_message_size: usize,
    access: Access,
    raw: bool,
    message_pipe: bool,
    handshake_timeout: Duration,
    shutdown: Option<Shutdown>,
    wait_strategy: Option<WaitStrategy>,
    shared_memory: bool,
    ring_size: usize,
    descriptors: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions::new()
    }
}

impl ServerOptions {
    /// The defaults: framed mode, 16 MiB messages, [`Access::CurrentUser`].
    pub fn new() -> ServerOptions {
        ServerOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            access: Access::CurrentUser,
            raw: false,
            message_pipe: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown: None,
            wait_strategy: None,
            shared_memory: false,
            ring_size: crate::proto::ring::DEFAULT_RING,
            descriptors: false,
        }
    }

    /// The largest message payload this server accepts (default 16 MiB). At least 4096
    /// (the protocol minimum; less fails binding with [`Error::InvalidConfig`]); values
    /// above `u32::MAX` are capped to it. A client sending more gets
    /// [`Error::MessageTooLarge`] before anything is written.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Which users may connect (default [`Access::CurrentUser`]). Clients of other users
    /// must also trust this server ([`ClientOptions::trust`]).
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Raw mode: no handshake and no framing; every connection is a plain byte stream, for
    /// foreign peers such as `socat`, `nc -U` or Python's `socket`. Default off.
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Windows: create message-type named pipes (`PIPE_TYPE_MESSAGE |
    /// PIPE_READMODE_MESSAGE`) instead of byte pipes, for peers that exchange pipe messages,
    /// such as .NET's `NamedPipeClientStream` with `PipeTransmissionMode.Message`. Default
    /// off. **Unix: accepted and has no effect** (sockets have no message boundaries), so the
    /// same code builds everywhere.
    ///
    /// Meant for [`raw`](ServerOptions::raw) mode: there each `send` is one pipe message and
    /// each `recv` returns exactly one whole pipe message, however large (the message
    /// boundaries are the peer's). An empty message cannot be sent (nothing is written), and
    /// an empty message from the peer reads as end-of-stream. A receive timeout that expires
    /// while a message is still arriving splits it (the rest comes with the next `recv`).
    ///
    /// In framed mode it is allowed and changes nothing visible: the pipette protocol runs
    /// unchanged on top (each write is one pipe message). Clients must then not mix it up the
    /// other way: a message-mode client cannot open a byte-type pipe, while a byte-mode
    /// client can read a message pipe as a byte stream.
    ///
    /// The blocking API only, for now: on Windows, `pipette::tokio` refuses it at bind
    /// with [`Error::InvalidConfig`].
    ///
    /// ```
    /// use pipette::{Server, ServerOptions};
    ///
    /// let name = format!("doc-message-pipe-{}", std::process::id());
    /// let server = Server::bind_with(&name, &ServerOptions::new().raw(true).message_pipe(true))?;
    /// # drop(server);
    /// # Ok::<(), pipette::Error>(())
    /// ```
    pub fn message_pipe(mut self, on: bool) -> Self {
        self.message_pipe = on;
        self
    }

    /// How long a new connection may take to send its hello (default 5 s). A slow or silent
    /// peer never delays others; it only holds one slot until this expires.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Ties the server (and every connection it accepts) to an existing shutdown handle, for
    /// example one shared with other servers and clients of the same program.
    pub fn shutdown(mut self, handle: &Shutdown) -> Self {
        self.shutdown = Some(handle.clone());
        self
    }

    /// How the accepted connections' receives wait (default [`WaitStrategy::Block`], and
    /// for shared-memory connections `Spin(50 us)`); see [`WaitStrategy`]. The blocking API
    /// only: `pipette::tokio` refuses anything else at bind with [`Error::InvalidConfig`].
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.wait_strategy = Some(strategy);
        self
    }

    /// Offers clients that ask for it the shared-memory transport (default off): their
    /// messages then travel through a ring in memory both processes map instead of the
    /// socket, with the same API and the same message semantics. See
    /// [`ClientOptions::shared_memory`]. Linux and Windows, blocking and async API
    /// (`pipette::tokio`'s connections never spin); on Windows a client of another user,
    /// whose process this server cannot open, stays on the pipe. Elsewhere, and with a
    /// client that does not ask, connections stay on the socket.
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.shared_memory = on;
        self
    }

    /// The size of the ring the server's messages travel through on a shared-memory
    /// connection; as [`ClientOptions::shared_memory_ring`] for the client's.
    pub fn shared_memory_ring(mut self, bytes: usize) -> Self {
        self.ring_size = bytes;
        self
    }

    /// Agrees to messages that carry descriptors (default off) with clients that offer
    /// them ([`ClientOptions::descriptors`]): then both sides may send open files, sockets,
    /// pipes or memory (`SCM_RIGHTS`) with a message, and receive them as owned
    /// descriptors. See `Connection::send_with_descriptors` (Unix), blocking and async
    /// (`pipette::tokio`) alike. On Windows the same option passes handles (files, pipes,
    /// events, ...: `Connection::send_with_handles` and `recv_with_handles`, blocking and
    /// async), agreed only with a client whose process this server can open with
    /// `PROCESS_DUP_HANDLE` (usually: one of the same user); otherwise the feature is simply
    /// not agreed to. Cannot be combined with
    /// [`shared_memory`](ServerOptions::shared_memory) (descriptors travel over the socket,
    /// which shared memory leaves): asking for both is [`Error::InvalidConfig`].
    pub fn descriptors(mut self, on: bool) -> Self {
        self.descriptors = on;
        self
    }

    /// Everything binding needs, checked: shared by the blocking and the async server.
    pub(crate) fn prepare(&self, name: impl IntoName) -> Result<(Policy, ListenOptions, Shutdown)> {
        let name = name.into_name()?;
        both_transports(self.shared_memory, self.descriptors)?;
        let limit = message_limit(self.max_message_size)?;
        let shutdown = self.shutdown.clone().unwrap_or_default();
        if shutdown.is_shutdown() {
            return Err(Error::Shutdown);
        }
        let listen = ListenOptions {
            access: self.access,
            raw: self.raw,
            handshake_timeout: self.handshake_timeout,
            private_dir: name.is_plain(),
            message_pipe: self.message_pipe,
            shared_memory: self.shared_memory && !self.raw && sys::shm::SUPPORTED,
        };
        let policy = Policy {
            name,
            access: self.access,
            raw: self.raw,
            limit,
            owner: sys::credentials(self.access == Access::Group),
            wait_strategy: self.wait_strategy,
            shared_memory: self.shared_memory && !self.raw && sys::shm::SUPPORTED,
            ring_size: ring_size(self.ring_size)?,
            descriptors: self.descriptors && !self.raw,
        };
        Ok((policy, listen, shutdown))
    }
}

/// How to connect: mode, limits, which servers to trust, how long to wait for one, shutdown
/// handle. Used by [`Client::connect_with`](crate::Client::connect_with) and, identically,
/// by the async `pipette::tokio::Client::connect_with`.
///
/// ```
/// use std::time::Duration;
/// use pipette::{ClientOptions, Shutdown, Trust};
///
/// let stop = Shutdown::new();
/// let options = ClientOptions::new()
///     .max_message_size(1 << 20)
///     .wait(Duration::from_secs(5))
///     .trust(Trust::CurrentUser)
///     .shutdown(&stop);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[must_use = "options do nothing until passed to connect_with"]
pub struct ClientOptions {
    max_message_size: usize,
    raw: bool,
    message_pipe: bool,
    trust: Trust,
    wait: Option<Duration>,
    shutdown: Option<Shutdown>,
    wait_strategy: Option<WaitStrategy>,
    shared_memory: bool,
    ring_size: usize,
    descriptors: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::new()
    }
}

impl ClientOptions {
    /// The defaults: framed mode, 16 MiB messages, only servers of the same user (or the
    /// system) trusted, no waiting for a server to appear, a fresh shutdown handle per
    /// connection.
    pub fn new() -> ClientOptions {
        ClientOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            raw: false,
            message_pipe: false,
            trust: Trust::CurrentUser,
            wait: None,
            shutdown: None,
            wait_strategy: None,
            shared_memory: false,
            ring_size: crate::proto::ring::DEFAULT_RING,
            descriptors: false,
        }
    }

    /// The largest message this client accepts from the server (default 16 MiB, at least
    /// 4096). The server learns it in the handshake and will not send more.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Raw mode: no handshake and no framing, for servers that are not pipette (`socat`, a
    /// Python `socket` server, …).
    pub fn raw(mut self, raw: bool) -> Self {
        self.raw = raw;
        self
    }

    /// Which servers this client talks to (default [`Trust::CurrentUser`]: servers of its
    /// own user, or of the system). Checked right after connecting, before anything is sent;
    /// a server outside the policy fails the connection with
    /// [`Error::UntrustedServer`]. Applies in raw mode too.
    ///
    /// ```
    /// use pipette::{ClientOptions, Trust};
    ///
    /// // A server bound with `Access::Group` by another member of one of my groups.
    /// let options = ClientOptions::new().trust(Trust::Group);
    /// # let _ = options;
    /// ```
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// How long to wait for a server: while the endpoint does not exist yet, is left over
    /// from a dead server, or is busy (default: do not wait; a missing server fails at once
    /// with [`Error::NotFound`]). The wait backs off from 1 ms to 20 ms between attempts (it
    /// never spins a core) and is cancelled by the shutdown handle.
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// Windows: open the pipe in message read mode (`SetNamedPipeHandleState` with
    /// `PIPE_READMODE_MESSAGE`), to talk to a server whose pipe is message-type, such as a
    /// .NET `NamedPipeServerStream` with `PipeTransmissionMode.Message` or a pipette server
    /// with [`ServerOptions::message_pipe`]. Default off. Connecting this way to a byte-type
    /// pipe fails (Windows refuses message read mode there). **Unix: accepted and has no
    /// effect.**
    ///
    /// Meant for [`raw`](ClientOptions::raw) mode: each `send` is one pipe message and each
    /// `recv` returns exactly one whole pipe message, however large. An empty message cannot
    /// be sent, and an empty message from the peer reads as end-of-stream. A receive timeout
    /// that expires while a message is still arriving splits it (the rest comes with the
    /// next `recv`). In framed mode the pipette protocol runs unchanged on top.
    ///
    /// The blocking API only, for now: on Windows, `pipette::tokio` refuses it at connect
    /// with [`Error::InvalidConfig`].
    pub fn message_pipe(mut self, on: bool) -> Self {
        self.message_pipe = on;
        self
    }

    /// Uses `handle` as the connection's shutdown handle: its `shutdown()` cancels a waiting
    /// connect and every operation of the connection.
    pub fn shutdown(mut self, handle: &Shutdown) -> Self {
        self.shutdown = Some(handle.clone());
        self
    }

    /// How the connection's receives wait (default [`WaitStrategy::Block`], and for a
    /// shared-memory connection `Spin(50 us)`); see [`WaitStrategy`]. The blocking API only:
    /// `pipette::tokio` refuses anything else at connect with [`Error::InvalidConfig`].
    pub fn wait_strategy(mut self, strategy: WaitStrategy) -> Self {
        self.wait_strategy = Some(strategy);
        self
    }

    /// Asks for the shared-memory transport (default off): when the server offers it too
    /// ([`ServerOptions::shared_memory`]), the server hands this client (and only it) a
    /// sealed memory region with the reply, and messages travel through two rings in it
    /// (1 MiB each way) instead of the socket, which stays open to tell either side when the
    /// other is gone. Same API, same messages, same errors; a round trip costs no system
    /// call while the peer answers within the spin window (see [`WaitStrategy`]).
    ///
    /// `connect` then waits for the server's reply (a client that asks cannot send ahead of
    /// it), and reports a refusal itself. Where the server does not offer it, or the platform
    /// cannot, the connection stays on the socket:
    /// [`Connection::is_shared_memory`](crate::Connection::is_shared_memory) says which.
    /// Raw mode ignores it. Platforms: Linux (a sealed memfd per side, passed with
    /// `SCM_RIGHTS`) and Windows (unnamed file mappings that the server duplicates into
    /// this client's process; there the server's ring size applies both ways). The async
    /// API (`pipette::tokio`) has it too: its connections never spin (they wait on the
    /// runtime's reactor on Linux, on a thread-pool wait that wakes the task on Windows).
    ///
    /// One difference a program may notice: a `send` to a peer that has died succeeds as
    /// long as the ring has room (up to 1 MiB), where a socket fails at once with
    /// [`Error::Closed`]; the next receive, or a send that finds the ring full, reports
    /// `Closed`. A shared-memory connection cannot become a byte stream
    /// ([`Connection::into_stream`](crate::Connection::into_stream) refuses it), and its
    /// descriptor (`AsFd`) does not become readable when a message arrives: event loops
    /// should stay on the socket.
    pub fn shared_memory(mut self, on: bool) -> Self {
        self.shared_memory = on;
        self
    }

    /// The size of the ring this side's messages travel through on a shared-memory
    /// connection (default 1 MiB; a power of two from 4 KiB to 1 GiB, else
    /// [`Error::InvalidConfig`]). A message larger than the ring goes through in pieces; one
    /// written in place (`Connection::send_with`) must fit in it whole with its 8-byte
    /// header. Each side chooses the ring it sends through (Linux; on Windows the server
    /// makes both rings, with its own size, and a client's setting is not used).
    pub fn shared_memory_ring(mut self, bytes: usize) -> Self {
        self.ring_size = bytes;
        self
    }

    /// Offers the server messages that carry descriptors (default off); when it agrees
    /// ([`ServerOptions::descriptors`]): then both sides may send open files, sockets,
    /// pipes or memory (`SCM_RIGHTS`) with a message, and receive them as owned
    /// descriptors. See `Connection::send_with_descriptors` (Unix), blocking and async
    /// (`pipette::tokio`) alike. On Windows the same option passes handles (files, pipes,
    /// events, ...: `Connection::send_with_handles` and `recv_with_handles`, blocking and
    /// async), offered only to a server whose process this client can open with
    /// `PROCESS_DUP_HANDLE` (usually: one of the same user); otherwise the feature is simply
    /// not offered. `connect` (blocking or async) then waits for the
    /// server's reply, so that [`Connection::passes_descriptors`](crate::Connection::passes_descriptors)
    /// says at once whether the server agreed. Cannot be combined with
    /// [`shared_memory`](ClientOptions::shared_memory) (descriptors travel over the socket,
    /// which shared memory leaves): asking for both is [`Error::InvalidConfig`].
    pub fn descriptors(mut self, on: bool) -> Self {
        self.descriptors = on;
        self
    }

    /// Everything connecting needs, checked: shared by the blocking and the async client.
    pub(crate) fn prepare(
        &self,
        name: impl IntoName,
    ) -> Result<(ClientSide, ConnectOptions, Shutdown, Option<Duration>)> {
        let name = name.into_name()?;
        both_transports(self.shared_memory, self.descriptors)?;
        // Everything the check of the server needs is known before connecting, so that
        // nothing but that check stands between the connect and the hello (a server that
        // looks before the hello is there has to wait for it, an extra wake-up).
        let trust_policy = sys::trust_policy(&self.trust).map_err(|e| {
            Error::InvalidConfig(format!("cannot resolve the client's trust policy: {e}"))
        })?;
        let side = ClientSide {
            name,
            raw: self.raw,
            limit: message_limit(self.max_message_size)?,
            trust: self.trust.clone(),
            trust_policy,
            me: sys::credentials(self.trust == Trust::Group),
            wait_strategy: self.wait_strategy,
            ring_size: ring_size(self.ring_size)?,
            features: if self.raw {
                0
            } else if self.shared_memory && sys::shm::SUPPORTED {
                crate::frame::FEATURE_SHARED_MEMORY
            } else if self.descriptors {
                // Offered only where the stream can carry them (`hello` checks).
                crate::frame::FEATURE_DESCRIPTORS
            } else {
                0
            },
        };
        let connect = ConnectOptions {
            message_pipe: self.message_pipe,
        };
        Ok((
            side,
            connect,
            self.shutdown.clone().unwrap_or_default(),
            self.wait,
        ))
    }
}

/// Refuses asking for shared memory and descriptors at once: descriptors travel over the
/// socket, which a shared-memory connection leaves.
fn both_transports(shared_memory: bool, descriptors: bool) -> Result<()> {
    if shared_memory && descriptors {
        return Err(Error::InvalidConfig(
            "shared_memory and descriptors cannot be combined: descriptors travel over the socket, which a shared-memory connection leaves; choose one".into(),
        ));
    }
    Ok(())
}

/// Checks a configured ring size.
fn ring_size(bytes: usize) -> Result<usize> {
    crate::proto::ring::Layout::new(bytes)
        .map(|l| l.ring_size())
        .map_err(|_| {
            Error::InvalidConfig(format!(
                "shared_memory_ring {bytes} is not a power of two from {} to {} bytes",
                crate::proto::ring::MIN_RING,
                crate::proto::ring::MAX_RING
            ))
        })
}
