//! Failures in the command line's own words, and the exit status each one gives.

use std::fmt;
use std::io;
use std::time::Duration;

use pipette::{Error, Operation, Refusal};

/// The documented exit statuses (see `pipette --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: anything not listed below.
    Other = 1,
    /// 2: a bad option or value, an invalid name.
    Usage = 2,
    /// 3: no server is listening on the name.
    NotFound = 3,
    /// 4: the server refused this client, this client refused the server, or permission
    /// denied.
    Refused = 4,
    /// 5: `--wait` or `--timeout` expired.
    TimedOut = 5,
}

/// Why a command failed: one line for a person, and an exit status for a script.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: Code,
    /// What happened and, where there is something to do, what to do.
    pub message: String,
}

impl Failure {
    /// A failure with this exit status.
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Code::Usage, message)
    }

    /// Any other error (exit status 1).
    pub fn other(message: impl Into<String>) -> Failure {
        Failure::new(Code::Other, message)
    }

    /// `--timeout` expired while doing `doing` with the server of `name`.
    pub fn timed_out(name: &str, doing: Doing, after: Duration) -> Failure {
        Failure::new(
            Code::TimedOut,
            format!(
                "timed out {} the server of {name:?}: --timeout {} expired",
                doing.words(),
                secs(after)
            ),
        )
    }

    /// An I/O error of the command itself (reading a file, writing the output).
    pub fn io(context: impl fmt::Display, e: &io::Error) -> Failure {
        let code = match e.kind() {
            io::ErrorKind::PermissionDenied => Code::Refused,
            _ => Code::Other,
        };
        Failure::new(code, format!("{context}: {}", chain(e)))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An error and its sources, as one line: `error: source: source`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        // Some errors (io::Error wrapping a custom error) show their source as themselves.
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// A duration as the flags spell it: `2s`, `0.5s`, `1.25s`.
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// What the command was doing when a library error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    /// Binding the name (a server).
    Bind,
    /// Connecting, waiting at most this long for the server to appear (`--wait`).
    Connect(Option<Duration>),
    /// Sending a message of this many bytes.
    Send(usize),
    /// Waiting for the reply to a message of this many bytes.
    Reply(usize),
    /// Receiving messages or bytes.
    Recv,
    /// Closing the sending side, or waiting for the server to close.
    Close,
}

impl Doing {
    fn words(self) -> &'static str {
        match self {
            Doing::Bind => "binding",
            Doing::Connect(_) => "connecting to",
            Doing::Send(_) => "sending to",
            Doing::Reply(_) => "waiting for the reply of",
            Doing::Recv => "receiving from",
            Doing::Close => "waiting for the end from",
        }
    }
}

/// Where a library error happened, to say it in the command line's words.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The endpoint name as given.
    pub name: &'a str,
    /// This side's `--max-size`.
    pub max_size: usize,
    /// What was going on.
    pub doing: Doing,
}

impl Context<'_> {
    /// The failure a library error stands for, in the command line's words.
    pub fn failure(&self, e: &Error) -> Failure {
        let name = self.name;
        match e {
            Error::NotFound { path, .. } => Failure::new(
                Code::NotFound,
                format!(
                    "no server is listening on {name:?} ({path}): start the server first, or wait for it with --wait SECS"
                ),
            ),
            Error::TimedOut {
                op: Operation::Connect,
                after,
            } => {
                let after = match self.doing {
                    Doing::Connect(Some(w)) => w,
                    _ => *after,
                };
                Failure::new(
                    Code::TimedOut,
                    format!(
                        "connect timed out: no server answered on {name:?} within --wait {}",
                        secs(after)
                    ),
                )
            }
            Error::TimedOut { op, after } => Failure::new(
                Code::TimedOut,
                format!("{op} timed out on {name:?} after {}", secs(*after)),
            ),
            Error::InvalidName { .. } => Failure::usage(chain(e)),
            Error::InvalidConfig(message) => Failure::usage(self.words(message)),
            Error::PermissionDenied(_) => Failure::new(Code::Refused, chain(e)),
            Error::Refused { reason, .. } => Failure::new(
                Code::Refused,
                match reason {
                    Refusal::BadHello => format!(
                        "the server of {name:?} did not understand the pipette hello: it is probably in raw mode (or not pipette); add --raw to exchange plain bytes with it"
                    ),
                    Refusal::AccessDenied => format!(
                        "the server of {name:?} refused the connection: its --access does not admit your user; run as the server's user, or have the server widen its --access"
                    ),
                    other => format!("the server of {name:?} refused the connection: {other}"),
                },
            ),
            Error::UntrustedServer {
                path,
                server,
                trusted,
                ..
            } => {
                let at = if path == name {
                    format!("{name:?}")
                } else {
                    format!("{name:?} ({path})")
                };
                Failure::new(
                    Code::Refused,
                    format!(
                        "refusing to talk to the server of {at}: it runs as {server}, and this client trusts only {trusted}. It may be an impostor (someone else created the endpoint first); nothing was sent to it. If you do trust it, widen --trust (user:NAME, group or everyone)"
                    ),
                )
            }
            Error::MessageTooLarge { len, max } => Failure::other(match self.doing {
                Doing::Send(_) => format!(
                    "a message of {len} bytes is larger than the server of {name:?} accepts ({max} bytes, the server's --max-size): split it, or raise the server's --max-size"
                ),
                _ => format!(
                    "the server of {name:?} sent a message of {len} bytes, more than --max-size allows here ({max} bytes): raise --max-size"
                ),
            }),
            Error::Closed => Failure::other(match self.doing {
                Doing::Reply(sent) if sent > self.max_size => format!(
                    "the server of {name:?} closed the connection without replying: its reply may be larger than --max-size allows here ({} bytes; the request was {sent}): raise --max-size",
                    self.max_size
                ),
                Doing::Reply(_) => format!(
                    "the server of {name:?} closed the connection without replying (it may not answer requests, as `pipette listen` does not, or its reply may be larger than --max-size allows here: {} bytes)",
                    self.max_size
                ),
                Doing::Send(_) | Doing::Close => format!(
                    "the server of {name:?} closed the connection before it had read everything"
                ),
                _ => format!("the server of {name:?} closed the connection"),
            }),
            Error::Broken(cause) => self.failure(cause),
            Error::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Failure::new(Code::Refused, chain(e))
            }
            other => Failure::other(self.words(&chain(other))),
        }
    }

    /// A library message with the library's words for options put into the flags' words.
    fn words(&self, message: &str) -> String {
        message
            .replace("max_message_size", "--max-size")
            .replace("ClientOptions::wait", "--wait")
            .replace("ClientOptions::trust", "--trust")
            .replace("access \"group\"", "--access group")
            .replace("access \"everyone\"", "--access everyone")
            .replace("connect in raw mode", "add --raw")
            .replace("run the server in raw mode", "run the server with --raw")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_every_source_once() {
        let e = Error::Io {
            context: "send failed".into(),
            source: io::Error::other("disk on fire"),
        };
        assert_eq!(chain(&e), "send failed: disk on fire");
    }

    #[test]
    fn library_words_become_flags() {
        let ctx = Context {
            name: "x",
            max_size: 4096,
            doing: Doing::Bind,
        };
        let f = ctx.failure(&Error::InvalidConfig(
            "max_message_size 10 is below the protocol minimum".into(),
        ));
        assert_eq!(f.code, Code::Usage);
        assert!(f.message.contains("--max-size 10"), "{}", f.message);
        let f = ctx.failure(&Error::Protocol {
            message: "\"x\" did not answer like a pipette server; if it is a plain byte-stream peer, connect in raw mode".into(),
            source: None,
        });
        assert!(f.message.ends_with("peer, add --raw"), "{}", f.message);
    }
}
