//! The syncer thread: makes committed groups durable, then acknowledges them.
//!
//! The write connection commits with `synchronous=NORMAL`, which writes the group's
//! pages to the write-ahead log without waiting for the disk. The writer hands each
//! committed group here and goes straight on to the next one; this thread fsyncs
//! the log — once for every group that committed while the previous fsync ran —
//! and only then raises the head and answers the group's callers. So the writer's
//! CPU work and the disk's flush overlap instead of alternating, and a slow fsync
//! makes groups larger rather than the writer idle. A group alone (nothing waiting,
//! nothing here in flight) is committed with `synchronous=FULL` instead, so SQLite
//! syncs the log inside its `COMMIT`, and the writer answers it: a lone caller pays
//! one fsync and no thread hand-off.
//!
//! Promises (with [`Synchronous::Full`](crate::Synchronous::Full)):
//! * A caller is answered only after an fsync of the log that began after its
//!   group committed: what is acknowledged survives power loss. SQLite recovers a
//!   log up to its last intact commit, and commits reach the log in order, so
//!   whatever an fsync covers is recovered.
//! * The head is raised only to durable positions, and reads of the global order
//!   never return this process's commits before they are durable
//!   (`SqliteStore::read_all`), so no subscriber sees (and acts on) an event a
//!   power loss could take back.
//! * If an fsync fails the store is poisoned: every waiting and later request
//!   fails, since the kernel may have dropped the pages it could not write
//!   (retrying the fsync would report success without them). That holds for
//!   SQLite's own fsync inside a lone group's `COMMIT` too (`writer.rs`), and is
//!   tested on a file system that fails fsync on command (`tests/power_loss.rs`).
//!
//! With [`Synchronous::Normal`](crate::Synchronous::Normal) there is no fsync to
//! wait for, and the writer answers every group itself.

use crate::inline::Progress;
use crate::writer::{Outcome, Reply};
use rewind::{GlobalPosition, StoreError};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// A group the writer finished: what to answer, and the head once it is durable.
pub(crate) struct Committed {
    pub(crate) replies: Vec<Reply>,
    pub(crate) outcomes: Vec<Outcome>,
    /// The head after the group; `None` if it committed nothing (rolled back), so
    /// it needs no fsync of its own.
    pub(crate) head: Option<u64>,
    /// How far the group moved inline projectors (`inline.rs`).
    pub(crate) progress: Vec<Progress>,
    /// Whether its `COMMIT` synced the log already (`synchronous=FULL`).
    pub(crate) durable: bool,
}

/// The writer's side of the syncer.
pub(crate) struct Syncer {
    /// Whether groups wait for an fsync (`Synchronous::Full`).
    fsync: bool,
    groups: mpsc::Sender<Committed>,
    thread: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// What the syncer thread and the writer share (the writer syncs a group itself
/// when nothing else is in flight, see [`Syncer::finish_group`]).
struct Shared {
    /// `None` with `Synchronous::Normal`.
    log: Mutex<Option<Log>>,
    head: watch::Sender<GlobalPosition>,
    poisoned: AtomicBool,
    /// Groups handed to the thread and not yet answered.
    pending: AtomicUsize,
}

impl Syncer {
    /// Starts the thread. `fsync` says whether to flush the log (`Synchronous::Full`).
    pub(crate) fn start(
        database: &Path,
        fsync: bool,
        head: watch::Sender<GlobalPosition>,
    ) -> Result<Syncer, StoreError> {
        let log = if fsync { Some(Log::open(database)?) } else { None };
        let shared = Arc::new(Shared {
            log: Mutex::new(log),
            head,
            poisoned: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
        });
        let (groups, queue) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rewind-sqlite-syncer".into())
            .spawn(move || run(queue, &thread_shared))
            .map_err(StoreError::backend)?;
        Ok(Syncer { fsync, groups, thread, shared })
    }

    /// Whether no group is waiting for the syncer thread.
    pub(crate) fn idle(&self) -> bool {
        self.shared.pending.load(Ordering::Acquire) == 0
    }

    /// Refuses every later request, as after a failed fsync of its own: for the
    /// writer, when SQLite's fsync inside a `COMMIT` failed.
    pub(crate) fn poison(&self) {
        tracing::error!("an fsync inside a SQLite COMMIT failed; the store refuses every write");
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// The error for every request once an fsync failed.
    pub(crate) fn refusal(&self) -> Option<StoreError> {
        self.shared.poisoned.load(Ordering::Acquire).then(|| StoreError::Backend(poison_message().into()))
    }

    /// Makes `committed` durable and answers it: on the syncer thread while the
    /// writer has more to do (`more` is true), or right here when nothing else is in
    /// flight — a lone caller then waits for one fsync without a thread hand-off.
    pub(crate) fn finish_group(&self, committed: Committed, more: bool) {
        // Only the writer adds to `pending`, so an idle syncer stays idle meanwhile.
        if !self.fsync || committed.durable || (!more && self.idle()) {
            return self.shared.finish(vec![committed]);
        }
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(committed)) = self.groups.send(committed) {
            // The thread is gone (it cannot be while the writer runs): nothing was made durable.
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            answer_failed(committed, &|| StoreError::Closed);
        }
    }

    /// Answers every group handed over, then ends the thread.
    pub(crate) fn finish(self) {
        drop(self.groups);
        let _ = self.thread.join();
    }
}

fn run(queue: mpsc::Receiver<Committed>, shared: &Shared) {
    while let Ok(first) = queue.recv() {
        let mut groups = vec![first];
        groups.extend(queue.try_iter());
        let count = groups.len();
        shared.finish(groups);
        shared.pending.fetch_sub(count, Ordering::AcqRel);
    }
}

impl Shared {
    /// One fsync for all `groups` (committed in this order) unless their commits
    /// synced themselves, then their answers.
    fn finish(&self, mut groups: Vec<Committed>) {
        let newest = groups.iter().filter_map(|g| g.head).max();
        let synced = match newest {
            None => Ok(()),
            Some(_) if groups.iter().all(|g| g.durable || g.head.is_none()) => Ok(()),
            Some(_) if self.poisoned.load(Ordering::Acquire) => Err(poison_message()),
            Some(_) => self.sync(),
        };
        match synced {
            Ok(()) => {
                // Inline projectors first: a dispatch answered below finds its
                // projection done without waiting.
                for progress in groups.iter_mut().flat_map(|g| g.progress.drain(..)) {
                    progress.publish();
                }
                if let Some(newest) = newest {
                    publish(&self.head, newest);
                }
                for group in groups {
                    for (reply, outcome) in group.replies.into_iter().zip(group.outcomes) {
                        // A caller that stopped waiting needs no answer.
                        let _ = reply.send(outcome);
                    }
                }
            }
            Err(message) => {
                for group in groups {
                    answer_failed(group, &|| StoreError::Backend(message.clone().into()));
                }
            }
        }
    }

    fn sync(&self) -> Result<(), String> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let Some(log) = log.as_mut() else { return Ok(()) };
        log.sync().map_err(|error| {
            tracing::error!(%error, "fsync of the SQLite write-ahead log failed; the store refuses every write");
            self.poisoned.store(true, Ordering::Release);
            poison_message()
        })
    }
}

fn poison_message() -> String {
    "an fsync of the write-ahead log failed earlier; reopen the store once the disk is healthy".into()
}

fn answer_failed(group: Committed, error: &dyn Fn() -> StoreError) {
    for (reply, outcome) in group.replies.into_iter().zip(group.outcomes) {
        // A request that failed on its own keeps its own error.
        let _ = reply.send(outcome.and_then(|_| Err(error())));
    }
}

fn publish(head: &watch::Sender<GlobalPosition>, newest: u64) {
    let newest = GlobalPosition(newest);
    head.send_if_modified(|current| {
        let newer = newest > *current;
        if newer {
            *current = newest;
        }
        newer
    });
}

/// The write-ahead log file (`<database>-wal`), opened by this thread to fsync it.
/// fsync flushes a file (an inode), whichever descriptor asks; the log is checked
/// to still be the same file before each flush, and reopened if SQLite made a new
/// one.
struct Log {
    path: PathBuf,
    file: File,
}

impl Log {
    fn open(database: &Path) -> Result<Log, StoreError> {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let file = open_log(&path)
            .map_err(|error| StoreError::Backend(format!("opening {}: {error}", path.display()).into()))?;
        Ok(Log { path, file })
    }

    /// Flushes the log; `fdatasync` suffices (it includes the file's size).
    fn sync(&mut self) -> std::io::Result<()> {
        let current = std::fs::metadata(&self.path)?;
        let ours = self.file.metadata()?;
        if (current.dev(), current.ino()) != (ours.dev(), ours.ino()) {
            self.file = open_log(&self.path)?;
        }
        self.file.sync_data()
    }
}

/// Opens the log and makes its directory entry durable, which must be before
/// anything in it counts.
fn open_log(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(directory)?.sync_all()?;
    }
    Ok(file)
}
