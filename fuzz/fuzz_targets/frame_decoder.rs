//! The message-header decoder, fed a whole byte stream as a receiver would read it.
//!
//! Input: 4 bytes choosing the receiver's limit, then the bytes a peer sent. Properties:
//! decoding never panics; a decoded header never exceeds the limit and re-encodes to exactly
//! the bytes it came from (descriptor counts included); every refusal names the right value;
//! errors display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipette::frame::{DecodeError, Header, FLAG_DESCRIPTORS, FLAG_END, HEADER_LEN, MAX_DESCRIPTORS};

fuzz_target!(|data: &[u8]| {
    let Some((limit, mut stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let max = u32::from_le_bytes(*limit);
    // A message carrying n descriptors: FLAG_DESCRIPTORS | n << 8, n from 1 to 253.
    let descriptors = |flags: u32| {
        let n = flags >> 8;
        (flags & 0xff == FLAG_DESCRIPTORS && (1..=u32::from(MAX_DESCRIPTORS)).contains(&n))
            .then_some(n as u8)
    };
    while let Some((bytes, rest)) = stream.split_first_chunk::<HEADER_LEN>() {
        let announced = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        match Header::decode(bytes, max) {
            Ok(h) => {
                assert!(h.len <= max, "decoded {} over the limit {max}", h.len);
                assert_eq!(h.len, announced);
                if h.end {
                    // The end-of-stream marker: flag 1, no payload.
                    assert_eq!((flags, h.len), (FLAG_END, 0));
                } else if flags == 0 {
                    assert_eq!(h.descriptors, 0);
                } else {
                    assert_eq!(Some(h.descriptors), descriptors(flags), "{flags:#x}");
                }
                assert_eq!(
                    &h.encode(),
                    bytes,
                    "decode then encode must give the same bytes"
                );
                // The payload follows; skip it (as much of it as arrived).
                let n = (h.len as usize).min(rest.len());
                stream = &rest[n..];
            }
            Err(e) => {
                let _ = e.to_string();
                match e {
                    DecodeError::UnknownFlags(f) => {
                        assert!(
                            f == flags
                                && f != 0
                                && !(f == FLAG_END && announced == 0)
                                && descriptors(f).is_none()
                        )
                    }
                    DecodeError::TooLarge { len, max: m } => {
                        assert!(
                            (flags == 0 || descriptors(flags).is_some())
                                && len == announced
                                && m == max
                                && len > max
                        )
                    }
                    other => panic!("a header cannot fail with {other:?}"),
                }
                // A receiver closes the connection here.
                break;
            }
        }
    }
    // The end-of-stream marker decodes whatever the limit.
    let end = Header::end_of_stream();
    assert_eq!(Header::decode(&end.encode(), max), Ok(end));
    // Encoding then decoding any length round-trips, and the limit is exact.
    let h = Header::new(max);
    assert_eq!(Header::decode(&h.encode(), max), Ok(h));
    if max > 0 {
        assert!(matches!(
            Header::decode(&h.encode(), max - 1),
            Err(DecodeError::TooLarge { .. })
        ));
    }
});
