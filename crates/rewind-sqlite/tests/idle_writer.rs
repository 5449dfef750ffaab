//! The writer polls for the next request while requests come one right after
//! another's answer; once they stop, it must sleep, not keep a core busy.
//!
//! Alone in its file (its own process) so the writer thread it watches is the only
//! one: the test reads that thread's CPU time from `/proc`.

#![cfg(target_os = "linux")]

mod common;

use common::{TempStore, events};
use rewind::{EventStore, ExpectedVersion, StreamVersion};
use std::time::Duration;

/// CPU time of this process's writer thread (named `rewind-sqlite-writer`, which
/// the kernel cuts to 15 bytes), from the first field of its `schedstat`.
fn writer_cpu_time() -> Duration {
    let writers: Vec<_> = std::fs::read_dir("/proc/self/task")
        .expect("list threads")
        .filter_map(|task| {
            let task = task.ok()?.path();
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            (name.trim_end() == "rewind-sqlite-w").then_some(task)
        })
        .collect();
    assert_eq!(writers.len(), 1, "one writer thread in this process");
    let schedstat = std::fs::read_to_string(writers[0].join("schedstat")).expect("schedstat");
    let nanos = schedstat.split_whitespace().next().and_then(|ns| ns.parse().ok()).expect("cpu time");
    Duration::from_nanos(nanos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_sleeps_once_appends_stop() {
    let store = TempStore::new().await;
    // Back-to-back appends: the pattern that makes the writer poll.
    for i in 0..200 {
        store.append("busy", ExpectedVersion::Exact(StreamVersion(i)), events(1)).await.expect("append");
    }
    let before = writer_cpu_time();
    // The window observed, not a wait for an event: a writer still polling would
    // spend most of it on the CPU.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = writer_cpu_time() - before;
    assert!(spent < Duration::from_millis(30), "an idle writer used {spent:?} of CPU in 300 ms");
    assert_eq!(store.store.stats().events, 200);
}
