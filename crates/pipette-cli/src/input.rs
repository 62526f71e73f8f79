//! Where messages come from: arguments, files (`@PATH`, `--file`), standard input (`-`).

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, Read};
use std::path::PathBuf;

use crate::cli::Split;
use crate::fail::Failure;

/// One message source, in the order given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An argument's own bytes.
    Literal(Vec<u8>),
    /// A file's bytes (`@PATH`, `--file PATH`).
    File(PathBuf),
    /// Standard input (`-` or `@-`).
    Stdin,
}

impl Source {
    /// An argument: `-` or `@-` is standard input, `@PATH` a file, `@@TEXT` the text `@TEXT`,
    /// anything else its own bytes (any bytes on Unix, not only UTF-8).
    pub fn from_arg(arg: &OsStr) -> Source {
        match arg.to_str() {
            Some("-") | Some("@-") => Source::Stdin,
            Some(s) if s.starts_with("@@") => Source::Literal(s.as_bytes()[1..].to_vec()),
            Some(s) if s.starts_with('@') => Source::File(PathBuf::from(&s[1..])),
            _ => Source::Literal(arg.as_encoded_bytes().to_vec()),
        }
    }

    /// Reads the whole message now (all of standard input, for [`Source::Stdin`]).
    pub fn read(&self) -> Result<Vec<u8>, Failure> {
        let bytes = match self {
            Source::Literal(b) => return Ok(b.clone()),
            Source::File(path) => std::fs::read(path)
                .map_err(|e| Failure::io(format!("cannot read {}", path.display()), &e))?,
            Source::Stdin => {
                let mut all = Vec::new();
                io::stdin()
                    .lock()
                    .read_to_end(&mut all)
                    .map_err(|e| Failure::io("cannot read standard input", &e))?;
                all
            }
        };
        if bytes.len() > pipette::frame::MAX_MESSAGE_LIMIT as usize {
            return Err(Failure::other(format!(
                "{}: {} bytes is more than one message can carry ({} bytes)",
                self.describe(),
                bytes.len(),
                pipette::frame::MAX_MESSAGE_LIMIT
            )));
        }
        Ok(bytes)
    }

    /// Where the message comes from, in words.
    pub fn describe(&self) -> String {
        match self {
            Source::Literal(_) => "an argument".to_owned(),
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "standard input".to_owned(),
        }
    }
}

/// The sources of `pipette send`: the MESSAGE arguments and the `--file` options, in the
/// order they were given (`indices` are clap's positions of each).
pub fn in_order(
    messages: Vec<OsString>,
    message_indices: Vec<usize>,
    files: Vec<PathBuf>,
    file_indices: Vec<usize>,
) -> Vec<Source> {
    let mut all: Vec<(usize, Source)> = messages
        .iter()
        .zip(
            message_indices
                .into_iter()
                .chain(std::iter::repeat(usize::MAX)),
        )
        .map(|(m, i)| (i, Source::from_arg(m)))
        .chain(
            files
                .into_iter()
                .zip(
                    file_indices
                        .into_iter()
                        .chain(std::iter::repeat(usize::MAX)),
                )
                .map(|(f, i)| (i, Source::File(f))),
        )
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, s)| s).collect()
}

/// The byte that ends a record for `split`, if any.
pub fn delimiter(split: Split) -> Option<u8> {
    match split {
        Split::None => None,
        Split::Lines => Some(b'\n'),
        Split::Nul => Some(0),
    }
}

/// Reads records from `input` as they arrive, cut at `delim` (without it; in lines mode a CR
/// before the newline goes too), and hands each to `each`. A last record without its
/// delimiter counts when it is not empty.
pub fn for_each_record<E>(
    input: &mut impl BufRead,
    delim: u8,
    mut each: impl FnMut(&[u8]) -> Result<(), E>,
    read_error: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let mut record = Vec::new();
    loop {
        record.clear();
        let n = match input.read_until(delim, &mut record) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        if n == 0 {
            return Ok(());
        }
        if record.last() == Some(&delim) {
            record.pop();
            if delim == b'\n' && record.last() == Some(&b'\r') {
                record.pop();
            }
        }
        each(&record)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        assert_eq!(Source::from_arg("-".as_ref()), Source::Stdin);
        assert_eq!(Source::from_arg("@-".as_ref()), Source::Stdin);
        assert_eq!(
            Source::from_arg("@a/b".as_ref()),
            Source::File("a/b".into())
        );
        assert_eq!(
            Source::from_arg("@@at".as_ref()),
            Source::Literal(b"@at".to_vec())
        );
        assert_eq!(
            Source::from_arg("a b".as_ref()),
            Source::Literal(b"a b".to_vec())
        );
    }

    #[test]
    fn order_follows_the_command_line() {
        let s = in_order(
            vec!["a".into(), "b".into()],
            vec![2, 5],
            vec!["f".into()],
            vec![4],
        );
        assert_eq!(
            s,
            vec![
                Source::Literal(b"a".to_vec()),
                Source::File("f".into()),
                Source::Literal(b"b".to_vec())
            ]
        );
    }

    #[test]
    fn records() {
        let mut got = Vec::new();
        let mut input: &[u8] = b"one\r\ntwo\n\nlast";
        for_each_record(
            &mut input,
            b'\n',
            |r| {
                got.push(r.to_vec());
                Ok::<(), ()>(())
            },
            |_| (),
        )
        .unwrap();
        assert_eq!(got, vec![&b"one"[..], b"two", b"", b"last"]);
    }
}
