//! The handshake's decisions, shared by the blocking and the async API.
//!
//! The I/O differs between the two APIs; what to answer a new peer, and what a server's
//! answer means, does not. Both live here, once.

use crate::error::{Error, Result};
use crate::frame::{self, Hello, Reply, Status, HELLO_LEN, REPLY_LEN};
use crate::{sys, Access, Name, PeerIdentity};

/// What a server does with a new connection.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Send `reply` (framed mode) and hand the connection to the caller.
    Accept {
        /// The acceptance to send; `None` in raw mode.
        reply: Option<[u8; REPLY_LEN]>,
        /// The largest message the peer accepts.
        peer_limit: u32,
    },
    /// Send `reply` if there is one, then drop the connection.
    Refuse {
        /// The refusal to send; `None` in raw mode.
        reply: Option<[u8; REPLY_LEN]>,
    },
}

/// What a server needs to know to judge a newcomer.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub name: Name,
    pub access: Access,
    pub raw: bool,
    /// The server's own message limit, announced in the reply.
    pub limit: u32,
    /// The server's user, captured at bind.
    pub owner: sys::Owner,
}

impl Policy {
    /// Judges a new peer from its identity and its first bytes (the hello, or as much of it
    /// as arrived before the bytes stopped looking like one). Logs every refusal.
    pub(crate) fn admit(&self, peer: &PeerIdentity, prefix: &[u8]) -> Admission {
        let refuse = |status: Status| Admission::Refuse {
            reply: (!self.raw).then(|| Reply::refuse(status).encode()),
        };
        if !sys::admits(self.access, &self.owner, peer) {
            tracing::warn!(
                name = %self.name,
                pid = ?peer.pid(), uid = ?peer.uid(), sid = ?peer.sid(),
                access = self.access.as_str(),
                "refused a peer that the access policy does not admit"
            );
            return refuse(Status::AccessDenied);
        }
        if self.raw {
            return Admission::Accept {
                reply: None,
                peer_limit: u32::MAX,
            };
        }
        match Hello::decode_prefix(prefix) {
            Err(e) => {
                tracing::warn!(
                    name = %self.name, pid = ?peer.pid(),
                    "protocol error: a peer that does not speak the pipette protocol connected ({e}); if it is a raw byte-stream client, run the server in raw mode"
                );
                refuse(Status::BadHello)
            }
            Ok(hello) => match frame::negotiate(hello.version) {
                None => {
                    tracing::warn!(name = %self.name, pid = ?peer.pid(), version = hello.version, "refused a peer with an unsupported protocol version");
                    refuse(Status::UnsupportedVersion)
                }
                Some(version) => Admission::Accept {
                    reply: Some(Reply::accept(version, self.limit).encode()),
                    peer_limit: hello.max_message_size,
                },
            },
        }
    }

    /// The refusal sent when the server is shutting down.
    pub(crate) fn shutting_down(&self) -> Option<[u8; REPLY_LEN]> {
        (!self.raw).then(|| Reply::refuse(Status::ShuttingDown).encode())
    }

    /// How many bytes to wait for before judging a peer.
    pub(crate) fn prefix_len(&self) -> usize {
        if self.raw {
            0
        } else {
            HELLO_LEN
        }
    }
}

/// The client's hello announcing `limit`.
pub(crate) fn hello(limit: u32) -> [u8; HELLO_LEN] {
    Hello {
        version: frame::VERSION,
        max_message_size: limit,
    }
    .encode()
}

/// Interprets the server's reply: the server's message limit, or the error it stands for.
pub(crate) fn interpret_reply(name: &Name, bytes: &[u8; REPLY_LEN]) -> Result<u32> {
    let name = name.as_str();
    let reply = Reply::decode(bytes).map_err(|e| {
        Error::Protocol(format!(
            "{name:?} did not answer like a pipette server ({e}); if it is a plain byte-stream peer, connect in raw mode"
        ))
    })?;
    Err(match reply.status {
        Status::Accepted => return Ok(reply.max_message_size),
        Status::AccessDenied => Error::PermissionDenied(format!(
            "the server at {name:?} refused this connection: its access policy does not admit your user; run the client as the server's user, or have the server widen its access"
        )),
        Status::ShuttingDown => {
            Error::Shutdown("the server is shutting down and accepts no new connections")
        }
        Status::UnsupportedVersion => Error::Protocol(format!(
            "the server at {name:?} does not speak protocol version {}; upgrade the older side",
            frame::VERSION
        )),
        Status::BadHello => Error::Protocol(format!(
            "the server at {name:?} did not understand this client's hello"
        )),
    })
}

/// The error for a server that closed the connection before its reply was complete.
pub(crate) fn reply_cut_short(name: &Name, received: usize) -> Error {
    let name = name.as_str();
    if received == 0 {
        Error::Protocol(format!(
            "the server at {name:?} closed the connection without answering the handshake; it may be shutting down, overloaded, or not a pipette server (a raw peer needs raw mode)"
        ))
    } else {
        Error::Protocol(format!(
            "the server at {name:?} closed the connection part-way through its handshake reply; it is not a pipette server (a raw peer needs raw mode)"
        ))
    }
}
