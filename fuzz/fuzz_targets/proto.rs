//! The protocol engine as a state machine (`pipette::proto`), driven the way pipette's
//! drivers drive it, differentially: the same byte stream, delivered in arbitrary pieces,
//! must give the same messages and the same ending as when it is delivered in the largest
//! pieces the engine allows.
//!
//! Input: byte 0 picks the receiver's limit, bytes 1..9 seed the piece sizes, the rest is the
//! stream a peer sent. Also checked: the hello reader and the reply reader give the same
//! verdict however their bytes are split, and never take a byte past the hello or the reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipette::frame::{HEADER_LEN, HELLO_LEN, REPLY_LEN};
use pipette::proto::{admit, Admission, Decoded, Decoder, HelloReader, ReplyReader, LARGE_MESSAGE};

/// The receive buffer of the drivers: one header and a payload just under `LARGE_MESSAGE`.
const BUF: usize = HEADER_LEN + LARGE_MESSAGE;

/// How a run ended.
#[derive(Debug, PartialEq)]
enum Ending {
    /// The END header, or end of stream at a message boundary.
    Closed,
    /// A failure (sticky): its text.
    Failed(String),
}

/// Piece sizes from a seed (xorshift), 1 to 300 bytes, sometimes larger.
struct Pieces(u64);

impl Pieces {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        match self.0 % 8 {
            0 => 1 + (self.0 >> 8) as usize % 20_000,
            _ => 1 + (self.0 >> 8) as usize % 300,
        }
    }
}

/// Drives a decoder over `stream` as the blocking driver does: a bounded buffer, reads of at
/// most `piece()` bytes (and at most what the decoder allows), large payloads read outside
/// the buffer. Returns the messages and how it ended.
fn run(stream: &[u8], limit: u32, mut piece: impl FnMut() -> usize) -> (Vec<Vec<u8>>, Ending) {
    let mut d = Decoder::new(limit);
    let mut buf: Vec<u8> = Vec::with_capacity(BUF);
    let mut src = 0;
    let mut messages = Vec::new();
    loop {
        if let Some((len, received)) = d.large_in_progress() {
            let mut out: Vec<u8> = messages.pop().expect("a large message in progress");
            assert_eq!(out.len(), received);
            while out.len() < len {
                let n = piece().min(len - out.len()).min(stream.len() - src);
                if n == 0 {
                    let f = d.end_of_stream(buf.len()).expect_err("ended inside a payload");
                    return (messages, Ending::Failed(f.to_string()));
                }
                out.extend_from_slice(&stream[src..src + n]);
                src += n;
                d.payload_received(n);
            }
            assert!(d.large_in_progress().is_none());
            messages.push(out);
            continue;
        }
        match d.decode(&buf) {
            Decoded::Message { len } => {
                assert!(len < LARGE_MESSAGE && len <= limit as usize);
                messages.push(buf[HEADER_LEN..HEADER_LEN + len].to_vec());
                buf.drain(..HEADER_LEN + len);
            }
            Decoded::NeedMore { at_most, capacity } => {
                assert!(capacity <= BUF, "the decoder asked for more room than a buffer has");
                assert!(capacity > buf.len(), "asked for more while enough was buffered");
                let room = BUF - buf.len();
                let mut n = piece().min(room).min(stream.len() - src);
                if let Some(m) = at_most {
                    assert!(m > 0);
                    n = n.min(m);
                }
                if n == 0 {
                    return match d.end_of_stream(buf.len()) {
                        Ok(()) => (messages, Ending::Closed),
                        Err(f) => (messages, Ending::Failed(f.to_string())),
                    };
                }
                buf.extend_from_slice(&stream[src..src + n]);
                src += n;
            }
            Decoded::LargeMessage { len } => {
                assert!(len >= LARGE_MESSAGE && len <= limit as usize);
                buf.drain(..HEADER_LEN);
                let take = len.min(buf.len());
                let out: Vec<u8> = buf.drain(..take).collect();
                let missing = d.payload_received(take);
                assert_eq!(missing, len - take);
                messages.push(out);
                if missing == 0 {
                    continue;
                }
            }
            Decoded::End { consume } => {
                buf.drain(..consume);
                // Sticky: asked again, it says the same, whatever follows.
                assert_eq!(d.decode(&buf), Decoded::End { consume: 0 });
                return (messages, Ending::Closed);
            }
            Decoded::Failed(f) => {
                assert!(matches!(d.decode(b"anything"), Decoded::Failed(g) if g == f));
                return (messages, Ending::Failed(f.to_string()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let limit = match data[0] % 4 {
        0 => 4096,
        1 => 16 << 10,
        2 => 1 << 20,
        _ => u32::MAX,
    };
    let seed = u64::from_le_bytes(data[1..9].try_into().unwrap()) | 1;
    let stream = &data[9..];

    // The same stream, in the largest pieces and in arbitrary ones: the same messages, the
    // same ending.
    let whole = run(stream, limit, || usize::MAX);
    let mut pieces = Pieces(seed);
    let split = run(stream, limit, || pieces.next());
    assert_eq!(whole, split, "splitting the stream changed what it means");
    let mut ones = run(stream, limit, || 1);
    assert_eq!(whole, std::mem::replace(&mut ones, (Vec::new(), Ending::Closed)));

    // The hello reader: the same bytes judged however they come, never a byte past the hello.
    let mut a = HelloReader::new(false);
    let took = a.feed(stream);
    assert!(took <= HELLO_LEN);
    let mut b = HelloReader::new(false);
    let mut pieces = Pieces(seed);
    let mut at = 0;
    while !b.is_done() && at < stream.len() {
        let n = pieces.next().min(stream.len() - at);
        at += b.feed(&stream[at..at + n]);
    }
    assert_eq!(a.is_done(), b.is_done());
    if a.is_done() {
        // A hello that is complete is the same bytes; bytes that cannot be one may be judged
        // after more or fewer of them, with the same verdict.
        let judge = |h: &HelloReader| match admit(false, 4096, 0, true, false, h.bytes()) {
            Admission::Accept {
                reply, peer_limit, ..
            } => (true, reply, peer_limit),
            Admission::Refuse { reply, .. } => (false, reply, 0),
        };
        assert_eq!(judge(&a), judge(&b));
        if judge(&a).0 {
            assert_eq!(a.bytes(), b.bytes());
        }
    }

    // The reply reader: likewise.
    let mut a = ReplyReader::new();
    assert!(a.feed(stream) <= REPLY_LEN);
    let mut b = ReplyReader::new();
    let mut pieces = Pieces(seed);
    let mut at = 0;
    while b.result().is_none() && at < stream.len() {
        let n = pieces.next().min(stream.len() - at);
        at += b.feed(&stream[at..at + n]);
    }
    assert_eq!(a.result(), b.result());
});
