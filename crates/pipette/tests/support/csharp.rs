//! Real C# peers for the interop tests: compiled with Mono's `mcs` (C# 7) when a test binary
//! first needs them, run with `mono`, each a process of its own whose standard output lines
//! the test reads with a time limit.
//!
//! Self-contained (std only), so that the CLI's tests include it too
//! (`#[path = ".../csharp.rs"]`).

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// `None` when `mcs` and `mono` run here, else what to install.
pub fn missing() -> Option<String> {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if runs("mcs") && runs("mono") {
        None
    } else {
        Some(
            "Mono's C# compiler and runtime (apt-get install mono-mcs mono-runtime libmono-system-core4.0-cil)"
                .to_owned(),
        )
    }
}

/// Compiles `sources` into one program, once per distinct source text: the executable is
/// `<out_dir>/<stem>-<hash of the sources>.exe`, written under a temporary name and renamed,
/// so that test binaries running at the same time never see a half-written one.
pub fn compile(out_dir: &Path, stem: &str, sources: &[PathBuf]) -> PathBuf {
    static DONE: OnceLock<Mutex<HashMap<PathBuf, ()>>> = OnceLock::new();
    let mut h = DefaultHasher::new();
    for s in sources {
        std::fs::read(s)
            .unwrap_or_else(|e| panic!("read {}: {e}", s.display()))
            .hash(&mut h);
    }
    let exe = out_dir.join(format!("{stem}-{:016x}.exe", h.finish()));
    let done = DONE.get_or_init(Default::default);
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains_key(&exe) || exe.exists() {
        done.insert(exe.clone(), ());
        return exe;
    }
    std::fs::create_dir_all(out_dir).unwrap();
    let tmp = out_dir.join(format!("{stem}-{}.tmp.exe", std::process::id()));
    let out = Command::new("mcs")
        .arg("-langversion:7")
        .arg("-nologo")
        .arg("-warnaserror+")
        .arg(format!("-out:{}", tmp.display()))
        .args(sources)
        .output()
        .expect("run mcs (apt-get install mono-mcs)");
    assert!(
        out.status.success(),
        "mcs failed on {sources:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &exe).unwrap();
    done.insert(exe.clone(), ());
    exe
}

/// A running C# program (`mono EXE ARGS`): its standard output, line by line, and its
/// standard input. Killed when dropped.
pub struct Peer {
    child: Child,
    lines: Receiver<String>,
    stdin: Option<ChildStdin>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

/// Starts `mono exe args...` with `env` added to its environment.
pub fn start(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Peer {
    let mut cmd = Command::new("mono");
    cmd.arg(exe).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    spawn(cmd)
}

/// Starts `cmd` (a `mono` command line, perhaps behind `setpriv`) as a [`Peer`].
pub fn spawn(mut cmd: Command) -> Peer {
    // Mono writes its crash reports (mono_crash.*.json) into the working directory.
    cmd.current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .expect("run mono (apt-get install mono-runtime)");
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
    Peer {
        child,
        lines,
        stdin,
        seen: Vec::new(),
    }
}

impl Peer {
    /// The next line, or `None` once the program has ended; fails after `limit` (a hang
    /// check, not a speed check).
    pub fn next_line(&mut self, limit: Duration) -> Option<String> {
        match self.lines.recv_timeout(limit) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "the C# peer printed nothing within {limit:?}; so far: {:?}",
                    self.seen
                )
            }
        }
    }

    /// Waits (at most 60 s) for a line starting with `prefix`, skipping others; returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left.max(Duration::from_millis(1))) {
                Some(l) if l.starts_with(prefix) => return l,
                Some(_) => {}
                None => panic!(
                    "the C# peer ended without printing {prefix:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// The next line, which must be exactly `line`.
    pub fn expect_exactly(&mut self, line: &str) {
        let got = self.next_line(Duration::from_secs(60));
        assert_eq!(
            got.as_deref(),
            Some(line),
            "the C# peer printed {:?}",
            self.seen
        );
    }

    /// Writes a line to the program's standard input.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the program's standard input.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// Waits (at most 60 s) for the program to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the C# peer did not exit; it printed {:?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every remaining line, once the program has ended (waits for it).
    pub fn rest(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(l) = self.next_line(Duration::from_secs(60)) {
            v.push(l);
        }
        v
    }

    /// SIGKILL (or TerminateProcess), then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.close_stdin();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// How the C# programs print text: ASCII, other UTF-16 units (and `\`) as `\uXXXX`.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for unit in s.encode_utf16() {
        if (0x20..0x7f).contains(&unit) && unit != u16::from(b'\\') {
            out.push(char::from(unit as u8));
        } else {
            out.push_str(&format!("\\u{unit:04X}"));
        }
    }
    out
}
