//! Single instance on tokio: the twin of [`pipette::single_instance`](crate::single_instance),
//! with the same decision, retries and wire bytes (a blocking secondary can forward to an async
//! primary and the other way round).

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Client, Connection, Server};
use crate::error::{Error, Result};
use crate::single_instance::{
    check_ack, decode_forward, encode_forward, retry, ACK, CONNECT_SLICE, DECIDE_DEADLINE,
    EXCHANGE_TIMEOUT,
};
use crate::{ClientOptions, IntoName, Launch, Name, PeerIdentity, Shutdown};

/// What [`single_instance`] decided; the async twin of
/// [`pipette::Instance`](crate::Instance).
#[derive(Debug)]
pub enum Instance {
    /// This launch is the first: it serves the name and receives later launches.
    Primary(Primary),
    /// Another launch is the primary: forward to it, then exit.
    Secondary(Secondary),
}

/// Decides whether this launch is the primary one, per user; the async twin of
/// [`pipette::single_instance`](crate::single_instance) (same races retried, same scope).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pipette::Result<()> {
/// use pipette::tokio::{single_instance, Instance};
///
/// match single_instance("my-editor").await? {
///     Instance::Primary(primary) => loop {
///         let launch = primary.recv().await?;
///         println!("open {:?} in {:?}", launch.args(), launch.cwd());
///     },
///     Instance::Secondary(secondary) => secondary.forward_current().await?,
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`pipette::single_instance`](crate::single_instance).
///
/// # Cancel safety
///
/// Cancel safe: dropped before it returns, it leaves neither a bound name nor a connection.
pub async fn single_instance(name: impl IntoName) -> Result<Instance> {
    let name = name.into_name()?;
    let deadline = Instant::now() + DECIDE_DEADLINE;
    let mut pause = Duration::from_millis(1);
    loop {
        let last = match Server::bind(&name) {
            Ok(server) => return Ok(Instance::Primary(Primary { server })),
            Err(Error::AddrInUse { .. }) => {
                let wait = CONNECT_SLICE.min(deadline.saturating_duration_since(Instant::now()));
                match Client::connect_with(&name, &ClientOptions::new().wait(wait)).await {
                    Ok(conn) => return Ok(Instance::Secondary(Secondary { conn })),
                    Err(e) if retry(&e) => e,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tracing::debug!(name = name.as_str(), error = %last, "single instance: retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The primary launch on tokio: receives what later launches forward.
#[derive(Debug)]
pub struct Primary {
    server: Server,
}

impl Primary {
    /// Waits for the next launch's forward, acknowledges it and returns it. A connection that
    /// does not deliver a well-formed forward within 10 seconds is dropped.
    ///
    /// Connections are served one at a time; to keep receiving while one is slow, run this in
    /// its own task.
    ///
    /// # Errors
    ///
    /// [`Error::Shutdown`] once the [`shutdown_handle`](Primary::shutdown_handle) was
    /// triggered. Any other error is a passing condition of accepting (such as running out of
    /// descriptors): the primary keeps its name; pause and call `recv` again.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe once a connection was accepted: a forward being read when the future is
    /// dropped is lost, and its secondary gets no acknowledgement (it then retries, so it is
    /// delivered again, perhaps to a new primary). Waiting for a connection is cancel safe.
    pub async fn recv(&self) -> Result<Launch> {
        loop {
            let conn = self.server.accept().await?;
            if let Some(launch) = serve(conn).await {
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

async fn serve(mut conn: Connection) -> Option<Launch> {
    conn.set_write_timeout(Some(EXCHANGE_TIMEOUT));
    let res = match conn.recv_timeout(EXCHANGE_TIMEOUT).await {
        Ok(msg) => decode_forward(&msg),
        Err(e) => Err(e),
    };
    let mut launch = match res {
        Ok(launch) => launch,
        Err(e) => {
            tracing::debug!(error = %e, "single instance: dropped a connection without a forward");
            return None;
        }
    };
    launch.peer = conn.peer().cloned();
    if let Err(e) = conn.send(ACK).await {
        tracing::debug!(error = %e, "single instance: could not acknowledge a forward");
    }
    Some(launch)
}

/// A later launch on tokio, connected to the primary: forward, then exit.
#[derive(Debug)]
pub struct Secondary {
    conn: Connection,
}

impl Secondary {
    /// Forwards this process's command line and working directory; see
    /// [`pipette::Secondary::forward_current`](crate::Secondary::forward_current).
    ///
    /// # Errors
    ///
    /// As [`pipette::Secondary::forward`](crate::Secondary::forward).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped part-way, the forward may or may not have been delivered.
    pub async fn forward_current(self) -> Result<()> {
        let cwd = std::env::current_dir().ok();
        self.forward(std::env::args_os(), cwd.as_deref()).await
    }

    /// Forwards `args` and `cwd` and waits (up to 10 seconds) for the acknowledgement; see
    /// [`pipette::Secondary::forward`](crate::Secondary::forward).
    ///
    /// # Errors
    ///
    /// As [`pipette::Secondary::forward`](crate::Secondary::forward).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped part-way, the forward may or may not have been delivered.
    pub async fn forward<I, S>(mut self, args: I, cwd: Option<&Path>) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let msg = encode_forward(args, cwd);
        self.conn.send_timeout(&msg, EXCHANGE_TIMEOUT).await?;
        check_ack(&self.conn.recv_timeout(EXCHANGE_TIMEOUT).await?)
    }

    /// The primary process, as the operating system reported it.
    pub fn primary(&self) -> Option<&PeerIdentity> {
        self.conn.peer()
    }
}
