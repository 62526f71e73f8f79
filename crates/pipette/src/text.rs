//! Text in the encodings peers in other languages put on the wire: UTF-8 and UTF-16LE.

use std::borrow::Cow;
use std::fmt;

use crate::error::{Error, Result};

/// How a string becomes the bytes of a message, and back.
///
/// pipette carries bytes. [`send_str`](crate::Connection::send_str) and
/// [`recv_string`](crate::Connection::recv_string) use UTF-8, Rust's own encoding; a peer
/// written in another language may use another one. .NET programs commonly write strings
/// with `UnicodeEncoding` (`Encoding.Unicode`): UTF-16, little-endian, without a byte
/// order mark, which is also what Windows calls a wide string. The connection methods
/// [`send_text`](crate::Connection::send_text) and
/// [`recv_text`](crate::Connection::recv_text) (blocking and async alike) take the encoding
/// to use, so no conversion is written by hand; [`encode`](Encoding::encode) and
/// [`decode`](Encoding::decode) do the same for bytes from anywhere else.
///
/// ```
/// use pipette::Encoding;
///
/// let wire = Encoding::Utf16Le.encode("hé ✓");
/// assert_eq!(&*wire, b"h\0\xe9\0 \0\x13\x27");
/// assert_eq!(Encoding::Utf16Le.decode(wire.into_owned())?, "hé ✓");
/// // UTF-8 is Rust's own: encoding borrows, nothing is copied.
/// assert_eq!(&*Encoding::Utf8.encode("hi"), b"hi");
/// # Ok::<(), pipette::Error>(())
/// ```
///
/// Decoding is strict: bytes that are not text in the encoding are an error that keeps them
/// ([`Error::NotUtf8`], [`Error::NotUtf16`]). [`decode_lossy`](Encoding::decode_lossy)
/// replaces them with U+FFFD instead, as .NET's `GetString` does by default. Neither adds
/// nor strips a byte order mark (.NET's `GetBytes` writes none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// UTF-8 (.NET: `Encoding.UTF8`, `new UTF8Encoding()`; Java's and Python's default on
    /// the wire). The default.
    #[default]
    Utf8,
    /// UTF-16, little-endian, no byte order mark: two bytes a character, four for those
    /// outside the Basic Multilingual Plane (.NET: `Encoding.Unicode`,
    /// `new UnicodeEncoding()`; Python: `"utf-16-le"`; Windows wide strings).
    Utf16Le,
}

impl Encoding {
    /// The encoding's usual name: `utf-8` or `utf-16le`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Utf16Le => "utf-16le",
        }
    }

    /// The bytes of `text` in this encoding (UTF-8 borrows `text`'s own bytes).
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            Encoding::Utf8 => Cow::Borrowed(text.as_bytes()),
            Encoding::Utf16Le => {
                let mut out = Vec::with_capacity(text.len() * 2);
                for unit in text.encode_utf16() {
                    out.extend_from_slice(&unit.to_le_bytes());
                }
                Cow::Owned(out)
            }
        }
    }

    /// The text that `bytes` hold in this encoding (a `Vec<u8>`, or the `Bytes` of the async
    /// API; UTF-8 reuses the allocation).
    ///
    /// # Errors
    ///
    /// [`Error::NotUtf8`] or [`Error::NotUtf16`] when the bytes are not text in this
    /// encoding (for UTF-16LE: an odd number of bytes, or an unpaired surrogate); the error
    /// keeps the bytes.
    pub fn decode(self, bytes: impl Into<Vec<u8>>) -> Result<String> {
        let bytes = bytes.into();
        match self {
            Encoding::Utf8 => String::from_utf8(bytes).map_err(Error::NotUtf8),
            Encoding::Utf16Le => match utf16le(&bytes, false) {
                Ok(text) => Ok(text),
                Err(reason) => Err(Error::NotUtf16 { reason, bytes }),
            },
        }
    }

    /// The text that `bytes` hold in this encoding, with U+FFFD for anything that is not
    /// (for UTF-16LE, also for a last odd byte), as .NET's `GetString` does by default.
    pub fn decode_lossy(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::Utf16Le => match utf16le(bytes, true) {
                Ok(text) => text,
                Err(_) => unreachable!("lossy decoding does not fail"),
            },
        }
    }
}

/// UTF-16LE to a `String`: strict (the reason on failure) or lossy.
fn utf16le(bytes: &[u8], lossy: bool) -> std::result::Result<String, String> {
    if bytes.len() % 2 != 0 && !lossy {
        return Err(format!(
            "it has an odd number of bytes ({}), and UTF-16 has two bytes a unit",
            bytes.len()
        ));
    }
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut text = String::with_capacity(bytes.len() / 2);
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => text.push(c),
            Err(_) if lossy => text.push(char::REPLACEMENT_CHARACTER),
            Err(e) => {
                // Every unit before the bad one is in `text` (strict mode replaces nothing).
                let at = text.encode_utf16().count() * 2;
                return Err(format!(
                    "an unpaired surrogate 0x{:04X} at byte {at}",
                    e.unpaired_surrogate()
                ));
            }
        }
    }
    if bytes.len() % 2 != 0 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    Ok(text)
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Encoding {
    type Err = String;

    /// `utf-8` (or `utf8`), `utf-16le` (or `utf16le`), in any case.
    fn from_str(s: &str) -> std::result::Result<Encoding, String> {
        match s.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "utf-16le" | "utf16le" => Ok(Encoding::Utf16Le),
            _ => Err(format!(
                "unknown text encoding {s:?}: use utf-8 or utf-16le (.NET's Encoding.Unicode)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16le_round_trips_every_plane() {
        for text in ["", "a", "héllo", "✓ done", "😀 outside the BMP", "\0nul"] {
            let bytes = Encoding::Utf16Le.encode(text);
            assert_eq!(bytes.len(), text.encode_utf16().count() * 2);
            assert_eq!(Encoding::Utf16Le.decode(bytes.into_owned()).unwrap(), text);
        }
        // U+1F600 is the surrogate pair D83D DE00, each unit little-endian.
        assert_eq!(&*Encoding::Utf16Le.encode("😀"), b"\x3d\xd8\x00\xde");
    }

    #[test]
    fn bad_utf16le_is_refused_with_the_bytes_kept_or_replaced() {
        match Encoding::Utf16Le.decode(b"a\0b".to_vec()) {
            Err(Error::NotUtf16 { reason, bytes }) => {
                assert!(reason.contains("odd number of bytes (3)"), "{reason}");
                assert_eq!(bytes, b"a\0b");
            }
            other => panic!("{other:?}"),
        }
        // "a", then a lone high surrogate, then "b".
        let lone = b"a\0\x3d\xd8b\0".to_vec();
        match Encoding::Utf16Le.decode(lone.clone()) {
            Err(Error::NotUtf16 { reason, .. }) => {
                assert!(reason.contains("0xD83D at byte 2"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Encoding::Utf16Le.decode_lossy(&lone), "a\u{FFFD}b");
        assert_eq!(Encoding::Utf16Le.decode_lossy(b"a\0b"), "a\u{FFFD}");
    }

    #[test]
    fn utf8_borrows_and_reports_like_recv_string() {
        assert!(matches!(Encoding::Utf8.encode("x"), Cow::Borrowed(_)));
        assert!(matches!(
            Encoding::Utf8.decode(vec![0xff]),
            Err(Error::NotUtf8(_))
        ));
        assert_eq!(Encoding::Utf8.decode_lossy(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn names_parse_and_print() {
        for e in [Encoding::Utf8, Encoding::Utf16Le] {
            assert_eq!(e.to_string().parse::<Encoding>(), Ok(e));
        }
        assert_eq!("UTF16LE".parse::<Encoding>(), Ok(Encoding::Utf16Le));
        assert!("utf-16"
            .parse::<Encoding>()
            .unwrap_err()
            .contains("utf-16le"));
    }
}
