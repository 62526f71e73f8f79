//! A small gRPC service written by hand, the way `tonic-prost-build` would generate it, so that
//! the example (and the tests, which include this file) need no `protoc`. The equivalent
//! `.proto`:
//!
//! ```proto
//! syntax = "proto3";
//! package pipette.example;
//! service Echo { rpc Call (CallRequest) returns (CallReply); }
//! message CallRequest { uint64 seq = 1; string text = 2; uint32 delay_ms = 3; }
//! message CallReply {
//!   uint64 seq = 1; string text = 2;
//!   optional uint32 peer_pid = 3; optional uint32 peer_uid = 4;
//! }
//! ```

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

// ---- messages ----

/// `CallRequest`: echo `text` back after `delay_ms`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CallRequest {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(uint32, tag = "3")]
    pub delay_ms: u32,
}

/// `CallReply`: the echo, and who the server saw calling (if the transport could tell).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CallReply {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(string, tag = "2")]
    pub text: String,
    #[prost(uint32, optional, tag = "3")]
    pub peer_pid: Option<u32>,
    #[prost(uint32, optional, tag = "4")]
    pub peer_uid: Option<u32>,
}

const CALL: &str = "/pipette.example.Echo/Call";

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

// ---- server side ----

/// The service's one method; the implementation below is all a user writes.
pub trait Echo: Send + Sync + 'static {
    /// `rpc Call (CallRequest) returns (CallReply)`.
    fn call(
        &self,
        request: Request<CallRequest>,
    ) -> impl Future<Output = Result<Response<CallReply>, Status>> + Send;
}

/// The generated-style wrapper that routes HTTP requests to an [`Echo`].
pub struct EchoServer<T> {
    inner: Arc<T>,
}

impl<T> EchoServer<T> {
    pub fn new(inner: T) -> Self {
        EchoServer {
            inner: Arc::new(inner),
        }
    }
}

impl<T> Clone for EchoServer<T> {
    fn clone(&self) -> Self {
        EchoServer {
            inner: self.inner.clone(),
        }
    }
}

impl<T> tonic::server::NamedService for EchoServer<T> {
    const NAME: &'static str = "pipette.example.Echo";
}

impl<T: Echo> tower_service::Service<http::Request<tonic::body::Body>> for EchoServer<T> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != CALL {
            return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) });
        }
        struct Unary<T>(Arc<T>);
        impl<T: Echo> tonic::server::UnaryService<CallRequest> for Unary<T> {
            type Response = CallReply;
            type Future = BoxFuture<Result<Response<CallReply>, Status>>;
            fn call(&mut self, request: Request<CallRequest>) -> Self::Future {
                let inner = self.0.clone();
                Box::pin(async move { inner.call(request).await })
            }
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(Unary(inner), req).await)
        })
    }
}

// ---- client side ----

/// The generated-style client.
#[derive(Clone)]
pub struct EchoClient {
    inner: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    pub fn new(channel: Channel) -> Self {
        EchoClient {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// `Call`.
    pub async fn call(&mut self, request: CallRequest) -> Result<CallReply, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(CALL);
        let codec = tonic_prost::ProstCodec::default();
        let reply = self.inner.unary(Request::new(request), path, codec).await?;
        Ok(reply.into_inner())
    }
}

// ---- the implementation ----

/// Echoes, after the requested delay, and says who called: with pipette the caller's
/// identity is a request extension (`pipette::PeerIdentity`); over TCP there is none.
#[derive(Debug, Default)]
pub struct EchoService {
    /// Called once per call as it starts (the tests count calls in flight).
    pub on_call: Option<fn(u64)>,
}

impl Echo for EchoService {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        let peer = request.extensions().get::<pipette::PeerIdentity>().cloned();
        let req = request.into_inner();
        if let Some(f) = self.on_call {
            f(req.seq);
        }
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        Ok(Response::new(CallReply {
            seq: req.seq,
            text: req.text,
            peer_pid: peer.as_ref().and_then(|p| p.pid()),
            peer_uid: peer.as_ref().and_then(|p| p.uid()),
        }))
    }
}
