//! pipette against hand-written Unix domain sockets (see `ipc/unix.rs`); Unix only, as the
//! baseline it measures against does not exist elsewhere.

#[cfg(unix)]
#[path = "ipc/unix.rs"]
mod unix;

fn main() {
    #[cfg(unix)]
    unix::main();
    #[cfg(not(unix))]
    eprintln!("the ipc benchmark compares with Unix domain sockets: nothing to run here");
}
