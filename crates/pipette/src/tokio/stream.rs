//! An async connection used as a plain byte stream.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use bytes::{Buf, BytesMut};

use super::connection::AsyncShared;
use crate::sys::AsyncStream;
use crate::{PeerIdentity, Shutdown};

/// An async connection as a plain byte stream: `AsyncRead + AsyncWrite`.
///
/// From [`Connection::into_stream`](super::Connection::into_stream); the async twin of
/// [`pipette::Stream`](crate::Stream). After the connection's shutdown handle fires, reads and
/// writes fail with `io::ErrorKind::ConnectionAborted`.
pub struct Stream {
    shared: Arc<AsyncShared>,
    leftover: BytesMut,
}

impl Stream {
    pub(crate) fn new(shared: Arc<AsyncShared>, leftover: BytesMut) -> Stream {
        Stream { shared, leftover }
    }

    /// Who is on the other end, if the platform could tell.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.shared.peer.as_ref()
    }

    /// The connection's shutdown handle.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shared.shutdown.clone()
    }

    fn aborted(&self) -> Option<io::Error> {
        self.shared.aborted_io()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let n = buf.remaining().min(self.leftover.len());
            buf.put_slice(&self.leftover[..n]);
            self.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Err(e) = ready!(self.shared.stream.poll_read_ready(cx)) {
                return Poll::Ready(Err(self.aborted().unwrap_or(e)));
            }
            match self.shared.stream.try_read(buf.initialize_unfilled()) {
                Ok(0) if buf.remaining() > 0 => {
                    return Poll::Ready(self.aborted().map_or(Ok(()), Err));
                }
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(self.aborted().unwrap_or(e))),
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Err(e) = ready!(self.shared.stream.poll_write_ready(cx)) {
                return Poll::Ready(Err(self.aborted().unwrap_or(e)));
            }
            match self.shared.stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(self.aborted().unwrap_or(e))),
                Ok(n) => return Poll::Ready(Ok(n)),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shared.stream.shutdown_write())
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.shared.name.as_str())
            .finish()
    }
}
