//! The `pipette` command, run as separate processes, the way a person would.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn pipette() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipette"));
    c.env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env("NO_COLOR", "1");
    c
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A `pipette serve`/`listen` process, killed on drop, whose stderr is collected.
struct Server {
    child: Child,
    #[cfg_attr(not(unix), allow(dead_code))]
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = pipette()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the "serving on"/"listening on" log line.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains(" on ") {
            line.clear();
            assert!(err.read_line(&mut line).unwrap() > 0, "server exited early");
        }
        // Keep draining stderr into a buffer on a thread so the server never blocks on it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            let _ = tx.send(rest);
        });
        Server { child, stderr: rx }
    }

    #[cfg(unix)]
    fn terminate(mut self) -> (std::process::ExitStatus, String, String) {
        // `kill(1)` rather than libc: the test stays free of unsafe code.
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let err = self.stderr.recv().unwrap();
        (status, out, err)
    }
}

impl Drop for Server {
    /// Stops the server the way a person would (SIGTERM, so it removes its endpoint), and
    /// kills it only if it does not exit.
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg_attr(not(unix), allow(dead_code))]
fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn run(args: &[&str]) -> Output {
    pipette().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn call_gets_the_echo_and_sigterm_stops_the_server_cleanly() {
    let name = unique("echo");
    let server = Server::start(&["serve", &name]);
    let out = run(&["call", &name, "hello there"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello there\n");
    #[cfg(unix)]
    {
        let path = pipette::Name::new(&name).unwrap().path().to_owned();
        assert!(path.exists());
        let (status, _, err) = server.terminate();
        assert!(status.success(), "exit status {status}: {err}");
        assert!(err.contains("client connected"), "logs connects: {err}");
        assert!(err.contains("shutting down"), "{err}");
        assert!(!path.exists(), "endpoint removed after SIGTERM");
    }
    #[cfg(not(unix))]
    drop(server);
}

#[test]
fn send_delivers_each_argument_as_one_message_to_listen() {
    let name = unique("listen");
    let server = Server::start(&["listen", &name]);
    let out = run(&["send", &name, "one", "two words", "three"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    #[cfg(unix)]
    {
        // Give the listener a moment to print, then stop it and read what it printed.
        std::thread::sleep(Duration::from_millis(200));
        let (status, out, _) = server.terminate();
        assert!(status.success());
        assert_eq!(out, "one\ntwo words\nthree\n");
    }
    #[cfg(not(unix))]
    drop(server);
}

#[test]
fn errors_are_one_line_saying_what_to_do() {
    let name = unique("absent");
    let out = run(&["call", &name, "hi"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pipette: no server is listening on"),
        "{err}"
    );
    assert!(err.contains("start the server first"), "{err}");

    let out = run(&["serve", "../etc"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid endpoint name"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["call", &name, "hi", "--wait", "0.2"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("connect timed out"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn call_waits_for_a_server_that_starts_later() {
    let name = unique("wait");
    let waiting = pipette()
        .args(["call", &name, "patience", "--wait", "10", "--timeout", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _server = Server::start(&["serve", &name]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "patience\n");
}

#[test]
fn a_second_server_on_a_live_name_is_refused() {
    let name = unique("twice");
    let first = Server::start(&["serve", &name]);
    let out = run(&["serve", &name]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("already served by a live process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert_eq!(text(&run(&["call", &name, "still"]).stdout), "still\n");
}

#[cfg(unix)]
#[test]
fn ls_shows_live_and_stale_endpoints() {
    let live = unique("ls-live");
    let stale = unique("ls-stale");
    let _live = Server::start(&["serve", &live]);
    let mut crashed = Server::start(&["serve", &stale]);
    crashed.child.kill().unwrap(); // SIGKILL leaves the endpoint behind
    crashed.child.wait().unwrap();
    let out = run(&["ls"]);
    assert!(out.status.success());
    let listing = text(&out.stdout);
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"))
            .split('\t')
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let l = row(&live);
    assert_eq!(l[1], "live");
    assert!(l[2].ends_with(&format!("{live}.sock")));
    assert_eq!(row(&stale)[1], "stale");
    // A new server recovers the stale name.
    let _again = Server::start(&["serve", &stale]);
    assert_eq!(text(&run(&["call", &stale, "back"]).stdout), "back\n");
}

#[cfg(unix)]
#[test]
fn a_framed_server_logs_a_protocol_error_for_a_raw_peer() {
    let name = unique("proto");
    let server = Server::start(&["serve", &name]);
    let path = pipette::Name::new(&name).unwrap().path().to_owned();
    let out = Command::new("socat")
        .args(["-t", "1", "-", &format!("UNIX-CONNECT:{}", path.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            c.wait_with_output()
        })
        .expect("run socat (apt-get install socat)");
    assert!(out.stdout.starts_with(b"PIPETTE!"), "{:?}", out.stdout);
    assert_eq!(
        text(&run(&["call", &name, "ok"]).stdout),
        "ok\n",
        "still serving"
    );
    let (status, _, err) = server.terminate();
    assert!(status.success());
    assert!(
        err.contains("protocol error") && err.contains("raw"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn raw_mode_talks_to_socat() {
    let name = unique("raw");
    let _server = Server::start(&["serve", &name, "--raw"]);
    let path = pipette::Name::new(&name).unwrap().path().to_owned();
    let out = Command::new("socat")
        .args(["-t", "1", "-", &format!("UNIX-CONNECT:{}", path.display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"echo me\n")?;
            c.wait_with_output()
        })
        .expect("run socat (apt-get install socat)");
    assert_eq!(text(&out.stdout), "echo me\n");
}

#[test]
fn demo_runs_clients_and_server_as_processes_and_cleans_up() {
    let out = run(&["demo", "--clients", "3", "--messages", "500"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(
        stdout
            .matches("500 round trips, every reply matched")
            .count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("endpoint removed"), "{stdout}");
    assert!(
        stdout.contains("median") && stdout.contains("p99"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

/// The client's check of the server (issue #10's scenario): a server run by `nobody` at a
/// socket in a shared sticky directory, and root's `pipette call` with default options. The
/// call refuses before sending anything and says who runs the server; `--trust` widens it.
/// Needs root (to run the server as another user with `setpriv`), as in CI.
#[cfg(unix)]
#[test]
fn call_refuses_a_server_of_another_user_unless_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0");
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !(root && setpriv) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root and setpriv in CI"
        );
        eprintln!("NOTICE: skipped: needs root and setpriv (util-linux)");
        return;
    }
    let dir = std::env::temp_dir().join(unique("trust"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The build directory may not be reachable by other users: run a copy.
    let exe = dir.join("pipette");
    std::fs::copy(env!("CARGO_BIN_EXE_pipette"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("impostor.sock");
    let sock = sock.to_str().unwrap();
    let mut server = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["serve", "--access", "everyone", sock])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains(" on ") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "server exited early");
    }
    let refused = run(&["call", sock, "secret"]);
    let stderr = text(&refused.stderr);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "printed the impostor's reply");
    assert!(
        stderr.contains("refusing to talk") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    let trusted = run(&["call", "--trust", "user:65534", sock, "hi"]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert_eq!(text(&trusted.stdout), "hi\n");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
