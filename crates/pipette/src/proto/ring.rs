//! The shared-memory transport's layout and index arithmetic (docs/PROTOCOL.md §10), without
//! any memory access: what a region's header must say, where each ring and each index lives,
//! and what an index read from the peer may be. Everything read from shared memory is input
//! from another process; the drivers copy it out once and check it here before using it.
//!
//! Each side of a connection has its own memory (a memfd it created and sealed so that the
//! peer can map it read-only only): one header page and the ring of `ring_size` bytes it
//! sends through. Every shared word lives in the memory of the side that writes it: a side's
//! page holds its ring's `head` and producer-waiting flag, and the peer's ring's `tail` and
//! consumer-waiting flag. So nothing a side writes can be written by the other.
//!
//! Each ring is a byte stream carrying exactly the frames of §3 (the same headers and
//! payloads a socket would carry); the receiver decodes it with the same
//! [`Decoder`](super::Decoder). `head` counts the bytes ever written into a ring and `tail`
//! the bytes ever consumed, both as `u64` that never wrap in practice (2^64 bytes);
//! `head - tail` is what is buffered.
//!
//! ```
//! use pipette::proto::ring::{self, Layout, Word};
//!
//! let layout = Layout::new(1 << 20).unwrap();
//! let header = layout.header();
//! assert_eq!(Layout::parse(&header, layout.region_len()).unwrap(), layout);
//! // The ring follows the header page; the words sit on their own lines before it.
//! assert_eq!(layout.data_offset(), ring::HEADER_PAGE);
//! assert!(Layout::word_offset(Word::Head) < ring::HEADER_PAGE);
//! // A peer claiming more buffered bytes than the ring holds is corrupting it.
//! assert!(ring::buffered(5 << 20, 0, 1 << 20).is_err());
//! ```

use std::fmt;

/// The first bytes of a side's memory.
pub const MAGIC: [u8; 8] = *b"PIPESHM2";

/// The layout version this code writes and reads (version 1 was one region holding both
/// rings, which both sides could write).
pub const LAYOUT_VERSION: u32 = 2;

/// Bytes before the ring: the header and the shared words.
pub const HEADER_PAGE: usize = 4096;

/// How many bytes of the header page a receiver copies and checks (see [`Layout::parse`]).
pub const HEADER_LEN: usize = 24;

/// The smallest ring (one page).
pub const MIN_RING: usize = 4096;

/// The largest ring (1 GiB).
pub const MAX_RING: usize = 1 << 30;

/// The default ring, per direction.
pub const DEFAULT_RING: usize = 1 << 20;

/// Which way a ring carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ring 0: written by the client, read by the server.
    ClientToServer,
    /// Ring 1: written by the server, read by the client.
    ServerToClient,
}

/// One of a ring's shared words. Each sits on its own 64-byte line of the header page of the
/// side that writes it ([`Word::written_by_producer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word {
    /// `u64`: bytes ever written into the ring; written by its producer only.
    Head,
    /// `u64`: bytes ever consumed from the ring; written by its consumer only.
    Tail,
    /// `u32`: non-zero while the consumer may sleep waiting for bytes; written by the consumer.
    ConsumerWaiting,
    /// `u32`: non-zero while the producer may sleep waiting for room; written by the producer.
    ProducerWaiting,
}

impl Word {
    /// Whether the ring's producer writes this word (else its consumer does): it lives in
    /// the writer's memory.
    pub fn written_by_producer(self) -> bool {
        matches!(self, Word::Head | Word::ProducerWaiting)
    }
}

/// Where the parts of a side's memory are: its ring's size and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    ring_size: usize,
}

/// What is wrong with a region or an index read from it. Every one means the peer (or
/// something with access to the memory) broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The region does not start with [`MAGIC`].
    BadMagic,
    /// A layout version this side does not read.
    BadVersion(u32),
    /// A ring size that is not a power of two between [`MIN_RING`] and [`MAX_RING`].
    BadRingSize(u64),
    /// The region's length does not match its header.
    BadLength {
        /// What the header implies.
        expected: u64,
        /// What the region has.
        found: u64,
    },
    /// Ring offsets other than this layout's.
    BadOffsets,
    /// An index says more is buffered than a ring holds, or that bytes were consumed that
    /// were never written.
    BadIndex {
        /// The producer's count as read.
        head: u64,
        /// The consumer's count as read.
        tail: u64,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::BadMagic => write!(
                f,
                "the shared memory does not start with {:?}",
                String::from_utf8_lossy(&MAGIC)
            ),
            RingError::BadVersion(v) => write!(
                f,
                "shared-memory layout version {v}; this side reads version {LAYOUT_VERSION}"
            ),
            RingError::BadRingSize(n) => write!(
                f,
                "shared-memory ring size {n} is not a power of two from {MIN_RING} to {MAX_RING}"
            ),
            RingError::BadLength { expected, found } => write!(
                f,
                "shared memory of {found} bytes where its header implies {expected}"
            ),
            RingError::BadOffsets => f.write_str("shared-memory ring offsets are not the layout's"),
            RingError::BadIndex { head, tail } => write!(
                f,
                "corrupted shared-memory ring: the peer's indices say {head} bytes written and {tail} consumed"
            ),
        }
    }
}

impl std::error::Error for RingError {}

impl Layout {
    /// A layout with rings of `ring_size` bytes (a power of two from [`MIN_RING`] to
    /// [`MAX_RING`]).
    pub fn new(ring_size: usize) -> Result<Layout, RingError> {
        if !(MIN_RING..=MAX_RING).contains(&ring_size) || !ring_size.is_power_of_two() {
            return Err(RingError::BadRingSize(ring_size as u64));
        }
        Ok(Layout { ring_size })
    }

    /// Bytes per ring.
    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// The memory's length: the header page and the ring.
    pub fn region_len(&self) -> usize {
        HEADER_PAGE + self.ring_size
    }

    /// Where the ring's bytes start.
    pub fn data_offset(&self) -> usize {
        HEADER_PAGE
    }

    /// Where a shared word is in the memory of the side that writes it: its own ring's
    /// `Head` and `ProducerWaiting`, the peer's ring's `Tail` and `ConsumerWaiting`, each on
    /// its own 64-byte line after the header.
    pub fn word_offset(w: Word) -> usize {
        match w {
            Word::Head => 64,
            Word::ProducerWaiting => 128,
            Word::Tail => 192,
            Word::ConsumerWaiting => 256,
        }
    }

    /// The header a side writes at the start of its memory: magic, version, ring size, the
    /// ring's offset, and 4 reserved zero bytes.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.ring_size as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(self.data_offset() as u32).to_le_bytes());
        b
    }

    /// Checks the header the peer wrote (a private copy of its first [`HEADER_LEN`] bytes)
    /// against the length of its memory.
    pub fn parse(b: &[u8; HEADER_LEN], region_len: usize) -> Result<Layout, RingError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[0..8] != MAGIC {
            return Err(RingError::BadMagic);
        }
        let version = u32_at(8);
        if version != LAYOUT_VERSION {
            return Err(RingError::BadVersion(version));
        }
        let layout = Layout::new(u32_at(12) as usize)?;
        if layout.region_len() != region_len {
            return Err(RingError::BadLength {
                expected: layout.region_len() as u64,
                found: region_len as u64,
            });
        }
        if u32_at(16) as usize != layout.data_offset() || u32_at(20) != 0 {
            return Err(RingError::BadOffsets);
        }
        Ok(layout)
    }
}

/// How many bytes a ring of `size` holds between `tail` and `head`, refusing indices that no
/// honest peer writes (more than the ring holds, or a tail past the head).
pub fn buffered(head: u64, tail: u64, size: usize) -> Result<usize, RingError> {
    match head.checked_sub(tail) {
        Some(n) if n <= size as u64 => Ok(n as usize),
        _ => Err(RingError::BadIndex { head, tail }),
    }
}

/// How many bytes a producer at `head` may write when the consumer reports `tail`.
pub fn room(head: u64, tail: u64, size: usize) -> Result<usize, RingError> {
    Ok(size - buffered(head, tail, size)?)
}

/// The one or two ranges of a ring of `size` bytes that `len` bytes at stream position `pos`
/// occupy (the second is empty unless they wrap around the end). `len` is at most `size`.
pub fn spans(pos: u64, len: usize, size: usize) -> [std::ops::Range<usize>; 2] {
    debug_assert!(len <= size && size.is_power_of_two());
    let start = (pos & (size as u64 - 1)) as usize;
    let first = len.min(size - start);
    [start..start + first, 0..len - first]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_every_field_is_checked() {
        let l = Layout::new(8192).unwrap();
        let h = l.header();
        assert_eq!(Layout::parse(&h, l.region_len()), Ok(l));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(
            Layout::parse(&bad, l.region_len()),
            Err(RingError::BadMagic)
        );
        for v in [1u8, 3] {
            let mut bad = h;
            bad[8] = v;
            assert_eq!(
                Layout::parse(&bad, l.region_len()),
                Err(RingError::BadVersion(v.into()))
            );
        }
        let mut bad = h;
        bad[12..16].copy_from_slice(&12288u32.to_le_bytes());
        assert_eq!(
            Layout::parse(&bad, l.region_len()),
            Err(RingError::BadRingSize(12288))
        );
        assert!(matches!(
            Layout::parse(&h, l.region_len() - 4096),
            Err(RingError::BadLength { .. })
        ));
        for at in [16, 20] {
            let mut bad = h;
            bad[at] ^= 1;
            assert_eq!(
                Layout::parse(&bad, l.region_len()),
                Err(RingError::BadOffsets)
            );
        }
        assert!(Layout::new(2048).is_err());
        assert!(Layout::new(MAX_RING * 2).is_err());
    }

    #[test]
    fn indices_from_the_peer_are_bounded() {
        assert_eq!(buffered(10, 4, 16), Ok(6));
        assert_eq!(buffered(20, 4, 16), Ok(16));
        assert!(buffered(21, 4, 16).is_err(), "more than the ring holds");
        assert!(buffered(3, 4, 16).is_err(), "consumed more than written");
        assert_eq!(room(20, 4, 16), Ok(0));
        assert_eq!(room(u64::MAX, u64::MAX - 3, 16), Ok(13));
    }

    #[test]
    fn spans_wrap_at_the_end() {
        assert_eq!(spans(0, 5, 16), [0..5, 0..0]);
        assert_eq!(spans(14, 5, 16), [14..16, 0..3]);
        assert_eq!(spans(16 * 7 + 3, 16, 16), [3..16, 0..3]);
        assert_eq!(spans(5, 0, 16), [5..5, 0..0]);
    }

    #[test]
    fn the_words_are_on_their_own_lines_in_the_header_page() {
        let mut seen = Vec::new();
        for w in [
            Word::Head,
            Word::Tail,
            Word::ConsumerWaiting,
            Word::ProducerWaiting,
        ] {
            let at = Layout::word_offset(w);
            assert!(at >= HEADER_LEN && at + 8 <= HEADER_PAGE && at % 64 == 0);
            assert!(!seen.contains(&(at / 64)));
            seen.push(at / 64);
        }
    }
}
