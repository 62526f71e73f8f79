//! `--encoding`: text in the peer's encoding on the wire, UTF-8 on the command line.
//!
//! Whole messages are converted with `pipette::Encoding`; a raw byte stream is converted as
//! it comes, holding back the bytes of a character cut between two reads until the rest
//! arrives. Without `--encoding` every conversion is the identity and copies nothing.

use std::borrow::Cow;

use pipette::Encoding;

use crate::fail::Failure;

/// Text from the command line (UTF-8) to the wire.
#[derive(Debug, Default)]
pub struct Encoder {
    encoding: Option<Encoding>,
    /// The start of a UTF-8 character whose rest has not arrived yet.
    carry: Vec<u8>,
}

impl Encoder {
    /// An encoder to `encoding`; `None` passes bytes through.
    pub fn new(encoding: Option<Encoding>) -> Encoder {
        Encoder {
            encoding,
            carry: Vec::new(),
        }
    }

    /// A whole message given as text (`what`: where it came from, for the error).
    pub fn message<'a>(&self, bytes: &'a [u8], what: &str) -> Result<Cow<'a, [u8]>, Failure> {
        let Some(encoding) = self.encoding else {
            return Ok(Cow::Borrowed(bytes));
        };
        let text = std::str::from_utf8(bytes).map_err(|e| not_text(what, e.valid_up_to()))?;
        Ok(encoding.encode(text))
    }

    /// The next piece of a stream of text (`what`: where it comes from).
    pub fn feed(&mut self, bytes: &[u8], what: &str) -> Result<Vec<u8>, Failure> {
        let Some(encoding) = self.encoding else {
            return Ok(bytes.to_vec());
        };
        self.carry.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.carry) {
            Ok(_) => self.carry.len(),
            // Cut inside a character: keep its start for the next piece.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(e) => return Err(not_text(what, e.valid_up_to())),
        };
        let rest = self.carry.split_off(complete);
        let text = std::str::from_utf8(&self.carry).expect("checked above");
        let out = encoding.encode(text).into_owned();
        self.carry = rest;
        Ok(out)
    }

    /// The end of the stream: it must not end inside a character.
    pub fn finish(&mut self, what: &str) -> Result<(), Failure> {
        if self.carry.is_empty() {
            Ok(())
        } else {
            Err(Failure::other(format!(
                "{what} ends inside a UTF-8 character: --encoding converts text"
            )))
        }
    }
}

fn not_text(what: &str, at: usize) -> Failure {
    Failure::usage(format!(
        "{what} is not UTF-8 text (at byte {at}): --encoding converts text; drop it to send bytes as they are"
    ))
}

/// Text from the wire to the command line (UTF-8), what is not valid text as U+FFFD.
#[derive(Debug, Default)]
pub struct Decoder {
    encoding: Option<Encoding>,
    /// The bytes of a character cut between two reads.
    carry: Vec<u8>,
}

impl Decoder {
    /// A decoder from `encoding`; `None` passes bytes through.
    pub fn new(encoding: Option<Encoding>) -> Decoder {
        Decoder {
            encoding,
            carry: Vec::new(),
        }
    }

    /// A whole message.
    pub fn message<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match self.encoding {
            None => Cow::Borrowed(bytes),
            Some(Encoding::Utf8) => match String::from_utf8_lossy(bytes) {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            },
            Some(encoding) => Cow::Owned(encoding.decode_lossy(bytes).into_bytes()),
        }
    }

    /// The next piece of a byte stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let Some(encoding) = self.encoding else {
            return bytes.to_vec();
        };
        self.carry.extend_from_slice(bytes);
        let complete = match encoding {
            Encoding::Utf16Le => {
                let mut n = self.carry.len() & !1;
                // A high surrogate waits for the low one that follows it.
                if n >= 2 && (0xD8..=0xDB).contains(&self.carry[n - 1]) {
                    n -= 2;
                }
                n
            }
            _ => self.carry.len() - incomplete_utf8_tail(&self.carry),
        };
        let rest = self.carry.split_off(complete);
        let out = self.message(&self.carry).into_owned();
        self.carry = rest;
        out
    }

    /// The end of the stream: what is left of a cut character becomes U+FFFD.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.carry);
        self.message(&rest).into_owned()
    }
}

/// How many bytes at the end of `b` are the start of a UTF-8 character still incomplete.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=3.min(b.len()) {
        let byte = b[b.len() - back];
        let needs = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            0x80..=0xBF => continue, // a continuation byte: look further back
            _ => return 0,
        };
        return if needs > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_convert_both_ways_and_refuse_what_is_not_text() {
        let enc = Encoder::new(Some(Encoding::Utf16Le));
        assert_eq!(&*enc.message("hé".as_bytes(), "x").unwrap(), b"h\0\xe9\0");
        let f = enc.message(b"a\xffb", "the argument").unwrap_err();
        assert!(f
            .message
            .contains("the argument is not UTF-8 text (at byte 1)"));
        let dec = Decoder::new(Some(Encoding::Utf16Le));
        assert_eq!(&*dec.message(b"h\0\xe9\0"), "hé".as_bytes());
        assert_eq!(&*dec.message(b"h\0\xe9"), "h\u{FFFD}".as_bytes());
        let none = Decoder::new(None);
        assert!(matches!(none.message(b"\xff"), Cow::Borrowed(b"\xff")));
    }

    #[test]
    fn streams_keep_characters_cut_between_reads() {
        let text = "a😀é✓z";
        let wire = Encoding::Utf16Le.encode(text).into_owned();
        // Every way of cutting the stream in two decodes to the same text.
        for cut in 0..=wire.len() {
            let mut d = Decoder::new(Some(Encoding::Utf16Le));
            let mut out = d.feed(&wire[..cut]);
            out.extend(d.feed(&wire[cut..]));
            out.extend(d.finish());
            assert_eq!(String::from_utf8(out).unwrap(), text, "cut at {cut}");

            let utf8 = text.as_bytes();
            let cut8 = cut.min(utf8.len());
            let mut e = Encoder::new(Some(Encoding::Utf16Le));
            let mut sent = e.feed(&utf8[..cut8], "stdin").unwrap();
            sent.extend(e.feed(&utf8[cut8..], "stdin").unwrap());
            e.finish("stdin").unwrap();
            assert_eq!(sent, wire, "cut at {cut8}");

            let mut d8 = Decoder::new(Some(Encoding::Utf8));
            let mut out8 = d8.feed(&utf8[..cut8]);
            out8.extend(d8.feed(&utf8[cut8..]));
            out8.extend(d8.finish());
            assert_eq!(out8, utf8);
        }
        let mut e = Encoder::new(Some(Encoding::Utf16Le));
        e.feed(&"é".as_bytes()[..1], "stdin").unwrap();
        assert!(e.finish("stdin").is_err());
    }
}
