//! `pipette-bench --rpc [SECONDS]`: tonic over pipette against tonic over a raw tokio
//! `UnixListener`/`UnixStream`, and tarpc over pipette against tarpc over a raw `UnixStream`
//! with a length-delimited framing and the same codec (postcard), so that only the transport
//! differs. The server is a child process (this binary, `--rpc-serve KIND ADDR`); the parent
//! runs 16 concurrent callers, each on its own connection, each making one small unary call
//! after another, for SECONDS (default 2) per transport, two rounds in rotation; the best
//! round of each counts. Reported: calls per second and pipette's time per call as a ratio
//! to the raw socket's. `--rpc SECONDS KIND` measures one transport once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tarpc::server::{BaseChannel, Channel};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

#[path = "../../pipette/examples/grpc/service.rs"]
mod service;

use service::{CallRequest, EchoClient, EchoServer, EchoService};

const CALLERS: usize = 16;
const KINDS: [&str; 4] = ["tonic-pipette", "tonic-uds", "tarpc-pipette", "tarpc-uds"];

#[tarpc::service]
trait TEcho {
    async fn call(seq: u64, text: String) -> (u64, String);
}

#[derive(Clone)]
struct EchoTarpc;

impl TEcho for EchoTarpc {
    async fn call(self, _: tarpc::context::Context, seq: u64, text: String) -> (u64, String) {
        (seq, text)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A raw Unix stream as a tarpc transport: a 4-byte length prefix (tokio-util's
/// `LengthDelimitedCodec`) and postcard, as pipette's tarpc transport encodes.
fn raw_transport<In, Out>(
    stream: UnixStream,
) -> impl futures::Stream<Item = std::io::Result<In>> + futures::Sink<Out, Error = std::io::Error>
where
    In: serde::de::DeserializeOwned,
    Out: serde::Serialize,
{
    Framed::new(stream, LengthDelimitedCodec::new())
        .with(|out: Out| {
            futures::future::ready(
                postcard::to_stdvec(&out)
                    .map(Bytes::from)
                    .map_err(std::io::Error::other),
            )
        })
        .map(|frame| {
            frame.and_then(|bytes| postcard::from_bytes(&bytes).map_err(std::io::Error::other))
        })
}

/// The child: serves `kind` on `addr` (a pipette name or a socket path) until killed.
pub fn serve(kind: &str, addr: &str) {
    let rt = runtime();
    rt.block_on(async {
        match kind {
            "tonic-pipette" => {
                let server = pipette::tokio::Server::bind(addr).expect("bind");
                println!("ready");
                tonic::transport::Server::builder()
                    .serve_with_incoming(
                        EchoServer::new(EchoService::default()),
                        pipette::tonic::incoming(server),
                    )
                    .await
                    .unwrap();
            }
            "tonic-uds" => {
                let listener = UnixListener::bind(addr).expect("bind");
                let incoming = futures::stream::unfold(listener, |l| async move {
                    let next = l.accept().await.map(|(s, _)| s);
                    Some((next, l))
                });
                println!("ready");
                tonic::transport::Server::builder()
                    .serve_with_incoming(EchoServer::new(EchoService::default()), incoming)
                    .await
                    .unwrap();
            }
            "tarpc-pipette" => {
                let server = pipette::tokio::Server::bind(addr).expect("bind");
                println!("ready");
                pipette::tarpc::incoming(server)
                    .for_each(|t| async move {
                        if let Ok(t) = t {
                            tokio::spawn(
                                BaseChannel::with_defaults(t)
                                    .execute(EchoTarpc.serve())
                                    .for_each(|call| async move {
                                        tokio::spawn(call);
                                    }),
                            );
                        }
                    })
                    .await;
            }
            "tarpc-uds" => {
                let listener = UnixListener::bind(addr).expect("bind");
                println!("ready");
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(
                        BaseChannel::with_defaults(raw_transport(stream))
                            .execute(EchoTarpc.serve())
                            .for_each(|call| async move {
                                tokio::spawn(call);
                            }),
                    );
                }
            }
            other => panic!("unknown kind {other}"),
        }
    });
}

/// Calls per second with 16 callers against `kind`, for `secs`.
fn measure(kind: &str, secs: f64) -> f64 {
    let dir = std::env::temp_dir().join(format!("pipette-bench-rpc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr = if kind.ends_with("-uds") {
        let p = dir.join(format!("{kind}.sock"));
        let _ = std::fs::remove_file(&p);
        p.display().to_string()
    } else {
        format!("bench-rpc-{kind}-{}", std::process::id())
    };
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .args(["--rpc-serve", kind, &addr])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let rt = runtime();
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let elapsed = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let counting = Arc::new(AtomicBool::new(false));
        for _ in 0..CALLERS {
            let (kind, addr) = (kind.to_owned(), addr.clone());
            let (calls, stop, counting) = (calls.clone(), stop.clone(), counting.clone());
            tasks.spawn(async move {
                let count = |n: &AtomicU64| {
                    if counting.load(Ordering::Relaxed) {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                };
                let text = "a small request".to_owned();
                match kind.as_str() {
                    "tonic-pipette" | "tonic-uds" => {
                        let channel = if kind == "tonic-pipette" {
                            pipette::tonic::channel(addr.as_str(), &pipette::ClientOptions::new())
                                .await
                                .unwrap()
                        } else {
                            tonic::transport::Endpoint::from_static("http://uds.invalid")
                                .connect_with_connector(tower::service_fn(move |_| {
                                    let addr = addr.clone();
                                    async move {
                                        UnixStream::connect(addr)
                                            .await
                                            .map(hyper_util::rt::TokioIo::new)
                                    }
                                }))
                                .await
                                .unwrap()
                        };
                        let mut client = EchoClient::new(channel);
                        let mut seq = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let reply = client
                                .call(CallRequest {
                                    seq,
                                    text: text.clone(),
                                    delay_ms: 0,
                                })
                                .await
                                .unwrap();
                            assert_eq!(reply.seq, seq);
                            seq += 1;
                            count(&calls);
                        }
                    }
                    _ => {
                        let config = tarpc::client::Config::default();
                        let client = if kind == "tarpc-pipette" {
                            let t = pipette::tarpc::connect(
                                addr.as_str(),
                                &pipette::ClientOptions::new(),
                            )
                            .await
                            .unwrap();
                            TEchoClient::new(config, t).spawn()
                        } else {
                            let s = UnixStream::connect(&addr).await.unwrap();
                            TEchoClient::new(config, raw_transport(s)).spawn()
                        };
                        let mut seq = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let reply = client
                                .call(tarpc::context::current(), seq, text.clone())
                                .await
                                .unwrap();
                            assert_eq!(reply.0, seq);
                            seq += 1;
                            count(&calls);
                        }
                    }
                }
            });
        }
        // Warm up (connections made, caches warm), then count.
        tokio::time::sleep(Duration::from_millis(300)).await;
        counting.store(true, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        counting.store(false, Ordering::Relaxed);
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        while tasks.join_next().await.is_some() {}
        elapsed
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    calls.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
}

/// `--rpc [SECONDS [KIND]]`: every kind, or only KIND (one round; for `perf stat`, which then
/// counts that transport alone: context switches per call).
pub fn run(secs: Option<f64>, only: Option<&str>) {
    let secs = secs.unwrap_or(2.0);
    if let Some(kind) = only {
        assert!(KINDS.contains(&kind), "KIND is one of {KINDS:?}");
        let rate = measure(kind, secs);
        println!("{kind} {rate:.0} calls/s, {:.0} calls", rate * secs);
        return;
    }
    let mut best = [0f64; KINDS.len()];
    for round in 0..2 {
        for (i, kind) in KINDS.iter().enumerate() {
            let rate = measure(kind, secs);
            eprintln!("round {round}: {kind:14} {rate:10.0} calls/s");
            best[i] = best[i].max(rate);
        }
    }
    println!("{CALLERS} concurrent callers, one connection each, best of 2 rounds of {secs} s:");
    for (kind, rate) in KINDS.iter().zip(best) {
        println!("  {kind:14} {rate:10.0} calls/s");
    }
    println!(
        "time per call, pipette / raw Unix socket: tonic {:.3}, tarpc {:.3}",
        best[1] / best[0],
        best[3] / best[2]
    );
}
