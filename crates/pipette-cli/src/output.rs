//! Printing received messages: raw bytes, escaped lines, hex, JSON lines or NUL-terminated.
//!
//! Every format but `raw` keeps message boundaries, and every format is lossless: `lines`
//! escapes, `hex` and `json` encode. Only `raw` and `nul` pass bytes to the terminal as they
//! are; `lines`, `hex` and `json` never print a control character.

use std::io::{self, Write};

use base64::Engine as _;

use crate::cli::Output;

/// Appends `msg` to `buf` in `format`, with its separator.
pub fn format_into(buf: &mut Vec<u8>, format: Output, msg: &[u8]) {
    match format {
        Output::Raw => buf.extend_from_slice(msg),
        Output::Nul => {
            buf.extend_from_slice(msg);
            buf.push(0);
        }
        Output::Lines => {
            escape_into(buf, msg);
            buf.push(b'\n');
        }
        Output::Hex => {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            for b in msg {
                buf.push(DIGITS[usize::from(b >> 4)]);
                buf.push(DIGITS[usize::from(b & 15)]);
            }
            buf.push(b'\n');
        }
        Output::Json => {
            let value = match std::str::from_utf8(msg) {
                Ok(text) => serde_json::json!({ "text": text }),
                Err(_) => serde_json::json!({
                    "base64": base64::engine::general_purpose::STANDARD.encode(msg)
                }),
            };
            let mut ser = serde_json::Serializer::with_formatter(&mut *buf, TerminalSafe);
            serde::Serialize::serialize(&value, &mut ser).expect("writing JSON to a Vec");
            buf.push(b'\n');
        }
    }
}

/// Writes one message to `out` in `format` with one `write_all`, then flushes, so that
/// messages from several threads never interleave and a reader sees each at once.
pub fn write_message(out: &mut impl Write, format: Output, msg: &[u8]) -> io::Result<()> {
    if format == Output::Raw {
        out.write_all(msg)?;
    } else {
        let mut buf = Vec::with_capacity(msg.len() + 16);
        format_into(&mut buf, format, msg);
        out.write_all(&buf)?;
    }
    out.flush()
}

/// Escapes a message for one line: `\\`, `\n`, `\r`, `\t`; `\xHH` for other C0 controls, DEL
/// and bytes that are not UTF-8 (so `\xHH` with HH of 80 or more is always a raw byte);
/// `\u{HH}` for C1 controls. Everything else is printed as the UTF-8 it is.
pub fn escape_into(buf: &mut Vec<u8>, msg: &[u8]) {
    for chunk in msg.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => buf.extend_from_slice(b"\\\\"),
                '\n' => buf.extend_from_slice(b"\\n"),
                '\r' => buf.extend_from_slice(b"\\r"),
                '\t' => buf.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x80 && c.is_control() => {
                    let _ = write!(buf, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(buf, "\\u{{{:x}}}", c as u32);
                }
                c => {
                    let mut tmp = [0; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(buf, "\\x{b:02x}");
        }
    }
}

/// serde_json's compact output, with every control character escaped: serde_json escapes
/// those below U+0020 itself, this adds DEL and the C1 controls (U+0080 to U+009F), which
/// some terminals act on.
struct TerminalSafe;

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_control() {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Whether a failed write means the reader went away (`| head`): the command then ends
/// quietly, with success.
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(format: Output, msg: &[u8]) -> String {
        let mut buf = Vec::new();
        format_into(&mut buf, format, msg);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn lines_escape_what_a_terminal_would_act_on() {
        assert_eq!(show(Output::Lines, b"plain text"), "plain text\n");
        assert_eq!(show(Output::Lines, b"two\nlines"), "two\\nlines\n");
        assert_eq!(show(Output::Lines, b"a\\b\tc\r"), "a\\\\b\\tc\\r\n");
        assert_eq!(show(Output::Lines, b"\x1b[31mred"), "\\x1b[31mred\n");
        assert_eq!(show(Output::Lines, b"\x7f\x00"), "\\x7f\\x00\n");
        assert_eq!(show(Output::Lines, "\u{9b}".as_bytes()), "\\u{9b}\n");
        assert_eq!(show(Output::Lines, "café ✓".as_bytes()), "café ✓\n");
        assert_eq!(show(Output::Lines, b"\xff\xfe"), "\\xff\\xfe\n");
        assert_eq!(show(Output::Lines, b""), "\n");
    }

    #[test]
    fn hex_and_json() {
        assert_eq!(show(Output::Hex, b"\x00\xffA"), "00ff41\n");
        assert_eq!(show(Output::Json, b"hi\n"), "{\"text\":\"hi\\n\"}\n");
        assert_eq!(
            show(Output::Json, "\u{9b}\x7f".as_bytes()),
            "{\"text\":\"\\u009b\\u007f\"}\n"
        );
        assert_eq!(show(Output::Json, b"\xff\x00"), "{\"base64\":\"/wA=\"}\n");
    }

    #[test]
    fn raw_and_nul_keep_the_bytes() {
        let mut buf = Vec::new();
        format_into(&mut buf, Output::Raw, b"\xff\n");
        format_into(&mut buf, Output::Nul, b"a");
        assert_eq!(buf, b"\xff\na\0");
    }
}
