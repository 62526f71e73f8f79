//! pipette's tokio API against raw tokio `UnixStream`s (see `async/unix.rs`); Unix only, as
//! the baseline it measures against does not exist elsewhere.

#[cfg(unix)]
#[path = "async/unix.rs"]
mod unix;

fn main() {
    #[cfg(unix)]
    unix::main();
    #[cfg(not(unix))]
    eprintln!("the async benchmark compares with Unix domain sockets: nothing to run here");
}
