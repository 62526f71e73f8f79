//! pipette against its peers, two processes always (issue #5).
//!
//! ```text
//! cargo run --release -p pipette-bench -- --compare   # full run: table, docs/perf/results.csv, docs/perf/ratios.svg
//!                                                     # (with --only: the table, and files only where --csv/--svg say)
//! cargo run --release -p pipette-bench -- --smoke     # every row with tiny counts, seconds; fails if a row is missing
//! cargo run --release -p pipette-bench -- --alias     # the 4 KiB aliasing check of the receive buffer
//! ```
//!
//! The parent measures; the other end is this same binary re-executed with the hidden
//! arguments `--child <transport> <role> <addr>`. A child binds (or, for ipc-channel, connects
//! to the parent's one-shot server), prints `ready <addr>` on stdout, serves connections one
//! after the other, and exits when its stdin closes (the parent died) or it is killed.
//!
//! Workloads, for each transport: 64-byte ping-pong (per-round-trip samples, median and p99),
//! one-way throughput with 64 KiB and 4 MiB messages (a batch ends with an empty message that
//! the sink answers with the byte count it received, checked by the parent), and connections
//! per second (connect + handshake + one 64-byte round trip + close).
//!
//! Framing of the byte-stream peers (raw UDS, TCP, interprocess, tokio UDS) is pipette's own:
//! an 8-byte header (`u32` LE length, `u32` LE flags = 0) written with the payload in one
//! `writev`, read back with `read_exact` of header and payload.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::future::Future;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{self, Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::{Listener as _, Stream as _};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER_LEN: usize = 8;
const MAX_LEN: usize = 16 * 1024 * 1024;
const PING_LEN: usize = 64;
const SMALL: usize = 64 * 1024;
const LARGE: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Transports, roles, configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    Pipette,
    /// pipette, both ends receiving with `WaitStrategy::Spin(SPIN)`.
    PipetteSpin,
    /// pipette over shared memory (`shared_memory(true)` on both ends; its default wait
    /// strategy, a 50 us spin).
    PipetteShm,
    /// `PipetteShm` with 16 MiB rings, the client writing each message in place
    /// (`Connection::send_with`, its payload filled straight into the ring).
    PipetteShmInPlace,
    PipetteAsync,
    /// The async API over shared memory (`shared_memory(true)` on both ends, 1 MiB rings).
    PipetteAsyncShm,
    RawUds,
    Tcp,
    Interprocess,
    TokioUds,
    IpcChannel,
}

/// In table order; the baseline is [`T::RawUds`].
const ALL: [T; 11] = [
    T::RawUds,
    T::Pipette,
    T::PipetteSpin,
    T::PipetteShm,
    T::PipetteShmInPlace,
    T::PipetteAsync,
    T::PipetteAsyncShm,
    T::TokioUds,
    T::Tcp,
    T::Interprocess,
    T::IpcChannel,
];

impl T {
    fn name(self) -> &'static str {
        match self {
            T::Pipette => "pipette",
            T::PipetteSpin => "pipette-spin",
            T::PipetteShm => "pipette-shm",
            T::PipetteShmInPlace => "pipette-shm-inplace",
            T::PipetteAsync => "pipette-async",
            T::PipetteAsyncShm => "pipette-async-shm",
            T::RawUds => "raw-uds",
            T::Tcp => "tcp-nodelay",
            T::Interprocess => "interprocess",
            T::TokioUds => "tokio-uds",
            T::IpcChannel => "ipc-channel",
        }
    }
    fn parse(s: &str) -> Option<T> {
        ALL.into_iter().find(|t| t.name() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Sends every message back.
    Echo,
    /// Counts bytes; an empty message is answered with the count (`u64` LE), which restarts.
    /// `Some(off)`: the raw UDS sink reads payloads into a buffer at page offset `off`.
    Sink(Option<usize>),
}

impl Role {
    fn arg(self) -> String {
        match self {
            Role::Echo => "echo".into(),
            Role::Sink(None) => "sink".into(),
            Role::Sink(Some(o)) => format!("sink@{o}"),
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "echo" => Some(Role::Echo),
            "sink" => Some(Role::Sink(None)),
            _ => s
                .strip_prefix("sink@")?
                .parse()
                .ok()
                .map(|o| Role::Sink(Some(o))),
        }
    }
}

#[derive(Clone, Debug)]
struct Cfg {
    runs: usize,
    rtt_warmup: usize,
    rtt_n: usize,
    small_n: usize,
    large_n: usize,
    conn_n: usize,
}

const COMPARE: Cfg = Cfg {
    runs: 5,
    rtt_warmup: 10_000,
    rtt_n: 100_000,
    small_n: 4096,
    large_n: 64,
    conn_n: 2000,
};

const SMOKE: Cfg = Cfg {
    runs: 2,
    rtt_warmup: 50,
    rtt_n: 300,
    small_n: 16,
    large_n: 2,
    conn_n: 20,
};

/// The figures of one transport in one run.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    rtt_med_us: f64,
    rtt_p99_us: f64,
    small_mib_s: f64,
    large_mib_s: f64,
    conn_s: f64,
}

/// Column name, unit, whether lower is better.
const METRICS: [(&str, &str, bool); 5] = [
    ("rtt_median", "us", true),
    ("rtt_p99", "us", true),
    ("tput_64KiB", "MiB/s", false),
    ("tput_4MiB", "MiB/s", false),
    ("conn_per_s", "1/s", false),
];

impl Figures {
    fn get(&self, i: usize) -> f64 {
        [
            self.rtt_med_us,
            self.rtt_p99_us,
            self.small_mib_s,
            self.large_mib_s,
            self.conn_s,
        ][i]
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Links: one connection, message in, message out
// ---------------------------------------------------------------------------------------------

trait Link {
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// `send` of a message that is one repeated byte (the throughput workloads'): a link
    /// that writes messages in place produces it where it travels from.
    fn send_filled(&mut self, msg: &[u8]) -> io::Result<()> {
        self.send(msg)
    }
    /// Replaces `buf` with the next message; returns its length.
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
}

struct Framed<S>(S);

impl<S: Read + Write> Link for Framed<S> {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&(msg.len() as u32).to_le_bytes());
        let sent = loop {
            match self
                .0
                .write_vectored(&[IoSlice::new(&header), IoSlice::new(msg)])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if sent < HEADER_LEN {
            self.0.write_all(&header[sent..])?;
            self.0.write_all(msg)
        } else {
            self.0.write_all(&msg[sent - HEADER_LEN..])
        }
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let len = read_header(&mut self.0)?;
        buf.resize(len, 0);
        self.0.read_exact(buf)?;
        Ok(len)
    }
}

fn read_header(s: &mut impl Read) -> io::Result<usize> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h)?;
    decode_header(h)
}

fn decode_header(h: [u8; HEADER_LEN]) -> io::Result<usize> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if h[4..] != [0; 4] || len > MAX_LEN {
        return Err(other(format!("bad frame header {h:?}")));
    }
    Ok(len)
}

struct PipetteLink(pipette::Connection);

impl Link for PipetteLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.send(msg).map_err(other)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.0.recv_into(buf).map_err(other)
    }
}

/// A pipette connection whose sends write each message in place: the payload is produced
/// in the ring (the benchmark's messages are one repeated byte, so producing one is a fill)
/// instead of being copied there from a buffer.
struct InPlaceLink(pipette::Connection);

impl Link for InPlaceLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.send(msg).map_err(other)
    }
    fn send_filled(&mut self, msg: &[u8]) -> io::Result<()> {
        let byte = msg.first().copied().unwrap_or(0);
        self.0
            .send_with(msg.len(), |buf| buf.fill(byte))
            .map_err(other)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.0.recv_into(buf).map_err(other)
    }
}

struct IpcLink {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
}

/// What the ipc-channel child hands the parent: where to send new "connections" (a request
/// receiver for the child and a reply sender to the parent).
type IpcCtrl = IpcSender<(IpcBytesReceiver, IpcBytesSender)>;

impl IpcLink {
    fn connect(ctrl: &IpcCtrl) -> io::Result<IpcLink> {
        let (req_tx, req_rx) = ipc::bytes_channel()?;
        let (rep_tx, rep_rx) = ipc::bytes_channel()?;
        ctrl.send((req_rx, rep_tx)).map_err(other)?;
        Ok(IpcLink {
            tx: req_tx,
            rx: rep_rx,
        })
    }
}

impl Link for IpcLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.send(msg)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        *buf = self.rx.recv().map_err(other)?;
        Ok(buf.len())
    }
}

trait ALink {
    fn send(&mut self, msg: &[u8]) -> impl Future<Output = io::Result<()>>;
    fn recv(&mut self, buf: &mut Vec<u8>) -> impl Future<Output = io::Result<usize>>;
}

struct APipette(pipette::tokio::Connection);

impl ALink for APipette {
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.0.send(msg).await.map_err(other)
    }
    async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // pipette's async receive hands out `Bytes` (zero-copy from its buffer); the benchmark
        // looks at the length only, as a user that parses in place would.
        let b = self.0.recv().await.map_err(other)?;
        buf.clear();
        if b.len() <= PING_LEN {
            buf.extend_from_slice(&b);
        }
        Ok(b.len())
    }
}

struct ATokio(tokio::net::UnixStream);

impl ALink for ATokio {
    async fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&(msg.len() as u32).to_le_bytes());
        let sent = self
            .0
            .write_vectored(&[IoSlice::new(&header), IoSlice::new(msg)])
            .await?;
        if sent < HEADER_LEN {
            self.0.write_all(&header[sent..]).await?;
            self.0.write_all(msg).await
        } else {
            self.0.write_all(&msg[sent - HEADER_LEN..]).await
        }
    }
    async fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut h = [0u8; HEADER_LEN];
        self.0.read_exact(&mut h).await?;
        let len = decode_header(h)?;
        buf.resize(len, 0);
        self.0.read_exact(buf).await?;
        Ok(len)
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads (parent side)
// ---------------------------------------------------------------------------------------------

fn sorted_us(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let med = ns[ns.len() / 2] as f64 / 1e3;
    let p99 = ns[(ns.len() * 99).div_ceil(100) - 1] as f64 / 1e3;
    (med, p99)
}

fn mib_s(size: usize, n: usize, d: Duration) -> f64 {
    (size * n) as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn check_count(reply: &[u8], want: usize) -> io::Result<()> {
    let got = <[u8; 8]>::try_from(reply).ok().map(u64::from_le_bytes);
    if got != Some(want as u64) {
        return Err(other(format!(
            "the sink confirmed {got:?} bytes, {want} were sent"
        )));
    }
    Ok(())
}

fn rtt<L: Link>(l: &mut L, cfg: &Cfg) -> io::Result<(f64, f64)> {
    let ping = [0x5au8; PING_LEN];
    let mut buf = Vec::with_capacity(PING_LEN);
    let mut samples = Vec::with_capacity(cfg.rtt_n);
    for i in 0..cfg.rtt_warmup + cfg.rtt_n {
        let t0 = Instant::now();
        l.send(&ping)?;
        let n = l.recv(&mut buf)?;
        let dt = t0.elapsed();
        if n != PING_LEN {
            return Err(other("echo of the wrong length"));
        }
        if i >= cfg.rtt_warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Ok(sorted_us(samples))
}

fn tput<L: Link>(l: &mut L, size: usize, n: usize) -> io::Result<f64> {
    let msg = vec![0xa5u8; size];
    let mut buf = Vec::new();
    // Warm-up batch: a tenth (at least one message).
    for _ in 0..(n / 10).max(1) {
        l.send_filled(&msg)?;
    }
    l.send(&[])?;
    l.recv(&mut buf)?;
    check_count(&buf, size * (n / 10).max(1))?;
    let t0 = Instant::now();
    for _ in 0..n {
        l.send_filled(&msg)?;
    }
    l.send(&[])?;
    l.recv(&mut buf)?;
    let d = t0.elapsed();
    check_count(&buf, size * n)?;
    Ok(mib_s(size, n, d))
}

fn conns<L: Link>(mut connect: impl FnMut() -> io::Result<L>, n: usize) -> io::Result<f64> {
    let ping = [1u8; PING_LEN];
    let mut buf = Vec::new();
    let mut once = || -> io::Result<()> {
        let mut l = connect()?;
        l.send(&ping)?;
        if l.recv(&mut buf)? != PING_LEN {
            return Err(other("echo of the wrong length"));
        }
        Ok(()) // dropped: closed
    };
    for _ in 0..(n / 10).max(1) {
        once()?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        once()?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// All workloads of one blocking transport. `open(role)` starts a child and returns it with a
/// way to connect to it.
fn measure_blocking<L: Link, C: FnMut() -> io::Result<L>>(
    cfg: &Cfg,
    mut open: impl FnMut(Role) -> io::Result<(ChildGuard, C)>,
) -> io::Result<Figures> {
    let mut f = Figures::default();
    {
        let (_child, mut connect) = open(Role::Echo)?;
        (f.rtt_med_us, f.rtt_p99_us) = rtt(&mut connect()?, cfg)?;
    }
    {
        let (_child, mut connect) = open(Role::Sink(None))?;
        let mut l = connect()?;
        f.small_mib_s = tput(&mut l, SMALL, cfg.small_n)?;
        f.large_mib_s = tput(&mut l, LARGE, cfg.large_n)?;
    }
    {
        let (_child, connect) = open(Role::Echo)?;
        f.conn_s = conns(connect, cfg.conn_n)?;
    }
    Ok(f)
}

async fn artt<L: ALink>(l: &mut L, cfg: &Cfg) -> io::Result<(f64, f64)> {
    let ping = [0x5au8; PING_LEN];
    let mut buf = Vec::with_capacity(PING_LEN);
    let mut samples = Vec::with_capacity(cfg.rtt_n);
    for i in 0..cfg.rtt_warmup + cfg.rtt_n {
        let t0 = Instant::now();
        l.send(&ping).await?;
        let n = l.recv(&mut buf).await?;
        let dt = t0.elapsed();
        if n != PING_LEN {
            return Err(other("echo of the wrong length"));
        }
        if i >= cfg.rtt_warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Ok(sorted_us(samples))
}

async fn atput<L: ALink>(l: &mut L, size: usize, n: usize) -> io::Result<f64> {
    let msg = vec![0xa5u8; size];
    let mut buf = Vec::new();
    for _ in 0..(n / 10).max(1) {
        l.send(&msg).await?;
    }
    l.send(&[]).await?;
    l.recv(&mut buf).await?;
    check_count(&buf, size * (n / 10).max(1))?;
    let t0 = Instant::now();
    for _ in 0..n {
        l.send(&msg).await?;
    }
    l.send(&[]).await?;
    l.recv(&mut buf).await?;
    let d = t0.elapsed();
    check_count(&buf, size * n)?;
    Ok(mib_s(size, n, d))
}

async fn aconns<L: ALink>(connect: impl AsyncFn() -> io::Result<L>, n: usize) -> io::Result<f64> {
    let ping = [1u8; PING_LEN];
    let mut buf = Vec::new();
    let mut t0 = Instant::now();
    let warm = (n / 10).max(1);
    for i in 0..warm + n {
        if i == warm {
            t0 = Instant::now();
        }
        let mut l = connect().await?;
        l.send(&ping).await?;
        if l.recv(&mut buf).await? != PING_LEN {
            return Err(other("echo of the wrong length"));
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn measure_async<L: ALink, C: AsyncFn() -> io::Result<L>>(
    cfg: &Cfg,
    mut open: impl FnMut(Role) -> io::Result<(ChildGuard, C)>,
) -> io::Result<Figures> {
    let mut f = Figures::default();
    {
        let (_child, connect) = open(Role::Echo)?;
        (f.rtt_med_us, f.rtt_p99_us) = artt(&mut connect().await?, cfg).await?;
    }
    {
        let (_child, connect) = open(Role::Sink(None))?;
        let mut l = connect().await?;
        f.small_mib_s = atput(&mut l, SMALL, cfg.small_n).await?;
        f.large_mib_s = atput(&mut l, LARGE, cfg.large_n).await?;
    }
    {
        let (_child, connect) = open(Role::Echo)?;
        f.conn_s = aconns(connect, cfg.conn_n).await?;
    }
    Ok(f)
}

fn rt() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs every workload of `t` once against fresh children.
fn measure(t: T, cfg: &Cfg) -> io::Result<Figures> {
    match t {
        T::Pipette | T::PipetteSpin | T::PipetteShm => measure_blocking(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &pipette_name())?;
            let name = child.addr.clone();
            Ok((child, move || pipette_connect(t, &name).map(PipetteLink)))
        }),
        T::PipetteShmInPlace => measure_blocking(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &pipette_name())?;
            let name = child.addr.clone();
            Ok((child, move || pipette_connect(t, &name).map(InPlaceLink)))
        }),
        T::RawUds => measure_blocking(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &socket_path())?;
            let path = child.addr.clone();
            Ok((child, move || UnixStream::connect(&path).map(Framed)))
        }),
        T::Tcp => measure_blocking(cfg, |role| {
            let child = ChildGuard::spawn(t, role, "127.0.0.1:0")?;
            let addr = child.addr.clone();
            Ok((child, move || {
                let s = TcpStream::connect(&addr)?;
                s.set_nodelay(true)?;
                Ok(Framed(s))
            }))
        }),
        T::Interprocess => measure_blocking(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &socket_path())?;
            let path = child.addr.clone();
            Ok((child, move || {
                let name = path.as_str().to_fs_name::<GenericFilePath>()?;
                interprocess::local_socket::Stream::connect(name).map(Framed)
            }))
        }),
        T::IpcChannel => measure_blocking(cfg, |role| {
            let (server, name) = IpcOneShotServer::<IpcCtrl>::new()?;
            let child = ChildGuard::spawn(t, role, &name)?;
            let (_, ctrl) = server.accept().map_err(other)?;
            Ok((child, move || IpcLink::connect(&ctrl)))
        }),
        T::PipetteAsync | T::PipetteAsyncShm => rt()?.block_on(measure_async(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &pipette_name())?;
            let name = child.addr.clone();
            Ok((child, async move || async_connect(t, &name).await))
        })),
        T::TokioUds => rt()?.block_on(measure_async(cfg, |role| {
            let child = ChildGuard::spawn(t, role, &socket_path())?;
            let path = child.addr.clone();
            Ok((child, async move || {
                tokio::net::UnixStream::connect(&path).await.map(ATokio)
            }))
        })),
    }
}

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

fn pipette_name() -> String {
    format!(
        "pbench-{}-{}",
        process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn scratch_dir() -> PathBuf {
    env::temp_dir().join(format!("pipette-bench-{}", process::id()))
}

fn socket_path() -> String {
    let dir = scratch_dir();
    let _ = fs::create_dir_all(&dir);
    let p = dir.join(format!("{}.sock", SEQ.fetch_add(1, Ordering::Relaxed)));
    p.to_string_lossy().into_owned()
}

struct ChildGuard {
    child: Child,
    /// Closed first on drop: the child exits by itself then (which lets a child run under
    /// `valgrind --trace-children=yes` write its profile).
    stdin: Option<ChildStdin>,
    addr: String,
}

impl ChildGuard {
    fn spawn(t: T, role: Role, addr: &str) -> io::Result<ChildGuard> {
        let mut child = Command::new(env::current_exe()?)
            .args(["--child", t.name(), &role.arg(), addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let Some(addr) = line.trim_end().strip_prefix("ready ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(other(format!("{} child did not start", t.name())));
        };
        Ok(ChildGuard {
            addr: addr.to_owned(),
            child,
            stdin: Some(stdin),
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(addr: &str) {
    println!("ready {addr}");
    let _ = io::stdout().flush();
}

/// Serves one connection until the peer closes it (any receive error ends it).
fn serve<L: Link>(mut l: L, role: Role) -> io::Result<()> {
    match role {
        Role::Echo => {
            let mut buf = Vec::new();
            while l.recv(&mut buf).is_ok() {
                l.send(&buf)?;
            }
        }
        Role::Sink(_) => {
            let mut buf = Vec::new();
            let mut count = 0u64;
            let mut seen = [false; 2];
            while let Ok(n) = l.recv(&mut buf) {
                report_offset(&buf, &mut seen);
                if n == 0 {
                    l.send(&count.to_le_bytes())?;
                    count = 0;
                } else {
                    count += n as u64;
                }
            }
        }
    }
    Ok(())
}

/// With `PIPETTE_BENCH_OFFSETS` set, a sink prints the page offset of its receive buffer once
/// for 64 KiB and once for 4 MiB messages (the 4 KiB aliasing check).
fn report_offset(buf: &[u8], seen: &mut [bool; 2]) {
    let i = match buf.len() {
        SMALL => 0,
        LARGE => 1,
        _ => return,
    };
    if !seen[i] && env::var_os("PIPETTE_BENCH_OFFSETS").is_some() {
        seen[i] = true;
        eprintln!(
            "  receive buffer for {:>7} B messages: address mod 4096 = {}",
            buf.len(),
            buf.as_ptr() as usize % 4096
        );
    }
}

/// A raw UDS sink reading every payload at a chosen page offset.
fn serve_at_offset(mut s: UnixStream, off: usize) -> io::Result<()> {
    let mut mem = vec![0u8; LARGE + 2 * 4096];
    let base = (4096 - mem.as_ptr() as usize % 4096) % 4096 + off;
    let mut count = 0u64;
    while let Ok(len) = read_header(&mut s) {
        if len == 0 {
            Framed(&mut s).send(&count.to_le_bytes())?;
            count = 0;
        } else {
            s.read_exact(&mut mem[base..base + len])?;
            count += len as u64;
        }
    }
    Ok(())
}

async fn aserve<L: ALink>(mut l: L, role: Role) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut count = 0u64;
    while let Ok(n) = l.recv(&mut buf).await {
        match role {
            Role::Echo => l.send(&buf).await?,
            Role::Sink(_) if n == 0 => {
                l.send(&count.to_le_bytes()).await?;
                count = 0;
            }
            Role::Sink(_) => count += n as u64,
        }
    }
    Ok(())
}

/// How long `pipette-spin` receives spin before they sleep: longer than a prompt peer takes
/// to answer a small message, far shorter than an idle period.
const SPIN: std::time::Duration = std::time::Duration::from_micros(100);

/// Round trips per measurement of the cache-line latency (`crate::cacheline`): 15–60 ms.
const CACHELINE_TRIPS: u64 = 20_000;

/// Whether `--compare` records the host's placement of the CPUs around `t`'s runs: the
/// shared-memory rows, which follow it, and the baseline, to show that it does not.
fn follows_placement(t: T) -> bool {
    matches!(
        t,
        T::PipetteShm | T::PipetteShmInPlace | T::PipetteAsyncShm | T::RawUds
    )
}

/// The receive wait strategy of a pipette transport (`None`: its default).
fn wait_strategy(t: T) -> Option<pipette::WaitStrategy> {
    match t {
        T::PipetteSpin => Some(pipette::WaitStrategy::Spin(SPIN)),
        T::PipetteShm | T::PipetteShmInPlace => None,
        _ => Some(pipette::WaitStrategy::Block),
    }
}

/// The shared-memory ring of a pipette transport (`None`: the socket).
fn ring(t: T) -> Option<usize> {
    match t {
        T::PipetteShm => Some(1 << 20),
        T::PipetteShmInPlace => Some(16 << 20),
        _ => None,
    }
}

/// An async pipette client for transport `t`.
async fn async_connect(t: T, name: &str) -> io::Result<APipette> {
    let opts = pipette::ClientOptions::new().shared_memory(t == T::PipetteAsyncShm);
    pipette::tokio::Client::connect_with(name, &opts)
        .await
        .map(APipette)
        .map_err(other)
}

/// A blocking pipette client for transport `t`.
fn pipette_connect(t: T, name: &str) -> io::Result<pipette::Connection> {
    let mut opts = pipette::ClientOptions::new().shared_memory(ring(t).is_some());
    if let Some(r) = ring(t) {
        opts = opts.shared_memory_ring(r);
    }
    if let Some(w) = wait_strategy(t) {
        opts = opts.wait_strategy(w);
    }
    pipette::Client::connect_with(name, &opts).map_err(other)
}

fn run_child(t: T, role: Role, addr: &str) -> io::Result<()> {
    // Exit with the parent: it holds our stdin.
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        process::exit(0);
    });
    match t {
        T::Pipette | T::PipetteSpin | T::PipetteShm | T::PipetteShmInPlace => {
            let mut opts = pipette::ServerOptions::new().shared_memory(ring(t).is_some());
            if let Some(r) = ring(t) {
                opts = opts.shared_memory_ring(r);
            }
            if let Some(w) = wait_strategy(t) {
                opts = opts.wait_strategy(w);
            }
            let server = pipette::Server::bind_with(addr, &opts).map_err(other)?;
            ready(addr);
            loop {
                serve(PipetteLink(server.accept().map_err(other)?), role)?;
            }
        }
        T::RawUds => {
            let l = UnixListener::bind(addr)?;
            ready(addr);
            loop {
                let (s, _) = l.accept()?;
                match role {
                    Role::Sink(Some(off)) => serve_at_offset(s, off)?,
                    _ => serve(Framed(s), role)?,
                }
            }
        }
        T::Tcp => {
            let l = TcpListener::bind(addr)?;
            ready(&l.local_addr()?.to_string());
            loop {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                serve(Framed(s), role)?;
            }
        }
        T::Interprocess => {
            let name = addr.to_fs_name::<GenericFilePath>()?;
            let l = ListenerOptions::new().name(name).create_sync()?;
            ready(addr);
            loop {
                serve(Framed(l.accept()?), role)?;
            }
        }
        T::IpcChannel => {
            let (ctrl_tx, ctrl_rx) = ipc::channel::<(IpcBytesReceiver, IpcBytesSender)>()?;
            IpcSender::<IpcCtrl>::connect(addr.to_owned())?
                .send(ctrl_tx)
                .map_err(other)?;
            ready(addr);
            loop {
                // The parent dropped its end: done.
                let Ok((rx, tx)) = ctrl_rx.recv() else {
                    return Ok(());
                };
                serve(IpcLink { tx, rx }, role)?;
            }
        }
        T::PipetteAsync | T::PipetteAsyncShm => rt()?.block_on(async {
            let opts = pipette::ServerOptions::new().shared_memory(t == T::PipetteAsyncShm);
            let server = pipette::tokio::Server::bind_with(addr, &opts).map_err(other)?;
            ready(addr);
            loop {
                aserve(APipette(server.accept().await.map_err(other)?), role).await?;
            }
        }),
        T::TokioUds => rt()?.block_on(async {
            let l = tokio::net::UnixListener::bind(addr)?;
            ready(addr);
            loop {
                let (s, _) = l.accept().await?;
                aserve(ATokio(s), role).await?;
            }
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output
// ---------------------------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median over runs of each figure and of each figure's ratio to the same run's baseline.
struct Summary {
    transports: Vec<T>,
    values: Vec<[f64; 5]>,
    ratios: Vec<[f64; 5]>,
}

fn summarize(transports: &[T], runs: &[Vec<Figures>]) -> Summary {
    let base = transports.iter().position(|&t| t == T::RawUds);
    let mut s = Summary {
        transports: transports.to_vec(),
        values: vec![],
        ratios: vec![],
    };
    for i in 0..transports.len() {
        let mut v = [0.0; 5];
        let mut r = [f64::NAN; 5];
        for (m, (vm, rm)) in v.iter_mut().zip(r.iter_mut()).enumerate() {
            *vm = median(runs.iter().map(|run| run[i].get(m)).collect());
            if let Some(b) = base {
                *rm = median(
                    runs.iter()
                        .map(|run| run[i].get(m) / run[b].get(m))
                        .collect(),
                );
            }
        }
        s.values.push(v);
        s.ratios.push(r);
    }
    s
}

fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = write!(out, "| transport |");
    for (m, unit, lower) in METRICS {
        let arrow = if lower { "lower" } else { "higher" };
        let _ = write!(out, " {m} ({unit}, {arrow} is better) | ratio |");
    }
    out.push('\n');
    out.push_str("|---|");
    out.push_str(&"---:|---:|".repeat(METRICS.len()));
    out.push('\n');
    for (i, t) in s.transports.iter().enumerate() {
        let _ = write!(out, "| {} |", t.name());
        for m in 0..METRICS.len() {
            let v = s.values[i][m];
            let prec = if v >= 100.0 { 0 } else { 2 };
            let _ = write!(out, " {v:.prec$} | {:.2} |", s.ratios[i][m]);
        }
        out.push('\n');
    }
    out
}

fn csv(s: &Summary, runs: usize) -> String {
    let mut out = String::from("transport,metric,unit,median,ratio_to_raw_uds,runs\n");
    for (i, t) in s.transports.iter().enumerate() {
        for (m, (name, unit, _)) in METRICS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{},{name},{unit},{:.4},{:.4},{runs}",
                t.name(),
                s.values[i][m],
                s.ratios[i][m]
            );
        }
    }
    out
}

/// A grouped bar chart of the ratios (one group per metric, one bar per transport), written
/// by hand: a dozen rectangles do not need a plotting library.
fn svg(s: &Summary, title: &str) -> String {
    const COLORS: [&str; 7] = [
        "#555555", "#1f77b4", "#17becf", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728",
    ];
    let (w, h, left, top, bottom) = (900.0, 460.0, 50.0, 40.0, 75.0);
    let plot_h = h - top - bottom;
    let max = s
        .ratios
        .iter()
        .flatten()
        .copied()
        .filter(|r| r.is_finite())
        .fold(1.5f64, f64::max)
        .min(4.0);
    let y = |r: f64| top + plot_h * (1.0 - r.min(max) / max);
    let group_w = (w - left - 20.0) / METRICS.len() as f64;
    let bar_w = (group_w - 20.0) / s.transports.len() as f64;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">{title}</text>\n"
    );
    let mut tick = 0.0;
    while tick <= max + 1e-9 {
        let _ = writeln!(
            o,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"{}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{tick:.1}</text>",
            w - 20.0,
            if (tick - 1.0f64).abs() < 1e-9 { "black" } else { "#dddddd" },
            left - 4.0,
            y(tick) + 4.0,
            y0 = y(tick)
        );
        tick += 0.5;
    }
    for (m, (name, _, lower)) in METRICS.iter().enumerate() {
        let gx = left + 10.0 + m as f64 * group_w;
        for (i, _) in s.transports.iter().enumerate() {
            let r = s.ratios[i][m];
            if !r.is_finite() {
                continue;
            }
            let x = gx + i as f64 * bar_w;
            let _ = writeln!(
                o,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {name}: {r:.2}</title></rect>",
                y(r),
                bar_w - 2.0,
                y(0.0) - y(r),
                COLORS[i % COLORS.len()],
                s.transports[i].name()
            );
        }
        let better = if *lower { "lower" } else { "higher" };
        let _ = writeln!(
            o,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{name}</text><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666666\">{better} is better</text>",
            h - bottom + 18.0,
            h - bottom + 32.0,
            x = gx + group_w / 2.0 - 10.0,
        );
    }
    for (i, t) in s.transports.iter().enumerate() {
        let x = left + i as f64 * 120.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            h - 22.0,
            COLORS[i % COLORS.len()],
            x + 14.0,
            h - 13.0,
            t.name()
        );
    }
    o.push_str("</svg>\n");
    o
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

fn compare(cfg: &Cfg, transports: &[T], csv_path: Option<PathBuf>, svg_path: Option<PathBuf>) {
    eprintln!(
        "{} runs x {} transports, rotating order; baseline raw-uds",
        cfg.runs,
        transports.len()
    );
    let mut runs = Vec::new();
    // Per transport that follows the host's placement of the CPUs, the cache-line round trip
    // before and after each of its runs.
    let mut lines = vec![Vec::new(); transports.len()];
    let line =
        |t: T| follows_placement(t).then(|| crate::cacheline::round_trip_ns(CACHELINE_TRIPS));
    for r in 0..cfg.runs {
        let mut figs = vec![Figures::default(); transports.len()];
        for k in 0..transports.len() {
            let i = (k + r) % transports.len();
            let t = transports[i];
            let before = line(t);
            let t0 = Instant::now();
            match measure(t, cfg) {
                Ok(f) => figs[i] = f,
                Err(e) => {
                    eprintln!("run {r}: {}: {e}", t.name());
                    process::exit(1);
                }
            }
            let took = t0.elapsed();
            eprintln!("run {r}: {:<13} {took:.1?} {:?}", t.name(), figs[i]);
            if let (Some(before), Some(after)) = (before, line(t)) {
                eprintln!(
                    "run {r}: {:<13} cache line {before:.0} -> {after:.0} ns",
                    t.name()
                );
                lines[i].push(format!("{before:.0}->{after:.0}"));
            }
        }
        runs.push(figs);
    }
    let s = summarize(transports, &runs);
    println!(
        "\nmedian of {} runs (ratio = figure / raw-uds figure of the same run, median over runs)\n",
        cfg.runs
    );
    print!("{}", table(&s));
    let find = |t: T| transports.iter().position(|&x| x == t);
    if let (Some(p), Some(a), Some(k)) =
        (find(T::Pipette), find(T::PipetteAsync), find(T::TokioUds))
    {
        let per_run = |m: usize, num: usize, den: usize| {
            median(runs.iter().map(|r| r[num].get(m) / r[den].get(m)).collect())
        };
        println!(
            "\ntargets: pipette/raw rtt {:.3} (<= 1.05), 64KiB {:.3} / 4MiB {:.3} (>= 0.95), conn/s {:.3} (>= 0.9)",
            s.ratios[p][0], s.ratios[p][2], s.ratios[p][3], s.ratios[p][4]
        );
        println!(
            "         pipette-async/tokio-uds rtt {:.3} (<= 1.10), 64KiB {:.3} / 4MiB {:.3}, conn/s {:.3} (>= 0.91)",
            per_run(0, a, k),
            per_run(2, a, k),
            per_run(3, a, k),
            per_run(4, a, k)
        );
    }
    if let Some(sh) = find(T::PipetteShm) {
        println!(
            "pipette-shm (shared memory, default 50 us spin)/raw: rtt {:.3}, 64KiB {:.3} / 4MiB {:.3}, conn/s {:.3}",
            s.ratios[sh][0], s.ratios[sh][2], s.ratios[sh][3], s.ratios[sh][4]
        );
    }
    if let Some(ip) = find(T::PipetteShmInPlace) {
        println!(
            "pipette-shm-inplace (16 MiB rings, messages written in place)/raw: rtt {:.3}, 64KiB {:.3} / 4MiB {:.3}, conn/s {:.3}",
            s.ratios[ip][0], s.ratios[ip][2], s.ratios[ip][3], s.ratios[ip][4]
        );
    }
    if let Some(a) = find(T::PipetteAsyncShm) {
        println!(
            "pipette-async-shm (async API, shared memory)/raw: rtt {:.3}, 64KiB {:.3} / 4MiB {:.3}, conn/s {:.3}",
            s.ratios[a][0], s.ratios[a][2], s.ratios[a][3], s.ratios[a][4]
        );
    }
    if let Some(sp) = find(T::PipetteSpin) {
        println!(
            "pipette-spin (receives spin up to {} us, then sleep)/raw: rtt {:.3}, 64KiB {:.3} / 4MiB {:.3}, conn/s {:.3}",
            SPIN.as_micros(),
            s.ratios[sp][0],
            s.ratios[sp][2],
            s.ratios[sp][3],
            s.ratios[sp][4]
        );
    }
    println!(
        "\ncache-line round trip between two threads before and after each run, ns (the host's placement of the CPUs; the shared-memory rows follow it):"
    );
    for (t, l) in transports.iter().zip(&lines) {
        if !l.is_empty() {
            println!("  {:<19} {}", t.name(), l.join(", "));
        }
    }
    let _ = fs::remove_dir_all(scratch_dir());
    // Every row, every figure present and positive, or the run failed.
    let complete = s.values.len() == transports.len()
        && s.values.iter().flatten().all(|v| v.is_finite() && *v > 0.0);
    if let Some(p) = csv_path {
        write_file(&p, &csv(&s, cfg.runs));
    }
    if let Some(p) = svg_path {
        write_file(&p, &svg(&s, &title(cfg.runs)));
    }
    if !complete {
        eprintln!("missing or invalid figures");
        process::exit(1);
    }
}

fn title(runs: usize) -> String {
    format!("pipette and peers: ratio to raw std UnixStream (median of {runs} runs)")
}

/// Reads back what [`csv`] wrote.
fn summary_from_csv(text: &str) -> Option<(Summary, usize)> {
    let mut s = Summary {
        transports: vec![],
        values: vec![],
        ratios: vec![],
    };
    let mut runs = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [t, metric, _, value, ratio, r] = f[..] else {
            return None;
        };
        let t = T::parse(t)?;
        let m = METRICS.iter().position(|(name, _, _)| *name == metric)?;
        if s.transports.last() != Some(&t) {
            s.transports.push(t);
            s.values.push([f64::NAN; 5]);
            s.ratios.push([f64::NAN; 5]);
        }
        let i = s.transports.len() - 1;
        s.values[i][m] = value.parse().ok()?;
        s.ratios[i][m] = ratio.parse().ok()?;
        runs = r.parse().ok()?;
    }
    Some((s, runs))
}

fn write_file(p: &PathBuf, text: &str) {
    if let Some(dir) = p.parent() {
        let _ = fs::create_dir_all(dir);
    }
    if let Err(e) = fs::write(p, text) {
        eprintln!("{}: {e}", p.display());
        process::exit(1);
    }
    eprintln!("wrote {}", p.display());
}

/// The 4 KiB aliasing check: raw UDS receive throughput with the destination at chosen page
/// offsets, and the page offsets of the buffers pipette's sink really receives into.
fn alias(n_small: usize, n_large: usize) -> io::Result<()> {
    println!("raw UDS sink, payload read at a given page offset (MiB/s, median of 5):");
    println!("  offset   64 KiB   4 MiB");
    for off in [0, 8, 16, 24, 32, 64, 128, 2048, 4064, 4080] {
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..5 {
            let child = ChildGuard::spawn(T::RawUds, Role::Sink(Some(off)), &socket_path())?;
            let mut l = Framed(UnixStream::connect(&child.addr)?);
            a.push(tput(&mut l, SMALL, n_small)?);
            b.push(tput(&mut l, LARGE, n_large)?);
        }
        println!("  {off:>6} {:>8.0} {:>7.0}", median(a), median(b));
    }
    println!("page offsets of the sinks' receive buffers (recv_into a reused Vec):");
    for t in [T::RawUds, T::Pipette] {
        println!(" {}:", t.name());
        let mut cmd_child = ChildGuardEnv::spawn(t)?;
        let mut l: Box<dyn Link> = match t {
            T::Pipette => Box::new(PipetteLink(
                pipette::Client::connect(cmd_child.0.addr.as_str()).map_err(other)?,
            )),
            _ => Box::new(Framed(UnixStream::connect(&cmd_child.0.addr)?)),
        };
        tput(&mut l, SMALL, 4)?;
        tput(&mut l, LARGE, 2)?;
        drop(l);
        cmd_child.finish();
    }
    let _ = fs::remove_dir_all(scratch_dir());
    Ok(())
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        (**self).send(msg)
    }
    fn recv(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (**self).recv(buf)
    }
}

/// A sink child started with `PIPETTE_BENCH_OFFSETS` set (it reports on stderr, inherited).
struct ChildGuardEnv(ChildGuard);

impl ChildGuardEnv {
    fn spawn(t: T) -> io::Result<ChildGuardEnv> {
        let addr = if t == T::Pipette {
            pipette_name()
        } else {
            socket_path()
        };
        let mut child = Command::new(env::current_exe()?)
            .args(["--child", t.name(), "sink", &addr])
            .env("PIPETTE_BENCH_OFFSETS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        Ok(ChildGuardEnv(ChildGuard {
            child,
            stdin: Some(stdin),
            addr,
        }))
    }
    fn finish(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `N` round trips of 64 bytes and nothing else, for instruction counts: run it under
/// `valgrind --tool=callgrind` (which does not follow the child) with two `N`s and take the
/// difference, so that start-up and connection set-up cancel out.
/// With `size`, `N` one-way messages of that size instead (plus a warm-up tenth).
/// What `--profile` runs: round trips, one-way messages of a size, or connections.
#[derive(Clone, Copy)]
enum Workload {
    Rtt,
    Tput(usize),
    Conn,
}

fn profile(t: T, n: usize, work: Workload) -> io::Result<()> {
    let cfg = Cfg {
        rtt_warmup: 0,
        rtt_n: n,
        ..SMOKE
    };
    let role = match work {
        Workload::Tput(_) => Role::Sink(None),
        _ => Role::Echo,
    };
    let addr = match t {
        T::Pipette
        | T::PipetteSpin
        | T::PipetteShm
        | T::PipetteShmInPlace
        | T::PipetteAsync
        | T::PipetteAsyncShm => pipette_name(),
        _ => socket_path(),
    };
    let child = ChildGuard::spawn(t, role, &addr)?;
    fn run<L: Link>(
        mut connect: impl FnMut() -> io::Result<L>,
        cfg: &Cfg,
        work: Workload,
    ) -> io::Result<()> {
        let figure = match work {
            Workload::Rtt => format!("{:.2} us median round trip", rtt(&mut connect()?, cfg)?.0),
            Workload::Tput(size) => format!("{:.0} MiB/s", tput(&mut connect()?, size, cfg.rtt_n)?),
            Workload::Conn => format!("{:.0} connections/s", conns(connect, cfg.rtt_n)?),
        };
        println!("{figure}");
        Ok(())
    }
    async fn arun<L: ALink>(
        connect: impl AsyncFn() -> io::Result<L>,
        cfg: &Cfg,
        work: Workload,
    ) -> io::Result<()> {
        let figure = match work {
            Workload::Rtt => format!(
                "{:.2} us median round trip",
                artt(&mut connect().await?, cfg).await?.0
            ),
            Workload::Tput(size) => format!(
                "{:.0} MiB/s",
                atput(&mut connect().await?, size, cfg.rtt_n).await?
            ),
            Workload::Conn => format!("{:.0} connections/s", aconns(connect, cfg.rtt_n).await?),
        };
        println!("{figure}");
        Ok(())
    }
    let addr = child.addr.clone();
    match t {
        T::RawUds => run(|| Ok(Framed(UnixStream::connect(&addr)?)), &cfg, work)?,
        T::Pipette | T::PipetteSpin | T::PipetteShm => {
            run(|| pipette_connect(t, &addr).map(PipetteLink), &cfg, work)?
        }
        T::PipetteShmInPlace => run(|| pipette_connect(t, &addr).map(InPlaceLink), &cfg, work)?,
        T::PipetteAsync | T::PipetteAsyncShm => {
            rt()?.block_on(arun(async || async_connect(t, &addr).await, &cfg, work))?
        }
        T::TokioUds => rt()?.block_on(arun(
            async || Ok(ATokio(tokio::net::UnixStream::connect(&addr).await?)),
            &cfg,
            work,
        ))?,
        _ => {
            return Err(other(
                "--profile supports raw-uds, pipette, pipette-async, tokio-uds",
            ))
        }
    }
    let _ = fs::remove_dir_all(scratch_dir());
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: pipette-bench (--compare | --smoke | --alias | --cacheline | --plot CSV SVG | --profile TRANSPORT N [rtt|tput64|tput1m|tput4m|conn] | --instructions TRANSPORT N) [--runs N] [--only t1,t2,...] [--csv PATH] [--svg PATH]\n\
         transports: {}",
        ALL.map(T::name).join(", ")
    );
    process::exit(2);
}

pub(crate) fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(t), Some(role), Some(addr)) = (
            args.get(1).and_then(|s| T::parse(s)),
            args.get(2).and_then(|s| Role::parse(s)),
            args.get(3),
        ) else {
            usage()
        };
        if let Err(e) = run_child(t, role, addr) {
            eprintln!("pipette-bench child {}: {e}", t.name());
            process::exit(1);
        }
        return;
    }

    let docs = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/perf"));
    let mut mode = None;
    let mut cfg = COMPARE;
    let mut transports = ALL.to_vec();
    let (mut csv_path, mut svg_path) = (None, None);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compare" => mode = Some("compare"),
            "--smoke" | "--quick" => {
                mode = Some("smoke");
                cfg = Cfg {
                    runs: cfg.runs.min(SMOKE.runs),
                    ..SMOKE
                };
            }
            "--alias" => mode = Some("alias"),
            "--cacheline" => {
                println!(
                    "{:.0} ns per cache-line round trip between two threads",
                    crate::cacheline::round_trip_ns(CACHELINE_TRIPS)
                );
                return;
            }
            "--plot" => {
                // Redraws the plot from a CSV of an earlier run, without measuring.
                let (Some(c), Some(v)) = (it.next(), it.next()) else {
                    usage()
                };
                match fs::read_to_string(&c).map(|text| summary_from_csv(&text)) {
                    Ok(Some((s, runs))) => write_file(&PathBuf::from(v), &svg(&s, &title(runs))),
                    _ => {
                        eprintln!("{c}: not a pipette-bench CSV");
                        process::exit(1);
                    }
                }
                return;
            }
            "--instructions" => {
                let t = it.next().unwrap_or_else(|| usage());
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage());
                if let Err(e) = crate::instructions::run(&t, n) {
                    eprintln!("instructions: {e}");
                    process::exit(1);
                }
                return;
            }
            "--profile" => {
                let t = it
                    .next()
                    .and_then(|s| T::parse(&s))
                    .unwrap_or_else(|| usage());
                let n = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage());
                let work = match it.next().as_deref() {
                    None | Some("rtt") => Workload::Rtt,
                    Some("tput64") => Workload::Tput(SMALL),
                    Some("tput1m") => Workload::Tput(1 << 20),
                    Some("tput4m") => Workload::Tput(LARGE),
                    Some("conn") => Workload::Conn,
                    Some(_) => usage(),
                };
                if let Err(e) = profile(t, n, work) {
                    eprintln!("profile: {e}");
                    process::exit(1);
                }
                return;
            }
            "--runs" => match it.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => cfg.runs = n,
                _ => usage(),
            },
            "--only" => {
                let list = it.next().unwrap_or_else(|| usage());
                transports = list
                    .split(',')
                    .map(|s| T::parse(s).unwrap_or_else(|| usage()))
                    .collect();
            }
            "--csv" => csv_path = it.next().map(PathBuf::from),
            "--svg" => svg_path = it.next().map(PathBuf::from),
            _ => usage(),
        }
    }
    // The committed tables in docs/perf are the full comparison: a run of some transports
    // (`--only`) writes files only where `--csv`/`--svg` say.
    let full = transports.len() == ALL.len();
    match mode {
        Some("compare") => compare(
            &cfg,
            &transports,
            csv_path.or(full.then(|| docs.join("results.csv"))),
            svg_path.or(full.then(|| docs.join("ratios.svg"))),
        ),
        Some("smoke") => compare(&cfg, &transports, csv_path, svg_path),
        Some("alias") => {
            if let Err(e) = alias(2048, 32) {
                eprintln!("alias check: {e}");
                process::exit(1);
            }
        }
        _ => usage(),
    }
}
