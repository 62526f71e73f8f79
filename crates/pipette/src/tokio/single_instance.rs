//! Single instance on tokio: the twin of [`pipette::single_instance`](crate::single_instance),
//! with the same decision, retries and wire bytes (a blocking secondary can forward to an async
//! primary and the other way round).

use std::ffi::OsStr;
use std::path::Path;

use super::{Client, Connection, Server};
use crate::error::Result;
use crate::single_instance::{
    check_ack, encode_forward, not_acknowledged, received_forward, Decide, ACK, EXCHANGE_TIMEOUT,
};
use crate::{IntoName, Launch, Name, PeerIdentity, Shutdown};

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
    let mut decide = Decide::new();
    loop {
        if let Some(server) = Decide::primary(Server::bind(&name))? {
            return Ok(Instance::Primary(Primary { server }));
        }
        match Client::connect_with(&name, &decide.connect_options()).await {
            Ok(conn) => return Ok(Instance::Secondary(Secondary { conn })),
            Err(e) => tokio::time::sleep(decide.after_connect_failure(&name, e)?).await,
        }
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
    /// [`Error::Shutdown`](crate::Error::Shutdown) once the [`shutdown_handle`](Primary::shutdown_handle) was
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
    /// [`recv`](Primary::recv) with [`Error::Shutdown`](crate::Error::Shutdown) and frees the name.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.server.shutdown_handle()
    }

    /// The name this primary serves.
    pub fn name(&self) -> &Name {
        self.server.name()
    }
}

/// Reads one forward on `conn` and acknowledges it; `None` (logged) if it is not one.
async fn serve(mut conn: Connection) -> Option<Launch> {
    conn.set_write_timeout(Some(EXCHANGE_TIMEOUT));
    let msg = conn.recv_timeout(EXCHANGE_TIMEOUT).await;
    let launch = received_forward(msg, conn.peer())?;
    if let Err(e) = conn.send(ACK).await {
        not_acknowledged(&e);
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
