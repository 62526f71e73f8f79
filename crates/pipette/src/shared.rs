//! What the drivers share: the state both halves of a connection hold, the handshake reply
//! slot, sticky errors, and the one mapping from the protocol engine's outcomes to
//! [`Error`]s. Generic over the platform stream, so that the blocking and the async API use
//! the same code; only the I/O differs between them.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Operation};
use crate::proto::{Decoder, EncodeError, Encoder, Failure, Outgoing, ReplyError, ReplyReader};
use crate::shutdown::{Registration, Shutdown};
use crate::sys::Cancel;
use crate::{frame, Name, PeerIdentity};

/// What the send and receive halves of one connection share. `S` is the platform stream
/// (blocking or async); it is also held by the shutdown registry, which is why it is an `Arc`.
pub(crate) struct Shared<S> {
    pub(crate) stream: Arc<S>,
    pub(crate) shutdown: Shutdown,
    _registration: Registration,
    pub(crate) name: Name,
    pub(crate) raw: bool,
    /// Who is on the other end, if the platform could tell.
    pub(crate) peer: Option<PeerIdentity>,
    /// The server's handshake reply, for a client; read by whichever half needs it first.
    pub(crate) reply: ReplySlot,
    /// The shared-memory region the messages travel through, when both sides agreed to it
    /// (the socket then carries no bytes and stays open as the liveness channel).
    pub(crate) shm: Option<crate::shm::Link>,
    /// Whether messages from the peer may carry descriptors (this side offered or agreed to
    /// `FEATURE_DESCRIPTORS`, and its stream keeps them).
    pub(crate) accepts_descriptors: bool,
}

impl<S> Shared<S> {
    /// The largest message the peer accepts, as far as known (a client learns it from the
    /// server's reply; until then, the protocol minimum); unlimited in raw mode.
    pub(crate) fn peer_max_message_size(&self) -> usize {
        if self.raw {
            usize::MAX
        } else {
            self.reply.limit_or_minimum() as usize
        }
    }

    /// `peer_limit`: the peer's limit when known (a server learns it from the hello; raw
    /// mode has none); `None` for a client, which learns it from the reply.
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
            peer,
            reply: ReplySlot::new(peer_limit),
            shm: None,
            accepts_descriptors: false,
        }
    }

    /// Whether messages may carry descriptors: both sides agreed to `FEATURE_DESCRIPTORS`
    /// (a client knows it once the reply is in).
    pub(crate) fn passes_descriptors(&self) -> bool {
        self.reply.features() & frame::FEATURE_DESCRIPTORS != 0
    }

    /// The header's count for a message that carries `fds` descriptors (1 or more), or why
    /// this connection cannot send it (nothing is sent then, and the connection stays
    /// usable).
    pub(crate) fn descriptor_count(&self, fds: usize) -> Result<u8, Error> {
        #[cfg(unix)]
        const NOT_AGREED: &str = "this connection does not pass descriptors: both sides must ask for them (ServerOptions::descriptors and ClientOptions::descriptors), on a Unix socket";
        #[cfg(windows)]
        const NOT_AGREED: &str = "this connection does not pass handles: both sides must ask for them (ServerOptions::descriptors and ClientOptions::descriptors), and each side must be able to open the other's process with PROCESS_DUP_HANDLE (usually: both run as the same user)";
        #[cfg(unix)]
        const WHAT: &str = "descriptors";
        #[cfg(windows)]
        const WHAT: &str = "handles";
        if !self.passes_descriptors() {
            return Err(Error::InvalidConfig(NOT_AGREED.into()));
        }
        match u8::try_from(fds) {
            Ok(n) if n <= frame::MAX_DESCRIPTORS => Ok(n),
            _ => Err(Error::InvalidConfig(format!(
                "{fds} {WHAT} in one message; at most {}: send them in several messages",
                frame::MAX_DESCRIPTORS
            ))),
        }
    }

    /// Turns an I/O error of `op` into the error the user should see. On a shared-memory
    /// connection, `InvalidData` is the ring saying the peer broke its protocol: the
    /// connection is closed at once ([`crate::shm::failure`]).
    pub(crate) fn error(&self, e: io::Error, op: Operation, timeout: Option<Duration>) -> Error
    where
        S: Cancel,
    {
        if e.kind() == io::ErrorKind::InvalidData && self.shm.is_some() {
            return crate::shm::failure(self, e);
        }
        Error::from_io(e, op, timeout, self.shutdown.is_shutdown())
    }

    /// End of stream where a message may start.
    pub(crate) fn eof(&self) -> Error {
        Error::eof(self.shutdown.is_shutdown())
    }

    /// For the `io` traits of a stream: the error to return once the handle was triggered
    /// (`ConnectionAborted`, wrapping [`Error::Shutdown`]).
    pub(crate) fn aborted_io(&self) -> Option<io::Error> {
        self.shutdown
            .is_shutdown()
            .then(|| io::Error::new(io::ErrorKind::ConnectionAborted, Error::Shutdown))
    }

    /// `Err(Shutdown)` once the handle was triggered: checked at the start of every call, so
    /// that data still queued in the socket is not returned after a shutdown.
    #[inline]
    pub(crate) fn check_shutdown(&self) -> Result<(), Error> {
        if self.shutdown.is_shutdown() {
            Err(Error::Shutdown)
        } else {
            Ok(())
        }
    }

    /// The error a protocol failure of the receiving direction stands for.
    pub(crate) fn recv_failure(&self, f: &Failure) -> Error {
        match f {
            Failure::BadHeader(frame::DecodeError::TooLarge { len, max }) => {
                Error::MessageTooLarge {
                    len: (*len).into(),
                    max: (*max).into(),
                }
            }
            Failure::BadHeader(e) => Error::Protocol {
                message: f.to_string(),
                source: Some(e.clone()),
            },
            Failure::Truncated { .. } => Error::protocol(f.to_string()),
        }
    }

    /// The error a refused or malformed handshake reply stands for.
    pub(crate) fn reply_failure(&self, e: &ReplyError) -> Error {
        let name = self.name.as_str();
        match e {
            ReplyError::Refused(reason) => Error::Refused {
                name: name.to_owned(),
                reason: *reason,
            },
            ReplyError::Invalid(d) => Error::Protocol {
                message: format!(
                    "{name:?} did not answer like a pipette server; if it is a plain byte-stream peer, connect in raw mode"
                ),
                source: Some(d.clone()),
            },
            ReplyError::CutShort { received: 0 } => Error::protocol(format!(
                "the server at {name:?} closed the connection without answering the handshake; it may be shutting down, overloaded, or not a pipette server (a raw peer needs raw mode)"
            )),
            ReplyError::CutShort { .. } => Error::protocol(format!(
                "the server at {name:?} closed the connection part-way through its handshake reply; it is not a pipette server (a raw peer needs raw mode)"
            )),
        }
    }
}

/// The receiving direction's state, as both drivers keep it: the engine's decoder and the
/// error that ended the direction, if one did. What to make of the stream's end, of a
/// failure and of the server's reply is decided here, once.
#[derive(Debug)]
pub(crate) struct Receiver {
    pub(crate) decoder: Decoder,
    pub(crate) sticky: Sticky,
}

impl Receiver {
    pub(crate) fn new(limit: u32) -> Receiver {
        Receiver {
            decoder: Decoder::new(limit),
            sticky: Sticky::default(),
        }
    }

    /// The stream ended with `buffered` bytes unconsumed: the peer's orderly close at a
    /// message boundary, else a failure (sticky).
    pub(crate) fn end_of_stream<S>(&mut self, shared: &Shared<S>, buffered: usize) -> Error {
        match self.decoder.end_of_stream(buffered) {
            Ok(()) => shared.eof(),
            Err(_) if shared.shutdown.is_shutdown() => Error::Shutdown,
            Err(f) => {
                let e = shared.recv_failure(&f);
                self.sticky.set(e)
            }
        }
    }

    /// The peer sent something invalid: close the connection (both directions, at once) and
    /// say what it was.
    pub(crate) fn fail<S: Cancel>(&mut self, shared: &Shared<S>, f: &Failure) -> Error {
        let e = shared.recv_failure(f);
        self.broken(shared, e)
    }

    /// The peer broke the protocol (`e` says how): the connection ends here, both directions
    /// at once, and every later receive reports `e`.
    pub(crate) fn broken<S: Cancel>(&mut self, shared: &Shared<S>, e: Error) -> Error {
        shared.stream.cancel();
        shared.stream.finish();
        self.sticky.set(e)
    }

    /// The error for a failed read of either driver (`timeout`: the receive's). A timeout,
    /// or nothing there yet, keeps everything for the next call; on a shared-memory
    /// connection, `InvalidData` is the peer breaking the ring's protocol, which
    /// `Shared::error` has ended the connection for: that error stays (sticky).
    pub(crate) fn read_failure<S: Cancel>(
        &mut self,
        shared: &Shared<S>,
        e: io::Error,
        timeout: Option<Duration>,
    ) -> Error {
        let broken = e.kind() == io::ErrorKind::InvalidData && shared.shm.is_some();
        let err = shared.error(e, Operation::Recv, timeout);
        if broken {
            return self.sticky.set(err);
        }
        err
    }

    /// The message just decoded carries descriptors that could not be claimed (`why`): it
    /// cannot be delivered whole, so the connection ends here (both directions, at once),
    /// and the error says why: [`Error::Io`] naming `RLIMIT_NOFILE` for descriptors this
    /// process could not take, [`Error::Protocol`] for fewer than the message says (sticky).
    #[cfg(unix)]
    #[cold]
    pub(crate) fn unclaimed<S: Cancel>(
        &mut self,
        shared: &Shared<S>,
        why: crate::sys::Unclaimed,
    ) -> Error {
        let e = match why {
            crate::sys::Unclaimed::Lost => Error::io(
                format!(
                    "a message's descriptors could not be received: {}",
                    crate::sys::DESCRIPTORS_LOST
                ),
                io::Error::other("descriptors closed by the kernel (MSG_CTRUNC)"),
            ),
            crate::sys::Unclaimed::Missing(said, arrived) => Error::protocol(format!(
                "a message says it carries {said} descriptors, but {arrived} arrived with it: the peer does not follow the protocol"
            )),
        };
        self.broken(shared, e)
    }

    /// What the server's reply meant, for this direction.
    pub(crate) fn reply<S>(
        &mut self,
        shared: &Shared<S>,
        outcome: Result<u32, ReplyError>,
    ) -> Result<(), Error> {
        outcome.map(|_| ()).map_err(|e| {
            if shared.shutdown.is_shutdown() {
                // The handle cut the stream while the reply was awaited: that, not the
                // server, is why it ended.
                return Error::Shutdown;
            }
            self.sticky.set(shared.reply_failure(&e))
        })
    }

    /// `Ok` between messages; turning the connection into a byte stream in the middle of one
    /// would hand its rest to the caller as if it were data.
    pub(crate) fn at_boundary(&self) -> Result<(), Error> {
        if self.decoder.at_boundary() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(
                "cannot turn a connection into a stream in the middle of a message; receive the rest of it first".into(),
            ))
        }
    }
}

/// The sending direction's state, as both drivers keep it: the engine's encoder and the
/// error that ended the direction, if one did.
#[derive(Debug)]
pub(crate) struct Sender {
    pub(crate) encoder: Encoder,
    pub(crate) sticky: Sticky,
}

impl Sender {
    pub(crate) fn new(raw: bool) -> Sender {
        Sender {
            encoder: Encoder::new(raw),
            sticky: Sticky::default(),
        }
    }

    /// Frames a message of `len` bytes for a peer that accepts `limit`.
    #[inline]
    pub(crate) fn frame(&self, len: usize, limit: u32) -> Result<Outgoing, Error> {
        self.sticky.check()?;
        self.encoder.message(len, limit).map_err(encode_failure)
    }

    /// Frames a message of `len` bytes that carries `n` descriptors, for a peer that agreed
    /// to them and accepts `limit` (known: the reply that agreed is in).
    pub(crate) fn frame_with_descriptors(
        &self,
        len: usize,
        limit: u32,
        n: u8,
    ) -> Result<Outgoing, Error> {
        self.sticky.check()?;
        self.encoder
            .message_with_descriptors(len, limit, n)
            .map_err(encode_failure)
    }

    /// A message was cut part-way by `err` (a failed or timed-out write, or a cancel): in
    /// framed mode the direction is poisoned and `shutdown_write` ends it, so that the peer
    /// sees a truncated message, never a corrupted stream. Returns `err`.
    pub(crate) fn cut(&mut self, err: Error, shutdown_write: impl FnOnce()) -> Error {
        if self.encoder.cut() {
            shutdown_write();
            return self.sticky.set(err);
        }
        err
    }

    /// What the server's reply meant, for this direction (the send half may read it first).
    pub(crate) fn reply<S>(
        &mut self,
        shared: &Shared<S>,
        outcome: Result<u32, ReplyError>,
    ) -> Result<u32, Error> {
        outcome.map_err(|e| self.sticky.set(shared.reply_failure(&e)))
    }
}

/// The error an encoder's refusal stands for. `Poisoned`/`Ended` only reach here when no
/// earlier error was recorded (see [`Sticky`]).
pub(crate) fn encode_failure(e: EncodeError) -> Error {
    match e {
        EncodeError::TooLarge { len, max } => Error::MessageTooLarge {
            len: len as u64,
            max: max.into(),
        },
        EncodeError::Poisoned => Error::Broken(Arc::new(Error::protocol(
            "an earlier send was cut part-way through a message",
        ))),
        EncodeError::Ended => Error::Broken(Arc::new(Error::protocol(
            "the sending direction was closed",
        ))),
    }
}

/// The error that ended a direction of a connection, reported again (as
/// [`Error::Broken`]) by every later call.
#[derive(Debug, Default)]
pub(crate) struct Sticky(Option<Arc<Error>>);

impl Sticky {
    /// `Err(Broken)` once a direction has failed.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.0 {
            None => Ok(()),
            Some(cause) => Err(Error::Broken(cause.clone())),
        }
    }

    /// Records `e` as the direction's failure (the first one counts) and returns it.
    pub(crate) fn set(&mut self, e: Error) -> Error {
        if self.0.is_none() {
            self.0 = Some(Arc::new(e.duplicate()));
        }
        e
    }

    /// Whether the direction has failed.
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// A client's handshake reply, shared by the two halves of a connection: whichever needs it
/// first (the receive half before its first message, the send half before a message larger
/// than the protocol minimum) reads it, under the lock, and the other finds it done. Once
/// known, the peer's limit is an atomic load.
pub(crate) struct ReplySlot {
    /// The peer's limit once known; `UNKNOWN` before.
    limit: AtomicU32,
    /// The features both sides use: a server knows them from the start, a client once the
    /// reply is in.
    features: AtomicU16,
    state: Mutex<ReplyReader>,
}

/// `limit` before the reply is in. No valid limit is 0 (the minimum is 4096).
const UNKNOWN: u32 = 0;

impl ReplySlot {
    /// `known`: the limit when there is no reply to read (a server's connection, raw mode).
    fn new(known: Option<u32>) -> ReplySlot {
        ReplySlot {
            limit: AtomicU32::new(known.unwrap_or(UNKNOWN)),
            features: AtomicU16::new(0),
            state: Mutex::new(ReplyReader::new()),
        }
    }

    /// The peer's limit, once the reply (or the hello) told it.
    #[inline]
    pub(crate) fn limit(&self) -> Option<u32> {
        match self.limit.load(Ordering::Acquire) {
            UNKNOWN => None,
            n => Some(n),
        }
    }

    /// The limit to check a message against: the real one, or the protocol minimum that a
    /// client may use before the reply is in.
    #[inline]
    pub(crate) fn limit_or_minimum(&self) -> u32 {
        self.limit().unwrap_or(frame::MIN_MESSAGE_LIMIT)
    }

    /// The optional features (`frame::FEATURE_*`) in use, as far as known (a client's are 0
    /// until the reply is in).
    pub(crate) fn features(&self) -> u16 {
        self.features.load(Ordering::Acquire)
    }

    /// A server's connection: the features it agreed to.
    pub(crate) fn agreed(&self, features: u16) {
        self.features.store(features, Ordering::Release);
    }

    /// A client's hello offered `features`: the reply must agree to no others.
    pub(crate) fn offer(&self, features: u16) {
        *self.lock() = ReplyReader::offering(features);
    }

    /// The reader, locked (for the half that reads the reply now).
    pub(crate) fn lock(&self) -> MutexGuard<'_, ReplyReader> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After feeding the reader: publishes an accepted limit. Returns the reply's outcome
    /// once complete.
    pub(crate) fn settle(&self, reader: &ReplyReader) -> Option<Result<u32, ReplyError>> {
        let result = reader.result()?.clone();
        if let Ok(limit) = result {
            self.features.store(reader.features(), Ordering::Release);
            self.limit.store(limit, Ordering::Release);
        }
        Some(result)
    }
}

/// Checks a configured `max_message_size`: at least the protocol minimum, capped at what the
/// 32-bit length field can carry.
pub(crate) fn message_limit(n: usize) -> Result<u32, Error> {
    if n < frame::MIN_MESSAGE_LIMIT as usize {
        return Err(Error::InvalidConfig(format!(
            "max_message_size {n} is below the protocol minimum of {} bytes; use at least that",
            frame::MIN_MESSAGE_LIMIT
        )));
    }
    Ok(n.min(frame::MAX_MESSAGE_LIMIT as usize) as u32)
}

/// The kernel timeout of one direction of a blocking stream, applied only when it changes.
#[derive(Debug, Default)]
pub(crate) struct TimeoutCache {
    /// What plain `send`/`recv` use.
    pub(crate) default: Option<Duration>,
    /// What the socket currently has.
    applied: Option<Duration>,
}

impl TimeoutCache {
    /// Whether `want` differs from what the socket has.
    #[inline]
    pub(crate) fn needs(&self, want: Option<Duration>) -> bool {
        self.applied != want
    }

    pub(crate) fn apply(
        &mut self,
        want: Option<Duration>,
        set: impl FnOnce(Option<Duration>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.applied != want {
            set(want)?;
            self.applied = want;
        }
        Ok(())
    }
}

/// `AsFd` and `AsRawFd` for a connection type and its halves (Unix), reaching the stream
/// through the given field path. A shutdown never closes the descriptor (it shuts the socket
/// down instead), so it stays valid for as long as the value lives.
#[cfg(unix)]
macro_rules! impl_as_fd {
    ($($ty:ty => $($field:ident).+;)+) => {
        $(
            impl std::os::fd::AsFd for $ty {
                fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                    std::os::fd::AsFd::as_fd(&*self.$($field).+)
                }
            }

            impl std::os::fd::AsRawFd for $ty {
                fn as_raw_fd(&self) -> std::os::fd::RawFd {
                    std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(self))
                }
            }
        )+
    };
}
#[cfg(unix)]
pub(crate) use impl_as_fd;
