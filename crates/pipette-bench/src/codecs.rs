//! `pipette-bench --codecs`: the comparison behind the binary codec of pipette's `serde`
//! feature. Encode + decode of three representative values with postcard, bincode 2 (serde
//! mode, standard configuration), MessagePack (rmp-serde, compact) and JSON, in one process,
//! no I/O: what the codec adds to a message's round trip. Each figure is the fastest of 25
//! timed loops of about 10 ms (the minimum: on a busy machine the median measures the
//! neighbours); the encoded size is printed too.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A typical request: a few integers, a short string, an option, an enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    seq: u32,
    name: String,
    ok: bool,
    ratio: f64,
    parent: Option<u64>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Open { path: String },
    Close,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Blob {
    #[serde(with = "serde_bytes_like")]
    data: Vec<u8>,
}

/// Bytes as a serde byte string (what `serde_bytes` does), so that no codec pays for a
/// sequence of 65 536 integers.
mod serde_bytes_like {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            // JSON has no byte strings: it writes an array of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

type Enc<T> = fn(&T) -> Vec<u8>;
type Dec<T> = fn(&[u8]) -> T;

fn codecs<T: Serialize + DeserializeOwned>() -> [(&'static str, Enc<T>, Dec<T>); 5] {
    [
        (
            "postcard (to_extend)",
            |v| postcard::to_extend(v, Vec::with_capacity(64)).unwrap(),
            |b| postcard::from_bytes(b).unwrap(),
        ),
        (
            "postcard",
            |v| postcard::to_allocvec(v).unwrap(),
            |b| postcard::from_bytes(b).unwrap(),
        ),
        (
            "bincode 2",
            |v| bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap(),
            |b| {
                bincode::serde::decode_from_slice(b, bincode::config::standard())
                    .unwrap()
                    .0
            },
        ),
        (
            "rmp-serde",
            |v| rmp_serde::to_vec(v).unwrap(),
            |b| rmp_serde::from_slice(b).unwrap(),
        ),
        (
            "serde_json",
            |v| serde_json::to_vec(v).unwrap(),
            |b| serde_json::from_slice(b).unwrap(),
        ),
    ]
}

/// The fastest time of one encode + decode of `value`, and the encoded size.
fn measure<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    enc: Enc<T>,
    dec: Dec<T>,
) -> (Duration, usize) {
    let bytes = enc(value);
    assert_eq!(&dec(&bytes), value, "the codec must round-trip");
    // Calibrate: enough iterations for about 10 ms.
    let mut iters = 1u32;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(dec(&enc(black_box(value))));
        }
        if t.elapsed() > Duration::from_millis(10) {
            break;
        }
        iters *= 2;
    }
    let runs = (0..25)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(dec(&enc(black_box(value))));
            }
            t.elapsed() / iters
        })
        .min()
        .unwrap();
    (runs, bytes.len())
}

fn table<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(what: &str, value: &T) {
    println!("\n{what}");
    println!("| codec | encode + decode | bytes |");
    println!("|---|---:|---:|");
    for (name, enc, dec) in codecs::<T>() {
        let (t, len) = measure(value, enc, dec);
        println!("| {name} | {:.0} ns | {len} |", t.as_nanos());
    }
}

/// Prints the three tables (Markdown).
pub fn run() {
    let small = Small {
        id: 1_234_567,
        seq: 42,
        name: "open-document".to_owned(),
        ok: true,
        ratio: 0.75,
        parent: Some(7),
        kind: Kind::Open {
            path: "/home/user/notes.txt".to_owned(),
        },
    };
    let strings: Vec<String> = (0..100).map(|i| format!("argument-{i}")).collect();
    let blob = Blob {
        data: (0..65_536u32).map(|i| (i * 31 % 251) as u8).collect(),
    };
    table("small struct (7 fields, an enum)", &small);
    table("Vec<String> (100 strings of 10-12 bytes)", &strings);
    table("64 KiB of bytes (as a byte string)", &blob);
}
