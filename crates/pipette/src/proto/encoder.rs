//! The send side of a framed connection.

use std::fmt;

use super::wire::{Header, HEADER_LEN, MIN_MESSAGE_LIMIT};

/// Why the encoder will not frame a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The message is longer than the peer accepts: nothing may be written.
    TooLarge {
        /// The message length.
        len: usize,
        /// The peer's limit.
        max: u32,
    },
    /// An earlier message was cut part-way (see [`Encoder::cut`]), so the stream cannot be
    /// framed any more.
    Poisoned,
    /// The sending direction was ended ([`Encoder::end`]).
    Ended,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { len, max } => {
                write!(
                    f,
                    "a message of {len} bytes is over the peer's limit of {max}"
                )
            }
            EncodeError::Poisoned => {
                f.write_str("an earlier message was cut part-way, so no more can be framed")
            }
            EncodeError::Ended => f.write_str("the sending direction was closed"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Poisoned,
    Ended,
}

/// The send side as a state machine: frames messages (checking the peer's limit first) and
/// remembers when the stream can no longer be framed.
///
/// A message goes out as an [`Outgoing`]: its header and how much of header and payload the
/// driver has written, across as many partial writes as it takes. If the driver gives up on
/// a message part-way (a timeout, a cancelled future, a failed write), it calls
/// [`cut`](Encoder::cut): half a frame is on the wire, so the driver ends its sending
/// direction (the peer sees a truncated message, a protocol error) and every later message
/// is refused. Nothing is ever copied to finish a message later.
///
/// ```
/// use pipette::proto::Encoder;
///
/// let mut e = Encoder::new(false);
/// let mut out = e.message(5, 4096).unwrap();
/// let (header, payload) = out.remaining(b"hello");
/// assert_eq!(header.len() + payload.len(), 13);
/// assert!(!out.advance(10), "a partial write");
/// assert_eq!(out.remaining(b"hello").1, b"llo");
/// assert!(out.advance(3));
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    raw: bool,
    state: State,
}

impl Encoder {
    /// An encoder for a framed connection (`raw`: bytes go out as they are, no headers).
    pub fn new(raw: bool) -> Encoder {
        Encoder {
            raw,
            state: State::Open,
        }
    }

    /// Frames a message of `len` bytes for a peer that accepts at most `peer_limit`.
    #[inline]
    pub fn message(&self, len: usize, peer_limit: u32) -> Result<Outgoing, EncodeError> {
        self.check()?;
        if self.raw {
            return Ok(Outgoing::new([0; HEADER_LEN], 0, len));
        }
        if len > peer_limit as usize {
            return Err(EncodeError::TooLarge {
                len,
                max: peer_limit,
            });
        }
        Ok(Outgoing::new(
            Header::new(len as u32).encode(),
            HEADER_LEN,
            len,
        ))
    }

    /// Frames a message of `len` bytes carrying `descriptors` descriptors (1 to
    /// [`MAX_DESCRIPTORS`](crate::frame::MAX_DESCRIPTORS)), for a peer that agreed to
    /// [`FEATURE_DESCRIPTORS`](crate::frame::FEATURE_DESCRIPTORS) and accepts at most
    /// `peer_limit`. The descriptors go with the header's first byte.
    pub fn message_with_descriptors(
        &self,
        len: usize,
        peer_limit: u32,
        descriptors: u8,
    ) -> Result<Outgoing, EncodeError> {
        let mut out = self.message(len, peer_limit)?;
        if !self.raw {
            out.header = Header::with_descriptors(len as u32, descriptors).encode();
        }
        Ok(out)
    }

    /// Whether a client must read the server's reply (its real limit) before sending a
    /// message of `len` bytes: up to the protocol minimum it need not.
    pub fn needs_peer_limit(&self, len: usize) -> bool {
        !self.raw && len > MIN_MESSAGE_LIMIT as usize
    }

    /// Ends the sending direction: the END header to write, for transports without a
    /// half-close of their own (`None` in raw mode). Later messages are refused.
    pub fn end(&mut self) -> Result<Option<Outgoing>, EncodeError> {
        self.check()?;
        self.state = State::Ended;
        Ok((!self.raw).then(|| Outgoing::new(Header::end_of_stream().encode(), HEADER_LEN, 0)))
    }

    /// Records that a message was cut part-way: in framed mode the stream cannot be framed
    /// any more (returns `true`: the driver must end its sending direction). Raw mode has no
    /// frames to break (`false`).
    pub fn cut(&mut self) -> bool {
        if self.raw {
            return false;
        }
        self.state = State::Poisoned;
        true
    }

    /// `Ok` while messages may be sent.
    #[inline]
    pub fn check(&self) -> Result<(), EncodeError> {
        match self.state {
            State::Open => Ok(()),
            State::Poisoned => Err(EncodeError::Poisoned),
            State::Ended => Err(EncodeError::Ended),
        }
    }
}

/// One message on its way out: its header, and how much of header and payload is written.
/// The payload itself stays with the driver (borrowed or owned), passed to each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    header: [u8; HEADER_LEN],
    header_len: usize,
    payload_len: usize,
    written: usize,
}

impl Outgoing {
    fn new(header: [u8; HEADER_LEN], header_len: usize, payload_len: usize) -> Outgoing {
        Outgoing {
            header,
            header_len,
            payload_len,
            written: 0,
        }
    }

    /// What is still to be written: the rest of the header, then the rest of `payload` (the
    /// message's payload, as passed to [`Encoder::message`]).
    #[inline]
    pub fn remaining<'h, 'p>(&'h self, payload: &'p [u8]) -> (&'h [u8], &'p [u8]) {
        debug_assert_eq!(payload.len(), self.payload_len);
        let h = self.written.min(self.header_len);
        let p = self.written.saturating_sub(self.header_len);
        (&self.header[h..self.header_len], &payload[p..])
    }

    /// The whole header, for the first write of a message (its payload follows it).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    /// Records that `n` more bytes were written; returns whether the message is complete.
    #[inline]
    pub fn advance(&mut self, n: usize) -> bool {
        self.written += n;
        debug_assert!(self.written <= self.total());
        self.written == self.total()
    }

    /// Whether any byte of the message was written (giving up now cuts it).
    pub fn started(&self) -> bool {
        self.written > 0
    }

    /// Whether every byte was written.
    pub fn is_done(&self) -> bool {
        self.written == self.total()
    }

    /// Header and payload length.
    pub fn total(&self) -> usize {
        self.header_len + self.payload_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_poison_and_end() {
        let mut e = Encoder::new(false);
        assert_eq!(
            e.message(5000, 4096),
            Err(EncodeError::TooLarge {
                len: 5000,
                max: 4096
            })
        );
        assert!(e.check().is_ok(), "too large leaves the encoder usable");
        assert!(e.needs_peer_limit(4097) && !e.needs_peer_limit(4096));
        assert!(e.cut());
        assert_eq!(e.message(1, 4096), Err(EncodeError::Poisoned));
        let mut e = Encoder::new(false);
        let end = e.end().unwrap().unwrap();
        assert_eq!(end.remaining(b"").0, &Header::end_of_stream().encode());
        assert_eq!(e.message(1, 4096), Err(EncodeError::Ended));
        let mut raw = Encoder::new(true);
        assert_eq!(raw.message(1 << 30, 4096).unwrap().total(), 1 << 30);
        assert!(!raw.cut());
        assert!(raw.end().unwrap().is_none());
    }

    #[test]
    fn partial_writes_across_header_and_payload() {
        let e = Encoder::new(false);
        let payload = b"0123456789";
        for first in 0..=18 {
            let mut out = e.message(payload.len(), 4096).unwrap();
            let mut wire = Vec::new();
            let (h, p) = out.remaining(payload);
            let take = first.min(h.len() + p.len());
            let mut all = h.to_vec();
            all.extend_from_slice(p);
            wire.extend_from_slice(&all[..take]);
            let done = out.advance(take);
            assert_eq!(done, take == 18);
            let (h, p) = out.remaining(payload);
            wire.extend_from_slice(h);
            wire.extend_from_slice(p);
            assert_eq!(&wire[..8], &Header::new(10).encode());
            assert_eq!(&wire[8..], payload);
        }
    }
}
