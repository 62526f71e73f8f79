//! Names the Unix backend's code paths as `cfg`s, so that the code says which path it takes
//! rather than repeating lists of operating systems (see `src/sys/unix/mod.rs`):
//!
//! - `pipette_portable`: Linux built with `PIPETTE_UNIX_PORTABLE=1` takes the code paths of
//!   macOS and the BSDs wherever Linux has the calls they use, so that the Linux test suite
//!   runs them (`scripts/test-portable.sh`). Never set for a normal build.
//! - `pipette_sock_flags`: sockets and pipes are created close-on-exec and non-blocking in
//!   the creating call (`SOCK_CLOEXEC`, `SOCK_NONBLOCK`, `accept4`, `pipe2`): Linux and
//!   FreeBSD. Elsewhere (macOS, portable Linux) the plain call is followed by `fcntl` and
//!   `ioctl(FIONBIO)`.
//! - `pipette_shutdown_wakes`: `shutdown(2)` of a listening socket wakes whoever waits on it
//!   (Linux). Elsewhere it fails with `ENOTCONN` and wakes nothing, and listeners are woken
//!   through a pipe of their own (blocking) or a cancellation token (tokio).

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PIPETTE_UNIX_PORTABLE");
    for cfg in [
        "pipette_portable",
        "pipette_sock_flags",
        "pipette_shutdown_wakes",
    ] {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
    }
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let portable = os == "linux" && env::var("PIPETTE_UNIX_PORTABLE").as_deref() == Ok("1");
    if portable {
        println!("cargo:rustc-cfg=pipette_portable");
    }
    if (os == "linux" && !portable) || os == "freebsd" {
        println!("cargo:rustc-cfg=pipette_sock_flags");
    }
    if os == "linux" && !portable {
        println!("cargo:rustc-cfg=pipette_shutdown_wakes");
    }
}
