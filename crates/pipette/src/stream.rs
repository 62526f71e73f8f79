//! A connection used as a plain byte stream.

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use crate::shared::Shared;
use crate::sys::SysStream;
use crate::{PeerIdentity, Shutdown};

/// A connection as a plain byte stream: `Read + Write`, no message boundaries.
///
/// From [`Connection::into_stream`](crate::Connection::into_stream). Useful to hand a
/// connection to code that expects `std::io` traits, or to talk to a foreign peer in raw
/// mode. It keeps the connection's shutdown handle: after `shutdown()`, reads and writes fail
/// with `io::ErrorKind::ConnectionAborted` (whose inner error is
/// [`Error::Shutdown`](crate::Error::Shutdown)).
///
/// ```
/// use std::io::{Read, Write};
/// use pipette::{Client, ClientOptions, Server, ServerOptions};
///
/// let name = format!("doc-stream-{}", std::process::id());
/// let server = Server::bind_with(&name, &ServerOptions::new().raw(true))?;
/// let mut client = Client::connect_with(&name, &ClientOptions::new().raw(true))?.into_stream()?;
/// client.write_all(b"bytes, not messages")?;
/// client.shutdown_write()?;
///
/// let mut got = String::new();
/// server.accept()?.into_stream()?.read_to_string(&mut got)?;
/// assert_eq!(got, "bytes, not messages");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Stream {
    shared: Arc<Shared<crate::sys::Stream>>,
    leftover: Vec<u8>,
    pos: usize,
}

impl Stream {
    pub(crate) fn new(shared: Arc<Shared<crate::sys::Stream>>, leftover: Vec<u8>) -> Stream {
        Stream {
            shared,
            leftover,
            pos: 0,
        }
    }

    /// Sets the read timeout; `None` waits forever. A read that times out
    /// fails with `io::ErrorKind::WouldBlock` (as `std`'s sockets do).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.shared.stream.set_read_timeout(timeout)
    }

    /// Sets the write timeout; `None` waits forever.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.shared.stream.set_write_timeout(timeout)
    }

    /// Closes the writing direction; the peer reads end-of-stream after the bytes sent.
    /// On Windows, where pipes have no half-close, this closes the pipe: reads end too.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.shared.stream.shutdown_write()
    }

    /// Who is on the other end, if the platform could tell (see
    /// [`Connection::peer`](crate::Connection::peer)).
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

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.leftover.len() {
            let n = buf.len().min(self.leftover.len() - self.pos);
            buf[..n].copy_from_slice(&self.leftover[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        match self.shared.stream.read(buf) {
            Ok(0) if !buf.is_empty() => self.aborted().map_or(Ok(0), Err),
            Ok(n) => Ok(n),
            Err(e) => Err(self.aborted().unwrap_or(e)),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared
            .stream
            .write(buf)
            .map_err(|e| self.aborted().unwrap_or(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.shared.name.as_str())
            .finish()
    }
}
