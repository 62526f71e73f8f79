//! The shared-memory transport's ring discipline (docs/PROTOCOL.md §10), for both drivers:
//! a receive half consumes one ring, a send half produces into the other, and the socket
//! stays open as the liveness channel (its end is the peer's end). Only the waiting differs:
//! the blocking driver sleeps in `poll(2)` here (`sleep_announced`), the async one on the
//! runtime's reactor (`tokio/connection/shm.rs`), both around the same `announce`/`withdraw`
//! of the waiting word and the same checks (`Rx::take`, `Tx::room_for`).
//!
//! Every index read from the peer is checked (`proto::ring`) before use; bytes are copied
//! once out of the ring into private memory, and only the copy is decoded (by the same
//! `proto::Decoder` as a socket's bytes). A side that may sleep says so in its ring's
//! waiting flag first and then checks again; the other side, after publishing, looks at
//! that flag and signals the eventfd. Each store and the following load are `SeqCst`, so at
//! least one of the two sees the other: no wake-up is lost.

use std::io;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::ring::{self, Direction, RingError, Word};
use crate::sys::shm::{Event, Memory, Region, RingWriter, Woken};
use crate::sys::{self, SysStream};

/// How long a shared-memory connection's receives spin before they sleep, unless the
/// options say otherwise: longer than a prompt peer takes to answer, far shorter than an
/// idle period.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// One connection's region and which ring is whose.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) region: Arc<Region>,
    /// The ring this side writes.
    pub(crate) send: Direction,
    /// The ring this side reads.
    pub(crate) recv: Direction,
}

impl Link {
    /// The server's view of `region`.
    pub(crate) fn server(region: Region) -> Link {
        Link {
            region: Arc::new(region),
            send: Direction::ServerToClient,
            recv: Direction::ClientToServer,
        }
    }

    /// The client's view of `region`.
    pub(crate) fn client(region: Region) -> Link {
        Link {
            region: Arc::new(region),
            send: Direction::ClientToServer,
            recv: Direction::ServerToClient,
        }
    }
}

/// An index the peer wrote makes no sense: the ring is corrupted.
fn corrupted(e: RingError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The peer wrote bytes on the socket, which carries none in this mode.
fn bytes_on_socket() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the peer wrote on the socket of a shared-memory connection, which carries no bytes",
    )
}

/// The error for a peer that broke the shared-memory protocol (a corrupted ring, bytes on
/// the socket): the connection is closed at once, both ways. `Shared::error` gives it for
/// any `InvalidData` on a shared-memory connection, in either driver.
pub(crate) fn failure<S: sys::Cancel>(
    shared: &crate::shared::Shared<S>,
    e: io::Error,
) -> crate::Error {
    shared.stream.cancel();
    crate::Error::protocol(format!(
        "{e}; the peer broke the shared-memory protocol, so the connection was closed"
    ))
}

/// Why a shared-memory connection cannot become a byte stream (either API's `into_stream`).
pub(crate) fn no_stream() -> crate::Error {
    crate::Error::InvalidConfig(
        "a shared-memory connection cannot become a byte stream: its messages do not travel through the socket; connect without shared_memory to use into_stream".into(),
    )
}

/// The remaining time of a wait that began at `start` with `timeout`; `WouldBlock` once over.
fn left(start: Instant, timeout: Option<Duration>) -> io::Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) => match t.checked_sub(start.elapsed()) {
            Some(l) if !l.is_zero() => Ok(Some(l)),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        },
    }
}

/// What the ring discipline needs of the connection's socket, blocking or async: a look at
/// it without waiting (for the peer's end, or bytes it must not carry).
pub(crate) trait Socket {
    /// What is there right now (`WouldBlock` when nothing is); 0 at the end of the stream.
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl Socket for sys::Stream {
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        SysStream::read_now(self, buf)
    }
}

#[cfg(feature = "tokio")]
impl Socket for sys::aio::Stream {
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::AsyncStream::read_now(self, buf)
    }
}

/// The receive half's end of its ring.
#[derive(Debug)]
pub(crate) struct Rx {
    region: Arc<Region>,
    dir: Direction,
    /// Bytes consumed so far (ours: never read back from the shared word).
    tail: u64,
    /// Empty checks since the socket was last looked at.
    empty_checks: u32,
}

/// While spinning, the socket (for the peer's end) is looked at once per this many empty
/// checks of the ring: often enough to notice the end within microseconds, rarely enough to
/// keep a check at one atomic load.
const SOCKET_EVERY: u32 = 64;

impl Rx {
    pub(crate) fn new(link: &Link) -> Rx {
        Rx {
            region: link.region.clone(),
            dir: link.recv,
            tail: 0,
            empty_checks: 0,
        }
    }

    /// How many bytes are buffered (checked).
    fn buffered(&self) -> io::Result<usize> {
        let head = self
            .region
            .index(self.dir, Word::Head)
            .load(Ordering::Acquire);
        ring::buffered(head, self.tail, self.region.ring_size(self.dir)).map_err(corrupted)
    }

    /// Takes up to `dst`'s room of buffered bytes; `WouldBlock` when none are there; 0 at
    /// the peer's end (its socket reads end-of-stream and the ring is drained). `look`:
    /// check the socket now (else only every `SOCKET_EVERY` empty checks, while spinning).
    pub(crate) fn take(
        &mut self,
        stream: &impl Socket,
        dst: &mut Dst<'_>,
        look: bool,
    ) -> io::Result<usize> {
        let mut n = self.buffered()?;
        if n == 0 {
            self.empty_checks += 1;
            if !look && self.empty_checks % SOCKET_EVERY != 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match stream.read_now(&mut [0u8; 1]) {
                // The peer's end: everything it wrote before is in the ring by now.
                Ok(0) => {
                    n = self.buffered()?;
                    if n == 0 {
                        return Ok(0);
                    }
                }
                Ok(_) => return Err(bytes_on_socket()),
                Err(e) => return Err(e),
            }
        }
        let n = match dst {
            Dst::Append(out, max) => {
                let n = n.min(*max);
                self.region.copy_out_append(self.tail, out, n);
                n
            }
            Dst::Uninit(buf) => {
                let n = n.min(buf.len());
                self.region.copy_out(self.tail, &mut buf[..n]);
                n
            }
        };
        self.tail += n as u64;
        publish(
            &self.region,
            self.dir,
            Word::Tail,
            self.tail,
            Event::Room(self.dir),
        );
        Ok(n)
    }

    /// One read into `dst`, as the socket's reads are: with `now`, what is buffered (`look`:
    /// check the socket for the peer's end at once, as `try_recv` must; a spinning check
    /// does so only now and then); without, it sleeps until bytes may be there (or the peer
    /// ended, or `timeout` expired: `WouldBlock`), announcing it in the ring's waiting word.
    pub(crate) fn read(
        &mut self,
        stream: &sys::Stream,
        dst: &mut Dst<'_>,
        now: bool,
        look: bool,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if now {
            return self.take(stream, dst, look);
        }
        let region = self.region.clone();
        let data = self.event();
        sleep_announced(&region, data, stream, timeout, || {
            self.take(stream, dst, true)
        })
    }

    /// The event a sleeping receive waits for (bytes written into its ring).
    pub(crate) fn event(&self) -> Event {
        Event::Data(self.dir)
    }
}

/// Where a receive puts the bytes it takes out of the ring.
pub(crate) enum Dst<'a> {
    /// Appended to this `Vec` (the receive buffer, or a large message's own buffer), at
    /// most this many.
    Append(&'a mut Vec<u8>, usize),
    /// Into this uninitialised slice (a `BufMut`'s chunk), as many as fit: the first ones
    /// are initialised then, as many as `take` returns.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Uninit(&'a mut [std::mem::MaybeUninit<u8>]),
}

/// The waiting word a sleeper on `event` announces itself in.
fn waiting_word(region: &Region, event: Event) -> &AtomicU32 {
    match event {
        Event::Data(d) => region.flag(d, Word::ConsumerWaiting),
        Event::Room(d) => region.flag(d, Word::ProducerWaiting),
    }
}

/// Publishes our index (`word` of ring `dir`, which only we write), then, after a full
/// fence, wakes the other side if its waiting word for `wake` says it may be asleep.
fn publish(region: &Region, dir: Direction, word: Word, value: u64, wake: Event) {
    region.index(dir, word).store(value, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if waiting_word(region, wake).load(Ordering::SeqCst) != 0 {
        region.signal(wake);
    }
}

/// Says that this side may sleep on `event`: 1 in the ring's waiting word for it, then a
/// full fence. The check that follows (before sleeping) sees whatever the other side
/// published before it looked at the word, and a publish after it sees the 1 and signals.
pub(crate) fn announce(region: &Region, event: Event) {
    waiting_word(region, event).store(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// Says that this side is awake again (checks, and announces again before it next sleeps).
pub(crate) fn withdraw(region: &Region, event: Event) {
    waiting_word(region, event).store(0, Ordering::Relaxed);
}

/// Waits for `event` the lost-wake-up-free way: `announce`, check again with `ready` (its
/// result is returned unless `WouldBlock`), sleep on the eventfd (and the socket),
/// `withdraw`, and go round. A consumer's socket wake is the peer's
/// end, which `ready` then reports; a producer's is a hang-up (`BrokenPipe`). `WouldBlock`
/// once `timeout` is over.
fn sleep_announced<T>(
    region: &Region,
    event: Event,
    stream: &sys::Stream,
    timeout: Option<Duration>,
    mut ready: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let start = Instant::now();
    loop {
        announce(region, event);
        match ready() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => {
                withdraw(region, event);
                return other;
            }
        }
        let woken = left(start, timeout).and_then(|left| region.wait_on(event, stream, left));
        withdraw(region, event);
        match (woken?, event) {
            // One last look, then give up (`ready` says `WouldBlock` if still nothing).
            (Woken::TimedOut, _) => return ready(),
            (Woken::Socket, Event::Room(_)) => return Err(io::ErrorKind::BrokenPipe.into()),
            _ => {}
        }
    }
}

/// The send half's end of its ring.
#[derive(Debug)]
pub(crate) struct Tx {
    region: Arc<Region>,
    writer: RingWriter,
    dir: Direction,
    /// Bytes written so far (ours: never read back from the shared word).
    head: u64,
    /// The consumer's `tail` as last read (checked then). It only grows, so the room it
    /// gives is never more than there is; the shared word is read again only when this room
    /// is too small. A send that found room reads no line the consumer has written since:
    /// each read of its `tail` is a cache-line transfer from the other CPU, one more on
    /// every round trip's path, and on the consumer's side its next `tail` store waits for
    /// the line to come back. (Only this half reads and writes it; atomic so that the half
    /// stays `Sync`.)
    seen_tail: AtomicU64,
}

impl Tx {
    pub(crate) fn new(link: &Link) -> Tx {
        Tx {
            region: link.region.clone(),
            writer: link
                .region
                .writer()
                .expect("one send half per shared-memory connection"),
            dir: link.send,
            head: 0,
            seen_tail: AtomicU64::new(0),
        }
    }

    /// Room in the ring (checked): what the last `tail` read gives when that is at least
    /// `want`, else what the consumer's `tail` gives now.
    fn room(&self, want: usize) -> io::Result<usize> {
        let size = self.ring_size();
        // `head - seen_tail <= size` (no send wrote more than the room it was given); were it
        // ever not, the remembered room is 0 and the shared word is read and checked.
        let used = self
            .head
            .wrapping_sub(self.seen_tail.load(Ordering::Relaxed));
        let known = (size as u64).saturating_sub(used) as usize;
        if known >= want {
            return Ok(known);
        }
        let tail = self
            .region
            .index(self.dir, Word::Tail)
            .load(Ordering::Acquire);
        let room = ring::room(self.head, tail, size).map_err(corrupted)?;
        self.seen_tail.store(tail, Ordering::Relaxed);
        Ok(room)
    }

    /// The size of the ring this half writes.
    pub(crate) fn ring_size(&self) -> usize {
        self.region.ring_size(self.dir)
    }

    /// Whether a message of `len` bytes fits the ring whole with its header, so that
    /// `send_with` (either API) writes it in place.
    pub(crate) fn fits_in_place(&self, len: usize) -> bool {
        len <= self.ring_size().saturating_sub(crate::frame::HEADER_LEN)
    }

    /// Writes one frame in place: `header`, then the `len` payload bytes that `fill` writes
    /// into the ring itself (there must be room for both: see `room_for`), then publishes
    /// them as written and wakes a waiting consumer. If `fill` panics, nothing is published.
    pub(crate) fn write_frame_in_place(
        &mut self,
        header: &[u8],
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let need = header.len() + len;
        let (head, payload) = self.writer.lend(self.head, need).split_at_mut(header.len());
        head.copy_from_slice(header);
        fill(payload);
        self.writer.finish_lend();
        self.advance(need);
    }

    /// Publishes `n` more bytes as written and wakes a waiting consumer.
    fn advance(&mut self, n: usize) {
        self.head += n as u64;
        publish(
            &self.region,
            self.dir,
            Word::Head,
            self.head,
            Event::Data(self.dir),
        );
    }

    /// `Ok` when the ring has room for `len` bytes now, else `WouldBlock`.
    pub(crate) fn room_for(&self, len: usize) -> io::Result<()> {
        if self.room(len)? >= len {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    /// Writes as much of `a` then `b` as fits, publishes it and wakes a waiting consumer;
    /// `WouldBlock` when the ring is full.
    pub(crate) fn write_now(&mut self, a: &[u8], b: &[u8]) -> io::Result<usize> {
        let room = self.room(a.len() + b.len())?;
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let na = a.len().min(room);
        let nb = b.len().min(room - na);
        self.writer.copy_in(self.head, &a[..na]);
        self.writer.copy_in(self.head + na as u64, &b[..nb]);
        self.advance(na + nb);
        Ok(na + nb)
    }

    /// `Ok` when there is room now, else `WouldBlock`.
    pub(crate) fn room_now(&self) -> io::Result<()> {
        self.room_for(1)
    }

    /// The event a send waiting for room waits for (room made in its ring).
    pub(crate) fn event(&self) -> Event {
        Event::Room(self.dir)
    }

    /// Sleeps until there is room for `len` bytes (`Ok`), the peer is gone or the
    /// connection was shut down (`BrokenPipe`), or `timeout` expired (`WouldBlock`).
    pub(crate) fn wait_room(
        &self,
        stream: &sys::Stream,
        len: usize,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        sleep_announced(&self.region, self.event(), stream, timeout, || {
            self.room_for(len)
        })
    }
}

/// A client's side of the handover: reads the server's reply (with the descriptors sent
/// with it) into the connection's reply slot, and returns the region when the server agreed
/// to shared memory. Waits at most `timeout` for the reply.
pub(crate) fn client_handover(
    shared: &crate::shared::Shared<sys::Stream>,
    own: Memory,
    timeout: Duration,
) -> crate::Result<Option<Link>> {
    let mut reader = shared.reply.lock();
    let mut fds = Vec::new();
    let start = Instant::now();
    while reader.result().is_none() {
        let mut buf = [0u8; crate::frame::REPLY_LEN];
        let want = reader.missing();
        let left = left(start, Some(timeout)).unwrap_or(Some(Duration::ZERO));
        let read = sys::shm::read_handover(&shared.stream, &mut buf[..want], &mut fds, left);
        handover_fed(shared, &mut reader, read, &buf, timeout)?;
    }
    // Windows: the handles' values follow an agreeing reply.
    let mut after = [0u8; sys::shm::AFTER_REPLY];
    let wanted = if agreed(&reader) { after.len() } else { 0 };
    let mut got = 0;
    while got < wanted {
        let left = left(start, Some(timeout)).unwrap_or(Some(Duration::ZERO));
        let read = sys::shm::read_handover(&shared.stream, &mut after[got..], &mut fds, left);
        got += after_reply_read(shared, read, timeout)?;
    }
    if got > 0 {
        sys::shm::take_handles(&after, &mut fds).map_err(|e| handover_unusable(shared, e))?;
    }
    handover_settle(shared, &reader, own, fds)
}

/// Whether the reply `reader` read accepted the connection with shared memory.
fn agreed(reader: &crate::proto::ReplyReader) -> bool {
    reader.features() & crate::frame::FEATURE_SHARED_MEMORY != 0
        && matches!(reader.result(), Some(Ok(_)))
}

/// One read of what follows the reply (Windows): the bytes, or the error it means.
fn after_reply_read<S: sys::Cancel>(
    shared: &crate::shared::Shared<S>,
    read: io::Result<usize>,
    timeout: Duration,
) -> crate::Result<usize> {
    match read {
        Ok(0) => Err(crate::Error::Protocol {
            message: format!(
                "the server at {:?} ended the connection in the middle of its shared-memory handover",
                shared.name.as_str()
            ),
            source: None,
        }),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(handover_timed_out(timeout)),
        Err(e) => Err(shared.error(e, crate::Operation::Handshake, None)),
    }
}

/// The server handed over memory this client cannot use.
fn handover_unusable<S>(shared: &crate::shared::Shared<S>, e: io::Error) -> crate::Error {
    crate::Error::Protocol {
        message: format!(
            "the server at {:?} agreed to shared memory but handed over unusable memory: {e}",
            shared.name.as_str()
        ),
        source: None,
    }
}

/// The async client's side of the handover: `client_handover` on the runtime's reactor
/// (the reply slot is locked only around each read that does not wait).
#[cfg(feature = "tokio")]
pub(crate) async fn client_handover_async(
    shared: &crate::shared::Shared<sys::aio::Stream>,
    own: Memory,
    timeout: Duration,
) -> crate::Result<Option<Link>> {
    use sys::AsyncStream;
    let mut fds = Vec::new();
    let mut after = [0u8; sys::shm::AFTER_REPLY];
    let read = async {
        let readable = || async {
            shared
                .stream
                .readable()
                .await
                .map_err(|e| shared.error(e, crate::Operation::Handshake, None))
        };
        loop {
            {
                let mut reader = shared.reply.lock();
                if reader.result().is_some() {
                    break;
                }
                let mut buf = [0u8; crate::frame::REPLY_LEN];
                let want = reader.missing();
                match sys::shm::try_read_handover(&shared.stream, &mut buf[..want], &mut fds) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    read => {
                        handover_fed(shared, &mut reader, read, &buf, timeout)?;
                        continue;
                    }
                }
            }
            readable().await?;
        }
        // Windows: the handles' values follow an agreeing reply.
        let wanted = if agreed(&shared.reply.lock()) {
            after.len()
        } else {
            0
        };
        let mut got = 0;
        while got < wanted {
            match sys::shm::try_read_handover(&shared.stream, &mut after[got..], &mut fds) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => readable().await?,
                read => got += after_reply_read(shared, read, timeout)?,
            }
        }
        Ok::<usize, crate::Error>(got)
    };
    let got = match ::tokio::time::timeout(timeout, read).await {
        Ok(r) => r?,
        Err(_) => return Err(handover_timed_out(timeout)),
    };
    if got > 0 {
        sys::shm::take_handles(&after, &mut fds).map_err(|e| handover_unusable(shared, e))?;
    }
    let reader = shared.reply.lock();
    handover_settle(shared, &reader, own, fds)
}

fn handover_timed_out(timeout: Duration) -> crate::Error {
    crate::Error::TimedOut {
        op: crate::Operation::Handshake,
        after: timeout,
    }
}

/// Feeds one read of the handover (`buf` holds what it read) to the reply reader.
fn handover_fed<S: sys::Cancel>(
    shared: &crate::shared::Shared<S>,
    reader: &mut crate::proto::ReplyReader,
    read: io::Result<usize>,
    buf: &[u8],
    timeout: Duration,
) -> crate::Result<()> {
    match read {
        Ok(0) => reader.end_of_stream(),
        Ok(n) => {
            reader.feed(&buf[..n]);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(handover_timed_out(timeout)),
        Err(e) => return Err(shared.error(e, crate::Operation::Handshake, None)),
    }
    Ok(())
}

/// Settles the reply the handover read, and opens the region when the server agreed to
/// shared memory (`fds`: what came with the reply; unasked-for ones are closed here).
fn handover_settle<S>(
    shared: &crate::shared::Shared<S>,
    reader: &crate::proto::ReplyReader,
    own: Memory,
    fds: Vec<sys::shm::Descriptor>,
) -> crate::Result<Option<Link>> {
    let agreed = agreed(reader);
    match shared.reply.settle(reader) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(shared.reply_failure(&e)),
        None => unreachable!("the handover ends with a result"),
    }
    if !agreed {
        // Descriptors nobody asked for are closed here.
        return Ok(None);
    }
    let region = Region::open(own, fds).map_err(|e| handover_unusable(shared, e))?;
    Ok(Some(Link::client(region)))
}

/// A client's own memory, handed over with its hello when it offers shared memory; `None`
/// (and the offer is dropped) when the platform refuses to make it.
pub(crate) fn client_memory(ring_size: usize) -> Option<Memory> {
    let layout = ring::Layout::new(ring_size).ok()?;
    match Memory::create(layout) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up shared memory; connecting over the socket");
            None
        }
    }
}

/// A server's side: a region for a client (process `pid`) that offered shared memory and
/// handed over `client` (its memory) with the hello (Linux), when this server wants it and the platform can (a
/// failure is logged, and the connection stays on its socket).
pub(crate) fn server_region(
    ring_size: usize,
    client: Vec<sys::shm::Descriptor>,
    pid: Option<u32>,
) -> Option<Region> {
    let layout = ring::Layout::new(ring_size).ok()?;
    match Region::create(layout, client, pid) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up shared memory for a connection; it stays on its socket");
            None
        }
    }
}
