//! The server commands: `serve` (echo, or a child per connection with `--exec`) and
//! `listen` (print). One thread per connection; a signal, or the end of the output's reader,
//! stops the server.

use std::io::{self, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pipette::{Connection, Encoding, Error, ServerOptions, Shutdown};

use crate::cli::{Output, ServerOpts, Split};
use crate::fail::{chain, Context, Doing, Failure};
use crate::input;
use crate::logging::pid;
use crate::output::{reader_gone, write_message};
use crate::signals;
use crate::text::Decoder;

/// What a server does with each connection.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Sends every message (raw: every chunk) back.
    Echo,
    /// Prints every message in this format (raw: the bytes as they come), converted from
    /// the text encoding on the wire, if one is given.
    Print(Output, Option<Encoding>),
    /// Runs a child per connection: the shell command, and how messages are delimited on its
    /// standard input and output.
    Exec(String, Split),
}

/// Everything the connection threads share.
struct Shared {
    name: String,
    raw: bool,
    mode: Mode,
    stop: Shutdown,
    printer: Printer,
}

/// Standard output, shared by the connection threads of `listen`.
struct Printer {
    /// `Some` once writing failed: the error, or `None` when the reader went away.
    failed: Mutex<Option<Option<io::Error>>>,
}

impl Printer {
    /// Prints one message; `false` when the output is gone (the server is then stopping).
    fn print(&self, format: Output, msg: &[u8], stop: &Shutdown) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_some() {
            return false;
        }
        let mut out = io::stdout().lock();
        match write_message(&mut out, format, msg) {
            Ok(()) => true,
            Err(e) => {
                *failed = Some(if reader_gone(&e) { None } else { Some(e) });
                // From a thread of its own: this thread still holds a connection.
                let stop = stop.clone();
                thread::spawn(move || stop.shutdown());
                false
            }
        }
    }
}

/// Runs a server until a signal (or, with `exit_on_stdin_close`, the end of standard input).
pub fn run(
    name: &str,
    opts: &ServerOpts,
    mode: Mode,
    exit_on_stdin_close: bool,
) -> Result<(), Failure> {
    let context = Context {
        name,
        max_size: opts.max_size,
        doing: Doing::Bind,
    };
    let endpoint = crate::client::endpoint(name, opts.dotnet).map_err(|e| context.failure(&e))?;
    let server = pipette::Server::bind_with(
        &endpoint,
        &ServerOptions::new()
            .raw(opts.raw_mode())
            .access(opts.access.into())
            .max_message_size(opts.max_size),
    )
    .map_err(|e| context.failure(&e))?;
    let stop = server.shutdown_handle();
    signals::on_terminate(stop.clone())
        .map_err(|e| Failure::io("cannot install the signal handler", &e))?;
    if exit_on_stdin_close {
        let stop = stop.clone();
        thread::spawn(move || {
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            stop.shutdown();
        });
    }
    let path = server.name().path().display().to_string();
    match &mode {
        Mode::Echo => tracing::info!("serving on {name} ({path}): echo"),
        Mode::Print(..) => tracing::info!("listening on {name} ({path})"),
        Mode::Exec(cmd, _) => {
            tracing::info!("serving on {name} ({path}): running {cmd:?} for each connection")
        }
    }
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        raw: opts.raw_mode(),
        mode,
        stop: stop.clone(),
        printer: Printer {
            failed: Mutex::new(None),
        },
    });

    let mut workers: Vec<thread::JoinHandle<()>> = Vec::new();
    for conn in server.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("accept failed: {}", chain(&e));
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        let shared = shared.clone();
        workers.push(thread::spawn(move || match &shared.mode {
            Mode::Exec(cmd, split) => exec(conn, &shared, cmd, *split),
            _ => serve_connection(conn, &shared),
        }));
    }
    match signals::received() {
        Some(sig) if cfg!(windows) => tracing::info!("received console event {sig}, shutting down"),
        Some(sig) => tracing::info!("received signal {sig}, shutting down"),
        None => tracing::info!("shutting down"),
    }
    for w in workers {
        let _ = w.join();
    }
    let failed = shared
        .printer
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match failed {
        Some(None) => tracing::info!("the output's reader went away; endpoint removed"),
        _ => tracing::info!("endpoint removed"),
    }
    match failed {
        Some(Some(e)) => Err(Failure::io("cannot write the output", &e)),
        _ => Ok(()),
    }
}

/// What a server says about a connection's error, in the command line's words.
fn server_words(e: &Error) -> String {
    match e {
        Error::MessageTooLarge { len, max } => format!(
            "the client sent a message of {len} bytes, more than --max-size allows ({max} bytes)"
        ),
        Error::Broken(cause) => server_words(cause),
        other => chain(other),
    }
}

/// Echo and print: one connection until the client leaves.
fn serve_connection(mut conn: Connection, shared: &Shared) {
    let pid = pid(conn.peer().and_then(|p| p.pid()));
    tracing::info!(%pid, "client connected");
    let mut buf = Vec::new();
    // A raw stream's text may be cut anywhere: one decoder per connection keeps the pieces.
    let mut decoder = match shared.mode {
        Mode::Print(_, encoding) => Decoder::new(encoding),
        _ => Decoder::new(None),
    };
    loop {
        match conn.recv_into(&mut buf) {
            Ok(_) => {}
            Err(Error::Closed) => {
                if let Mode::Print(..) = shared.mode {
                    let rest = decoder.finish();
                    if !rest.is_empty() {
                        shared.printer.print(Output::Raw, &rest, &shared.stop);
                    }
                }
                tracing::info!(%pid, "client disconnected");
                return;
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                tracing::warn!(%pid, "connection dropped: {}", server_words(&e));
                return;
            }
        }
        match &shared.mode {
            Mode::Print(format, _) => {
                let (format, text) = if shared.raw {
                    (Output::Raw, std::borrow::Cow::Owned(decoder.feed(&buf)))
                } else {
                    (*format, decoder.message(&buf))
                };
                if !shared.printer.print(format, &text, &shared.stop) {
                    return;
                }
            }
            _ => match conn.send(&buf) {
                Ok(()) => {}
                Err(Error::Closed) => {
                    tracing::info!(%pid, "client disconnected (before reading its echo)");
                    return;
                }
                Err(Error::Shutdown) => return,
                Err(Error::MessageTooLarge { len, max }) => {
                    tracing::warn!(
                        %pid,
                        "cannot echo a message of {len} bytes: the client accepts at most {max} bytes (its --max-size); closing the connection"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(%pid, "connection dropped: {}", server_words(&e));
                    return;
                }
            },
        }
    }
}

/// The shell command line for `--exec`.
fn shell(cmd: &str) -> Command {
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        let mut c = Command::new("cmd");
        c.arg("/C").raw_arg(cmd);
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    }
}

/// How long a child may take to exit after its input closed at a shutdown, before it is
/// killed.
const CHILD_GRACE: Duration = Duration::from_secs(1);

/// `--exec`: a child per connection; messages to its standard input, its standard output
/// back as messages (raw: bytes both ways).
fn exec(conn: Connection, shared: &Shared, cmd: &str, split: Split) {
    let peer_pid = pid(conn.peer().and_then(|p| p.pid()));
    let mut child = match shell(cmd)
        .env("PIPETTE_NAME", &shared.name)
        .env("PIPETTE_PEER_PID", &peer_pid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(pid = %peer_pid, "cannot run {cmd:?}: {e}; closing the connection");
            return;
        }
    };
    tracing::info!(pid = %peer_pid, child = child.id(), "client connected");
    let mut child_in = child.stdin.take().expect("piped");
    let child_out = child.stdout.take().expect("piped");
    let delim = input::delimiter(split).unwrap_or(b'\n');
    let raw = shared.raw;
    let (mut tx, mut rx) = conn.split();

    // The child's output to the client, until the child closes it.
    let out_pid = peer_pid.clone();
    let to_client = thread::spawn(move || {
        let mut reader = BufReader::new(child_out);
        let res = if raw {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if let Err(e) = tx.send(&buf[..n]) {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(Error::from(e)),
                }
            }
        } else {
            input::for_each_record(&mut reader, delim, |m| tx.send(m), Error::from)
        };
        match res {
            Ok(()) | Err(Error::Closed | Error::Shutdown) => {}
            Err(e) => {
                tracing::warn!(pid = %out_pid, "cannot pass the child's output on: {}", chain(&e))
            }
        }
        // Whatever else the child writes goes nowhere, so that it never blocks on us.
        let _ = io::copy(&mut reader, &mut io::sink());
        let _ = tx.close();
    });

    // The client's messages to the child, until the client closes.
    let mut buf = Vec::new();
    loop {
        match rx.recv_into(&mut buf) {
            Ok(_) => {
                let written = child_in
                    .write_all(&buf)
                    .and_then(|()| {
                        if raw {
                            Ok(())
                        } else {
                            child_in.write_all(&[delim])
                        }
                    })
                    .and_then(|()| child_in.flush());
                if let Err(e) = written {
                    tracing::debug!(pid = %peer_pid, "the child no longer reads its input: {e}");
                    break;
                }
            }
            Err(Error::Closed) => break,
            Err(Error::Shutdown) => break,
            Err(e) => {
                tracing::warn!(pid = %peer_pid, "connection dropped: {}", server_words(&e));
                break;
            }
        }
    }
    drop(child_in); // end of input for the child

    // Wait for the child, killing it if the server stops and it does not exit by itself.
    let mut stopping_since: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(pid = %peer_pid, "cannot wait for the child: {e}");
                break None;
            }
        }
        if shared.stop.is_shutdown() {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if since.elapsed() > CHILD_GRACE {
                let _ = child.kill();
            }
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The child's output ends with it, unless it left a process of its own holding it: then
    // a stopping server gives up on it after a grace period.
    let give_up_at = Instant::now() + CHILD_GRACE;
    loop {
        if to_client.is_finished() {
            let _ = to_client.join();
            break;
        }
        if shared.stop.is_shutdown() && Instant::now() > give_up_at {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    match status {
        Some(s) => tracing::info!(pid = %peer_pid, "client disconnected; the child exited ({s})"),
        None => tracing::info!(pid = %peer_pid, "client disconnected"),
    }
}
