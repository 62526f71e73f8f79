//! The reference clients of pipette's framed protocol in other languages (issue #16), against
//! the Rust implementation, each side a process of its own:
//!
//! - Python (`clients/python/pipette_client.py`): its unittest suite
//!   (`clients/python/test_pipette_client.py`) against Rust servers this binary starts (role
//!   `serve`); and the Rust client against the Python module's own server.
//! - C# (`clients/dotnet/PipetteClient.cs`, compiled with Mono's `mcs`, run with `mono`): the
//!   checks of `tests/clients/ClientChecks.cs` against the same Rust servers.
//!
//! Unix only (the clients' Windows code cannot run here: no CPython or .NET under Wine). A
//! missing `python3` or Mono makes its tests ignored with a notice, and a failure under
//! `CI=true`. The other-user test (status 1) also needs root and `setpriv`.

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
    // Nothing to run: see the module's documentation.
    support::main(&[], &[]);
}

#[cfg(unix)]
mod unix {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use pipette::{Access, Client, ClientOptions, Error, Server, ServerOptions};

    use super::csharp;
    use super::support::{self, tell, unique, Watched};

    const T: Duration = Duration::from_secs(10);
    /// How long a whole client suite may take before the test calls it hung.
    const HANG: Duration = Duration::from_secs(120);
    const NOBODY: &str = "65534";

    pub fn main() {
        let python = support::missing_tool("python3", "python3");
        let mono = csharp::missing();
        let other = support::missing_root_and_setpriv("to run a server as another user");
        let tests: Vec<(support::Test, Option<String>)> = vec![
            (
                (
                    "the_python_client_suite_passes_against_rust_servers",
                    the_python_client_suite_passes_against_rust_servers,
                ),
                python.clone(),
            ),
            (
                (
                    "the_python_client_is_refused_by_another_users_rust_server",
                    the_python_client_is_refused_by_another_users_rust_server,
                ),
                python.clone().or(other.clone()),
            ),
            (
                (
                    "the_rust_client_talks_to_the_python_server",
                    the_rust_client_talks_to_the_python_server,
                ),
                python,
            ),
            (
                (
                    "the_csharp_client_passes_its_checks_against_rust_servers",
                    the_csharp_client_passes_its_checks_against_rust_servers,
                ),
                mono.clone(),
            ),
            (
                (
                    "the_csharp_client_is_refused_by_another_users_rust_server",
                    the_csharp_client_is_refused_by_another_users_rust_server,
                ),
                mono.or(other),
            ),
        ];
        support::main_each(&tests, &[("serve", role_serve)]);
    }

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// `serve NAME MAX HANDSHAKE_MS ACCESS`: a framed Rust server until stdin closes; prints
    /// `ready PATH`. Each request is answered: `sleep MS` with `slept` after MS ms, `big N`
    /// with N bytes `x`, anything else with itself; the end of the client's direction ends
    /// the connection.
    fn role_serve(args: Vec<String>) {
        let access: Access = args[3].parse().unwrap();
        let server = Server::bind_with(
            args[0].as_str(),
            &ServerOptions::new()
                .max_message_size(args[1].parse().unwrap())
                .handshake_timeout(Duration::from_millis(args[2].parse().unwrap()))
                .access(access),
        )
        .expect("bind");
        support::stop_on_stdin_close(server.shutdown_handle());
        tell(&format!("ready {}", server.name().path().display()));
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while conn.recv_into(&mut buf).is_ok() {
                    let reply = match std::str::from_utf8(&buf) {
                        Ok(r) if r.starts_with("sleep ") => {
                            std::thread::sleep(Duration::from_millis(r[6..].parse().unwrap()));
                            b"slept".to_vec()
                        }
                        Ok(r) if r.starts_with("big ") => vec![b'x'; r[4..].parse().unwrap()],
                        _ => std::mem::take(&mut buf),
                    };
                    if conn.send(&reply).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// A Rust server in its own process, and where it listens.
    struct RustServer {
        child: Watched,
        path: String,
    }

    impl RustServer {
        fn start(name: &str, max: usize, access: &str) -> RustServer {
            Self::start_cmd(support::role_command(
                None,
                "serve",
                &[name, &max.to_string(), "1000", access],
            ))
        }

        fn start_cmd(cmd: Command) -> RustServer {
            let child = support::watch(cmd);
            let line = child.line_within(Duration::from_secs(60));
            let path = line
                .strip_prefix("ready ")
                .unwrap_or_else(|| panic!("the server said {line:?}"))
                .to_owned();
            RustServer { child, path }
        }
    }

    impl Drop for RustServer {
        fn drop(&mut self) {
            drop(self.child.stdin.take());
            if self.child.wait_timeout(Duration::from_secs(10)).code() != Some(0) {
                self.child.kill();
            }
        }
    }

    /// A private directory for absolute paths; removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str, mode: u32) -> Dir {
            use std::os::unix::fs::PermissionsExt;
            let d = std::env::temp_dir().join(unique(tag));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            Dir(d)
        }

        fn path(&self, file: &str) -> String {
            self.0.join(file).to_str().unwrap().to_owned()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `cmd` to its end (failing the test if it hangs), returning its output.
    fn run(mut cmd: Command, what: &str) -> Output {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let (out, err) = (read(Box::new(out)), read(Box::new(err)));
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > HANG {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {HANG:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    fn python_suite(tests: &[&str], env: &[(&str, &str)]) -> String {
        let dir = repo().join("clients/python");
        let mut cmd = Command::new("python3");
        cmd.current_dir(&dir)
            .args(["-B", "-m", "unittest", "-v"])
            .args(tests)
            .env("PIPETTE_TEST_REQUIRE", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(cmd, "the Python suite");
        let report = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "the Python suite failed:\n{report}");
        assert!(
            !report.contains("skipped"),
            "a Python test was skipped:\n{report}"
        );
        report
    }

    /// How many tests a unittest report says ran.
    fn ran(report: &str) -> usize {
        report
            .lines()
            .find_map(|l| l.strip_prefix("Ran "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn the_python_client_suite_passes_against_rust_servers() {
        let dir = Dir::new("py", 0o700);
        let big = RustServer::start(&dir.path("big.sock"), 16 << 20, "user");
        let small = RustServer::start(&dir.path("small.sock"), 4096, "user");
        // A short plain name, which maps to the same path before and after hashed names.
        let plain_name = unique("py");
        let plain = RustServer::start(&plain_name, 16 << 20, "user");
        let report = python_suite(
            &[
                "test_pipette_client.WireAndNames",
                "test_pipette_client.AgainstRust",
            ],
            &[
                ("PIPETTE_TEST_SERVER", &big.path),
                ("PIPETTE_TEST_SMALL_SERVER", &small.path),
                ("PIPETTE_TEST_PLAIN_NAME", &plain_name),
                ("PIPETTE_TEST_PLAIN_PATH", &plain.path),
            ],
        );
        assert!(ran(&report) >= 17, "too few tests ran:\n{report}");
        support::note(report);
    }

    /// A Rust server run as nobody (`access` user) at a path anyone may reach.
    fn nobodys_server(dir: &Dir) -> RustServer {
        let path = dir.path("other.sock");
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([&path, "65536", "1000", "user"])
        .env("PIPETTE_TEST_ROLE", "serve");
        RustServer::start_cmd(cmd)
    }

    pub fn the_python_client_is_refused_by_another_users_rust_server() {
        let dir = Dir::new("py-other", 0o1777);
        let other = nobodys_server(&dir);
        let report = python_suite(
            &["test_pipette_client.AccessDenied"],
            &[
                ("PIPETTE_TEST_OTHER_SERVER", &other.path),
                ("PIPETTE_TEST_OTHER_UID", NOBODY),
            ],
        );
        assert_eq!(ran(&report), 1, "{report}");
    }

    /// `python3 pipette_client.py serve NAME ...`: the Python module's server.
    fn python_server(name: &str, extra: &[&str]) -> (Watched, String) {
        let mut cmd = Command::new("python3");
        cmd.arg("-B")
            .arg(repo().join("clients/python/pipette_client.py"))
            .args(["serve", name])
            .args(extra);
        let child = support::watch(cmd);
        let line = child.line_within(Duration::from_secs(60));
        let path = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("the Python server said {line:?}"))
            .to_owned();
        (child, path)
    }

    pub fn the_rust_client_talks_to_the_python_server() {
        let dir = Dir::new("py-srv", 0o700);
        let (mut server, path) = python_server(&dir.path("py.sock"), &["--max-size", "4096"]);
        let opts = ClientOptions::new().wait(T);
        let mut conn = Client::connect_with(path.as_str(), &opts).unwrap();
        // The first message goes right behind the hello; the reply comes with the echo.
        conn.send(b"hello from rust").unwrap();
        assert_eq!(conn.recv().unwrap(), b"hello from rust");
        conn.send(b"").unwrap();
        assert_eq!(conn.recv().unwrap(), b"");
        let full = vec![7u8; 4096];
        conn.send(&full).unwrap();
        assert_eq!(conn.recv().unwrap(), full);
        // Larger than the Python server accepts: refused before anything is written.
        match conn.send(&[0u8; 4097]) {
            Err(Error::MessageTooLarge { .. }) => {}
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        conn.send(b"still usable").unwrap();
        assert_eq!(conn.recv().unwrap(), b"still usable");
        conn.recv_timeout(Duration::from_millis(50))
            .expect_err("nothing more was sent");
        // Orderly close: the Python server ends its side in turn.
        let (tx, mut rx) = conn.split();
        tx.close().unwrap();
        assert!(matches!(rx.recv(), Err(Error::Closed)), "no orderly close");
        drop(rx);

        // A Rust client whose hello the Python server cannot accept: a raw peer's bytes.
        let mut raw =
            Client::connect_with(path.as_str(), &ClientOptions::new().raw(true).wait(T)).unwrap();
        raw.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut got = Vec::new();
        while let Ok(chunk) = raw.recv_timeout(T) {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(
            got, b"PIPETTE!\x00\x00\x04\x00\x00\x00\x00\x00",
            "status 4 (bad hello), then the close"
        );

        // A plain name: the Rust client finds the Python server where the rule says.
        let plain = unique("py-plain");
        let (mut by_name, _) = python_server(&plain, &[]);
        let mut conn = Client::connect_with(plain.as_str(), &opts).unwrap();
        conn.send(b"by name").unwrap();
        assert_eq!(conn.recv().unwrap(), b"by name");
        drop(conn);
        for s in [&mut server, &mut by_name] {
            drop(s.stdin.take());
            assert!(s.wait_timeout(T).success(), "the Python server failed");
        }
        assert!(
            !Path::new(&path).exists(),
            "the Python server left its socket"
        );
    }

    /// The C# reference client and its checks, compiled together.
    fn csharp_checks() -> PathBuf {
        let root = repo();
        csharp::compile(
            &Path::new(env!("CARGO_TARGET_TMPDIR")).join("dotnet"),
            "ClientChecks",
            &[
                root.join("clients/dotnet/PipetteClient.cs"),
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/ClientChecks.cs"),
            ],
        )
    }

    /// Runs the C# checks; every line must be `ok CHECK`, and `expected` must all be there.
    fn run_csharp(args: &[&str], expected: &[&str]) {
        let exe = csharp_checks();
        let mut peer = csharp::start(&exe, args, &[]);
        let lines = peer.rest();
        let status = peer.wait();
        assert!(status.success(), "the C# checks failed: {lines:#?}");
        for line in &lines {
            assert!(line.starts_with("ok "), "a C# check failed: {lines:#?}");
        }
        for check in expected {
            assert!(
                lines.iter().any(|l| l == &format!("ok {check}")),
                "the C# check {check} did not run: {lines:#?}"
            );
        }
    }

    pub fn the_csharp_client_passes_its_checks_against_rust_servers() {
        let dir = Dir::new("cs", 0o700);
        let big = RustServer::start(&dir.path("big.sock"), 16 << 20, "user");
        let small = RustServer::start(&dir.path("small.sock"), 4096, "user");
        let plain_name = unique("cs");
        let plain = RustServer::start(&plain_name, 16 << 20, "user");
        run_csharp(
            &["server", &big.path, &small.path, &plain_name, &plain.path],
            &[
                "wire-bytes",
                "names",
                "echo",
                "plain-name",
                "zero-round-trip",
                "server-limit",
                "own-limit",
                "version-0",
                "bad-hello",
                "handshake-timeout",
                "timeout",
                "end-header",
                "not-found",
            ],
        );
    }

    pub fn the_csharp_client_is_refused_by_another_users_rust_server() {
        let dir = Dir::new("cs-other", 0o1777);
        let other = nobodys_server(&dir);
        run_csharp(&["other", &other.path], &["untrusted", "access-denied"]);
    }
}
