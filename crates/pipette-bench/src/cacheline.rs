//! How long one cache line takes to go from one CPU to another and back: two threads of
//! this process hand a counter to each other through two atomics, each on its own line.
//!
//! The shared-memory rows (`pipette-shm*`) cost a few such transfers per message, so they
//! follow this figure, which the host decides: on this project's 2-vCPU VM it is 60–110 ns
//! while the host runs the two vCPUs on cores that share a cache and 330–440 ns while it does
//! not, and the host moves between the two every few seconds (docs/PERFORMANCE.md, "Machine,
//! and its two settings"). `--compare` measures it before and after each run of those rows
//! (and of raw-uds) so that a table says which host it was taken on; `--cacheline` prints it
//! alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One counter on a line of its own (two lines: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
#[derive(Default)]
struct Line(AtomicU64);

/// Waits until `line` holds `want`; yields now and then so that two threads sharing one CPU
/// still finish.
fn wait_for(line: &Line, want: u64) {
    let mut spins = 0u32;
    while line.0.load(Ordering::Acquire) != want {
        spins += 1;
        if spins % 4096 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Nanoseconds per round trip of a cache line between two threads, median of 5 rounds of
/// `n` round trips each.
pub(crate) fn round_trip_ns(n: u64) -> f64 {
    let (ping, pong) = (Arc::new(Line::default()), Arc::new(Line::default()));
    let rounds = 5;
    let peer = {
        let (ping, pong) = (ping.clone(), pong.clone());
        std::thread::spawn(move || {
            for i in 1..=rounds * n {
                wait_for(&ping, i);
                pong.0.store(i, Ordering::Release);
            }
        })
    };
    let mut per_round = Vec::new();
    for r in 0..rounds {
        let t0 = Instant::now();
        for i in r * n + 1..=(r + 1) * n {
            ping.0.store(i, Ordering::Release);
            wait_for(&pong, i);
        }
        per_round.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    peer.join()
        .expect("the cache-line peer thread does not panic");
    per_round.sort_by(f64::total_cmp);
    per_round[per_round.len() / 2]
}
