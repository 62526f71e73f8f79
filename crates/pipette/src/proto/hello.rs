//! A server's view of a new connection's first bytes.

use super::wire::{could_be_hello, HELLO_LEN};

/// Collects a new connection's hello as its bytes arrive, and says when there are enough to
/// judge the peer: all [`HELLO_LEN`] bytes, or as soon as the bytes so far cannot be a hello
/// (a foreign peer is turned away at its first byte, not after sixteen that may never come).
/// In raw mode there is no hello: the reader is done at once.
///
/// It never asks for a byte past the hello, so whatever the client sent behind it (a first
/// message) stays in the stream for the connection.
///
/// ```
/// use pipette::proto::HelloReader;
///
/// let mut r = HelloReader::new(false);
/// assert_eq!(r.spare().len(), 16);
/// r.spare()[..4].copy_from_slice(b"GET ");
/// assert!(r.filled(4), "cannot be a hello: judge it now");
/// assert_eq!(r.bytes(), b"GET ");
/// ```
#[derive(Debug, Clone)]
pub struct HelloReader {
    buf: [u8; HELLO_LEN],
    have: usize,
    need: usize,
}

impl HelloReader {
    /// A reader for a framed connection (`raw`: none is needed).
    pub fn new(raw: bool) -> HelloReader {
        HelloReader {
            buf: [0; HELLO_LEN],
            have: 0,
            need: if raw { 0 } else { HELLO_LEN },
        }
    }

    /// Where the next bytes go: exactly what the hello still lacks (empty once done).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.is_done() {
            return &mut [];
        }
        &mut self.buf[self.have..self.need]
    }

    /// Records that `n` bytes were written into [`spare`](HelloReader::spare); returns
    /// whether the peer can now be judged.
    ///
    /// # Panics
    ///
    /// If `n` is more than `spare()` offered.
    pub fn filled(&mut self, n: usize) -> bool {
        assert!(
            self.have + n <= self.need,
            "more bytes than the reader offered"
        );
        self.have += n;
        self.is_done()
    }

    /// Feeds bytes from a slice (for drivers that read elsewhere first); returns how many
    /// were taken.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// Whether there are enough bytes to judge the peer.
    pub fn is_done(&self) -> bool {
        self.have == self.need || !could_be_hello(&self.buf[..self.have])
    }

    /// The bytes received so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.have]
    }

    /// How many more bytes a complete hello needs (0 in raw mode, or once done).
    pub fn missing(&self) -> usize {
        if self.is_done() {
            0
        } else {
            self.need - self.have
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::Hello;

    #[test]
    fn a_hello_in_pieces_is_done_after_sixteen_bytes_and_never_asks_for_more() {
        let hello = Hello {
            version: 1,
            features: 0,
            max_message_size: 4096,
        }
        .encode();
        for split in 0..=HELLO_LEN {
            let mut r = HelloReader::new(false);
            assert_eq!(r.feed(&hello[..split]), split);
            assert_eq!(r.is_done(), split == HELLO_LEN);
            let mut rest = hello[split..].to_vec();
            rest.extend_from_slice(b"first message");
            assert_eq!(r.feed(&rest), HELLO_LEN - split);
            assert!(r.is_done());
            assert_eq!(r.bytes(), &hello[..]);
            assert!(r.spare().is_empty());
        }
    }

    #[test]
    fn garbage_is_done_at_its_first_byte_and_raw_needs_nothing() {
        let mut r = HelloReader::new(false);
        assert_eq!(r.feed(b"Xyz"), 3);
        assert!(r.is_done());
        assert_eq!(r.missing(), 0);
        let r = HelloReader::new(true);
        assert!(r.is_done());
        assert!(r.bytes().is_empty());
    }
}
