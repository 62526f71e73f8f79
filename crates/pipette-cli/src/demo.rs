//! `pipette demo`: a server and several clients, each its own process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;

/// Options of `pipette demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of client processes.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Round trips per client.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// Options of the hidden `demo-client` command.
#[derive(Args, Debug)]
pub struct ClientArgs {
    name: String,
    #[arg(long)]
    messages: usize,
    #[arg(long)]
    size: usize,
}

/// `pipette demo`.
pub fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let name = format!("pipette-demo-{}", std::process::id());
    println!(
        "pipette demo: 1 server process + {} client processes on the name {name:?}",
        args.clients
    );

    let mut server = Command::new(&exe)
        .args(["serve", &name, "--exit-on-stdin-close"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .spawn()?;
    println!("  started echo server (pid {})", server.id());

    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            Command::new(&exe)
                .args(["demo-client", &name])
                .args(["--messages", &args.messages.to_string()])
                .args(["--size", &args.size.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut rtts_ns: Vec<u64> = Vec::new();
    let mut failures = 0;
    for mut c in clients {
        let pid = c.id();
        let out = c.stdout.take().expect("piped");
        let mut mine = 0;
        for line in BufReader::new(out).lines() {
            for v in line?.split_whitespace() {
                rtts_ns.push(v.parse()?);
                mine += 1;
            }
        }
        let status = c.wait()?;
        if status.success() && mine == args.messages {
            println!("  client pid {pid}: {mine} round trips, every reply matched");
        } else {
            failures += 1;
            println!("  client pid {pid}: FAILED ({status}, {mine} round trips)");
        }
    }
    let elapsed = started.elapsed();

    drop(server.stdin.take()); // the server shuts down gracefully when its stdin closes
    let status = server.wait()?;
    let gone = matches!(pipette::probe(&name)?, pipette::Liveness::Absent);
    println!(
        "  server exited ({status}); endpoint {}",
        if gone { "removed" } else { "STILL PRESENT" }
    );

    rtts_ns.sort_unstable();
    let pct = |p: f64| -> Duration {
        if rtts_ns.is_empty() {
            return Duration::ZERO;
        }
        let i = ((rtts_ns.len() as f64 - 1.0) * p).round() as usize;
        Duration::from_nanos(rtts_ns[i])
    };
    println!(
        "  {} messages of {} bytes echoed in {:.0?} (round trip median {:.1?}, p99 {:.1?})",
        rtts_ns.len(),
        args.size,
        elapsed,
        pct(0.5),
        pct(0.99)
    );
    if failures > 0 || !status.success() || !gone {
        return Err("the demo did not complete cleanly".into());
    }
    println!("ok");
    Ok(())
}

/// The hidden `pipette demo-client`: round trips, timings on standard output.
pub fn client(args: ClientArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = pipette::Client::connect_with(
        &args.name,
        &pipette::ClientOptions::new().wait(Duration::from_secs(10)),
    )?;
    conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut msg = vec![0u8; args.size];
    let mut reply = Vec::new();
    let mut rtts = Vec::with_capacity(args.messages);
    for i in 0..args.messages {
        for (j, b) in msg.iter_mut().enumerate() {
            *b = (i + j) as u8;
        }
        let t = Instant::now();
        conn.send(&msg)?;
        conn.recv_into(&mut reply)?;
        rtts.push(t.elapsed().as_nanos() as u64);
        if reply != msg {
            return Err(format!("reply {i} does not match what was sent").into());
        }
    }
    conn.close()?;
    let line: Vec<String> = rtts.iter().map(|v| v.to_string()).collect();
    println!("{}", line.join(" "));
    Ok(())
}
