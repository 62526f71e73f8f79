//! Messages that carry descriptors (docs/PROTOCOL.md §11), server and client in separate
//! processes: descriptors of every kind of message (empty to 3 MiB, up to the 253 limit)
//! there and back, checked by using them; the feature is off unless both sides ask; a plain
//! receive closes what it does not return; a receiver out of descriptors (`RLIMIT_NOFILE`)
//! fails clearly and its server's other clients go on; a sender to a peer that died leaks
//! nothing; peers that break the protocol (a message claiming descriptors it did not
//! send, descriptors where none were agreed, a flood of unclaimed ones) end only their own
//! connection. Descriptors are counted in the process that owns them (`/proc/self/fd`).
//!
//! With the `tokio` feature, the async API does the same against the blocking one and
//! itself: an async client and an async server (`pipette::tokio`) each with a blocking
//! peer, an async receive dropped again and again part-way through messages that loses
//! nothing, a plain async receive that closes what it does not return, and the hostile
//! peers against the async server.
//!
//! Unix only (Linux here; macOS and FreeBSD compile the same code): elsewhere the tests are
//! reported as ignored.

mod support;

const TESTS: [&str; 6] = [
    "descriptors_travel_both_ways_with_messages_of_every_size",
    "either_side_not_asking_means_no_descriptors",
    "a_plain_receive_closes_the_descriptors_it_does_not_return",
    "a_receiver_out_of_descriptors_fails_clearly_and_others_go_on",
    "a_sender_whose_peer_died_leaks_nothing",
    "peers_breaking_the_protocol_end_only_their_own_connection",
];

/// The tests of the async API (feature `tokio`).
#[cfg(feature = "tokio")]
const ASYNC_TESTS: [&str; 5] = [
    "an_async_client_passes_descriptors_to_a_blocking_server",
    "an_async_server_passes_descriptors_to_blocking_and_async_clients",
    "an_async_receive_dropped_part_way_keeps_the_message_and_its_descriptors",
    "a_plain_async_receive_closes_the_descriptors_it_does_not_return",
    "peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server",
];
#[cfg(all(not(feature = "tokio"), not(target_os = "linux")))]
const ASYNC_TESTS: [&str; 0] = [];

#[cfg(target_os = "linux")]
fn main() {
    #[allow(unused_mut)] // without the `tokio` feature
    let mut tests: Vec<support::Test> = vec![
        (
            TESTS[0],
            linux::descriptors_travel_both_ways_with_messages_of_every_size,
        ),
        (TESTS[1], linux::either_side_not_asking_means_no_descriptors),
        (
            TESTS[2],
            linux::a_plain_receive_closes_the_descriptors_it_does_not_return,
        ),
        (
            TESTS[3],
            linux::a_receiver_out_of_descriptors_fails_clearly_and_others_go_on,
        ),
        (TESTS[4], linux::a_sender_whose_peer_died_leaks_nothing),
        (
            TESTS[5],
            linux::peers_breaking_the_protocol_end_only_their_own_connection,
        ),
    ];
    #[allow(unused_mut)]
    let mut roles: Vec<support::Role> = vec![
        ("relay", linux::role_relay),
        ("starved", linux::role_starved),
        ("sender", linux::role_sender),
        ("traveller", linux::role_traveller),
    ];
    #[cfg(feature = "tokio")]
    {
        tests.extend([
            (
                ASYNC_TESTS[0],
                linux::asynchronous::an_async_client_passes_descriptors_to_a_blocking_server
                    as fn(),
            ),
            (
                ASYNC_TESTS[1],
                linux::asynchronous::an_async_server_passes_descriptors_to_blocking_and_async_clients,
            ),
            (
                ASYNC_TESTS[2],
                linux::asynchronous::an_async_receive_dropped_part_way_keeps_the_message_and_its_descriptors,
            ),
            (
                ASYNC_TESTS[3],
                linux::asynchronous::a_plain_async_receive_closes_the_descriptors_it_does_not_return,
            ),
            (
                ASYNC_TESTS[4],
                linux::asynchronous::peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server,
            ),
        ]);
        roles.extend([
            (
                "async-relay",
                linux::asynchronous::role_async_relay as fn(Vec<String>),
            ),
            ("async-traveller", linux::asynchronous::role_async_traveller),
        ]);
    }
    support::main_with_ignored(&tests, &[], &roles);
}

#[cfg(not(target_os = "linux"))]
fn main() {
    // Reported as ignored: descriptors are passed on Unix sockets, and these tests count
    // descriptors in /proc.
    let ignored: Vec<support::Test> = TESTS
        .iter()
        .chain(ASYNC_TESTS.iter())
        .map(|&n| (n, (|| {}) as fn()))
        .collect();
    support::main_with_ignored(&[], &ignored, &[]);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use pipette::frame::{Header, Reply, Status, FEATURE_DESCRIPTORS, REPLY_LEN};
    use pipette::{Client, ClientOptions, Connection, Error, Name, Server, ServerOptions};

    use super::support::{self, pattern, spawn_watched, unique, Watched};

    const HANG: Duration = Duration::from_secs(30);

    /// Open descriptors of this process.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn client(name: &str, descriptors: bool) -> Connection {
        let opts = ClientOptions::new().wait(HANG).descriptors(descriptors);
        Client::connect_with(name, &opts).unwrap()
    }

    /// A relay server in its own process: `relay NAME yes|no|plain`.
    fn relay(tag: &str, mode: &str) -> (Watched, String) {
        relay_role("relay", tag, mode)
    }

    /// A relay server of `role` (`relay`, or `async-relay` written with `pipette::tokio`).
    fn relay_role(role: &str, tag: &str, mode: &str) -> (Watched, String) {
        let name = unique(tag);
        let server = spawn_watched(role, &[&name, mode]);
        server.expect("ready");
        (server, name)
    }

    /// Checks that `back` is the far end of `mine`'s socket pair: bytes written into it
    /// come out of `mine`.
    fn same_pair(mine: &mut UnixStream, back: OwnedFd, what: &str) {
        let mut back = UnixStream::from(back);
        back.write_all(what.as_bytes()).unwrap();
        let mut got = vec![0u8; what.len()];
        mine.read_exact(&mut got).unwrap();
        assert_eq!(
            got,
            what.as_bytes(),
            "{what}: the descriptor that came back"
        );
    }

    pub fn descriptors_travel_both_ways_with_messages_of_every_size() {
        let (_server, name) = relay("relay", "yes");
        travel("traveller", &name);
    }

    /// Runs the client role `traveller` (blocking) or `async-traveller` against the server
    /// at `name`, and checks its report.
    fn travel(traveller: &str, name: &str) {
        // The client in a process of its own, so that its descriptors can be counted.
        let traveller = spawn_watched(traveller, &[name]);
        let report = traveller.line_within(Duration::from_secs(120));
        let parts: Vec<&str> = report.split(' ').collect();
        assert_eq!(parts[0], "done", "{report}");
        assert_eq!(
            parts[1], parts[2],
            "descriptors left open in the client: {report}"
        );
    }

    /// `traveller NAME`: the client of `descriptors_travel_both_ways...`; says `done BEFORE
    /// AFTER` (its open descriptors).
    pub fn role_traveller(args: Vec<String>) {
        let name = &args[0];
        let mut conn = client(name, true);
        assert!(conn.passes_descriptors(), "both sides asked");
        let before = open_fds();
        let sizes = [0usize, 5, 4000, 8192, 70_000, 3 << 20];
        for (round, &len) in sizes.iter().enumerate() {
            for count in [1usize, 2, 253] {
                let pairs: Vec<(UnixStream, UnixStream)> =
                    (0..count).map(|_| UnixStream::pair().unwrap()).collect();
                let lend: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, b)| b.as_fd()).collect();
                let msg = pattern(round as u64 * 1000 + count as u64, len);
                conn.send_with_descriptors(&msg, &lend).unwrap();
                // A plain message between two with descriptors.
                conn.send(b"plain").unwrap();
                let (back, fds) = conn.recv_with_descriptors().unwrap();
                assert!(
                    back == msg,
                    "{len} bytes with {count}: the payload came back changed"
                );
                assert_eq!(fds.len(), count, "{len} bytes: descriptors came back");
                let (plain, none) = conn.recv_with_descriptors().unwrap();
                assert_eq!((plain.as_slice(), none.len()), (&b"plain"[..], 0));
                let mut pairs = pairs;
                for (i, ((mine, _), back)) in pairs.iter_mut().zip(fds).enumerate() {
                    // Each came back in the order it went, and is the same socket.
                    if i % 50 == 0 || i + 1 == count {
                        same_pair(mine, back, &format!("{len} bytes, descriptor {i}"));
                    }
                }
            }
        }
        // Everything received was dropped above: nothing stays open here.
        support::tell(&format!("done {before} {}", open_fds()));
    }

    pub fn either_side_not_asking_means_no_descriptors() {
        for (server_mode, client_asks) in [("no", true), ("yes", false)] {
            let (_server, name) = relay("off", server_mode);
            let mut conn = client(&name, client_asks);
            assert!(
                !conn.passes_descriptors(),
                "server {server_mode}, client {client_asks}"
            );
            let (_a, b) = UnixStream::pair().unwrap();
            let e = conn.send_with_descriptors(b"x", &[b.as_fd()]).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidConfig(m) if m.contains("does not pass descriptors")),
                "{e}"
            );
            // Nothing was sent; the connection works as before.
            conn.send(b"still fine").unwrap();
            let (msg, fds) = conn.recv_with_descriptors().unwrap();
            assert_eq!((msg.as_slice(), fds.len()), (&b"still fine"[..], 0));
        }
        // Shared memory and descriptors cannot be combined.
        let e = Client::connect_with(
            "anything",
            &ClientOptions::new().descriptors(true).shared_memory(true),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        let e = Server::bind_with(
            unique("both").as_str(),
            &ServerOptions::new().descriptors(true).shared_memory(true),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        // The async API agrees to descriptors as the blocking one does, and refuses them
        // with shared memory, which it still refuses on its own.
        #[cfg(feature = "tokio")]
        asynchronous::either_side_not_asking_means_no_descriptors();
    }

    pub fn a_plain_receive_closes_the_descriptors_it_does_not_return() {
        plain_receive_closes("relay");
    }

    /// The server (`role`: `relay` or `async-relay`) receives with a plain `recv`.
    fn plain_receive_closes(role: &str) {
        let (_server, name) = relay_role(role, "plain", "plain");
        let mut conn = client(&name, true);
        assert!(conn.passes_descriptors());
        let (mut mine, theirs) = UnixStream::pair().unwrap();
        conn.send_with_descriptors(b"take this", &[theirs.as_fd()])
            .unwrap();
        drop(theirs);
        // The server receives with `recv`, which closes the copy it got: the last one.
        assert_eq!(conn.recv().unwrap(), b"take this");
        mine.set_read_timeout(Some(HANG)).unwrap();
        let mut rest = Vec::new();
        assert_eq!(
            mine.read_to_end(&mut rest).unwrap(),
            0,
            "every copy of the other end is closed"
        );
    }

    pub fn a_receiver_out_of_descriptors_fails_clearly_and_others_go_on() {
        let name = unique("starved");
        let server = spawn_watched("starved", &[&name]);
        server.expect("ready");
        let mut victim = client(&name, true);
        let mut bystander = client(&name, true);
        victim.send(b"first").unwrap();
        bystander.send(b"second").unwrap();
        // The server has both connections, and has lowered its limit of open files.
        server.expect("starving");
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let lend: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, b)| b.as_fd()).collect();
        victim.send_with_descriptors(b"too many", &lend).unwrap();
        let err = server.line_within(HANG);
        support::note(format!("the starved server said: {err}"));
        assert!(
            err.starts_with("err ") && err.contains("RLIMIT_NOFILE"),
            "the error names the limit: {err}"
        );
        // That connection is closed; the other goes on.
        assert!(matches!(victim.recv(), Err(Error::Closed)));
        bystander.send(b"still here").unwrap();
        assert_eq!(bystander.recv().unwrap(), b"still here");
        server.expect("bystander ok");
    }

    pub fn a_sender_whose_peer_died_leaks_nothing() {
        let (mut server, name) = relay("died", "yes");
        let mut sender = spawn_watched("sender", &[&name]);
        sender.expect("connected");
        server.kill();
        sender.say("go");
        let report = sender.line_within(HANG);
        support::note(format!("the sender said: {report}"));
        // `closed BEFORE AFTER`: the send failed with Closed, and the sender's open
        // descriptors are what they were before it made the ones it sent.
        let parts: Vec<&str> = report.split(' ').collect();
        assert_eq!(parts[0], "closed", "{report}");
        assert_eq!(
            parts[1], parts[2],
            "descriptors leaked by the sender: {report}"
        );
    }

    pub fn peers_breaking_the_protocol_end_only_their_own_connection() {
        peers_breaking_the_protocol("relay");
    }

    /// The hostile peers against a server of `role` (`relay` or `async-relay`).
    fn peers_breaking_the_protocol(role: &str) {
        let (server, name) = relay_role(role, "hostile", "yes");
        let mut good = client(&name, true);
        good.send(b"before").unwrap();
        assert_eq!(good.recv().unwrap(), b"before");
        let path = Name::new(&name).unwrap().path().to_owned();

        // 1. A message that says it carries 2 descriptors, sent without any.
        let mut s = handshake(&path, FEATURE_DESCRIPTORS, 2);
        let mut frame = Header::with_descriptors(3, 2).encode().to_vec();
        frame.extend_from_slice(b"abc");
        s.write_all(&frame).unwrap();
        let end = server.line_within(HANG);
        assert!(
            end.contains("says it carries 2 descriptors, but 0 arrived"),
            "{end}"
        );
        assert_closed(&mut s);

        // 2. Descriptors where none were agreed (the hello did not offer them).
        let mut s = handshake(&path, 0, 0);
        s.write_all(&frame).unwrap();
        let end = server.line_within(HANG);
        assert!(
            end.contains("did not agree to receive descriptors"),
            "{end}"
        );
        assert_closed(&mut s);

        // 3. A flood of descriptors that no message claims.
        let s = handshake(&path, FEATURE_DESCRIPTORS, 2);
        let (_a, b) = UnixStream::pair().unwrap();
        let many: Vec<BorrowedFd<'_>> = (0..253).map(|_| b.as_fd()).collect();
        let mut msg = Header::new(1).encode().to_vec();
        msg.push(b'x');
        for _ in 0..3 {
            if send_fds(&s, &msg, &many).is_err() {
                break;
            }
        }
        let end = server.line_within(HANG);
        assert!(end.contains("no message claims"), "{end}");

        // The server goes on: its other client, and a fresh one.
        good.send(b"after").unwrap();
        assert_eq!(good.recv().unwrap(), b"after");
        let mut fresh = client(&name, true);
        fresh.send(b"fresh").unwrap();
        assert_eq!(fresh.recv().unwrap(), b"fresh");
    }

    /// A client written from docs/PROTOCOL.md: hello offering `features`, then the
    /// reply, which must agree to `agreed`.
    fn handshake(path: &std::path::Path, features: u16, agreed: u8) -> UnixStream {
        let mut s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(HANG)).unwrap();
        s.write_all(&pipette::proto::hello_offering(1 << 20, features))
            .unwrap();
        let mut reply = [0u8; REPLY_LEN];
        s.read_exact(&mut reply).unwrap();
        let r = Reply::decode(&reply).unwrap();
        assert_eq!((r.status, r.features), (Status::Accepted, agreed));
        s
    }

    fn assert_closed(s: &mut UnixStream) {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }

    fn send_fds(s: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<usize> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let mut space =
            vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
        Ok(rustix::net::sendmsg(
            s,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?)
    }

    // ---- roles ----

    /// `relay NAME yes|no|plain`: echoes every message of every connection with the
    /// descriptors it came with (`yes`), without the feature (`no`), or receiving with a
    /// plain `recv` (`plain`, descriptors on). Each connection's end: `end ERROR`.
    pub fn role_relay(args: Vec<String>) {
        let mode = args[1].clone();
        let opts = ServerOptions::new().descriptors(mode != "no");
        let server = Server::bind_with(args[0].as_str(), &opts).unwrap();
        support::stop_on_stdin_close(server.shutdown_handle());
        support::tell("ready");
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mode = mode.clone();
            std::thread::spawn(move || {
                let e = loop {
                    let res = if mode == "plain" {
                        conn.recv().and_then(|m| conn.send(&m))
                    } else {
                        conn.recv_with_descriptors().and_then(|(m, fds)| {
                            let lend: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                            conn.send_with_descriptors(&m, &lend)
                        })
                    };
                    if let Err(e) = res {
                        break e;
                    }
                };
                support::tell(&format!("end {e} ({e:?})"));
            });
        }
    }

    /// `starved NAME`: accepts two connections and reads a message of each (`first` from
    /// the victim, `second` from the bystander), then lowers its limit of open files to what
    /// it has open (`starving`), receives with descriptors from the victim (`err ERROR`), then
    /// echoes one message of the bystander (`bystander ok`).
    pub fn role_starved(args: Vec<String>) {
        let opts = ServerOptions::new().descriptors(true);
        let server = Server::bind_with(args[0].as_str(), &opts).unwrap();
        support::tell("ready");
        let mut a = server.accept().unwrap();
        let mut b = server.accept().unwrap();
        let (mut victim, mut bystander) = match (a.recv().unwrap(), b.recv().unwrap()) {
            (x, y) if x == b"first" && y == b"second" => (a, b),
            (x, y) if x == b"second" && y == b"first" => (b, a),
            other => panic!("unexpected first messages {other:?}"),
        };
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let limit = rustix::process::Rlimit {
            current: Some(highest + 1),
            maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
        };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
        // Fill the free numbers below the limit too: then no descriptor can be received.
        let mut filler = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            filler.push(f);
        }
        support::tell("starving");
        match victim.recv_with_descriptors() {
            Err(e) => support::tell(&format!("err {e}")),
            Ok((m, fds)) => support::tell(&format!("unexpected {} {}", m.len(), fds.len())),
        }
        let m = bystander.recv().unwrap();
        bystander.send(&m).unwrap();
        support::tell("bystander ok");
    }

    /// `sender NAME`: connects with descriptors (`connected`), waits for `go` (by then its
    /// server is dead), then sends messages with 10 fresh descriptors each until a send
    /// fails, closes them, and says `closed BEFORE AFTER` (its open descriptors before it
    /// made them and at the end), or `other ERROR`.
    pub fn role_sender(args: Vec<String>) {
        let mut conn = client(&args[0], true);
        assert!(conn.passes_descriptors());
        support::tell("connected");
        assert_eq!(support::read_stdin_line().as_deref(), Some("go"));
        let before = open_fds();
        let result = {
            let pairs: Vec<(UnixStream, UnixStream)> =
                (0..10).map(|_| UnixStream::pair().unwrap()).collect();
            let lend: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, b)| b.as_fd()).collect();
            let big = vec![7u8; 1 << 20];
            loop {
                if let Err(e) = conn.send_with_descriptors(&big, &lend) {
                    break e;
                }
            }
        };
        match result {
            Error::Closed => support::tell(&format!("closed {before} {}", open_fds())),
            other => support::tell(&format!("other {other}")),
        }
    }

    /// The async API (`pipette::tokio`) against the blocking one and against itself.
    #[cfg(feature = "tokio")]
    pub mod asynchronous {
        use std::io::IoSliceMut;
        use std::mem::MaybeUninit;

        use pipette::tokio::{
            Bytes, Client as AsyncClient, Connection as AsyncConnection, Server as AsyncServer,
        };

        use super::*;

        async fn async_client(name: &str, descriptors: bool) -> AsyncConnection {
            let opts = ClientOptions::new().wait(HANG).descriptors(descriptors);
            AsyncClient::connect_with(name, &opts).await.unwrap()
        }

        pub fn an_async_client_passes_descriptors_to_a_blocking_server() {
            let (_server, name) = relay("async-client", "yes");
            travel("async-traveller", &name);
        }

        pub fn an_async_server_passes_descriptors_to_blocking_and_async_clients() {
            let (_server, name) = relay_role("async-relay", "async-server", "yes");
            travel("traveller", &name);
            travel("async-traveller", &name);
        }

        /// The relay gives up every receive after a millisecond and starts another, so that
        /// messages arrive across receives that were dropped part-way: first a message whose
        /// second part comes only long after its header and descriptor, then the blocking
        /// client's messages of every size.
        pub fn an_async_receive_dropped_part_way_keeps_the_message_and_its_descriptors() {
            let (_server, name) = relay_role("async-relay", "impatient", "impatient");
            let path = Name::new(&name).unwrap().path().to_owned();
            let s = handshake(&path, FEATURE_DESCRIPTORS, 2);
            let (mut mine, theirs) = UnixStream::pair().unwrap();
            let payload = pattern(7, 70_000);
            let mut frame = Header::with_descriptors(70_000, 1).encode().to_vec();
            frame.extend_from_slice(&payload);
            send_fds(&s, &frame[..1000], &[theirs.as_fd()]).unwrap();
            drop(theirs);
            // Hundreds of receives are dropped with the message half there.
            std::thread::sleep(Duration::from_millis(300));
            (&s).write_all(&frame[1000..]).unwrap();
            let (echo, fds) = recv_with_fds(&s, frame.len());
            assert!(echo == frame, "the message came back whole");
            assert_eq!(fds.len(), 1, "its descriptor came back");
            let back = fds.into_iter().next().unwrap();
            same_pair(
                &mut mine,
                back,
                "the descriptor of a message received in pieces",
            );
            drop(s);
            travel("traveller", &name);
        }

        pub fn a_plain_async_receive_closes_the_descriptors_it_does_not_return() {
            plain_receive_closes("async-relay");
        }

        pub fn peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server() {
            peers_breaking_the_protocol("async-relay");
        }

        /// Part of `either_side_not_asking_means_no_descriptors`.
        pub fn either_side_not_asking_means_no_descriptors() {
            let runtime = support::runtime();
            for (server_mode, client_asks) in [("no", true), ("yes", false)] {
                let (_server, name) = relay("async-off", server_mode);
                runtime.block_on(async {
                    let mut conn = async_client(&name, client_asks).await;
                    assert!(
                        !conn.passes_descriptors(),
                        "server {server_mode}, async client {client_asks}"
                    );
                    let (_a, b) = UnixStream::pair().unwrap();
                    let e = conn
                        .send_with_descriptors(b"x", &[b.as_fd()])
                        .await
                        .unwrap_err();
                    assert!(
                        matches!(&e, Error::InvalidConfig(m) if m.contains("does not pass descriptors")),
                        "{e}"
                    );
                    // Nothing was sent; the connection works as before.
                    conn.send(b"still fine").await.unwrap();
                    let (msg, fds) = conn.recv_with_descriptors().await.unwrap();
                    assert_eq!((&msg[..], fds.len()), (&b"still fine"[..], 0));
                });
            }
            // An async server that does not agree.
            let (_server, name) = relay_role("async-relay", "async-off", "no");
            let mut conn = client(&name, true);
            assert!(!conn.passes_descriptors(), "async server no, client yes");
            conn.send(b"plain").unwrap();
            assert_eq!(conn.recv().unwrap(), b"plain");
            // Shared memory: refused with descriptors (the async API has it on its own, see
            // tests/shm.rs).
            runtime.block_on(async {
                let opts = ServerOptions::new().descriptors(true).shared_memory(true);
                let e = AsyncServer::bind_with(unique("async-shm").as_str(), &opts).unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidConfig(m) if m.contains("shared_memory")),
                    "{e}"
                );
                let opts = ClientOptions::new().descriptors(true).shared_memory(true);
                let e = AsyncClient::connect_with("anything", &opts)
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidConfig(m) if m.contains("shared_memory")),
                    "{e}"
                );
            });
        }

        /// Receives exactly `len` bytes from `s` and the descriptors that come with them.
        fn recv_with_fds(s: &UnixStream, len: usize) -> (Vec<u8>, Vec<OwnedFd>) {
            use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            let mut bytes = vec![0u8; len];
            let mut got = 0;
            let mut fds = Vec::new();
            while got < len {
                let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let r = rustix::net::recvmsg(
                    s,
                    &mut [IoSliceMut::new(&mut bytes[got..])],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .unwrap();
                assert!(r.bytes > 0, "the server closed after {got} bytes");
                got += r.bytes;
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = message {
                        fds.extend(received);
                    }
                }
            }
            (bytes, fds)
        }

        // ---- roles ----

        /// `async-traveller NAME`: the async client of the `travel` tests (messages of 0 to 3
        /// MiB with 1 and 253 descriptors, each descriptor checked when it comes back); says
        /// `done BEFORE AFTER` (its open descriptors).
        pub fn role_async_traveller(args: Vec<String>) {
            let name = args[0].clone();
            support::runtime().block_on(async move {
                let mut conn = async_client(&name, true).await;
                assert!(conn.passes_descriptors(), "both sides asked");
                let before = open_fds();
                for (round, &len) in [0usize, 5, 70_000, 3 << 20].iter().enumerate() {
                    for count in [1usize, 253] {
                        let mut pairs: Vec<(UnixStream, UnixStream)> =
                            (0..count).map(|_| UnixStream::pair().unwrap()).collect();
                        let lend: Vec<BorrowedFd<'_>> =
                            pairs.iter().map(|(_, b)| b.as_fd()).collect();
                        let msg = pattern(round as u64 * 1000 + count as u64, len);
                        conn.send_with_descriptors(&msg, &lend).await.unwrap();
                        drop(lend);
                        // A plain message between two with descriptors.
                        conn.send(b"plain").await.unwrap();
                        let (back, fds) = conn.recv_with_descriptors().await.unwrap();
                        assert!(
                            back[..] == msg[..],
                            "{len} bytes with {count}: the payload came back changed"
                        );
                        assert_eq!(fds.len(), count, "{len} bytes: descriptors came back");
                        let (plain, none) = conn.recv_with_descriptors().await.unwrap();
                        assert_eq!((&plain[..], none.len()), (&b"plain"[..], 0));
                        for (i, ((mine, _), back)) in pairs.iter_mut().zip(fds).enumerate() {
                            // Each came back in the order it went, and is the same socket.
                            same_pair(mine, back, &format!("{len} bytes, descriptor {i}"));
                        }
                    }
                }
                support::tell(&format!("done {before} {}", open_fds()));
            });
        }

        /// `async-relay NAME yes|no|plain|impatient`: `relay` written with `pipette::tokio`:
        /// echoes every message of every connection with the descriptors it came with
        /// (`yes`), without the feature (`no`), receiving with a plain `recv` (`plain`,
        /// descriptors on), or with receives given up after a millisecond and started again
        /// until one returns (`impatient`). Each connection's end: `end ERROR`.
        pub fn role_async_relay(args: Vec<String>) {
            let mode = args[1].clone();
            support::runtime().block_on(async move {
                let opts = ServerOptions::new().descriptors(mode != "no");
                let server = AsyncServer::bind_with(args[0].as_str(), &opts).unwrap();
                support::stop_on_stdin_close(server.shutdown_handle());
                support::tell("ready");
                loop {
                    let mut conn = match server.accept().await {
                        Ok(conn) => conn,
                        Err(Error::Shutdown) => break,
                        Err(_) => continue,
                    };
                    let mode = mode.clone();
                    tokio::spawn(async move {
                        let e = loop {
                            if let Err(e) = echo_once(&mut conn, &mode).await {
                                break e;
                            }
                        };
                        support::tell(&format!("end {e} ({e:?})"));
                    });
                }
            });
        }

        async fn echo_once(conn: &mut AsyncConnection, mode: &str) -> pipette::Result<()> {
            if mode == "plain" {
                let msg = conn.recv().await?;
                return conn.send(&msg).await;
            }
            let (msg, fds) = if mode == "impatient" {
                impatient(conn).await?
            } else {
                conn.recv_with_descriptors().await?
            };
            let lend: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
            conn.send_with_descriptors(&msg, &lend).await
        }

        /// `recv_with_descriptors`, dropped after a millisecond and started again until it
        /// returns.
        async fn impatient(conn: &mut AsyncConnection) -> pipette::Result<(Bytes, Vec<OwnedFd>)> {
            loop {
                let recv = conn.recv_with_descriptors();
                if let Ok(got) = tokio::time::timeout(Duration::from_millis(1), recv).await {
                    return got;
                }
            }
        }
    }
}
