//! The receive side of a framed connection.

use std::fmt;

use super::wire::{DecodeError, Header, HEADER_LEN};

/// Messages at least this long (payload bytes) are not buffered whole: once the decoder has
/// seen their header it says [`Decoded::LargeMessage`], and the driver reads the payload
/// straight into the message's own buffer. Smaller messages are collected in the driver's
/// receive buffer (sized to hold one: `HEADER_LEN + LARGE_MESSAGE` bytes) and copied out once.
pub const LARGE_MESSAGE: usize = 8 * 1024 - HEADER_LEN;

/// Why a connection's receiving direction failed, for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A header the receiver must reject: a length over its limit, or unknown flags.
    BadHeader(DecodeError),
    /// The stream ended inside a message.
    Truncated {
        /// Whether it ended inside the header (else inside the payload).
        in_header: bool,
        /// How many bytes of the header or payload arrived.
        received: usize,
        /// How many there should have been.
        expected: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadHeader(e) => write!(f, "invalid message header from the peer: {e}"),
            Failure::Truncated {
                in_header: true,
                received,
                expected,
            } => write!(
                f,
                "the peer closed the connection in the middle of a message header ({received} of {expected} bytes received)"
            ),
            Failure::Truncated {
                in_header: false,
                received,
                expected,
            } => write!(
                f,
                "the peer closed the connection in the middle of a message ({received} of {expected} bytes received)"
            ),
        }
    }
}

/// What the decoder makes of the bytes at the front of the driver's receive buffer. Each
/// variant says how many bytes the driver consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing can be decided yet: read more, at most `at_most` bytes when given (after a
    /// large message the next header is read alone, so that a following large payload goes
    /// straight into its own buffer), and make room for at least `capacity` bytes in all.
    NeedMore {
        /// Read no more than this many bytes, if set.
        at_most: Option<usize>,
        /// The buffer must be able to hold this many bytes (from its front) in all.
        capacity: usize,
    },
    /// A whole message is buffered: its payload is the `len` bytes after the
    /// [`HEADER_LEN`]-byte header. Consume `HEADER_LEN + len`.
    Message {
        /// The payload length.
        len: usize,
    },
    /// A large message begins: consume its [`HEADER_LEN`]-byte header; the `len`-byte payload
    /// follows. Take what is already buffered of it, read the rest straight into the
    /// message's own buffer, and report every piece with
    /// [`payload_received`](Decoder::payload_received).
    LargeMessage {
        /// The payload length.
        len: usize,
    },
    /// The peer ended its sending direction (the END header: consume [`HEADER_LEN`] bytes,
    /// or nothing when the end was seen before). Every later call says the same.
    End {
        /// Bytes to consume.
        consume: usize,
    },
    /// The direction failed (sticky): every later call says the same.
    Failed(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: the next bytes are a header.
    Header,
    /// Inside a large message's payload (`Decoder::payload`), which the driver reads itself.
    Payload,
    /// The peer ended its direction.
    Ended,
    /// Failed for good (`Decoder::failure`).
    Failed,
}

/// The receive side of a connection as a state machine: fed the front of the driver's buffer,
/// it says what is there.
///
/// ```
/// use pipette::frame::{Header, HEADER_LEN};
/// use pipette::proto::{Decoded, Decoder};
///
/// let mut d = Decoder::new(4096);
/// let mut bytes = Header::new(2).encode().to_vec();
/// bytes.extend_from_slice(b"hi");
/// assert!(matches!(d.decode(&bytes[..5]), Decoded::NeedMore { .. }));
/// assert_eq!(d.decode(&bytes), Decoded::Message { len: 2 });
/// assert_eq!(&bytes[HEADER_LEN..], b"hi");
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    limit: u32,
    /// Kept small and separate from what a state carries, so that the common check (between
    /// messages?) is one compare.
    state: State,
    /// The previous message was large: read the next header alone.
    after_large: bool,
    /// In `State::Payload`: the message's length and how much of it was received.
    payload: (usize, usize),
    /// In `State::Failed`: why.
    failure: Option<Failure>,
    /// Whether messages may carry descriptors (`FEATURE_DESCRIPTORS` offered or agreed).
    accepts_descriptors: bool,
    /// How many descriptors the message just decoded carries, until the driver takes them
    /// (0 for a message without: only a header with descriptors sets it).
    descriptors: u8,
}

impl Decoder {
    /// A decoder accepting payloads of at most `limit` bytes.
    pub fn new(limit: u32) -> Decoder {
        Decoder {
            limit,
            state: State::Header,
            after_large: false,
            payload: (0, 0),
            failure: None,
            accepts_descriptors: false,
            descriptors: 0,
        }
    }

    /// Accepts messages that carry descriptors (this side offered or agreed to
    /// [`FEATURE_DESCRIPTORS`](crate::frame::FEATURE_DESCRIPTORS)); without it, such a
    /// header fails the direction.
    pub fn accept_descriptors(&mut self) {
        self.accepts_descriptors = true;
    }

    /// How many descriptors the message just decoded ([`Decoded::Message`] or
    /// [`Decoded::LargeMessage`]) carries: the driver takes that many from those that
    /// arrived with its bytes, then calls [`take_descriptors`](Decoder::take_descriptors).
    #[inline]
    pub fn descriptors(&self) -> usize {
        self.descriptors.into()
    }

    /// The count of [`descriptors`](Decoder::descriptors), reset to 0 for the next message.
    pub fn take_descriptors(&mut self) -> usize {
        std::mem::take(&mut self.descriptors).into()
    }

    /// The largest payload accepted.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Decodes the front of the receive buffer; see [`Decoded`] for what to consume.
    #[inline]
    pub fn decode(&mut self, buffered: &[u8]) -> Decoded {
        if self.state != State::Header {
            return self.not_between_messages();
        }
        let Some(h) = buffered.first_chunk::<HEADER_LEN>() else {
            return Decoded::NeedMore {
                at_most: self.after_large.then(|| HEADER_LEN - buffered.len()),
                capacity: HEADER_LEN,
            };
        };
        let header = match Header::decode(h, self.limit) {
            Ok(h) => h,
            Err(e) => return self.failed(Failure::BadHeader(e)),
        };
        if header.end {
            self.state = State::Ended;
            return Decoded::End {
                consume: HEADER_LEN,
            };
        }
        if header.descriptors != 0 {
            if let Some(failed) = self.carries_descriptors(header.descriptors) {
                return failed;
            }
        }
        let len = header.len as usize;
        if len >= LARGE_MESSAGE {
            self.state = State::Payload;
            self.payload = (len, 0);
            self.after_large = true;
            return Decoded::LargeMessage { len };
        }
        self.after_large = false;
        if buffered.len() - HEADER_LEN >= len {
            Decoded::Message { len }
        } else {
            Decoded::NeedMore {
                at_most: None,
                capacity: HEADER_LEN + len,
            }
        }
    }

    /// A header says its message carries `n` descriptors: noted for the driver
    /// ([`take_descriptors`](Decoder::take_descriptors)), or a failure where this side did
    /// not agree to receive any.
    #[cold]
    fn carries_descriptors(&mut self, n: u8) -> Option<Decoded> {
        if !self.accepts_descriptors {
            return Some(self.failed(Failure::BadHeader(DecodeError::DescriptorsNotAgreed(n))));
        }
        self.descriptors = n;
        None
    }

    /// What `decode` says outside the common state.
    #[cold]
    fn not_between_messages(&self) -> Decoded {
        match self.state {
            State::Ended => Decoded::End { consume: 0 },
            State::Failed => {
                Decoded::Failed(self.failure.clone().expect("a failed decoder's failure"))
            }
            _ => panic!("decode called while a large message's payload is being read"),
        }
    }

    fn failed(&mut self, f: Failure) -> Decoded {
        self.state = State::Failed;
        self.failure = Some(f.clone());
        Decoded::Failed(f)
    }

    /// Records `n` more payload bytes of the large message in progress; returns how many are
    /// still missing (0: the message is complete, and the decoder is between messages again).
    ///
    /// # Panics
    ///
    /// If no large message is in progress, or `n` is more than it still lacks.
    #[inline]
    pub fn payload_received(&mut self, n: usize) -> usize {
        assert!(
            self.state == State::Payload,
            "payload_received without a large message in progress"
        );
        let (len, received) = &mut self.payload;
        *received += n;
        assert!(*received <= *len, "more payload than the header announced");
        let missing = *len - *received;
        if missing == 0 {
            self.state = State::Header;
        }
        missing
    }

    /// The large message in progress: (its length, bytes received so far).
    pub fn large_in_progress(&self) -> Option<(usize, usize)> {
        (self.state == State::Payload).then_some(self.payload)
    }

    /// The stream ended with `buffered` bytes still unconsumed. At a message boundary that is
    /// the peer's orderly close (`Ok`, and every later [`decode`](Decoder::decode) says
    /// [`Decoded::End`]); inside a message it is a failure, which is sticky.
    pub fn end_of_stream(&mut self, buffered: usize) -> Result<(), Failure> {
        let failure = match self.state {
            State::Failed => return Err(self.failure.clone().expect("a failed decoder's failure")),
            State::Ended => return Ok(()),
            State::Header if buffered == 0 => {
                self.state = State::Ended;
                return Ok(());
            }
            State::Header => Failure::Truncated {
                in_header: buffered < HEADER_LEN,
                received: buffered.min(HEADER_LEN),
                expected: HEADER_LEN,
            },
            State::Payload => Failure::Truncated {
                in_header: false,
                received: self.payload.1,
                expected: self.payload.0,
            },
        };
        self.failed(failure.clone());
        Err(failure)
    }

    /// Fails the direction for good because of something outside the stream's bytes.
    pub fn fail(&mut self, failure: Failure) {
        self.failed(failure);
    }

    /// The direction's failure, once it has failed.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the decoder is between messages (nothing of a message received yet, as far as
    /// it knows).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Header
    }

    /// Whether `buffered` starts with a whole message (or an END header, or the decoder has
    /// ended or failed: anything a receive would return without reading), without changing
    /// the decoder's state.
    pub fn ready(&self, buffered: &[u8]) -> bool {
        match self.state {
            State::Header => {}
            State::Payload => return false,
            State::Ended | State::Failed => return true,
        }
        let Some(h) = buffered.first_chunk::<HEADER_LEN>() else {
            return false;
        };
        match Header::decode(h, self.limit) {
            Ok(h) if !h.end => {
                (h.len as usize) < LARGE_MESSAGE && buffered.len() - HEADER_LEN >= h.len as usize
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::FLAG_END;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = Header::new(payload.len() as u32).encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn small_messages_need_the_whole_frame() {
        let mut d = Decoder::new(1 << 20);
        let f = frame(b"hello");
        for cut in 0..f.len() {
            assert!(
                matches!(d.decode(&f[..cut]), Decoded::NeedMore { .. }),
                "{cut}"
            );
        }
        assert_eq!(d.decode(&f), Decoded::Message { len: 5 });
        assert!(d.at_boundary());
    }

    #[test]
    fn large_messages_are_read_by_the_driver_then_the_next_header_alone() {
        let mut d = Decoder::new(1 << 20);
        let big = vec![1u8; 100_000];
        let f = frame(&big);
        assert_eq!(d.decode(&f[..10]), Decoded::LargeMessage { len: 100_000 });
        assert_eq!(d.large_in_progress(), Some((100_000, 0)));
        assert_eq!(d.payload_received(2), 99_998);
        assert_eq!(d.payload_received(99_998), 0);
        assert_eq!(
            d.decode(&[]),
            Decoded::NeedMore {
                at_most: Some(HEADER_LEN),
                capacity: HEADER_LEN
            }
        );
        let f = frame(b"x");
        assert_eq!(d.decode(&f), Decoded::Message { len: 1 });
    }

    #[test]
    fn failures_are_sticky_and_typed() {
        let mut d = Decoder::new(4096);
        let f = frame(&[0; 5000]);
        assert!(matches!(
            d.decode(&f),
            Decoded::Failed(Failure::BadHeader(DecodeError::TooLarge {
                len: 5000,
                max: 4096
            }))
        ));
        assert!(matches!(d.decode(b""), Decoded::Failed(_)));
        assert!(d.end_of_stream(0).is_err());

        let mut d = Decoder::new(4096);
        let mut bad = Header::new(0).encode();
        bad[4..8].copy_from_slice(&FLAG_END.to_le_bytes());
        assert_eq!(d.decode(&bad), Decoded::End { consume: 8 });
        assert_eq!(d.decode(b"anything"), Decoded::End { consume: 0 });

        let mut d = Decoder::new(4096);
        assert_eq!(
            d.end_of_stream(3),
            Err(Failure::Truncated {
                in_header: true,
                received: 3,
                expected: 8
            })
        );
        let mut d = Decoder::new(1 << 20);
        assert!(matches!(
            d.decode(&frame(&[0; 9000])[..8]),
            Decoded::LargeMessage { .. }
        ));
        d.payload_received(100);
        assert_eq!(
            d.end_of_stream(0),
            Err(Failure::Truncated {
                in_header: false,
                received: 100,
                expected: 9000
            })
        );
        let mut d = Decoder::new(4096);
        assert_eq!(d.end_of_stream(0), Ok(()));
        assert_eq!(d.decode(b""), Decoded::End { consume: 0 });
    }

    #[test]
    fn descriptors_are_counted_where_accepted_and_fail_elsewhere() {
        let mut f = Header::with_descriptors(3, 2).encode().to_vec();
        f.extend_from_slice(b"abc");
        f.extend_from_slice(&frame(b"x"));
        let mut d = Decoder::new(4096);
        assert_eq!(
            d.decode(&f),
            Decoded::Failed(Failure::BadHeader(DecodeError::DescriptorsNotAgreed(2)))
        );
        let mut d = Decoder::new(1 << 20);
        d.accept_descriptors();
        assert_eq!(d.decode(&f), Decoded::Message { len: 3 });
        assert_eq!(d.descriptors(), 2);
        assert_eq!(d.take_descriptors(), 2, "the driver claims them");
        assert_eq!(d.decode(&f[11..]), Decoded::Message { len: 1 });
        assert_eq!(
            d.descriptors(),
            0,
            "a plain message after one with descriptors"
        );
        let big = Header::with_descriptors(9000, 253).encode();
        assert_eq!(d.decode(&big), Decoded::LargeMessage { len: 9000 });
        assert_eq!(d.take_descriptors(), 253);
        assert_eq!(d.descriptors(), 0);
    }
}
