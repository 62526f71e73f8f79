//! `pipette-bench`: pipette against its peers, with a report and a plot. See `unix.rs` and
//! docs/PERFORMANCE.md. The peers compared (Unix domain sockets, tokio's `UnixStream`, …) are
//! Unix ones, so the benchmark is built for Unix only.

#[cfg(unix)]
mod cacheline;
mod codecs;
#[cfg(unix)]
mod instructions;
#[cfg(unix)]
mod rpc;
#[cfg(unix)]
mod unix;

#[cfg(unix)]
fn main() {
    if std::env::args().nth(1).as_deref() == Some("--codecs") {
        return codecs::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--rpc") => {
            return rpc::run(
                args.get(1).and_then(|s| s.parse().ok()),
                args.get(2).map(String::as_str),
            )
        }
        Some("--rpc-serve") => return rpc::serve(&args[1], &args[2]),
        _ => {}
    }
    unix::main()
}

#[cfg(not(unix))]
fn main() {
    if std::env::args().nth(1).as_deref() == Some("--codecs") {
        return codecs::run();
    }
    eprintln!("pipette-bench compares Unix transports and runs on Unix only");
    std::process::exit(1);
}
