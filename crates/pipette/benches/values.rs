//! Typed round trip of a small struct (`send_value` / `recv_value`, postcard, both sides
//! encoding and decoding) against the framed round trip of the same bytes (`send` /
//! `recv_into`), each with a pipette server in a child process (issue #14: at most 1.2x).
//!
//! ```text
//! cargo bench -p pipette-ipc --features serde --bench values            # the ratio
//! cargo bench -p pipette-ipc --features serde --bench values -- --test  # smoke: a few trips
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipette::{Client, Codec, Connection, Server};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "PIPETTE_BENCH_VALUES_CHILD";
/// Round trips per timed run, and timed runs per transport (alternating, after a warm-up).
const TRIPS: u64 = 20_000;
const RUNS: usize = 7;

/// A typical small request: integers, a short string, an option, an enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Small {
    id: u64,
    seq: u32,
    name: String,
    ok: bool,
    ratio: f64,
    parent: Option<u64>,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Open { path: String },
    Close,
}

fn small() -> Small {
    Small {
        id: 1_234_567,
        seq: 42,
        name: "open-document".to_owned(),
        ok: true,
        ratio: 0.75,
        parent: Some(7),
        kind: Kind::Open {
            path: "/home/user/notes.txt".to_owned(),
        },
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (kind, name) = spec.split_once(':').unwrap();
        serve(kind, name).unwrap();
        return;
    }
    let smoke = std::env::args().any(|a| a == "--test" || a == "--list");
    let (trips, runs) = if smoke { (10, 1) } else { (TRIPS, RUNS) };

    let (mut bytes, _b) = session("bytes");
    let (mut typed, _t) = session("typed");
    let encoded = Codec::Postcard.encode(&small()).unwrap();
    let value = small();
    let mut buf = Vec::new();
    let mut run_bytes = |n: u64| {
        let start = Instant::now();
        for _ in 0..n {
            bytes.send(&encoded).unwrap();
            bytes.recv_into(&mut buf).unwrap();
        }
        assert_eq!(buf, encoded);
        start.elapsed()
    };
    let mut run_typed = |n: u64| {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..n {
            typed.send_value(&value).unwrap();
            last = Some(typed.recv_value::<Small>().unwrap());
        }
        assert_eq!(last.as_ref(), Some(&value));
        start.elapsed()
    };
    run_bytes(trips / 10 + 1);
    run_typed(trips / 10 + 1);
    let (mut tb, mut tt) = (Vec::new(), Vec::new());
    for r in 0..runs {
        if r % 2 == 0 {
            tb.push(run_bytes(trips));
            tt.push(run_typed(trips));
        } else {
            tt.push(run_typed(trips));
            tb.push(run_bytes(trips));
        }
    }
    tb.sort();
    tt.sort();
    let (b, t) = (tb[runs / 2], tt[runs / 2]);
    let us = |d: Duration| d.as_secs_f64() * 1e6 / trips as f64;
    println!(
        "round trip of a {}-byte small struct (median of {runs} alternating runs of {trips}):",
        encoded.len()
    );
    println!("  bytes (send / recv_into):        {:.2} µs", us(b));
    println!("  typed (send_value / recv_value): {:.2} µs", us(t));
    println!(
        "typed/bytes = {:.2} (target <= 1.2)",
        t.as_secs_f64() / b.as_secs_f64()
    );
}

/// A child serving `kind` on a fresh name, and a connection to it.
fn session(kind: &str) -> (Connection, ChildGuard) {
    let name = format!("bench-values-{kind}-{}", std::process::id());
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, format!("{kind}:{name}"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = Client::connect_timeout(name.as_str(), Duration::from_secs(10)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)));
    (conn, ChildGuard(child))
}

/// Kills the child if the parent ends early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One connection: echo the bytes, or decode a `Small` and encode it back.
fn serve(kind: &str, name: &str) -> pipette::Result<()> {
    let server = Server::bind(name)?;
    let mut conn = server.accept()?;
    let mut buf = Vec::new();
    loop {
        let res = if kind == "typed" {
            conn.recv_value::<Small>().and_then(|v| conn.send_value(&v))
        } else {
            conn.recv_into(&mut buf).and_then(|_| conn.send(&buf))
        };
        match res {
            Ok(()) => {}
            Err(pipette::Error::Closed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
