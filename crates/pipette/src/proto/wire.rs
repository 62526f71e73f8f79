//! The wire format, as pure functions: no I/O, no allocation.
//!
//! Everything pipette puts on the wire in framed mode is encoded and decoded here, so the
//! format can be unit-tested and fuzzed in isolation. `docs/PROTOCOL.md` describes the same
//! bytes for implementers in other languages; keep the two in step.
//!
//! A framed connection carries, in order:
//!
//! 1. the client's [`Hello`] (16 bytes),
//! 2. the server's [`Reply`] (16 bytes),
//! 3. messages in both directions, each a [`Header`] (8 bytes) followed by `len` payload bytes.
//!
//! All integers are little-endian.
//!
//! ```
//! use pipette::frame::{Header, HEADER_LEN};
//!
//! let header = Header::new(5);
//! let bytes = header.encode();
//! assert_eq!(bytes.len(), HEADER_LEN);
//! assert_eq!(Header::decode(&bytes, 1024).unwrap(), header);
//! ```

use std::fmt;

/// The protocol version this crate speaks (and the highest it knows).
pub const VERSION: u16 = 1;

/// Length of an encoded [`Hello`].
pub const HELLO_LEN: usize = 16;
/// Length of an encoded [`Reply`].
pub const REPLY_LEN: usize = 16;
/// Length of an encoded message [`Header`].
pub const HEADER_LEN: usize = 8;

/// First eight bytes of a client hello.
pub const HELLO_MAGIC: [u8; 8] = *b"PIPETTE?";
/// First eight bytes of a server reply. It differs from [`HELLO_MAGIC`] so that a client
/// talking to an echo server (which would send its hello back) sees a protocol error.
pub const REPLY_MAGIC: [u8; 8] = *b"PIPETTE!";

/// The smallest message-size limit an endpoint may announce.
///
/// Every pipette endpoint accepts messages of at least this size. That guarantee is what lets
/// a client send its first small message right behind its hello, before the server's reply
/// (and so the server's real limit) has arrived.
pub const MIN_MESSAGE_LIMIT: u32 = 4096;

/// The largest message-size limit an endpoint may announce (the length field is 32 bits).
pub const MAX_MESSAGE_LIMIT: u32 = u32::MAX;

/// What went wrong while decoding bytes from a peer.
///
/// Each variant names the offending value so that the error shown to a user can say what the
/// peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first bytes are not pipette's magic: the peer does not speak this protocol.
    BadMagic {
        /// The magic that was expected.
        expected: [u8; 8],
        /// The bytes that arrived instead.
        found: [u8; 8],
    },
    /// A header carries flag bits this version does not define (or [`FLAG_END`] with a
    /// non-zero length).
    UnknownFlags(u32),
    /// A reply carries a status code this version does not define.
    UnknownStatus(u8),
    /// An acceptance agrees to features (these bits) that the client did not offer.
    UnofferedFeatures(u8),
    /// A limit below [`MIN_MESSAGE_LIMIT`] was announced.
    LimitTooSmall(u32),
    /// A message header announces more bytes than the receiver accepts.
    TooLarge {
        /// The announced payload length.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// An accepting reply chose a version that does not exist or that this side does not
    /// speak.
    BadVersion(u16),
    /// A message header says the message carries descriptors ([`FLAG_DESCRIPTORS`]), but
    /// this side did not agree to receive any.
    DescriptorsNotAgreed(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadMagic { expected, found } => write!(
                f,
                "expected magic {:?} but the peer sent {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(found).escape_debug().to_string()
            ),
            DecodeError::UnknownFlags(flags) => write!(
                f,
                "message header has unknown flag bits {flags:#010x} (or the end-of-stream flag with a payload)"
            ),
            DecodeError::UnknownStatus(s) => write!(f, "handshake reply has unknown status {s}"),
            DecodeError::UnofferedFeatures(bits) => write!(
                f,
                "handshake reply agrees to features {bits:#04x} that the client did not offer"
            ),
            DecodeError::LimitTooSmall(n) => write!(
                f,
                "peer announced a message limit of {n} bytes, below the protocol minimum of {MIN_MESSAGE_LIMIT}"
            ),
            DecodeError::TooLarge { len, max } => {
                write!(f, "message header announces {len} bytes, over the limit of {max}")
            }
            DecodeError::BadVersion(v) => write!(
                f,
                "the reply chose protocol version {v}, which this side does not speak (it speaks 1 to {VERSION})"
            ),
            DecodeError::DescriptorsNotAgreed(n) => write!(
                f,
                "a message says it carries {n} descriptors, but this side did not agree to receive descriptors"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Feature bit: the client offers, or the server agrees to, the shared-memory transport
/// (docs/PROTOCOL.md §10).
pub const FEATURE_SHARED_MEMORY: u16 = 1 << 0;

/// Feature bit: messages may carry descriptors ([`FLAG_DESCRIPTORS`]; Unix sockets), or
/// handles on Windows (docs/PROTOCOL.md §11). A side that offers or agrees to it accepts such
/// messages.
pub const FEATURE_DESCRIPTORS: u16 = 1 << 1;

/// Every feature bit this version defines. A server agrees only to bits the client offered;
/// a bit it does not know it ignores, as v1 servers ignored the whole field.
pub const KNOWN_FEATURES: u16 = FEATURE_SHARED_MEMORY | FEATURE_DESCRIPTORS;

/// The client's opening bytes.
///
/// ```text
/// 0..8   magic "PIPETTE?"
/// 8..10  version    u16  highest protocol version the client speaks
/// 10..12 features   u16  optional features the client offers (FEATURE_*); servers ignore
///                        bits they do not know
/// 12..16 max_len    u32  largest message payload the client accepts
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Highest protocol version the client speaks.
    pub version: u16,
    /// Optional features the client offers (`FEATURE_*` bits).
    pub features: u16,
    /// Largest payload the client accepts, in bytes.
    pub max_message_size: u32,
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..8].copy_from_slice(&HELLO_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.features.to_le_bytes());
        b[12..16].copy_from_slice(&self.max_message_size.to_le_bytes());
        b
    }

    /// Decodes a hello from however many bytes arrived; fewer than [`HELLO_LEN`] is an error
    /// (a server calls this early only when [`could_be_hello`] already said no).
    pub fn decode_prefix(b: &[u8]) -> Result<Hello, DecodeError> {
        match <&[u8; HELLO_LEN]>::try_from(b) {
            Ok(full) => Hello::decode(full),
            Err(_) => {
                let mut found = [0u8; 8];
                let n = b.len().min(8);
                found[..n].copy_from_slice(&b[..n]);
                Err(DecodeError::BadMagic {
                    expected: HELLO_MAGIC,
                    found,
                })
            }
        }
    }

    /// Decodes a hello.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, DecodeError> {
        check_magic(b, HELLO_MAGIC)?;
        // Any version decodes; whether it can be spoken is `negotiate`'s call, so that a
        // client offering only versions this server lacks gets `UnsupportedVersion`.
        let version = u16::from_le_bytes([b[8], b[9]]);
        let features = u16::from_le_bytes([b[10], b[11]]);
        let max_message_size = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if max_message_size < MIN_MESSAGE_LIMIT {
            return Err(DecodeError::LimitTooSmall(max_message_size));
        }
        Ok(Hello {
            version,
            features,
            max_message_size,
        })
    }
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The connection is accepted; messages may flow.
    Accepted = 0,
    /// The peer's user is not allowed by the server's access policy.
    AccessDenied = 1,
    /// The server is shutting down and takes no new connections.
    ShuttingDown = 2,
    /// The server does not speak any version the client offered.
    UnsupportedVersion = 3,
    /// The server did not understand the hello (the peer is not a pipette client, or is a
    /// pipette client in raw mode).
    BadHello = 4,
}

impl Status {
    fn from_u8(v: u8) -> Result<Status, DecodeError> {
        Ok(match v {
            0 => Status::Accepted,
            1 => Status::AccessDenied,
            2 => Status::ShuttingDown,
            3 => Status::UnsupportedVersion,
            4 => Status::BadHello,
            other => return Err(DecodeError::UnknownStatus(other)),
        })
    }
}

/// The server's answer to a hello.
///
/// ```text
/// 0..8   magic "PIPETTE!"
/// 8..10  version    u16  version both sides speak from now on (0 when refused)
/// 10     status     u8   0 accepted, 1 access denied, 2 shutting down, 3 unsupported version,
///                         4 hello not understood
/// 11     features   u8   the offered features the server agrees to (0 when refused)
/// 12..16 max_len    u32  largest payload the server accepts (0 when refused)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Whether the connection was accepted.
    pub status: Status,
    /// The version chosen (0 when refused).
    pub version: u16,
    /// The features of the hello the server agrees to (`FEATURE_*` bits; 0 when refused).
    pub features: u8,
    /// The server's limit (0 when refused).
    pub max_message_size: u32,
}

impl Reply {
    /// An acceptance, agreeing to no optional feature.
    pub fn accept(version: u16, max_message_size: u32) -> Reply {
        Reply {
            status: Status::Accepted,
            version,
            features: 0,
            max_message_size,
        }
    }

    /// A refusal with the given reason.
    pub fn refuse(status: Status) -> Reply {
        Reply {
            status,
            version: 0,
            features: 0,
            max_message_size: 0,
        }
    }

    /// Encodes the reply.
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let mut b = [0u8; REPLY_LEN];
        b[0..8].copy_from_slice(&REPLY_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10] = self.status as u8;
        b[11] = self.features;
        b[12..16].copy_from_slice(&self.max_message_size.to_le_bytes());
        b
    }

    /// Decodes a reply. An accepting reply must carry a valid version and limit.
    pub fn decode(b: &[u8; REPLY_LEN]) -> Result<Reply, DecodeError> {
        check_magic(b, REPLY_MAGIC)?;
        let version = u16::from_le_bytes([b[8], b[9]]);
        let status = Status::from_u8(b[10])?;
        let features = if status == Status::Accepted { b[11] } else { 0 };
        let max_message_size = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if status == Status::Accepted {
            if version == 0 || version > VERSION {
                return Err(DecodeError::BadVersion(version));
            }
            if max_message_size < MIN_MESSAGE_LIMIT {
                return Err(DecodeError::LimitTooSmall(max_message_size));
            }
        }
        Ok(Reply {
            status,
            version,
            features,
            max_message_size,
        })
    }
}

/// Whether `partial`, the first bytes received from a would-be client, can still turn out to
/// be a valid hello. Lets a server turn away a peer that does not speak the protocol as soon
/// as its first byte arrives, instead of waiting for sixteen bytes that may never come.
pub fn could_be_hello(partial: &[u8]) -> bool {
    let n = partial.len().min(HELLO_MAGIC.len());
    partial[..n] == HELLO_MAGIC[..n]
}

/// Chooses the version a server speaks with a client that offered `offered`.
///
/// Returns `None` when there is no common version.
pub fn negotiate(offered: u16) -> Option<u16> {
    if offered >= 1 {
        Some(offered.min(VERSION))
    } else {
        None
    }
}

/// Header flag: the sender has ended its sending direction (a "half-close"). Valid only with
/// a zero length. Sent where the transport has no half-close of its own (Windows named
/// pipes, in framed mode); on Unix sockets `shutdown(SHUT_WR)` says the same thing. Every
/// receiver understands it: its next `recv` reports [`Closed`](crate::Error::Closed).
pub const FLAG_END: u32 = 1;

/// Header flag: the message carries descriptors, as many as the flags' second byte says
/// (1 to [`MAX_DESCRIPTORS`]): `flags = FLAG_DESCRIPTORS | n << 8`. On Unix they travel with
/// the header's first byte (`SCM_RIGHTS`); on Windows the payload begins with n u64 handle
/// values of the sender's process, which the receiver takes from it (docs/PROTOCOL.md §11).
/// Only where [`FEATURE_DESCRIPTORS`] was agreed.
pub const FLAG_DESCRIPTORS: u32 = 2;

/// The most descriptors one message may carry (Linux's `SCM_MAX_FD`, the smallest limit of
/// the supported systems).
pub const MAX_DESCRIPTORS: u8 = 253;

/// A message header.
///
/// ```text
/// 0..4  len    u32  payload length in bytes
/// 4..8  flags  u32  0 for a message; FLAG_END (1) with len 0 for the end of the sender's
///                   stream; FLAG_DESCRIPTORS (2) | n << 8 for a message carrying n
///                   descriptors; receivers reject anything else
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes.
    pub len: u32,
    /// This header is the end-of-stream marker ([`FLAG_END`]), not a message.
    pub end: bool,
    /// How many descriptors the message carries ([`FLAG_DESCRIPTORS`]); 0 for none.
    pub descriptors: u8,
}

impl Header {
    /// A header for a payload of `len` bytes.
    pub fn new(len: u32) -> Header {
        Header {
            len,
            end: false,
            descriptors: 0,
        }
    }

    /// A header for a payload of `len` bytes carrying `descriptors` descriptors (1 to
    /// [`MAX_DESCRIPTORS`]; 0 is a plain message).
    pub fn with_descriptors(len: u32, descriptors: u8) -> Header {
        Header {
            len,
            end: false,
            descriptors,
        }
    }

    /// The end-of-stream marker: no payload, [`FLAG_END`] set.
    pub fn end_of_stream() -> Header {
        Header {
            len: 0,
            end: true,
            descriptors: 0,
        }
    }

    /// Encodes the header.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        let flags = if self.end {
            FLAG_END
        } else if self.descriptors != 0 {
            FLAG_DESCRIPTORS | u32::from(self.descriptors) << 8
        } else {
            0
        };
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b
    }

    /// Decodes a header, refusing lengths over `max` before anything is allocated. A header
    /// with descriptors is well-formed here; whether this side accepts them is the
    /// [`Decoder`](crate::proto::Decoder)'s business.
    #[inline]
    pub fn decode(b: &[u8; HEADER_LEN], max: u32) -> Result<Header, DecodeError> {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let flags = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if flags != 0 {
            if flags == FLAG_END && len == 0 {
                return Ok(Header::end_of_stream());
            }
            return Header::with_flags(len, flags, max);
        }
        if len > max {
            return Err(DecodeError::TooLarge { len, max });
        }
        Ok(Header::new(len))
    }

    /// `decode` of a message header with flags: one with descriptors, or an error.
    #[cold]
    #[inline(never)]
    fn with_flags(len: u32, flags: u32, max: u32) -> Result<Header, DecodeError> {
        let n = flags >> 8;
        if flags & 0xff != FLAG_DESCRIPTORS || n == 0 || n > u32::from(MAX_DESCRIPTORS) {
            return Err(DecodeError::UnknownFlags(flags));
        }
        if len > max {
            return Err(DecodeError::TooLarge { len, max });
        }
        Ok(Header::with_descriptors(len, n as u8))
    }
}

fn check_magic(b: &[u8; 16], expected: [u8; 8]) -> Result<(), DecodeError> {
    let mut found = [0u8; 8];
    found.copy_from_slice(&b[0..8]);
    if found == expected {
        Ok(())
    } else {
        Err(DecodeError::BadMagic { expected, found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_has_documented_layout() {
        let h = Hello {
            version: 1,
            features: 0,
            max_message_size: 16 << 20,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], b"PIPETTE?");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[0, 0]);
        assert_eq!(&b[12..16], &[0, 0, 0, 1]);
        assert_eq!(Hello::decode(&b), Ok(h));
    }

    #[test]
    fn reply_round_trips_and_has_documented_layout() {
        let r = Reply::accept(1, 4096);
        let b = r.encode();
        assert_eq!(&b[0..8], b"PIPETTE!");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(b[10], 0);
        assert_eq!(b[11], 0);
        assert_eq!(&b[12..16], &[0, 0x10, 0, 0]);
        assert_eq!(Reply::decode(&b), Ok(r));

        for status in [
            Status::AccessDenied,
            Status::ShuttingDown,
            Status::UnsupportedVersion,
            Status::BadHello,
        ] {
            let r = Reply::refuse(status);
            assert_eq!(Reply::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn an_echoed_hello_is_not_a_reply() {
        let hello = Hello {
            version: 1,
            features: 0,
            max_message_size: 4096,
        }
        .encode();
        match Reply::decode(&hello) {
            Err(DecodeError::BadMagic { found, .. }) => assert_eq!(&found, b"PIPETTE?"),
            other => panic!("expected BadMagic, got {other:?}"),
        }
    }

    #[test]
    fn hello_rejects_garbage_version_and_tiny_limit() {
        assert!(matches!(
            Hello::decode(b"GET / HTTP/1.1\r\n"),
            Err(DecodeError::BadMagic { .. })
        ));
        let mut b = Hello {
            version: 1,
            features: 0,
            max_message_size: 4096,
        }
        .encode();
        b[8] = 0;
        // Version 0 decodes, and negotiation refuses it (the server answers "unsupported").
        assert_eq!(Hello::decode(&b).map(|h| h.version), Ok(0));
        assert_eq!(negotiate(0), None);
        let b = Hello {
            version: 1,
            features: 0,
            max_message_size: 100,
        }
        .encode();
        assert_eq!(Hello::decode(&b), Err(DecodeError::LimitTooSmall(100)));
    }

    #[test]
    fn reply_rejects_unknown_status_and_bad_accept() {
        let mut b = Reply::accept(1, 4096).encode();
        b[10] = 9;
        assert_eq!(Reply::decode(&b), Err(DecodeError::UnknownStatus(9)));
        let b = Reply::accept(1, 10).encode();
        assert_eq!(Reply::decode(&b), Err(DecodeError::LimitTooSmall(10)));
        let b = Reply::accept(VERSION + 1, 4096).encode();
        assert_eq!(Reply::decode(&b), Err(DecodeError::BadVersion(VERSION + 1)));
    }

    #[test]
    fn header_round_trips_and_enforces_limit_and_flags() {
        for len in [0u32, 1, 64, 65536, 16 << 20] {
            let b = Header::new(len).encode();
            assert_eq!(&b[0..4], &len.to_le_bytes());
            assert_eq!(&b[4..8], &[0, 0, 0, 0]);
            assert_eq!(Header::decode(&b, 16 << 20), Ok(Header::new(len)));
        }
        let b = Header::new(u32::MAX).encode();
        assert_eq!(
            Header::decode(&b, 16 << 20),
            Err(DecodeError::TooLarge {
                len: u32::MAX,
                max: 16 << 20
            })
        );
        let mut b = Header::new(1).encode();
        b[7] = 0x80;
        assert_eq!(
            Header::decode(&b, 100),
            Err(DecodeError::UnknownFlags(0x8000_0000))
        );
        // The end-of-stream marker: only with length 0.
        let b = Header::end_of_stream().encode();
        assert_eq!(b, [0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Header::decode(&b, 0), Ok(Header::end_of_stream()));
        let mut b = Header::new(5).encode();
        b[4] = 1;
        assert_eq!(
            Header::decode(&b, 100),
            Err(DecodeError::UnknownFlags(FLAG_END))
        );
        // Descriptors: 1 to 253, in the flags' second byte.
        for n in [1u8, 7, MAX_DESCRIPTORS] {
            let b = Header::with_descriptors(9, n).encode();
            assert_eq!(&b[4..8], &[2, n, 0, 0]);
            assert_eq!(Header::decode(&b, 100), Ok(Header::with_descriptors(9, n)));
        }
        for flags in [
            2u32,
            2 | 254 << 8,
            3 | 1 << 8,
            2 | 1 << 16,
            2 | 1 << 8 | 1 << 24,
        ] {
            let mut b = Header::new(1).encode();
            b[4..8].copy_from_slice(&flags.to_le_bytes());
            assert_eq!(
                Header::decode(&b, 100),
                Err(DecodeError::UnknownFlags(flags)),
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn garbage_is_recognised_from_its_first_byte() {
        assert!(could_be_hello(b""));
        assert!(could_be_hello(b"PIP"));
        assert!(could_be_hello(b"PIPETTE?\x01\x00"));
        assert!(!could_be_hello(b"G"));
        assert!(!could_be_hello(b"PIPETTE!"));
    }

    #[test]
    fn negotiation_picks_the_common_version() {
        assert_eq!(negotiate(1), Some(1));
        assert_eq!(negotiate(7), Some(VERSION));
        assert_eq!(negotiate(0), None);
    }
}
