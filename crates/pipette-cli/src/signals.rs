//! Graceful stop on SIGINT/SIGTERM: the signal triggers the server's shutdown handle.

use pipette::Shutdown;

/// Calls `stop.shutdown()` when the process is asked to terminate.
#[cfg(unix)]
pub fn on_terminate(stop: Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!("received signal {sig}, shutting down");
            stop.shutdown();
        }
    });
    Ok(())
}

/// Calls `stop.shutdown()` when the process is asked to terminate.
#[cfg(not(unix))]
pub fn on_terminate(stop: Shutdown) -> std::io::Result<()> {
    // Console control events are wired up by the Windows backend work; until then Ctrl-C
    // ends the process and the next server recovers the name.
    let _ = stop;
    Ok(())
}
