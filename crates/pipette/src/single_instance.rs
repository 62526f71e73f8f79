//! Single instance: the first launch of an app serves, later launches forward their arguments
//! and working directory to it and exit.
//!
//! The decision is the endpoint claim itself: whoever binds the name is the primary (binding
//! is exclusive and recovers a crashed server's leftovers), everyone else connects to it.
//! Between the two there are races, all retried until a deadline: the name is taken but its
//! server is not listening yet (still binding: connect waits), or its server is dying (connect
//! finds nobody: bind again). The forward is one message in a small format of its own
//! (docs/PROTOCOL.md, "Single instance"), answered by a one-message acknowledgement once the
//! primary has it.
//!
//! This module holds the blocking API and what the async one (`tokio/single_instance.rs`)
//! shares: the retry policy's constants and the encoding.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{Client, ClientOptions, Connection, IntoName, Name, PeerIdentity, Server, Shutdown};

/// How long [`single_instance`] keeps retrying the races between launches (a primary that is
/// still binding, or dying) before it gives up with the last error.
pub(crate) const DECIDE_DEADLINE: Duration = Duration::from_secs(10);

/// How long one connect attempt waits for a server that holds the name but is not listening
/// yet, before binding is tried again (the holder may have died meanwhile).
pub(crate) const CONNECT_SLICE: Duration = Duration::from_millis(250);

/// How long a secondary waits for the acknowledgement, and the primary for a forward on a
/// connection it accepted.
pub(crate) const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first bytes of a forward message: "PSI" and the format version.
const FORWARD_MAGIC: &[u8; 4] = b"PSI\x01";

/// The whole acknowledgement message: "PSI" and ASCII ACK.
pub(crate) const ACK: &[u8; 4] = b"PSI\x06";

/// How strings are encoded in a forward: as bytes (Unix `OsStr`), or as UTF-16 code units,
/// little-endian (Windows `OsStr`, which may hold unpaired surrogates).
#[cfg(unix)]
const ENCODING: u8 = 1;
#[cfg(windows)]
const ENCODING: u8 = 2;

/// What [`single_instance`] decided: this launch is the primary, or another one is.
#[derive(Debug)]
pub enum Instance {
    /// This launch is the first: it serves the name and receives later launches.
    Primary(Primary),
    /// Another launch is the primary: forward to it, then exit.
    Secondary(Secondary),
}

/// Decides whether this launch of the app is the primary one, per user.
///
/// Binds `name` (an endpoint name, as for [`Server::bind`]; keep it for this purpose only):
/// on success this launch is the [`Primary`]. If a live process holds the name, connects to
/// it and returns a [`Secondary`]. Launches that start at the same moment get exactly one
/// primary; a primary that crashed (even with `SIGKILL`) leaves nothing that blocks the next
/// launch, whose bind recovers the name. The races in between (a primary still binding, or
/// dying while a secondary connects) are retried for up to 10 seconds.
///
/// Scope: the name is per user (see [`Name`]): on Linux and FreeBSD in `$XDG_RUNTIME_DIR`
/// (which is per user, shared by that user's login sessions) or `/tmp/pipette-<uid>`; on
/// macOS in the user's `~/Library/Caches`; on Windows a pipe named with the user's SID. So
/// each user has one primary, and two login sessions of one user share it (on Windows too:
/// pipe names are global, not per session).
///
/// ```no_run
/// use pipette::{single_instance, Instance};
///
/// match single_instance("my-editor")? {
///     Instance::Primary(primary) => {
///         // Open our own arguments here, then serve later launches.
///         loop {
///             let launch = primary.recv()?;
///             println!("open {:?} in {:?}", launch.args(), launch.cwd());
///         }
///     }
///     Instance::Secondary(secondary) => {
///         secondary.forward_current()?; // returns once the primary has it
///     }
/// }
/// # Ok::<(), pipette::Error>(())
/// ```
///
/// A forward that fails was not acknowledged: usually the primary went away after this
/// launch connected (it closed, crashed, is shutting down, or hung), which shows as
/// [`Error::Closed`], [`Error::TimedOut`], [`Error::Refused`] or [`Error::Protocol`]
/// (closed before answering the handshake). Calling `single_instance` again is then the way
/// on: this launch may become the primary (`examples/single_instance.rs` does so, a bounded
/// number of times). A primary that died after reading the forward but before acknowledging it
/// means the retry delivers it twice: delivery is at least once.
///
/// # Errors
///
/// [`Error::InvalidName`], an error binding other than the name being in use (for example
/// [`Error::PermissionDenied`]), [`Error::UntrustedServer`] (another user holds the name: see
/// [`Trust`](crate::Trust)), or the last error of the retries after 10 seconds.
pub fn single_instance(name: impl IntoName) -> Result<Instance> {
    let name = name.into_name()?;
    let mut decide = Decide::new();
    loop {
        if let Some(server) = Decide::primary(Server::bind(&name))? {
            return Ok(Instance::Primary(Primary { server }));
        }
        match Client::connect_with(&name, &decide.connect_options()) {
            Ok(conn) => return Ok(Instance::Secondary(Secondary { conn })),
            Err(e) => std::thread::sleep(decide.after_connect_failure(&name, e)?),
        }
    }
}

/// The decision's policy, without I/O, for [`single_instance`] and its async twin: what a
/// bind's outcome means, how long a connect may wait, and what follows a failed connect.
pub(crate) struct Decide {
    deadline: Instant,
    pause: Duration,
}

impl Decide {
    pub(crate) fn new() -> Decide {
        Decide {
            deadline: Instant::now() + DECIDE_DEADLINE,
            pause: Duration::from_millis(1),
        }
    }

    /// A bind's outcome: the server (this launch is the primary), `None` (the name is in
    /// use: connect to its holder), or the error to give up with.
    pub(crate) fn primary<S>(bind: Result<S>) -> Result<Option<S>> {
        match bind {
            Ok(server) => Ok(Some(server)),
            Err(Error::AddrInUse { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next connect's options: it waits for a holder that is not listening yet, at most
    /// [`CONNECT_SLICE`] and never past the deadline.
    pub(crate) fn connect_options(&self) -> ClientOptions {
        let left = self.deadline.saturating_duration_since(Instant::now());
        ClientOptions::new().wait(CONNECT_SLICE.min(left))
    }

    /// After the connect to a name in use failed with `e`: the pause before binding again,
    /// or the error to give up with (one that is not passing, or the last after the
    /// deadline).
    pub(crate) fn after_connect_failure(&mut self, name: &Name, e: Error) -> Result<Duration> {
        if !retry(&e) || Instant::now() >= self.deadline {
            return Err(e);
        }
        tracing::debug!(name = name.as_str(), error = %e, "single instance: retrying");
        let pause = self.pause;
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        Ok(pause)
    }
}

/// Whether a connect to a name that was in use a moment ago failed in a passing way: its
/// server was not listening yet, has died, or is shutting down.
pub(crate) fn retry(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::TimedOut { .. }
            | Error::Closed
            | Error::Refused {
                reason: crate::Refusal::ShuttingDown,
                ..
            }
    )
}

/// The primary launch: receives what later launches forward.
///
/// Call [`recv`](Primary::recv) soon and keep calling it: a later launch waits up to 10 seconds
/// for its acknowledgement, and one that gets none decides again (see [`single_instance`]).
/// Dropping the primary (or exiting) frees the name for the next launch.
#[derive(Debug)]
pub struct Primary {
    server: Server,
}

impl Primary {
    /// Waits for the next launch's forward, acknowledges it and returns it.
    ///
    /// Connections are served one at a time, each for at most 10 seconds: one that does not
    /// deliver a well-formed forward in that time is dropped and the wait goes on. (A stalled
    /// connection delays the launches queued behind it, which may time out waiting for their
    /// acknowledgement and decide again.)
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the [`shutdown_handle`](Primary::shutdown_handle) was
    /// triggered. Any other error is a passing condition of [`Server::accept`] (such as
    /// running out of descriptors): the primary keeps its name; pause and call `recv` again.
    pub fn recv(&self) -> Result<Launch> {
        loop {
            let conn = self.server.accept()?;
            if let Some(launch) = serve(conn) {
                return Ok(launch);
            }
        }
    }

    /// As [`recv`](Primary::recv), waiting at most `timeout` for a launch to connect.
    ///
    /// # Errors
    ///
    /// As [`recv`](Primary::recv), and [`Error::TimedOut`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Launch> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let conn = self.server.accept_timeout(left)?;
            if let Some(launch) = serve(conn) {
                return Ok(launch);
            }
        }
    }

    /// A handle whose [`shutdown`](Shutdown::shutdown) ends a waiting
    /// [`recv`](Primary::recv) with [`Error::Shutdown`] and frees the name.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.server.shutdown_handle()
    }

    /// The name this primary serves.
    pub fn name(&self) -> &Name {
        self.server.name()
    }
}

/// Reads one forward on `conn` and acknowledges it; `None` (logged) if it is not one.
fn serve(mut conn: Connection) -> Option<Launch> {
    conn.set_write_timeout(Some(EXCHANGE_TIMEOUT));
    let launch = received_forward(conn.recv_timeout(EXCHANGE_TIMEOUT), conn.peer())?;
    if let Err(e) = conn.send(ACK) {
        not_acknowledged(&e);
    }
    Some(launch)
}

/// What a primary received on a connection (`msg`, from `peer`): the launch it forwarded,
/// or `None` (logged) when it is not a forward.
pub(crate) fn received_forward(
    msg: Result<impl AsRef<[u8]>>,
    peer: Option<&PeerIdentity>,
) -> Option<Launch> {
    match msg.and_then(|msg| decode_forward(msg.as_ref())) {
        Ok(mut launch) => {
            launch.peer = peer.cloned();
            Some(launch)
        }
        Err(e) => {
            tracing::debug!(error = %e, "single instance: dropped a connection without a forward");
            None
        }
    }
}

/// Logs an acknowledgement that could not be sent: the secondary left, and will retry (so
/// it may deliver this forward again: at least once).
pub(crate) fn not_acknowledged(e: &Error) {
    tracing::debug!(error = %e, "single instance: could not acknowledge a forward");
}

/// A later launch, as its forward described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub(crate) args: Vec<OsString>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) peer: Option<PeerIdentity>,
}

impl Launch {
    /// The arguments it forwarded; with [`Secondary::forward_current`], its whole command line
    /// (`std::env::args_os()`, the program first).
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Its working directory, if it sent one: relative paths in [`args`](Launch::args) are
    /// relative to it.
    pub fn cwd(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The process that forwarded, as the operating system reported it.
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// The arguments and the working directory, by value.
    pub fn into_parts(self) -> (Vec<OsString>, Option<PathBuf>) {
        (self.args, self.cwd)
    }
}

/// A later launch, connected to the primary: forward, then exit.
#[derive(Debug)]
pub struct Secondary {
    conn: Connection,
}

impl Secondary {
    /// Forwards this process's command line (`std::env::args_os()`) and working directory,
    /// and waits (up to 10 seconds) until the primary acknowledges it.
    ///
    /// # Errors
    ///
    /// As [`forward`](Secondary::forward).
    pub fn forward_current(self) -> Result<()> {
        let cwd = std::env::current_dir().ok();
        self.forward(std::env::args_os(), cwd.as_deref())
    }

    /// Forwards `args` and `cwd`, and waits (up to 10 seconds) until the primary acknowledges
    /// them.
    ///
    /// # Errors
    ///
    /// Any error means the forward was not acknowledged. [`Error::Closed`],
    /// [`Error::TimedOut`], [`Error::Refused`] or [`Error::Protocol`] when the primary went
    /// away or did not answer (call [`single_instance`] again: this launch may be the primary
    /// now);
    /// [`Error::MessageTooLarge`] when the arguments exceed the primary's message limit;
    /// [`Error::Protocol`] when the answer is not an acknowledgement.
    pub fn forward<I, S>(mut self, args: I, cwd: Option<&Path>) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let msg = encode_forward(args, cwd);
        self.conn.send_timeout(&msg, EXCHANGE_TIMEOUT)?;
        check_ack(&self.conn.recv_timeout(EXCHANGE_TIMEOUT)?)
    }

    /// The primary process, as the operating system reported it.
    pub fn primary(&self) -> Option<&PeerIdentity> {
        self.conn.peer()
    }
}

pub(crate) fn check_ack(msg: &[u8]) -> Result<()> {
    if msg == ACK {
        Ok(())
    } else {
        Err(Error::protocol(
            "the primary's answer to a single-instance forward is not an acknowledgement",
        ))
    }
}

// ---- the forward message (docs/PROTOCOL.md, "Single instance") ----

/// Encodes a forward: magic, encoding, count, then the working directory and each argument
/// as a length-prefixed string.
pub(crate) fn encode_forward<I, S>(args: I, cwd: Option<&Path>) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(FORWARD_MAGIC);
    out.push(ENCODING);
    out.push(u8::from(cwd.is_some()));
    out.extend_from_slice(&(args.len() as u32).to_le_bytes());
    let mut put = |s: &OsStr| {
        let bytes = os_to_bytes(s);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    };
    put(cwd.map(Path::as_os_str).unwrap_or_default());
    for a in &args {
        put(a.as_ref());
    }
    out
}

/// Decodes a forward; every malformation is [`Error::Protocol`].
pub(crate) fn decode_forward(msg: &[u8]) -> Result<Launch> {
    let bad = |what: &str| Error::protocol(format!("not a single-instance forward: {what}"));
    let rest = msg
        .strip_prefix(FORWARD_MAGIC)
        .ok_or_else(|| bad("wrong magic or version"))?;
    let (&[encoding, has_cwd], mut rest) =
        rest.split_first_chunk::<2>().ok_or_else(|| bad("short"))?;
    if encoding != ENCODING {
        return Err(bad("strings encoded for another operating system"));
    }
    let take_u32 = |rest: &mut &[u8]| -> Result<usize> {
        let (n, r) = rest.split_first_chunk::<4>().ok_or_else(|| bad("short"))?;
        *rest = r;
        Ok(u32::from_le_bytes(*n) as usize)
    };
    let count = take_u32(&mut rest)?;
    let mut strings = Vec::with_capacity(count.min(1024) + 1);
    for _ in 0..=count {
        let len = take_u32(&mut rest)?;
        if rest.len() < len {
            return Err(bad("a string runs past the end"));
        }
        let (s, r) = rest.split_at(len);
        strings.push(bytes_to_os(s).ok_or_else(|| bad("odd length for UTF-16"))?);
        rest = r;
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last argument"));
    }
    let cwd = strings.remove(0);
    Ok(Launch {
        args: strings,
        cwd: (has_cwd != 0).then(|| PathBuf::from(cwd)),
        peer: None,
    })
}

#[cfg(unix)]
fn os_to_bytes(s: &OsStr) -> std::borrow::Cow<'_, [u8]> {
    use std::os::unix::ffi::OsStrExt;
    std::borrow::Cow::Borrowed(s.as_bytes())
}

#[cfg(unix)]
fn bytes_to_os(b: &[u8]) -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    Some(OsStr::from_bytes(b).to_owned())
}

#[cfg(windows)]
fn os_to_bytes(s: &OsStr) -> std::borrow::Cow<'_, [u8]> {
    use std::os::windows::ffi::OsStrExt;
    std::borrow::Cow::Owned(s.encode_wide().flat_map(u16::to_le_bytes).collect())
}

#[cfg(windows)]
fn bytes_to_os(b: &[u8]) -> Option<OsString> {
    use std::os::windows::ffi::OsStringExt;
    if b.len() % 2 != 0 {
        return None;
    }
    let wide: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(OsString::from_wide(&wide))
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.args)?;
        if let Some(cwd) = &self.cwd {
            write!(f, " in {}", cwd.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_round_trips_and_malformations_are_refused() {
        let args = [OsStr::new("app"), OsStr::new("é 🦀"), OsStr::new("")];
        let msg = encode_forward(args, Some(Path::new("/tmp/x")));
        let launch = decode_forward(&msg).unwrap();
        assert_eq!(launch.args(), &args.map(OsString::from));
        assert_eq!(launch.cwd(), Some(Path::new("/tmp/x")));
        let none = decode_forward(&encode_forward(Vec::<&str>::new(), None)).unwrap();
        assert!(none.args().is_empty() && none.cwd().is_none());
        for cut in 0..msg.len() {
            assert!(decode_forward(&msg[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = msg.clone();
        long.push(0);
        assert!(decode_forward(&long).is_err());
    }
}
