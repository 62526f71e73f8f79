//! Races between `Shutdown::shutdown` and the waits it must end, run hundreds of times: from
//! another thread and from a task, on current-thread and multi-thread runtimes, with the
//! shutdown landing before, while and after the wait parks.
//!
//! Each round checks two promises: the wait returns `Shutdown` (a spinning or sleeping wait
//! is turned into a failure by a hang limit, not by a speed check), and by the time `accept`
//! returns `Shutdown` the endpoint has been released. The waits: `accept`, and a client's
//! connect waiting for a server that never comes (`ClientOptions::wait`), which must end
//! with `Shutdown` whether the client's shutdown lands before the first attempt, between
//! attempts or during a pause.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pipette::{Error, Shutdown};
use support::unique;

fn main() {
    support::main(
        &[
            (
                "async_accept_wakes_on_shutdown_every_time",
                async_accept_wakes_on_shutdown_every_time,
            ),
            (
                "blocking_accept_wakes_on_shutdown_every_time",
                blocking_accept_wakes_on_shutdown_every_time,
            ),
            (
                "async_connect_wait_wakes_on_shutdown_every_time",
                async_connect_wait_wakes_on_shutdown_every_time,
            ),
            (
                "blocking_connect_wait_wakes_on_shutdown_every_time",
                blocking_connect_wait_wakes_on_shutdown_every_time,
            ),
        ],
        &[],
    );
}

/// Rounds per combination of runtime flavour and trigger. Wine is slower to create pipes.
fn rounds() -> u64 {
    let default = if cfg!(windows) { 60 } else { 300 };
    std::env::var("PIPETTE_RACE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Hang limit for one round: far above anything a working shutdown needs.
const HANG: Duration = Duration::from_secs(20);

/// Where the shutdown lands relative to the wait: at once, after the waiter had a chance
/// to park, or a little later.
#[derive(Debug, Clone, Copy)]
enum Delay {
    None,
    Yield,
    Micros(u64),
}

fn delay_for(round: u64) -> Delay {
    match round % 4 {
        0 => Delay::None,
        1 => Delay::Yield,
        2 => Delay::Micros(50),
        _ => Delay::Micros(500),
    }
}

/// For a waiting connect also a delay past its first pauses (1, 2, 4 ms): the shutdown then
/// lands in a later pause, or between two attempts.
fn connect_delay_for(round: u64) -> Delay {
    match round % 5 {
        4 => Delay::Micros(5_000),
        _ => delay_for(round),
    }
}

/// Lets `delay` pass on a plain thread (the blocking races' shutdown side).
fn pause(delay: Delay) {
    match delay {
        Delay::None => {}
        Delay::Yield => std::thread::yield_now(),
        Delay::Micros(us) => std::thread::sleep(Duration::from_micros(us)),
    }
}

type MakeRuntime = fn() -> tokio::runtime::Runtime;

/// Every runtime flavour a race runs in.
fn flavours() -> [(&'static str, MakeRuntime); 3] {
    [
        ("current_thread", || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        }),
        ("multi_thread(2)", || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        }),
        ("multi_thread(4)", || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap()
        }),
    ]
}

/// Whether the endpoint at `path` is released: on Unix the socket file is gone; on
/// Windows nothing answers a probe of the name.
fn released(name: &str, path: &Path) -> bool {
    if cfg!(unix) {
        !path.exists()
    } else {
        pipette::probe(name).unwrap() == pipette::Liveness::Absent
    }
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// `shutdown()` from a plain OS thread.
    Thread,
    /// `shutdown()` from a task of the same runtime.
    Task,
}

fn async_accept_wakes_on_shutdown_every_time() {
    async_races("async accept", delay_for, async_round);
}

/// Runs `round` hundreds of times for each runtime flavour and trigger, with the shutdown
/// landing where `delay` says; `what` names the wait in failures and in the note.
fn async_races<F, Fut>(what: &'static str, delay: fn(u64) -> Delay, round: F)
where
    F: Fn(Trigger, Delay) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let done = Arc::new(AtomicU64::new(0));
    for (flavour, make) in flavours() {
        for trigger in [Trigger::Thread, Trigger::Task] {
            let counter = done.clone();
            // One runtime for all rounds of a combination; a worker stuck in a poll would
            // keep a round from ending, which the hang limit reports.
            let rt = Arc::new(make());
            support::rounds_within(
                rounds(),
                HANG,
                move |i| {
                    format!(
                        "{what} round {i} ({flavour}, shutdown from a {trigger:?}, {:?})",
                        delay(i)
                    )
                },
                move |i| {
                    rt.block_on(round(trigger, delay(i)));
                    counter.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
    }
    support::note(format!(
        "{what} ended on shutdown in {} rounds",
        done.load(Ordering::Relaxed)
    ));
}

async fn async_round(trigger: Trigger, delay: Delay) {
    let name = unique("race-a");
    let server = pipette::tokio::Server::bind(name.as_str()).unwrap();
    let path: PathBuf = server.name().path().to_owned();
    let stop = server.shutdown_handle();
    let (n, p) = (name.clone(), path.clone());
    let acceptor = tokio::spawn(async move {
        let r = server.accept().await;
        // Checked the moment accept returns, before anything else can run here.
        let free = released(&n, &p);
        (r.map(|_| ()), free)
    });
    shut_down_later(stop, trigger, delay).await;
    let (r, free) = acceptor.await.unwrap();
    assert!(
        matches!(r, Err(Error::Shutdown)),
        "expected Shutdown, got {r:?}"
    );
    assert!(free, "accept returned before the endpoint was released");
}

fn blocking_accept_wakes_on_shutdown_every_time() {
    support::rounds_within(
        rounds() * 2,
        HANG,
        |i| format!("blocking accept round {i} ({:?})", delay_for(i)),
        |round| {
            let name = unique("race-b");
            let server = pipette::Server::bind(name.as_str()).unwrap();
            let path = server.name().path().to_owned();
            let stop: Shutdown = server.shutdown_handle();
            let (n, p) = (name.clone(), path.clone());
            let acceptor = std::thread::spawn(move || {
                let r = server.accept();
                (r.map(|_| ()), released(&n, &p))
            });
            pause(delay_for(round));
            stop.shutdown();
            let (r, free) = acceptor.join().unwrap();
            assert!(
                matches!(r, Err(Error::Shutdown)),
                "round {round}: expected Shutdown, got {r:?}"
            );
            assert!(
                free,
                "round {round}: accept returned before the endpoint was released"
            );
        },
    );
}

/// Shuts `stop` down from `trigger` after `delay`, from a task of the current runtime.
async fn shut_down_later(stop: Shutdown, trigger: Trigger, delay: Delay) {
    match delay {
        Delay::None => {}
        Delay::Yield => tokio::task::yield_now().await,
        Delay::Micros(us) => std::thread::sleep(Duration::from_micros(us)),
    }
    match trigger {
        Trigger::Thread => {
            let t = std::thread::spawn(move || stop.shutdown());
            tokio::task::spawn_blocking(move || t.join().unwrap())
                .await
                .unwrap();
        }
        Trigger::Task => tokio::spawn(async move { stop.shutdown() }).await.unwrap(),
    }
}

fn async_connect_wait_wakes_on_shutdown_every_time() {
    async_races("async connect wait", connect_delay_for, async_connect_round);
}

async fn async_connect_round(trigger: Trigger, delay: Delay) {
    // Nobody ever binds this name: only the shutdown can end the wait.
    let name = unique("race-ca");
    let stop = Shutdown::new();
    let opts = pipette::ClientOptions::new()
        .wait(Duration::from_secs(3600))
        .shutdown(&stop);
    let connector = tokio::spawn(async move {
        pipette::tokio::Client::connect_with(name.as_str(), &opts)
            .await
            .map(|_| ())
    });
    shut_down_later(stop, trigger, delay).await;
    let r = connector.await.unwrap();
    assert!(
        matches!(r, Err(Error::Shutdown)),
        "expected Shutdown, got {r:?}"
    );
}

fn blocking_connect_wait_wakes_on_shutdown_every_time() {
    support::rounds_within(
        rounds() * 2,
        HANG,
        |i| {
            format!(
                "blocking connect wait round {i} ({:?})",
                connect_delay_for(i)
            )
        },
        |round| {
            let name = unique("race-cb");
            let stop = Shutdown::new();
            let opts = pipette::ClientOptions::new()
                .wait(Duration::from_secs(3600))
                .shutdown(&stop);
            let connector = std::thread::spawn(move || {
                pipette::Client::connect_with(name.as_str(), &opts).map(|_| ())
            });
            pause(connect_delay_for(round));
            stop.shutdown();
            let r = connector.join().unwrap();
            assert!(
                matches!(r, Err(Error::Shutdown)),
                "round {round}: expected Shutdown, got {r:?}"
            );
        },
    );
}
