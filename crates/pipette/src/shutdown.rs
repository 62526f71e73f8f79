//! One handle that stops a server and everything it accepted, from any thread.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::sys::Cancel;

/// A cancellation handle: `shutdown()` ends every blocking operation tied to it, promptly.
///
/// A [`Server`](crate::Server) has one ([`Server::shutdown_handle`](crate::Server::shutdown_handle)),
/// shared by every connection it accepts; a client [`Connection`](crate::Connection) has its own
/// unless [`ClientOptions::shutdown`](crate::ClientOptions::shutdown) gives it one. After
/// `shutdown()`:
///
/// - every blocked and later `accept`, `recv`, `send` and `connect_timeout` wait of the
///   handle's server and connections returns [`Error::Shutdown`](crate::Error::Shutdown),
///   within milliseconds;
/// - the server's endpoint is removed, so the name is free at once;
/// - no thread is killed: each blocked call returns normally and its thread goes on.
///
/// The handle is cheap to clone and is `Send + Sync`; `shutdown()` may be called from any
/// thread, any number of times.
///
/// ```
/// use std::time::Duration;
/// use pipette::{Error, Server};
///
/// let name = format!("doc-shutdown-{}", std::process::id());
/// let server = Server::bind(&name)?;
/// let stop = server.shutdown_handle();
/// let t = std::thread::spawn(move || {
///     std::thread::sleep(Duration::from_millis(50));
///     stop.shutdown();
/// });
/// // Blocks until the other thread calls shutdown().
/// assert!(matches!(server.accept(), Err(Error::Shutdown)));
/// t.join().unwrap();
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    down: AtomicBool,
    registry: Mutex<Registry>,
    wake: Condvar,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    // Strong references: an entry keeps its OS object (and so its descriptor number) alive
    // while `shutdown()` may act on it, so a cancel can never hit a reused descriptor.
    // Ordered by registration (ids only grow), which is the order `shutdown()` acts in; and
    // a map with no hasher to seed, which a client connection makes one of each time.
    entries: BTreeMap<u64, Arc<dyn Cancel>>,
}

impl Shutdown {
    /// A new handle, not yet shut down.
    pub fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                down: AtomicBool::new(false),
                registry: Mutex::new(Registry::default()),
                wake: Condvar::new(),
            }),
        }
    }

    /// Shuts down everything tied to this handle; idempotent.
    ///
    /// Returns once every blocked operation has been woken and every endpoint and
    /// connection of the handle has been closed, so the names are free: within milliseconds
    /// (the woken threads let go of their handles in parallel).
    pub fn shutdown(&self) {
        // In registration order: a server registers its listener before the token that
        // wakes its `accept`, so the endpoint is released before `accept` returns.
        let entries: Vec<Arc<dyn Cancel>> = {
            let reg = self.lock();
            self.inner.down.store(true, Ordering::SeqCst);
            reg.entries.values().cloned().collect()
        };
        self.inner.wake.notify_all();
        // Wake everything first, then wait for each to let go of its OS objects: the woken
        // threads do that in parallel, so a shutdown takes the longest wait, not their sum.
        for entry in &entries {
            entry.cancel();
        }
        for entry in &entries {
            entry.finish();
        }
    }

    /// Whether [`shutdown`](Shutdown::shutdown) has been called.
    pub fn is_shutdown(&self) -> bool {
        self.inner.down.load(Ordering::SeqCst)
    }

    /// Ties `target` to this handle until the returned registration is dropped. Fails when
    /// the handle is already shut down, so nothing registered later is ever left running.
    pub(crate) fn register(&self, target: Arc<dyn Cancel>) -> Result<Registration, ()> {
        let mut reg = self.lock();
        if self.is_shutdown() {
            return Err(());
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.entries.insert(id, target);
        Ok(Registration {
            shutdown: self.clone(),
            id,
        })
    }

    /// Sleeps for `d` unless shut down first. Returns `true` when woken by shutdown.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let reg = self.lock();
        if self.is_shutdown() {
            return true;
        }
        let (_reg, _) = self
            .inner
            .wake
            .wait_timeout_while(reg, d, |_| !self.is_shutdown())
            .unwrap_or_else(|e| e.into_inner());
        self.is_shutdown()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing that runs under this lock can panic half-way through an update, so a
        // poisoned lock still guards consistent data.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("is_shutdown", &self.is_shutdown())
            .finish()
    }
}

/// Keeps an OS object tied to a [`Shutdown`] handle; removes it when dropped.
pub(crate) struct Registration {
    shutdown: Shutdown,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shutdown.lock().entries.remove(&self.id);
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}
