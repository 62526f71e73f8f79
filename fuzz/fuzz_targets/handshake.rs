//! The handshake parsers: a client's hello (as a server reads it, possibly cut short) and a
//! server's reply (as a client reads it).
//!
//! Properties: parsing never panics; `could_be_hello` agrees with the decoder on the magic
//! (a prefix it rejects never decodes; a full hello the decoder rejects for its magic is one
//! it rejects); what decodes re-encodes to the same bytes (a refusal's features aside); an accepted
//! reply carries a speakable version and a limit of at least the protocol minimum; a hello
//! never passes for a reply; errors display.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipette::frame::{
    could_be_hello, negotiate, DecodeError, Hello, Reply, Status, HELLO_LEN, HELLO_MAGIC,
    MIN_MESSAGE_LIMIT, REPLY_LEN, VERSION,
};

fuzz_target!(|data: &[u8]| {
    // could_be_hello is exactly "the bytes so far match the magic".
    let n = data.len().min(HELLO_MAGIC.len());
    let magic_so_far = data[..n] == HELLO_MAGIC[..n];
    assert_eq!(could_be_hello(data), magic_so_far);

    match Hello::decode_prefix(data) {
        Ok(h) => {
            assert_eq!(data.len(), HELLO_LEN);
            assert!(magic_so_far);
            assert!(h.max_message_size >= MIN_MESSAGE_LIMIT);
            // Every field, the offered features included, survives a round trip.
            assert_eq!(&h.encode()[..], data);
            assert_eq!(Hello::decode(&h.encode()), Ok(h));
            if let Some(v) = negotiate(h.version) {
                assert!((1..=VERSION).contains(&v) && v <= h.version);
            } else {
                assert_eq!(h.version, 0);
            }
            // A hello is never mistaken for a reply.
            assert!(Reply::decode(&h.encode()).is_err());
        }
        Err(e) => {
            let _ = e.to_string();
            match e {
                DecodeError::BadMagic { found, .. } => {
                    // Either not a full hello, or the magic is wrong.
                    assert!(data.len() != HELLO_LEN || !magic_so_far);
                    assert_eq!(found[..n], data[..n]);
                }
                DecodeError::LimitTooSmall(l) => {
                    assert!(data.len() == HELLO_LEN && magic_so_far && l < MIN_MESSAGE_LIMIT)
                }
                other => panic!("a hello cannot fail with {other:?}"),
            }
        }
    }

    // The same bytes as a server's reply.
    if let Some(bytes) = data.first_chunk::<REPLY_LEN>() {
        match Reply::decode(bytes) {
            Ok(r) => {
                let mut canonical = *bytes;
                if r.status != Status::Accepted {
                    canonical[11] = 0; // a refusal agrees to no feature
                }
                assert_eq!(r.encode(), canonical);
                assert_eq!(Reply::decode(&r.encode()), Ok(r));
                if r.status == Status::Accepted {
                    assert!((1..=VERSION).contains(&r.version));
                    assert!(r.max_message_size >= MIN_MESSAGE_LIMIT);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
