//! The servers' log on standard error: colours only on a terminal, and never fatal.
//!
//! A log line that cannot be written (standard error is a closed pipe, or `/dev/full`) is
//! dropped: nothing about logging may take a server down or keep it from stopping.

use std::io::{self, IsTerminal, Write};

/// Standard error, with every write error swallowed (`EPIPE`, `ENOSPC`, ...).
#[derive(Debug, Clone, Copy)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Installs the log: `RUST_LOG` filters (default `info`); ANSI colours only when standard
/// error is a terminal and `NO_COLOR` is not set.
pub fn init() {
    let colour =
        io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_writer(|| QuietStderr)
        .with_ansi(colour)
        .log_internal_errors(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Prints the command's one-line error on standard error, ignoring a failure to do so.
pub fn report(message: &str) {
    let _ = writeln!(io::stderr(), "pipette: {message}");
}

/// A peer's process id for the log: `pid=20842`, or `pid=?` when the platform cannot tell.
pub fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}
