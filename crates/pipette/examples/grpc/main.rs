//! The same tonic gRPC service over pipette and over TCP: only the transport lines differ.
//!
//! ```text
//! cargo run -p pipette-ipc --features tonic --example grpc              # both, in turn
//! cargo run -p pipette-ipc --features tonic --example grpc -- pipette   # or one of them
//! cargo run -p pipette-ipc --features tonic --example grpc -- tcp
//! ```
//!
//! Each run serves `EchoService` (hand-written prost messages: no `protoc`; see
//! `service.rs`), makes 16 concurrent calls through one channel, prints what the server saw
//! of the caller, and shuts down.

mod service;

use std::net::SocketAddr;

use service::{CallRequest, EchoClient, EchoServer, EchoService};
use tonic::transport::{Channel, Endpoint, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let which = std::env::args().nth(1).unwrap_or_else(|| "both".to_owned());
    if which == "pipette" || which == "both" {
        over_pipette().await?;
    }
    if which == "tcp" || which == "both" {
        over_tcp().await?;
    }
    if !["pipette", "tcp", "both"].contains(&which.as_str()) {
        return Err(format!("unknown transport {which:?}: say pipette, tcp or both").into());
    }
    Ok(())
}

async fn over_pipette() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("grpc-example-{}", std::process::id());
    let svc = EchoServer::new(EchoService::default());

    // --- transport: a pipette server by name ---
    let server = pipette::tokio::Server::bind(name.as_str())?;
    let stop = server.shutdown_handle();
    let serving =
        tokio::spawn(Server::builder().serve_with_incoming(svc, pipette::tonic::incoming(server)));
    let channel = pipette::tonic::channel(name.as_str(), &pipette::ClientOptions::new()).await?;
    // ---

    calls("pipette", channel).await?;
    stop.shutdown(); // ends the incoming stream: serve_with_incoming returns
    serving.await??;
    Ok(())
}

async fn over_tcp() -> Result<(), Box<dyn std::error::Error>> {
    let svc = EchoServer::new(EchoService::default());

    // --- transport: a TCP port on the loopback ---
    let incoming =
        tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = incoming.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving =
        tokio::spawn(
            Server::builder().serve_with_incoming_shutdown(svc, incoming, async {
                let _ = stopped.await;
            }),
        );
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // ---

    calls("tcp", channel).await?;
    let _ = stop.send(());
    serving.await??;
    Ok(())
}

/// The client code, identical for both transports: 16 concurrent calls on one channel.
async fn calls(transport: &str, channel: Channel) -> Result<(), Box<dyn std::error::Error>> {
    let client = EchoClient::new(channel);
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..16u64 {
        let mut client = client.clone();
        tasks.spawn(async move {
            let text = format!("hello #{seq}");
            let reply = client
                .call(CallRequest {
                    seq,
                    text: text.clone(),
                    delay_ms: 0,
                })
                .await?;
            if reply.seq != seq || reply.text != text {
                return Err(tonic::Status::internal(format!("wrong echo: {reply:?}")));
            }
            Ok(reply)
        });
    }
    let mut replies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        replies.push(done??);
    }
    let first = &replies[0];
    println!(
        "{transport}: {} calls answered; the server saw caller pid {} uid {}",
        replies.len(),
        first
            .peer_pid
            .map_or("unknown".to_owned(), |p| p.to_string()),
        first
            .peer_uid
            .map_or("unknown".to_owned(), |u| u.to_string()),
    );
    Ok(())
}
