//! gRPC (tonic) and tarpc over pipette, server and callers in separate processes: 16
//! concurrent callers, the caller's identity in each request, a server killed mid-call
//! (callers fail within a second, never hang), a shutdown with calls in flight, and the
//! example that runs one service over pipette and over TCP.

mod support;

#[path = "../examples/grpc/service.rs"]
mod service;

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use service::{CallRequest, EchoClient, EchoServer, EchoService};
use support::{note, read_stdin_line, spawn, tell, unique, Child};

fn main() {
    support::main(
        &[
            (
                "tonic_16_concurrent_callers_see_their_identity",
                tonic_16_concurrent_callers_see_their_identity,
            ),
            (
                "tonic_server_killed_mid_call_fails_callers_fast",
                tonic_server_killed_mid_call_fails_callers_fast,
            ),
            (
                "tonic_shutdown_with_calls_in_flight",
                tonic_shutdown_with_calls_in_flight,
            ),
            (
                "tonic_channel_to_a_missing_name_fails",
                tonic_channel_to_a_missing_name_fails,
            ),
            (
                "grpc_example_runs_over_pipette_and_tcp",
                grpc_example_runs_over_pipette_and_tcp,
            ),
            ("tarpc_16_concurrent_callers", tarpc_16_concurrent_callers),
            (
                "tarpc_server_killed_mid_call_fails_callers_fast",
                tarpc_server_killed_mid_call_fails_callers_fast,
            ),
            (
                "tarpc_shutdown_with_calls_in_flight",
                tarpc_shutdown_with_calls_in_flight,
            ),
        ],
        &[
            ("tonic-server", role_tonic_server),
            ("tarpc-server", role_tarpc_server),
        ],
    );
}

const CALLERS: u64 = 16;
const CALLS_EACH: u64 = 50;
/// Calls with a sequence number from here on are announced by the server as they start.
const ANNOUNCED: u64 = 1_000_000;
/// How long a call that the test interrupts would take if nothing interrupted it.
const LONG_CALL_MS: u32 = 30_000;

fn wait_opts() -> pipette::ClientOptions {
    pipette::ClientOptions::new().wait(Duration::from_secs(10))
}

/// Our effective uid, as the server should see it (the owner of /proc/self).
#[cfg(unix)]
fn my_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    Some(std::fs::metadata("/proc/self").unwrap().uid())
}

#[cfg(not(unix))]
fn my_uid() -> Option<u32> {
    None
}

// ---- roles ----

fn announce(seq: u64) {
    if seq >= ANNOUNCED {
        tell(&format!("call {seq}"));
    }
}

/// `tonic-server NAME`: the echo service on a pipette server until stdin says `shutdown` or
/// closes; then prints `served` once `serve_with_incoming` has returned.
fn role_tonic_server(args: Vec<String>) {
    let rt = support::runtime();
    rt.block_on(async {
        let server = pipette::tokio::Server::bind(args[0].as_str()).expect("bind");
        let stop = server.shutdown_handle();
        std::thread::spawn(move || {
            while let Some(line) = read_stdin_line() {
                if line == "shutdown" {
                    break;
                }
            }
            stop.shutdown();
        });
        let svc = EchoServer::new(EchoService {
            on_call: Some(announce),
        });
        tell("ready");
        tonic::transport::Server::builder()
            .serve_with_incoming(svc, pipette::tonic::incoming(server))
            .await
            .expect("serve");
        tell("served");
    });
}

/// The tarpc service: the same echo as the gRPC one.
#[tarpc::service]
trait Echoer {
    async fn call(seq: u64, text: String, delay_ms: u32) -> (u64, String);
}

#[derive(Clone)]
struct EchoerServer;

impl Echoer for EchoerServer {
    async fn call(
        self,
        _: tarpc::context::Context,
        seq: u64,
        text: String,
        delay_ms: u32,
    ) -> (u64, String) {
        announce(seq);
        tokio::time::sleep(Duration::from_millis(delay_ms.into())).await;
        (seq, text)
    }
}

/// `tarpc-server NAME`: the tarpc echo on a pipette server until stdin says `shutdown` or
/// closes; then prints `served` once the incoming stream has ended.
fn role_tarpc_server(args: Vec<String>) {
    use futures::StreamExt;
    use tarpc::server::{BaseChannel, Channel};

    let rt = support::runtime();
    rt.block_on(async {
        let server = pipette::tokio::Server::bind(args[0].as_str()).expect("bind");
        let stop = server.shutdown_handle();
        std::thread::spawn(move || {
            while let Some(line) = read_stdin_line() {
                if line == "shutdown" {
                    break;
                }
            }
            stop.shutdown();
        });
        tell("ready");
        pipette::tarpc::incoming(server)
            .for_each(|transport| async move {
                let transport = transport.expect("accept");
                tokio::spawn(
                    BaseChannel::with_defaults(transport)
                        .execute(EchoerServer.serve())
                        .for_each(|call| async move {
                            tokio::spawn(call);
                        }),
                );
            })
            .await;
        tell("served");
    });
}

// ---- helpers ----

/// How a test stops a server with calls in flight.
#[derive(Clone, Copy)]
enum Stop {
    /// SIGKILL.
    Kill,
    /// Its shutdown handle (it must then end cleanly).
    Shutdown,
}

/// Starts `{kind}-server`, puts 16 long calls in flight, stops the server, and checks that
/// every caller fails within a second. Returns the runtime and the server's name.
fn calls_in_flight_fail_fast<Fut>(
    kind: &str,
    stop: Stop,
    call: fn(String, u64) -> Fut,
) -> (tokio::runtime::Runtime, String)
where
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (mut server, name) = start(&format!("{kind}-server"));
    let rt = support::runtime();
    let tasks = long_calls_in_flight(&rt, &mut server, |seq| call(name.clone(), seq));
    let t0 = Instant::now();
    let why = match stop {
        Stop::Kill => {
            server.kill();
            "the server was killed"
        }
        Stop::Shutdown => {
            server.say("shutdown");
            "the server shut down"
        }
    };
    let last = all_failed(&rt, tasks, t0, why);
    note(format!("{kind}: 16 callers failed within {last:?} ({why})"));
    assert!(
        last < Duration::from_secs(1),
        "callers took {last:?} to fail"
    );
    if let Stop::Shutdown = stop {
        server.expect("served");
        assert!(server.wait_timeout(Duration::from_secs(10)).success());
    }
    (rt, name)
}

/// Starts `role` for a fresh name and waits until it serves.
fn start(role: &str) -> (Child, String) {
    let name = unique(role);
    let mut child = spawn(role, &[&name]);
    child.expect("ready");
    (child, name)
}

/// 16 callers, each on its own channel (its own pipette connection), each making one call
/// of `LONG_CALL_MS`; returns once the server has announced all 16 as started, with the
/// callers' tasks, each resolving to (its outcome, when it ended).
fn long_calls_in_flight<F, Fut>(
    rt: &tokio::runtime::Runtime,
    server: &mut Child,
    call: F,
) -> Vec<tokio::task::JoinHandle<(Result<(), String>, Instant)>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let fut = call(ANNOUNCED + i);
            rt.spawn(async move {
                let r = fut.await;
                (r, Instant::now())
            })
        })
        .collect();
    let mut started: Vec<String> = (0..CALLERS).map(|_| server.line()).collect();
    started.sort();
    let mut expected: Vec<String> = (0..CALLERS)
        .map(|i| format!("call {}", ANNOUNCED + i))
        .collect();
    expected.sort();
    assert_eq!(
        started, expected,
        "the server did not see all 16 calls start"
    );
    tasks
}

/// Waits (hang limit 10 s) for every caller; each must have failed. Returns the time from
/// `t0` to the last failure.
fn all_failed(
    rt: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<(Result<(), String>, Instant)>>,
    t0: Instant,
    what: &str,
) -> Duration {
    rt.block_on(async {
        let mut last = Duration::ZERO;
        for (i, task) in tasks.into_iter().enumerate() {
            let (outcome, at) = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap_or_else(|_| panic!("caller {i} still waiting 10 s after {what}"))
                .unwrap();
            let err = match outcome {
                Ok(()) => panic!("caller {i}'s call succeeded although {what}"),
                Err(e) => e,
            };
            if i == 0 {
                note(format!("caller 0 after {what}: {err}"));
            }
            last = last.max(at.saturating_duration_since(t0));
        }
        last
    })
}

async fn tonic_call(name: String, seq: u64) -> Result<(), String> {
    let channel = pipette::tonic::channel(name.as_str(), &wait_opts())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = EchoClient::new(channel);
    client
        .call(CallRequest {
            seq,
            text: "slow".to_owned(),
            delay_ms: LONG_CALL_MS,
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

async fn tarpc_client(name: &str) -> Result<EchoerClient, String> {
    let transport = pipette::tarpc::connect(name, &wait_opts())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    Ok(EchoerClient::new(tarpc::client::Config::default(), transport).spawn())
}

async fn tarpc_call(name: String, seq: u64) -> Result<(), String> {
    let client = tarpc_client(&name).await?;
    let mut ctx = tarpc::context::current();
    // Far beyond the test: the call must end because the server went away, not by deadline.
    ctx.deadline = Instant::now() + Duration::from_secs(120);
    client
        .call(ctx, seq, "slow".to_owned(), LONG_CALL_MS)
        .await
        .map(|_| ())
        .map_err(|e| format!("{e}"))
}

// ---- tonic ----

fn tonic_16_concurrent_callers_see_their_identity() {
    let (_server, name) = start("tonic-server");
    let rt = support::runtime();
    let started = Instant::now();
    rt.block_on(async {
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let name = name.clone();
            callers.spawn(async move {
                let channel = pipette::tonic::channel(name.as_str(), &wait_opts())
                    .await
                    .expect("channel");
                let mut client = EchoClient::new(channel);
                for i in 0..CALLS_EACH {
                    let seq = caller * CALLS_EACH + i;
                    let text = format!("caller {caller} call {i} {}", "x".repeat(i as usize));
                    let reply = client
                        .call(CallRequest {
                            seq,
                            text: text.clone(),
                            delay_ms: 0,
                        })
                        .await
                        .unwrap_or_else(|s| panic!("call {seq}: {s}"));
                    assert_eq!((reply.seq, reply.text.as_str()), (seq, text.as_str()));
                    assert_eq!(
                        reply.peer_pid,
                        Some(std::process::id()),
                        "the server saw another pid"
                    );
                    assert_eq!(reply.peer_uid, my_uid(), "the server saw another uid");
                }
            });
        }
        let limit = Duration::from_secs(60);
        while let Some(done) = tokio::time::timeout(limit, callers.join_next())
            .await
            .expect("callers hung")
        {
            done.unwrap();
        }
    });
    note(format!(
        "tonic: {} calls by {CALLERS} callers in {:?}",
        CALLERS * CALLS_EACH,
        started.elapsed()
    ));
}

fn tonic_server_killed_mid_call_fails_callers_fast() {
    calls_in_flight_fail_fast("tonic", Stop::Kill, tonic_call);
}

fn tonic_shutdown_with_calls_in_flight() {
    let (rt, name) = calls_in_flight_fail_fast("tonic", Stop::Shutdown, tonic_call);
    // The endpoint is gone with the server: a new channel finds no one.
    let err = rt
        .block_on(pipette::tonic::channel(
            name.as_str(),
            &pipette::ClientOptions::new(),
        ))
        .expect_err("connected to a server that shut down");
    assert!(
        support::full(&err).contains("no server is listening"),
        "{}",
        support::full(&err)
    );
}

fn tonic_channel_to_a_missing_name_fails() {
    let rt = support::runtime();
    let err = rt
        .block_on(pipette::tonic::channel(
            unique("nobody").as_str(),
            &pipette::ClientOptions::new(),
        ))
        .expect_err("connected to nobody");
    let text = support::full(&err);
    assert!(text.contains("no server is listening"), "{text}");
    let err = rt
        .block_on(pipette::tonic::channel(
            "bad/name",
            &pipette::ClientOptions::new(),
        ))
        .expect_err("an invalid name");
    let text = support::full(&err);
    assert!(text.contains("invalid endpoint name"), "{text}");
}

/// CI runs the example, so both of its transports are exercised.
fn grpc_example_runs_over_pipette_and_tcp() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("grpc{}", std::env::consts::EXE_SUFFIX));
    assert!(
        example.exists(),
        "{} is missing: cargo test builds it with --features tonic",
        example.display()
    );
    let out = support::within(Duration::from_secs(60), "the grpc example", move || {
        Command::new(example)
            .arg("both")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap()
    });
    assert!(out.status.success(), "the example failed: {:?}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    // Over pipette the server sees the caller (here the example's own process).
    assert!(
        lines[0].starts_with("pipette: 16 calls answered; the server saw caller pid ")
            && !lines[0].contains("pid unknown"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("tcp: 16 calls answered") && lines[1].contains("pid unknown"),
        "{stdout}"
    );
}

// ---- tarpc ----

fn tarpc_16_concurrent_callers() {
    let (_server, name) = start("tarpc-server");
    let rt = support::runtime();
    let started = Instant::now();
    rt.block_on(async {
        let mut callers = tokio::task::JoinSet::new();
        for caller in 0..CALLERS {
            let name = name.clone();
            callers.spawn(async move {
                let client = tarpc_client(&name).await.expect("connect");
                for i in 0..CALLS_EACH {
                    let seq = caller * CALLS_EACH + i;
                    let text = format!("caller {caller} call {i} {}", "x".repeat(i as usize));
                    let reply = client
                        .call(tarpc::context::current(), seq, text.clone(), 0)
                        .await
                        .unwrap_or_else(|e| panic!("call {seq}: {e}"));
                    assert_eq!(reply, (seq, text));
                }
            });
        }
        let limit = Duration::from_secs(60);
        while let Some(done) = tokio::time::timeout(limit, callers.join_next())
            .await
            .expect("callers hung")
        {
            done.unwrap();
        }
    });
    note(format!(
        "tarpc: {} calls by {CALLERS} callers in {:?}",
        CALLERS * CALLS_EACH,
        started.elapsed()
    ));
}

fn tarpc_server_killed_mid_call_fails_callers_fast() {
    calls_in_flight_fail_fast("tarpc", Stop::Kill, tarpc_call);
}

fn tarpc_shutdown_with_calls_in_flight() {
    let (rt, name) = calls_in_flight_fail_fast("tarpc", Stop::Shutdown, tarpc_call);
    let err = rt
        .block_on(pipette::tarpc::connect::<(), ()>(
            name.as_str(),
            &pipette::ClientOptions::new(),
        ))
        .expect_err("connected to a server that shut down");
    assert!(matches!(err, pipette::Error::NotFound { .. }), "{err}");
}
