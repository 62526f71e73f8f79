//! Graceful stop on SIGINT/SIGTERM: the signal triggers the server's shutdown handle.
//!
//! The signal side only triggers the shutdown and notes the signal; it writes nothing. The
//! server's main thread logs it ([`received`]) once it has stopped: writing a log line may
//! block (a full pipe) or fail (a closed one), and neither may keep the server from stopping.
//! A second signal ends the process at once, for a shutdown that hangs.

use std::sync::atomic::{AtomicI32, Ordering};

use pipette::Shutdown;

/// The signal (Windows: the console event) that asked the process to stop; -1: none yet.
static RECEIVED: AtomicI32 = AtomicI32::new(-1);

/// The signal (Windows: the console control event) that stopped the server, if one did.
pub fn received() -> Option<i32> {
    let sig = RECEIVED.load(Ordering::SeqCst);
    (sig >= 0).then_some(sig)
}

/// Calls `stop.shutdown()` when the process is asked to terminate.
#[cfg(unix)]
pub fn on_terminate(stop: Shutdown) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        let mut signals = signals.forever();
        if let Some(sig) = signals.next() {
            RECEIVED.store(sig, Ordering::SeqCst);
            stop.shutdown();
        }
        if let Some(sig) = signals.next() {
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// Calls `stop.shutdown()` on Ctrl-C, Ctrl-Break or the console window closing.
///
/// Windows runs console control handlers on a thread of their own, so the handler may do
/// anything a normal thread does, such as triggering the shutdown handle.
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn on_terminate(stop: Shutdown) -> std::io::Result<()> {
    use std::sync::OnceLock;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
    };

    static STOP: OnceLock<Shutdown> = OnceLock::new();

    unsafe extern "system" fn handler(ctrl: u32) -> windows_sys::core::BOOL {
        match ctrl {
            CTRL_C_EVENT | CTRL_BREAK_EVENT | CTRL_CLOSE_EVENT => match STOP.get() {
                Some(stop) => {
                    RECEIVED.store(ctrl as i32, Ordering::SeqCst);
                    stop.shutdown();
                    if ctrl == CTRL_CLOSE_EVENT {
                        // The process ends when the handler returns: give the main thread a
                        // moment to finish its cleanup first.
                        std::thread::sleep(std::time::Duration::from_millis(500));
                    }
                    1
                }
                None => 0,
            },
            _ => 0,
        }
    }

    if STOP.set(stop).is_err() {
        return Ok(()); // already installed
    }
    // SAFETY: `handler` is a valid `extern "system"` function for the whole process life.
    if unsafe { SetConsoleCtrlHandler(Some(handler), 1) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Calls `stop.shutdown()` when the process is asked to terminate.
#[cfg(not(any(unix, windows)))]
pub fn on_terminate(stop: Shutdown) -> std::io::Result<()> {
    // No termination signal is wired up here: the process just ends.
    let _ = stop;
    Ok(())
}
