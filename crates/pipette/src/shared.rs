//! The state both halves of a connection share, for the blocking and the async API alike.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::Error;
use crate::frame;
use crate::shutdown::{Registration, Shutdown};
use crate::{Name, PeerIdentity};

/// A platform stream that can tell who is on the other end.
pub(crate) trait PeerOf {
    /// The peer's identity, as the operating system reports it.
    fn peer_identity(&self) -> io::Result<PeerIdentity>;
}

/// What the send and receive halves of one connection share. `S` is the platform stream
/// (blocking or async); it is also held by the shutdown registry, which is why it is an `Arc`.
pub(crate) struct Shared<S> {
    pub(crate) stream: Arc<S>,
    pub(crate) shutdown: Shutdown,
    _registration: Registration,
    pub(crate) name: Name,
    pub(crate) raw: bool,
    peer: OnceLock<PeerIdentity>,
    /// Largest payload the peer accepts. A client starts with the protocol minimum and learns
    /// the real value from the server's reply.
    peer_limit: AtomicU32,
    peer_limit_known: AtomicBool,
}

impl<S: PeerOf> Shared<S> {
    pub(crate) fn new(
        stream: Arc<S>,
        shutdown: Shutdown,
        registration: Registration,
        name: Name,
        raw: bool,
        peer: Option<PeerIdentity>,
        peer_limit: Option<u32>,
    ) -> Shared<S> {
        Shared {
            stream,
            shutdown,
            _registration: registration,
            name,
            raw,
            peer: peer.map(OnceLock::from).unwrap_or_default(),
            peer_limit: AtomicU32::new(peer_limit.unwrap_or(frame::MIN_MESSAGE_LIMIT)),
            peer_limit_known: AtomicBool::new(peer_limit.is_some()),
        }
    }

    pub(crate) fn set_peer_limit(&self, limit: u32) {
        self.peer_limit.store(limit, Ordering::Release);
        self.peer_limit_known.store(true, Ordering::Release);
    }

    pub(crate) fn peer_limit(&self) -> u32 {
        self.peer_limit.load(Ordering::Acquire)
    }

    pub(crate) fn peer_limit_known(&self) -> bool {
        self.peer_limit_known.load(Ordering::Acquire)
    }

    pub(crate) fn peer(&self) -> &PeerIdentity {
        self.peer
            .get_or_init(|| self.stream.peer_identity().unwrap_or_default())
    }

    /// Turns an I/O error of `op` into the error the user should see.
    pub(crate) fn error(&self, e: io::Error, op: &'static str, timeout: Option<Duration>) -> Error {
        Error::from_io(e, op, timeout, self.shutdown.is_shutdown())
    }

    /// End of stream where a message may start.
    pub(crate) fn eof(&self) -> Error {
        Error::eof(self.shutdown.is_shutdown())
    }

    /// For the `io` traits of a stream: the error to return once the handle was triggered
    /// (`ConnectionAborted`, wrapping [`Error::Shutdown`]).
    pub(crate) fn aborted_io(&self) -> Option<io::Error> {
        self.shutdown.is_shutdown().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                Error::Shutdown(crate::error::SHUTDOWN_TRIGGERED),
            )
        })
    }

    /// `Err(Shutdown)` once the handle was triggered: checked at the start of every call, so
    /// that data still queued in the socket is not returned after a shutdown.
    pub(crate) fn check_shutdown(&self) -> Result<(), Error> {
        if self.shutdown.is_shutdown() {
            Err(Error::Shutdown(crate::error::SHUTDOWN_TRIGGERED))
        } else {
            Ok(())
        }
    }
}
