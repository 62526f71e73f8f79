//! The shared-memory transport (docs/PROTOCOL.md §10), server and client in separate
//! processes: every size class through the rings in both directions at once, checksummed;
//! the fallback to the socket when either side does not ask (or the platform cannot); a peer
//! killed mid-message and mid-wait; a peer that corrupts the ring (an adversarial client
//! written here from the protocol, mapping the memory itself); a server that hands over
//! memory that is not sealed; a shutdown while waiting; the CPU time of an idle connection.
//! With the `tokio` feature, the async API on shared memory against the blocking one in
//! another process, both ways round (`mod asynchronous`).
//!
//! The time limits only turn a hang into a failure.

mod support;

use std::time::Duration;

use pipette::{Client, ClientOptions, Connection, Error, Server, ServerOptions};
use support::{pattern, spawn_watched, unique, Watched};

fn main() {
    let everywhere: Vec<support::Test> = vec![(
        "either_side_not_asking_stays_on_the_socket",
        either_side_not_asking_stays_on_the_socket,
    )];
    // Linux and Windows (which runs under Wine here); with `tokio`, the async tests too.
    let shared: Vec<support::Test> = vec![
        (
            "every_size_class_both_ways_at_once_through_the_rings",
            every_size_class_both_ways_at_once_through_the_rings,
        ),
        (
            "no_wake_up_is_lost_around_the_spin_window",
            no_wake_up_is_lost_around_the_spin_window,
        ),
        (
            "messages_written_in_place_arrive_whole",
            messages_written_in_place_arrive_whole,
        ),
        (
            "an_in_place_send_that_finds_no_room_times_out_cleanly",
            an_in_place_send_that_finds_no_room_times_out_cleanly,
        ),
        (
            "a_peer_killed_mid_message_and_mid_wait",
            a_peer_killed_mid_message_and_mid_wait,
        ),
        (
            "a_shutdown_wakes_a_receive_asleep_on_the_ring",
            a_shutdown_wakes_a_receive_asleep_on_the_ring,
        ),
        #[cfg(windows)]
        (
            "a_client_that_corrupts_the_ring_ends_only_its_own_connection",
            windows_hostile::a_client_that_corrupts_the_ring_ends_only_its_own_connection,
        ),
    ];
    // Linux only: CPU time from /proc, and the hostile peers written against the memfd
    // layout (Windows has its own hostile client in the list above).
    let linux: Vec<support::Test> = vec![
        (
            "an_idle_connection_costs_no_cpu_after_its_spin",
            an_idle_connection_costs_no_cpu_after_its_spin,
        ),
        #[cfg(target_os = "linux")]
        (
            "a_client_that_corrupts_the_ring_ends_only_its_own_connection",
            hostile::a_client_that_corrupts_the_ring_ends_only_its_own_connection,
        ),
        #[cfg(target_os = "linux")]
        (
            "a_server_handing_over_unsealed_memory_is_refused",
            hostile::a_server_handing_over_unsealed_memory_is_refused,
        ),
    ];
    #[cfg(feature = "tokio")]
    let shared = {
        let mut shared = shared;
        shared.extend(asynchronous::TESTS.iter().copied());
        shared
    };
    let (mut tests, mut elsewhere) = (everywhere, Vec::new());
    if HAS_SHM {
        tests.extend(shared);
    } else {
        // Reported as ignored: shared memory is Linux's and Windows' only.
        elsewhere.extend(shared);
    }
    if cfg!(target_os = "linux") {
        tests.extend(linux);
    } else {
        elsewhere.extend(linux);
    }
    support::main_with_ignored(
        &tests,
        &elsewhere,
        &[
            ("echo", role_echo),
            ("hold", role_hold),
            #[cfg(feature = "tokio")]
            ("async-echo", asynchronous::role_async_echo),
            ("slow", role_slow),
        ],
    );
}

const HANG: Duration = Duration::from_secs(30);

/// Whether this platform has the shared-memory transport (the blocking API).
const HAS_SHM: bool = cfg!(any(target_os = "linux", windows));

fn shm_client(name: &str) -> Connection {
    let opts = ClientOptions::new().wait(HANG).shared_memory(true);
    Client::connect_with(name, &opts).unwrap()
}

/// How the echo server offers shared memory: `true`/`false`, or a mode of `role_echo`.
struct Transport(&'static str);

impl From<bool> for Transport {
    fn from(shm: bool) -> Transport {
        Transport(if shm { "shm" } else { "socket" })
    }
}

impl From<&'static str> for Transport {
    fn from(mode: &'static str) -> Transport {
        Transport(mode)
    }
}

/// An echo server (its own process) offering shared memory when `shm`.
fn echo(tag: &str, shm: impl Into<Transport>) -> (Watched, String) {
    let name = unique(tag);
    let server = spawn_watched("echo", &[&name, shm.into().0]);
    server.expect("ready");
    (server, name)
}

/// Receives `rounds` rounds of `sizes`-byte messages, each `pattern(round * 100 + i, len)`.
fn expect_rounds(rx: &mut pipette::RecvHalf, rounds: u64, sizes: &[usize]) {
    for round in 0..rounds {
        for (i, &len) in sizes.iter().enumerate() {
            let got = rx.recv().unwrap();
            assert!(
                got == pattern(round * 100 + i as u64, len),
                "round {round}: the {len}-byte message came back changed"
            );
        }
    }
}

fn every_size_class_both_ways_at_once_through_the_rings() {
    let (_server, name) = echo("sizes", true);
    let conn = shm_client(&name);
    assert!(conn.is_shared_memory(), "both asked");
    // Messages larger than the ring go through it in pieces while the other side reads.
    let conn = sizes_both_ways(conn, 12, &SIZES);
    assert!(conn.is_shared_memory());
    // Closing our direction (through the ring on Windows, whose pipes have no half-close):
    // the server sees the end after the last message, ends the connection, and our
    // receiving half sees that.
    let (mut tx, mut rx) = conn.split();
    tx.send(b"last").unwrap();
    tx.close().unwrap();
    assert_eq!(rx.recv().unwrap(), b"last");
    let end = rx.recv();
    assert!(matches!(end, Err(Error::Closed)), "{end:?}");
}

/// Every size class the tests send: empty, small, a header split at the ring's end sooner
/// or later, the largest buffered size, large messages read straight into their buffer, and
/// messages larger than the ring (1 MiB).
const SIZES: [usize; 9] = [0, 1, 7, 100, 4000, 8192, 70_000, 1 << 20, 3 << 20];

/// `rounds` rounds of `sizes` sent by a thread of their own while this one receives the
/// echo (`expect_rounds`); the connection, put back together.
fn sizes_both_ways(conn: Connection, rounds: u64, sizes: &'static [usize]) -> Connection {
    let (mut tx, mut rx) = conn.split();
    let sender = std::thread::spawn(move || {
        for round in 0..rounds {
            for (i, &len) in sizes.iter().enumerate() {
                tx.send(&pattern(round * 100 + i as u64, len)).unwrap();
            }
        }
        tx
    });
    expect_rounds(&mut rx, rounds, sizes);
    sender.join().unwrap().reunite(rx).unwrap()
}

/// Round trips whose pauses straddle the spin window, so that each side keeps going from
/// spinning to sleeping and back while the other writes: a lost wake-up would hang a round
/// (the limit turns that into a failure). Every strategy on the client, the server's default
/// (spin 50 us); `PIPETTE_SHM_ROUNDS` round trips each (default 1000), with a ring-filling
/// message now and then so that the producer's wait for room is crossed too.
fn no_wake_up_is_lost_around_the_spin_window() {
    use pipette::WaitStrategy;
    let rounds: u64 = std::env::var("PIPETTE_SHM_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1000);
    for strategy in [
        WaitStrategy::Block,
        WaitStrategy::Spin(Duration::from_micros(20)),
        WaitStrategy::BusySpin,
    ] {
        let (_server, name) = echo("wakeups", true);
        let opts = ClientOptions::new()
            .wait(HANG)
            .shared_memory(true)
            .wait_strategy(strategy);
        let mut conn = Client::connect_with(name.as_str(), &opts).unwrap();
        assert!(conn.is_shared_memory());
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let what = move |i| format!("{strategy:?}: round trip {i}");
        support::rounds_within(rounds, HANG, what, move |i| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // 0-99 us, around the server's 50 us spin and the client's 20 us one.
            let pause = Duration::from_micros(seed % 100);
            let len = if i % 97 == 0 {
                3 << 20
            } else {
                (seed >> 8) as usize % 200
            };
            let msg = pattern(i, len);
            conn.send(&msg).unwrap();
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            let back = conn.recv().unwrap();
            assert!(back == msg, "round {i}: the echo differs");
        });
    }
}

/// `send_with` writes straight into the ring when the message fits it whole, and through a
/// buffer otherwise (larger than the ring, or a socket connection): every size, mixed with
/// copying sends, comes back unchanged. The rings are 8 MiB here, set on both sides.
fn messages_written_in_place_arrive_whole() {
    let (_server, name) = echo("in-place", "shm-8m");
    let opts = ClientOptions::new()
        .wait(HANG)
        .shared_memory(true)
        .shared_memory_ring(8 << 20);
    let conn = Client::connect_with(name.as_str(), &opts).unwrap();
    assert!(conn.is_shared_memory());
    // The largest in-place message (ring minus header), and one past the ring.
    let sizes = [
        0usize,
        1,
        100,
        8192,
        70_000,
        1 << 20,
        3 << 20,
        (8 << 20) - 8,
        9 << 20,
    ];
    let rounds = 3u64;
    let (mut tx, mut rx) = conn.split();
    let sender = std::thread::spawn(move || {
        for round in 0..rounds {
            for (i, &len) in sizes.iter().enumerate() {
                let seq = round * 100 + i as u64;
                let msg = pattern(seq, len);
                if (round + i as u64) % 2 == 0 {
                    tx.send_with(len, |buf| buf.copy_from_slice(&msg)).unwrap();
                } else {
                    tx.send(&msg).unwrap();
                }
            }
        }
        tx
    });
    expect_rounds(&mut rx, rounds, &sizes);
    let tx = sender.join().unwrap();
    let mut conn = tx.reunite(rx).unwrap();
    // A message written in place and never filled beyond what `fill` wrote: all of it is
    // sent, exactly `len` bytes.
    conn.send_with(3, |buf| buf.copy_from_slice(b"abc"))
        .unwrap();
    assert_eq!(conn.recv().unwrap(), b"abc");
    // A panicking `fill` sends nothing; the connection goes on. (Its panic message is kept
    // off the output: it is expected.)
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let others = previous.clone();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"fill fails") {
            others(info)
        }
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conn.send_with(10, |_| panic!("fill fails")).unwrap();
    }));
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    assert!(r.is_err());
    conn.send(b"after").unwrap();
    assert_eq!(conn.recv().unwrap(), b"after");
    // On a socket connection, `send_with` goes through a buffer.
    let (_plain, plain_name) = echo("in-place-socket", "socket");
    let mut plain =
        Client::connect_with(plain_name.as_str(), &ClientOptions::new().wait(HANG)).unwrap();
    plain
        .send_with(70_000, |buf| buf.copy_from_slice(&pattern(9, 70_000)))
        .unwrap();
    assert!(plain.recv().unwrap() == pattern(9, 70_000));
    // A ring size that is not a power of two in range is refused.
    for bad in [1000usize, 3 << 20, 1 << 31] {
        let e = Client::connect_with(
            name.as_str(),
            &ClientOptions::new()
                .shared_memory(true)
                .shared_memory_ring(bad),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{bad}: {e}");
    }
}

/// A peer that reads nothing: once the ring is full, an in-place send waits for room up to
/// the write timeout, sends nothing, and leaves the connection usable.
fn an_in_place_send_that_finds_no_room_times_out_cleanly() {
    let mut server = spawn_watched("hold", &[&unique("no-room"), "stall"]);
    let name = server.line_within(HANG);
    let mut conn = shm_client(&name);
    conn.send(b"first").unwrap();
    server.expect("got 5");
    // Fill the 1 MiB ring (the server does not read any more).
    conn.set_write_timeout(Some(Duration::from_millis(100)));
    fill_the_ring_in_place(|len| conn.send_with(len, |buf| buf.fill(7)));
    // Nothing of the timed-out message went out: the server, asked to send, is answered.
    server.say("send");
    assert_eq!(conn.recv().unwrap(), b"late");
}

/// In-place sends of 64 KiB messages (with their headers) into the 1 MiB ring of a peer that
/// consumed everything before and reads nothing now, until one times out: exactly 16 fit.
fn fill_the_ring_in_place(mut send_with: impl FnMut(usize) -> pipette::Result<()>) {
    let chunk = 64 * 1024 - 8;
    let mut sent = 0;
    loop {
        match send_with(chunk) {
            Ok(()) => sent += 1,
            Err(Error::TimedOut { .. }) => break,
            Err(e) => panic!("after {sent} messages: {e}"),
        }
        assert!(sent <= 16, "the ring holds 16 of them at most");
    }
    assert_eq!(sent, 16, "16 whole messages fit");
}

/// A blocking client (asking for shared memory when `ask`) of the echo server `name` that
/// stays on the socket, and works there (`what`: the server, for messages).
fn on_the_socket(name: &str, ask: bool, what: &str) {
    let opts = ClientOptions::new().wait(HANG).shared_memory(ask);
    let mut conn = Client::connect_with(name, &opts).unwrap();
    assert!(!conn.is_shared_memory(), "{what}, client {ask}");
    for len in [0, 5, 70_000] {
        conn.send(&pattern(len as u64, len)).unwrap();
        assert_eq!(conn.recv().unwrap(), pattern(len as u64, len));
    }
}

fn either_side_not_asking_stays_on_the_socket() {
    // Server offers, client does not ask; client asks, server does not offer.
    for (server_shm, client_shm) in [(true, false), (false, true)] {
        let (_server, name) = echo("fallback", server_shm);
        on_the_socket(&name, client_shm, &format!("server {server_shm}"));
    }
    // Both ask, but where the platform cannot, the connection says so and works.
    let (_server, name) = echo("fallback", true);
    let mut conn = shm_client(&name);
    assert_eq!(conn.is_shared_memory(), HAS_SHM);
    conn.send(b"works").unwrap();
    assert_eq!(conn.recv().unwrap(), b"works");
    // Raw mode ignores the option.
    let raw = ServerOptions::new().raw(true).shared_memory(true);
    let raw_name = unique("raw");
    let raw_server = Server::bind_with(raw_name.as_str(), &raw).unwrap();
    let client = Client::connect_with(
        raw_name.as_str(),
        &ClientOptions::new().raw(true).shared_memory(true),
    )
    .unwrap();
    let accepted = raw_server.accept().unwrap();
    assert!(!client.is_shared_memory() && !accepted.is_shared_memory());
}

fn a_peer_killed_mid_message_and_mid_wait() {
    // Mid-wait: the client waits for an answer that never comes; the server dies.
    let mut server = spawn_watched("hold", &[&unique("killed"), "quiet"]);
    let name = server.line_within(HANG);
    let mut conn = shm_client(&name);
    assert!(conn.is_shared_memory());
    conn.send(b"hello").unwrap();
    assert_eq!(server.line_within(HANG), "got 5");
    let waiter = std::thread::spawn(move || conn.recv());
    std::thread::sleep(Duration::from_millis(100));
    server.kill();
    let got = support::within(HANG, "the receive after the peer died", move || {
        waiter.join().unwrap()
    });
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");

    // Mid-message: the server is part-way through a message larger than the ring when it
    // dies (the ring is full and the client has not read).
    let mut server = spawn_watched("hold", &[&unique("killed"), "flood"]);
    let name = server.line_within(HANG);
    let mut conn = shm_client(&name);
    conn.send(b"go").unwrap();
    assert_eq!(server.line_within(HANG), "got 2");
    assert_eq!(server.line_within(HANG), "flooding");
    // Let it fill the ring and block on the rest.
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    let got = support::within(HANG, "the receive of a cut message", move || conn.recv());
    assert!(
        matches!(&got, Err(Error::Protocol { message, .. }) if message.contains("in the middle of a message")),
        "a message cut by the peer's death: {got:?}"
    );
    support::note(format!("cut message: {got:?}"));
}

fn a_shutdown_wakes_a_receive_asleep_on_the_ring() {
    let server = spawn_watched("hold", &[&unique("shutdown"), "quiet"]);
    let name = server.line_within(HANG);
    let mut conn = shm_client(&name);
    conn.send(b"hello").unwrap();
    assert_eq!(server.line_within(HANG), "got 5");
    let handle = conn.shutdown_handle();
    let waiter = std::thread::spawn(move || conn.recv());
    // Well past the spin window: asleep on the eventfd.
    std::thread::sleep(Duration::from_millis(100));
    handle.shutdown();
    let got = support::within(HANG, "the receive after shutdown", move || {
        waiter.join().unwrap()
    });
    assert!(matches!(got, Err(Error::Shutdown)), "{got:?}");
}

fn an_idle_connection_costs_no_cpu_after_its_spin() {
    let mut server = spawn_watched("hold", &[&unique("idle"), "quiet"]);
    let name = server.line_within(HANG);
    let mut conn = shm_client(&name);
    conn.send(b"hello").unwrap();
    assert_eq!(server.line_within(HANG), "got 5");
    // The server now waits for a message that does not come (default: spin 50 us, then
    // sleep); so do we, for its answer.
    let before = support::cpu_time(Some(server.id()));
    // This thread's own time (the other tests of this process run meanwhile).
    let mine = support::cpu_time(None);
    let idle = Duration::from_millis(1500);
    assert!(matches!(
        conn.recv_timeout(idle),
        Err(Error::TimedOut { .. })
    ));
    let used_here = support::cpu_time(None) - mine;
    let used = support::cpu_time(Some(server.id())) - before;
    assert!(
        used <= Duration::from_millis(100),
        "the idle server used {used:?} of CPU in {idle:?}"
    );
    assert!(
        used_here <= Duration::from_millis(200),
        "the waiting client used {used_here:?} of CPU in {idle:?}"
    );
    server.say("send");
    assert_eq!(conn.recv().unwrap(), b"late");
    support::note(format!(
        "idle for {idle:?}: server {used:?}, client {used_here:?}"
    ));
}

/// `echo NAME shm|socket`: an echo server (a thread per connection) offering shared memory
/// or not; prints `ready`, serves until stdin closes; a connection's failure is printed as
/// `end KIND MESSAGE`.
fn role_echo(args: Vec<String>) {
    // `shm`, `socket`, or `shm-8m` (shared memory with an 8 MiB ring each way).
    let mut opts = ServerOptions::new().shared_memory(args[1].starts_with("shm"));
    if args[1] == "shm-8m" {
        opts = opts.shared_memory_ring(8 << 20);
    }
    let server = Server::bind_with(args[0].as_str(), &opts).unwrap();
    support::stop_on_stdin_close(server.shutdown_handle());
    support::tell("ready");
    support::echo_each(server, |e| support::tell(&format!("end {e}")));
}

/// `hold NAME quiet|stall|flood`: accepts one shared-memory connection, receives one message
/// (`got LEN`), then either waits quietly for one more message (a `send` line on stdin makes
/// it send `late`), or does the same but reads nothing more (`stall`), or sends 3 MiB
/// messages until it is killed (`flooding` once the first is about to go).
fn role_hold(args: Vec<String>) {
    let opts = ServerOptions::new().shared_memory(true);
    let server = Server::bind_with(args[0].as_str(), &opts).unwrap();
    support::tell(&args[0]);
    let conn = server.accept().unwrap();
    let (mut tx, mut rx) = conn.split();
    let first = rx.recv().unwrap();
    support::tell(&format!("got {}", first.len()));
    if args[1] == "flood" {
        let big = pattern(1, 3 << 20);
        support::tell("flooding");
        loop {
            if tx.send(&big).is_err() {
                return;
            }
        }
    }
    std::thread::spawn(move || {
        while let Some(line) = support::read_stdin_line() {
            if line == "send" {
                tx.send(b"late").unwrap();
            }
        }
        std::process::exit(0);
    });
    if args[1] == "stall" {
        // Reads nothing more (until stdin closes and the thread above exits).
        loop {
            std::thread::park();
        }
    }
    let _ = rx.recv();
}

/// `slow NAME`: accepts one shared-memory connection, receives one message (`got LEN`), then
/// obeys stdin: `close` ends its sending direction (`closed`), `read N` receives N messages
/// (`read N`, or `end ERROR` when a receive fails). Exits when stdin closes.
fn role_slow(args: Vec<String>) {
    let opts = ServerOptions::new().shared_memory(true);
    let server = Server::bind_with(args[0].as_str(), &opts).unwrap();
    support::tell(&args[0]);
    let conn = server.accept().unwrap();
    let (tx, mut rx) = conn.split();
    let first = rx.recv().unwrap();
    support::tell(&format!("got {}", first.len()));
    let mut tx = Some(tx);
    while let Some(line) = support::read_stdin_line() {
        if line == "close" {
            tx.take().unwrap().close().unwrap();
            support::tell("closed");
        } else if let Some(n) = line.strip_prefix("read ") {
            let n: usize = n.parse().unwrap();
            for _ in 0..n {
                if let Err(e) = rx.recv() {
                    support::tell(&format!("end {e}"));
                    return;
                }
            }
            support::tell(&format!("read {n}"));
        }
    }
}

/// Peers that break the protocol on purpose, written from docs/PROTOCOL.md with raw system
/// calls.
#[cfg(target_os = "linux")]
mod hostile {
    use std::io::Read;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Duration;

    use pipette::frame::{Reply, Status, FEATURE_SHARED_MEMORY, REPLY_LEN};
    use pipette::proto::ring::{Layout, Word};
    use pipette::{Client, ClientOptions, Error, Name};
    use rustix::net::{
        RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
        SendAncillaryMessage, SendFlags,
    };

    use super::{echo, shm_client, HANG};

    pub fn a_client_that_corrupts_the_ring_ends_only_its_own_connection() {
        let (server, name) = echo("corrupt", true);
        // A well-behaved shared-memory client of the same server.
        let mut good = shm_client(&name);
        assert!(good.is_shared_memory());
        good.send(b"before").unwrap();
        assert_eq!(good.recv().unwrap(), b"before");

        // The hostile one, written from docs/PROTOCOL.md: its own memory (a 4 KiB ring,
        // sealed against resizing only), handed over with a hello offering shared memory.
        let layout = Layout::new(4096).unwrap();
        let memfd = rustix::fs::memfd_create(
            "hostile",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        rustix::fs::ftruncate(&memfd, layout.region_len() as u64).unwrap();
        rustix::io::pwrite(&memfd, &layout.header(), 0).unwrap();
        rustix::fs::fcntl_add_seals(
            &memfd,
            rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW,
        )
        .unwrap();
        let path = Name::new(&name).unwrap().path().to_owned();
        let s = UnixStream::connect(&path).unwrap();
        let hello = pipette::proto::hello_offering(1 << 20, FEATURE_SHARED_MEMORY);
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let mine = [memfd.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&mine)));
        rustix::net::sendmsg(
            &s,
            &[std::io::IoSlice::new(&hello)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        let mut reply = [0u8; REPLY_LEN];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut reply)];
        let got = rustix::net::recvmsg(&s, &mut iov, &mut control, RecvFlags::empty()).unwrap();
        assert_eq!(got.bytes, REPLY_LEN);
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(r) = m {
                fds.extend(r);
            }
        }
        let r = Reply::decode(&reply).unwrap();
        assert_eq!((r.status, r.features), (Status::Accepted, 1));
        assert_eq!(fds.len(), 5, "the server's memory and four eventfds");
        // The server's memory is out of reach: it cannot be mapped writable or written.
        // SAFETY: a mapping request that must fail; nothing is mapped on failure.
        let writable = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fds[0],
                0,
            )
        };
        assert_eq!(writable.err(), Some(rustix::io::Errno::PERM));
        assert!(rustix::io::pwrite(&fds[0], &[0xff; 8], 64).is_err());
        // What it can corrupt is its own: claim that far more was written into its ring
        // than it can hold, and wake the server.
        let at = Layout::word_offset(Word::Head) as u64;
        rustix::io::pwrite(&memfd, &(1u64 << 40).to_le_bytes(), at).unwrap();
        rustix::io::write(&fds[1], &1u64.to_ne_bytes()).unwrap();
        let end = server.line_within(HANG);
        assert!(
            end.contains("corrupted shared-memory ring"),
            "the server reports the corruption, got {end:?}"
        );
        // The server closed that connection; its other client goes on.
        let mut rest = Vec::new();
        let _ = (&s).read_to_end(&mut rest);
        good.send(b"after").unwrap();
        assert_eq!(good.recv().unwrap(), b"after");
        let mut fresh = shm_client(&name);
        fresh.send(b"fresh").unwrap();
        assert_eq!(fresh.recv().unwrap(), b"fresh");
    }

    pub fn a_server_handing_over_unsealed_memory_is_refused() {
        let dir = std::env::temp_dir().join(super::unique("unsealed"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut hello = [0u8; 16];
            s.read_exact(&mut hello).unwrap();
            let memfd =
                rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
            let layout = Layout::new(4096).unwrap();
            rustix::fs::ftruncate(&memfd, layout.region_len() as u64).unwrap();
            let events: Vec<OwnedFd> = (0..4)
                .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap())
                .collect();
            let mut all = vec![memfd.as_fd()];
            all.extend(events.iter().map(|e| e.as_fd()));
            let reply = Reply {
                features: 1,
                ..Reply::accept(1, 1 << 20)
            }
            .encode();
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(5))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            assert!(control.push(SendAncillaryMessage::ScmRights(&all)));
            rustix::net::sendmsg(
                &s,
                &[std::io::IoSlice::new(&reply)],
                &mut control,
                SendFlags::empty(),
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let got = Client::connect_with(
            path.to_str().unwrap(),
            &ClientOptions::new().wait(HANG).shared_memory(true),
        );
        match got {
            Err(Error::Protocol { message, .. }) => {
                assert!(message.contains("sealed"), "{message}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A hostile client on Windows, written from docs/PROTOCOL.md §10 ("Windows").
#[cfg(windows)]
mod windows_hostile {
    use std::io::{Read, Write};
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

    use pipette::frame::{Reply, Status, FEATURE_SHARED_MEMORY, REPLY_LEN};
    use pipette::proto::ring::{Layout, Word};
    use pipette::Name;
    use windows_sys::Win32::Foundation::{DuplicateHandle, HANDLE};
    use windows_sys::Win32::System::Memory::{
        MapViewOfFile, UnmapViewOfFile, FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_MAPPED_VIEW_ADDRESS,
    };
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, SetEvent};

    use super::{echo, shm_client, HANG};

    /// Whether we run under Wine (which does not enforce object DACLs).
    fn on_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        let ntdll: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
        // SAFETY: NUL-terminated strings; ntdll is always loaded.
        unsafe {
            let m = GetModuleHandleW(ntdll.as_ptr());
            !m.is_null() && GetProcAddress(m, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }

    /// Maps all of `section` with `access`; null when refused.
    fn map(section: &OwnedHandle, access: u32) -> *mut u8 {
        // SAFETY: an open handle; size 0 maps the whole section (or fails).
        unsafe { MapViewOfFile(section.as_raw_handle(), access, 0, 0, 0) }
            .Value
            .cast()
    }

    pub fn a_client_that_corrupts_the_ring_ends_only_its_own_connection() {
        let (server, name) = echo("corrupt", true);
        let mut good = shm_client(&name);
        assert!(good.is_shared_memory());
        good.send(b"before").unwrap();
        assert_eq!(good.recv().unwrap(), b"before");

        // The hostile client: a hello offering shared memory, then the reply and the six
        // handle values the server duplicated into this process.
        let path = Name::new(&name).unwrap().path().to_owned();
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        pipe.write_all(&pipette::proto::hello_offering(
            1 << 20,
            FEATURE_SHARED_MEMORY,
        ))
        .unwrap();
        let mut reply = [0u8; REPLY_LEN];
        pipe.read_exact(&mut reply).unwrap();
        let r = Reply::decode(&reply).unwrap();
        assert_eq!((r.status, r.features), (Status::Accepted, 1));
        let mut values = [0u8; 48];
        pipe.read_exact(&mut values).unwrap();
        let handles: Vec<OwnedHandle> = values
            .chunks_exact(8)
            .map(|v| {
                let v = u64::from_le_bytes(v.try_into().unwrap());
                // SAFETY: the server duplicated these into this process for us.
                unsafe { OwnedHandle::from_raw_handle(v as HANDLE) }
            })
            .collect();
        // The server's memory is out of reach: it maps read-only, not writable, and its
        // handle cannot be duplicated into a writable one (the section's DACL is empty;
        // Wine does not check that).
        let view = map(&handles[0], FILE_MAP_READ);
        assert!(!view.is_null(), "the server's ring maps read-only");
        // SAFETY: the view just mapped.
        unsafe { UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS { Value: view.cast() }) };
        assert!(map(&handles[0], FILE_MAP_WRITE).is_null());
        let mut upgraded: HANDLE = std::ptr::null_mut();
        // SAFETY: duplicating our own handle within our process; `upgraded` is valid for
        // writes.
        let ok = unsafe {
            DuplicateHandle(
                GetCurrentProcess(),
                handles[0].as_raw_handle(),
                GetCurrentProcess(),
                &mut upgraded,
                FILE_MAP_READ | FILE_MAP_WRITE,
                0,
                0,
            )
        };
        if ok != 0 {
            // SAFETY: a fresh handle of ours.
            let upgraded = unsafe { OwnedHandle::from_raw_handle(upgraded) };
            let writable = !map(&upgraded, FILE_MAP_WRITE).is_null();
            assert!(
                on_wine(),
                "a read-only section handle was duplicated with write access (mapping writable: {writable})"
            );
            super::support::note(format!(
                "Wine let a read-only section handle be duplicated with write access (mapping writable: {writable}): it does not enforce the empty DACL"
            ));
        }
        // What it can corrupt is its own ring: claim that far more was written into it
        // than it holds, and wake the server.
        let own = map(&handles[1], FILE_MAP_READ | FILE_MAP_WRITE);
        assert!(!own.is_null());
        let at = Layout::word_offset(Word::Head);
        // SAFETY: the head word of our own ring's header page, in the view just mapped.
        unsafe {
            own.add(at).cast::<u64>().write_volatile(1u64 << 40);
            SetEvent(handles[2].as_raw_handle());
        }
        let end = server.line_within(HANG);
        assert!(
            end.contains("corrupted shared-memory ring"),
            "the server reports the corruption, got {end:?}"
        );
        // The server closed that connection; its other client goes on.
        let mut rest = Vec::new();
        let _ = pipe.read_to_end(&mut rest);
        good.send(b"after").unwrap();
        assert_eq!(good.recv().unwrap(), b"after");
        let mut fresh = shm_client(&name);
        fresh.send(b"fresh").unwrap();
        assert_eq!(fresh.recv().unwrap(), b"fresh");
        drop(handles);
    }
}

/// The async API (`pipette::tokio`) on shared memory, against the blocking one in another
/// process, both ways round.
#[cfg(feature = "tokio")]
mod asynchronous {
    use std::time::{Duration, Instant};

    use pipette::tokio::{
        Client as AsyncClient, Connection as AsyncConnection, Server as AsyncServer,
    };
    use pipette::{ClientOptions, Error, ServerOptions};

    use super::support::{self, pattern, spawn_watched, unique};
    use super::{echo, HANG, SIZES};

    pub const TESTS: &[support::Test] = &[
        (
            "async_client_every_size_class_both_ways_through_the_rings",
            async_client_every_size_class_both_ways_through_the_rings,
        ),
        (
            "async_server_and_a_blocking_client_every_size_class_both_ways",
            async_server_and_a_blocking_client_every_size_class_both_ways,
        ),
        (
            "async_either_side_not_asking_stays_on_the_socket",
            async_either_side_not_asking_stays_on_the_socket,
        ),
        (
            "async_a_peer_killed_mid_wait_and_mid_message",
            async_a_peer_killed_mid_wait_and_mid_message,
        ),
        (
            "async_a_shutdown_wakes_a_receive_asleep_on_the_ring",
            async_a_shutdown_wakes_a_receive_asleep_on_the_ring,
        ),
        (
            "async_a_producer_on_a_full_ring_is_woken_and_idles_through_a_half_close",
            async_a_producer_on_a_full_ring_is_woken_and_idles_through_a_half_close,
        ),
        (
            "async_a_send_given_up_part_way_cuts_the_message",
            async_a_send_given_up_part_way_cuts_the_message,
        ),
        (
            "async_a_shutdown_wakes_a_producer_on_a_full_ring",
            async_a_shutdown_wakes_a_producer_on_a_full_ring,
        ),
        (
            "async_messages_written_in_place_arrive_whole",
            async_messages_written_in_place_arrive_whole,
        ),
        (
            "async_an_in_place_send_that_finds_no_room_times_out_cleanly",
            async_an_in_place_send_that_finds_no_room_times_out_cleanly,
        ),
    ];

    async fn shm_client(name: &str) -> AsyncConnection {
        let opts = ClientOptions::new().wait(HANG).shared_memory(true);
        AsyncClient::connect_with(name, &opts).await.unwrap()
    }

    /// `rounds` rounds of `sizes`, sent by a task of their own while this one receives the
    /// echo, checksummed; every other one written in place (`send_with`) when `in_place`.
    /// The connection, put back together.
    async fn both_ways(
        conn: AsyncConnection,
        rounds: u64,
        sizes: &'static [usize],
        in_place: bool,
    ) -> AsyncConnection {
        let (mut tx, mut rx) = conn.split();
        let sender = tokio::spawn(async move {
            for round in 0..rounds {
                for (i, &len) in sizes.iter().enumerate() {
                    let msg = pattern(round * 100 + i as u64, len);
                    if in_place && (round + i as u64) % 2 == 0 {
                        tx.send_with(len, |buf| buf.copy_from_slice(&msg))
                            .await
                            .unwrap();
                    } else {
                        tx.send(&msg).await.unwrap();
                    }
                }
            }
            tx
        });
        for round in 0..rounds {
            for (i, &len) in sizes.iter().enumerate() {
                let got = rx.recv().await.unwrap();
                assert!(
                    got == pattern(round * 100 + i as u64, len),
                    "round {round}: the {len}-byte message came back changed"
                );
            }
        }
        sender.await.unwrap().reunite(rx).unwrap()
    }

    fn async_client_every_size_class_both_ways_through_the_rings() {
        let (_server, name) = echo("async-sizes", true);
        support::runtime().block_on(async {
            let conn = shm_client(&name).await;
            assert!(conn.is_shared_memory(), "both asked");
            let conn = tokio::time::timeout(HANG, both_ways(conn, 8, &SIZES, false))
                .await
                .unwrap();
            assert!(conn.is_shared_memory());
        });
    }

    /// An async echo server (its own process) offering shared memory or not.
    fn async_echo(tag: &str, shm: bool) -> (support::Watched, String) {
        let name = unique(tag);
        let server = spawn_watched("async-echo", &[&name, if shm { "shm" } else { "socket" }]);
        server.expect("ready");
        (server, name)
    }

    fn async_server_and_a_blocking_client_every_size_class_both_ways() {
        let (_server, name) = async_echo("async-server-sizes", true);
        let conn = super::shm_client(&name);
        assert!(conn.is_shared_memory());
        let conn = super::sizes_both_ways(conn, 8, &SIZES);
        assert!(conn.is_shared_memory());
    }

    fn async_either_side_not_asking_stays_on_the_socket() {
        // An async client: the blocking server offers and it does not ask, or it asks and
        // the server does not offer; then an async server and a blocking client, the same.
        let rt = support::runtime();
        for (server_shm, client_shm) in [(true, false), (false, true)] {
            let (_server, name) = echo("async-fallback", server_shm);
            rt.block_on(async {
                let opts = ClientOptions::new().wait(HANG).shared_memory(client_shm);
                let mut conn = AsyncClient::connect_with(name.as_str(), &opts)
                    .await
                    .unwrap();
                assert!(
                    !conn.is_shared_memory(),
                    "server {server_shm}, client {client_shm}"
                );
                for len in [0, 5, 70_000] {
                    conn.send(&pattern(len as u64, len)).await.unwrap();
                    assert_eq!(conn.recv().await.unwrap(), pattern(len as u64, len));
                }
            });
            let (_server, name) = async_echo("async-fallback-server", server_shm);
            super::on_the_socket(&name, client_shm, &format!("async server {server_shm}"));
        }
        // Both async, both asking: shared memory, and no byte stream from it.
        rt.block_on(async {
            let name = unique("async-both");
            let server =
                AsyncServer::bind_with(name.as_str(), &ServerOptions::new().shared_memory(true))
                    .unwrap();
            // A client asking for shared memory waits for the reply: accept meanwhile.
            let (mut client, accepted) = tokio::join!(shm_client(&name), server.accept());
            let mut accepted = accepted.unwrap();
            assert!(client.is_shared_memory() && accepted.is_shared_memory());
            client.send(b"ping").await.unwrap();
            assert_eq!(&accepted.recv().await.unwrap()[..], b"ping");
            let e = client.into_stream().await.unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
            // A spinning wait strategy stays refused.
            let spin = ClientOptions::new()
                .shared_memory(true)
                .wait_strategy(pipette::WaitStrategy::BusySpin);
            let e = AsyncClient::connect_with(name.as_str(), &spin)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        });
    }

    fn async_a_peer_killed_mid_wait_and_mid_message() {
        let rt = support::runtime();
        // Mid-wait: asleep on the ring when the server dies.
        let mut server = spawn_watched("hold", &[&unique("async-killed"), "quiet"]);
        let name = server.line_within(HANG);
        let mut conn = rt.block_on(shm_client(&name));
        assert!(conn.is_shared_memory());
        rt.block_on(conn.send(b"hello")).unwrap();
        assert_eq!(server.line_within(HANG), "got 5");
        let waiter = rt.spawn(async move { conn.recv().await });
        std::thread::sleep(Duration::from_millis(100));
        server.kill();
        let got = rt.block_on(async { tokio::time::timeout(HANG, waiter).await.unwrap() });
        assert!(matches!(got, Ok(Err(Error::Closed))), "{got:?}");

        // Mid-message: the server dies part-way through a message larger than the ring.
        let mut server = spawn_watched("hold", &[&unique("async-killed"), "flood"]);
        let name = server.line_within(HANG);
        let mut conn = rt.block_on(shm_client(&name));
        rt.block_on(conn.send(b"go")).unwrap();
        assert_eq!(server.line_within(HANG), "got 2");
        assert_eq!(server.line_within(HANG), "flooding");
        // Let it fill the ring and block on the rest.
        std::thread::sleep(Duration::from_millis(200));
        server.kill();
        let got = rt.block_on(async { tokio::time::timeout(HANG, conn.recv()).await.unwrap() });
        assert!(
            matches!(&got, Err(Error::Protocol { message, .. }) if message.contains("in the middle of a message")),
            "a message cut by the peer's death: {got:?}"
        );
    }

    fn async_a_shutdown_wakes_a_receive_asleep_on_the_ring() {
        let server = spawn_watched("hold", &[&unique("async-shutdown"), "quiet"]);
        let name = server.line_within(HANG);
        support::runtime().block_on(async {
            let mut conn = shm_client(&name).await;
            conn.send(b"hello").await.unwrap();
            assert_eq!(server.line_within(HANG), "got 5");
            let handle = conn.shutdown_handle();
            let waiter = tokio::spawn(async move { conn.recv().await });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let start = Instant::now();
            handle.shutdown();
            let got = tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("the shutdown woke the receive within a second")
                .unwrap();
            assert!(matches!(got, Err(Error::Shutdown)), "{got:?}");
            support::note(format!("woken by the shutdown after {:?}", start.elapsed()));
        });
    }

    /// A producer asleep on a full ring: the peer half-closing (it may still read) neither
    /// ends the wait nor makes it spin (this thread's CPU over 500 ms), and the peer reading
    /// wakes it.
    fn async_a_producer_on_a_full_ring_is_woken_and_idles_through_a_half_close() {
        let mut server = spawn_watched("slow", &[&unique("async-full")]);
        let name = server.line_within(HANG);
        // One thread runs everything of this connection: its CPU time is the producer's.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut conn = shm_client(&name).await;
            conn.send(b"go").await.unwrap();
            assert_eq!(server.line_within(HANG), "got 2");
            // The 1 MiB ring holds 16 of these; the 17th waits for room.
            let chunk = vec![5u8; 64 * 1024 - 8];
            let producer = tokio::spawn(async move {
                for _ in 0..20 {
                    conn.send(&chunk).await?;
                }
                Ok::<_, Error>(conn)
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!producer.is_finished(), "the ring is full");
            server.say("close");
            assert_eq!(server.line_within(HANG), "closed");
            // (CPU time from /proc: Linux only.)
            let linux = cfg!(target_os = "linux");
            let before = if linux {
                support::cpu_time(None)
            } else {
                Duration::ZERO
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let used = if linux {
                support::cpu_time(None) - before
            } else {
                Duration::ZERO
            };
            assert!(
                !producer.is_finished(),
                "a half-close does not end the wait"
            );
            assert!(
                used <= Duration::from_millis(100),
                "the producer waiting through a half-close used {used:?} of CPU in 500 ms"
            );
            server.say("read 20");
            let conn = tokio::time::timeout(HANG, producer)
                .await
                .expect("the consumer's reads woke the producer")
                .unwrap()
                .unwrap();
            assert_eq!(server.line_within(HANG), "read 20");
            // The peer's sending direction ended: a receive says so.
            let mut conn = conn;
            assert!(matches!(conn.recv().await, Err(Error::Closed)));
            support::note(format!("half-closed wait: {used:?} of CPU in 500 ms"));
        });
    }

    /// A send that gives up part-way (its timeout) cuts the message: later sends fail.
    fn async_a_send_given_up_part_way_cuts_the_message() {
        let mut server = spawn_watched("slow", &[&unique("async-cut")]);
        let name = server.line_within(HANG);
        support::runtime().block_on(async {
            let mut conn = shm_client(&name).await;
            conn.send(b"go").await.unwrap();
            assert_eq!(server.line_within(HANG), "got 2");
            let big = pattern(3, 3 << 20);
            let e = conn
                .send_timeout(&big, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(e, Error::TimedOut { .. }), "{e}");
            let e = conn.send(b"after").await.unwrap_err();
            assert!(matches!(e, Error::Broken(_)), "{e}");
        });
        // The server's receive of the cut message fails: it never gets a second message.
        server.say("read 1");
        let end = server.line_within(HANG);
        assert!(end.contains("in the middle of a message"), "{end}");
    }

    /// A producer asleep on a full ring (the peer reads nothing) ends with `Shutdown` within a
    /// second of the handle's `shutdown()` from another task.
    fn async_a_shutdown_wakes_a_producer_on_a_full_ring() {
        let server = spawn_watched("slow", &[&unique("async-full-shutdown")]);
        let name = server.line_within(HANG);
        support::runtime().block_on(async {
            let mut conn = shm_client(&name).await;
            conn.send(b"go").await.unwrap();
            assert_eq!(server.line_within(HANG), "got 2");
            let handle = conn.shutdown_handle();
            let producer = tokio::spawn(async move {
                let big = pattern(4, 3 << 20);
                conn.send(&big).await
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!producer.is_finished(), "the ring is full");
            handle.shutdown();
            let got = tokio::time::timeout(Duration::from_secs(1), producer)
                .await
                .expect("the shutdown woke the producer within a second")
                .unwrap();
            assert!(matches!(got, Err(Error::Shutdown)), "{got:?}");
        });
    }

    /// The async `send_with`, in place (8 MiB rings) and through a buffer (larger than the
    /// ring, or on a socket), mixed with copying sends, against a blocking echo server.
    fn async_messages_written_in_place_arrive_whole() {
        let (_server, name) = echo("async-in-place", "shm-8m");
        let (_plain, plain_name) = echo("async-in-place-socket", "socket");
        support::runtime().block_on(async {
            let opts = ClientOptions::new()
                .wait(HANG)
                .shared_memory(true)
                .shared_memory_ring(8 << 20);
            let conn = AsyncClient::connect_with(name.as_str(), &opts)
                .await
                .unwrap();
            assert!(conn.is_shared_memory());
            const IN_PLACE: [usize; 7] = [0, 1, 100, 70_000, 3 << 20, (8 << 20) - 8, 9 << 20];
            let conn = both_ways(conn, 3, &IN_PLACE, true).await;
            assert!(conn.is_shared_memory());
            let mut plain = AsyncClient::connect_with(plain_name.as_str(), &ClientOptions::new())
                .await
                .unwrap();
            plain
                .send_with(70_000, |buf| buf.copy_from_slice(&pattern(9, 70_000)))
                .await
                .unwrap();
            assert!(plain.recv().await.unwrap() == pattern(9, 70_000));
        });
    }

    /// A peer that reads nothing: once the ring is full, an async in-place send waits for
    /// room up to the write timeout, sends nothing, and leaves the connection usable.
    fn async_an_in_place_send_that_finds_no_room_times_out_cleanly() {
        let mut server = spawn_watched("hold", &[&unique("async-no-room"), "stall"]);
        let name = server.line_within(HANG);
        let rt = support::runtime();
        let mut conn = rt.block_on(shm_client(&name));
        rt.block_on(conn.send(b"first")).unwrap();
        server.expect("got 5");
        conn.set_write_timeout(Some(Duration::from_millis(100)));
        super::fill_the_ring_in_place(|len| rt.block_on(conn.send_with(len, |buf| buf.fill(7))));
        server.say("send");
        let late = rt.block_on(conn.recv()).unwrap();
        assert_eq!(&late[..], b"late");
    }

    /// `async-echo NAME shm|socket`: an async echo server offering shared memory or not;
    /// prints `ready`, serves until stdin closes.
    pub fn role_async_echo(args: Vec<String>) {
        let opts = ServerOptions::new().shared_memory(args[1] == "shm");
        support::runtime().block_on(async {
            let server = AsyncServer::bind_with(args[0].as_str(), &opts).unwrap();
            support::stop_on_stdin_close(server.shutdown_handle());
            support::tell("ready");
            while let Ok(mut conn) = server.accept().await {
                tokio::spawn(async move {
                    while let Ok(msg) = conn.recv().await {
                        if conn.send(&msg).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
}
