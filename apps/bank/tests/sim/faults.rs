//! A store wrapper that fails on command, deterministically from the seed: appends
//! that fail before they reach the store (nothing written), appends that commit and
//! then report an error (the answer lost after the commit), failed reads, outages
//! (everything fails until the outage ends), and scheduling noise (a few yields)
//! that moves where concurrent work interleaves.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind::store::StreamAppend;
use rewind::{
    AppendResult, Direction, EventFilter, EventStore, ExpectedVersion, GlobalPosition, NewEvent, RecordedEvent,
    Snapshot, StoreError, StreamInfo, StreamVersion,
};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What an append meets.
enum AppendFault {
    None,
    /// Refused before anything is written.
    Before,
    /// Written, then the answer is lost.
    After,
}

struct State {
    rng: StdRng,
    /// Chance that one operation fails (0 turns injection off).
    rate: f64,
    /// While set, every write fails, and every read too unless the outage is of
    /// writes only (a full disk, a read-only failover).
    outage: Option<Outage>,
    /// Faults injected so far (a failure seen while this moved was caused by one).
    injected: u64,
}

/// What an outage takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    Everything,
    Writes,
}

/// The fault plan shared by the world and every store wrapper it hands out.
pub struct Faults(Mutex<State>);

impl Faults {
    pub fn new(seed: u64) -> Arc<Faults> {
        Arc::new(Faults(Mutex::new(State {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_fa17),
            rate: 0.0,
            outage: None,
            injected: 0,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_rate(&self, rate: f64) {
        self.lock().rate = rate;
    }

    pub fn set_outage(&self, outage: Option<Outage>) {
        self.lock().outage = outage;
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    fn fails(&self, write: bool) -> bool {
        let mut state = self.lock();
        let rate = state.rate;
        let out = match state.outage {
            Some(Outage::Everything) => true,
            Some(Outage::Writes) => write,
            None => false,
        };
        let fail = out || (rate > 0.0 && state.rng.random_bool(rate));
        if fail {
            state.injected += 1;
        }
        fail
    }

    fn append_fault(&self) -> AppendFault {
        if !self.fails(true) {
            return AppendFault::None;
        }
        let mut state = self.lock();
        // During an outage nothing reaches the store; otherwise half the failures
        // happen after the commit.
        if state.outage.is_some() || state.rng.random_bool(0.5) { AppendFault::Before } else { AppendFault::After }
    }

    fn yields(&self) -> u32 {
        let mut state = self.lock();
        if state.rate > 0.0 { state.rng.random_range(0..3) } else { 0 }
    }

    async fn noise(&self) {
        for _ in 0..self.yields() {
            tokio::task::yield_now().await;
        }
    }
}

/// What every injected fault's message says.
pub const INJECTED: &str = "injected fault";

fn injected(what: &str) -> StoreError {
    StoreError::backend(std::io::Error::new(std::io::ErrorKind::ConnectionReset, format!("{INJECTED}: {what}")))
}

/// `inner`, failing as `faults` says. Imports are never faulted (copies are made by
/// the operator's tools, not under load).
pub struct FaultyStore<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

impl<S: EventStore> FaultyStore<S> {
    async fn read<T>(&self, what: &str, read: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.faults.noise().await;
        if self.faults.fails(false) {
            return Err(injected(what));
        }
        read.await
    }

    async fn write<T>(&self, write: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        self.faults.noise().await;
        match self.faults.append_fault() {
            AppendFault::None => write.await,
            AppendFault::Before => Err(injected("append refused")),
            AppendFault::After => {
                let result = write.await;
                self.faults.noise().await;
                match result {
                    Ok(_) => Err(injected("connection lost after commit")),
                    Err(error) => Err(error),
                }
            }
        }
    }
}

impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.write(self.inner.append(stream_id, expected, events)).await
    }

    async fn append_batch(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>, StoreError> {
        self.write(self.inner.append_batch(appends)).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: StreamVersion,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read("read_stream", self.inner.read_stream(stream_id, from, direction, limit)).await
    }

    async fn read_all(
        &self,
        from: GlobalPosition,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read("read_all", self.inner.read_all(from, limit, filter)).await
    }

    async fn stream_version(&self, stream_id: &str) -> Result<StreamVersion, StoreError> {
        self.read("stream_version", self.inner.stream_version(stream_id)).await
    }

    async fn read_event(&self, event_id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.read("read_event", self.inner.read_event(event_id)).await
    }

    async fn head_position(&self) -> Result<GlobalPosition, StoreError> {
        self.read("head_position", self.inner.head_position()).await
    }

    fn watch_head(&self) -> watch::Receiver<GlobalPosition> {
        self.inner.watch_head()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.read("save_snapshot", self.inner.save_snapshot(snapshot)).await
    }

    async fn load_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        self.read("load_snapshot", self.inner.load_snapshot(stream_id)).await
    }

    async fn list_streams(&self, prefix: &str, after: &str, limit: usize) -> Result<Vec<StreamInfo>, StoreError> {
        self.read("list_streams", self.inner.list_streams(prefix, after, limit)).await
    }

    async fn import(&self, events: Vec<RecordedEvent>) -> Result<GlobalPosition, StoreError> {
        self.inner.import(events).await
    }
}
