//! Model test: random sequences of appends, batches and snapshot saves run against
//! the SQLite store and the in-memory reference store ([`MemoryStore`]); every
//! answer and the final contents must agree (commit times aside).
//!
//! One allowance: when a batch has several faults at once (say a conflict in its
//! first append and a stream named twice), the contract does not say which error
//! wins, and the stores differ (SQLite rejects an unusable request before looking
//! at the store). So a failed batch only has to fail in both.

mod common;

use common::TempStore;
use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind::store::StreamAppend;
use rewind::{
    AppendResult, Direction, EventFilter, EventStore, ExpectedVersion, GlobalPosition, MemoryStore, Metadata, NewEvent,
    Snapshot, StoreError, StreamVersion,
};
use uuid::Uuid;

const STREAMS: [&str; 4] = ["a", "b", "acc-1", "acc-2"];

/// One random operation.
#[derive(Debug, Clone)]
enum Op {
    Append(StreamAppend),
    Batch(Vec<StreamAppend>),
    Snapshot(Snapshot),
}

/// Builds random operations, reusing earlier event ids now and then so that
/// idempotent re-appends and duplicates come up.
struct Generator {
    rng: StdRng,
    used: Vec<NewEvent>,
    /// The last single append, to send again (the idempotent case when it succeeded).
    last: Option<StreamAppend>,
}

impl Generator {
    fn event(&mut self) -> NewEvent {
        if !self.used.is_empty() && self.rng.random_bool(0.15) {
            return self.used[self.rng.random_range(0..self.used.len())].clone();
        }
        let metadata = Metadata {
            causation_id: self.rng.random_bool(0.5).then(Uuid::new_v4),
            correlation_id: self.rng.random_bool(0.5).then(Uuid::new_v4),
            ..Default::default()
        };
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            event_type: ["Opened", "Deposited", "Closed"][self.rng.random_range(0..3)].into(),
            data: format!(r#"{{"n":{}}}"#, self.rng.random_range(0..1_000)),
            metadata,
        };
        self.used.push(event.clone());
        event
    }

    fn append(&mut self, stream_id: &str) -> StreamAppend {
        let expected = match self.rng.random_range(0..6) {
            0 | 5 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            _ => ExpectedVersion::Exact(StreamVersion(self.rng.random_range(0..6))),
        };
        let events = if self.rng.random_bool(0.1) && !self.used.is_empty() {
            // A whole earlier run of events again: the idempotent case, or a duplicate.
            let start = self.rng.random_range(0..self.used.len());
            self.used[start..(start + 2).min(self.used.len())].to_vec()
        } else {
            (0..self.rng.random_range(0..4)).map(|_| self.event()).collect()
        };
        StreamAppend { stream_id: stream_id.into(), expected, events }
    }

    fn stream(&mut self) -> &'static str {
        if self.rng.random_bool(0.03) { "" } else { STREAMS[self.rng.random_range(0..STREAMS.len())] }
    }

    fn op(&mut self) -> Op {
        match self.rng.random_range(0..10) {
            0 if self.last.is_some() => {
                let mut again = self.last.clone().expect("checked");
                again.expected = self.append("").expected;
                Op::Append(again)
            }
            0..=6 => {
                let stream = self.stream();
                let append = self.append(stream);
                self.last = Some(append.clone());
                Op::Append(append)
            }
            7 | 8 => {
                let n = self.rng.random_range(1..4);
                let batch = (0..n)
                    .map(|_| {
                        let stream = self.stream();
                        self.append(stream)
                    })
                    .collect();
                Op::Batch(batch)
            }
            _ => Op::Snapshot(Snapshot {
                stream_id: self.stream().into(),
                version: StreamVersion(self.rng.random_range(0..10)),
                tag: "model:v1".into(),
                data: format!(r#"{{"s":{}}}"#, self.rng.random_range(0..100)),
                created_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).expect("time"),
            }),
        }
    }
}

/// What an answer says, without the parts that may legitimately differ (error texts).
#[derive(Debug, PartialEq)]
enum Answer {
    Appended(Vec<AppendResult>),
    Saved,
    Conflict(String, StreamVersion),
    Duplicate(String),
    Invalid,
    Other(String),
    /// A batch failed with a conflict, duplicate or invalid error.
    BatchRejected,
}

fn answer<T>(result: Result<T, StoreError>, ok: impl FnOnce(T) -> Answer) -> Answer {
    match result {
        Ok(value) => ok(value),
        Err(StoreError::Conflict { stream, actual, .. }) => Answer::Conflict(stream, actual),
        Err(StoreError::DuplicateEvent { stream, .. }) => Answer::Duplicate(stream),
        Err(StoreError::Invalid(_)) => Answer::Invalid,
        Err(other) => Answer::Other(other.to_string()),
    }
}

async fn run(store: &impl EventStore, op: Op) -> Answer {
    match op {
        Op::Append(a) => answer(store.append(&a.stream_id, a.expected, a.events).await, |r| Answer::Appended(vec![r])),
        Op::Batch(batch) => match answer(store.append_batch(batch).await, Answer::Appended) {
            Answer::Conflict(..) | Answer::Duplicate(_) | Answer::Invalid => Answer::BatchRejected,
            other => other,
        },
        Op::Snapshot(snapshot) => answer(store.save_snapshot(snapshot).await, |()| Answer::Saved),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_agree_with_the_memory_store() {
    for seed in 0..8u64 {
        let sqlite = TempStore::new().await;
        let memory = MemoryStore::new();
        let mut generator = Generator { rng: StdRng::seed_from_u64(seed), used: Vec::new(), last: None };
        for step in 0..250 {
            let op = generator.op();
            let (expected, actual) = (run(&memory, op.clone()).await, run(&sqlite, op.clone()).await);
            assert_eq!(actual, expected, "seed {seed}, step {step}: {op:?}");
        }
        compare_contents(&memory, &sqlite, seed).await;
    }
}

/// The same, with the operations sent to the SQLite store in bursts: each burst is
/// queued in order at once, so the writer runs it as one or a few group commits
/// (savepoints, requests failing inside a group). The writer keeps queue order,
/// so the answers must still be those of running the operations one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_operations_agree_with_the_memory_store() {
    for seed in 100..108u64 {
        let sqlite = TempStore::new().await;
        let memory = MemoryStore::new();
        let mut generator = Generator { rng: StdRng::seed_from_u64(seed), used: Vec::new(), last: None };
        for burst in 0..25 {
            let ops: Vec<Op> = (0..generator.rng.random_range(1..24)).map(|_| generator.op()).collect();
            let mut expected = Vec::with_capacity(ops.len());
            for op in ops.clone() {
                expected.push(run(&memory, op).await);
            }
            let actual = join_all(ops.clone().into_iter().map(|op| run(&sqlite, op))).await;
            for (i, (actual, expected)) in actual.into_iter().zip(expected).enumerate() {
                assert_eq!(actual, expected, "seed {seed}, burst {burst}, op {i}: {:?}", ops[i]);
            }
        }
        compare_contents(&memory, &sqlite, seed).await;
        assert!(sqlite.store.stats().largest_group > 1, "seed {seed}: bursts shared commits");
    }
}

async fn compare_contents(memory: &MemoryStore, sqlite: &TempStore, seed: u64) {
    let strip = |mut events: Vec<rewind::RecordedEvent>| {
        events.iter_mut().for_each(|e| e.created_at = chrono::DateTime::UNIX_EPOCH);
        events
    };
    let everything = EventFilter::all();
    let expected = strip(memory.read_all(GlobalPosition::START, 10_000, &everything).await.expect("read"));
    let actual = strip(sqlite.read_all(GlobalPosition::START, 10_000, &everything).await.expect("read"));
    assert_eq!(actual, expected, "seed {seed}: the global order");
    assert_eq!(sqlite.head_position().await.expect("head"), memory.head_position().await.expect("head"));
    for stream in STREAMS {
        for direction in [Direction::Forward, Direction::Backward] {
            let from = if direction == Direction::Forward { StreamVersion(1) } else { StreamVersion::END };
            let expected = strip(memory.read_stream(stream, from, direction, 1_000).await.expect("read"));
            let actual = strip(sqlite.read_stream(stream, from, direction, 1_000).await.expect("read"));
            assert_eq!(actual, expected, "seed {seed}: stream {stream} {direction:?}");
        }
        let filter = EventFilter { stream_prefix: Some("acc-".into()), event_types: vec!["Deposited".into()] };
        let expected = strip(memory.read_all(GlobalPosition::START, 1_000, &filter).await.expect("read"));
        let actual = strip(sqlite.read_all(GlobalPosition::START, 1_000, &filter).await.expect("read"));
        assert_eq!(actual, expected, "seed {seed}: filtered");
        let snapshot = |s: Option<Snapshot>| s.map(|s| (s.version, s.data));
        assert_eq!(
            snapshot(sqlite.load_snapshot(stream).await.expect("load")),
            snapshot(memory.load_snapshot(stream).await.expect("load")),
            "seed {seed}: snapshot of {stream}"
        );
    }
}
