//! The client commands: `send`, `call` and `connect`.
//!
//! Each sends on one thread and receives on another, so that no peer can deadlock it by
//! answering while it is still sending (an echo server and a large `send`). `--timeout` is
//! one deadline for the whole exchange after connecting: a watchdog triggers the connection's
//! shutdown handle when it expires, which ends whatever is blocked.

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pipette::frame::{Reply, REPLY_LEN, REPLY_MAGIC};
use pipette::{
    Client, ClientOptions, Connection, Encoding, Error, Name, RecvHalf, SendHalf, Shutdown,
};

use crate::cli::{ClientOpts, Output, Split};
use crate::fail::{Code, Context, Doing, Failure};
use clap::ValueEnum;

use crate::input::{self, Source};
use crate::output::{self, reader_gone};
use crate::text::{Decoder, Encoder};

/// Whether closing the sending side of a raw connection leaves the receiving side open.
/// Windows pipes have no half-close: closing a raw pipe closes it both ways.
const RAW_HALF_CLOSE: bool = cfg!(not(windows));

/// A connected client: the name, its options, and the `--timeout` watchdog.
struct Session {
    name: String,
    max_size: usize,
    raw: bool,
    timeout: Option<Duration>,
    stop: Shutdown,
    expired: Arc<AtomicBool>,
}

impl Session {
    /// Connects (waiting up to `--wait`), then starts the `--timeout` watchdog.
    fn open(name: &str, opts: &ClientOpts) -> Result<(Session, Connection), Failure> {
        let stop = Shutdown::new();
        let mut options = ClientOptions::new()
            .raw(opts.raw_mode())
            .trust(opts.trust.clone())
            .max_message_size(opts.max_size)
            .shutdown(&stop);
        if let Some(wait) = opts.wait {
            options = options.wait(wait);
        }
        let context = Context {
            name,
            max_size: opts.max_size,
            doing: Doing::Connect(opts.wait),
        };
        let endpoint = endpoint(name, opts.dotnet).map_err(|e| context.failure(&e))?;
        let conn = Client::connect_with(&endpoint, &options).map_err(|e| context.failure(&e))?;
        let expired = Arc::new(AtomicBool::new(false));
        if let Some(timeout) = opts.timeout {
            let (stop, expired) = (stop.clone(), expired.clone());
            thread::spawn(move || {
                thread::sleep(timeout);
                expired.store(true, Ordering::SeqCst);
                stop.shutdown();
            });
        }
        let session = Session {
            name: name.to_owned(),
            max_size: opts.max_size,
            raw: opts.raw_mode(),
            timeout: opts.timeout,
            stop,
            expired,
        };
        Ok((session, conn))
    }

    fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }

    /// The failure `e` stands for while `doing`: a timeout once the watchdog has fired.
    fn failure(&self, e: &Error, doing: Doing) -> Failure {
        match self.timeout {
            Some(after) if self.expired() => Failure::timed_out(&self.name, doing, after),
            _ => Context {
                name: &self.name,
                max_size: self.max_size,
                doing,
            }
            .failure(e),
        }
    }

    /// A raw stream that turned out to be a pipette server's refusal.
    fn framed_server(&self) -> Failure {
        Failure::new(
            Code::Refused,
            format!(
                "the server of {:?} speaks the pipette protocol, not raw bytes (it answered with a pipette refusal): drop --raw",
                self.name
            ),
        )
    }

    /// Stops the connection (and so whatever waits on it) because of a failure of our own.
    fn abort(&self) {
        self.stop.shutdown();
    }
}

/// The endpoint NAME stands for: a pipette name, or with `--dotnet` a .NET pipe name.
pub fn endpoint(name: &str, dotnet: bool) -> pipette::Result<Name> {
    if dotnet {
        Name::dotnet(name)
    } else {
        Name::new(name)
    }
}

/// How a receiving loop ended badly.
enum RecvEnd {
    /// The connection failed.
    Conn(Error),
    /// In raw mode, the peer answered with a pipette reply: it is a framed server.
    Framed,
    /// Writing the output failed (other than its reader going away).
    Output(io::Error),
    /// The output's reader went away: stop quietly.
    ReaderGone,
}

/// Receives a raw byte stream until the peer closes it, handing the bytes to `sink` as they
/// come, except that a pipette server's refusal at the very start is recognised (it is held
/// back only while the bytes could still be one).
fn raw_receive(
    rx: &mut RecvHalf,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), RecvEnd> {
    let mut sink = |b: &[u8]| {
        sink(b).map_err(|e| {
            if reader_gone(&e) {
                RecvEnd::ReaderGone
            } else {
                RecvEnd::Output(e)
            }
        })
    };
    let mut head: Vec<u8> = Vec::new();
    let mut sniffing = true;
    let mut buf = Vec::new();
    loop {
        match rx.recv_into(&mut buf) {
            Ok(_) if sniffing => {
                head.extend_from_slice(&buf);
                let n = head.len().min(REPLY_MAGIC.len());
                if head[..n] == REPLY_MAGIC[..n] && head.len() < REPLY_LEN {
                    continue; // could still be a reply
                }
                if head.len() >= REPLY_LEN {
                    let first: &[u8; REPLY_LEN] = head[..REPLY_LEN].try_into().expect("length");
                    if Reply::decode(first).is_ok() {
                        return Err(RecvEnd::Framed);
                    }
                }
                sniffing = false;
                sink(&head)?;
                head = Vec::new();
            }
            Ok(_) => sink(&buf)?,
            Err(Error::Closed) => {
                if !head.is_empty() {
                    sink(&head)?;
                }
                return Ok(());
            }
            Err(e) => return Err(RecvEnd::Conn(e)),
        }
    }
}

/// Receives framed messages until the peer closes, handing each to `each`.
fn framed_receive(
    rx: &mut RecvHalf,
    mut each: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), RecvEnd> {
    let mut buf = Vec::new();
    loop {
        match rx.recv_into(&mut buf) {
            Ok(_) => each(&buf).map_err(|e| {
                if reader_gone(&e) {
                    RecvEnd::ReaderGone
                } else {
                    RecvEnd::Output(e)
                }
            })?,
            Err(Error::Closed) => return Ok(()),
            Err(e) => return Err(RecvEnd::Conn(e)),
        }
    }
}

/// The output format: `--output`, or the default for the mode. Raw mode carries bytes, not
/// messages, so only `raw` applies there.
pub fn output_format(raw: bool, output: Option<Output>) -> Result<Output, Failure> {
    match (raw, output) {
        (true, None | Some(Output::Raw)) => Ok(Output::Raw),
        (true, Some(other)) => Err(Failure::usage(format!(
            "--raw carries a byte stream, not messages: --output {} needs framed mode (drop --raw, or use --output raw)",
            other.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
        ))),
        (false, output) => Ok(output.unwrap_or(Output::Lines)),
    }
}

/// Where a sending thread records why it stopped, for the receiving side to report.
type SendResult = Arc<Mutex<Option<Failure>>>;

/// `pipette send`: every source in order, then close and wait for the server to close.
pub fn send(
    name: &str,
    opts: &ClientOpts,
    sources: Vec<Source>,
    split: Split,
    encoding: Option<Encoding>,
) -> Result<(), Failure> {
    let stdin_count = sources.iter().filter(|s| **s == Source::Stdin).count();
    if stdin_count > 1 {
        return Err(Failure::usage("standard input (-) can be given only once"));
    }
    if split != Split::None && stdin_count == 0 {
        return Err(Failure::usage(
            "--split cuts standard input into messages: give - as a message",
        ));
    }
    // Fail before connecting on a file that cannot be read.
    for s in &sources {
        if let Source::File(path) = s {
            std::fs::File::open(path)
                .map_err(|e| Failure::io(format!("cannot read {}", path.display()), &e))?;
        }
    }
    let (session, conn) = Session::open(name, opts)?;
    let raw = session.raw;
    let (mut tx, mut rx) = conn.split();
    // Read (and drop) whatever the server sends, such as echoes, so that it never blocks on
    // us while we send; end when it closes.
    let drain = thread::spawn(move || {
        if raw {
            raw_receive(&mut rx, |_| Ok(()))
        } else {
            framed_receive(&mut rx, |_| Ok(()))
        }
    });
    let encoder = Encoder::new(encoding);
    let sent = send_all(&session, &mut tx, &sources, split, &encoder)
        .and_then(|()| tx.close().map_err(|e| session.failure(&e, Doing::Close)));
    if sent.is_err() {
        session.abort();
    }
    let drained = drain.join().expect("the receiving thread does not panic");
    // The server's own word (a refusal, an untrusted server, a framed server) explains a
    // failed send better than the send's error.
    match (sent, drained) {
        (_, Err(RecvEnd::Framed)) => Err(session.framed_server()),
        (
            Err(_),
            Err(RecvEnd::Conn(
                e
                @ (Error::Refused { .. } | Error::UntrustedServer { .. } | Error::Protocol { .. }),
            )),
        ) => Err(session.failure(&e, Doing::Send(0))),
        (Err(f), _) => Err(f),
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(RecvEnd::Conn(e))) => Err(session.failure(&e, Doing::Close)),
        (Ok(()), Err(RecvEnd::Output(_) | RecvEnd::ReaderGone)) => Ok(()),
    }
}

fn send_all(
    session: &Session,
    tx: &mut SendHalf,
    sources: &[Source],
    split: Split,
    encoder: &Encoder,
) -> Result<(), Failure> {
    for source in sources {
        match (source, input::delimiter(split)) {
            (Source::Stdin, Some(delim)) => {
                let mut stdin = io::stdin().lock();
                input::for_each_record(
                    &mut stdin,
                    delim,
                    |record| {
                        let record = encoder.message(record, "standard input")?;
                        tx.send(&record)
                            .map_err(|e| session.failure(&e, Doing::Send(record.len())))
                    },
                    |e| Failure::io("cannot read standard input", &e),
                )?;
            }
            (source, _) => {
                let msg = source.read()?;
                let msg = encoder.message(&msg, &source.describe())?;
                tx.send(&msg)
                    .map_err(|e| session.failure(&e, Doing::Send(msg.len())))?;
            }
        }
    }
    Ok(())
}

/// Writes one received message in `format`.
fn write_reply(out: &mut impl Write, format: Output, msg: &[u8]) -> Result<(), RecvEnd> {
    output::write_message(out, format, msg).map_err(|e| {
        if reader_gone(&e) {
            RecvEnd::ReaderGone
        } else {
            RecvEnd::Output(e)
        }
    })
}

/// `call --json`'s message: `bytes` must hold one JSON value; it is sent as
/// [`Codec::Json`](pipette::Codec::Json) encodes it (compact), so that a Rust server's
/// `recv_value_with(Codec::Json)` reads it.
fn json_message(bytes: &[u8], what: &str) -> Result<Vec<u8>, Failure> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::usage(format!("{what} is not a JSON value: {e}")))?;
    pipette::Codec::Json
        .encode(&value)
        .map_err(|e| Failure::usage(format!("{what} cannot be sent as JSON: {e}")))
}

/// `call --json`'s reply, checked and made compact (one line); the reason when it is not
/// one JSON value.
fn json_reply(reply: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value =
        pipette::Codec::Json
            .decode(reply)
            .map_err(|e| match std::error::Error::source(&e) {
                Some(cause) => cause.to_string(),
                None => e.to_string(),
            })?;
    serde_json::to_vec(&value).map_err(|e| e.to_string())
}

/// `pipette call`: one message, one reply (raw: every byte until the peer closes).
pub fn call(
    name: &str,
    opts: &ClientOpts,
    source: Source,
    output: Option<Output>,
    encoding: Option<Encoding>,
    json: bool,
) -> Result<(), Failure> {
    let format = output_format(opts.raw_mode(), output)?;
    let msg = source.read()?;
    let msg = if json {
        json_message(&msg, &source.describe())?
    } else {
        Encoder::new(encoding)
            .message(&msg, &source.describe())?
            .into_owned()
    };
    let mut decoder = Decoder::new(encoding);
    let (session, conn) = Session::open(name, opts)?;
    let (mut tx, mut rx) = conn.split();
    let sent_len = msg.len();
    let send_failure: SendResult = Arc::new(Mutex::new(None));
    let sender = {
        let send_failure = send_failure.clone();
        let stop = session.stop.clone();
        let (name, max_size, timeout, expired, raw) = (
            session.name.clone(),
            session.max_size,
            session.timeout,
            session.expired.clone(),
            session.raw,
        );
        thread::spawn(move || {
            let doing = Doing::Send(msg.len());
            // Keep the sending half (and with it a raw Windows pipe) open until the end.
            let (res, kept) = match tx.send(&msg) {
                // Closing a raw Windows pipe would end the reply too.
                Ok(()) if raw && !RAW_HALF_CLOSE => (Ok(()), Some(tx)),
                Ok(()) => (tx.close(), None),
                Err(e) => (Err(e), Some(tx)),
            };
            // A server that closed before reading everything may still have replied: the
            // receiving side reads on and reports what it finds.
            if let Err(e) = &res {
                if matches!(e, Error::Closed) && !expired.load(Ordering::SeqCst) {
                    return kept;
                }
                let f = match timeout {
                    Some(after) if expired.load(Ordering::SeqCst) => {
                        Failure::timed_out(&name, doing, after)
                    }
                    _ => Context {
                        name: &name,
                        max_size,
                        doing,
                    }
                    .failure(e),
                };
                *send_failure.lock().expect("not poisoned") = Some(f);
                stop.shutdown();
            }
            kept
        })
    };
    let mut stdout = io::stdout().lock();
    let received = if session.raw {
        raw_receive(&mut rx, |b| {
            stdout.write_all(&decoder.feed(b))?;
            stdout.flush()
        })
        .and_then(|()| write_end(&mut stdout, &decoder.finish()))
    } else {
        match rx.recv() {
            Ok(reply) if json => match json_reply(&reply) {
                // Compact JSON escapes every control character: by default it is printed
                // as it is, one line (`--output` formats it like any message).
                Ok(mut line) if output.is_none() => {
                    line.push(b'\n');
                    write_reply(&mut stdout, Output::Raw, &line)
                }
                Ok(line) => write_reply(&mut stdout, format, &line),
                Err(why) => {
                    return Err(Failure::other(format!(
                    "the reply from {:?} is not JSON ({why}); run without --json to see its bytes",
                    session.name
                )))
                }
            },
            Ok(reply) => write_reply(&mut stdout, format, &decoder.message(&reply)),
            Err(e) => Err(RecvEnd::Conn(e)),
        }
    };
    match received {
        Ok(()) | Err(RecvEnd::ReaderGone) => {
            if session.raw {
                // Everything arrived: the send is over too (or failed because the peer left).
                drop(sender.join());
            }
            Ok(())
        }
        Err(RecvEnd::Framed) => Err(session.framed_server()),
        Err(RecvEnd::Output(e)) => Err(Failure::io("cannot write the output", &e)),
        Err(RecvEnd::Conn(e)) => {
            // A failed send (too large for the server, say) stopped the receive: report it.
            let _ = sender.join();
            if let Some(f) = send_failure.lock().expect("not poisoned").take() {
                if !matches!(e, Error::Refused { .. } | Error::UntrustedServer { .. }) {
                    return Err(f);
                }
            }
            Err(session.failure(&e, Doing::Reply(sent_len)))
        }
    }
}

/// `pipette connect`: standard input to the server, the server to standard output.
pub fn connect(
    name: &str,
    opts: &ClientOpts,
    split: Split,
    output: Option<Output>,
    encoding: Option<Encoding>,
) -> Result<(), Failure> {
    let format = output_format(opts.raw_mode(), output)?;
    if opts.raw_mode() && split != Split::Lines {
        return Err(Failure::usage(
            "--raw pumps bytes as they come: --split needs framed mode",
        ));
    }
    let (session, conn) = Session::open(name, opts)?;
    let (mut tx, mut rx) = conn.split();
    let send_failure: SendResult = Arc::new(Mutex::new(None));
    {
        let send_failure = send_failure.clone();
        let stop = session.stop.clone();
        let (name, max_size, timeout, expired, raw) = (
            session.name.clone(),
            session.max_size,
            session.timeout,
            session.expired.clone(),
            session.raw,
        );
        thread::spawn(move || {
            // `None`: the server closed first, which ends the session by itself.
            let fail = |e: &Error, len: usize| match timeout {
                Some(after) if expired.load(Ordering::SeqCst) => {
                    Some(Failure::timed_out(&name, Doing::Send(len), after))
                }
                _ if matches!(e, Error::Closed) => None,
                _ => Some(
                    Context {
                        name: &name,
                        max_size,
                        doing: Doing::Send(len),
                    }
                    .failure(e),
                ),
            };
            let stdin_failed = |e: io::Error| Some(Failure::io("cannot read standard input", &e));
            let mut stdin = io::stdin().lock();
            let mut encoder = Encoder::new(encoding);
            let res = if raw {
                pump_raw(&mut stdin, &mut tx, &fail, &mut encoder)
            } else {
                match input::delimiter(split) {
                    Some(delim) => input::for_each_record(
                        &mut BufReader::new(stdin),
                        delim,
                        |record| {
                            let record = encoder.message(record, "standard input").map_err(Some)?;
                            tx.send(&record).map_err(|e| fail(&e, record.len()))
                        },
                        stdin_failed,
                    ),
                    None => {
                        let mut msg = Vec::new();
                        match stdin.read_to_end(&mut msg) {
                            Ok(_) => match encoder.message(&msg, "standard input") {
                                Ok(msg) => tx.send(&msg).map_err(|e| fail(&e, msg.len())),
                                Err(f) => Err(Some(f)),
                            },
                            Err(e) => Err(stdin_failed(e)),
                        }
                    }
                }
            }
            .and_then(|()| tx.close().map_err(|e| fail(&e, 0)));
            if let Err(Some(f)) = res {
                *send_failure.lock().expect("not poisoned") = Some(f);
                stop.shutdown();
            }
        });
    }
    let mut stdout = io::stdout().lock();
    let mut decoder = Decoder::new(encoding);
    let received = if session.raw {
        raw_receive(&mut rx, |b| {
            stdout.write_all(&decoder.feed(b))?;
            stdout.flush()
        })
        .and_then(|()| write_end(&mut stdout, &decoder.finish()))
    } else {
        framed_receive(&mut rx, |msg| {
            output::write_message(&mut stdout, format, &decoder.message(msg))
        })
    };
    match received {
        Ok(()) | Err(RecvEnd::ReaderGone) => Ok(()),
        Err(RecvEnd::Framed) => Err(session.framed_server()),
        Err(RecvEnd::Output(e)) => Err(Failure::io("cannot write the output", &e)),
        Err(RecvEnd::Conn(e)) => {
            if let Some(f) = send_failure.lock().expect("not poisoned").take() {
                return Err(f);
            }
            Err(session.failure(&e, Doing::Recv))
        }
    }
}

/// Copies standard input to a raw connection as it comes (in `--encoding`, if any).
fn pump_raw(
    input: &mut impl Read,
    tx: &mut SendHalf,
    fail: &impl Fn(&Error, usize) -> Option<Failure>,
    encoder: &mut Encoder,
) -> Result<(), Option<Failure>> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return encoder.finish("standard input").map_err(Some),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Some(Failure::io("cannot read standard input", &e))),
        };
        let bytes = encoder.feed(&buf[..n], "standard input").map_err(Some)?;
        if !bytes.is_empty() {
            tx.send(&bytes).map_err(|e| fail(&e, bytes.len()))?;
        }
    }
}

/// Writes what a decoder held back at the end of a raw stream.
fn write_end(out: &mut impl Write, rest: &[u8]) -> Result<(), RecvEnd> {
    if rest.is_empty() {
        return Ok(());
    }
    out.write_all(rest).and_then(|()| out.flush()).map_err(|e| {
        if reader_gone(&e) {
            RecvEnd::ReaderGone
        } else {
            RecvEnd::Output(e)
        }
    })
}
