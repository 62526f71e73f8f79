//! pipette against a hand-written `std::os::unix::net::UnixStream` speaking the same framing.
//!
//! Two workloads, each for both transports in the same run:
//!
//! - `rtt_64B`: a 64-byte message to an echo server and back (latency per round trip);
//! - `stream_64KiB`: one-way 64 KiB messages to a sink (throughput).
//!
//! The server side always runs in a separate process: this binary re-executes itself with
//! `PIPETTE_BENCH_CHILD=<transport>-<role>:<name or path>` set, and the child serves exactly
//! one connection until the parent closes it. Each benchmark function connects once and reuses
//! the connection for all its iterations (`iter_custom`).
//!
//! Framing on the wire, for both transports: an 8-byte header (`u32` LE payload length,
//! `u32` LE flags = 0), then the payload. A streaming batch ends with an empty message, which
//! the sink answers with a 1-byte ack, so the parent knows every message has arrived.
//!
//! After the criterion groups, a short extra phase (skipped under `--test`, `--list` and
//! `--profile-time`) times both transports alternately outside criterion and prints the
//! pipette/raw ratios.
//!
//! ```text
//! cargo bench -p pipette-ipc --bench ipc            # full run plus ratio summary
//! cargo bench -p pipette-ipc --bench ipc -- --test  # smoke check: every benchmark once
//! ```

use std::env;
use std::error::Error as StdError;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pipette::{Client, Connection, Server};

/// Set in a child process: which server to run, and where.
const CHILD_ENV: &str = "PIPETTE_BENCH_CHILD";
/// Payload of one ping-pong message.
const PING_LEN: usize = 64;
/// Payload of one streamed message.
const STREAM_LEN: usize = 64 * 1024;
/// Length of the frame header (`u32` LE length, `u32` LE flags).
const HEADER_LEN: usize = 8;
/// Largest payload the raw peers accept (pipette's default limit).
const RAW_MAX_LEN: usize = 16 * 1024 * 1024;
/// The sink's answer to the empty end-of-batch message.
const ACK: &[u8] = b"k";
/// How long a child may take to start listening.
const STARTUP: Duration = Duration::from_secs(10);
/// Read timeout of the parent's connections, so that a stuck child fails the run, not hangs it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Round trips per run in the ratio summary.
const SUMMARY_ROUND_TRIPS: u64 = 20_000;
/// Streamed messages per run in the ratio summary (256 MiB).
const SUMMARY_MESSAGES: u64 = 4_096;
/// Measured runs per transport in the ratio summary (after one warm-up run each).
const SUMMARY_RUNS: usize = 5;

pub fn main() {
    if let Ok(spec) = env::var(CHILD_ENV) {
        if let Err(e) = run_child(&spec) {
            eprintln!("ipc bench child {spec:?}: {e}");
            process::exit(1);
        }
        return;
    }

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_rtt(&mut c);
    bench_stream(&mut c);
    c.final_summary();

    // The ratio summary belongs to a real measuring run only.
    let quick_mode =
        env::args().any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"));
    if !quick_mode {
        ratio_summary();
    }
}

// ---------------------------------------------------------------------------------------------
// Criterion groups
// ---------------------------------------------------------------------------------------------

fn bench_rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtt_64B");
    // Sessions are created on first use, so that a filtered-out benchmark spawns no child, and
    // live until the group is done, so that warm-up and every sample share one connection.
    let mut pipette = None;
    group.bench_function("pipette", |b| {
        let s = pipette.get_or_insert_with(|| Session::pipette(Role::Echo));
        b.iter_custom(|iters| s.round_trips(iters));
    });
    let mut raw = None;
    group.bench_function("raw", |b| {
        let s = raw.get_or_insert_with(|| Session::raw(Role::Echo));
        b.iter_custom(|iters| s.round_trips(iters));
    });
    group.finish();
}

fn bench_stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_64KiB");
    group.throughput(Throughput::Bytes(STREAM_LEN as u64));
    let mut pipette = None;
    group.bench_function("pipette", |b| {
        let s = pipette.get_or_insert_with(|| Session::pipette(Role::Sink));
        b.iter_custom(|iters| s.stream(iters));
    });
    let mut raw = None;
    group.bench_function("raw", |b| {
        let s = raw.get_or_insert_with(|| Session::raw(Role::Sink));
        b.iter_custom(|iters| s.stream(iters));
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Ratio summary
// ---------------------------------------------------------------------------------------------

/// Times both transports alternately, outside criterion, and prints pipette/raw ratios
/// (medians of [`SUMMARY_RUNS`] runs each).
fn ratio_summary() {
    println!("\nratio summary (median of {SUMMARY_RUNS} alternating runs, outside criterion)");

    let (p, r) = {
        let mut p = Session::pipette(Role::Echo);
        let mut r = Session::raw(Role::Echo);
        alternate(
            || p.round_trips(SUMMARY_ROUND_TRIPS),
            || r.round_trips(SUMMARY_ROUND_TRIPS),
        )
    };
    let per_rtt = |d: Duration| d.as_secs_f64() * 1e6 / SUMMARY_ROUND_TRIPS as f64;
    let rtt_ratio = p.as_secs_f64() / r.as_secs_f64();
    println!(
        "  rtt 64 B:         pipette {:.2} µs, raw {:.2} µs",
        per_rtt(p),
        per_rtt(r)
    );

    let (p, r) = {
        let mut p = Session::pipette(Role::Sink);
        let mut r = Session::raw(Role::Sink);
        alternate(|| p.stream(SUMMARY_MESSAGES), || r.stream(SUMMARY_MESSAGES))
    };
    let mib_s = |d: Duration| {
        (SUMMARY_MESSAGES as f64 * STREAM_LEN as f64) / (1024.0 * 1024.0) / d.as_secs_f64()
    };
    let tput_ratio = r.as_secs_f64() / p.as_secs_f64();
    println!(
        "  stream 64 KiB:    pipette {:.0} MiB/s, raw {:.0} MiB/s",
        mib_s(p),
        mib_s(r)
    );
    println!(
        "rtt pipette/raw = {rtt_ratio:.2} (target <= 1.05), throughput pipette/raw = {tput_ratio:.2} (target >= 0.95)"
    );
}

/// Runs `a` and `b` once each to warm up, then [`SUMMARY_RUNS`] times each, swapping which
/// goes first every round so that drift affects both alike; returns the median of each.
fn alternate(
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..SUMMARY_RUNS {
        if round % 2 == 0 {
            ta.push(a());
            tb.push(b());
        } else {
            tb.push(b());
            ta.push(a());
        }
    }
    (median(ta), median(tb))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Parent side: sessions with a child server
// ---------------------------------------------------------------------------------------------

/// What a child server does with each message.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// Sends every message back.
    Echo,
    /// Discards messages; answers an empty one with [`ACK`].
    Sink,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Echo => "echo",
            Role::Sink => "sink",
        }
    }
}

/// Whole framed messages over one connection: implemented by pipette's [`Connection`] and by
/// the raw baseline on [`UnixStream`]. Generic code over it keeps both measured loops identical.
trait Framed {
    /// Sends one message.
    fn send_msg(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one message into `buf` (replacing its contents); returns its length.
    fn recv_msg(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
}

impl Framed for Connection {
    fn send_msg(&mut self, msg: &[u8]) -> io::Result<()> {
        self.send(msg).map_err(io::Error::other)
    }

    fn recv_msg(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.recv_into(buf).map_err(io::Error::other)
    }
}

impl Framed for UnixStream {
    fn send_msg(&mut self, msg: &[u8]) -> io::Result<()> {
        write_frame(self, msg)
    }

    fn recv_msg(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_frame(self, buf)
    }
}

/// A connection to a child server, with the buffers the measured loops reuse.
struct Session<T: Framed> {
    // Field order matters: the connection is dropped before the child's guard, so the child
    // sees end-of-stream and exits on its own (a pipette server then removes its endpoint).
    link: T,
    _child: ChildGuard,
    /// The message sent: 64 bytes for an echo session, 64 KiB for a sink session.
    msg: Vec<u8>,
    /// Receive buffer, reused for every reply.
    buf: Vec<u8>,
}

impl Session<Connection> {
    /// Starts a pipette server child and connects to it by plain name.
    fn pipette(role: Role) -> Self {
        let name = format!("bench-{}-{}-{}", role.as_str(), process::id(), next_seq());
        let mut child = ChildGuard::spawn(&format!("pipette-{}:{name}", role.as_str()), None);
        let mut link = child.wait_ready(|| {
            match Client::connect_timeout(name.as_str(), Duration::from_millis(100)) {
                Ok(conn) => Ok(Some(conn)),
                Err(pipette::Error::TimedOut { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        });
        link.set_read_timeout(Some(IO_TIMEOUT));
        Session::new(link, child, role)
    }
}

impl Session<UnixStream> {
    /// Starts a raw `UnixListener` child and connects to it by path.
    fn raw(role: Role) -> Self {
        let path = env::temp_dir().join(format!(
            "pipette-bench-raw-{}-{}-{}.sock",
            role.as_str(),
            process::id(),
            next_seq()
        ));
        let _ = fs::remove_file(&path);
        let spec = format!("raw-{}:{}", role.as_str(), path.display());
        let mut child = ChildGuard::spawn(&spec, Some(path.clone()));
        let link = child.wait_ready(|| match UnixStream::connect(&path) {
            Ok(stream) => Ok(Some(stream)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        });
        link.set_read_timeout(Some(IO_TIMEOUT))
            .expect("set the raw read timeout");
        Session::new(link, child, role)
    }
}

impl<T: Framed> Session<T> {
    fn new(link: T, child: ChildGuard, role: Role) -> Self {
        let len = match role {
            Role::Echo => PING_LEN,
            Role::Sink => STREAM_LEN,
        };
        let mut s = Session {
            link,
            _child: child,
            msg: (0..len).map(|i| i as u8).collect(),
            buf: Vec::with_capacity(len),
        };
        // One exchange before any measurement: proves the child is serving and, for
        // pipette, completes the handshake.
        match role {
            Role::Echo => s.round_trips(1),
            Role::Sink => s.stream(0),
        };
        s
    }

    /// `n` request/reply round trips of the session's message; returns the time taken.
    fn round_trips(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.link.send_msg(&self.msg).expect("send a ping");
            let got = self.link.recv_msg(&mut self.buf).expect("receive the echo");
            assert_eq!(got, self.msg.len(), "the echo has the wrong length");
        }
        start.elapsed()
    }

    /// Sends `n` messages one way, then the empty end-of-batch message, and waits for the
    /// sink's ack; returns the time taken.
    fn stream(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.link.send_msg(&self.msg).expect("send a message");
        }
        self.link
            .send_msg(&[])
            .expect("send the end-of-batch message");
        self.link.recv_msg(&mut self.buf).expect("receive the ack");
        let elapsed = start.elapsed();
        assert_eq!(self.buf, ACK, "the sink sent a wrong ack");
        elapsed
    }
}

/// Process-unique sequence number, so that no two sessions of one run share an endpoint.
fn next_seq() -> u32 {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A child server process, stopped and reaped (and its socket file removed) on drop.
struct ChildGuard {
    child: Child,
    socket: Option<PathBuf>,
}

impl ChildGuard {
    /// Re-executes this binary as the child server described by `spec`.
    fn spawn(spec: &str, socket: Option<PathBuf>) -> ChildGuard {
        let exe = env::current_exe().expect("locate the benchmark executable");
        let child = Command::new(exe)
            .env(CHILD_ENV, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the benchmark child");
        ChildGuard { child, socket }
    }

    /// Retries `connect` until it yields a connection, failing fast if the child exits or
    /// does not come up within [`STARTUP`].
    fn wait_ready<C>(
        &mut self,
        mut connect: impl FnMut() -> Result<Option<C>, Box<dyn StdError>>,
    ) -> C {
        let deadline = Instant::now() + STARTUP;
        loop {
            match connect() {
                Ok(Some(conn)) => return conn,
                Ok(None) => {}
                Err(e) => panic!("cannot connect to the benchmark child: {e}"),
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the benchmark child exited before serving ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "the benchmark child did not start listening within {STARTUP:?}"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Normally the connection is already closed and the child is exiting on its own; give
        // it a moment, then make sure.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.socket {
            let _ = fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child side: the servers
// ---------------------------------------------------------------------------------------------

/// Runs the child server `spec` (`<transport>-<role>:<name or path>`) until the parent hangs up.
fn run_child(spec: &str) -> Result<(), Box<dyn StdError>> {
    let (kind, addr) = spec
        .split_once(':')
        .ok_or("expected <transport>-<role>:<address>")?;
    match kind {
        "pipette-echo" => pipette_server(addr, Role::Echo)?,
        "pipette-sink" => pipette_server(addr, Role::Sink)?,
        "raw-echo" => raw_server(Path::new(addr), Role::Echo)?,
        "raw-sink" => raw_server(Path::new(addr), Role::Sink)?,
        other => return Err(format!("unknown child kind {other:?}").into()),
    }
    Ok(())
}

/// pipette server: one connection, messages received into a reused `Vec`.
fn pipette_server(name: &str, role: Role) -> pipette::Result<()> {
    let server = Server::bind(name)?;
    let mut conn = server.accept()?;
    let mut buf = Vec::new();
    loop {
        let len = match conn.recv_into(&mut buf) {
            Ok(len) => len,
            Err(pipette::Error::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        match role {
            Role::Echo => conn.send(&buf)?,
            Role::Sink if len == 0 => conn.send(ACK)?,
            Role::Sink => {}
        }
    }
}

/// Raw server: one connection, the same framing written by hand.
fn raw_server(path: &Path, role: Role) -> io::Result<()> {
    let listener = UnixListener::bind(path)?;
    let (mut stream, _) = listener.accept()?;
    drop(listener);
    let mut buf = Vec::new();
    loop {
        let len = match read_frame(&mut stream, &mut buf) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match role {
            Role::Echo => write_frame(&mut stream, &buf)?,
            Role::Sink if len == 0 => write_frame(&mut stream, ACK)?,
            Role::Sink => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw framing, as one would write it without pipette
// ---------------------------------------------------------------------------------------------

/// Writes header and payload with one `writev`, finishing with plain writes if the kernel took
/// only part (which happens only for large payloads once the socket buffer is full).
fn write_frame(stream: &mut UnixStream, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&len.to_le_bytes()); // flags (bytes 4..8) stay 0
    let sent = loop {
        match stream.write_vectored(&[IoSlice::new(&header), IoSlice::new(payload)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if sent < HEADER_LEN {
        stream.write_all(&header[sent..])?;
        stream.write_all(payload)
    } else {
        stream.write_all(&payload[sent - HEADER_LEN..])
    }
}

/// Reads one frame into `buf` (replacing its contents, reusing its allocation): `read_exact`
/// of the header, then `read_exact` of the payload. Returns the payload length.
fn read_frame(stream: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header)?;
    let [l0, l1, l2, l3, f0, f1, f2, f3] = header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
    let flags = u32::from_le_bytes([f0, f1, f2, f3]);
    if flags != 0 || len > RAW_MAX_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame header (len {len}, flags {flags:#x})"),
        ));
    }
    buf.resize(len, 0);
    stream.read_exact(buf)?;
    Ok(len)
}
