//! What the RPC adapters (`tonic`, `tarpc`) share: a server's connections, each prepared
//! for the framework by an async step, as a `Stream` that owns the server.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use crate::tokio::{Connection, Server};
use crate::{Error, Result};

/// How long the next accept waits after a failed one (out of descriptors, say), so that a
/// lasting condition does not spin.
const PAUSE_AFTER_FAILED_ACCEPT: Duration = Duration::from_millis(100);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns an admitted connection into what the framework takes.
pub(crate) type Prepare<T> = fn(Connection) -> BoxFuture<Result<T>>;

enum Next<T> {
    Ready(T),
    /// One connection failed after it was admitted: report it, go on at once.
    Failed(Error),
    /// The accept itself failed: report it, pause before the next.
    AcceptFailed(Error),
    Stopped,
}

/// The accepted connections, prepared: `Stream<Item = Result<T>>`, ending at the server's
/// shutdown.
pub(crate) struct Accepting<T> {
    server: Arc<Server>,
    prepare: Prepare<T>,
    pending: Option<BoxFuture<Next<T>>>,
    pause: bool,
    done: bool,
}

impl<T: Send + 'static> Accepting<T> {
    pub(crate) fn new(server: Server, prepare: Prepare<T>) -> Self {
        Accepting {
            server: Arc::new(server),
            prepare,
            pending: None,
            pause: false,
            done: false,
        }
    }

    pub(crate) fn server(&self) -> &Server {
        &self.server
    }
}

impl<T: Send + 'static> futures_core::Stream for Accepting<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let fut = this.pending.get_or_insert_with(|| {
            let (server, prepare) = (this.server.clone(), this.prepare);
            let pause = std::mem::take(&mut this.pause);
            Box::pin(async move {
                if pause {
                    ::tokio::time::sleep(PAUSE_AFTER_FAILED_ACCEPT).await;
                }
                match server.accept().await {
                    Ok(conn) => match prepare(conn).await {
                        Ok(ready) => Next::Ready(ready),
                        Err(e) => Next::Failed(e),
                    },
                    Err(Error::Shutdown) => Next::Stopped,
                    Err(e) => Next::AcceptFailed(e),
                }
            })
        });
        let next = ready!(fut.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(match next {
            Next::Ready(ready) => Some(Ok(ready)),
            Next::Failed(e) => Some(Err(e)),
            Next::AcceptFailed(e) => {
                this.pause = true;
                Some(Err(e))
            }
            Next::Stopped => {
                this.done = true;
                None
            }
        })
    }
}

impl<T> fmt::Debug for Accepting<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accepting")
            .field("server", &self.server)
            .field("done", &self.done)
            .finish()
    }
}
