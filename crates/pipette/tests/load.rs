//! Load (issue #6): many clients and many messages against one server, nothing lost,
//! duplicated, reordered or corrupted; and a server's memory stays bounded when its clients
//! send faster than it reads.
//!
//! Every message carries (connection id, sequence number, length, checksum): the server checks
//! each one it receives and echoes it; the client checks each echo. Sizes are mixed, mostly
//! small.
//!
//! `PIPETTE_LOAD=CLIENTSxMESSAGES` changes the size of the load test (default 1000x1000).
//! The soak test is ignored by default; `scripts/reliability.sh soak` runs it (release build,
//! `PIPETTE_SOAK_SECS`, default 180).

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pipette::{Client, ClientOptions, Error, Shutdown};
use support::{spawn_watched, tell, unique, Rng, Watched};

fn main() {
    let many: support::Test = (
        "many_clients_many_messages_nothing_lost_duplicated_or_reordered",
        many_clients_many_messages_nothing_lost_duplicated_or_reordered,
    );
    let bounded: support::Test = (
        "memory_stays_bounded_when_clients_outpace_the_server",
        memory_stays_bounded_when_clients_outpace_the_server,
    );
    support::main_with_ignored(
        &[many, bounded],
        &[("soak", soak)],
        &[
            ("verify-echo", role_verify_echo),
            ("load-clients", role_load_clients),
            ("slow-reader", role_slow_reader),
        ],
    );
}

const HANG: Duration = Duration::from_secs(300);
/// Message header: connection id, sequence number, payload length, payload checksum.
const HEAD: usize = 20;

/// A checksum that is quick even in a debug build (FNV-1a over 8-byte words).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = (h ^ u64::from_le_bytes(w.try_into().unwrap())).wrapping_mul(0x100_0000_01b3);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The size of message `seq` of connection `conn`: 90% up to 200 bytes, 9% up to 4 KiB, 1%
/// up to 64 KiB.
fn size_of(conn: u32, seq: u32) -> usize {
    let mut r = Rng::new(((conn as u64) << 32) | seq as u64);
    match r.range(0, 100) {
        0 => r.range(4096, 65536) as usize,
        1..=9 => r.range(200, 4096) as usize,
        _ => r.range(0, 200) as usize,
    }
}

/// Message `seq` of connection `conn`.
fn message(conn: u32, seq: u32) -> Vec<u8> {
    let len = size_of(conn, seq);
    let mut m = Vec::with_capacity(HEAD + len + 8);
    m.extend_from_slice(&conn.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(len as u32).to_le_bytes());
    m.extend_from_slice(&[0; 8]);
    let mut r = Rng::new(((seq as u64) << 32) ^ conn as u64 ^ 0x5eed);
    while m.len() < HEAD + len {
        m.extend_from_slice(&r.next().to_le_bytes());
    }
    m.truncate(HEAD + len);
    let sum = checksum(&m[HEAD..]);
    m[12..20].copy_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message: (connection id, sequence number), or what is wrong with it.
fn check(m: &[u8]) -> Result<(u32, u32), String> {
    if m.len() < HEAD {
        return Err(format!("a {}-byte message", m.len()));
    }
    let u32_at = |i: usize| u32::from_le_bytes(m[i..i + 4].try_into().unwrap());
    let (conn, seq, len) = (u32_at(0), u32_at(4), u32_at(8) as usize);
    if m.len() != HEAD + len {
        return Err(format!(
            "conn {conn} seq {seq}: {} bytes, header says {}",
            m.len(),
            HEAD + len
        ));
    }
    let sum = u64::from_le_bytes(m[12..20].try_into().unwrap());
    if checksum(&m[HEAD..]) != sum {
        return Err(format!("conn {conn} seq {seq}: checksum mismatch"));
    }
    Ok((conn, seq))
}

/// `verify-echo NAME`: an echo server that checks every message (checksum, and sequence
/// numbers 0, 1, 2, … per connection) and, when a connection ends, prints
/// `conn ID RECEIVED BAD END`; until stdin closes.
fn role_verify_echo(args: Vec<String>) {
    let server = pipette::Server::bind(args[0].as_str()).expect("bind");
    support::stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    for conn in server.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let (mut id, mut received, mut bad) = (None, 0u32, 0u32);
            let mut buf = Vec::new();
            let end = loop {
                if let Err(e) = conn.recv_into(&mut buf) {
                    break e;
                }
                match check(&buf) {
                    Ok((c, seq)) if *id.get_or_insert(c) == c && seq == received => {}
                    Ok((c, seq)) => {
                        bad += 1;
                        eprintln!("verify-echo: conn {id:?}: got conn {c} seq {seq}, expected seq {received}");
                    }
                    Err(why) => {
                        bad += 1;
                        eprintln!("verify-echo: {why}");
                    }
                }
                received += 1;
                if let Err(e) = conn.send(&buf) {
                    break e;
                }
            };
            let id = id.map_or("-".to_owned(), |i| i.to_string());
            tell(&format!(
                "conn {id} {received} {bad} {}",
                support::error_kind(&end)
            ));
        });
    }
}

/// `load-clients NAME FIRST COUNT MESSAGES`: COUNT connections (ids FIRST…), each a sender
/// thread and a receiver thread; every echo is checked. Prints `done VERIFIED ERRORS`.
fn role_load_clients(args: Vec<String>) {
    let name = args[0].clone();
    let first: u32 = args[1].parse().unwrap();
    let count: u32 = args[2].parse().unwrap();
    let msgs: u32 = args[3].parse().unwrap();
    let verified = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (first..first + count)
        .map(|id| {
            let name = name.clone();
            let verified = verified.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let c = Client::connect_timeout(name.as_str(), HANG)
                    .map_err(|e| format!("conn {id}: connect: {e}"))?;
                let (mut tx, mut rx) = c.split();
                rx.set_read_timeout(Some(HANG));
                let sender = std::thread::spawn(move || -> Result<(), String> {
                    for seq in 0..msgs {
                        tx.send(&message(id, seq))
                            .map_err(|e| format!("conn {id}: send #{seq}: {e}"))?;
                    }
                    tx.close().map_err(|e| format!("conn {id}: close: {e}"))
                });
                let mut buf = Vec::new();
                for seq in 0..msgs {
                    rx.recv_into(&mut buf)
                        .map_err(|e| format!("conn {id}: echo #{seq}: {e}"))?;
                    match check(&buf)? {
                        (c, s) if (c, s) == (id, seq) => {}
                        (c, s) => {
                            return Err(format!("conn {id}: echo #{seq} is conn {c} seq {s}"))
                        }
                    }
                    verified.fetch_add(1, Ordering::Relaxed);
                }
                // Nothing more than what was sent: the server closes after our close.
                match rx.recv() {
                    Err(Error::Closed) => {}
                    other => return Err(format!("conn {id}: after the last echo: {other:?}")),
                }
                sender.join().unwrap()
            })
        })
        .collect();
    let mut errors = 0;
    for t in threads {
        if let Err(e) = t.join().unwrap() {
            errors += 1;
            eprintln!("load-clients: {e}");
        }
    }
    tell(&format!(
        "done {} {errors}",
        verified.load(Ordering::Relaxed)
    ));
}

/// `CLIENTSxMESSAGES` from the environment, or the default.
/// The load's size: `PIPETTE_LOAD=CLIENTSxMESSAGES`, else `default` on Linux and a smaller
/// load on Windows, where a pipe name has at most 255 instances and Wine is far slower.
fn load_size(default: (u32, u32)) -> (u32, u32) {
    let default = if cfg!(windows) { (100, 200) } else { default };
    std::env::var("PIPETTE_LOAD")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or(default)
}

/// Runs `clients` × `msgs` against `server` (named `name`) from 4 client processes; checks
/// the server's and the clients' accounts. Returns the server's peak memory in KiB.
fn run_load(server: &Watched, name: &str, first: u32, clients: u32, msgs: u32) -> u64 {
    let procs = 4.min(clients);
    let per = clients / procs;
    let started = Instant::now();
    let client_procs: Vec<Watched> = (0..procs)
        .map(|p| {
            let n = if p == procs - 1 {
                clients - per * (procs - 1)
            } else {
                per
            };
            let f = (first + p * per).to_string();
            spawn_watched(
                "load-clients",
                &[name, &f, &n.to_string(), &msgs.to_string()],
            )
        })
        .collect();
    let mut peak_rss = 0;
    let mut verified = 0u64;
    for c in &client_procs {
        let line = loop {
            match c.lines_try(Duration::from_millis(200)) {
                Some(l) => break l,
                None => peak_rss = peak_rss.max(server.rss_kib()),
            }
            assert!(
                started.elapsed() < HANG,
                "load did not finish within {HANG:?}"
            );
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "done", "{line}");
        assert_eq!(f[2], "0", "client process reported errors: {line}");
        verified += f[1].parse::<u64>().unwrap();
    }
    assert_eq!(
        verified,
        clients as u64 * msgs as u64,
        "echoes verified by the clients"
    );
    // The server's account: every connection, every message, in order, once.
    let mut ids = BTreeSet::new();
    for _ in 0..clients {
        let line = server.line_within(HANG);
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[0], "conn", "{line}");
        let id: u32 = f[1].parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(ids.insert(id), "connection {id} reported twice");
        assert_eq!(
            f[2],
            msgs.to_string(),
            "messages the server received: {line}"
        );
        assert_eq!(f[3], "0", "bad messages: {line}");
        assert_eq!(f[4], "Closed", "{line}");
    }
    assert_eq!(ids, (first..first + clients).collect::<BTreeSet<_>>());
    let took = started.elapsed();
    let peak = support::proc_status_kib(server.id(), "VmHWM").unwrap_or(peak_rss);
    support::note(format!(
        "load: {clients} clients x {msgs} messages = {} messages echoed and checked in {took:.1?}; server peak RSS {} KiB",
        clients as u64 * msgs as u64,
        peak.max(peak_rss)
    ));
    peak.max(peak_rss)
}

trait LinesTry {
    fn lines_try(&self, d: Duration) -> Option<String>;
}

impl LinesTry for Watched {
    /// The next line if one comes within `d`.
    fn lines_try(&self, d: Duration) -> Option<String> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(l) = self.pending_lines().into_iter().next() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn many_clients_many_messages_nothing_lost_duplicated_or_reordered() {
    support::raise_fd_limit(16_384);
    let (clients, msgs) = load_size((1000, 1000));
    let name = unique("load");
    let server = spawn_watched("verify-echo", &[&name]);
    server.expect("ready");
    run_load(&server, &name, 0, clients, msgs);
}

/// `slow-reader NAME DELAY_MS`: receives messages, pausing DELAY_MS after each, and never
/// answers; when stdin closes, prints `read BYTES`.
fn role_slow_reader(args: Vec<String>) {
    let delay = Duration::from_millis(args[1].parse().unwrap());
    let server = pipette::Server::bind(args[0].as_str()).expect("bind");
    let stop = server.shutdown_handle();
    let total = Arc::new(AtomicU64::new(0));
    tell("ready");
    let t = total.clone();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { continue };
            let t = t.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while let Ok(n) = conn.recv_into(&mut buf) {
                    t.fetch_add(n as u64, Ordering::SeqCst);
                    std::thread::sleep(delay);
                }
            });
        }
    });
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    tell(&format!("read {}", total.load(Ordering::SeqCst)));
    stop.shutdown();
}

fn memory_stays_bounded_when_clients_outpace_the_server() {
    // 16 clients send 1 MiB messages as fast as they can for a few seconds; the server reads
    // one message per 20 ms per connection. Without backpressure its memory would grow by
    // everything the clients push; with it, each sender blocks once the socket buffers are
    // full, and the server holds at most about one message per connection.
    const CONNS: usize = 16;
    const MSG: usize = 1 << 20;
    const BOUND_KIB: u64 = 200 * 1024;
    let name = unique("slow");
    let mut server = spawn_watched("slow-reader", &[&name, "20"]);
    server.expect("ready");
    let stop = Shutdown::new();
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CONNS)
        .map(|_| {
            let (name, stop, sent) = (name.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut c = pipette::Client::connect_with(
                    name.as_str(),
                    &ClientOptions::new()
                        .shutdown(&stop)
                        .wait(Duration::from_secs(30)),
                )
                .unwrap();
                let msg = vec![0xA5u8; MSG];
                loop {
                    match c.send(&msg) {
                        Ok(()) => sent.fetch_add(MSG as u64, Ordering::SeqCst),
                        Err(Error::Shutdown) => return,
                        Err(e) => panic!("send: {e}"),
                    };
                }
            })
        })
        .collect();
    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.shutdown();
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    peak = peak.max(support::proc_status_kib(server.id(), "VmHWM").unwrap_or(0));
    drop(server.stdin.take());
    let line = server.line_within(Duration::from_secs(30));
    let read: u64 = line.strip_prefix("read ").unwrap().parse().unwrap();
    let sent = sent.load(Ordering::SeqCst);
    support::note(format!(
        "backpressure: clients completed {} MiB of sends, the server read {} MiB; server peak RSS {} KiB (bound {} KiB)",
        sent >> 20,
        read >> 20,
        peak,
        BOUND_KIB
    ));
    assert!(peak < BOUND_KIB, "server RSS peaked at {peak} KiB");
    // The senders were held back: what they completed is what the server read, plus at most
    // what fits in the socket buffers and one message in flight per connection.
    assert!(
        sent <= read + (CONNS * (MSG + (4 << 20))) as u64,
        "clients pushed {sent} bytes but the server read only {read}: buffered without limit?"
    );
    let _ = server.wait_timeout(Duration::from_secs(30));
}

/// The soak: the full-size load test, then rounds of load with connection churn and hostile
/// connections for `PIPETTE_SOAK_SECS` (default 180); the server's memory and descriptors must
/// not creep up from round to round.
fn soak() {
    support::raise_fd_limit(16_384);
    let secs: u64 = std::env::var("PIPETTE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let name = unique("soak");
    let server = spawn_watched("verify-echo", &[&name]);
    server.expect("ready");
    let (clients, msgs) = load_size((1000, 1000));
    let mut next_id = 0;
    run_load(&server, &name, next_id, clients, msgs);
    next_id += clients;
    let start = Instant::now();
    let mut rounds = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        // Hostile connections alongside: silent, garbage, and cut-off ones.
        for i in 0..100 {
            // Raw pipette connections speak whatever bytes we give them.
            let raw = pipette::ClientOptions::new().raw(true);
            if let Ok(mut c) = pipette::Client::connect_with(name.as_str(), &raw) {
                let hello = pipette::frame::Hello {
                    version: 1,
                    features: 0,
                    max_message_size: 4096,
                }
                .encode();
                let _ = match i % 3 {
                    0 => Ok(()),
                    1 => c.send(b"garbage garbage!"),
                    _ => c.send(&hello[..9]),
                };
            }
        }
        run_load(&server, &name, next_id, clients, msgs);
        next_id += clients;
        let rss = server.rss_kib();
        let fds = server.fd_count();
        rounds.push((rss, fds));
        support::note(format!(
            "soak: {:?} in, round {}: server RSS {rss} KiB, {fds} descriptors",
            start.elapsed(),
            rounds.len()
        ));
    }
    let (first_rss, first_fds) = rounds[rounds.len().min(2) - 1];
    let (last_rss, last_fds) = *rounds.last().unwrap();
    assert!(
        last_fds <= first_fds + 2,
        "descriptors crept from {first_fds} to {last_fds}"
    );
    assert!(
        last_rss <= first_rss + 32 * 1024,
        "server memory crept from {first_rss} KiB to {last_rss} KiB"
    );
    support::note(format!(
        "soak: {} rounds in {:?}, {} connections; server RSS {first_rss} -> {last_rss} KiB",
        rounds.len(),
        start.elapsed(),
        next_id
    ));
}
