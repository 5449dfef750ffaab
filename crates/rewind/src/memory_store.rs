//! An event store held in memory: the reference semantics of [`EventStore`], for
//! tests and for applications that need no durability.
//!
//! One `std::sync::Mutex` guards everything; no method awaits while holding it, so a
//! plain mutex is both correct and faster than an async one here.

use crate::envelope::RecordedEvent;
use crate::event_store::{
    AppendOutcome, AppendResult, EventFilter, EventStore, Snapshot, StoreError, StreamAppend, StreamInfo,
};
use crate::stream::{Direction, GlobalPosition, StreamVersion};
use chrono::{SubsecRound, Utc};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;
use uuid::Uuid;

/// An in-memory [`EventStore`].
///
/// ```
/// use rewind::{EventStore, ExpectedVersion, MemoryStore, NewEvent, Metadata};
/// # tokio_test_block(async {
/// let store = MemoryStore::new();
/// let event = NewEvent {
///     event_id: uuid::Uuid::now_v7(),
///     event_type: "Opened".into(),
///     data: "{}".into(),
///     metadata: Metadata::default(),
/// };
/// let result = store.append("account-1", ExpectedVersion::NoStream, vec![event]).await.unwrap();
/// assert_eq!(result.stream_version.0, 1);
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub struct MemoryStore {
    inner: Mutex<Inner>,
    head: watch::Sender<GlobalPosition>,
}

#[derive(Default)]
struct Inner {
    /// The global order, in increasing position. Appends number densely from the
    /// head; an import may leave holes (a copy of a PostgreSQL store keeps its holes).
    all: Vec<RecordedEvent>,
    /// Indexes into `all`, per stream, in version order.
    streams: HashMap<String, Vec<usize>>,
    /// Every stored event id, to its index in `all`.
    ids: HashMap<Uuid, usize>,
    snapshots: HashMap<String, Snapshot>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore { inner: Mutex::new(Inner::default()), head: watch::channel(GlobalPosition::START).0 }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-written: every
        // mutation is checked first and applied afterwards without fallible steps.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, head: GlobalPosition) {
        self.head.send_if_modified(|current| {
            let newer = head > *current;
            if newer {
                *current = head;
            }
            newer
        });
    }
}

impl Inner {
    fn version(&self, stream_id: &str) -> StreamVersion {
        StreamVersion(self.streams.get(stream_id).map_or(0, |s| s.len() as u64))
    }

    /// Decides what an append would do without changing anything.
    fn check(&self, append: &StreamAppend) -> Result<Option<AppendResult>, StoreError> {
        for event in &append.events {
            if serde_json::from_str::<serde::de::IgnoredAny>(&event.data).is_err() {
                return Err(StoreError::Invalid(format!("event {} has data that is not JSON", event.event_id)));
            }
        }
        if let Some(first) = append.events.first() {
            if self.ids.contains_key(&first.event_id) {
                return self.already_appended(append).map(Some);
            }
            let mut seen = std::collections::HashSet::with_capacity(append.events.len());
            for event in &append.events {
                if self.ids.contains_key(&event.event_id) || !seen.insert(event.event_id) {
                    return Err(StoreError::DuplicateEvent {
                        stream: append.stream_id.clone(),
                        event_id: event.event_id,
                    });
                }
            }
        }
        let actual = self.version(&append.stream_id);
        if !append.expected.accepts(actual) {
            return Err(StoreError::Conflict { stream: append.stream_id.clone(), expected: append.expected, actual });
        }
        Ok(None)
    }

    /// The events are stored already: succeed only if they are exactly this append.
    fn already_appended(&self, append: &StreamAppend) -> Result<AppendResult, StoreError> {
        let mut indexes = append.events.iter().map(|e| (e.event_id, self.ids.get(&e.event_id).copied()));
        let (first_id, first) = indexes.next().expect("checked non-empty");
        let first = first.expect("checked present");
        let duplicate = |event_id| StoreError::DuplicateEvent { stream: append.stream_id.clone(), event_id };
        if self.all[first].stream_id != append.stream_id {
            return Err(duplicate(first_id));
        }
        let mut last = first;
        for (id, index) in indexes {
            match index {
                Some(i)
                    if i > last
                        && self.all[i].stream_id == append.stream_id
                        && self.all[i].stream_version.0 == self.all[last].stream_version.0 + 1 =>
                {
                    last = i
                }
                _ => return Err(duplicate(id)),
            }
        }
        Ok(AppendResult {
            outcome: AppendOutcome::AlreadyAppended,
            stream_version: self.all[last].stream_version,
            first_position: self.all[first].position,
            last_position: self.all[last].position,
        })
    }

    fn write(&mut self, append: StreamAppend, now: chrono::DateTime<Utc>) -> AppendResult {
        let mut version = self.version(&append.stream_id);
        let mut position = self.head();
        let first_position = position.next();
        let mut result = AppendResult {
            outcome: AppendOutcome::Appended,
            stream_version: version,
            first_position: GlobalPosition::START,
            last_position: GlobalPosition::START,
        };
        if append.events.is_empty() {
            return result;
        }
        let indexes = self.streams.entry(append.stream_id.clone()).or_default();
        for event in append.events {
            version = version.next();
            position = position.next();
            let index = self.all.len();
            indexes.push(index);
            self.ids.insert(event.event_id, index);
            self.all.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: append.stream_id.clone(),
                stream_version: version,
                position,
                event_type: event.event_type,
                data: event.data,
                metadata: event.metadata,
                created_at: now,
            });
        }
        result.stream_version = version;
        result.first_position = first_position;
        result.last_position = position;
        result
    }

    /// The last position (`START` while empty).
    fn head(&self) -> GlobalPosition {
        self.all.last().map_or(GlobalPosition::START, |e| e.position)
    }
}

impl EventStore for MemoryStore {
    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        // An unusable request is refused before any append is checked.
        let mut streams = std::collections::HashSet::with_capacity(appends.len());
        for append in &appends {
            if append.stream_id.is_empty() {
                return Err(StoreError::Invalid("stream id is empty".into()));
            }
            if !streams.insert(append.stream_id.as_str()) {
                return Err(StoreError::Invalid(format!("stream `{}` appears twice in one batch", append.stream_id)));
            }
        }
        let mut inner = self.lock();
        let mut plan = Vec::with_capacity(appends.len());
        for append in &appends {
            plan.push(inner.check(append)?);
        }
        if appends.len() > 1 {
            let mut ids = std::collections::HashSet::new();
            for (append, done) in appends.iter().zip(&plan) {
                for event in append.events.iter().filter(|_| done.is_none()) {
                    if !ids.insert(event.event_id) {
                        return Err(StoreError::DuplicateEvent {
                            stream: append.stream_id.clone(),
                            event_id: event.event_id,
                        });
                    }
                }
            }
        }
        // Durable stores keep microseconds; so does this one, so timestamps compare alike.
        let now = Utc::now().trunc_subsecs(6);
        let results = appends
            .into_iter()
            .zip(plan)
            .map(|(append, done)| done.unwrap_or_else(|| inner.write(append, now)))
            .collect();
        let head = inner.head();
        drop(inner);
        self.publish(head);
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let Some(indexes) = inner.streams.get(stream_id) else { return Ok(Vec::new()) };
        let events: Vec<RecordedEvent> = match direction {
            Direction::Forward => {
                let start = from.0.max(1) as usize - 1;
                indexes.iter().skip(start).take(limit).map(|&i| inner.all[i].clone()).collect()
            }
            Direction::Backward => {
                let end = (from.0.min(indexes.len() as u64)) as usize;
                indexes[..end].iter().rev().take(limit).map(|&i| inner.all[i].clone()).collect()
            }
        };
        Ok(events)
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock();
        let start = inner.all.partition_point(|e| e.position < from);
        Ok(inner.all[start..]
            .iter()
            .filter(|e| filter.matches(&e.stream_id, &e.event_type))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        Ok(self.lock().version(stream_id))
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let inner = self.lock();
        Ok(inner.ids.get(&event_id).map(|&index| inner.all[index].clone()))
    }

    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        Ok(self.lock().head())
    }

    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.head.subscribe()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let newer = inner.snapshots.get(&snapshot.stream_id).is_none_or(|s| s.version <= snapshot.version);
        if newer {
            inner.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock().snapshots.get(stream_id).cloned())
    }

    async fn list_streams(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<StreamInfo>, StoreError> {
        let inner = self.lock();
        let mut streams: Vec<StreamInfo> = inner
            .streams
            .iter()
            .filter(|(id, _)| id.starts_with(prefix) && id.as_str() > after)
            .map(|(id, indexes)| StreamInfo { stream_id: id.clone(), version: StreamVersion(indexes.len() as u64) })
            .collect();
        streams.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        streams.truncate(limit);
        Ok(streams)
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        let mut inner = self.lock();
        let head = inner.head();
        crate::import::check_import(&events, head, |stream| Ok(inner.version(stream)))?;
        if let Some(event) = events.iter().find(|e| inner.ids.contains_key(&e.event_id)) {
            return Err(StoreError::DuplicateEvent { stream: event.stream_id.clone(), event_id: event.event_id });
        }
        for event in events {
            let index = inner.all.len();
            inner.streams.entry(event.stream_id.clone()).or_default().push(index);
            inner.ids.insert(event.event_id, index);
            inner.all.push(event);
        }
        let head = inner.head();
        drop(inner);
        self.publish(head);
        Ok(head)
    }
}
