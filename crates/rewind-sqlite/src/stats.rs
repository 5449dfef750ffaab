//! Counters the writer keeps about its group commits, so tests and benchmarks can
//! see how many appends shared a transaction.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the writer has done since the store was opened. See
/// [`SqliteStore::stats`](crate::SqliteStore::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteStats {
    /// Write transactions committed. With [`Synchronous::Full`](crate::Synchronous)
    /// each one that wrote anything cost one fsync of the write-ahead log.
    pub commits: u64,
    /// Requests the writer finished (each `append`, `append_batch` and
    /// `save_snapshot` call), successful or not.
    pub requests: u64,
    /// Events written.
    pub events: u64,
    /// The most requests one transaction held.
    pub largest_group: u64,
}

/// The live counters, written by the writer thread only and read by anyone.
#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    commits: AtomicU64,
    requests: AtomicU64,
    events: AtomicU64,
    largest_group: AtomicU64,
}

impl StatsCounters {
    /// Records one finished group.
    pub(crate) fn record_group(&self, requests: u64, events: u64, committed: bool) {
        if committed {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.events.fetch_add(events, Ordering::Relaxed);
        }
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.largest_group.fetch_max(requests, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SqliteStats {
        SqliteStats {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            largest_group: self.largest_group.load(Ordering::Relaxed),
        }
    }
}
