//! The shared-memory ring (`pipette::proto::ring`, docs/PROTOCOL.md §10) as its reader sees it:
//!
//! - any header bytes and region length: `Layout::parse` never panics, and accepts exactly
//!   the headers `Layout::header` writes, for the matching length;
//! - an adversarial writer: every step it sets `head` to a value of its choice and scribbles
//!   bytes into the ring, even over bytes it already published. The reader follows the
//!   driver's rules (bound the index, copy the bytes once, decode only the copy) and must
//!   never panic, never reach outside the ring, and stop at the first impossible index;
//! - an honest writer: messages written through a small ring as room allows, read back in
//!   pieces of the fuzzer's choosing, come out unchanged (wrap-around included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipette::frame::{Header, HEADER_LEN};
use pipette::proto::ring::{self, Layout};
use pipette::proto::{Decoded, Decoder};

const RING: usize = 4096;

/// Decodes whole messages from the reader's private copy; `false` once the stream is over
/// (the decoder refused it, or it ended).
fn drain(d: &mut Decoder, copy: &mut Vec<u8>, large: &mut Option<(usize, Vec<u8>)>, out: &mut Vec<Vec<u8>>) -> bool {
    loop {
        if let Some((len, payload)) = large {
            let take = (*len - payload.len()).min(copy.len());
            payload.extend(copy.drain(..take));
            d.payload_received(take);
            if payload.len() < *len {
                return true;
            }
            out.push(std::mem::take(payload));
            *large = None;
            continue;
        }
        match d.decode(copy) {
            Decoded::Message { len } => {
                out.push(copy[HEADER_LEN..HEADER_LEN + len].to_vec());
                copy.drain(..HEADER_LEN + len);
            }
            Decoded::NeedMore { .. } => return true,
            Decoded::LargeMessage { len } => {
                copy.drain(..HEADER_LEN);
                *large = Some((len, Vec::with_capacity(len.min(1 << 16))));
            }
            // The peer's end (a stream ends here; the driver reports `Closed`).
            Decoded::End { .. } | Decoded::Failed(_) => return false,
        }
    }
}

fn u64_at(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    // The header.
    if data.len() >= ring::HEADER_LEN + 8 {
        let h: [u8; ring::HEADER_LEN] = data[..ring::HEADER_LEN].try_into().unwrap();
        let len = u64_at(&data[ring::HEADER_LEN..]) as usize;
        if let Ok(l) = Layout::parse(&h, len) {
            assert_eq!(l.header(), h);
            assert_eq!(l.region_len(), len);
        }
        if let Ok(l) = Layout::new(1 << (12 + data[0] % 19)) {
            assert_eq!(Layout::parse(&l.header(), l.region_len()), Ok(l));
        }
    }

    // The adversarial writer: steps of 12 bytes (a head offset, then 4 scribbled bytes).
    let mut mem = vec![0u8; RING];
    let (mut tail, mut d) = (0u64, Decoder::new(1 << 20));
    let (mut copy, mut large, mut out) = (Vec::new(), None, Vec::new());
    for step in data.chunks(12) {
        let raw = u64_at(step);
        // Mostly plausible heads near the tail, sometimes anything at all.
        let head = if raw & 1 == 0 {
            tail.wrapping_add((raw >> 1) % (2 * RING as u64))
        } else {
            raw
        };
        for (i, b) in step.iter().skip(8).enumerate() {
            mem[(head as usize).wrapping_add(i) % RING] = *b;
        }
        match ring::buffered(head, tail, RING) {
            Err(_) => {
                assert!(head < tail || head - tail > RING as u64);
                break; // the driver closes the connection here
            }
            Ok(n) => {
                assert!(n <= RING);
                for span in ring::spans(tail, n, RING) {
                    assert!(span.end <= RING);
                    copy.extend_from_slice(&mem[span]);
                }
                tail += n as u64;
                if !drain(&mut d, &mut copy, &mut large, &mut out) {
                    break;
                }
            }
        }
    }

    // The honest writer: messages cut from the input, written as room allows, read in
    // pieces whose sizes come from the input too.
    let messages: Vec<&[u8]> = data.chunks(1 + data.first().copied().unwrap_or(0) as usize * 40).collect();
    let mut stream = Vec::new();
    for m in &messages {
        stream.extend_from_slice(&Header::new(m.len() as u32).encode());
        stream.extend_from_slice(m);
    }
    let mut mem = vec![0u8; RING];
    let (mut head, mut tail, mut written) = (0u64, 0u64, 0usize);
    let (mut d, mut copy, mut large, mut out) = (Decoder::new(1 << 20), Vec::new(), None, Vec::new());
    let mut sizes = data.iter().cycle().map(|b| 1 + *b as usize * 17);
    while written < stream.len() || head > tail {
        let room = ring::room(head, tail, RING).unwrap();
        let n = room.min(stream.len() - written).min(sizes.next().unwrap_or(RING));
        for (span, chunk) in ring::spans(head, n, RING).into_iter().zip([0, 1]) {
            let at = written + if chunk == 0 { 0 } else { n - span.len() };
            mem[span.clone()].copy_from_slice(&stream[at..at + span.len()]);
        }
        written += n;
        head += n as u64;
        let avail = ring::buffered(head, tail, RING).unwrap();
        let k = avail.min(sizes.next().unwrap_or(RING));
        for span in ring::spans(tail, k, RING) {
            copy.extend_from_slice(&mem[span]);
        }
        tail += k as u64;
        assert!(drain(&mut d, &mut copy, &mut large, &mut out), "an honest stream decodes");
    }
    assert_eq!(out.len(), messages.len());
    for (a, b) in out.iter().zip(&messages) {
        assert_eq!(a.as_slice(), *b);
    }
});
