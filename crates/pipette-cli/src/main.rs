//! `pipette`: talk to local processes by name from the command line.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pipette::{Access, Client, ClientOptions, Connection, Error, Liveness, ServerOptions, Trust};

mod demo;
mod signals;

/// Local IPC by name: Unix domain sockets and named pipes without ports.
#[derive(Parser, Debug)]
#[command(name = "pipette", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo server: answers each message with the same bytes until SIGINT/SIGTERM.
    Serve {
        /// Endpoint name (plain name, or absolute path).
        name: String,
        #[command(flatten)]
        common: Common,
        /// Stop when standard input closes (used by `pipette demo` to stop its server).
        #[arg(long, hide = true)]
        exit_on_stdin_close: bool,
    },
    /// Prints each received message on its own line; sends no reply.
    Listen {
        /// Endpoint name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Sends each MESSAGE as one message.
    Send {
        /// Endpoint name.
        name: String,
        /// The messages.
        #[arg(required = true)]
        messages: Vec<String>,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        wait: Wait,
    },
    /// Sends one message and prints the one reply.
    Call {
        /// Endpoint name.
        name: String,
        /// The message.
        message: String,
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        wait: Wait,
    },
    /// Lists this user's endpoints: name, live or stale, path (tab-separated).
    Ls,
    /// Runs a server and clients as separate processes, exchanges messages, reports timings.
    Demo(demo::DemoArgs),
    /// One demo client (spawned by `pipette demo`).
    #[command(hide = true)]
    DemoClient(demo::ClientArgs),
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Raw byte-stream mode (no handshake, no framing), for foreign peers such as socat.
    #[arg(long)]
    raw: bool,
    /// Who may connect: user, group or everyone (server side).
    #[arg(long, default_value = "user", value_parser = parse_access)]
    access: Access,
    /// Largest message in bytes.
    #[arg(long, default_value_t = pipette::DEFAULT_MAX_MESSAGE_SIZE)]
    max_size: usize,
}

#[derive(Args, Debug, Clone)]
struct Wait {
    /// Which servers to talk to (client side): user (the default: servers of your own user
    /// or root), group (also servers whose group is one of yours, the pairing of a server's
    /// `--access group`), everyone, or user:NAME (also servers of user NAME or uid, or of a
    /// SID on Windows). An untrusted server gets nothing: not even the handshake.
    #[arg(long, value_name = "POLICY", default_value = "user", value_parser = parse_trust)]
    trust: Trust,
    /// Wait up to SECS for the server to appear.
    #[arg(long, value_name = "SECS")]
    wait: Option<f64>,
    /// Give up on a send or a reply after SECS.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
}

fn parse_access(s: &str) -> Result<Access, String> {
    s.parse()
}

fn parse_trust(s: &str) -> Result<Trust, String> {
    s.parse()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipette: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve {
            name,
            common,
            exit_on_stdin_close,
        } => serve(&name, &common, exit_on_stdin_close, true),
        Command::Listen { name, common } => serve(&name, &common, false, false),
        Command::Send {
            name,
            messages,
            common,
            wait,
        } => {
            let mut conn = connect(&name, &common, &wait)?;
            for m in &messages {
                conn.send(m.as_bytes())?;
            }
            conn.close()?;
            Ok(())
        }
        Command::Call {
            name,
            message,
            common,
            wait,
        } => {
            let mut conn = connect(&name, &common, &wait)?;
            conn.send(message.as_bytes())?;
            let reply = conn.recv()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&reply)?;
            out.write_all(b"\n")?;
            Ok(())
        }
        Command::Ls => {
            let mut out = std::io::stdout().lock();
            for e in pipette::endpoints()? {
                let state = match e.liveness {
                    Liveness::Live { .. } => "live",
                    Liveness::Stale => "stale",
                    _ => "absent",
                };
                writeln!(out, "{}\t{}\t{}", e.name, state, e.path.display())?;
            }
            Ok(())
        }
        Command::Demo(args) => demo::run(args),
        Command::DemoClient(args) => demo::client(args),
    }
}

fn connect(name: &str, common: &Common, wait: &Wait) -> pipette::Result<Connection> {
    let options = ClientOptions::new()
        .raw(common.raw)
        .trust(wait.trust.clone())
        .max_message_size(common.max_size);
    let options = match wait.wait {
        Some(w) => options.wait(secs(w)),
        None => options,
    };
    let mut conn = Client::connect_with(name, &options)?;
    let timeout = wait.timeout.map(secs);
    conn.set_read_timeout(timeout);
    conn.set_write_timeout(timeout);
    Ok(conn)
}

/// `serve` (echo) and `listen` (print): one thread per connection, stopped by a signal.
fn serve(
    name: &str,
    common: &Common,
    exit_on_stdin_close: bool,
    echo: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let server = pipette::Server::bind_with(
        name,
        &ServerOptions::new()
            .raw(common.raw)
            .access(common.access)
            .max_message_size(common.max_size),
    )?;
    let stop = server.shutdown_handle();
    signals::on_terminate(stop.clone())?;
    if exit_on_stdin_close {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stop.shutdown();
        });
    }
    tracing::info!(
        "{} on {} ({})",
        if echo { "serving" } else { "listening" },
        name,
        server.name().path().display()
    );

    let mut workers = Vec::new();
    for conn in server.incoming() {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        workers.retain(|w: &std::thread::JoinHandle<()>| !w.is_finished());
        workers.push(std::thread::spawn(move || handle(conn, echo)));
    }
    for w in workers {
        let _ = w.join();
    }
    tracing::info!("shut down; endpoint removed");
    Ok(())
}

fn handle(mut conn: Connection, echo: bool) {
    let pid = conn.peer().and_then(|p| p.pid());
    tracing::info!(pid = ?pid, "client connected");
    let mut buf = Vec::new();
    loop {
        match conn.recv_into(&mut buf) {
            Ok(_) => {}
            Err(Error::Closed) => {
                tracing::info!(pid = ?pid, "client disconnected");
                return;
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                tracing::warn!(pid = ?pid, "connection dropped: {e}");
                return;
            }
        }
        let res = if echo {
            conn.send(&buf)
        } else {
            let mut out = std::io::stdout().lock();
            let mut line = String::from_utf8_lossy(&buf).into_owned();
            line.push('\n');
            out.write_all(line.as_bytes())
                .and_then(|()| out.flush())
                .map_err(Error::from)
        };
        match res {
            Ok(()) => {}
            // A client that sends and leaves without reading its echo (`pipette send`).
            Err(Error::Closed) => {
                tracing::info!(pid = ?pid, "client disconnected");
                return;
            }
            Err(Error::Shutdown) => return,
            Err(e) => {
                tracing::warn!(pid = ?pid, "connection dropped: {e}");
                return;
            }
        }
    }
}

/// Shared by `demo`: connect with waiting.
fn connect_waiting(name: &str, wait: Duration) -> pipette::Result<Connection> {
    Client::connect_timeout(name, wait)
}
