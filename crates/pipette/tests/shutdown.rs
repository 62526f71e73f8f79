//! Shutdown from another thread ends every blocking operation promptly, and frees the name.
//!
//! The time limits here only turn a hang into a failure; they are generous on purpose.

mod support;

use std::time::{Duration, Instant};

use pipette::{Client, ClientOptions, Error, Liveness, Server, Shutdown};
use support::{spawn, tell, unique, Blockers};

fn main() {
    support::main(
        &[
            ("shutdown_unblocks_accept", shutdown_unblocks_accept),
            ("shutdown_unblocks_recv", shutdown_unblocks_recv),
            (
                "shutdown_unblocks_send_on_a_full_buffer",
                shutdown_unblocks_send_on_a_full_buffer,
            ),
            (
                "shutdown_unblocks_connect_timeout",
                shutdown_unblocks_connect_timeout,
            ),
            (
                "client_handle_unblocks_its_recv",
                client_handle_unblocks_its_recv,
            ),
            (
                "shutdown_frees_the_name_at_once",
                shutdown_frees_the_name_at_once,
            ),
            (
                "incoming_ends_cleanly_and_connections_end_too",
                incoming_ends_cleanly_and_connections_end_too,
            ),
            (
                "a_client_of_a_shut_down_server_sees_closed",
                a_client_of_a_shut_down_server_sees_closed,
            ),
            (
                "queued_messages_are_not_returned_after_shutdown",
                queued_messages_are_not_returned_after_shutdown,
            ),
            (
                "the_name_is_free_right_after_shutdown_with_blocked_connections",
                the_name_is_free_right_after_shutdown_with_blocked_connections,
            ),
        ],
        &[
            ("client-silent", role_client_silent),
            ("server-silent", role_server_silent),
            ("hold", role_hold),
        ],
    );
}

/// How long a blocked call may take to notice a shutdown before we call it a hang.
const PROMPT: Duration = Duration::from_secs(2);

fn role_client_silent(args: Vec<String>) {
    let conn = Client::connect_timeout(args[0].as_str(), Duration::from_secs(10)).unwrap();
    tell("connected");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(conn);
}

/// `hold NAME N`: opens N connections that never send nor read a message, prints
/// `connected`, and holds them until stdin closes.
fn role_hold(args: Vec<String>) {
    let n: usize = args[1].parse().unwrap();
    let held: Vec<_> = (0..n)
        .map(|_| Client::connect_timeout(args[0].as_str(), Duration::from_secs(30)).unwrap())
        .collect();
    tell("connected");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(held);
}

/// `server-silent NAME`: accepts connections and never answers, until stdin closes.
fn role_server_silent(args: Vec<String>) {
    let server = Server::bind(args[0].as_str()).unwrap();
    support::stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    let mut held = Vec::new();
    for conn in server.incoming() {
        held.push(conn);
    }
}

/// Runs `f` (a call that blocks) on this thread and calls `stop` from another one once this
/// thread is really blocked (asleep in the kernel: see `Blockers`); returns how long `f` took
/// to notice.
fn blocked_until_shutdown<T>(stop: Shutdown, f: impl FnOnce() -> T) -> (T, Duration) {
    let blockers = Blockers::new();
    let b = blockers.clone();
    let trigger = std::thread::spawn(move || {
        b.wait_blocked(1);
        let t = Instant::now();
        stop.shutdown();
        t
    });
    blockers.entering();
    let result = f();
    let returned = Instant::now();
    let triggered = trigger.join().unwrap();
    (result, returned.saturating_duration_since(triggered))
}

fn assert_shutdown<T: std::fmt::Debug>(r: pipette::Result<T>, lag: Duration, what: &str) {
    assert!(
        matches!(r, Err(Error::Shutdown)),
        "{what}: expected Shutdown, got {r:?}"
    );
    assert!(lag < PROMPT, "{what} took {lag:?} to notice the shutdown");
}

fn shutdown_unblocks_accept() {
    let name = unique("sd-accept");
    let server = Server::bind(name.as_str()).unwrap();
    let (r, lag) = blocked_until_shutdown(server.shutdown_handle(), || server.accept());
    assert_shutdown(r, lag, "accept");
    // And every later accept fails the same way, at once.
    assert!(matches!(server.accept(), Err(Error::Shutdown)));
}

fn shutdown_unblocks_recv() {
    let name = unique("sd-recv");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-silent", &[&name]);
    child.expect("connected");
    let mut conn = server.accept().unwrap();
    let (r, lag) = blocked_until_shutdown(server.shutdown_handle(), || conn.recv());
    assert_shutdown(r, lag, "recv");
    assert!(matches!(conn.recv(), Err(Error::Shutdown)));
}

fn shutdown_unblocks_send_on_a_full_buffer() {
    let name = unique("sd-send");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-silent", &[&name]);
    child.expect("connected");
    let mut conn = server.accept().unwrap();
    let stop = server.shutdown_handle();
    let msg = vec![1u8; 256 * 1024];
    // Fill the socket buffer until a send blocks (the peer never reads), then shut down.
    let (r, lag) = blocked_until_shutdown(stop, move || -> pipette::Result<()> {
        loop {
            conn.send(&msg)?;
        }
    });
    assert_shutdown(r, lag, "send");
}

fn shutdown_unblocks_connect_timeout() {
    let name = unique("sd-connect");
    let stop = Shutdown::new();
    let opts = ClientOptions::new().shutdown(&stop);
    let (r, lag) = blocked_until_shutdown(stop, || {
        pipette::Client::connect_with(name.as_str(), &opts.clone().wait(Duration::from_secs(60)))
    });
    assert_shutdown(r, lag, "connect_timeout");
}

fn client_handle_unblocks_its_recv() {
    let name = unique("sd-client");
    let mut server = spawn("server-silent", &[&name]);
    server.expect("ready");
    let mut conn = Client::connect(name.as_str()).unwrap();
    conn.send(b"anyone?").unwrap();
    let (r, lag) = blocked_until_shutdown(conn.shutdown_handle(), || conn.recv());
    assert_shutdown(r, lag, "client recv");
}

fn shutdown_frees_the_name_at_once() {
    let name = unique("sd-free");
    let server = Server::bind(name.as_str()).unwrap();
    let path = server.name().path().to_owned();
    server.shutdown_handle().shutdown();
    // The old Server value still exists, yet the name is free (and on Unix its files gone).
    #[cfg(unix)]
    assert!(
        !path.exists(),
        "{} still exists after shutdown",
        path.display()
    );
    assert_eq!(pipette::probe(name.as_str()).unwrap(), Liveness::Absent);
    let again = Server::bind(name.as_str()).unwrap();
    drop(server); // must not remove the new server's endpoint
    assert!(
        matches!(
            pipette::probe(name.as_str()).unwrap(),
            Liveness::Live { .. }
        ),
        "dropping the old server removed the new server's endpoint"
    );
    let mut c = Client::connect(name.as_str()).unwrap();
    c.send(b"new").unwrap();
    assert_eq!(again.accept().unwrap().recv().unwrap(), b"new");
    drop(again);
    #[cfg(unix)]
    assert!(!path.exists());
    let _ = path;
}

fn incoming_ends_cleanly_and_connections_end_too() {
    let name = unique("sd-incoming");
    let server = Server::bind(name.as_str()).unwrap();
    let stop = server.shutdown_handle();
    let mut clients: Vec<_> = (0..5).map(|_| spawn("client-silent", &[&name])).collect();
    for c in &mut clients {
        c.expect("connected");
    }
    let blockers = Blockers::new();
    let b = blockers.clone();
    let worker = std::thread::spawn(move || {
        let mut handlers = Vec::new();
        for conn in server.incoming() {
            let mut conn = conn.unwrap();
            let b = b.clone();
            handlers.push(std::thread::spawn(move || {
                b.entering();
                conn.recv()
            }));
            if handlers.len() == 5 {
                break;
            }
        }
        // Back to accepting; shutdown ends the loop with None rather than an error.
        b.entering();
        let extra = server.incoming().count();
        let results: Vec<_> = handlers.into_iter().map(|h| h.join().unwrap()).collect();
        (extra, results)
    });
    // Five receivers and the accept loop, all asleep in the kernel.
    blockers.wait_blocked(6);
    let t = Instant::now();
    stop.shutdown();
    let (extra, results) = worker.join().unwrap();
    assert!(t.elapsed() < PROMPT);
    assert_eq!(extra, 0);
    for r in results {
        assert!(matches!(r, Err(Error::Shutdown)), "{r:?}");
    }
}

fn a_client_of_a_shut_down_server_sees_closed() {
    let name = unique("sd-peer");
    let server = Server::bind(name.as_str()).unwrap();
    let mut c = Client::connect(name.as_str()).unwrap();
    let _conn = server.accept().unwrap();
    server.shutdown_handle().shutdown();
    assert!(matches!(
        c.recv_timeout(Duration::from_secs(5)),
        Err(Error::Closed)
    ));
}

fn queued_messages_are_not_returned_after_shutdown() {
    let name = unique("sd-queued");
    let server = Server::bind(name.as_str()).unwrap();
    let mut c = Client::connect(name.as_str()).unwrap();
    let mut conn = server.accept().unwrap();
    for _ in 0..3 {
        c.send(b"queued").unwrap();
    }
    assert_eq!(conn.recv().unwrap(), b"queued");
    server.shutdown_handle().shutdown();
    // Two messages still sit in the socket; after shutdown every call says so instead.
    assert!(matches!(conn.recv(), Err(Error::Shutdown)));
    assert!(matches!(conn.send(b"x"), Err(Error::Shutdown)));
}

/// The promise of `Shutdown::shutdown`: when it returns, the name is free, even with many
/// connections blocked in `recv` or in `send` (on a full pipe or socket buffer) on other
/// threads. On Windows the woken threads close their pipe instances; `shutdown` must not
/// return before they have (else a new server finds the name busy). Rounds alternate between
/// 1 and 200 connections, blocked receivers and blocked senders, and print how long
/// `shutdown` took.
fn the_name_is_free_right_after_shutdown_with_blocked_connections() {
    let rounds: usize = std::env::var("PIPETTE_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let sizes = [1usize, 10, 50, 100, 200];
    let big = std::sync::Arc::new(vec![7u8; 8 << 20]);
    for round in 0..rounds {
        let n = sizes[round % sizes.len()];
        let sending = (round / sizes.len()) % 2 == 1;
        let name = unique("sd-rebind");
        let server = Server::bind(name.as_str()).unwrap();
        let stop = server.shutdown_handle();
        let mut clients = spawn("hold", &[&name, &n.to_string()]);
        let blockers = Blockers::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let mut conn = server.accept_timeout(Duration::from_secs(30)).unwrap();
            let (blockers, big) = (blockers.clone(), big.clone());
            threads.push(std::thread::spawn(move || {
                if sending {
                    // The first sends fill the buffer; one of them blocks.
                    loop {
                        blockers.entering();
                        if let Err(e) = conn.send(&big) {
                            return e;
                        }
                    }
                } else {
                    blockers.entering();
                    conn.recv().unwrap_err()
                }
            }));
        }
        clients.expect("connected");
        blockers.wait_blocked(n);
        let t = Instant::now();
        stop.shutdown();
        let took = t.elapsed();
        // Straight after shutdown returns: the name must be free.
        let again = Server::bind(name.as_str());
        assert!(
            again.is_ok(),
            "round {round} ({n} connections blocked in {}): bind right after shutdown failed: {:?}",
            if sending { "send" } else { "recv" },
            again.err()
        );
        support::note(format!(
            "shutdown with {n:>3} connections blocked in {}: {took:?}",
            if sending { "send" } else { "recv" }
        ));
        for t in threads {
            let e = t.join().unwrap();
            assert!(matches!(e, Error::Shutdown), "{e:?}");
        }
        drop(again);
        drop(server);
    }
}
