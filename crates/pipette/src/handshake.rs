//! The handshake's I/O-free glue, shared by the blocking and the async API: judging a new
//! connection on the server and registering it, and checking the server and saying hello on
//! the client. The decisions are the protocol engine's (`proto`); the streams only need the
//! non-blocking calls of [`sys::Handshake`], which both APIs' streams provide.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::proto::{self, Admission, Credentials, TrustPolicy};
use crate::shared::Shared;
use crate::shutdown::Shutdown;
use crate::sys::{self, Handshake};
use crate::{frame, Access, Name, PeerIdentity, Trust};

/// What a server needs to know to judge a newcomer.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub name: Name,
    pub access: Access,
    pub raw: bool,
    /// The server's own message limit, announced in the reply.
    pub limit: u32,
    /// The server's identity, captured at bind.
    pub owner: Credentials,
    /// How the accepted connections' receives wait (`None`: the transport's default).
    pub wait_strategy: Option<crate::WaitStrategy>,
    /// Whether to agree to shared memory with a client that asks (and the platform can).
    pub shared_memory: bool,
    /// The size of the ring this server's side of a shared-memory connection sends through.
    pub ring_size: usize,
    /// Whether to agree to messages with descriptors with a client that offers them (and
    /// the stream can carry them).
    pub descriptors: bool,
}

/// Judges a new connection whose first bytes (`hello`, as a
/// [`HelloReader`](proto::HelloReader) collected them) have arrived, answers it, and
/// registers it with the shutdown handle. `None` when it was turned away (logged).
pub(crate) fn admit<S: Handshake>(
    policy: &Policy,
    shutdown: &Shutdown,
    mut stream: S,
    hello: &[u8],
) -> Option<Shared<S>> {
    let peer = match stream.peer() {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a new peer's credentials");
            None
        }
    };
    let unknown = PeerIdentity::default();
    let id = peer.as_ref().unwrap_or(&unknown);
    let groups = if policy.access == Access::Group {
        stream.peer_groups()
    } else {
        None
    };
    let admitted = proto::admit_peer(
        policy.access,
        &policy.owner,
        id,
        groups.as_deref(),
        sys::ACCESS_ENFORCED_BY_OS,
    );
    // Shared memory is prepared only for an admitted client that asks, by a server that
    // offers it; if that fails, the feature is simply not agreed to.
    let offered = proto::offered_features(hello);
    // A client offering shared memory handed its own memory over with the hello (Linux),
    // or is a process this server can give memory to (Windows: its pid).
    let from_client = stream.handed_over();
    let region = (policy.shared_memory && admitted && offered & frame::FEATURE_SHARED_MEMORY != 0)
        .then(|| crate::shm::server_region(policy.ring_size, from_client, id.pid()))
        .flatten();
    let mut supported = if region.is_some() {
        frame::FEATURE_SHARED_MEMORY
    } else {
        0
    };
    // Descriptors travel over the socket, which shared memory leaves: never both (the
    // options refuse asking for both; a client that offers both gets shared memory).
    if policy.descriptors
        && admitted
        && region.is_none()
        && offered & frame::FEATURE_DESCRIPTORS != 0
        && stream.accept_descriptors()
    {
        supported |= frame::FEATURE_DESCRIPTORS;
    }
    let judge = |shutting_down| {
        proto::admit(
            policy.raw,
            policy.limit,
            supported,
            admitted,
            shutting_down,
            hello,
        )
    };
    let (reply, peer_limit, features) = match judge(shutdown.is_shutdown()) {
        Admission::Accept {
            reply,
            peer_limit,
            features,
        } => (reply, peer_limit, features),
        Admission::Refuse {
            reply,
            reason,
            detail,
        } => {
            refused(policy, id, reason, detail);
            if let Some(r) = reply {
                let _ = stream.write_now(&r);
            }
            return None;
        }
    };
    let stream = Arc::new(stream);
    let Ok(registration) = shutdown.register(stream.clone()) else {
        // Shut down since: the same answer as to any newcomer now.
        if let Admission::Refuse { reply: Some(r), .. } = judge(true) {
            let _ = stream.write_now(&r);
        }
        return None;
    };
    let region = region.filter(|_| features & frame::FEATURE_SHARED_MEMORY != 0);
    if let Some(reply) = reply {
        // A fresh stream's send buffer is empty: the 16 bytes go out at once (with the
        // shared memory's descriptors when it was agreed to: only to this admitted client).
        let sent = match &region {
            Some(region) => stream.write_handover(&reply, region),
            None => stream.write_now(&reply),
        };
        match sent {
            Ok(n) if n == reply.len() => {}
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "a peer left during the handshake");
                return None;
            }
        }
    }
    tracing::debug!(name = %policy.name, pid = %Shown(id.pid()), uid = %Shown(id.uid()), sid = %Shown(id.sid()), features, "accepted a connection");
    let mut shared = Shared::new(
        stream,
        shutdown.clone(),
        registration,
        policy.name.clone(),
        policy.raw,
        peer,
        Some(peer_limit),
    );
    shared.shm = region.map(crate::shm::Link::server);
    shared.reply.agreed(features);
    shared.accepts_descriptors = features & frame::FEATURE_DESCRIPTORS != 0;
    Some(shared)
}

/// A log field that may be unknown: `pid=20842`, or `pid=?` (never `pid=Some(20842)`).
struct Shown<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("?"),
        }
    }
}

/// Logs why a peer was turned away (it never reaches the application).
fn refused(
    policy: &Policy,
    peer: &PeerIdentity,
    reason: proto::Refusal,
    detail: Option<proto::wire::DecodeError>,
) {
    match reason {
        proto::Refusal::AccessDenied => tracing::warn!(
            name = %policy.name,
            pid = %Shown(peer.pid()), uid = %Shown(peer.uid()), sid = %Shown(peer.sid()),
            access = policy.access.as_str(),
            "refused a peer that the access policy does not admit"
        ),
        proto::Refusal::BadHello => tracing::warn!(
            name = %policy.name, pid = %Shown(peer.pid()),
            "protocol error: a peer that does not speak the pipette protocol connected ({}); if it is a raw byte-stream client, run the server in raw mode",
            detail.map(|d| d.to_string()).unwrap_or_default()
        ),
        proto::Refusal::UnsupportedVersion => tracing::warn!(
            name = %policy.name, pid = %Shown(peer.pid()),
            "refused a peer with an unsupported protocol version"
        ),
        proto::Refusal::ShuttingDown => tracing::debug!(
            name = %policy.name, pid = %Shown(peer.pid()),
            "refused a peer: shutting down"
        ),
    }
}

/// What a client needs for its side of the handshake.
#[derive(Debug, Clone)]
pub(crate) struct ClientSide {
    pub name: Name,
    pub raw: bool,
    /// The client's own message limit, announced in the hello.
    pub limit: u32,
    pub trust: Trust,
    /// `trust` resolved (a user name to its id), and this process's identity: both read
    /// before connecting.
    pub trust_policy: TrustPolicy,
    pub me: proto::Credentials,
    /// How the connection's receives wait (`None`: the transport's default).
    pub wait_strategy: Option<crate::WaitStrategy>,
    /// The optional features the hello offers (`frame::FEATURE_*`).
    pub features: u16,
    /// The size of the ring this client's side of a shared-memory connection sends through.
    pub ring_size: usize,
}

/// Checks who the server is (before a byte goes out), registers the fresh stream with the
/// shutdown handle, and sends the hello (framed mode) without waiting for the reply.
/// `memory`: the client's own shared memory, handed over with the hello, when it offers
/// shared memory (without it, the offer is dropped).
pub(crate) fn hello<S: Handshake>(
    side: &ClientSide,
    shutdown: Shutdown,
    mut stream: S,
    memory: Option<&sys::shm::Memory>,
) -> Result<Shared<S>> {
    let server = check_server(side, stream.peer())?;
    let mut features = side.features;
    if features & frame::FEATURE_DESCRIPTORS != 0 && !stream.accept_descriptors() {
        features &= !frame::FEATURE_DESCRIPTORS;
    }
    if memory.is_none() {
        features &= !frame::FEATURE_SHARED_MEMORY;
    }
    let stream = Arc::new(stream);
    let registration = shutdown
        .register(stream.clone())
        .map_err(|()| Error::Shutdown)?;
    if !side.raw {
        let hello = proto::hello_offering(side.limit, features);
        // A fresh stream's send buffer is empty: the 16 bytes go out in one write (with the
        // client's memory when it offers shared memory).
        let sent = match memory {
            Some(memory) => stream.write_with_memory(&hello, memory),
            None => stream.write_now(&hello),
        };
        match sent {
            Ok(n) if n == hello.len() => {}
            Ok(_) => {
                return Err(Error::io(
                    "could not send the handshake",
                    std::io::ErrorKind::WriteZero.into(),
                ))
            }
            Err(e) => return Err(crate::client::connect_error(&side.name, e)),
        }
    }
    let mut shared = Shared::new(
        stream,
        shutdown,
        registration,
        side.name.clone(),
        side.raw,
        Some(server),
        side.raw.then_some(u32::MAX),
    );
    if features != 0 {
        shared.reply.offer(features);
    }
    shared.accepts_descriptors = features & frame::FEATURE_DESCRIPTORS != 0;
    Ok(shared)
}

/// The client's check of the server (see [`Trust`]): the server at the other end of a fresh
/// connection (`identity`, as the OS reports it) must be one that `trust` admits. Returns its
/// identity. A server whose identity cannot be read is trusted only under
/// [`Trust::Everyone`].
pub(crate) fn check_server(
    side: &ClientSide,
    identity: std::io::Result<PeerIdentity>,
) -> Result<PeerIdentity> {
    let (name, trust) = (&side.name, &side.trust);
    let server = identity.unwrap_or_default();
    if proto::trusts(&side.trust_policy, &side.me, &server) {
        return Ok(server);
    }
    Err(Error::UntrustedServer {
        name: name.as_str().to_owned(),
        path: name.path().display().to_string(),
        server: sys::describe_server(&server),
        trusted: match trust {
            Trust::CurrentUser => format!("your own user and {}", sys::SYSTEM_USERS),
            Trust::Group => format!(
                "your own user, servers of your groups, and {}",
                sys::SYSTEM_USERS
            ),
            Trust::User(u) => format!("your own user, {u}, and {}", sys::SYSTEM_USERS),
            Trust::Everyone => "everyone".to_owned(),
        },
    })
}
