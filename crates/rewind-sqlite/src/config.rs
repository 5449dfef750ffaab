//! How a [`SqliteStore`](crate::SqliteStore) is opened: durability level, reader
//! pool size and group-commit limits.
//!
//! The defaults keep every promise of `docs/design.md`; the one knob that weakens a
//! promise, [`Synchronous::Normal`], says so.

/// When SQLite waits for the disk (`PRAGMA synchronous`). The store always runs in
/// WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// The write-ahead log is fsynced after a commit and before its appends are
    /// acknowledged: nothing acknowledged is lost, even on power loss or an OS crash
    /// (`docs/design.md`, promise 1). Under load the fsync runs on its own thread and covers
    /// every group committed since the last one; a group alone is synced by SQLite
    /// inside its `COMMIT` (`syncer.rs`).
    #[default]
    Full,
    /// Commits are not fsynced; the log is synced at checkpoints. A killed *process*
    /// still loses nothing (the OS holds the written pages), and the file never ends
    /// up corrupt, but a power loss or OS crash may lose the last acknowledged
    /// appends. Only for data that can be rebuilt, or benchmarks that say so.
    Normal,
}

impl Synchronous {
    /// The level the writer opens with: `NORMAL` either way. With `Full` the store
    /// fsyncs the log itself before acknowledging (`syncer.rs`), and switches to
    /// SQLite's `FULL` only for a group alone (`writer.rs`).
    pub(crate) fn pragma_value(self) -> &'static str {
        "NORMAL"
    }
}

/// Options for [`SqliteStore::open_with`](crate::SqliteStore::open_with).
///
/// ```
/// use rewind_sqlite::{SqliteConfig, Synchronous};
/// let config = SqliteConfig::default().readers(2).synchronous(Synchronous::Full);
/// assert_eq!(config.reader_count(), 2);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    pub(crate) synchronous: Synchronous,
    pub(crate) readers: usize,
    pub(crate) max_group_events: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig { synchronous: Synchronous::Full, readers: 4, max_group_events: 10_000 }
    }
}

impl SqliteConfig {
    /// Durability of each commit; [`Synchronous::Full`] unless relaxed here.
    pub fn synchronous(mut self, synchronous: Synchronous) -> SqliteConfig {
        self.synchronous = synchronous;
        self
    }

    /// How many read connections (each on its own thread) serve reads in parallel;
    /// at least one. Default 4.
    pub fn readers(mut self, readers: usize) -> SqliteConfig {
        self.readers = readers.max(1);
        self
    }

    /// The number of read connections.
    pub fn reader_count(&self) -> usize {
        self.readers
    }

    /// Roughly how many events one group commit may hold; the writer stops taking
    /// more appends into a group once it has this many (a single larger append is
    /// still one group). Bounds the latency of one commit. Default 10,000.
    pub fn max_group_events(mut self, events: usize) -> SqliteConfig {
        self.max_group_events = events.max(1);
        self
    }
}
