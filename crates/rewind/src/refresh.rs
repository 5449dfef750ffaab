//! Keeping cached aggregate instances fresh when other processes append to their
//! streams ([`ApplicationBuilder::keep_instances_fresh`](crate::ApplicationBuilder::keep_instances_fresh)).
//!
//! When several processes serve one store, a command routed to one process often
//! finds its cached instance behind a version another process appended: its append
//! then fails the version check, the runtime reads the missing events and decides
//! again, an extra append and an extra read on the command's path. With this on, a
//! task follows the global order and folds each event into the cached instance of
//! its stream when that instance is exactly one version behind it, so the next
//! command there usually decides on the current state at once.
//!
//! It never decides anything: appends still name the version their decision saw, so
//! an instance the task missed, or one it could not touch because a command held it,
//! is caught up as before. It reads only events (from the head at start), never
//! loads or caches an instance, and leaves an instance busy with a command alone.

use crate::aggregate::Aggregate;
use crate::aggregate_runtime::AggregateRuntime;
use crate::envelope::RecordedEvent;
use crate::event_store::{EventFilter, EventStore};
use crate::shared_store::SharedStore;
use crate::stream::GlobalPosition;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events read per round trip.
const PAGE: usize = 1_000;
/// The pause after a failed read before the next try.
const RETRY: Duration = Duration::from_millis(200);

/// One aggregate's runtime, as the refresher sees it.
pub(crate) trait Refresh: Send + Sync {
    /// Whether `stream_id` may be one of this aggregate's streams (by its prefix).
    fn owns(&self, stream_id: &str) -> bool;
    /// Folds `recorded` into the cached instance of its stream, if it is next.
    fn refresh(&self, recorded: &RecordedEvent);
}

impl<A: Aggregate> Refresh for AggregateRuntime<A> {
    fn owns(&self, stream_id: &str) -> bool {
        AggregateRuntime::owns(self, stream_id)
    }

    fn refresh(&self, recorded: &RecordedEvent) {
        AggregateRuntime::refresh(self, recorded)
    }
}

/// The running task; it stops when this is dropped.
pub(crate) struct Refresher {
    task: JoinHandle<()>,
    /// The last position whose event has been offered to the instances.
    pub(crate) done: watch::Receiver<GlobalPosition>,
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Refresher {
    /// Starts following `store` from its head as its watch has it now, before any
    /// command can cache an instance (a start behind the head only reads more). Must
    /// be called inside a Tokio runtime.
    pub(crate) fn spawn(store: SharedStore, runtimes: Vec<Arc<dyn Refresh>>) -> Refresher {
        let mut head = store.watch_head();
        let start = *head.borrow_and_update();
        let (done, receiver) = watch::channel(start);
        let task = tokio::spawn(async move {
            let mut from = start.next();
            loop {
                head.borrow_and_update();
                match store.read_all(from, PAGE, &EventFilter::all()).await {
                    Ok(page) => {
                        // Every runtime that may own the stream looks in its own cache (one
                        // prefix may start another's; only the real owner caches it).
                        for recorded in &page {
                            for runtime in runtimes.iter().filter(|r| r.owns(&recorded.stream_id)) {
                                runtime.refresh(recorded);
                            }
                        }
                        if let Some(last) = page.last() {
                            from = last.position.next();
                            done.send_replace(last.position);
                        }
                        if page.len() == PAGE {
                            continue;
                        }
                    }
                    Err(_) => {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
                if head.changed().await.is_err() {
                    return;
                }
            }
        });
        Refresher { task, done: receiver }
    }
}
