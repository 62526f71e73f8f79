//! The one small helper every scenario file shares: run tests, and run *roles* in child
//! processes so that server and client really are different processes.
//!
//! Each test binary has a `main` that calls [`main`] with its tests and its roles. A test
//! starts a role with [`spawn`]: the same test binary is executed again with
//! `PIPETTE_TEST_ROLE` set, and [`main`] runs that role instead of the tests. Roles talk back
//! through stdout lines (for example `ready`), read with [`Child::line`].

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};

pub type Test = (&'static str, fn());
pub type Role = (&'static str, fn(Vec<String>));

const ROLE_VAR: &str = "PIPETTE_TEST_ROLE";

/// Runs the role named in the environment, or else the tests.
pub fn main(tests: &[Test], roles: &[Role]) {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (_, run) = roles
            .iter()
            .find(|(name, _)| *name == role)
            .unwrap_or_else(|| panic!("unknown role {role}"));
        run(args);
        std::process::exit(0);
    }
    let args = Arguments::from_args();
    let trials = tests
        .iter()
        .map(|&(name, f)| {
            Trial::test(name, move || {
                f();
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// A name no other test (or test run) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process running a role; killed when dropped.
pub struct Child {
    child: std::process::Child,
    out: BufReader<ChildStdout>,
    pub stdin: Option<ChildStdin>,
}

/// Starts `role` with `args` in a new process.
pub fn spawn(role: &str, args: &[&str]) -> Child {
    spawn_with(role, args, &[])
}

/// Starts `role` with extra environment variables.
pub fn spawn_with(role: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE_VAR, role)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn child role");
    let out = BufReader::new(child.stdout.take().unwrap());
    let stdin = child.stdin.take();
    Child { child, out, stdin }
}

impl Child {
    /// The next line the child printed (panics at end of output).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.out.read_line(&mut s).unwrap();
        assert!(n > 0, "child ended without printing the expected line");
        s.trim_end().to_owned()
    }

    /// Waits for the child to print `expected`.
    pub fn expect(&mut self, expected: &str) {
        let got = self.line();
        assert_eq!(got, expected, "unexpected line from child");
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends a line to the child's stdin.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGKILL (or TerminateProcess), then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child to exit on its own, at most `limit`.
    pub fn wait_timeout(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "child did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Child {
    /// Closes the child's stdin (roles shut down gracefully on that, removing their
    /// endpoints), gives it a moment, then kills whatever is left.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

/// Reads one line from the parent (for roles that wait for instructions).
pub fn read_stdin_line() -> Option<String> {
    let mut s = String::new();
    match std::io::stdin().read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim_end().to_owned()),
    }
}

/// Prints a line for the parent and flushes it.
pub fn tell(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Runs `f` on a thread and fails if it has not finished within `limit` (to turn a hang
/// into a failure with a message). This is a hang check, not a speed check: limits are
/// generous.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// A message whose content depends on `seq` and `len`, so reordering or corruption shows.
pub fn pattern(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

// ---- roles used by several scenario files ----

/// `echo NAME [max_size]`: a framed echo server, a thread per connection, until stdin closes.
pub fn role_echo(args: Vec<String>) {
    let mut opts = pipette::ServerOptions::new();
    if let Some(max) = args.get(1) {
        opts = opts.max_message_size(max.parse().unwrap());
    }
    let server = opts.bind(args[0].as_str()).expect("bind");
    stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    for conn in server.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            while conn.recv_into(&mut buf).is_ok() {
                if conn.send(&buf).is_err() {
                    break;
                }
            }
        });
    }
}

/// Shuts `handle` down when the parent closes our stdin (or dies).
pub fn stop_on_stdin_close(handle: pipette::Shutdown) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        handle.shutdown();
    });
}
