//! `pipette-bench`: pipette against its peers, with a report and a plot. See `unix.rs` and
//! docs/PERFORMANCE.md. The peers compared (Unix domain sockets, tokio's `UnixStream`, …) are
//! Unix ones, so the benchmark is built for Unix only.

#[cfg(unix)]
mod instructions;
#[cfg(unix)]
mod unix;

#[cfg(unix)]
fn main() {
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("pipette-bench compares Unix transports and runs on Unix only");
    std::process::exit(1);
}
