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
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};

pub type Test = (&'static str, fn());
pub type Role = (&'static str, fn(Vec<String>));

const ROLE_VAR: &str = "PIPETTE_TEST_ROLE";

/// Runs the role named in the environment, or else the tests.
pub fn main(tests: &[Test], roles: &[Role]) {
    main_with_ignored(tests, &[], roles);
}

thread_local! {
    static NOTES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records a line about what a test saw (an expected error's text, a figure): printed only if
/// the test fails, so that a passing run prints nothing that looks like a problem; printed at
/// once with `PIPETTE_TEST_VERBOSE=1` (to collect the figures).
pub fn note(line: impl Into<String>) {
    let line = line.into();
    if std::env::var_os("PIPETTE_TEST_VERBOSE").is_some() {
        eprintln!("{line}");
    }
    NOTES.with(|n| n.borrow_mut().push(line));
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
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what} did not finish within {limit:?}"),
        // `f` panicked: report its own panic, not a timeout.
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("{what} ended without a result"),
        },
    }
}

/// Runs `round(i)` for `i` in `0..rounds` on a thread, and fails if any one round takes
/// longer than `hang` (a hang check: a round that never ends, such as a wait that spins or
/// sleeps forever, becomes a failure naming that round). `what(i)` describes round `i`.
pub fn rounds_within(
    rounds: u64,
    hang: Duration,
    what: impl Fn(u64) -> String,
    mut round: impl FnMut(u64) + Send + 'static,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        for i in 0..rounds {
            round(i);
            if tx.send(i).is_err() {
                return;
            }
        }
    });
    for i in 0..rounds {
        match rx.recv_timeout(hang) {
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) => {
                panic!("{} did not finish within {hang:?}", what(i))
            }
            Err(RecvTimeoutError::Disconnected) => match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("{} ended without finishing", what(i)),
            },
        }
    }
    worker.join().unwrap();
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
    let server = pipette::Server::bind_with(args[0].as_str(), &opts).expect("bind");
    stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    echo_each(server, |_| {});
}

/// Sends every message of `conn` back until a receive or a send fails; returns that error.
pub fn echo(mut conn: pipette::Connection) -> pipette::Error {
    let mut buf = Vec::new();
    loop {
        if let Err(e) = conn.recv_into(&mut buf) {
            return e;
        }
        if let Err(e) = conn.send(&buf) {
            return e;
        }
    }
}

/// Echoes each accepted connection on a thread of its own (failed accepts are skipped) until
/// the server shuts down; `end` gets the error that ended each connection.
pub fn echo_each(server: pipette::Server, end: fn(pipette::Error)) {
    for conn in server.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || end(echo(conn)));
    }
}

/// The runtime the async tests run their clients on: multi-thread, two workers.
#[cfg(feature = "tokio")]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Shuts `handle` down when the parent closes our stdin (or dies).
pub fn stop_on_stdin_close(handle: pipette::Shutdown) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        handle.shutdown();
    });
}

// ---- helpers of the reliability suite (hostile.rs, faults.rs, users.rs, load.rs) ----

use std::process::Child as StdChild;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

/// Like [`main`], with some tests marked ignored: they run only with `-- --ignored` (or
/// `--include-ignored`), for the long soak runs.
pub fn main_with_ignored(tests: &[Test], ignored: &[Test], roles: &[Role]) {
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
        .map(|t| trial(t, false))
        .chain(ignored.iter().map(|t| trial(t, true)))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// One test as a trial: its notes (see [`note`]) are printed only when it fails.
fn trial(&(name, f): &Test, ignored: bool) -> Trial {
    Trial::test(name, move || {
        NOTES.with(|n| n.borrow_mut().clear());
        let result = std::panic::catch_unwind(f);
        if let Err(panic) = result {
            let notes = NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()));
            for line in notes {
                eprintln!("[{name}] {line}");
            }
            std::panic::resume_unwind(panic);
        }
        Ok(())
    })
    .with_ignored_flag(ignored)
}

/// Like [`main`], for tests that need something this machine may lack (a tool such as
/// socat, root): `missing` says what to install when it is absent. Then the tests are
/// reported as ignored with a one-line notice, never as passed; under CI (`CI=true`) each
/// of them fails instead, so that CI cannot pass by skipping.
pub fn main_needing(tests: &[Test], roles: &[Role], missing: impl FnOnce() -> Option<String>) {
    let role_child = std::env::var_os(ROLE_VAR).is_some();
    match if role_child { None } else { missing() } {
        None => main(tests, roles),
        Some(what) if std::env::var("CI").as_deref() == Ok("true") => {
            let args = Arguments::from_args();
            let trials = tests
                .iter()
                .map(|&(name, _)| {
                    let what = what.clone();
                    Trial::test(name, move || {
                        Err(format!("CI=true and this test needs {what}").into())
                    })
                })
                .collect();
            libtest_mimic::run(&args, trials).exit();
        }
        Some(what) => {
            eprintln!("NOTICE: {} tests ignored: they need {what}", tests.len());
            main_with_ignored(&[], tests, roles)
        }
    }
}

/// Like [`main_needing`], with what each test needs checked on its own: `missing` is `None`
/// for a test that can run here, else what it lacks. A test that cannot run is reported as
/// ignored with a notice (a failure under `CI=true`), never as passed.
pub fn main_each(tests: &[(Test, Option<String>)], roles: &[Role]) {
    if std::env::var_os(ROLE_VAR).is_some() {
        return main(&[], roles);
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let runnable: Vec<Test> = tests
        .iter()
        .filter(|(_, missing)| missing.is_none())
        .map(|(t, _)| *t)
        .collect();
    let blocked: Vec<(Test, String)> = tests
        .iter()
        .filter_map(|(t, missing)| missing.clone().map(|m| (*t, m)))
        .collect();
    if blocked.is_empty() {
        return main(&runnable, roles);
    }
    if ci {
        let args = Arguments::from_args();
        let mut trials: Vec<Trial> = runnable.iter().map(|t| trial(t, false)).collect();
        for ((name, _), what) in blocked {
            trials.push(Trial::test(name, move || {
                Err(format!("CI=true and this test needs {what}").into())
            }));
        }
        libtest_mimic::run(&args, trials).exit();
    }
    for ((name, _), what) in &blocked {
        eprintln!("NOTICE: {name} ignored: it needs {what}");
    }
    let ignored: Vec<Test> = blocked.iter().map(|(t, _)| *t).collect();
    main_with_ignored(&runnable, &ignored, roles)
}

/// `None` when `tool` runs here (`tool -V` or `--version`), else what to install.
pub fn missing_tool(tool: &str, package: &str) -> Option<String> {
    let runs = |flag: &str| {
        Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if runs("-V") || runs("--version") {
        None
    } else {
        Some(format!("{tool} (install it: apt-get install {package})"))
    }
}

/// The command that runs `role` of this test binary (`exe`: the binary to run, by default
/// this one).
pub fn role_command(exe: Option<&std::path::Path>, role: &str, args: &[&str]) -> Command {
    let exe = exe
        .map(|p| p.to_owned())
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let mut cmd = Command::new(exe);
    cmd.env(ROLE_VAR, role).args(args);
    cmd
}

/// The throwaway user of the other-user tests (`scripts/reliability.sh setup` creates it).
#[cfg(unix)]
pub const OTHER_USER: &str = "pipette-other";

/// Why this process cannot run a peer as another user (`why` says what for), or `None`: it
/// needs root and `setpriv`.
#[cfg(unix)]
pub fn missing_root_and_setpriv(why: &str) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        Some(format!("root ({why})"))
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        Some("setpriv (apt-get install util-linux)".to_owned())
    } else {
        None
    }
}

/// The uid and gid of [`OTHER_USER`], if it exists.
#[cfg(unix)]
pub fn other_user_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, OTHER_USER]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    id("-u").zip(id("-g"))
}

/// Why this machine cannot run a peer as [`OTHER_USER`] (`why` says what for), or `None`.
#[cfg(unix)]
pub fn other_user_problem(why: &str) -> Option<String> {
    missing_root_and_setpriv(why).or_else(|| {
        other_user_ids()
            .is_none()
            .then(|| format!("the user {OTHER_USER} is missing; run scripts/reliability.sh setup"))
    })
}

/// A copy of this test binary at `dir/test-binary`, mode 0755, that other users can run
/// (the build directory may not be reachable by them), returned once it can be executed.
///
/// A process that another test's thread forks while the copy is open for writing keeps the
/// copy open until that process executes, and until then executing the copy fails with
/// `ETXTBSY` ("text file busy"); so this runs the copy (`--list`) until it starts.
#[cfg(unix)]
pub fn runnable_copy_of_this_binary(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = dir.join("test-binary");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Command::new(&exe).arg("--list").output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!(
                "cannot execute the copied test binary {}: {e}",
                exe.display()
            ),
            Ok(_) => return exe,
        }
    }
}

/// A child process whose stdout lines a thread collects, so that a test can wait for a line
/// with a time limit, and look at the child's memory and descriptors in `/proc`.
pub struct Watched {
    child: StdChild,
    lines: Receiver<String>,
    pub stdin: Option<ChildStdin>,
}

/// Starts `cmd` (see [`role_command`]) with piped stdin and stdout.
pub fn watch(mut cmd: Command) -> Watched {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn child");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    Watched {
        child,
        lines,
        stdin,
    }
}

/// Starts `role` of this test binary, watched.
pub fn spawn_watched(role: &str, args: &[&str]) -> Watched {
    watch(role_command(None, role, args))
}

impl Watched {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line, waiting at most `limit` (a hang check): `None` if the child ended.
    pub fn try_line(&self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("child {} printed nothing within {limit:?}", self.id())
            }
        }
    }

    /// The next line; panics if the child ended or printed nothing within `limit`.
    pub fn line_within(&self, limit: Duration) -> String {
        self.try_line(limit)
            .unwrap_or_else(|| panic!("child {} ended without the expected line", self.id()))
    }

    /// Lines already printed, without waiting.
    pub fn pending_lines(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// Waits (at most 60 s) for the child to print `expected`.
    pub fn expect(&self, expected: &str) {
        let got = self.line_within(Duration::from_secs(60));
        assert_eq!(got, expected, "unexpected line from child {}", self.id());
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGKILL, then reap.
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

    /// The child's resident memory (`VmRSS`) in KiB. Read from `/proc`, so measured on
    /// Linux only: elsewhere (a Windows process under Wine) it reports 0 and the memory
    /// bounds of the reliability suite are not checked; its functional checks still run.
    pub fn rss_kib(&self) -> u64 {
        if cfg!(target_os = "linux") {
            proc_status_kib(self.id(), "VmRSS").expect("VmRSS of the child")
        } else {
            0
        }
    }

    /// How many descriptors the child has open (Linux only, as for `rss_kib`; else 0).
    pub fn fd_count(&self) -> usize {
        if cfg!(target_os = "linux") {
            fd_count(self.id())
        } else {
            0
        }
    }
}

impl Drop for Watched {
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

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, …).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) used so far by process `pid`, or by the calling thread for
/// `None` (the other tests of a process run beside it), from /proc.
#[cfg(target_os = "linux")]
pub fn cpu_time(pid: Option<u32>) -> Duration {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/thread-self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap();
    // The fields after the command name (which may contain spaces) start after the last ')';
    // utime and stime are fields 14 and 15 of the line, 12 and 13 of that rest.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Elsewhere there is no /proc: the tests that need it are reported as ignored there.
#[cfg(not(target_os = "linux"))]
pub fn cpu_time(_pid: Option<u32>) -> Duration {
    panic!("needs Linux's /proc");
}

/// How many descriptors process `pid` has open (Linux only; else 0, as for the method: under
/// Wine `/proc/<pid>` would name whatever Linux process has the Windows pid's number).
pub fn fd_count(pid: u32) -> usize {
    if !cfg!(target_os = "linux") {
        return 0;
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `cond` until it holds; panics with `what` after `limit` (a hang check).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small deterministic random generator (xorshift64*), seeded so a failure can be
/// replayed: tests print their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Seed from `PIPETTE_SEED` if set, else from the clock; printed either way.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("PIPETTE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        note(format!("{what}: PIPETTE_SEED={seed}"));
        Rng::new(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// FNV-1a, the checksum the load and fault tests put in their messages.
pub fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The variant of an error, for log lines that tests parse.
pub fn error_kind(e: &pipette::Error) -> &'static str {
    use pipette::Error as E;
    match e {
        E::InvalidName { .. } => "InvalidName",
        E::NotFound { .. } => "NotFound",
        E::AddrInUse { .. } => "AddrInUse",
        E::UntrustedServer { .. } => "UntrustedServer",
        E::Refused { .. } => "Refused",
        E::InvalidConfig(_) => "InvalidConfig",
        E::Broken(_) => "Broken",
        E::NotUtf8(_) => "NotUtf8",
        E::PermissionDenied(_) => "PermissionDenied",
        E::TimedOut { .. } => "TimedOut",
        E::Shutdown => "Shutdown",
        E::Closed => "Closed",
        E::MessageTooLarge { .. } => "MessageTooLarge",
        E::Protocol { .. } => "Protocol",
        E::Io { .. } => "Io",
        _ => "Other",
    }
}

/// `guarded NAME HANDSHAKE_MS WRITE_MS`: an echo server with a handshake timeout and a
/// write timeout, a thread per connection, that logs the end of every connection on stdout
/// as `end <ErrorVariant> <message>` (and on stderr, as a server would log it), until stdin
/// closes.
pub fn role_guarded(args: Vec<String>) {
    let handshake = Duration::from_millis(args[1].parse().unwrap());
    let write = Duration::from_millis(args[2].parse().unwrap());
    let server = pipette::Server::bind_with(
        args[0].as_str(),
        &pipette::ServerOptions::new().handshake_timeout(handshake),
    )
    .expect("bind");
    stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    for conn in server.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                eprintln!("guarded server: accept failed: {e}");
                tell(&format!("accept-error {} {e}", error_kind(&e)));
                continue;
            }
        };
        conn.set_write_timeout(Some(write));
        std::thread::spawn(move || {
            let e = echo(conn);
            tell(&format!("end {} {e}", error_kind(&e)));
        });
    }
}

/// A well-behaved client that keeps doing verified echo round trips in the background
/// (mixed sizes up to 64 KiB), to prove that a server keeps serving throughout a test.
pub struct Steady {
    rounds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Steady {
    pub fn start(name: &str) -> Steady {
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (r, s, e, name) = (
            rounds.clone(),
            stop.clone(),
            errors.clone(),
            name.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let fail = |m: String| e.lock().unwrap().push(m);
            let mut c =
                match pipette::Client::connect_timeout(name.as_str(), Duration::from_secs(10)) {
                    Ok(c) => c,
                    Err(err) => return fail(format!("connect: {err}")),
                };
            // A hang limit, not a speed check.
            c.set_read_timeout(Some(Duration::from_secs(30)));
            c.set_write_timeout(Some(Duration::from_secs(30)));
            let mut seq = 0u64;
            while !s.load(Ordering::SeqCst) {
                let len = [0usize, 1, 100, 4096, 65536][(seq % 5) as usize];
                let msg = pattern(seq, len);
                if let Err(err) = c.send(&msg) {
                    return fail(format!("send #{seq}: {err}"));
                }
                match c.recv() {
                    Ok(got) if got == msg => {}
                    Ok(got) => return fail(format!("echo #{seq} differs ({} bytes)", got.len())),
                    Err(err) => return fail(format!("recv #{seq}: {err}")),
                }
                seq += 1;
                r.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Steady {
            rounds,
            stop,
            errors,
            thread: Some(thread),
        }
    }

    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Waits until `n` more round trips have succeeded (hang limit 30 s); fails at once on
    /// an error of the steady client.
    pub fn progress(&self, n: u64, when: &str) {
        let target = self.rounds() + n;
        let start = Instant::now();
        while self.rounds() < target {
            let errors = self.errors.lock().unwrap().clone();
            assert!(
                errors.is_empty(),
                "well-behaved client failed {when}: {errors:?}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "well-behaved client made no progress {when}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops, and checks that every round trip succeeded; returns how many there were.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let errors = self.errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "well-behaved client failed: {errors:?}");
        self.rounds()
    }
}

impl Drop for Steady {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Raises the soft limit on open descriptors as far as the hard limit allows; returns it.
#[cfg(unix)]
pub fn raise_fd_limit(want: u64) -> u64 {
    rlimit::increase_nofile_limit(want).unwrap_or(1024)
}

/// Windows has no per-process descriptor limit to raise (pipe instances are bounded
/// elsewhere).
#[cfg(not(unix))]
pub fn raise_fd_limit(want: u64) -> u64 {
    want
}

/// Threads that are about to block in a call, so that a test can wait until they really are
/// blocked before it acts (a shutdown test that shuts down before its calls block tests
/// less than it claims).
///
/// Each thread calls [`Blockers::entering`] right before its blocking call. On Linux
/// [`Blockers::wait_blocked`] then reads `/proc/self/task/<tid>/stat` until every such thread
/// is asleep in the kernel; elsewhere (Windows under Wine) it can only wait until every thread
/// has entered, then pause a little.
#[derive(Default)]
pub struct Blockers {
    tids: Mutex<Vec<i64>>,
}

impl Blockers {
    pub fn new() -> Arc<Blockers> {
        Arc::new(Blockers::default())
    }

    /// Called by a thread right before it blocks.
    pub fn entering(&self) {
        self.tids.lock().unwrap().push(current_tid());
    }

    /// Waits until `n` threads have entered and (on Linux) are asleep in the kernel. A hang
    /// limit of 60 s turns a thread that never blocks into a failure.
    pub fn wait_blocked(&self, n: usize) {
        wait_until(
            Duration::from_secs(60),
            "threads entering their calls",
            || self.tids.lock().unwrap().len() >= n,
        );
        if cfg!(target_os = "linux") {
            let tids = self.tids.lock().unwrap().clone();
            wait_until(Duration::from_secs(60), "threads blocking", || {
                tids.iter().all(|&tid| thread_sleeping(tid))
            });
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(target_os = "linux")]
fn current_tid() -> i64 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

#[cfg(not(target_os = "linux"))]
fn current_tid() -> i64 {
    0
}

/// Whether thread `tid` of this process is asleep in the kernel (state `S` or `D`).
fn thread_sleeping(tid: i64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        // Gone: it is not running our call any more either.
        return true;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "S" || state == "D")
}

/// An error with its chain of sources, as one line (pipette's `Display` texts never repeat
/// their source).
pub fn full(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
