//! Messages that carry handles on Windows (docs/PROTOCOL.md §11, "Windows": the receiver
//! pulls them from the sender's process), server and client in separate processes: pipe,
//! file and event handles there and back, used in the process that received them; 1, 2 and
//! 253 handles with empty and 1 MiB messages; no handle left open in either process (every
//! copy of a passed pipe's write end closed, so its reader sees the end; and
//! `GetProcessHandleCount` the same before and after); the feature is off unless both sides
//! ask; a plain receive takes and closes what it does not return; peers written from the
//! protocol text that break it (fewer values than handles, values that are no handles of
//! theirs) end only their own connection.
//!
//! With the `tokio` feature, the async API does the same against the blocking one: an async
//! client with a blocking server, an async server with the blocking client of the first
//! test, and the hostile peers against the async server.
//!
//! Windows only (run under Wine by `scripts/test-windows.sh`): elsewhere the tests are
//! reported as ignored.

mod support;

const TESTS: [&str; 5] = [
    "handles_travel_both_ways_with_messages_of_every_size",
    "pipes_files_and_events_arrive_usable",
    "either_side_not_asking_means_no_handles",
    "a_plain_receive_takes_and_closes_the_handles",
    "peers_breaking_the_protocol_end_only_their_own_connection",
];

/// The tests of the async API (feature `tokio`).
#[cfg(feature = "tokio")]
const ASYNC_TESTS: [&str; 3] = [
    "an_async_client_passes_handles_to_a_blocking_server",
    "an_async_server_passes_handles_to_a_blocking_client",
    "peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server",
];
#[cfg(all(not(feature = "tokio"), not(windows)))]
const ASYNC_TESTS: [&str; 0] = [];

#[cfg(windows)]
fn main() {
    #[allow(unused_mut)] // without the `tokio` feature
    let mut tests: Vec<support::Test> = vec![
        (
            TESTS[0],
            win::handles_travel_both_ways_with_messages_of_every_size,
        ),
        (TESTS[1], win::pipes_files_and_events_arrive_usable),
        (TESTS[2], win::either_side_not_asking_means_no_handles),
        (TESTS[3], win::a_plain_receive_takes_and_closes_the_handles),
        (
            TESTS[4],
            win::peers_breaking_the_protocol_end_only_their_own_connection,
        ),
    ];
    #[allow(unused_mut)]
    let mut roles: Vec<support::Role> = vec![
        ("relay", win::role_relay),
        ("traveller", win::role_traveller),
        ("user", win::role_user),
    ];
    #[cfg(feature = "tokio")]
    {
        tests.extend([
            (
                ASYNC_TESTS[0],
                win::asynchronous::an_async_client_passes_handles_to_a_blocking_server as fn(),
            ),
            (
                ASYNC_TESTS[1],
                win::asynchronous::an_async_server_passes_handles_to_a_blocking_client,
            ),
            (
                ASYNC_TESTS[2],
                win::asynchronous::peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server,
            ),
        ]);
        roles.push(("async-relay", win::asynchronous::role_async_relay));
    }
    support::main(&tests, &roles);
}

#[cfg(not(windows))]
fn main() {
    // Reported as ignored: handles are Windows's (Unix passes descriptors: tests/descriptors.rs).
    let ignored: Vec<support::Test> = TESTS
        .iter()
        .chain(ASYNC_TESTS.iter())
        .map(|&n| (n, (|| {}) as fn()))
        .collect();
    support::main_with_ignored(&[], &ignored, &[]);
}

#[cfg(windows)]
mod win {
    use std::fs::File;
    use std::io::{Read, Seek, Write};
    use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
    use std::time::Duration;

    use pipette::{Client, ClientOptions, Connection, Error, Name, Server, ServerOptions};
    use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Pipes::CreatePipe;
    use windows_sys::Win32::System::Threading::{
        CreateEventW, GetCurrentProcess, GetProcessHandleCount, SetEvent, WaitForSingleObject,
    };

    use super::support::{self, note, pattern, spawn_watched, tell, unique, within, Watched};

    const HANG: Duration = Duration::from_secs(60);

    /// The feature bit of handles (and Unix descriptors), from docs/PROTOCOL.md §2.
    const FEATURE_DESCRIPTORS: u16 = 2;

    // ---- Win32 helpers ----

    /// An anonymous pipe: its read end (as a `File`) and its write end.
    fn pipe() -> (File, OwnedHandle) {
        let (mut r, mut w): (HANDLE, HANDLE) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: both out-pointers are valid for writes; null attributes: not inheritable;
        // 0: the default buffer size.
        let ok = unsafe { CreatePipe(&mut r, &mut w, std::ptr::null(), 0) };
        assert_ne!(ok, 0, "CreatePipe: {}", std::io::Error::last_os_error());
        // SAFETY: two fresh handles that nothing else owns.
        unsafe { (File::from_raw_handle(r), OwnedHandle::from_raw_handle(w)) }
    }

    /// A manual-reset event, not signalled.
    fn event() -> OwnedHandle {
        // SAFETY: null attributes and name are allowed.
        let h = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        assert!(!h.is_null(), "CreateEventW");
        // SAFETY: a fresh handle that nothing else owns.
        unsafe { OwnedHandle::from_raw_handle(h) }
    }

    fn set(e: BorrowedHandle<'_>) {
        // SAFETY: `e` is an open handle for the call.
        assert_ne!(unsafe { SetEvent(e.as_raw_handle()) }, 0, "SetEvent");
    }

    fn is_set(e: BorrowedHandle<'_>) -> bool {
        // SAFETY: `e` is an open handle for the call; 0: do not wait.
        unsafe { WaitForSingleObject(e.as_raw_handle(), 0) == WAIT_OBJECT_0 }
    }

    /// Open handles of this process (`GetProcessHandleCount`), or `None` where not told
    /// (Wine 8.0 answers 0, which no real process has: there the pipes' ends, which every
    /// test reads, are the check that no copy stays open).
    fn handle_count() -> Option<u32> {
        let mut n = 0u32;
        // SAFETY: the pseudo-handle of this process; `n` is valid for writes.
        let ok = unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut n) };
        (ok != 0 && n != 0).then_some(n)
    }

    /// Reads what comes out of a pipe until its end: every copy of its write end, in every
    /// process, must be closed for this to return (a hang is a leak).
    fn read_to_end_of(mut reader: File) -> String {
        within(HANG, "reading a pipe to its end", move || {
            let mut text = String::new();
            reader.read_to_string(&mut text).unwrap();
            text
        })
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

    /// Asks a relay how many handles its process has open.
    fn server_count(c: &mut Connection) -> Option<u32> {
        c.send(b"count").unwrap();
        String::from_utf8(c.recv().unwrap()).unwrap().parse().ok()
    }

    // ---- tests ----

    /// A client process sends 1, 2 and 253 pipe write ends with empty and 1 MiB messages;
    /// the server returns its copies with the message; the client writes through each
    /// returned copy and reads the text at the pipe's other end, which then ends: no copy is
    /// left anywhere. Both processes have as many handles open afterwards as before.
    pub fn handles_travel_both_ways_with_messages_of_every_size() {
        travel("relay");
    }

    /// The traveller (a blocking client in its own process) against a server of `role`.
    fn travel(role: &str) {
        let (_server, name) = relay_role(role, "travel", "yes");
        let traveller = spawn_watched("traveller", &[&name]);
        let counts = traveller.line_within(HANG);
        note(&counts);
        assert!(counts.starts_with("server handles"), "{counts}");
        traveller.expect("done");
    }

    /// Pipes, files and events, each used in the process that received it: the server
    /// writes through a passed pipe and file and sets a passed event, and the client uses
    /// the copies the server passed back.
    pub fn pipes_files_and_events_arrive_usable() {
        let (_server, name) = relay("usable", "yes");
        let user = spawn_watched("user", &[&name]);
        user.expect("done");
    }

    /// Unless both sides ask (and on a side that does not), `send_with_handles` fails with
    /// `InvalidConfig`, nothing is sent and the connection goes on; more than 253 handles
    /// fail the same way on a connection that passes them, and a message too large with its
    /// handle values fails with `MessageTooLarge`, leaving no duplicate open.
    pub fn either_side_not_asking_means_no_handles() {
        let e = event();
        for (mode, asks) in [("no", true), ("yes", false)] {
            let (_server, name) = relay("off", mode);
            let mut c = client(&name, asks);
            assert!(
                !c.passes_descriptors(),
                "server {mode}, client asks: {asks}"
            );
            match c.send_with_handles(b"refused", &[e.as_handle()]) {
                Err(Error::InvalidConfig(m)) => {
                    assert!(m.contains("does not pass handles"), "{m}");
                    note(m);
                }
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
            c.send(b"still usable").unwrap();
            assert_eq!(c.recv().unwrap(), b"still usable");
        }

        let (_server, name) = relay("too-many", "yes");
        let mut c = client(&name, true);
        assert!(c.passes_descriptors());
        let many: Vec<BorrowedHandle<'_>> = (0..254).map(|_| e.as_handle()).collect();
        match c.send_with_handles(b"too many", &many) {
            Err(Error::InvalidConfig(m)) => assert!(m.contains("254 handles"), "{m}"),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        c.send(b"still usable").unwrap();
        assert_eq!(c.recv().unwrap(), b"still usable");
        // The handle values count against the peer's limit: a message that fits alone does
        // not with a handle, and the duplicate made for it is closed again (the pipe ends).
        let fits = vec![7u8; pipette::DEFAULT_MAX_MESSAGE_SIZE - 7];
        let (reader, writer) = pipe();
        match c.send_with_handles(&fits, &[writer.as_handle()]) {
            Err(Error::MessageTooLarge { .. }) => {}
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        drop(writer);
        assert_eq!(read_to_end_of(reader), "");
        c.send(b"still usable").unwrap();
        assert_eq!(c.recv().unwrap(), b"still usable");
        // No handles in one message is a plain message.
        c.send_with_handles(b"none", &[]).unwrap();
        let (msg, handles) = c.recv_with_handles().unwrap();
        assert_eq!((msg.as_slice(), handles.len()), (&b"none"[..], 0));
    }

    /// A server receiving with a plain `recv` gets the message without the handle values,
    /// and the handles are taken from the sender and closed at once: the passed write end's
    /// reader sees the end as soon as the sender drops its own, and the server has as many
    /// handles open as before.
    pub fn a_plain_receive_takes_and_closes_the_handles() {
        let (_server, name) = relay("plain", "plain");
        let mut c = client(&name, true);
        assert!(c.passes_descriptors());
        let before = server_count(&mut c);
        for len in [0, 5, 1 << 20] {
            let msg = pattern(len as u64, len);
            let (reader, writer) = pipe();
            c.send_with_handles(&msg, &[writer.as_handle()]).unwrap();
            drop(writer);
            assert!(
                c.recv().unwrap() == msg,
                "the message of {len} bytes came back"
            );
            assert_eq!(read_to_end_of(reader), "");
        }
        let after = server_count(&mut c);
        note(format!("server handles: {before:?} then {after:?}"));
        assert_eq!(before, after, "handles open in the server");
    }

    /// Peers written from docs/PROTOCOL.md that agree to handles and then send a message
    /// claiming 2 handles with fewer than 16 bytes of payload, or values that are no
    /// handles: each ends its own connection with a protocol error that says so; the
    /// server's other client and a fresh one go on.
    pub fn peers_breaking_the_protocol_end_only_their_own_connection() {
        peers_breaking_the_protocol("relay");
    }

    /// The hostile peers against a server of `role` (`relay` or `async-relay`).
    fn peers_breaking_the_protocol(role: &str) {
        let (server, name) = relay_role(role, "hostile", "yes");
        let mut good = client(&name, true);
        good.send(b"before").unwrap();
        assert_eq!(good.recv().unwrap(), b"before");

        // Two handles claimed, 8 bytes of payload.
        let mut short = raw_peer(&name);
        let mut frame = header(8, 2);
        frame.extend_from_slice(&[0u8; 8]);
        short.write_all(&frame).unwrap();
        let said = server.line_within(HANG);
        note(&said);
        assert!(said.contains("shorter than"), "{said}");
        assert_closed(short);

        // Two handles claimed with values that are no handles of this process: one that no
        // handle table reaches, and the pseudo-handle of "the current process".
        let mut bogus = raw_peer(&name);
        let mut frame = header(16 + 3, 2);
        frame.extend_from_slice(&0x3FFF_FFFCu64.to_le_bytes());
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        frame.extend_from_slice(b"abc");
        bogus.write_all(&frame).unwrap();
        let said = server.line_within(HANG);
        note(&said);
        assert!(said.contains("could not be taken"), "{said}");
        assert_closed(bogus);

        // The server goes on: its other client, and a fresh one passing handles.
        good.send(b"after").unwrap();
        assert_eq!(good.recv().unwrap(), b"after");
        let mut fresh = client(&name, true);
        let (reader, writer) = pipe();
        fresh
            .send_with_handles(b"fresh", &[writer.as_handle()])
            .unwrap();
        drop(writer);
        let (msg, back) = fresh.recv_with_handles().unwrap();
        assert_eq!(msg, b"fresh");
        let mut w = File::from(back.into_iter().next().unwrap());
        w.write_all(b"served").unwrap();
        drop(w);
        assert_eq!(read_to_end_of(reader), "served");
    }

    /// A message header (docs/PROTOCOL.md §3): `len`, then flags `2 | n << 8`.
    fn header(len: u32, n: u32) -> Vec<u8> {
        let mut h = len.to_le_bytes().to_vec();
        h.extend_from_slice(&(2 | n << 8).to_le_bytes());
        h
    }

    /// A client written from docs/PROTOCOL.md §1-2, on a plain file handle: a hello offering
    /// handles (bit 1), and the server's reply, which must agree.
    fn raw_peer(name: &str) -> File {
        let path = Name::new(name).unwrap().path().to_owned();
        let mut tries = 0;
        let mut pipe = loop {
            match File::options().read(true).write(true).open(&path) {
                Ok(f) => break f,
                // ERROR_PIPE_BUSY: the server is between two instances.
                Err(e) if e.raw_os_error() == Some(231) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("open {}: {e}", path.display()),
            }
        };
        let mut hello = b"PIPETTE?".to_vec();
        hello.extend_from_slice(&1u16.to_le_bytes());
        hello.extend_from_slice(&FEATURE_DESCRIPTORS.to_le_bytes());
        hello.extend_from_slice(&(1u32 << 20).to_le_bytes());
        pipe.write_all(&hello).unwrap();
        let mut reply = [0u8; 16];
        pipe.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..8], b"PIPETTE!");
        assert_eq!(reply[10], 0, "status: accepted");
        assert_eq!(
            u16::from(reply[11]),
            FEATURE_DESCRIPTORS,
            "handles agreed to"
        );
        pipe
    }

    /// The server ended the connection: the peer reads its end.
    fn assert_closed(mut pipe: File) {
        within(HANG, "the end of a hostile peer's connection", move || {
            let mut rest = Vec::new();
            let _ = pipe.read_to_end(&mut rest);
            assert!(rest.is_empty(), "nothing came back: {rest:?}");
        });
    }

    // ---- roles ----

    /// `relay NAME yes|no|plain`: a server that asks for handles (`yes`, `plain`) or not
    /// (`no`), a thread per connection, until stdin closes. Each message comes back with
    /// the server's copies of its handles (`plain`: received with `recv`, the message alone);
    /// `count` is answered with the process's open handles; `write:TEXT` writes TEXT through
    /// each handle it came with and answers `written`; `set` sets each event it came with.
    /// An error that ends a connection is printed.
    pub fn role_relay(args: Vec<String>) {
        let (name, mode) = (args[0].clone(), args[1].clone());
        let opts = ServerOptions::new().descriptors(mode != "no");
        let server = Server::bind_with(&name, &opts).unwrap();
        support::stop_on_stdin_close(server.shutdown_handle());
        tell("ready");
        loop {
            let conn = match server.accept() {
                Ok(c) => c,
                Err(Error::Shutdown) => return,
                Err(e) => {
                    tell(&format!("accept: {e}"));
                    continue;
                }
            };
            let mode = mode.clone();
            std::thread::spawn(move || match serve(conn, &mode) {
                Err(Error::Closed) | Err(Error::Shutdown) => {}
                Err(e) => tell(&format!("error: {e}")),
                Ok(()) => {}
            });
        }
    }

    fn serve(mut conn: Connection, mode: &str) -> pipette::Result<()> {
        loop {
            let (msg, handles) = if mode == "plain" {
                (conn.recv()?, Vec::new())
            } else {
                conn.recv_with_handles()?
            };
            if msg == b"count" {
                let n = handle_count().map(|n| n.to_string()).unwrap_or_default();
                conn.send(n.as_bytes())?;
            } else if let Some(text) = msg.strip_prefix(b"write:") {
                for h in handles {
                    File::from(h).write_all(text).unwrap();
                }
                conn.send(b"written")?;
            } else if msg == b"set" {
                for h in &handles {
                    set(h.as_handle());
                }
                conn.send(b"set")?;
            } else {
                let mine: Vec<BorrowedHandle<'_>> = handles.iter().map(|h| h.as_handle()).collect();
                conn.send_with_handles(&msg, &mine)?;
            }
        }
    }

    /// `traveller NAME`: the client of `handles_travel_both_ways_with_messages_of_every_size`
    /// in a process of its own (so that its handle count is its alone).
    pub fn role_traveller(args: Vec<String>) {
        let mut c = client(&args[0], true);
        assert!(c.passes_descriptors());
        let server_before = server_count(&mut c);
        let mine_before = handle_count();
        for n in [1usize, 2, 253] {
            for len in [0usize, 1 << 20] {
                let msg = pattern((n * 7 + len) as u64, len);
                let pipes: Vec<(File, OwnedHandle)> = (0..n).map(|_| pipe()).collect();
                let ends: Vec<BorrowedHandle<'_>> =
                    pipes.iter().map(|(_, w)| w.as_handle()).collect();
                c.send_with_handles(&msg, &ends).unwrap();
                let (back, handles) = c.recv_with_handles().unwrap();
                assert!(
                    back == msg,
                    "{n} handles, {len} bytes: the message came back"
                );
                assert_eq!(handles.len(), n, "{n} handles, {len} bytes: handles back");
                for (i, ((reader, writer), copy)) in pipes.into_iter().zip(handles).enumerate() {
                    drop(writer);
                    let text = format!("pipe {i} of {n} with {len} bytes");
                    File::from(copy).write_all(text.as_bytes()).unwrap();
                    assert_eq!(read_to_end_of(reader), text);
                }
            }
        }
        let (server_after, mine_after) = (server_count(&mut c), handle_count());
        tell(&format!(
            "server handles {server_before:?} then {server_after:?}; client {mine_before:?} then {mine_after:?}"
        ));
        assert_eq!(server_before, server_after, "handles open in the server");
        assert_eq!(mine_before, mine_after, "handles open in the client");
        tell("done");
    }

    /// `user NAME`: the client of `pipes_files_and_events_arrive_usable`.
    pub fn role_user(args: Vec<String>) {
        let mut c = client(&args[0], true);
        assert!(c.passes_descriptors());

        // The server uses what it received: a pipe and a file written through, an event set.
        let (reader, writer) = pipe();
        let path = std::env::temp_dir().join(format!("{}.txt", args[0]));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        c.send_with_handles(
            b"write:from the server",
            &[writer.as_handle(), file.as_handle()],
        )
        .unwrap();
        drop(writer);
        assert_eq!(c.recv().unwrap(), b"written");
        assert_eq!(read_to_end_of(reader), "from the server");
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "from the server");

        let e = event();
        c.send_with_handles(b"set", &[e.as_handle()]).unwrap();
        assert_eq!(c.recv().unwrap(), b"set");
        assert!(is_set(e.as_handle()), "the server set the passed event");

        // The client uses the server's copies passed back: the same file and event.
        let e = event();
        c.send_with_handles(b"file and event", &[file.as_handle(), e.as_handle()])
            .unwrap();
        let (msg, mut back) = c.recv_with_handles().unwrap();
        assert_eq!(msg, b"file and event");
        assert_eq!(back.len(), 2);
        let theirs = back.pop().unwrap();
        assert!(!is_set(e.as_handle()));
        set(theirs.as_handle());
        assert!(is_set(e.as_handle()), "the copy back is the same event");
        let mut copy = File::from(back.pop().unwrap());
        copy.rewind().unwrap();
        copy.set_len(0).unwrap();
        copy.write_all(b"through the copy").unwrap();
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "through the copy");
        drop((copy, file));
        std::fs::remove_file(&path).unwrap();
        tell("done");
    }

    /// The async API (`pipette::tokio`) against the blocking one.
    #[cfg(feature = "tokio")]
    pub mod asynchronous {
        use std::fs::File;
        use std::io::Write;
        use std::os::windows::io::{AsHandle, BorrowedHandle, OwnedHandle};

        use pipette::tokio::{Client, Connection, Server};
        use pipette::{ClientOptions, Error, ServerOptions};

        use super::super::support::{self, pattern, tell};
        use super::{handle_count, pipe, read_to_end_of, relay, set, HANG};

        /// An async client (this process) sends 1, 2 and 253 pipe write ends with empty and
        /// 1 MiB messages to a blocking server (another process), gets the server's copies
        /// back and writes through them; each pipe then ends. A plain async receive of a
        /// message with handles takes and closes them.
        pub fn an_async_client_passes_handles_to_a_blocking_server() {
            let (_server, name) = relay("async-client", "yes");
            support::runtime().block_on(async move {
                let opts = ClientOptions::new().wait(HANG).descriptors(true);
                let mut c = Client::connect_with(&name, &opts).await.unwrap();
                assert!(c.passes_descriptors());
                for n in [1usize, 2, 253] {
                    for len in [0usize, 1 << 20] {
                        let msg = pattern((n * 3 + len) as u64, len);
                        let pipes: Vec<(File, OwnedHandle)> = (0..n).map(|_| pipe()).collect();
                        let ends: Vec<BorrowedHandle<'_>> =
                            pipes.iter().map(|(_, w)| w.as_handle()).collect();
                        c.send_with_handles(&msg, &ends).await.unwrap();
                        let (back, handles) = c.recv_with_handles().await.unwrap();
                        assert!(back[..] == msg[..], "{n} handles, {len} bytes");
                        assert_eq!(handles.len(), n);
                        for (i, ((reader, writer), copy)) in
                            pipes.into_iter().zip(handles).enumerate()
                        {
                            drop(writer);
                            let text = format!("async pipe {i} of {n}");
                            File::from(copy).write_all(text.as_bytes()).unwrap();
                            assert_eq!(read_to_end_of(reader), text);
                        }
                    }
                }
                // The server's copies come back with the echo; a plain `recv` closes them.
                let (reader, writer) = pipe();
                c.send_with_handles(b"plain", &[writer.as_handle()])
                    .await
                    .unwrap();
                drop(writer);
                assert_eq!(&c.recv().await.unwrap()[..], b"plain");
                assert_eq!(read_to_end_of(reader), "");
                // Not more than 253.
                let many: Vec<BorrowedHandle<'_>> = (0..254).map(|_| c_handle()).collect();
                match c.send_with_handles(b"too many", &many).await {
                    Err(Error::InvalidConfig(m)) => assert!(m.contains("254 handles"), "{m}"),
                    other => panic!("expected InvalidConfig, got {other:?}"),
                }
                c.send(b"still").await.unwrap();
                assert_eq!(&c.recv().await.unwrap()[..], b"still");
            });
        }

        /// A handle that lives as long as the test (the current process's pseudo-handle
        /// is not one that can be duplicated into a message, so a real one is used).
        fn c_handle() -> BorrowedHandle<'static> {
            static EVENT: std::sync::OnceLock<OwnedHandle> = std::sync::OnceLock::new();
            EVENT.get_or_init(super::event).as_handle()
        }

        /// The blocking traveller (another process) against an async server.
        pub fn an_async_server_passes_handles_to_a_blocking_client() {
            super::travel("async-relay");
        }

        pub fn peers_breaking_the_protocol_end_only_their_own_connection_on_an_async_server() {
            super::peers_breaking_the_protocol("async-relay");
        }

        /// `async-relay NAME yes`: `relay` written with `pipette::tokio` (no `plain` mode).
        pub fn role_async_relay(args: Vec<String>) {
            let name = args[0].clone();
            support::runtime().block_on(async move {
                let opts = ServerOptions::new().descriptors(true);
                let server = Server::bind_with(&name, &opts).unwrap();
                support::stop_on_stdin_close(server.shutdown_handle());
                tell("ready");
                loop {
                    let conn = match server.accept().await {
                        Ok(c) => c,
                        Err(Error::Shutdown) => return,
                        Err(e) => {
                            tell(&format!("accept: {e}"));
                            continue;
                        }
                    };
                    tokio::spawn(async move {
                        match serve(conn).await {
                            Err(Error::Closed) | Err(Error::Shutdown) | Ok(()) => {}
                            Err(e) => tell(&format!("error: {e}")),
                        }
                    });
                }
            });
        }

        async fn serve(mut conn: Connection) -> pipette::Result<()> {
            loop {
                let (msg, handles) = conn.recv_with_handles().await?;
                if &msg[..] == b"count" {
                    let n = handle_count().map(|n| n.to_string()).unwrap_or_default();
                    conn.send(n.as_bytes()).await?;
                } else if let Some(text) = msg.strip_prefix(b"write:") {
                    for h in handles {
                        File::from(h).write_all(text).unwrap();
                    }
                    conn.send(b"written").await?;
                } else if &msg[..] == b"set" {
                    for h in &handles {
                        set(h.as_handle());
                    }
                    conn.send(b"set").await?;
                } else {
                    let mine: Vec<BorrowedHandle<'_>> =
                        handles.iter().map(|h| h.as_handle()).collect();
                    conn.send_with_handles(&msg, &mine).await?;
                }
            }
        }
    }
}
