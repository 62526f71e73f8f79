//! pipette and real C# code, end to end: the scenario pipette began as (issue #16).
//!
//! `tests/dotnet/OriginalPipes.cs` is that scenario's C# server and client: strings as
//! UTF-16LE bytes (.NET's `UnicodeEncoding`), one write per message with no length prefix,
//! one read of up to 4096 bytes, writers that refuse a larger string ("too large message"),
//! timeouts on reads and writes, and a server whose asynchronous wait for clients an exit
//! event cancels. It is compiled with Mono's `mcs` and run with `mono` here, as its own
//! process; pipette meets it by its .NET name ([`Name::dotnet`]) in raw mode, with
//! [`Encoding::Utf16Le`] text.
//!
//! Linux: needs Mono (`apt-get install mono-mcs mono-runtime libmono-system-core4.0-cil`);
//! without it the tests are ignored with a notice, and fail under `CI=true`. The other-user
//! tests also need root and `setpriv`. Windows (under Wine, where Mono is not available):
//! the `\\.\pipe\` mapping and message-mode pipes by their .NET name.

mod support;

#[cfg(unix)]
#[path = "support/csharp.rs"]
mod csharp;

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(windows)]
fn main() {
    windows::main();
}

/// The original scenario's conventions on pipette's side, as the C# `Messenger` has them: a
/// string is its UTF-16LE bytes in one write, refused by the writer when larger than the
/// peer's 4096-byte read; one receive is one string.
mod messenger {
    use std::time::Duration;

    use pipette::{Connection, Encoding};

    /// The peer's read buffer (the C# programs' `Messenger.BufferSize`).
    pub const BUFFER: usize = 4096;

    /// Writes `text` as one message, or refuses it as the C# writer does.
    pub fn write(conn: &mut Connection, text: &str, timeout: Duration) -> Result<(), String> {
        let bytes = Encoding::Utf16Le.encode(text);
        if bytes.len() > BUFFER {
            return Err(format!(
                "too large message: {} bytes, more than {BUFFER}",
                bytes.len()
            ));
        }
        conn.send_timeout(&bytes, timeout)
            .map_err(|e| format!("send: {e}"))
    }

    /// Reads one message.
    pub fn read(conn: &mut Connection, timeout: Duration) -> pipette::Result<String> {
        conn.recv_text_timeout(Encoding::Utf16Le, timeout)
    }
}

#[cfg(unix)]
mod unix {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use pipette::{
        Access, Client, ClientOptions, Connection, Error, Name, Server, ServerOptions, Trust,
    };

    use super::csharp::{self, escape, Peer};
    use super::messenger::{self, BUFFER};
    use super::support::{self, tell, unique};

    const T: Duration = Duration::from_secs(10);
    const NOBODY: &str = "65534";

    pub fn main() {
        let roles: &[support::Role] = &[("dotnet-call", role_dotnet_call), ("serve", role_serve)];
        let mono = csharp::missing();
        let root = support::missing_root_and_setpriv("to run the C# peer as another user");
        let tests: Vec<(support::Test, Option<String>)> = vec![
            (
                (
                    "a_pipette_client_exchanges_utf16_strings_with_the_csharp_server",
                    a_pipette_client_exchanges_utf16_strings_with_the_csharp_server,
                ),
                mono.clone(),
            ),
            (
                (
                    "timeouts_on_both_sides_of_a_csharp_server",
                    timeouts_on_both_sides_of_a_csharp_server,
                ),
                mono.clone(),
            ),
            (
                (
                    "the_csharp_server_stopping_mid_exchange_is_an_orderly_close",
                    the_csharp_server_stopping_mid_exchange_is_an_orderly_close,
                ),
                mono.clone(),
            ),
            (
                (
                    "oversized_messages_are_refused_by_the_writer_on_both_sides",
                    oversized_messages_are_refused_by_the_writer_on_both_sides,
                ),
                mono.clone(),
            ),
            (
                (
                    "the_csharp_client_talks_to_a_pipette_server",
                    the_csharp_client_talks_to_a_pipette_server,
                ),
                mono.clone(),
            ),
            (
                (
                    "current_user_only_peers_accept_pipette_of_the_same_user",
                    current_user_only_peers_accept_pipette_of_the_same_user,
                ),
                mono.clone(),
            ),
            (
                (
                    "tmpdir_moves_the_endpoint_for_both_sides",
                    tmpdir_moves_the_endpoint_for_both_sides,
                ),
                mono.clone(),
            ),
            (
                (
                    "other_users_each_sides_check_with_a_csharp_peer",
                    other_users_each_sides_check_with_a_csharp_peer,
                ),
                mono.clone().or(root),
            ),
        ];
        support::main_each(&tests, roles);
    }

    /// The compiled C# scenario.
    fn exe() -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dotnet/OriginalPipes.cs");
        csharp::compile(
            &Path::new(env!("CARGO_TARGET_TMPDIR")).join("dotnet"),
            "OriginalPipes",
            &[src],
        )
    }

    /// A C# server on the .NET pipe `name`, listening.
    fn csharp_server(name: &str, args: &[&str]) -> Peer {
        let exe = exe();
        let mut all = vec!["server", name];
        all.extend_from_slice(args);
        let mut peer = csharp::start(&exe, &all, &[]);
        peer.expect_exactly("listening");
        peer
    }

    fn csharp_client(name: &str, args: &[&str]) -> Peer {
        let exe = exe();
        let mut all = vec!["client", name];
        all.extend_from_slice(args);
        csharp::start(&exe, &all, &[])
    }

    /// A pipette client of the .NET pipe `name`: raw bytes, the default trust.
    fn connect(name: &str, trust: Trust) -> Connection {
        Client::connect_with(
            Name::dotnet(name).unwrap(),
            &ClientOptions::new().raw(true).trust(trust).wait(T),
        )
        .unwrap()
    }

    /// One request and its answer, as the original client does it.
    fn ask(conn: &mut Connection, text: &str) -> pipette::Result<String> {
        messenger::write(conn, text, T).unwrap();
        messenger::read(conn, T)
    }

    pub fn a_pipette_client_exchanges_utf16_strings_with_the_csharp_server() {
        let name = unique("cs-srv");
        let mut server = csharp_server(&name, &[]);
        // .NET's Unix rule: the socket is <temp dir>/CoreFxPipe_<name>.
        let path = Name::dotnet(&name).unwrap().path().to_owned();
        assert!(path.ends_with(format!("CoreFxPipe_{name}")), "{path:?}");
        assert!(path.exists(), "the C# server listens on {path:?}");

        let mut c = connect(&name, Trust::CurrentUser);
        server.expect_exactly("connected");
        for text in [
            "hello",
            "héllo wörld ✓",
            "😀 and 𝄞: outside the BMP, surrogate pairs",
            "tab\tnewline\n",
        ] {
            assert_eq!(ask(&mut c, text).unwrap(), format!("echo: {text}"));
            server.expect_exactly(&format!("request {}", escape(text)));
        }
        // The largest string one read holds: 2048 characters, exactly 4096 bytes.
        let big = ask(&mut c, "big 2048").unwrap();
        assert_eq!(big, "x".repeat(2048));
        c.close().unwrap();
        server.expect("client left");
    }

    pub fn timeouts_on_both_sides_of_a_csharp_server() {
        let name = unique("cs-timeout");
        let mut server = csharp_server(&name, &["--timeout", "1500"]);

        // pipette's read timeout: nothing is lost, the late answer is read next.
        let mut c = connect(&name, Trust::CurrentUser);
        messenger::write(&mut c, "sleep 1000", T).unwrap();
        match messenger::read(&mut c, Duration::from_millis(200)) {
            Err(Error::TimedOut { .. }) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(messenger::read(&mut c, T).unwrap(), "slept");

        // The C# server's read timeout: a silent client is dropped, and pipette sees the
        // connection end.
        match messenger::read(&mut c, T) {
            Err(Error::Closed) => {}
            other => panic!("expected the C# server to close, got {other:?}"),
        }
        server.expect("timeout");
    }

    pub fn the_csharp_server_stopping_mid_exchange_is_an_orderly_close() {
        let name = unique("cs-stop");
        let mut server = csharp_server(&name, &[]);

        // It hangs up instead of answering.
        let mut c = connect(&name, Trust::CurrentUser);
        messenger::write(&mut c, "bye", T).unwrap();
        assert!(matches!(messenger::read(&mut c, T), Err(Error::Closed)));
        server.expect_exactly("connected");
        server.expect("hanging up");

        // It dies while the client waits for an answer.
        let mut c = connect(&name, Trust::CurrentUser);
        messenger::write(&mut c, "sleep 60000", T).unwrap();
        server.expect("request sleep 60000");
        server.kill();
        assert!(matches!(messenger::read(&mut c, T), Err(Error::Closed)));

        // The exit event cancels the asynchronous wait for clients: the server stops and
        // the endpoint goes with it.
        let name = unique("cs-exit");
        let mut server = csharp_server(&name, &[]);
        server.say("exit");
        server.expect_exactly("stopped");
        assert!(server.wait().success());
        assert!(!Name::dotnet(&name).unwrap().path().exists());
        assert!(matches!(
            Client::connect_with(
                Name::dotnet(&name).unwrap(),
                &ClientOptions::new().raw(true)
            ),
            Err(Error::NotFound { .. })
        ));
    }

    pub fn oversized_messages_are_refused_by_the_writer_on_both_sides() {
        let name = unique("cs-big");
        let mut server = csharp_server(&name, &[]);
        let mut c = connect(&name, Trust::CurrentUser);

        // pipette's writer: 2049 characters are 4098 bytes, one more unit than a read holds.
        let err = messenger::write(&mut c, &"z".repeat(BUFFER / 2 + 1), T).unwrap_err();
        assert!(err.contains("too large message: 4098 bytes"), "{err}");
        // Nothing was written: the next request arrives whole, and first.
        assert_eq!(ask(&mut c, "after").unwrap(), "echo: after");
        server.expect_exactly("connected");
        server.expect_exactly("request after");

        // The C# writer refuses a 3000-character answer and says so instead.
        assert_eq!(
            ask(&mut c, "big 3000").unwrap(),
            "error: too large message: 6000 bytes, more than 4096"
        );
        server.expect_exactly("request big 3000");
        server.expect_exactly("refused too large message: 6000 bytes, more than 4096");
        // The conversation goes on.
        assert_eq!(ask(&mut c, "still here").unwrap(), "echo: still here");
    }

    /// The original server, on pipette: a raw server on the .NET name, one conversation at a
    /// time, answering as `OriginalPipes.cs` does. Each event goes to `log`.
    fn pipette_original_server(
        name: &str,
        options: ServerOptions,
    ) -> (
        pipette::Shutdown,
        std::thread::JoinHandle<()>,
        Arc<Mutex<Vec<String>>>,
    ) {
        let server = Server::bind_with(Name::dotnet(name).unwrap(), &options.raw(true)).unwrap();
        let stop = server.shutdown_handle();
        let log = Arc::new(Mutex::new(Vec::new()));
        let events = log.clone();
        let t = std::thread::spawn(move || {
            let say = |line: String| events.lock().unwrap().push(line);
            for conn in server.incoming() {
                let Ok(mut conn) = conn else { continue };
                say("connected".into());
                loop {
                    let request = match messenger::read(&mut conn, T) {
                        Ok(r) => r,
                        Err(Error::Closed) => {
                            say("client left".into());
                            break;
                        }
                        Err(e) => {
                            say(format!("ended {e}"));
                            break;
                        }
                    };
                    say(format!("request {request}"));
                    let reply = if let Some(ms) = request.strip_prefix("sleep ") {
                        std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                        "slept".to_owned()
                    } else if let Some(n) = request.strip_prefix("big ") {
                        "x".repeat(n.parse().unwrap())
                    } else {
                        format!("echo: {request}")
                    };
                    let sent = match messenger::write(&mut conn, &reply, T) {
                        Err(refused) if refused.starts_with("too large") => {
                            say(format!("refused {refused}"));
                            messenger::write(&mut conn, &format!("error: {refused}"), T)
                        }
                        other => other,
                    };
                    if let Err(e) = sent {
                        say(format!("ended {e}"));
                        break;
                    }
                }
            }
        });
        (stop, t, log)
    }

    fn wait_for(log: &Arc<Mutex<Vec<String>>>, line: &str) {
        let start = std::time::Instant::now();
        while !log.lock().unwrap().iter().any(|l| l == line) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the pipette server never logged {line:?}: {:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn the_csharp_client_talks_to_a_pipette_server() {
        let name = unique("rs-srv");
        let (stop, t, log) = pipette_original_server(&name, ServerOptions::new());
        let path = Name::dotnet(&name).unwrap().path().to_owned();
        assert!(path.exists());

        let mut client = csharp_client(
            &name,
            &[
                "--timeout",
                "700",
                "hello",
                "héllo ✓ 😀",
                "#2100",
                "big 3000",
                "sleep 1500",
            ],
        );
        client.expect_exactly("connected");
        client.expect_exactly("reply echo: hello");
        client.expect_exactly(&format!("reply {}", escape("echo: héllo ✓ 😀")));
        // The C# writer refuses 2100 characters and sends nothing.
        client.expect_exactly("refused too large message: 4200 bytes, more than 4096");
        // pipette's writer refuses 3000 characters and says so instead.
        client.expect_exactly("reply error: too large message: 6000 bytes, more than 4096");
        // The C# read timeout.
        client.expect_exactly("timeout");
        client.expect_exactly("done");
        let status = client.wait();
        assert!(status.success(), "{status:?}");
        wait_for(
            &log,
            "refused too large message: 6000 bytes, more than 4096",
        );
        {
            let log = log.lock().unwrap();
            let requests: Vec<&String> = log.iter().filter(|l| l.starts_with("request")).collect();
            assert_eq!(
                requests,
                [
                    "request hello",
                    "request héllo ✓ 😀",
                    "request big 3000",
                    "request sleep 1500"
                ],
                "nothing of the refused string reached the server"
            );
        }

        // A client that stops mid-exchange ends its own conversation only.
        let mut quitter = csharp_client(&name, &["!quit now"]);
        quitter.expect_exactly("connected");
        quitter.expect_exactly("quitting");
        assert!(quitter.wait().success());
        wait_for(&log, "request quit now");

        let mut again = csharp_client(&name, &["hello again"]);
        again.expect_exactly("connected");
        again.expect_exactly("reply echo: hello again");
        again.expect_exactly("done");

        stop.shutdown();
        t.join().unwrap();
        assert!(!path.exists(), "the endpoint is removed at shutdown");
        assert!(!Path::new(&format!("{}.lock", path.display())).exists());
    }

    pub fn current_user_only_peers_accept_pipette_of_the_same_user() {
        // A C# server with PipeOptions.CurrentUserOnly admits a pipette client of its user.
        let name = unique("cs-cuo");
        let mut server = csharp_server(&name, &["--current-user-only"]);
        let mut c = connect(&name, Trust::CurrentUser);
        assert_eq!(ask(&mut c, "same user").unwrap(), "echo: same user");
        server.expect_exactly("connected");

        // A C# client with PipeOptions.CurrentUserOnly trusts a pipette server of its user.
        let name = unique("rs-cuo");
        let (stop, t, _log) = pipette_original_server(&name, ServerOptions::new());
        let mut client = csharp_client(&name, &["--current-user-only", "same user"]);
        client.expect_exactly("connected");
        client.expect_exactly("reply echo: same user");
        stop.shutdown();
        t.join().unwrap();
    }

    /// `dotnet-call NAME TEXT`: asks the .NET pipe NAME (resolved in this process's
    /// environment) one question; prints `path PATH`, then `reply TEXT`.
    fn role_dotnet_call(args: Vec<String>) {
        let name = Name::dotnet(&args[0]).unwrap();
        tell(&format!("path {}", name.path().display()));
        let mut c = Client::connect_with(&name, &ClientOptions::new().raw(true).wait(T)).unwrap();
        tell(&format!("reply {}", ask(&mut c, &args[1]).unwrap()));
    }

    pub fn tmpdir_moves_the_endpoint_for_both_sides() {
        let dir = std::env::temp_dir().join(unique("tmpdir"));
        std::fs::create_dir(&dir).unwrap();
        let tmpdir = dir.to_str().unwrap().to_owned();
        let name = unique("cs-tmpdir");
        let exe = exe();
        let mut server = csharp::start(&exe, &["server", &name], &[("TMPDIR", &tmpdir)]);
        server.expect_exactly("listening");
        let socket = dir.join(format!("CoreFxPipe_{name}"));
        assert!(socket.exists(), "Mono put the socket in $TMPDIR");

        let mut client =
            support::spawn_with("dotnet-call", &[&name, "moved"], &[("TMPDIR", &tmpdir)]);
        assert_eq!(client.line(), format!("path {}", socket.display()));
        assert_eq!(client.line(), "reply echo: moved");
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `serve NAME ACCESS`: the original server on pipette, on the .NET name; prints
    /// `ready`, then its events; until stdin closes.
    fn role_serve(args: Vec<String>) {
        let access: Access = args[1].parse().unwrap();
        let (stop, t, log) = pipette_original_server(&args[0], ServerOptions::new().access(access));
        support::stop_on_stdin_close(stop);
        tell("ready");
        let mut told = 0;
        while !t.is_finished() {
            let lines: Vec<String> = log.lock().unwrap()[told..].to_vec();
            for l in &lines {
                tell(l);
            }
            told += lines.len();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `command` run as nobody.
    fn as_nobody(program: &Path) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    }

    pub fn other_users_each_sides_check_with_a_csharp_peer() {
        let exe = exe();

        // A C# server of another user (nobody), which any user may reach: pipette's client
        // refuses it by default, before sending a byte; trusting everyone, it talks.
        let name = unique("cs-other");
        let mut cmd = as_nobody(Path::new("mono"));
        cmd.arg(&exe).args(["server", &name]).env("HOME", "/tmp");
        let mut server = csharp::spawn(cmd);
        server.expect_exactly("listening");
        let err = Client::connect_with(
            Name::dotnet(&name).unwrap(),
            &ClientOptions::new().raw(true).wait(T),
        )
        .unwrap_err();
        assert!(matches!(err, Error::UntrustedServer { .. }), "{err:?}");
        let mut c = connect(&name, Trust::Everyone);
        assert_eq!(ask(&mut c, "hi").unwrap(), "echo: hi");
        drop(c);
        drop(server);

        // The same server with CurrentUserOnly turns the root client away.
        let name = unique("cs-other-cuo");
        let mut cmd = as_nobody(Path::new("mono"));
        cmd.arg(&exe)
            .args(["server", &name, "--current-user-only"])
            .env("HOME", "/tmp");
        let mut server = csharp::spawn(cmd);
        server.expect_exactly("listening");
        let mut c = connect(&name, Trust::Everyone);
        server.expect("refused Client connection (user id 0) was refused");
        assert!(matches!(messenger::read(&mut c, T), Err(Error::Closed)));
        drop(server);

        // A pipette server of another user, open to everyone: a C# client with
        // CurrentUserOnly refuses it (the socket's peer is not its user); without, it talks.
        let name = unique("rs-other");
        let mut cmd = as_nobody(&std::env::current_exe().unwrap());
        cmd.args([name.as_str(), "everyone"])
            .env("PIPETTE_TEST_ROLE", "serve");
        let server = support::watch(cmd);
        server.expect("ready");
        let mut cuo = csharp_client(&name, &["--current-user-only", "hi"]);
        let failed = cuo.expect("failed");
        assert!(
            failed.contains("UnauthorizedAccessException")
                && failed.contains("not owned by the current user"),
            "{failed}"
        );
        let mut plain = csharp_client(&name, &["hi"]);
        plain.expect_exactly("connected");
        plain.expect_exactly("reply echo: hi");
        drop(server);

        // A pipette server with the default policy (its user only): the C# client of
        // another user cannot even open the socket (mode 0600).
        let name = unique("rs-private");
        let (stop, t, _log) = pipette_original_server(&name, ServerOptions::new());
        let mut cmd = as_nobody(Path::new("mono"));
        cmd.arg(&exe)
            .args(["client", &name, "--timeout", "1000", "hi"])
            .env("HOME", "/tmp");
        let mut outsider = csharp::spawn(cmd);
        let failed = outsider.expect("failed");
        assert!(
            failed.contains("Access denied") || failed.contains("denied"),
            "{failed}"
        );
        stop.shutdown();
        t.join().unwrap();
    }
}

#[cfg(windows)]
mod windows {
    use std::io::{Read, Write};
    use std::time::Duration;

    use pipette::{Client, ClientOptions, Encoding, Name, Server, ServerOptions};

    use super::messenger;
    use super::support::{self, unique};

    pub fn main() {
        support::main(
            &[
                (
                    "dotnet_names_are_pipes_a_plain_windows_client_opens",
                    dotnet_names_are_pipes_a_plain_windows_client_opens,
                ),
                (
                    "the_original_scenario_over_a_message_pipe_by_its_dotnet_name",
                    the_original_scenario_over_a_message_pipe_by_its_dotnet_name,
                ),
            ],
            &[],
        );
    }

    /// What `new NamedPipeClientStream(".", name)` opens is `\\.\pipe\<name>`: a pipette
    /// server bound with `Name::dotnet(name)` is there, and strings cross as UTF-16LE.
    fn dotnet_names_are_pipes_a_plain_windows_client_opens() {
        let name = unique("dotnet-win");
        let server = Server::bind_with(
            Name::dotnet(&name).unwrap(),
            &ServerOptions::new().raw(true),
        )
        .unwrap();
        assert_eq!(server.name().as_str(), format!(r"\\.\pipe\{name}"));
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
            let got = conn
                .recv_text_timeout(Encoding::Utf16Le, Duration::from_secs(10))
                .unwrap();
            conn.send_text(&format!("echo: {got}"), Encoding::Utf16Le)
                .unwrap();
        });
        // The pipe path, opened as any Windows program (or .NET) opens it.
        let mut pipe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!(r"\\.\pipe\{name}"))
            .unwrap();
        pipe.write_all(&Encoding::Utf16Le.encode("héllo ✓"))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = pipe.read(&mut buf).unwrap();
        assert_eq!(
            Encoding::Utf16Le.decode(buf[..n].to_vec()).unwrap(),
            "echo: héllo ✓"
        );
        t.join().unwrap();
    }

    /// A .NET `PipeTransmissionMode.Message` pair on Windows: each write is one message, and
    /// one read returns one whole message. pipette's `message_pipe` on both sides, by the
    /// .NET name, with the scenario's strings.
    fn the_original_scenario_over_a_message_pipe_by_its_dotnet_name() {
        let name = unique("dotnet-msg");
        let options = ServerOptions::new().raw(true).message_pipe(true);
        let server = Server::bind_with(Name::dotnet(&name).unwrap(), &options).unwrap();
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
            for _ in 0..3 {
                let got = messenger::read(&mut conn, Duration::from_secs(10)).unwrap();
                messenger::write(&mut conn, &format!("echo: {got}"), Duration::from_secs(10))
                    .unwrap();
            }
        });
        let mut c = Client::connect_with(
            Name::dotnet(&name).unwrap(),
            &ClientOptions::new()
                .raw(true)
                .message_pipe(true)
                .wait(Duration::from_secs(10)),
        )
        .unwrap();
        for text in ["one", "twö ✓", &"y".repeat(2000)] {
            messenger::write(&mut c, text, Duration::from_secs(10)).unwrap();
            assert_eq!(
                messenger::read(&mut c, Duration::from_secs(10)).unwrap(),
                format!("echo: {text}")
            );
        }
        // The writer refuses what one read of the peer would not hold.
        assert!(
            messenger::write(&mut c, &"z".repeat(2049), Duration::from_secs(1))
                .unwrap_err()
                .contains("too large message")
        );
        t.join().unwrap();
    }
}
