//! Async benchmarks: pipette's tokio API against raw tokio `UnixStream` with the same framing,
//! each server in its own child process, both measured in the same run.
//!
//! - `async_rtt_64B`: 64-byte ping-pong round trip on one connection.
//! - `async_connect`: one connection's life: connect, handshake (pipette), one 64-byte round
//!   trip, close.
//!
//! After criterion, a short phase outside it alternates the transports five times and prints
//! the median ratios (skipped with `--test`). Run: `cargo bench -p pipette-ipc --features tokio
//! --bench async`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::Criterion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;

const CHILD_ENV: &str = "PIPETTE_ASYNC_BENCH_CHILD";
const PING_LEN: usize = 64;
const HEADER_LEN: usize = 8;

pub fn main() {
    if let Ok(spec) = env::var(CHILD_ENV) {
        let (kind, addr) = spec.split_once(':').expect("kind:addr");
        rt().block_on(async {
            match kind {
                "pipette" => pipette_echo(addr).await,
                "raw" => raw_echo(Path::new(addr)).await,
                other => panic!("unknown child kind {other}"),
            }
        });
        return;
    }
    let args: Vec<String> = env::args().collect();
    let quick = args
        .iter()
        .any(|a| a == "--test" || a == "--list" || a == "--profile-time");

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let servers = Servers::start();
    let rt = rt();

    let mut g = c.benchmark_group("async_rtt_64B");
    g.bench_function("pipette", |b| {
        let mut conn = rt
            .block_on(pipette::tokio::Client::connect(servers.pipette.as_str()))
            .unwrap();
        let msg = vec![7u8; PING_LEN];
        b.iter_custom(|iters| rt.block_on(pipette_rtt(&mut conn, &msg, iters)));
    });
    g.bench_function("raw_tokio", |b| {
        let mut s = rt.block_on(UnixStream::connect(&servers.raw)).unwrap();
        let msg = vec![7u8; PING_LEN];
        b.iter_custom(|iters| rt.block_on(raw_rtt(&mut s, &msg, iters)));
    });
    g.finish();

    let mut g = c.benchmark_group("async_connect");
    g.bench_function("pipette", |b| {
        b.iter_custom(|iters| rt.block_on(pipette_connects(&servers.pipette, iters)))
    });
    g.bench_function("raw_tokio", |b| {
        b.iter_custom(|iters| rt.block_on(raw_connects(&servers.raw, iters)))
    });
    g.finish();
    c.final_summary();

    if !quick {
        summary(&rt, &servers);
    }
}

fn rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The two echo servers, each a child process running this binary; killed on drop.
struct Servers {
    pipette: String,
    raw: PathBuf,
    children: Vec<Child>,
}

impl Servers {
    fn start() -> Servers {
        let pid = std::process::id();
        let pipette = format!("bench-async-{pid}");
        let raw = env::temp_dir().join(format!("bench-async-raw-{pid}.sock"));
        let _ = std::fs::remove_file(&raw);
        let exe = env::current_exe().unwrap();
        let spawn = |spec: String| {
            Command::new(&exe)
                .env(CHILD_ENV, spec)
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        };
        let children = vec![
            spawn(format!("pipette:{pipette}")),
            spawn(format!("raw:{}", raw.display())),
        ];
        // Wait until both answer.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(matches!(
            pipette::probe(pipette.as_str()),
            Ok(pipette::Liveness::Live { .. })
        ) && std::os::unix::net::UnixStream::connect(&raw).is_ok())
        {
            assert!(Instant::now() < deadline, "bench servers did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Servers {
            pipette,
            raw,
            children,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.raw);
    }
}

async fn pipette_echo(name: &str) {
    let server = pipette::tokio::Server::bind(name).unwrap();
    while let Ok(mut conn) = server.accept().await {
        tokio::spawn(async move {
            while let Ok(msg) = conn.recv().await {
                if conn.send(&msg).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn raw_echo(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while read_frame(&mut s, &mut buf).await.is_ok() {
                if write_frame(&mut s, &buf).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The raw baseline's framing, as a competent tokio user would write it: the same 8-byte
/// header (u32 LE length, u32 flags), one write of header and payload, two exact reads.
async fn write_frame(s: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    s.write_all(&frame).await
}

async fn read_frame(s: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).await?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    buf.resize(len, 0);
    s.read_exact(buf).await?;
    Ok(())
}

async fn pipette_rtt(conn: &mut pipette::tokio::Connection, msg: &[u8], iters: u64) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        conn.send(msg).await.unwrap();
        let reply = conn.recv().await.unwrap();
        debug_assert_eq!(reply.len(), msg.len());
    }
    t.elapsed()
}

async fn raw_rtt(s: &mut UnixStream, msg: &[u8], iters: u64) -> Duration {
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..iters {
        write_frame(s, msg).await.unwrap();
        read_frame(s, &mut buf).await.unwrap();
    }
    t.elapsed()
}

async fn pipette_connects(name: &str, iters: u64) -> Duration {
    let msg = [1u8; PING_LEN];
    let t = Instant::now();
    for _ in 0..iters {
        let mut c = pipette::tokio::Client::connect(name).await.unwrap();
        c.send(&msg).await.unwrap();
        let reply = c.recv().await.unwrap();
        assert_eq!(reply.len(), PING_LEN);
    }
    t.elapsed()
}

async fn raw_connects(path: &Path, iters: u64) -> Duration {
    let msg = [1u8; PING_LEN];
    let mut buf = Vec::new();
    let t = Instant::now();
    for _ in 0..iters {
        let mut s = UnixStream::connect(path).await.unwrap();
        write_frame(&mut s, &msg).await.unwrap();
        read_frame(&mut s, &mut buf).await.unwrap();
        assert_eq!(buf.len(), PING_LEN);
    }
    t.elapsed()
}

/// Five alternating runs of each measurement; prints median figures and ratios.
fn summary(rt: &Runtime, servers: &Servers) {
    const RTTS: u64 = 20_000;
    const CONNECTS: u64 = 3_000;
    let msg = vec![7u8; PING_LEN];
    let mut conn = rt
        .block_on(pipette::tokio::Client::connect(servers.pipette.as_str()))
        .unwrap();
    let mut raw = rt.block_on(UnixStream::connect(&servers.raw)).unwrap();
    let (mut p_rtt, mut r_rtt, mut p_conn, mut r_conn) = (vec![], vec![], vec![], vec![]);
    for run in 0..5 {
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            if which == 0 {
                p_rtt.push(rt.block_on(pipette_rtt(&mut conn, &msg, RTTS)) / RTTS as u32);
                p_conn.push(rt.block_on(pipette_connects(&servers.pipette, CONNECTS)));
            } else {
                r_rtt.push(rt.block_on(raw_rtt(&mut raw, &msg, RTTS)) / RTTS as u32);
                r_conn.push(rt.block_on(raw_connects(&servers.raw, CONNECTS)));
            }
        }
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (pr, rr) = (median(p_rtt), median(r_rtt));
    let per_sec = |d: Duration| CONNECTS as f64 / d.as_secs_f64();
    let (pc, rc) = (per_sec(median(p_conn)), per_sec(median(r_conn)));
    println!("async ratio summary (median of 5 alternating runs, outside criterion)");
    println!("  rtt 64 B:      pipette {pr:.2?}, raw tokio {rr:.2?}");
    println!("  connections/s: pipette {pc:.0}, raw tokio {rc:.0}");
    println!(
        "async rtt pipette/raw = {:.2} (target <= 1.10), connections/s pipette/raw = {:.2} (target >= 0.90)",
        pr.as_secs_f64() / rr.as_secs_f64(),
        pc / rc
    );
}
