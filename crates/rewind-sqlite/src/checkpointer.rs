//! The checkpointer thread: copies the write-ahead log back into the database file,
//! off the writer's path.
//!
//! SQLite's default runs a checkpoint inside whichever commit pushes the log past
//! 1,000 pages: that commit then also copies the pages, fsyncs the log and fsyncs
//! the database file, and every append queued behind it waits. Here the write
//! connection's log hook only counts pages and, past [`CHECKPOINT_PAGES`], wakes
//! this thread, which runs a passive checkpoint on a connection of its own while
//! the writer goes on committing (WAL allows one checkpoint beside one writer).
//!
//! A passive checkpoint never waits for readers or the writer: it copies what no
//! reader still needs, and the next one copies the rest. SQLite syncs the log
//! before copying from it and the database file after, so a checkpoint never
//! makes a not-yet-durable commit part of the file.

use crate::connection::open_checkpointer;
use rewind::StoreError;
use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Log size, in pages, past which a checkpoint starts (SQLite's own default).
pub(crate) const CHECKPOINT_PAGES: i32 = 1_000;

/// The writer's side of the checkpointer.
pub(crate) struct Checkpointer {
    wake: mpsc::SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens the thread's connection and starts it, and hooks `writer`'s commits
    /// to it (which also turns off the writer's own automatic checkpoints).
    pub(crate) fn start(path: &Path, writer: &mut Connection) -> Result<Checkpointer, StoreError> {
        let conn = open_checkpointer(path)?;
        // One pending wake is enough: a checkpoint copies everything there is.
        let (wake, woken) = mpsc::sync_channel(1);
        let hook = wake.clone();
        writer
            .wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= CHECKPOINT_PAGES {
                    let _ = hook.try_send(());
                }
                Ok(())
            }))
            .map_err(StoreError::backend)?;
        let thread = std::thread::Builder::new()
            .name("rewind-sqlite-checkpointer".into())
            .spawn(move || run(conn, woken))
            .map_err(StoreError::backend)?;
        Ok(Checkpointer { wake, thread })
    }

    /// Ends the thread (after the checkpoint it may be running).
    pub(crate) fn stop(self, writer: &mut Connection) {
        // The hook holds a sender too; removing it lets the channel close.
        let _ = writer.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()>>);
        drop(self.wake);
        let _ = self.thread.join();
    }
}

fn run(conn: Connection, woken: mpsc::Receiver<()>) {
    while woken.recv().is_ok() {
        if let Err(error) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            // Nothing is lost: the log keeps the pages and the next checkpoint retries.
            tracing::warn!(%error, "SQLite checkpoint failed");
        }
    }
}
