//! A type-erased, cheaply cloned event store.
//!
//! [`EventStore`] returns `impl Future`, which keeps every backend free of boxing but
//! makes the trait unusable as `dyn`. [`SharedStore`] boxes each call once instead,
//! so the [`Application`](crate::Application), subscriptions and process managers
//! carry no store type parameter and a binary can pick its backend at run time.

use crate::envelope::{NewEvent, RecordedEvent};
use crate::event_store::{AppendResult, EventFilter, EventStore, Snapshot, StoreError, StreamAppend, StreamInfo};
use crate::stream::{Direction, ExpectedVersion, GlobalPosition, StreamVersion};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe mirror of [`EventStore`]; implemented for every store.
///
/// Its methods are not called directly: a [`SharedStore`] holds the store as an
/// `Arc<dyn DynEventStore>` and is an [`EventStore`] again, so code written against
/// [`EventStore`] runs on a backend chosen at run time:
///
/// ```
/// use rewind::store::DynEventStore;
/// use rewind::testing::new_event;
/// use rewind::{EventStore, ExpectedVersion, MemoryStore, SharedStore, StreamVersion};
///
/// // Every store is one, whatever its type.
/// let _object: &dyn DynEventStore = &MemoryStore::new();
///
/// fn open(url: &str) -> SharedStore {
///     match url {
///         "memory://" => SharedStore::new(MemoryStore::new()),
///         other => panic!("no backend for {other}"),
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = open("memory://");
/// let handle = store.clone(); // the same store behind the same trait object
/// store.append("order-1", ExpectedVersion::Any, vec![new_event("OrderPlaced", serde_json::json!({}))]).await.unwrap();
/// assert_eq!(handle.stream_version("order-1").await.unwrap(), StreamVersion(1));
/// # });
/// ```
pub trait DynEventStore: Send + Sync + 'static {
    #[doc(hidden)]
    fn dyn_append<'a>(
        &'a self,
        stream_id: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendResult, StoreError>>;
    #[doc(hidden)]
    fn dyn_append_batch(&self, appends: Vec<StreamAppend>) -> BoxFuture<'_, Result<Vec<AppendResult>, StoreError>>;
    #[doc(hidden)]
    fn dyn_read_stream<'a>(
        &'a self,
        stream_id: &'a str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>>;
    #[doc(hidden)]
    fn dyn_read_all<'a>(
        &'a self,
        from: GlobalPosition,
        limit: usize,
        filter: &'a EventFilter,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>>;
    #[doc(hidden)]
    fn dyn_stream_version<'a>(&'a self, stream_id: &'a str) -> BoxFuture<'a, Result<StreamVersion, StoreError>>;
    #[doc(hidden)]
    fn dyn_read_event(&self, event_id: Uuid) -> BoxFuture<'_, Result<Option<RecordedEvent>, StoreError>>;
    #[doc(hidden)]
    fn dyn_head_position(&self) -> BoxFuture<'_, Result<GlobalPosition, StoreError>>;
    #[doc(hidden)]
    fn dyn_settled_head(&self) -> BoxFuture<'_, Result<GlobalPosition, StoreError>>;
    #[doc(hidden)]
    fn dyn_watch_head(&self) -> watch::Receiver<GlobalPosition>;
    #[doc(hidden)]
    fn dyn_save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;
    #[doc(hidden)]
    fn dyn_load_snapshot<'a>(&'a self, stream_id: &'a str) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;
    #[doc(hidden)]
    fn dyn_list_streams<'a>(
        &'a self,
        prefix: &'a str,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamInfo>, StoreError>>;
    #[doc(hidden)]
    fn dyn_import(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<GlobalPosition, StoreError>>;
}

impl<S: EventStore> DynEventStore for S {
    fn dyn_append<'a>(
        &'a self,
        stream_id: &'a str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<AppendResult, StoreError>> {
        Box::pin(self.append(stream_id, expected, events))
    }
    fn dyn_append_batch(&self, appends: Vec<StreamAppend>) -> BoxFuture<'_, Result<Vec<AppendResult>, StoreError>> {
        Box::pin(self.append_batch(appends))
    }
    fn dyn_read_stream<'a>(
        &'a self,
        stream_id: &'a str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(self.read_stream(stream_id, from, direction, limit))
    }
    fn dyn_read_all<'a>(
        &'a self,
        from: GlobalPosition,
        limit: usize,
        filter: &'a EventFilter,
    ) -> BoxFuture<'a, Result<Vec<RecordedEvent>, StoreError>> {
        Box::pin(self.read_all(from, limit, filter))
    }
    fn dyn_stream_version<'a>(&'a self, stream_id: &'a str) -> BoxFuture<'a, Result<StreamVersion, StoreError>> {
        Box::pin(self.stream_version(stream_id))
    }
    fn dyn_read_event(&self, event_id: Uuid) -> BoxFuture<'_, Result<Option<RecordedEvent>, StoreError>> {
        Box::pin(self.read_event(event_id))
    }
    fn dyn_head_position(&self) -> BoxFuture<'_, Result<GlobalPosition, StoreError>> {
        Box::pin(self.head_position())
    }
    #[doc(hidden)]
    fn dyn_settled_head(&self) -> BoxFuture<'_, Result<GlobalPosition, StoreError>> {
        Box::pin(self.settled_head())
    }
    fn dyn_watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.watch_head()
    }
    fn dyn_save_snapshot(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.save_snapshot(snapshot))
    }
    fn dyn_load_snapshot<'a>(&'a self, stream_id: &'a str) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(self.load_snapshot(stream_id))
    }
    fn dyn_list_streams<'a>(
        &'a self,
        prefix: &'a str,
        after: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamInfo>, StoreError>> {
        Box::pin(self.list_streams(prefix, after, limit))
    }
    fn dyn_import(&self, events: Vec<RecordedEvent>) -> BoxFuture<'_, Result<GlobalPosition, StoreError>> {
        Box::pin(self.import(events))
    }
}

/// Any event store behind one cheap, clonable handle.
///
/// ```
/// use rewind::{EventStore, MemoryStore, SharedStore};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = SharedStore::new(MemoryStore::new());
/// assert_eq!(store.head_position().await.unwrap().0, 0);
/// # });
/// ```
#[derive(Clone)]
pub struct SharedStore(Arc<dyn DynEventStore>);

impl SharedStore {
    /// Wraps a store.
    pub fn new(store: impl EventStore) -> SharedStore {
        SharedStore(Arc::new(store))
    }
}

impl<S: EventStore> From<Arc<S>> for SharedStore {
    fn from(store: Arc<S>) -> SharedStore {
        SharedStore(store)
    }
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore")
    }
}

impl EventStore for SharedStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.0.dyn_append(stream_id, expected, events).await
    }
    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        self.0.dyn_append_batch(appends).await
    }
    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.dyn_read_stream(stream_id, from, direction, limit).await
    }
    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.dyn_read_all(from, limit, filter).await
    }
    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        self.0.dyn_stream_version(stream_id).await
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.0.dyn_read_event(event_id).await
    }
    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        self.0.dyn_head_position().await
    }

    async fn settled_head(&self) -> Result<GlobalPosition, StoreError> {
        self.0.dyn_settled_head().await
    }
    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.0.dyn_watch_head()
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.0.dyn_save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.0.dyn_load_snapshot(stream_id).await
    }
    async fn list_streams(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<StreamInfo>, StoreError> {
        self.0.dyn_list_streams(prefix, after, limit).await
    }
    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        self.0.dyn_import(events).await
    }
}
