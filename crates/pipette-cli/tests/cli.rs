//! The `pipette` command, run as separate processes, the way a person would.
//!
//! A libtest-mimic harness (`harness = false`): a test that needs a tool this machine lacks
//! (socat; root and setpriv) is reported as ignored, saying what to install; with `CI=true`
//! it fails instead, so CI never passes by skipping.
//!
//! Some tests are Unix-only, each for a reason given where it is registered in `main`: no
//! signals on Windows, no socat or setpriv there, no half-close on a raw Windows pipe, and no
//! stale endpoints (a pipe disappears with its server).
//!
//! Assertions are about what the command does, never about how fast: time appears only as
//! generous hang limits, so a loaded machine is slow but never fails a test.
//!
//! `PIPETTE_CLI_BIN=/path/to/pipette` runs the suite against another build (for example
//! the one before a fix, to see its test fail).
//!
//! The test binary doubles as a child program for `serve --exec` (`PIPETTE_TEST_CHILD`):
//! that works the same on Unix and under Wine, where `sh` is missing.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// Real C# peers (Mono), shared with the library's tests.
#[cfg(unix)]
#[path = "../../pipette/tests/support/csharp.rs"]
mod csharp;

/// How long any one command may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Harness

fn main() {
    if let Ok(mode) = std::env::var("PIPETTE_TEST_CHILD") {
        child_program(&mode);
        return;
    }
    let args = Arguments::from_args();
    #[cfg_attr(windows, allow(unused_mut))]
    let mut tests = vec![
        test(
            "call_gets_the_echo_and_sigterm_stops_the_server_cleanly",
            call_gets_the_echo,
        ),
        test(
            "send_delivers_each_argument_as_one_message_to_listen",
            send_delivers_each_argument,
        ),
        test("errors_are_one_line_saying_what_to_do", errors_are_one_line),
        test(
            "call_waits_for_a_server_that_starts_later",
            call_waits_for_a_server,
        ),
        test(
            "a_second_server_on_a_live_name_is_refused",
            a_second_server_is_refused,
        ),
        test(
            "demo_runs_clients_and_server_as_processes_and_cleans_up",
            demo_runs,
        ),
        // Issue #12, defect 2.
        test(
            "durations_out_of_range_are_usage_errors",
            durations_out_of_range_are_usage_errors,
        ),
        // Defect 3.
        test(
            "call_json_talks_to_a_typed_server_and_checks_both_directions",
            call_json,
        ),
        test(
            "call_raw_prints_every_chunk_of_the_reply",
            call_raw_prints_every_chunk,
        ),
        test("listen_raw_is_byte_exact", listen_raw_is_byte_exact),
        // Defect 4.
        test(
            "send_of_large_messages_to_an_echo_server_does_not_deadlock",
            send_large_to_echo,
        ),
        test(
            "call_to_listen_ends_instead_of_waiting_forever",
            call_to_listen_ends,
        ),
        test(
            "timeout_is_one_deadline_for_the_whole_exchange",
            timeout_is_one_deadline,
        ),
        // Defect 5.
        test(
            "a_client_whose_max_size_is_exceeded_says_so",
            client_max_size_exceeded,
        ),
        test(
            "call_raw_to_a_framed_server_fails_clearly",
            call_raw_to_framed_server,
        ),
        // The CLI people expect.
        test(
            "ten_megabytes_go_through_byte_for_byte",
            ten_megabytes_byte_for_byte,
        ),
        test(
            "standard_input_is_one_message_unless_split",
            stdin_whole_or_split,
        ),
        test("output_formats_keep_message_boundaries", output_formats),
        test("connect_pumps_lines_both_ways", connect_pumps_lines),
        test(
            "serve_exec_runs_a_child_per_connection",
            serve_exec_child_per_connection,
        ),
        test(
            "a_message_too_large_for_the_server_names_its_max_size",
            too_large_for_server,
        ),
        test(
            "bad_values_are_usage_errors_in_the_flags_words",
            bad_values_are_usage_errors,
        ),
        test(
            "access_is_for_servers_and_trust_for_clients",
            access_and_trust_sides,
        ),
        test(
            "listen_ends_when_its_reader_does",
            listen_ends_with_its_reader,
        ),
        test("logs_have_no_colour_codes_and_plain_pids", logs_are_plain),
        test("help_has_examples_and_the_exit_statuses", help_has_examples),
        test("completions_and_man_pages_generate", completions_and_man),
    ];
    // Unix only: SIGTERM (Windows has no signals to send to a child process).
    #[cfg(unix)]
    tests.extend([
        test(
            "a_server_whose_stderr_is_closed_still_stops_on_sigterm",
            stderr_closed_sigterm,
        ),
        test(
            "a_server_whose_stderr_is_full_still_runs_and_stops",
            stderr_full_sigterm,
        ),
    ]);
    // Unix only: stale endpoints (a Windows pipe disappears with its server) and the
    // registry of explicit paths.
    #[cfg(unix)]
    tests.extend([
        test("ls_shows_live_and_stale_endpoints", ls_shows_live_and_stale),
        test("ls_json_ls_empty_and_clean", ls_json_empty_and_clean),
    ]);
    // Unix only: a raw connection needs a half-close to say "my side is done" and still read
    // the answer; a raw Windows pipe has none. Non-UTF-8 arguments: Windows arguments are
    // UTF-16. `sh` for --exec.
    #[cfg(unix)]
    tests.extend([
        test("raw_call_and_connect_end_on_a_half_close", raw_half_close),
        test("arguments_need_not_be_utf8", arguments_need_not_be_utf8),
        test("serve_exec_with_a_shell_script", serve_exec_shell),
    ]);
    // Unix only: socat, setpriv.
    #[cfg(unix)]
    tests.extend([
        needs(
            "a_framed_server_logs_a_protocol_error_for_a_raw_peer",
            has_socat,
            framed_server_and_raw_peer,
        ),
        needs(
            "raw_mode_talks_to_socat",
            has_socat,
            raw_mode_talks_to_socat,
        ),
        needs(
            "call_refuses_a_server_of_another_user_unless_trusted",
            has_root_and_setpriv,
            call_refuses_another_users_server,
        ),
    ]);
    // .NET names and text encodings (issue #16): pipette on both sides everywhere; a real
    // C# peer (Mono) on Unix, where Mono is available.
    tests.extend([
        test(
            "dotnet_names_and_utf16_text_between_two_pipettes",
            dotnet_between_two_pipettes,
        ),
        test(
            "encoding_converts_framed_messages_and_refuses_what_is_not_text",
            encoding_framed,
        ),
    ]);
    #[cfg(unix)]
    tests.extend([
        needs(
            "call_dotnet_talks_to_a_csharp_server",
            has_mono,
            call_dotnet_to_csharp_server,
        ),
        needs(
            "serve_and_listen_dotnet_answer_a_csharp_client",
            has_mono,
            serve_and_listen_dotnet_for_csharp_client,
        ),
    ]);
    libtest_mimic::run(&args, tests).exit();
}

fn test(name: &str, f: fn()) -> Trial {
    Trial::test(name, move || {
        f();
        Ok(())
    })
}

/// A test that needs a tool: ignored (saying what to install) when the tool is missing,
/// a failure when `CI=true`.
#[cfg_attr(windows, allow(dead_code))]
fn needs(name: &str, check: fn() -> Result<(), String>, f: fn()) -> Trial {
    let name = name.to_owned();
    Trial::ignorable_test(name.clone(), move || match check() {
        Ok(()) => {
            f();
            Ok(Completion::Completed)
        }
        Err(what) if std::env::var("CI").as_deref() == Ok("true") => {
            Err(Failed::from(format!("CI=true and this test needs {what}")))
        }
        Err(what) => {
            eprintln!("NOTICE: {name} ignored: it needs {what}");
            Ok(Completion::ignored_with(format!("needs {what}")))
        }
    })
}

#[cfg(unix)]
fn has_socat() -> Result<(), String> {
    match Command::new("socat").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("socat (apt-get install socat)".into()),
    }
}

#[cfg(unix)]
fn has_mono() -> Result<(), String> {
    match csharp::missing() {
        None => Ok(()),
        Some(what) => Err(what),
    }
}

#[cfg(unix)]
fn has_root_and_setpriv() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0");
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    match (root, setpriv) {
        (true, true) => Ok(()),
        (false, _) => Err("root (to run a server as another user)".into()),
        (true, false) => Err("setpriv (apt-get install util-linux)".into()),
    }
}

/// The `--exec` child programs of the tests: `upper-lines` and `upper-nul` answer each
/// record with the record in capitals; `upper-once` answers one line, then exits.
fn child_program(mode: &str) {
    let delim = if mode == "upper-nul" { 0 } else { b'\n' };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    let mut record = Vec::new();
    loop {
        record.clear();
        if input.read_until(delim, &mut record).unwrap_or(0) == 0 {
            return;
        }
        if record.last() == Some(&delim) {
            record.pop();
        }
        record.make_ascii_uppercase();
        record.push(delim);
        if out.write_all(&record).and_then(|()| out.flush()).is_err() || mode == "upper-once" {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn exe() -> String {
    std::env::var("PIPETTE_CLI_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pipette").to_owned())
}

fn pipette() -> Command {
    let mut c = Command::new(exe());
    c.env("RUST_LOG", "info").env("NO_COLOR", "1");
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn hash(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Collects everything a pipe delivers, on a thread.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match from.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

/// Waits (a few seconds at most) until the threads collecting these pipes have seen their
/// end: the process is gone, but what it wrote may still be on its way.
fn settle(bufs: &[&Arc<Mutex<Vec<u8>>>]) {
    let start = Instant::now();
    while bufs.iter().any(|b| Arc::strong_count(b) > 1) && start.elapsed() < Duration::from_secs(5)
    {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a child, killing it and failing the test after `limit`.
fn wait_limit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: hung");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `pipette ARGS` with `input` on its standard input; fails the test if it hangs.
fn run_input(args: &[&str], input: &[u8]) -> Output {
    run_cmd(pipette().args(args), input, &format!("pipette {args:?}"))
}

fn run_cmd(cmd: &mut Command, input: &[u8], what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let status = wait_limit(&mut child, HANG, what);
    settle(&[&out, &err]);
    let stdout = out.lock().unwrap().clone();
    let stderr = err.lock().unwrap().clone();
    Output {
        status,
        stdout,
        stderr,
    }
}

fn run(args: &[&str]) -> Output {
    run_input(args, b"")
}

/// A `pipette serve`/`listen` process whose output is collected; stopped on drop.
struct Server {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Its standard input: closing it stops the server on Windows (the tests' stand-in for
    /// a signal there, `--exit-on-stdin-close`).
    #[cfg_attr(unix, allow(dead_code))]
    stdin: Option<std::process::ChildStdin>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_with(pipette().args(args))
    }

    fn start_with(cmd: &mut Command) -> Server {
        #[cfg(windows)]
        cmd.arg("--exit-on-stdin-close");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the "serving on"/"listening on" log line.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains(" on ") {
            line.clear();
            assert!(
                err.read_line(&mut line).unwrap() > 0,
                "server exited early: {:?}",
                child.wait()
            );
        }
        let stdin = child.stdin.take();
        Server {
            stdout: collect(child.stdout.take().unwrap()),
            stderr: collect(err),
            child,
            stdin,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server's standard output satisfies `done`.
    fn wait_stdout(&self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let start = Instant::now();
        loop {
            let out = self.stdout.lock().unwrap().clone();
            if done(&out) {
                return out;
            }
            assert!(
                start.elapsed() < HANG,
                "the server's output never got there; it is:\n{}",
                text(&out)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server as a person would (SIGTERM; on Windows the end of its standard
    /// input) and returns its exit status, standard output and standard error.
    fn stop(mut self) -> (ExitStatus, Vec<u8>, String) {
        #[cfg(unix)]
        sigterm(self.child.id());
        #[cfg(windows)]
        drop(self.stdin.take());
        let status = wait_limit(&mut self.child, HANG, "the server's shutdown");
        settle(&[&self.stdout, &self.stderr]);
        let out = self.stdout.lock().unwrap().clone();
        let err = text(&self.stderr.lock().unwrap());
        (status, out, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            #[cfg(unix)]
            {
                sigterm(self.child.id());
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kill -TERM pid`, with kill(1): the tests stay free of unsafe code.
#[cfg(unix)]
fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[cfg(unix)]
fn socket_path(name: &str) -> std::path::PathBuf {
    pipette::Name::new(name).unwrap().path().to_owned()
}

/// A directory of this test's own, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        TempDir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes that are not text: every byte value, in a pattern that does not repeat quickly.
fn binary(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The original tests

fn call_gets_the_echo() {
    let name = unique("echo");
    let server = Server::start(&["serve", &name]);
    let out = run(&["call", &name, "hello there"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello there\n");
    #[cfg(unix)]
    let path = socket_path(&name);
    #[cfg(unix)]
    assert!(path.exists());
    let (status, _, err) = server.stop();
    assert!(status.success(), "exit status {status}: {err}");
    assert!(err.contains("client connected"), "logs connects: {err}");
    assert!(err.contains("shutting down"), "{err}");
    #[cfg(unix)]
    assert!(!path.exists(), "endpoint removed after SIGTERM");
}

fn send_delivers_each_argument() {
    let name = unique("listen");
    let server = Server::start(&["listen", &name]);
    let out = run(&["send", &name, "one", "two words", "three"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = server.wait_stdout(|o| o.ends_with(b"three\n"));
    assert_eq!(text(&printed), "one\ntwo words\nthree\n");
    let (status, _, _) = server.stop();
    assert!(status.success());
}

fn errors_are_one_line() {
    let name = unique("absent");
    let out = run(&["call", &name, "hi"]);
    assert_eq!(out.status.code(), Some(3), "not found");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("pipette: no server is listening on"),
        "{err}"
    );
    assert!(err.contains("start the server first"), "{err}");
    assert!(err.contains("--wait"), "names the flag that waits: {err}");

    let out = run(&["serve", "../etc"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an invalid name is a usage error"
    );
    assert!(
        text(&out.stderr).contains("invalid endpoint name"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["call", &name, "hi", "--wait", "0.2"]);
    assert_eq!(out.status.code(), Some(5), "timed out");
    let err = text(&out.stderr);
    assert!(err.contains("connect timed out"), "{err}");
    assert!(err.contains(&name) && err.contains("--wait"), "{err}");
}

fn call_waits_for_a_server() {
    let name = unique("wait");
    let mut waiting = pipette()
        .args(["call", &name, "patience", "--wait", "10", "--timeout", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    let _server = Server::start(&["serve", &name]);
    let out = collect(waiting.stdout.take().unwrap());
    let err = collect(waiting.stderr.take().unwrap());
    let status = wait_limit(&mut waiting, HANG, "call --wait");
    settle(&[&out, &err]);
    assert!(status.success(), "{}", text(&err.lock().unwrap()));
    assert_eq!(text(&out.lock().unwrap()), "patience\n");
}

fn a_second_server_is_refused() {
    let name = unique("twice");
    let first = Server::start(&["serve", &name]);
    let out = run(&["serve", &name]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("already served by a live process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert_eq!(text(&run(&["call", &name, "still"]).stdout), "still\n");
}

#[cfg(unix)]
fn ls_shows_live_and_stale() {
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
fn framed_server_and_raw_peer() {
    let name = unique("proto");
    let server = Server::start(&["serve", &name]);
    let path = socket_path(&name);
    let out = run_cmd(
        Command::new("socat").args(["-t", "1", "-", &format!("UNIX-CONNECT:{}", path.display())]),
        b"GET / HTTP/1.0\r\n\r\n",
        "socat",
    );
    assert!(out.stdout.starts_with(b"PIPETTE!"), "{:?}", out.stdout);
    assert_eq!(
        text(&run(&["call", &name, "ok"]).stdout),
        "ok\n",
        "still serving"
    );
    let (status, _, err) = server.stop();
    assert!(status.success());
    assert!(
        err.contains("protocol error") && err.contains("raw"),
        "{err}"
    );
}

#[cfg(unix)]
fn raw_mode_talks_to_socat() {
    let name = unique("raw");
    let _server = Server::start(&["serve", &name, "--raw"]);
    let path = socket_path(&name);
    let out = run_cmd(
        Command::new("socat").args(["-t", "1", "-", &format!("UNIX-CONNECT:{}", path.display())]),
        b"echo me\n",
        "socat",
    );
    assert_eq!(text(&out.stdout), "echo me\n");
    // And the other way: pipette's raw client to a socat server that answers in two writes.
    let dir = TempDir::new("socat");
    let sock = dir.0.join("s.sock");
    let script = dir.file(
        "answer.sh",
        b"read l; printf '%s' \"$l\"; sleep 0.2; printf ' back'\n",
    );
    let mut socat = Command::new("socat")
        .args(["-t", "5"])
        .arg(format!("UNIX-LISTEN:{}", sock.display()))
        .arg(format!("EXEC:sh {script}"))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !sock.exists() {
        assert!(start.elapsed() < HANG, "socat never listened");
        thread::sleep(Duration::from_millis(10));
    }
    let out = run(&["call", "--raw", sock.to_str().unwrap(), "hi\n"]);
    let _ = socat.kill();
    let _ = socat.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi back");
}

fn demo_runs() {
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
fn call_refuses_another_users_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(unique("trust"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // The build directory may not be reachable by other users: run a copy.
    let copy = dir.join("pipette");
    std::fs::copy(exe(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("impostor.sock");
    let sock = sock.to_str().unwrap();
    let server = Server::start_with(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(["serve", "--access", "everyone", sock])
            .env("RUST_LOG", "info"),
    );
    let refused = run(&["call", sock, "secret"]);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "refused: {stderr}");
    assert!(refused.stdout.is_empty(), "printed the impostor's reply");
    assert!(
        stderr.contains("refusing to talk") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert!(stderr.contains("--trust"), "names the flag: {stderr}");
    let trusted = run(&["call", "--trust", "user:65534", sock, "hi"]);
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert_eq!(text(&trusted.stdout), "hi\n");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// Issue #12's defects

/// Defect 1: a server whose standard error is a closed pipe (`pipette serve x 2>&1 | head
/// -1`) still stops on SIGTERM, and removes its endpoint.
#[cfg(unix)]
fn stderr_closed_sigterm() {
    let name = unique("closed-stderr");
    let mut child = pipette()
        .args(["serve", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, as `head -1` does, then close the pipe.
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("serving on"), "{line}");
    drop(err);
    // A connection makes the server log (into the closed pipe) before the signal.
    let call = run(&["call", &name, "a"]);
    sigterm(child.id());
    let status = wait_limit(
        &mut child,
        HANG,
        "serve with a closed stderr, after SIGTERM",
    );
    assert!(status.success(), "{status}");
    assert_eq!(text(&call.stdout), "a\n", "served with a closed stderr");
    assert!(!socket_path(&name).exists(), "endpoint removed");
}

/// Defect 1: `2>/dev/full` (every log write fails) neither kills the server nor keeps it
/// from stopping.
#[cfg(unix)]
fn stderr_full_sigterm() {
    let name = unique("full-stderr");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = pipette()
        .args(["serve", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let out = run(&["call", &name, "still here", "--wait", "20"]);
    assert_eq!(text(&out.stdout), "still here\n", "{}", text(&out.stderr));
    assert_eq!(child.try_wait().unwrap(), None, "the server is running");
    sigterm(child.id());
    let status = wait_limit(&mut child, HANG, "serve 2>/dev/full, after SIGTERM");
    assert!(status.success(), "{status}");
}

/// Defect 2: infinite, huge, NaN and negative durations are usage errors, never a panic.
fn durations_out_of_range_are_usage_errors() {
    let name = unique("durations");
    for (flag, value) in [
        ("--wait", "inf"),
        ("--wait", "1e20"),
        ("--wait", "NaN"),
        ("--wait", "-0.5"),
        ("--timeout", "inf"),
        ("--timeout", "1e20"),
        ("--timeout", "soon"),
    ] {
        let out = run(&["call", &name, "hi", &format!("{flag}={value}")]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A raw server in this process (the library's raw mode): reads what comes, then answers
/// `parts` with a pause between them, then closes.
fn raw_answering_server(
    name: &str,
    parts: &'static [&'static [u8]],
) -> thread::JoinHandle<Vec<u8>> {
    let server =
        pipette::Server::bind_with(name, &pipette::ServerOptions::new().raw(true)).unwrap();
    thread::spawn(move || {
        let mut conn = server.accept().unwrap();
        let got = conn.recv().unwrap();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                thread::sleep(Duration::from_millis(300));
            }
            conn.send(part).unwrap();
        }
        got
    })
}

/// `call --json` (issue #14): the argument is checked and sent compact, so that a Rust
/// server's `recv_value_with(Codec::Json)` reads it; the reply is printed as one compact line;
/// a reply that is not JSON, bad JSON given, and --json with --raw are clear errors.
fn call_json() {
    use pipette::Codec;
    use serde_json::{json, Value};

    // A typed server in this process: two requests, a JSON answer then one that is not JSON.
    let name = unique("json");
    let server = pipette::Server::bind(&name).unwrap();
    let typed = thread::spawn(move || {
        let mut got = Vec::new();
        for answer in [&b""[..], b"not json"] {
            let mut conn = server.accept().unwrap();
            let req: Value = conn.recv_value_with(Codec::Json).unwrap();
            if answer.is_empty() {
                let sum = req["args"].as_array().unwrap().iter();
                let sum: i64 = sum.map(|v| v.as_i64().unwrap()).sum();
                conn.send_value_with(&json!({"sum": sum, "note": "n\u{e9}e\n"}), Codec::Json)
                    .unwrap();
            } else {
                conn.send(answer).unwrap();
            }
            got.push(req);
        }
        got
    });
    let out = run(&[
        "call",
        "--json",
        &name,
        r#"{ "op": "add", "args": [1, 2, 39] }"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"note\":\"n\u{e9}e\\n\",\"sum\":42}\n");
    let out = run(&["call", "--json", &name, r#"{"op": "add", "args": []}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("is not JSON") && err.contains("without --json"),
        "{err}"
    );
    assert_eq!(
        typed.join().unwrap(),
        [
            json!({"op": "add", "args": [1, 2, 39]}),
            json!({"op": "add", "args": []})
        ]
    );

    // Checked before anything connects: bad JSON, and --json with a raw mode.
    let out = run(&["call", "--json", &name, "{op: add}"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a JSON value"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["call", "--json", "--raw", &name, "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Defect 3: `call --raw` prints the whole reply, however many writes the peer used.
fn call_raw_prints_every_chunk() {
    let name = unique("raw-chunks");
    let server = raw_answering_server(&name, &[b"first ", b"second ", b"third"]);
    let out = run(&["call", "--raw", &name, "hi"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "first second third");
    assert_eq!(server.join().unwrap(), b"hi");
}

/// Defect 3: `listen --raw` prints exactly the bytes received, whatever the read boundaries.
fn listen_raw_is_byte_exact() {
    let name = unique("raw-listen");
    let server = Server::start(&["listen", "--raw", &name]);
    let data = binary(1_000_000);
    let mut client =
        pipette::Client::connect_with(name.as_str(), &pipette::ClientOptions::new().raw(true))
            .unwrap();
    for chunk in data.chunks(77_777) {
        client.send(chunk).unwrap();
    }
    client.close().unwrap();
    server.wait_stdout(|o| o.len() >= data.len());
    let (status, out, err) = server.stop();
    assert!(status.success(), "{err}");
    assert_eq!(out.len(), data.len(), "bytes added or lost");
    assert!(out == data, "the bytes differ");
}

/// Defect 4: `send` of messages larger than the socket buffers to an echo server finishes:
/// it reads (and drops) the echoes instead of deadlocking with the server.
fn send_large_to_echo() {
    let name = unique("send-echo");
    let _server = Server::start(&["serve", &name]);
    // Arguments on Unix (as the original report did); files on Windows, whose command line
    // is limited to 32 KiB.
    let big = "x".repeat(100_000);
    #[cfg(unix)]
    let args: Vec<&str> = std::iter::repeat_n(big.as_str(), 12).collect();
    #[cfg(windows)]
    let dir = TempDir::new("send-echo");
    #[cfg(windows)]
    let files: Vec<String> = (0..12)
        .map(|i| format!("@{}", dir.file(&format!("m{i}"), big.as_bytes())))
        .collect();
    #[cfg(windows)]
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let mut all = vec!["send", name.as_str()];
    all.extend(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Defect 4: `call` to a server that never answers (`listen`) ends instead of waiting for
/// ever: it closes its side, the server closes, and call says no reply came.
fn call_to_listen_ends() {
    let name = unique("call-listen");
    let server = Server::start(&["listen", &name]);
    let out = run(&["call", &name, "anyone?"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without replying"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.wait_stdout(|o| !o.is_empty()), b"anyone?\n");
}

/// Defect 4: `--timeout` is one deadline for the exchange, not a limit on each wait: a
/// server that trickles its reply one byte every 100 ms (so that no single wait is long)
/// still ends a `call --timeout 1` with a timeout, well before the reply could complete
/// (100 s).
fn timeout_is_one_deadline() {
    use pipette::frame::{Header, Reply, HELLO_LEN};
    let name = unique("trickle");
    let server =
        pipette::Server::bind_with(name.as_str(), &pipette::ServerOptions::new().raw(true))
            .unwrap();
    let trickle = thread::spawn(move || {
        let mut conn = server.accept().unwrap();
        let mut hello = Vec::new();
        while hello.len() < HELLO_LEN {
            hello.extend(conn.recv().unwrap());
        }
        conn.send(&Reply::accept(1, 1 << 20).encode()).unwrap();
        conn.send(&Header::new(1000).encode()).unwrap();
        for _ in 0..1000 {
            if conn.send(b"x").is_err() {
                return; // the client gave up
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let out = run(&["call", "--timeout", "1", &name, "hi"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "timed out: {err}");
    assert!(err.contains("--timeout") && err.contains(&name), "{err}");
    assert!(out.stdout.is_empty());
    trickle.join().unwrap();
}

/// Defect 5: a reply larger than the client's own `--max-size` is reported as such, not as
/// a bare "the peer closed the connection".
fn client_max_size_exceeded() {
    let name = unique("client-max");
    let _server = Server::start(&["serve", &name]);
    let big = "y".repeat(5000);
    let out = run(&["call", "--max-size", "4096", &name, &big]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--max-size"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Defect 5: `call --raw` to a framed server is an error that says to drop --raw, not the
/// server's binary refusal printed with success.
fn call_raw_to_framed_server() {
    let name = unique("raw-framed");
    let _server = Server::start(&["serve", &name]);
    let out = run(&["call", "--raw", &name, "hello"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(out.stdout.is_empty(), "printed {:?}", out.stdout);
    assert!(err.contains("--raw"), "{err}");
}

// ---------------------------------------------------------------------------------------
// The CLI people expect

/// 10 MB of binary through send/listen (a file) and call/serve (a file, and stdin), byte
/// for byte.
fn ten_megabytes_byte_for_byte() {
    let data = binary(10_000_000);
    let dir = TempDir::new("10mb");
    let file = dir.file("data.bin", &data);

    let listen_name = unique("10mb-listen");
    let listener = Server::start(&["listen", "-o", "raw", &listen_name]);
    let out = run(&["send", &listen_name, &format!("@{file}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = listener.wait_stdout(|o| o.len() >= data.len());
    assert_eq!(got.len(), data.len());
    assert_eq!(hash(&got), hash(&data), "send → listen changed the bytes");

    let serve_name = unique("10mb-serve");
    let _server = Server::start(&["serve", &serve_name]);
    let out = run(&["call", &serve_name, "--file", &file, "-o", "raw"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(
        hash(&out.stdout),
        hash(&data),
        "call --file changed the bytes"
    );

    let out = run_input(&["call", &serve_name, "-", "-o", "raw"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(hash(&out.stdout), hash(&data), "call - changed the bytes");
}

/// `-` is all of standard input as one message, or one message per line / NUL with
/// `--split`; files and arguments go in the order given.
fn stdin_whole_or_split() {
    let name = unique("stdin");
    let server = Server::start(&["listen", "-o", "json", &name]);
    let dir = TempDir::new("stdin");
    let file = dir.file("f.txt", b"from a file");
    let out = run_input(
        &["send", &name, "first", "-", "--file", &file, "last"],
        b"a\nb\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_input(&["send", &name, "-", "--split", "lines"], b"c\r\nd\n\ne");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_input(&["send", &name, "-", "--split", "nul"], b"f\0g\0");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = server.wait_stdout(|o| o.ends_with(b"{\"text\":\"g\"}\n"));
    let expected = [
        "first",
        "a\\nb\\n",
        "from a file",
        "last",
        "c",
        "d",
        "",
        "e",
        "f",
        "g",
    ]
    .map(|t| format!("{{\"text\":\"{t}\"}}\n"))
    .concat();
    assert_eq!(text(&printed), expected);
    let out = run(&["send", &name, "-", "-"]);
    assert_eq!(out.status.code(), Some(2), "stdin twice");
}

/// Each output format: a message with a newline stays one message, binary survives, and
/// no control character reaches the terminal in lines, hex or json.
fn output_formats() {
    let dir = TempDir::new("formats");
    let bin = dir.file("bin", b"\x1b[2J\xff\x00");
    let messages = ["two\nlines", "back\\slash", &format!("@{bin}")];
    let expect = [
        ("lines", "two\\nlines\nback\\\\slash\n\\x1b[2J\\xff\\x00\n".as_bytes().to_vec()),
        ("hex", b"74776f0a6c696e6573\n6261636b5c736c617368\n1b5b324aff00\n".to_vec()),
        (
            "json",
            b"{\"text\":\"two\\nlines\"}\n{\"text\":\"back\\\\slash\"}\n{\"base64\":\"G1sySv8A\"}\n"
                .to_vec(),
        ),
        ("nul", b"two\nlines\0back\\slash\0\x1b[2J\xff\x00\0".to_vec()),
        ("raw", b"two\nlinesback\\slash\x1b[2J\xff\x00".to_vec()),
    ];
    for (format, expected) in expect {
        let name = unique("formats");
        let server = Server::start(&["listen", &name, "--output", format]);
        let mut args = vec!["send", name.as_str()];
        args.extend(messages.iter().copied());
        let out = run(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = server.wait_stdout(|o| o.len() >= expected.len());
        assert_eq!(printed, expected, "--output {format}");
    }
    // call prints its reply the same way.
    let echo = unique("formats-echo");
    let _echo = Server::start(&["serve", &echo]);
    for (format, expected) in [
        ("lines", &b"two\\nlines\n"[..]),
        ("hex", b"74776f0a6c696e6573\n"),
        ("json", b"{\"text\":\"two\\nlines\"}\n"),
        ("nul", b"two\nlines\0"),
        ("raw", b"two\nlines"),
    ] {
        let out = run(&["call", &echo, "two\nlines", "-o", format]);
        assert_eq!(out.stdout, expected, "call -o {format}");
    }
}

/// `connect`: each line of standard input is a message, each reply a line; it ends on end
/// of input once the server has closed, and at once when the server closes first.
fn connect_pumps_lines() {
    let name = unique("connect");
    let _server = Server::start(&["serve", &name]);
    let out = run_input(&["connect", &name], b"one\ntwo\n\nthree");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n\nthree\n");
    let out = run_input(
        &["connect", &name, "--split", "nul", "-o", "nul"],
        b"a\nb\0c\0",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"a\nb\0c\0");
    // The server closes first (a child that answers once): connect ends although its
    // standard input stays open.
    let exec = unique("connect-once");
    let _once = Server::start_with(
        pipette()
            .args(["serve", &exec, "--exec", &child_cmd()])
            .env("PIPETTE_TEST_CHILD", "upper-once"),
    );
    let mut c = pipette()
        .args(["connect", &exec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    let out = collect(c.stdout.take().unwrap());
    let status = wait_limit(&mut c, HANG, "connect after the server closed");
    settle(&[&out]);
    assert!(status.success());
    assert_eq!(text(&out.lock().unwrap()), "HELLO\n");
    drop(stdin);
}

/// The `--exec` command that runs this test binary as a child program.
fn child_cmd() -> String {
    format!("\"{}\"", std::env::current_exe().unwrap().display())
}

/// `serve --exec`: one child per connection; each message is a line (or a NUL-terminated
/// chunk) on its standard input, and each line it writes is a message back.
fn serve_exec_child_per_connection() {
    let name = unique("exec");
    let server = Server::start_with(
        pipette()
            .args(["serve", &name, "--exec", &child_cmd()])
            .env("PIPETTE_TEST_CHILD", "upper-lines"),
    );
    let out = run(&["call", &name, "make me loud"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "MAKE ME LOUD\n");
    let out = run_input(&["connect", &name], b"a\nb\n");
    assert_eq!(text(&out.stdout), "A\nB\n");
    let nul = unique("exec-nul");
    let _nul = Server::start_with(
        pipette()
            .args(["serve", &nul, "--exec", &child_cmd(), "--split", "nul"])
            .env("PIPETTE_TEST_CHILD", "upper-nul"),
    );
    let out = run_input(
        &["connect", &nul, "--split", "nul", "-o", "nul"],
        b"x\ny\0z\0",
    );
    assert_eq!(out.stdout, b"X\nY\0Z\0");
    let (status, _, err) = server.stop();
    assert!(status.success(), "{err}");
    assert_eq!(err.matches("the child exited").count(), 2, "{err}");
}

/// A message larger than the server's `--max-size` is refused before it is sent, and the
/// error names the server's `--max-size`.
fn too_large_for_server() {
    let name = unique("server-max");
    let _server = Server::start(&["serve", &name, "--max-size", "4096"]);
    let out = run(&["send", &name, &"z".repeat(5000)]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--max-size") && err.contains("4096"), "{err}");
    assert!(!err.contains("max_message_size"), "{err}");
}

fn bad_values_are_usage_errors() {
    let name = unique("usage");
    for args in [
        vec!["call", &name, "hi", "--max-size", "10"],
        vec!["call", &name, "hi", "--max-size", "lots"],
        vec!["serve", &name, "--max-size", "100"],
        vec!["listen", &name, "--raw", "-o", "json"],
        vec!["call", &name, "hi", "--trust", "nobody-knows"],
        vec!["send", &name, "hi", "--split", "lines"],
    ] {
        let out = run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            !err.contains("I/O error") && !err.contains("max_message_size"),
            "{err}"
        );
    }
    let out = run(&["call", &name, "hi", "--max-size", "10"]);
    assert!(text(&out.stderr).contains("--max-size"));
}

fn access_and_trust_sides() {
    let name = unique("sides");
    for args in [
        vec!["call", &name, "hi", "--access", "user"],
        vec!["send", &name, "hi", "--access", "user"],
        vec!["serve", &name, "--trust", "user"],
        vec!["listen", &name, "--trust", "user"],
        vec!["serve", &name, "--access", "nobody"],
    ] {
        assert_eq!(run(&args).status.code(), Some(2), "{args:?}");
    }
    let help = text(&run(&["serve", "--help"]).stdout);
    assert!(help.contains("user") && help.contains("group") && help.contains("everyone"));
}

/// `listen | head -1`: the listener ends, with success, when its output's reader does.
fn listen_ends_with_its_reader() {
    let name = unique("head");
    let mut child = pipette()
        .args(["listen", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert!(run(&["send", &name, "first", "--wait", "20"])
        .status
        .success());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first\n");
    drop(out); // head -1 exits
               // The next message cannot be printed: the listener stops.
    let _ = run(&["send", &name, "second"]);
    let _ = run(&["send", &name, "third"]);
    let status = wait_limit(&mut child, HANG, "listen after its reader went away");
    assert!(status.success(), "{status}");
}

/// Logs without colour codes when standard error is not a terminal (even without
/// NO_COLOR), and process ids as plain numbers.
fn logs_are_plain() {
    let name = unique("logs");
    let server = Server::start_with(pipette().args(["serve", &name]).env_remove("NO_COLOR"));
    assert!(run(&["call", &name, "hi"]).status.success());
    let (_, _, err) = server.stop();
    assert!(!err.contains('\x1b'), "colour codes: {err:?}");
    assert!(!err.contains("Some("), "{err}");
    let pid = err
        .split("pid=")
        .nth(1)
        .unwrap_or_else(|| panic!("no pid in {err}"));
    assert!(pid.starts_with(|c: char| c.is_ascii_digit()), "{err}");
}

fn help_has_examples() {
    let top = text(&run(&["--help"]).stdout);
    for line in [
        "Exit status",
        "2  usage",
        "3  not found",
        "4  refused",
        "5  timed out",
    ] {
        assert!(top.contains(line), "{line:?} missing from:\n{top}");
    }
    for cmd in [
        "serve",
        "listen",
        "send",
        "call",
        "connect",
        "ls",
        "clean",
        "completions",
        "man",
    ] {
        let help = text(&run(&[cmd, "--help"]).stdout);
        assert!(help.contains("Examples:"), "{cmd} --help:\n{help}");
        assert!(
            help.contains(&format!("pipette {cmd}")),
            "{cmd} --help:\n{help}"
        );
    }
}

fn completions_and_man() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(
            script.contains("connect") && script.contains("everyone"),
            "{shell}"
        );
    }
    let out = run(&["man"]);
    assert!(out.status.success());
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH pipette"),
        "{page}"
    );
    assert!(page.contains("connect"), "{page}");
    let out = run(&["man", "serve"]);
    assert!(text(&out.stdout).contains(".TH pipette-serve"));
    assert_eq!(run(&["man", "nope"]).status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// Unix only

/// `ls --json`, `ls` with nothing to show, and `clean`, in a private runtime directory
/// (XDG_RUNTIME_DIR) so that other tests' endpoints do not show.
#[cfg(unix)]
fn ls_json_empty_and_clean() {
    let dir = TempDir::new("xdg");
    let xdg = dir.0.to_str().unwrap().to_owned();
    let with_xdg = |args: &[&str]| {
        run_cmd(
            pipette().args(args).env("XDG_RUNTIME_DIR", &xdg),
            b"",
            "pipette",
        )
    };

    let out = with_xdg(&["ls"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("no endpoints"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&with_xdg(&["ls", "--json"]).stdout).trim(), "[]");

    let explicit = dir.0.join("explicit.sock");
    let explicit = explicit.to_str().unwrap();
    let live = Server::start_with(
        pipette()
            .args(["serve", "live"])
            .env("XDG_RUNTIME_DIR", &xdg),
    );
    let mut dead = Server::start_with(
        pipette()
            .args(["serve", "dead"])
            .env("XDG_RUNTIME_DIR", &xdg),
    );
    let mut dead_path = Server::start_with(
        pipette()
            .args(["serve", explicit])
            .env("XDG_RUNTIME_DIR", &xdg),
    );
    for s in [&mut dead, &mut dead_path] {
        s.child.kill().unwrap(); // SIGKILL: the endpoints stay behind
        s.child.wait().unwrap();
    }
    let out = with_xdg(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let find = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from {list}"))
            .clone()
    };
    assert_eq!(find("live")["state"], "live");
    assert_eq!(find("live")["pid"], live.pid());
    assert_eq!(find("dead")["state"], "stale");
    assert_eq!(
        find(explicit)["state"],
        "stale",
        "explicit paths are listed"
    );
    assert_eq!(find(explicit)["path"], explicit);

    // A live endpoint is never cleaned; the stale ones are.
    let out = with_xdg(&["clean", "live"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("live"), "{}", text(&out.stderr));
    let out = with_xdg(&["clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cleaned = text(&out.stdout);
    assert!(
        cleaned.contains("removed dead") && cleaned.contains(explicit),
        "{cleaned}"
    );
    let left = text(&with_xdg(&["ls"]).stdout);
    assert_eq!(left.lines().count(), 1, "{left}");
    assert!(left.starts_with("live\tlive\t"), "{left}");
    assert!(!std::path::Path::new(explicit).exists());
    drop(live);
}

/// Raw mode: `call --raw` and `connect --raw` close their sending side at the end of their
/// input and print everything the peer sends until it closes.
#[cfg(unix)]
fn raw_half_close() {
    let name = unique("raw-echo");
    let _server = Server::start(&["serve", "--raw", &name]);
    let data = binary(3_000_000);
    let out = run_input(&["connect", "--raw", &name], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        hash(&out.stdout),
        hash(&data),
        "connect --raw changed the bytes"
    );
    let out = run_input(&["call", "--raw", &name, "-"], &data);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        hash(&out.stdout),
        hash(&data),
        "call --raw changed the bytes"
    );
    let exec = unique("raw-exec");
    let _exec = Server::start(&["serve", "--raw", &exec, "--exec", "tr a-z A-Z"]);
    let out = run_input(&["connect", "--raw", &exec], b"no\nnewline at the end");
    assert_eq!(text(&out.stdout), "NO\nNEWLINE AT THE END");
}

#[cfg(unix)]
fn arguments_need_not_be_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let name = unique("bytes");
    let server = Server::start(&["listen", "-o", "hex", &name]);
    let out = pipette()
        .args(["send", &name])
        .arg(OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.wait_stdout(|o| o.ends_with(b"\n")), b"fffe\n");
}

#[cfg(unix)]
fn serve_exec_shell() {
    let name = unique("exec-sh");
    let _server = Server::start(&[
        "serve",
        &name,
        "--exec",
        "echo \"hello from $PIPETTE_NAME\"; while read -r l; do echo \"got $l\"; echo \"and again\"; done",
    ]);
    let out = run_input(&["connect", &name], b"one\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("hello from {name}\ngot one\nand again\n")
    );
}

// ---------------------------------------------------------------------------------------
// .NET names and text encodings (issue #16)

/// Where `Name::dotnet(name)` is on Unix with `TMPDIR=tmpdir`, as .NET's rule has it.
#[cfg(unix)]
fn dotnet_path(tmpdir: &std::path::Path, name: &str) -> std::path::PathBuf {
    tmpdir.join(format!("CoreFxPipe_{name}"))
}

/// `--dotnet` on both sides: the server is at .NET's path under `TMPDIR`, it is raw (no
/// handshake: `--raw` is implied), and `--encoding utf-16le` puts .NET's bytes on the wire.
fn dotnet_between_two_pipettes() {
    let tmp = TempDir::new("dn-tmp");
    let with_tmp = |args: &[&str]| {
        let mut c = pipette();
        c.args(args).env("TMPDIR", &tmp.0);
        c
    };
    // call on a raw connection needs a half-close to end its request (Unix only, as in
    // raw_half_close); send and listen below run everywhere.
    #[cfg(unix)]
    {
        let name = unique("dn");
        let echo = Server::start_with(&mut with_tmp(&["serve", "--dotnet", &name]));
        let path = dotnet_path(&tmp.0, &name);
        assert!(path.exists(), "no socket at .NET's path {}", path.display());
        let out = run_cmd(
            &mut with_tmp(&[
                "call",
                "--dotnet",
                &name,
                "héllo ✓ 😀",
                "--encoding",
                "utf-16le",
            ]),
            b"",
            "call --dotnet",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "héllo ✓ 😀");
        // The same server by its path, raw: the echo is the UTF-16LE bytes.
        let path_str = path.to_str().unwrap().to_owned();
        let out = run_input(
            &["call", "--raw", &path_str, "-"],
            &[b'h', 0, 0xe9, 0, 0x13, 0x27],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(out.stdout, [b'h', 0, 0xe9, 0, 0x13, 0x27]);
        drop(echo);
    }

    // listen without --encoding prints the bytes on the wire: send --encoding utf-16le put
    // .NET's Encoding.Unicode there (no byte order mark, no length prefix).
    let name = unique("dn-listen");
    let listen = Server::start_with(&mut with_tmp(&["listen", "--dotnet", &name]));
    let out = run_cmd(
        &mut with_tmp(&["send", "--dotnet", &name, "hé✓", "--encoding", "utf-16le"]),
        b"",
        "send --dotnet",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wire = listen.wait_stdout(|o| o.len() >= 6);
    assert_eq!(wire, [b'h', 0, 0xe9, 0, 0x13, 0x27]);
    drop(listen);

    // A name .NET would refuse is a usage-style error before anything is bound.
    let out = run_cmd(
        &mut with_tmp(&["serve", "--dotnet", "anonymous"]),
        b"",
        "serve --dotnet anonymous",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("anonymous"),
        "{}",
        text(&out.stderr)
    );
}

/// `--encoding` in framed mode: each message is converted as a whole, both ways; text that
/// is not UTF-8 is refused with a word on what to do.
fn encoding_framed() {
    let name = unique("enc");
    let _echo = Server::start(&["serve", &name]);
    let out = run(&["call", &name, "née ✓", "--encoding", "utf-16le"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "née ✓\n");
    let out = run(&["call", &name, "née ✓", "--encoding", "utf-8"]);
    assert_eq!(text(&out.stdout), "née ✓\n");

    let listen_name = unique("enc-listen");
    let listen = Server::start(&["listen", &listen_name, "-o", "hex"]);
    let out = run(&["send", &listen_name, "hé", "--encoding", "utf-16le"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(listen.wait_stdout(|o| o.ends_with(b"\n")), b"6800e900\n");
    drop(listen);

    // listen --encoding utf-16le turns what arrives into UTF-8 before printing it.
    let listen_name = unique("enc-listen16");
    let listen = Server::start(&["listen", &listen_name, "--encoding", "utf-16le"]);
    let dir = TempDir::new("enc");
    let utf16 = dir.file("utf16", &[b'o', 0, b'k', 0, 0x13, 0x27]);
    let out = run(&["send", &listen_name, "-f", &utf16]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&listen.wait_stdout(|o| o.ends_with(b"\n"))), "ok✓\n");
    drop(listen);

    let not_text = dir.file("bin", b"a\xffb");
    let out = run(&["call", &name, "-f", &not_text, "--encoding", "utf-16le"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not UTF-8 text (at byte 1)"),
        "{}",
        text(&out.stderr)
    );
}

/// The compiled C# scenario of the library's tests (tests/dotnet/OriginalPipes.cs).
#[cfg(unix)]
fn original_pipes() -> std::path::PathBuf {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipette/tests/dotnet/OriginalPipes.cs");
    csharp::compile(
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dotnet"),
        "OriginalPipes",
        &[src],
    )
}

/// `pipette call --dotnet NAME TEXT --encoding utf-16le` against a C#
/// `NamedPipeServerStream(NAME)` that answers "echo: " + the request in one write.
#[cfg(unix)]
fn call_dotnet_to_csharp_server() {
    let tmp = TempDir::new("dn-cs");
    let tmpdir = tmp.0.to_str().unwrap().to_owned();
    let name = unique("cs-srv");
    let exe = original_pipes();
    let mut server = csharp::start(&exe, &["server", &name], &[("TMPDIR", &tmpdir)]);
    server.expect_exactly("listening");
    assert!(dotnet_path(&tmp.0, &name).exists(), "Mono's socket moved");
    let call = |msg: &str| {
        run_cmd(
            pipette()
                .args(["call", "--dotnet", &name, msg, "--encoding", "utf-16le"])
                .env("TMPDIR", &tmpdir),
            b"",
            "call --dotnet",
        )
    };
    let out = call("héllo ✓ 😀");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "echo: héllo ✓ 😀");
    server.expect(&format!("request {}", csharp::escape("héllo ✓ 😀")));
    server.expect_exactly("client left");
    // "bye": the C# server hangs up without answering; call prints nothing and succeeds
    // (a raw peer's close is the end of its reply).
    let out = call("bye");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    server.expect("request bye");
    server.expect_exactly("hanging up");
    // The C# server refuses to write an answer larger than its 4096-byte buffer and sends
    // that error instead.
    let out = call("big 3000");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "error: too large message: 6000 bytes, more than 4096"
    );
    server.expect("refused too large message");
    server.say("exit");
    server.expect("stopped");
    assert!(server.wait().success());
}

/// A C# `NamedPipeClientStream(".", NAME)` against `pipette serve --dotnet NAME` (a byte
/// echo) and `pipette listen --dotnet NAME --encoding utf-16le` (prints the text).
#[cfg(unix)]
fn serve_and_listen_dotnet_for_csharp_client() {
    let tmp = TempDir::new("dn-cc");
    let tmpdir = tmp.0.to_str().unwrap().to_owned();
    let exe = original_pipes();
    let name = unique("cs-cli");
    let echo = Server::start_with(
        pipette()
            .args(["serve", "--dotnet", &name])
            .env("TMPDIR", &tmpdir),
    );
    let mut client = csharp::start(
        &exe,
        &["client", &name, "hi", "héllo ✓ 😀"],
        &[("TMPDIR", &tmpdir)],
    );
    client.expect("reply hi");
    client.expect_exactly(&format!("reply {}", csharp::escape("héllo ✓ 😀")));
    assert!(client.wait().success(), "{:?}", client.seen);
    let (status, _, err) = echo.stop();
    assert!(status.success(), "{err}");

    let name = unique("cs-cli-listen");
    let listen = Server::start_with(
        pipette()
            .args(["listen", "--dotnet", &name, "--encoding", "utf-16le"])
            .env("TMPDIR", &tmpdir),
    );
    // "!TEXT": the C# client writes TEXT and exits at once.
    let mut client = csharp::start(&exe, &["client", &name, "!née ✓"], &[("TMPDIR", &tmpdir)]);
    assert!(client.wait().success(), "{:?}", client.seen);
    let printed = listen.wait_stdout(|o| o.ends_with("✓".as_bytes()));
    assert_eq!(text(&printed), "née ✓");
    let (status, _, err) = listen.stop();
    assert!(status.success(), "{err}");
    assert!(err.contains("client disconnected"), "{err}");
}
