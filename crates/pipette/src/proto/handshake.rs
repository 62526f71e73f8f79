//! The handshake, both sides: what a server answers a hello, and what a reply means to a
//! client.

use std::fmt;

use super::wire::{
    negotiate, DecodeError, Hello, Reply, Status, HELLO_LEN, KNOWN_FEATURES, REPLY_LEN, VERSION,
};

/// Why a server turned a connection away: the status of its handshake reply (see
/// `docs/PROTOCOL.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Its access policy does not admit this client's user (status 1).
    AccessDenied,
    /// It is shutting down and takes no new connections (status 2).
    ShuttingDown,
    /// It speaks no protocol version this client offered (status 3).
    UnsupportedVersion,
    /// It did not understand the hello (status 4): this client and the server disagree on
    /// the mode (one of them is raw), or this is not a pipette client.
    BadHello,
}

impl Refusal {
    /// The reply status that carries this refusal.
    pub fn status(self) -> Status {
        match self {
            Refusal::AccessDenied => Status::AccessDenied,
            Refusal::ShuttingDown => Status::ShuttingDown,
            Refusal::UnsupportedVersion => Status::UnsupportedVersion,
            Refusal::BadHello => Status::BadHello,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::AccessDenied => "its access policy does not admit your user; run the client as the server's user, or have the server widen its access",
            Refusal::ShuttingDown => "it is shutting down and accepts no new connections",
            Refusal::UnsupportedVersion => "it speaks no protocol version this client offered; upgrade the older side",
            Refusal::BadHello => "it did not understand this client's hello (is one side in raw mode?)",
        })
    }
}

/// What a server does with a new connection, decided by [`admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Send `reply` (in framed mode) and hand the connection to the application.
    Accept {
        /// The acceptance to write; `None` in raw mode.
        reply: Option<[u8; REPLY_LEN]>,
        /// The largest message the peer accepts (`u32::MAX` in raw mode).
        peer_limit: u32,
        /// The optional features both sides use (`FEATURE_*` bits of
        /// [`wire`](super::wire)): those the client offered and the server supports.
        features: u16,
    },
    /// Send `reply` if there is one, then drop the connection.
    Refuse {
        /// The refusal to write; `None` in raw mode.
        reply: Option<[u8; REPLY_LEN]>,
        /// Why.
        reason: Refusal,
        /// The wire-format problem behind a [`Refusal::BadHello`], for the server's log.
        detail: Option<DecodeError>,
    },
}

/// Judges a new connection from what a [`HelloReader`](super::HelloReader) collected
/// (`hello`), whether the peer passed the access policy (`admitted`, see
/// [`admit_peer`](super::admit_peer)), and whether the server is shutting down.
///
/// `limit` is the server's own message limit, announced in an acceptance; `supported`, the
/// optional features (`FEATURE_*` bits) the server can use with this client: the acceptance
/// agrees to those of them that the client offered. In `raw` mode there is no hello and no
/// reply: only the access policy and the shutdown matter.
pub fn admit(
    raw: bool,
    limit: u32,
    supported: u16,
    admitted: bool,
    shutting_down: bool,
    hello: &[u8],
) -> Admission {
    let refuse = |reason: Refusal, detail: Option<DecodeError>| Admission::Refuse {
        reply: (!raw).then(|| Reply::refuse(reason.status()).encode()),
        reason,
        detail,
    };
    if !admitted {
        return refuse(Refusal::AccessDenied, None);
    }
    if shutting_down {
        return refuse(Refusal::ShuttingDown, None);
    }
    if raw {
        return Admission::Accept {
            reply: None,
            peer_limit: u32::MAX,
            features: 0,
        };
    }
    match Hello::decode_prefix(hello) {
        Err(e) => refuse(Refusal::BadHello, Some(e)),
        Ok(hello) => match negotiate(hello.version) {
            None => refuse(Refusal::UnsupportedVersion, None),
            Some(version) => {
                // The reply's field is one byte: bits beyond it are never agreed to.
                let features = hello.features & supported & KNOWN_FEATURES & 0xff;
                Admission::Accept {
                    reply: Some(
                        Reply {
                            features: features as u8,
                            ..Reply::accept(version, limit)
                        }
                        .encode(),
                    ),
                    peer_limit: hello.max_message_size,
                    features,
                }
            }
        },
    }
}

/// The optional features (`FEATURE_*` bits) a hello offers; 0 when the bytes are not a
/// valid hello. A server looks before [`admit`], to prepare what a feature needs (the
/// shared-memory region) only for a client that asks.
pub fn offered_features(hello: &[u8]) -> u16 {
    Hello::decode_prefix(hello).map_or(0, |h| h.features)
}

/// The client's hello announcing `limit` (the largest message it accepts), offering no
/// optional feature.
pub fn hello(limit: u32) -> [u8; HELLO_LEN] {
    hello_offering(limit, 0)
}

/// The client's hello announcing `limit` and offering `features` (`FEATURE_*` bits).
pub fn hello_offering(limit: u32, features: u16) -> [u8; HELLO_LEN] {
    Hello {
        version: VERSION,
        features,
        max_message_size: limit,
    }
    .encode()
}

/// What a server's reply meant, when it was not an acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The server refused the connection.
    Refused(Refusal),
    /// The bytes are not a pipette reply (the peer is not a pipette server, or is a raw
    /// echo peer that sent our hello back).
    Invalid(DecodeError),
    /// The connection ended after `received` bytes of the reply.
    CutShort {
        /// How many bytes of the reply arrived.
        received: usize,
    },
}

/// A client's view of the server's reply, fed as its bytes arrive (possibly by either half
/// of a split connection; see the drivers).
#[derive(Debug, Clone, Default)]
pub struct ReplyReader {
    buf: [u8; REPLY_LEN],
    have: usize,
    result: Option<Result<u32, ReplyError>>,
    /// The features the hello offered.
    offered: u16,
    /// The features the acceptance agreed to.
    agreed: u16,
}

impl ReplyReader {
    /// A reader waiting for the first byte of the reply to a hello that offered no feature.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// A reader for the reply to a hello that offered `features`: an acceptance that agrees
    /// to anything else is invalid.
    pub fn offering(features: u16) -> ReplyReader {
        ReplyReader {
            offered: features,
            ..ReplyReader::default()
        }
    }

    /// The offered features the server agreed to (0 until an acceptance is complete).
    pub fn features(&self) -> u16 {
        self.agreed
    }

    /// How many bytes the reply still lacks (0 once it is complete or the stream ended).
    pub fn missing(&self) -> usize {
        if self.result.is_some() {
            0
        } else {
            REPLY_LEN - self.have
        }
    }

    /// How many bytes of the reply have arrived.
    pub fn received(&self) -> usize {
        self.have
    }

    /// Takes up to [`missing`](ReplyReader::missing) bytes from `bytes`; returns how many were
    /// taken. Once the reply is complete, [`result`](ReplyReader::result) says what it meant.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let n = self.missing().min(bytes.len());
        self.buf[self.have..self.have + n].copy_from_slice(&bytes[..n]);
        self.have += n;
        if self.have == REPLY_LEN && self.result.is_none() {
            let result = interpret(&self.buf, self.offered);
            if let Ok((_, agreed)) = result {
                self.agreed = agreed;
            }
            self.result = Some(result.map(|(limit, _)| limit));
        }
        n
    }

    /// The stream ended before the reply was complete.
    pub fn end_of_stream(&mut self) {
        if self.result.is_none() {
            self.result = Some(Err(ReplyError::CutShort {
                received: self.have,
            }));
        }
    }

    /// The server's limit, or why there is none; `None` while the reply is incomplete.
    pub fn result(&self) -> Option<&Result<u32, ReplyError>> {
        self.result.as_ref()
    }
}

/// The server's limit and the agreed features, or why there are none.
fn interpret(bytes: &[u8; REPLY_LEN], offered: u16) -> Result<(u32, u16), ReplyError> {
    let reply = Reply::decode(bytes).map_err(ReplyError::Invalid)?;
    Err(ReplyError::Refused(match reply.status {
        Status::Accepted => {
            let agreed = u16::from(reply.features);
            if agreed & !(offered & KNOWN_FEATURES) != 0 {
                return Err(ReplyError::Invalid(DecodeError::UnofferedFeatures(
                    reply.features,
                )));
            }
            return Ok((reply.max_message_size, agreed));
        }
        Status::AccessDenied => Refusal::AccessDenied,
        Status::ShuttingDown => Refusal::ShuttingDown,
        Status::UnsupportedVersion => Refusal::UnsupportedVersion,
        Status::BadHello => Refusal::BadHello,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{FEATURE_DESCRIPTORS, FEATURE_SHARED_MEMORY};

    fn accepted(a: Admission) -> (Option<[u8; 16]>, u32) {
        match a {
            Admission::Accept {
                reply, peer_limit, ..
            } => (reply, peer_limit),
            other => panic!("expected an acceptance, got {other:?}"),
        }
    }

    fn refused(a: Admission) -> (Option<[u8; 16]>, Refusal) {
        match a {
            Admission::Refuse { reply, reason, .. } => (reply, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn admission_in_order_access_shutdown_hello() {
        let h = hello(1 << 20);
        let (reply, limit) = accepted(admit(false, 4096, 0, true, false, &h));
        assert_eq!(limit, 1 << 20);
        let mut r = ReplyReader::new();
        assert_eq!(r.feed(&reply.unwrap()), 16);
        assert_eq!(r.result(), Some(&Ok(4096)));

        let (reply, why) = refused(admit(false, 4096, 0, false, true, b"garbage"));
        assert_eq!(why, Refusal::AccessDenied);
        assert_eq!(reply.unwrap()[10], 1);
        assert_eq!(
            refused(admit(false, 4096, 0, true, true, &h)).1,
            Refusal::ShuttingDown
        );
        assert_eq!(
            refused(admit(false, 4096, 0, true, false, b"G")).1,
            Refusal::BadHello
        );
        let mut v0 = h;
        v0[8] = 0;
        assert_eq!(
            refused(admit(false, 4096, 0, true, false, &v0)).1,
            Refusal::UnsupportedVersion
        );
        // Raw: no reply either way.
        assert_eq!(
            accepted(admit(true, 4096, 0, true, false, b"")),
            (None, u32::MAX)
        );
        assert_eq!(refused(admit(true, 4096, 0, false, false, b"")).0, None);
    }

    #[test]
    fn features_are_agreed_only_where_offered_and_supported() {
        let h = hello_offering(4096, FEATURE_SHARED_MEMORY | FEATURE_DESCRIPTORS | 0x8000);
        let Admission::Accept {
            reply: Some(reply),
            features,
            ..
        } = admit(false, 4096, FEATURE_DESCRIPTORS, true, false, &h)
        else {
            panic!("accepted")
        };
        assert_eq!(
            features, FEATURE_DESCRIPTORS,
            "supported and offered, nothing else"
        );
        let mut r = ReplyReader::offering(FEATURE_SHARED_MEMORY | FEATURE_DESCRIPTORS);
        r.feed(&reply);
        assert_eq!(r.result(), Some(&Ok(4096)));
        assert_eq!(r.features(), FEATURE_DESCRIPTORS);
        // A reply agreeing to what was not offered is not a pipette server's.
        let mut r = ReplyReader::offering(FEATURE_SHARED_MEMORY);
        r.feed(&reply);
        assert!(matches!(
            r.result(),
            Some(Err(ReplyError::Invalid(DecodeError::UnofferedFeatures(2))))
        ));
        // A v1 client offers nothing and is agreed nothing.
        let Admission::Accept { features, .. } =
            admit(false, 4096, KNOWN_FEATURES, true, false, &hello(4096))
        else {
            panic!("accepted")
        };
        assert_eq!(features, 0);
    }

    #[test]
    fn a_reply_in_pieces_and_every_refusal() {
        for reason in [
            Refusal::AccessDenied,
            Refusal::ShuttingDown,
            Refusal::UnsupportedVersion,
            Refusal::BadHello,
        ] {
            let bytes = Reply::refuse(reason.status()).encode();
            let mut r = ReplyReader::new();
            for chunk in bytes.chunks(3) {
                assert_eq!(r.result(), None);
                r.feed(chunk);
            }
            assert_eq!(r.result(), Some(&Err(ReplyError::Refused(reason))));
            assert_eq!(r.feed(b"more"), 0, "nothing past the reply is taken");
        }
        let mut r = ReplyReader::new();
        r.feed(b"PIPE");
        r.end_of_stream();
        assert_eq!(r.result(), Some(&Err(ReplyError::CutShort { received: 4 })));
        let mut r = ReplyReader::new();
        r.feed(&hello(4096));
        assert!(matches!(r.result(), Some(Err(ReplyError::Invalid(_)))));
    }
}
