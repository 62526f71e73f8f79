//! Messages between processes: round trips, order, concurrency, sizes, limits, timeouts.

mod support;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use pipette::{Client, ClientOptions, Error, Server, ServerOptions};
use support::{pattern, spawn, tell, unique, within};

fn main() {
    support::main(
        &[
            ("round_trip_between_processes", round_trip_between_processes),
            (
                "ten_thousand_messages_arrive_in_order",
                ten_thousand_messages_arrive_in_order,
            ),
            (
                "closing_the_send_half_keeps_the_receive_half",
                closing_the_send_half_keeps_the_receive_half,
            ),
            (
                "the_end_header_is_an_orderly_close_everywhere",
                the_end_header_is_an_orderly_close_everywhere,
            ),
            ("hundred_concurrent_clients", hundred_concurrent_clients),
            (
                "every_size_around_the_buffer_edges_crosses_whole",
                every_size_around_the_buffer_edges_crosses_whole,
            ),
            #[cfg(unix)]
            (
                "an_event_loop_drives_a_server_and_its_connections",
                an_event_loop_drives_a_server_and_its_connections,
            ),
            (
                "sizes_up_to_the_limit_and_one_past",
                sizes_up_to_the_limit_and_one_past,
            ),
            (
                "a_lying_header_is_refused_without_hurting_others",
                a_lying_header_is_refused_without_hurting_others,
            ),
            (
                "peer_identity_names_the_other_process",
                peer_identity_names_the_other_process,
            ),
            (
                "recv_timeout_expires_and_the_connection_stays_usable",
                recv_timeout_expires_and_the_connection_stays_usable,
            ),
            (
                "send_timeout_expires_on_a_peer_that_never_reads",
                send_timeout_expires_on_a_peer_that_never_reads,
            ),
            ("accept_and_connect_timeouts", accept_and_connect_timeouts),
            (
                "connect_timeout_waits_for_a_server_that_appears_later",
                connect_timeout_waits_for_a_server_that_appears_later,
            ),
            (
                "recv_string_rejects_invalid_utf8",
                recv_string_rejects_invalid_utf8,
            ),
            (
                "peer_closing_is_reported_as_closed_after_its_messages",
                peer_closing_is_reported_as_closed_after_its_messages,
            ),
            (
                "stream_mode_after_handshake_is_plain_bytes",
                stream_mode_after_handshake_is_plain_bytes,
            ),
            (
                "an_unspeakable_version_is_refused_with_the_reason",
                an_unspeakable_version_is_refused_with_the_reason,
            ),
        ],
        &[
            ("echo", support::role_echo),
            ("client-silent", role_client_silent),
            ("client-send-then-close", role_client_send_then_close),
            ("server-late", role_server_late),
            ("client-stream", role_client_stream),
        ],
    );
}

/// `client-silent NAME`: connects, prints `connected`, then neither sends nor reads until
/// its stdin closes.
fn role_client_silent(args: Vec<String>) {
    let conn = Client::connect_timeout(args[0].as_str(), Duration::from_secs(10)).unwrap();
    tell("connected");
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    drop(conn);
}

/// `client-send-then-close NAME N`: sends N numbered messages, closes in order, exits.
fn role_client_send_then_close(args: Vec<String>) {
    let mut conn = Client::connect_timeout(args[0].as_str(), Duration::from_secs(10)).unwrap();
    let n: u64 = args[1].parse().unwrap();
    for i in 0..n {
        conn.send(&i.to_le_bytes()).unwrap();
    }
    conn.close().unwrap();
}

/// `server-late NAME`: waits 300 ms, then binds and answers one message.
fn role_server_late(args: Vec<String>) {
    std::thread::sleep(Duration::from_millis(300));
    let server = Server::bind(args[0].as_str()).unwrap();
    let mut conn = server.accept().unwrap();
    let m = conn.recv().unwrap();
    conn.send(&m).unwrap();
    let _ = conn.recv();
}

/// `client-stream NAME`: connects framed, turns the connection into a byte stream, writes
/// "raw bytes", then reads the server's bytes until end of stream and prints them.
fn role_client_stream(args: Vec<String>) {
    let conn = Client::connect_timeout(args[0].as_str(), Duration::from_secs(10)).unwrap();
    let mut s = conn.into_stream().unwrap();
    s.write_all(b"raw bytes").unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    tell(&got);
}

fn echo_server(name: &str) -> support::Child {
    let mut child = spawn("echo", &[name]);
    child.expect("ready");
    child
}

fn round_trip_between_processes() {
    let name = unique("rt");
    let _server = echo_server(&name);
    let mut c = Client::connect(name.as_str()).unwrap();
    c.send(b"hello").unwrap();
    assert_eq!(c.recv().unwrap(), b"hello");
    c.send_str("and again").unwrap();
    assert_eq!(c.recv_string().unwrap(), "and again");
}

fn ten_thousand_messages_arrive_in_order() {
    const N: u64 = 10_000;
    let name = unique("order");
    let _server = echo_server(&name);
    let conn = Client::connect(name.as_str()).unwrap();
    let (mut tx, mut rx) = conn.split();
    // Send from one thread while receiving on another: the split halves work concurrently.
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(&pattern(i, (i % 200) as usize)).unwrap();
        }
        tx
    });
    let mut buf = Vec::new();
    for i in 0..N {
        let n = rx.recv_into(&mut buf).unwrap();
        assert_eq!(n, (i % 200) as usize);
        assert_eq!(buf, pattern(i, n), "message {i} out of order or corrupted");
    }
    sender.join().unwrap();
}

/// `SendHalf::close` ends only the sending direction, on every platform: the server (another
/// process) sees `Closed` after the last message, and every echo still arrives. (Windows pipes
/// have no half-close; pipette says "end of stream" in-band there, see PROTOCOL.md §4.)
fn closing_the_send_half_keeps_the_receive_half() {
    const N: u64 = 300;
    let name = unique("half");
    let _server = echo_server(&name);
    let (mut tx, mut rx) = Client::connect(name.as_str()).unwrap().split();
    // The sender closes right after its last message, while echoes are still in flight (it
    // runs beside the receiver: sending everything first could fill both directions'
    // buffers against an echo server and deadlock).
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            tx.send(&pattern(i, 1000 + i as usize)).unwrap();
        }
        tx.close().unwrap();
    });
    rx.set_read_timeout(Some(Duration::from_secs(10)));
    for i in 0..N {
        let got = rx
            .recv()
            .unwrap_or_else(|e| panic!("echo {i} after close: {e}"));
        assert_eq!(got, pattern(i, 1000 + i as usize), "echo {i}");
    }
    sender.join().unwrap();
    // The server saw our end of stream, ended its loop and closed: so do we.
    match rx.recv() {
        Err(Error::Closed) => {}
        other => panic!("expected Closed after the last echo, got {other:?}"),
    }
}

/// The end-of-stream header (which only Windows senders use) is understood by every
/// receiver: spoken by hand to a server in another process, it ends the server's loop as an
/// orderly close after the message before it, while a header with the flag and a payload
/// is a protocol error.
fn the_end_header_is_an_orderly_close_everywhere() {
    use pipette::frame::{Header, Hello, Reply, Status};
    let name = unique("end");
    let _server = echo_server(&name);
    let handshake = |c: &mut pipette::Connection| {
        let hello = Hello {
            version: 1,
            features: 0,
            max_message_size: 4096,
        };
        c.send(&hello.encode()).unwrap();
        let mut got = Vec::new();
        while got.len() < 16 {
            got.extend(c.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        let reply = Reply::decode(&got[..16].try_into().unwrap()).unwrap();
        assert_eq!(reply.status, Status::Accepted);
        got.split_off(16)
    };
    let raw = ClientOptions::new().raw(true);

    let mut c = pipette::Client::connect_with(name.as_str(), &raw).unwrap();
    let mut got = handshake(&mut c);
    let mut bytes = Header::new(2).encode().to_vec();
    bytes.extend_from_slice(b"hi");
    bytes.extend_from_slice(&Header::end_of_stream().encode());
    c.send(&bytes).unwrap();
    // The echo of "hi", then the server closes: it read our end as `Closed`.
    loop {
        match c.recv_timeout(Duration::from_secs(5)) {
            Ok(more) => got.extend(more),
            Err(Error::Closed) => break,
            Err(e) => panic!("raw read: {e}"),
        }
    }
    let mut echo = Header::new(2).encode().to_vec();
    echo.extend_from_slice(b"hi");
    assert_eq!(got, echo);

    // The flag with a payload is not an end: the server drops the connection at once.
    let mut c = pipette::Client::connect_with(name.as_str(), &raw).unwrap();
    let mut got = handshake(&mut c);
    let mut bad = Header::new(2).encode().to_vec();
    bad[4] = 1;
    // One write: the server may drop the connection as soon as it has read the header, and
    // a second write could then fail.
    bad.extend_from_slice(b"hi");
    c.send(&bad).unwrap();
    loop {
        match c.recv_timeout(Duration::from_secs(5)) {
            Ok(more) => got.extend(more),
            Err(Error::Closed) => break,
            Err(e) => panic!("raw read: {e}"),
        }
    }
    assert!(got.is_empty(), "nothing echoed: {got:?}");
}

fn hundred_concurrent_clients() {
    let name = unique("many");
    let _server = echo_server(&name);
    let threads: Vec<_> = (0..100u64)
        .map(|t| {
            let name = name.clone();
            std::thread::spawn(move || {
                let mut c =
                    Client::connect_timeout(name.as_str(), Duration::from_secs(10)).unwrap();
                for i in 0..20 {
                    let m = pattern(t * 1000 + i, 100 + t as usize);
                    c.send(&m).unwrap();
                    assert_eq!(c.recv().unwrap(), m);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn sizes_up_to_the_limit_and_one_past() {
    let name = unique("sizes");
    let _server = echo_server(&name);
    let limit = pipette::DEFAULT_MAX_MESSAGE_SIZE;
    let mut c = Client::connect(name.as_str()).unwrap();
    let mut buf = Vec::new();
    for size in [0, 1, 64 * 1024, limit] {
        let m = pattern(size as u64, size);
        c.send(&m).unwrap();
        assert_eq!(c.recv_into(&mut buf).unwrap(), size);
        assert!(buf == m, "echo of {size} bytes differs");
    }
    assert_eq!(c.peer_max_message_size(), limit);
    match c.send(&vec![7u8; limit + 1]) {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!((len, max), (limit as u64 + 1, limit as u64));
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // Nothing was written: the same connection still works, and so do others.
    c.send(b"still here").unwrap();
    assert_eq!(c.recv().unwrap(), b"still here");
    let mut other = Client::connect(name.as_str()).unwrap();
    other.send(b"me too").unwrap();
    assert_eq!(other.recv().unwrap(), b"me too");
}

fn a_lying_header_is_refused_without_hurting_others() {
    // A server in this process with a small limit; a lying client (raw mode, writing the
    // protocol by hand) announces more than the limit; a good client keeps working.
    let name = unique("liar");
    let server =
        pipette::Server::bind_with(name.as_str(), &ServerOptions::new().max_message_size(4096))
            .unwrap();
    let mut good = Client::connect(name.as_str()).unwrap();
    let mut good_srv = server.accept().unwrap();

    let mut liar =
        pipette::Client::connect_with(name.as_str(), &ClientOptions::new().raw(true)).unwrap();
    let hello = pipette::frame::Hello {
        version: 1,
        features: 0,
        max_message_size: 4096,
    }
    .encode();
    liar.send(&hello).unwrap();
    liar.send(&pipette::frame::Header::new(u32::MAX).encode())
        .unwrap();
    let mut liar_srv = server.accept().unwrap();
    match liar_srv.recv() {
        Err(Error::MessageTooLarge { len, max }) => assert_eq!((len, max), (u32::MAX as u64, 4096)),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // The liar's connection was closed by the server: after the 16-byte reply, end of stream.
    let mut seen = Vec::new();
    loop {
        match liar.recv() {
            Ok(chunk) => seen.extend(chunk),
            Err(Error::Closed) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        seen.len(),
        16,
        "only the handshake reply, then end of stream"
    );
    good.send(b"fine").unwrap();
    assert_eq!(good_srv.recv().unwrap(), b"fine");
}

fn peer_identity_names_the_other_process() {
    let name = unique("peer");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-silent", &[&name]);
    child.expect("connected");
    let conn = server.accept().unwrap();
    assert_eq!(conn.peer().unwrap().pid(), Some(child.id()));
    #[cfg(unix)]
    {
        // Our own uid, as the owner of the socket file we just created.
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata(server.name().path()).unwrap().uid();
        assert_eq!(conn.peer().unwrap().uid(), Some(me));
        // And the client's view of the server: this very process.
        let c = Client::connect(name.as_str()).unwrap();
        let _s = server.accept().unwrap();
        assert_eq!(c.peer().unwrap().pid(), Some(std::process::id()));
        assert_eq!(c.peer().unwrap().uid(), Some(me));
    }
}

fn recv_timeout_expires_and_the_connection_stays_usable() {
    let name = unique("rto");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-silent", &[&name]);
    child.expect("connected");
    let mut conn = server.accept().unwrap();
    let start = Instant::now();
    match conn.recv_timeout(Duration::from_millis(200)) {
        Err(Error::TimedOut {
            op: pipette::Operation::Recv,
            after,
        }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(190));
    // Usable afterwards: talk to a fresh in-process client on the same server.
    let mut c = Client::connect(name.as_str()).unwrap();
    let mut s = server.accept().unwrap();
    assert!(matches!(
        s.recv_timeout(Duration::from_millis(50)),
        Err(Error::TimedOut { .. })
    ));
    c.send(b"late").unwrap();
    assert_eq!(s.recv_timeout(Duration::from_secs(5)).unwrap(), b"late");
}

fn send_timeout_expires_on_a_peer_that_never_reads() {
    let name = unique("sto");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-silent", &[&name]);
    child.expect("connected");
    let mut conn = server.accept().unwrap();
    let msg = vec![0u8; 64 * 1024];
    let result = within(
        Duration::from_secs(30),
        "filling the socket buffer",
        move || {
            for _ in 0..10_000 {
                match conn.send_timeout(&msg, Duration::from_millis(100)) {
                    Ok(()) => continue,
                    Err(e) => return e,
                }
            }
            panic!("a peer that never reads absorbed 640 MiB");
        },
    );
    assert!(
        matches!(
            result,
            Error::TimedOut {
                op: pipette::Operation::Send,
                ..
            }
        ),
        "got {result:?}"
    );
}

fn accept_and_connect_timeouts() {
    let name = unique("ato");
    let server = Server::bind(name.as_str()).unwrap();
    assert!(matches!(
        server.accept_timeout(Duration::from_millis(100)),
        Err(Error::TimedOut {
            op: pipette::Operation::Accept,
            ..
        })
    ));
    let absent = unique("absent");
    assert!(matches!(
        Client::connect(absent.as_str()),
        Err(Error::NotFound { .. })
    ));
    let start = Instant::now();
    assert!(matches!(
        Client::connect_timeout(absent.as_str(), Duration::from_millis(150)),
        Err(Error::TimedOut {
            op: pipette::Operation::Connect,
            ..
        })
    ));
    assert!(start.elapsed() >= Duration::from_millis(140));
}

fn connect_timeout_waits_for_a_server_that_appears_later() {
    let name = unique("late");
    let _server = spawn("server-late", &[&name]);
    let mut c = Client::connect_timeout(name.as_str(), Duration::from_secs(10)).unwrap();
    c.send(b"were you there?").unwrap();
    assert_eq!(c.recv().unwrap(), b"were you there?");
}

fn recv_string_rejects_invalid_utf8() {
    let name = unique("utf8");
    let _server = echo_server(&name);
    let mut c = Client::connect(name.as_str()).unwrap();
    c.send(&[b'o', b'k', 0xff]).unwrap();
    let err = c.recv_string().unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    // The bytes are kept, and the source says where the text broke.
    let Error::NotUtf8(bad) = &err else {
        panic!("expected NotUtf8, got {err:?}")
    };
    assert_eq!(bad.as_bytes(), &[b'o', b'k', 0xff]);
    assert_eq!(bad.utf8_error().valid_up_to(), 2);
    // The connection stays usable.
    c.send_str("still fine").unwrap();
    assert_eq!(c.recv_string().unwrap(), "still fine");
}

fn peer_closing_is_reported_as_closed_after_its_messages() {
    let name = unique("close");
    let server = Server::bind(name.as_str()).unwrap();
    let _child = spawn("client-send-then-close", &[&name, "3"]);
    let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
    for i in 0u64..3 {
        assert_eq!(conn.recv().unwrap(), i.to_le_bytes());
    }
    assert!(matches!(conn.recv(), Err(Error::Closed)));
}

fn stream_mode_after_handshake_is_plain_bytes() {
    let name = unique("stream");
    let server = Server::bind(name.as_str()).unwrap();
    let mut child = spawn("client-stream", &[&name]);
    let mut s = server
        .accept_timeout(Duration::from_secs(10))
        .unwrap()
        .into_stream()
        .unwrap();
    let mut got = [0u8; 9];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"raw bytes");
    s.write_all(b"answer").unwrap();
    s.shutdown_write().unwrap();
    assert_eq!(child.line(), "answer");
}

fn an_unspeakable_version_is_refused_with_the_reason() {
    let name = unique("version");
    let _server = echo_server(&name);
    // Speak the protocol by hand over a raw connection, offering version 0.
    let mut c =
        pipette::Client::connect_with(name.as_str(), &ClientOptions::new().raw(true)).unwrap();
    let mut hello = pipette::frame::Hello {
        version: 1,
        features: 0,
        max_message_size: 4096,
    }
    .encode();
    hello[8] = 0;
    c.send(&hello).unwrap();
    let mut reply = Vec::new();
    while reply.len() < 16 {
        reply.extend(c.recv_timeout(Duration::from_secs(5)).unwrap());
    }
    let reply = pipette::frame::Reply::decode(&reply[..16].try_into().unwrap()).unwrap();
    assert_eq!(reply.status, pipette::frame::Status::UnsupportedVersion);
}

/// Sizes around every edge the receive path has: the header, the 4096-byte minimum, the
/// receive buffer (a message that fills it exactly is the largest buffered one, the next is
/// read straight into its own buffer), the pipe buffer, and a large one; back to back, so that
/// several arrive in one read, through an echo server in another process.
fn edge_sizes() -> Vec<usize> {
    let buf = pipette::frame::HEADER_LEN + pipette::proto::LARGE_MESSAGE;
    let mut v = vec![0, 1, 7, 8, 9, 4095, 4096, 4097];
    for edge in [buf - 8, buf, 65536] {
        v.extend(edge - 10..edge + 10);
    }
    v.push(1 << 20);
    v
}

fn every_size_around_the_buffer_edges_crosses_whole() {
    let name = unique("edges");
    let _server = echo_server(&name);
    let (mut tx, mut rx) = Client::connect(name.as_str()).unwrap().split();
    rx.set_read_timeout(Some(Duration::from_secs(20)));
    let sizes = edge_sizes();
    let sent = sizes.clone();
    let sender = std::thread::spawn(move || {
        for (i, len) in sent.into_iter().enumerate() {
            tx.send(&pattern(i as u64, len)).unwrap();
        }
    });
    for (i, len) in sizes.into_iter().enumerate() {
        let got = rx.recv().unwrap();
        assert!(got == pattern(i as u64, len), "message {i} of {len} bytes");
    }
    sender.join().unwrap();
}

/// Whether `fd` becomes readable within `ms` milliseconds (`poll(2)`, as an event loop would).
#[cfg(unix)]
fn readable(fd: &impl std::os::fd::AsFd, ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    assert!(n >= 0, "poll failed");
    n == 1
}

/// The event-loop integration: a server's descriptor is readable when a connection may be
/// ready (including one whose hello arrives late), `try_accept` never waits, and a
/// connection's buffered messages are visible while its descriptor is not readable.
#[cfg(unix)]
fn an_event_loop_drives_a_server_and_its_connections() {
    use std::io::Write;
    let name = unique("evloop");
    let server = Server::bind(name.as_str()).unwrap();
    assert!(server.try_accept().unwrap().is_none());
    assert!(!readable(&server, 50), "nothing there yet");
    // A client whose hello comes in two parts, by hand over a raw socket.
    let mut c = std::os::unix::net::UnixStream::connect(server.name().path()).unwrap();
    let hello = pipette::frame::Hello {
        version: 1,
        features: 0,
        max_message_size: 4096,
    }
    .encode();
    c.write_all(&hello[..5]).unwrap();
    assert!(readable(&server, 5000), "a new connection");
    assert!(
        server.try_accept().unwrap().is_none(),
        "its hello is not all there"
    );
    assert!(!readable(&server, 50), "nothing new since");
    // The rest of the hello and three messages in one write.
    let mut rest = hello[5..].to_vec();
    for m in [&b"one"[..], b"two", b"three"] {
        rest.extend_from_slice(&pipette::frame::Header::new(m.len() as u32).encode());
        rest.extend_from_slice(m);
    }
    c.write_all(&rest).unwrap();
    assert!(readable(&server, 5000), "the hello completed");
    let mut conn = server.try_accept().unwrap().expect("ready now");
    assert!(server.try_accept().unwrap().is_none());
    // One read takes all three messages; the other two wait in the connection's buffer.
    assert!(readable(&conn, 5000));
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"one");
    assert!(conn.is_message_buffered());
    assert!(
        !readable(&conn, 0),
        "the descriptor says nothing about what is buffered"
    );
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"two");
    assert_eq!(conn.try_recv().unwrap().unwrap(), b"three");
    assert!(!conn.is_message_buffered());
    assert!(
        conn.try_recv().unwrap().is_none(),
        "nothing more, and no waiting"
    );
    // A shutdown makes the server's descriptor readable, and try_accept says why.
    server.shutdown_handle().shutdown();
    assert!(readable(&server, 5000));
    assert!(matches!(server.try_accept(), Err(Error::Shutdown)));
}
