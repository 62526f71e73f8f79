//! How a blocking receive waits for the peer: sleep, spin for a while, or spin.

use std::io;
use std::time::{Duration, Instant};

use crate::shutdown::Shutdown;

/// How a blocking receive waits when the peer's next bytes have not arrived yet: trade CPU
/// time for latency, explicitly (the idle strategies of Aeron are the model).
///
/// Waking a sleeping thread costs the operating system several microseconds, and on a
/// virtual machine whose idle CPUs halt, up to 50 us: usually far more than a small
/// message's whole trip. A receiver that keeps checking for a while instead of sleeping at
/// once finds a prompt answer without that wake-up, at the price of the CPU time it spins.
///
/// Set it with [`ServerOptions::wait_strategy`](crate::ServerOptions::wait_strategy) (for
/// every accepted connection), [`ClientOptions::wait_strategy`](crate::ClientOptions::wait_strategy),
/// or per connection with [`Connection::set_wait_strategy`](crate::Connection::set_wait_strategy).
/// It governs the blocking API's receives (`recv`, `recv_into`, `recv_timeout`, ...; the
/// checks are non-blocking reads, each one system call); sends wait for room as before.
/// The async API always waits through its runtime's reactor: spinning in a task would hold
/// up every other task of its thread, so `pipette::tokio` refuses anything but
/// [`Block`](WaitStrategy::Block) with [`Error::InvalidConfig`](crate::Error::InvalidConfig).
///
/// A receive's timeout counts from its start, spin included; when the spin ends before the
/// timeout, the sleep that follows may exceed it by up to the spin's length. A
/// [`Shutdown`](crate::Shutdown) ends a spinning receive as promptly as a sleeping one.
///
/// ```
/// use std::time::Duration;
/// use pipette::{Client, ClientOptions, Server, ServerOptions, WaitStrategy};
///
/// let name = format!("doc-wait-{}", std::process::id());
/// // Spin up to 50 us before sleeping: a prompt answer costs no wake-up; an idle
/// // connection costs no CPU after those 50 us.
/// let spin = WaitStrategy::Spin(Duration::from_micros(50));
/// let server = Server::bind_with(&name, &ServerOptions::new().wait_strategy(spin))?;
/// let mut client = Client::connect_with(&name, &ClientOptions::new().wait_strategy(spin))?;
/// client.send(b"ping")?;
/// let mut conn = server.accept()?;
/// assert_eq!(conn.wait_strategy(), spin);
/// assert_eq!(conn.recv()?, b"ping");
/// conn.send(b"pong")?;
/// assert_eq!(client.recv()?, b"pong");
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Sleep until the peer's bytes arrive: no CPU time while idle. The default.
    #[default]
    Block,
    /// Check again and again for up to this long, then sleep as [`Block`](WaitStrategy::Block)
    /// does. An idle connection costs CPU time only for the first `Duration` of each wait.
    /// Tens of microseconds cover a prompt peer's answer on most machines.
    Spin(Duration),
    /// Never sleep: check until the message arrives, the timeout expires, or the connection
    /// is shut down. A waiting receiver keeps one CPU fully busy, however long it waits; for
    /// a dedicated thread on a machine with cores to spare.
    BusySpin,
}

/// Runs a receive under `strategy` (the first checks back to back, then yielding the CPU
/// between checks, Aeron's back-off without its sleeps): `read(true)` is the non-blocking attempt (`WouldBlock`
/// when nothing is there), `read(false)` the blocking one (which applies the read timeout
/// itself). `timeout` is the receive's timeout, which also bounds the spin; when it expires
/// during the spin the result is `WouldBlock`, as from a blocking read that timed out.
pub(crate) fn spin_then_block<T>(
    strategy: WaitStrategy,
    timeout: Option<Duration>,
    shutdown: &Shutdown,
    mut read: impl FnMut(bool) -> io::Result<T>,
) -> io::Result<T> {
    let spin_for = match strategy {
        WaitStrategy::Block => return read(false),
        WaitStrategy::Spin(d) => Some(d),
        WaitStrategy::BusySpin => None,
    };
    let limit = match (spin_for, timeout) {
        (Some(s), Some(t)) => Some(s.min(t)),
        (s, None) => s,
        (None, t) => t,
    };
    let start = Instant::now();
    let mut checks = 0u32;
    loop {
        match read(true) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        checks = checks.saturating_add(1);
        if shutdown.is_shutdown() {
            // The caller reports `Error::Shutdown` (the handle was triggered).
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if let Some(limit) = limit {
            let spun = start.elapsed();
            if spun >= limit {
                if timeout.is_some_and(|t| spun >= t) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                return read(false);
            }
        }
        if checks < PURE_SPIN {
            std::hint::spin_loop();
        } else {
            // Still nothing: let the peer have this CPU if it is waiting for one (two
            // spinning processes on one CPU would otherwise each burn the other's slice).
            std::thread::yield_now();
        }
    }
}

/// How many checks a spin makes back to back before it yields the CPU between checks.
const PURE_SPIN: u32 = 128;

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn would_block<T>() -> io::Result<T> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    #[test]
    fn block_never_spins_and_spin_finds_what_arrives_while_spinning() {
        let s = Shutdown::new();
        let tries = Cell::new(0);
        let r = spin_then_block(WaitStrategy::Block, None, &s, |now| {
            assert!(!now, "Block goes straight to the blocking read");
            Ok(7)
        });
        assert_eq!(r.unwrap(), 7);
        let r = spin_then_block(WaitStrategy::BusySpin, None, &s, |now| {
            assert!(now, "BusySpin never blocks");
            tries.set(tries.get() + 1);
            if tries.get() < 1000 {
                would_block()
            } else {
                Ok(tries.get())
            }
        });
        assert_eq!(r.unwrap(), 1000);
    }

    #[test]
    fn the_spin_ends_in_a_blocking_read_or_at_the_timeout() {
        let s = Shutdown::new();
        let spin = WaitStrategy::Spin(Duration::from_micros(200));
        let blocked = Cell::new(false);
        let r = spin_then_block(spin, None, &s, |now| {
            if now {
                would_block()
            } else {
                blocked.set(true);
                Ok(1)
            }
        });
        assert_eq!(r.unwrap(), 1);
        assert!(blocked.get());
        // A timeout shorter than the spin: no blocking read at all.
        let r: io::Result<()> = spin_then_block(spin, Some(Duration::from_micros(50)), &s, |now| {
            assert!(now, "timed out while spinning");
            would_block()
        });
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let r: io::Result<()> = spin_then_block(
            WaitStrategy::BusySpin,
            Some(Duration::from_micros(50)),
            &s,
            |_| would_block(),
        );
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_shutdown_ends_a_busy_spin() {
        let s = Shutdown::new();
        let trigger = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            trigger.shutdown();
        });
        let r: io::Result<()> =
            spin_then_block(WaitStrategy::BusySpin, None, &s, |_| would_block());
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::ConnectionAborted);
        t.join().unwrap();
    }
}
