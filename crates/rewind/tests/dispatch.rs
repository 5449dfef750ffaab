//! The dispatch pipeline end to end on the in-memory store: routing, middleware,
//! the aggregate runtime's concurrency, retries, idempotency, caching and snapshots.

mod support;

use rewind::{
    AggregateConfig, Application, Direction, DispatchError, DispatchOptions, EventStore, ExpectedVersion,
    GlobalPosition, MemoryStore, Middleware, NewEvent, Pipeline, Rejection, Returning, Snapshot, StreamVersion,
    ValidationMiddleware,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

fn app<S: EventStore>(store: Arc<S>, config: AggregateConfig<Account>) -> Application {
    Application::builder(store).router(router(config)).build()
}

fn memory_app() -> Application {
    app(shared(MemoryStore::new()), AggregateConfig::new().identity_prefix("account-"))
}

async fn open(app: &Application, id: &str, balance: i64) {
    app.dispatch(Open { id: id.into(), initial_balance: balance }).await.expect("open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_dispatches_to_one_aggregate_lose_no_update() {
    let app = memory_app();
    open(&app, "hot", 1).await;
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    app.dispatch(Deposit { id: "hot".into(), amount: task * 100 + i }).await.expect("deposit");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let expected: i64 = 1 + (0..64).flat_map(|t| (0..20).map(move |i| t * 100 + i)).sum::<i64>();
    let (live, version) = app.aggregate_state::<Account>("hot").await.expect("state");
    assert_eq!(live.balance, expected);
    assert_eq!(version, StreamVersion(1 + 64 * 20));
    let (rebuilt, _) = rebuild(app.store(), "account-hot").await;
    assert_eq!(rebuilt, live, "state rebuilt from the log equals the live state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_applications_on_one_store_retry_conflicts() {
    // Two processes sharing a store: each keeps its own live copy, so each append
    // after the other's write conflicts, reloads and retries.
    let store = shared(MemoryStore::new());
    let first = app(store.clone(), AggregateConfig::new());
    let second = app(store.clone(), AggregateConfig::new());
    open(&first, "a", 10).await;
    let writers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|app| {
            tokio::spawn(async move {
                for _ in 0..200 {
                    app.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("deposit");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 410);
    for (app, version) in [(first, 402), (second, 403)] {
        let done = app.dispatch(Deposit { id: "a".into(), amount: 0 }).await.expect("deposit");
        assert_eq!(done.version, StreamVersion(version), "each copy caught up before deciding");
    }
}

/// Another process's appends reach a process that keeps its instances fresh before
/// its next command: that command appends once and reads nothing. Without it, the
/// same command first fails its append and reads the missing events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_kept_fresh_decide_on_other_processes_events_at_once() {
    for fresh in [true, false] {
        let store = shared(FaultyStore::default());
        let config = || AggregateConfig::new().identity_prefix("account-");
        let writer = app(store.clone(), config());
        let builder = Application::builder(store.clone()).router(router(config()));
        let reader = if fresh { builder.keep_instances_fresh().build() } else { builder.build() };
        open(&writer, "a", 10).await;
        reader.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("the reader caches the instance");
        for _ in 0..5 {
            writer.dispatch(Deposit { id: "a".into(), amount: 2 }).await.expect("the other process deposits");
        }
        let head = store.head_position().await.expect("head");
        if let Some(mut done) = reader.instances_fresh_to() {
            tokio::time::timeout(Duration::from_secs(10), done.wait_for(|done| *done >= head))
                .await
                .expect("the refresher reached the head")
                .expect("refresher running");
        }
        let (appends, reads) = (store.appends.load(Ordering::SeqCst), store.stream_reads.load(Ordering::SeqCst));
        let done = reader.dispatch(Deposit { id: "a".into(), amount: 0 }).await.expect("deposit");
        assert_eq!(done.version, StreamVersion(8));
        let spent = (store.appends.load(Ordering::SeqCst) - appends, store.stream_reads.load(Ordering::SeqCst) - reads);
        if fresh {
            assert_eq!(spent, (1, 0), "one append, no catch-up read");
        } else {
            assert_eq!(spent.0, 2, "a stale copy fails its first append");
            assert!(spent.1 >= 1, "and reads the missing events");
        }
    }
}

#[tokio::test]
async fn gives_up_with_a_typed_conflict_after_max_attempts() {
    let store = shared(FaultyStore::default());
    let app = app(store.clone(), AggregateConfig::new().max_attempts(3));
    open(&app, "a", 10).await;
    store.always_conflict.store(true, Ordering::SeqCst);
    let before = store.appends.load(Ordering::SeqCst);
    match app.dispatch(Deposit { id: "a".into(), amount: 1 }).await {
        Err(DispatchError::Conflict { stream, attempts }) => assert_eq!((stream.as_str(), attempts), ("a", 3)),
        other => panic!("expected conflict, got {other:?}"),
    }
    assert_eq!(store.appends.load(Ordering::SeqCst) - before, 3);
}

#[tokio::test]
async fn unknown_command_is_a_typed_error() {
    let app = memory_app();
    match app.dispatch(Unrouted { id: "x".into() }).await {
        Err(DispatchError::NoRoute { command }) => assert_eq!(command, "Unrouted"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
}

#[tokio::test]
async fn empty_identity_is_refused() {
    let app = memory_app();
    let result = app.dispatch(Open { id: String::new(), initial_balance: 1 }).await;
    assert!(matches!(result, Err(DispatchError::InvalidIdentity { command: "Open" })), "{result:?}");
}

#[tokio::test]
async fn domain_errors_reach_the_caller_unchanged_and_append_nothing() {
    let app = memory_app();
    let result = app.dispatch(Deposit { id: "nobody".into(), amount: 5 }).await;
    assert!(matches!(result, Err(DispatchError::Domain(AccountError::NotFound))), "{result:?}");
    open(&app, "a", 5).await;
    let result = app.dispatch(Withdraw { id: "a".into(), amount: 6 }).await;
    assert!(matches!(result, Err(DispatchError::Domain(AccountError::InsufficientFunds))), "{result:?}");
    let result = app.dispatch(Deposit { id: "a".into(), amount: i64::MAX }).await;
    assert!(matches!(result, Err(DispatchError::Domain(AccountError::Overflow))), "{result:?}");
    assert_eq!(app.store().head_position().await.expect("head"), GlobalPosition(1));
}

#[tokio::test]
async fn zero_events_is_a_valid_outcome() {
    let app = memory_app();
    open(&app, "a", 5).await;
    let done = app.dispatch(Touch { id: "a".into() }).await.expect("touch");
    assert_eq!((done.version, done.position), (StreamVersion(1), None));
    assert_eq!(app.store().head_position().await.expect("head"), GlobalPosition(1));
}

/// Records the hooks it sees; optionally halts.
struct Recorder {
    name: &'static str,
    halt: bool,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        self.log.lock().unwrap().push(format!("{} before {}", self.name, pipeline.command.command_name()));
        pipeline.metadata.insert(format!("seen_by_{}", self.name), true.into());
        if self.halt {
            return Err(Rejection::Unauthorized(format!("{} says no", self.name)));
        }
        pipeline.assign(self.name);
        Ok(())
    }
    async fn after_dispatch(&self, pipeline: &mut Pipeline<'_>) {
        let assigned = pipeline.assigned::<&'static str>().copied().unwrap_or("-");
        self.log.lock().unwrap().push(format!("{} after (assigned {assigned})", self.name));
    }
    async fn after_failure(&self, _: &mut Pipeline<'_>, error: &(dyn std::error::Error + Send + Sync)) {
        self.log.lock().unwrap().push(format!("{} failure: {error}", self.name));
    }
}

fn recorded_app(halt_second: bool) -> (Application, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let app = Application::builder(MemoryStore::new())
        .router(router(AggregateConfig::new()))
        .middleware(Recorder { name: "outer", halt: false, log: log.clone() })
        .middleware(Recorder { name: "inner", halt: halt_second, log: log.clone() })
        .build();
    (app, log)
}

#[tokio::test]
async fn middleware_wraps_dispatch_in_order_and_adds_metadata() {
    let (app, log) = recorded_app(false);
    let done = app
        .dispatch_with(Open { id: "a".into(), initial_balance: 1 }, DispatchOptions::new().returning(Returning::Events))
        .await
        .expect("open");
    assert_eq!(
        *log.lock().unwrap(),
        ["outer before Open", "inner before Open", "inner after (assigned inner)", "outer after (assigned inner)"]
    );
    let custom = &done.events[0].metadata.custom;
    assert_eq!((custom.get("seen_by_outer"), custom.get("seen_by_inner")), (Some(&true.into()), Some(&true.into())));
}

#[tokio::test]
async fn middleware_can_halt_a_dispatch() {
    let (app, log) = recorded_app(true);
    let result = app.dispatch(Open { id: "a".into(), initial_balance: 1 }).await;
    assert!(matches!(&result, Err(DispatchError::Rejected(Rejection::Unauthorized(m))) if m == "inner says no"));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer before Open",
            "inner before Open",
            "inner failure: unauthorized: inner says no",
            "outer failure: unauthorized: inner says no"
        ]
    );
    assert_eq!(app.store().head_position().await.expect("head"), GlobalPosition::START, "nothing appended");
}

#[tokio::test]
async fn validation_middleware_reports_field_messages() {
    let app = Application::builder(MemoryStore::new())
        .router(router(AggregateConfig::new()))
        .middleware(ValidationMiddleware)
        .middleware(rewind::LoggingMiddleware)
        .build();
    match app.dispatch(Open { id: "a".into(), initial_balance: 0 }).await {
        Err(DispatchError::Rejected(Rejection::Invalid(errors))) => {
            assert_eq!(errors.fields()["initial_balance"], ["must be greater than 0"]);
        }
        other => panic!("expected validation errors, got {other:?}"),
    }
    assert_eq!(app.store().head_position().await.expect("head"), GlobalPosition::START);
    open(&app, "a", 1).await;
}

#[tokio::test]
async fn events_carry_causation_and_correlation() {
    let app = memory_app();
    let correlation = uuid::Uuid::new_v4();
    let cause = uuid::Uuid::new_v4();
    let options = DispatchOptions::new()
        .correlation_id(correlation)
        .causation_id(cause)
        .metadata("user", "u-1")
        .returning(Returning::Events);
    let done = app.dispatch_with(Open { id: "a".into(), initial_balance: 3 }, options).await.expect("open");
    let event = &done.events[0];
    assert_eq!(event.metadata.causation_id, Some(cause), "the given cause is recorded");
    assert_eq!(event.metadata.command(), Some(done.command_id), "and the command that appended it");
    let uncaused = app
        .dispatch_with(Open { id: "b".into(), initial_balance: 3 }, DispatchOptions::new().returning(Returning::Events))
        .await
        .expect("open");
    let event_b = &uncaused.events[0];
    assert_eq!(event_b.metadata.causation_id, Some(uncaused.command_id), "a command nothing caused is the cause");
    assert_eq!(event_b.metadata.command_id, None, "stored once");
    assert_eq!(event.metadata.correlation_id, Some(correlation));
    assert_eq!(event.metadata.custom["user"], "u-1");
    assert_eq!(
        (event.stream_id.as_str(), event.stream_version, Some(event.position)),
        ("account-a", StreamVersion(1), done.position)
    );
    let plain = app.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("deposit");
    assert_eq!(plain.correlation_id, plain.command_id, "a new conversation correlates to its first command");
}

#[tokio::test]
async fn returning_state_and_version() {
    let app = memory_app();
    open(&app, "a", 3).await;
    let options = DispatchOptions::new().returning(Returning::State);
    let done = app.dispatch_with(Deposit { id: "a".into(), amount: 4 }, options).await.expect("deposit");
    assert_eq!(done.state.map(|s| s.balance), Some(7));
    assert_eq!(done.version, StreamVersion(2));
    assert!(done.events.is_empty(), "events only when asked for");
}

#[tokio::test]
async fn repeated_command_id_appends_nothing_new() {
    let store = shared(MemoryStore::new());
    let app = app(store.clone(), AggregateConfig::new());
    open(&app, "a", 10).await;
    let id = uuid::Uuid::new_v4();
    let first = app
        .dispatch_with(Deposit { id: "a".into(), amount: 5 }, DispatchOptions::new().command_id(id))
        .await
        .expect("first");
    assert!(!first.duplicate);
    app.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("another");
    let again = app
        .dispatch_with(Deposit { id: "a".into(), amount: 5 }, DispatchOptions::new().command_id(id))
        .await
        .expect("again");
    assert!(again.duplicate);
    assert_eq!(again.version, first.version, "reports the first outcome");
    // A fresh runtime (another process, or after eviction) learns it from the log.
    let other = crate::app(store.clone(), AggregateConfig::new());
    let third = other
        .dispatch_with(Deposit { id: "a".into(), amount: 5 }, DispatchOptions::new().command_id(id))
        .await
        .expect("third");
    assert!(third.duplicate);
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 16);
}

#[tokio::test]
async fn repeated_command_beyond_memory_is_caught_by_the_store() {
    // More commands than the instance remembers: the deterministic event ids of the
    // repeat collide in the store, which reports them as already appended.
    let store = shared(MemoryStore::new());
    let app = app(store.clone(), AggregateConfig::new());
    open(&app, "a", 10).await;
    let id = uuid::Uuid::new_v4();
    let options = || DispatchOptions::new().command_id(id);
    let first = app.dispatch_with(Withdraw { id: "a".into(), amount: 10 }, options()).await.expect("first");
    for _ in 0..100 {
        app.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("deposit");
    }
    let fresh = crate::app(store.clone(), AggregateConfig::new());
    let again = fresh.dispatch_with(Withdraw { id: "a".into(), amount: 10 }, options()).await.expect("again");
    assert!(again.duplicate);
    assert_eq!(again.version, first.version);
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 100);
}

#[tokio::test]
async fn a_lost_acknowledgement_reloads_instead_of_guessing() {
    let store = shared(FaultyStore::default());
    let app = app(store.clone(), AggregateConfig::new());
    open(&app, "a", 10).await;
    store.lose_next_ack.store(true, Ordering::SeqCst);
    let result = app.dispatch(Deposit { id: "a".into(), amount: 5 }).await;
    assert!(
        matches!(result, Err(DispatchError::OutcomeUnknown { .. })),
        "an answer lost after the commit is unknown: {result:?}"
    );
    // The event was written after all; the next command must see it.
    let done = app
        .dispatch_with(Deposit { id: "a".into(), amount: 1 }, DispatchOptions::new().returning(Returning::State))
        .await
        .expect("deposit");
    assert_eq!(done.state.map(|s| s.balance), Some(16));
    assert_eq!(done.version, StreamVersion(3));
}

#[tokio::test(start_paused = true)]
async fn a_dispatch_that_does_not_finish_times_out() {
    let store = shared(FaultyStore::default());
    let app = Application::builder(store.clone())
        .router(router(AggregateConfig::new()))
        .default_timeout(Duration::from_secs(5))
        .build();
    store.hang.store(true, Ordering::SeqCst);
    let result = app.dispatch(Open { id: "a".into(), initial_balance: 1 }).await;
    assert!(matches!(result, Err(DispatchError::Timeout(limit)) if limit == Duration::from_secs(5)), "{result:?}");
    let options = DispatchOptions::new().timeout(Duration::from_millis(10));
    let result = app.dispatch_with(Open { id: "b".into(), initial_balance: 1 }, options).await;
    assert!(matches!(result, Err(DispatchError::Timeout(limit)) if limit == Duration::from_millis(10)));
}

#[tokio::test]
async fn live_instances_stay_in_memory_and_evicted_ones_reload() {
    async fn reads_for_two_rounds(capacity: usize) -> usize {
        let store = shared(FaultyStore::default());
        let app = app(store.clone(), AggregateConfig::new().cache_capacity(capacity));
        for round in 0..2 {
            for i in 0..200 {
                let id = format!("acc-{i}");
                if round == 0 {
                    open(&app, &id, 1).await;
                } else {
                    app.dispatch(Deposit { id, amount: 1 }).await.expect("deposit");
                }
            }
        }
        for i in 0..200 {
            let (state, _) = app.aggregate_state::<Account>(&format!("acc-{i}")).await.expect("state");
            assert_eq!(state.balance, 2);
        }
        store.stream_reads.load(Ordering::SeqCst)
    }
    assert_eq!(reads_for_two_rounds(10_000).await, 200, "one load per instance, then memory only");
    assert!(reads_for_two_rounds(16).await > 400, "a small cache evicts and reloads");
}

#[tokio::test]
async fn snapshots_shorten_reloads_and_bad_ones_are_ignored() {
    let store = shared(FaultyStore::default());
    let config = || AggregateConfig::new().snapshot_every(10, 1);
    let app = app(store.clone(), config());
    open(&app, "a", 1).await;
    for _ in 0..24 {
        app.dispatch(Deposit { id: "a".into(), amount: 1 }).await.expect("deposit");
    }
    let snapshot = store.load_snapshot("a").await.expect("load").expect("snapshot saved");
    assert_eq!(snapshot.version, StreamVersion(20));
    assert_eq!(snapshot.tag, "account:v1");
    let fresh = crate::app(store.clone(), config());
    let (state, version) = fresh.aggregate_state::<Account>("a").await.expect("state");
    assert_eq!((state.balance, version), (25, StreamVersion(25)));

    // A snapshot that no longer decodes, or from another shape version, is ignored.
    for (tag, data) in
        [("account:v1", "{\"garbage\":"), ("account:v0", "{\"opened\":true,\"closed\":true,\"balance\":0}")]
    {
        store
            .save_snapshot(Snapshot {
                stream_id: "a".into(),
                version: StreamVersion(25),
                tag: tag.into(),
                data: data.into(),
                created_at: chrono::Utc::now(),
            })
            .await
            .expect("save");
        let fresh = crate::app(store.clone(), config());
        let (state, version) = fresh.aggregate_state::<Account>("a").await.expect("state");
        assert_eq!((state.balance, state.closed, version), (25, false, StreamVersion(25)), "tag {tag}");
    }
}

#[tokio::test]
async fn old_events_are_upcast_when_an_aggregate_loads() {
    let store = shared(MemoryStore::new());
    let old = |event_type: &str, data: serde_json::Value| NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: event_type.into(),
        data: data.to_string(),
        metadata: Default::default(),
    };
    store
        .append(
            "a",
            ExpectedVersion::NoStream,
            vec![
                old("AccountOpened", serde_json::json!({"initial_balance": 5})),
                old("MoneyDeposited", serde_json::json!({"amount": 7})),
            ],
        )
        .await
        .expect("append v1 events");
    let app = app(store.clone(), AggregateConfig::new());
    let done = app
        .dispatch_with(Withdraw { id: "a".into(), amount: 12 }, DispatchOptions::new().returning(Returning::State))
        .await
        .expect("withdraw");
    assert_eq!(done.state.map(|s| s.balance), Some(0));
    let stored = store.read_stream("a", StreamVersion(2), Direction::Forward, 1).await.expect("read");
    assert_eq!(stored[0].event_type, "MoneyDeposited", "upcasting never rewrites the log");
}

mod model {
    //! Random command sequences: the live state always equals the state rebuilt from
    //! the recorded events, with and without snapshots and cache evictions.
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Open(u8, i64),
        Deposit(u8, i64),
        Withdraw(u8, i64),
        Close(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let amount = prop_oneof![1i64..1_000, Just(i64::MAX), Just(i64::MAX / 2)];
        prop_oneof![
            (0u8..4, amount.clone()).prop_map(|(a, n)| Op::Open(a, n)),
            (0u8..4, amount.clone()).prop_map(|(a, n)| Op::Deposit(a, n)),
            (0u8..4, amount).prop_map(|(a, n)| Op::Withdraw(a, n)),
            (0u8..4).prop_map(Op::Close),
        ]
    }

    async fn run(ops: Vec<Op>, config: AggregateConfig<Account>) -> Result<(), TestCaseError> {
        let store = shared(MemoryStore::new());
        let app = app(store.clone(), config);
        for op in ops {
            let result = match op {
                Op::Open(a, n) => app.dispatch(Open { id: a.to_string(), initial_balance: n }).await.map(|_| ()),
                Op::Deposit(a, n) => app.dispatch(Deposit { id: a.to_string(), amount: n }).await.map(|_| ()),
                Op::Withdraw(a, n) => app.dispatch(Withdraw { id: a.to_string(), amount: n }).await.map(|_| ()),
                Op::Close(a) => app.dispatch(Close { id: a.to_string() }).await.map(|_| ()),
            };
            prop_assert!(matches!(result, Ok(()) | Err(DispatchError::Domain(_))), "{result:?}");
        }
        for a in 0..4u8 {
            let id = a.to_string();
            let (live, live_version) = app.aggregate_state::<Account>(&id).await.expect("state");
            let (rebuilt, version) = rebuild(store.as_ref(), &id).await;
            prop_assert_eq!(&live, &rebuilt);
            prop_assert_eq!(live_version, version);
            prop_assert!(live.balance >= 0);
        }
        Ok(())
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
    }

    proptest! {
        #[test]
        fn live_state_equals_rebuilt_state(ops in prop::collection::vec(op(), 0..60)) {
            block_on(run(ops, AggregateConfig::new()))?;
        }

        #[test]
        fn live_state_equals_rebuilt_state_with_snapshots_and_evictions(ops in prop::collection::vec(op(), 0..60)) {
            block_on(run(ops, AggregateConfig::new().snapshot_every(3, 1).cache_capacity(1)))?;
        }
    }
}

#[tokio::test]
async fn an_expected_version_guards_the_command() {
    let app = memory_app();
    open(&app, "a", 10).await;
    let stale = DispatchOptions::new().expected_version(StreamVersion::NONE);
    let result = app.dispatch_with(Deposit { id: "a".into(), amount: 1 }, stale).await;
    assert!(
        matches!(result, Err(DispatchError::WrongVersion { expected: StreamVersion(0), actual: StreamVersion(1) })),
        "{result:?}"
    );
    let current = DispatchOptions::new().expected_version(StreamVersion(1));
    let done = app.dispatch_with(Deposit { id: "a".into(), amount: 1 }, current).await.expect("deposit");
    assert_eq!(done.version, StreamVersion(2));
    assert_eq!(
        app.store().head_position().await.expect("head"),
        GlobalPosition(2),
        "the refused command appended nothing"
    );
}

/// A repeat is answered from the log, not from the instance's memory: loaded from a
/// snapshot, the instance remembers no command, and the withdrawal would now be
/// refused (the money is gone), yet the repeat reports the first success.
#[tokio::test]
async fn a_repeat_gets_its_first_success_though_the_command_would_now_fail() {
    let store = shared(MemoryStore::new());
    let config = || AggregateConfig::new().snapshot_every(1, 1);
    let app = app(store.clone(), config());
    open(&app, "a", 10).await;
    let id = uuid::Uuid::new_v4();
    let withdraw = || Withdraw { id: "a".into(), amount: 10 };
    let first = app.dispatch_with(withdraw(), DispatchOptions::new().command_id(id)).await.expect("first");
    let fresh = crate::app(store.clone(), config());
    let again =
        fresh.dispatch_with(withdraw(), DispatchOptions::new().command_id(id)).await.expect("the first outcome");
    assert!(again.duplicate);
    assert_eq!(again.version, first.version);
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 0);
}

/// A refused command with a caller-chosen id is refused again on its repeat, even
/// once the aggregate would accept it; the refusal is kept in the log.
#[tokio::test]
async fn a_repeat_of_a_refused_command_gets_its_refusal_after_the_state_changed() {
    let store = shared(MemoryStore::new());
    let app = app(store.clone(), AggregateConfig::new());
    open(&app, "a", 10).await;
    let id = uuid::Uuid::new_v4();
    let withdraw = || Withdraw { id: "a".into(), amount: 50 };
    let first = app.dispatch_with(withdraw(), DispatchOptions::new().command_id(id)).await;
    assert!(matches!(first, Err(DispatchError::Domain(AccountError::InsufficientFunds))), "{first:?}");
    app.dispatch(Deposit { id: "a".into(), amount: 100 }).await.expect("deposit");
    for restarted in [app.clone(), crate::app(store.clone(), AggregateConfig::new())] {
        let again = restarted.dispatch_with(withdraw(), DispatchOptions::new().command_id(id)).await;
        assert!(matches!(again, Err(DispatchError::Domain(AccountError::InsufficientFunds))), "{again:?}");
    }
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 110, "no money moved");
    let failures = store.read_stream("$failed-a", StreamVersion(1), Direction::Forward, 10).await.expect("read");
    assert_eq!(failures.len(), 1, "recorded once");
    assert_eq!(failures[0].event_type, rewind::command_outcome::FAILURE_TYPE);
    assert_eq!(failures[0].metadata.command(), Some(id));
    // A refusal with a random id cannot be repeated, so it is not recorded.
    let refused = app.dispatch(Withdraw { id: "a".into(), amount: 1_000 }).await;
    assert!(matches!(refused, Err(DispatchError::Domain(AccountError::InsufficientFunds))));
    let failures = store.read_stream("$failed-a", StreamVersion(1), Direction::Forward, 10).await.expect("read");
    assert_eq!(failures.len(), 1);
}

/// A refusal is recorded only for the state it was decided on: when the stream moved
/// meanwhile (another process), the command is decided again on the new state.
#[tokio::test]
async fn a_refusal_decided_on_a_stale_state_is_decided_again() {
    let store = shared(MemoryStore::new());
    let stale = app(store.clone(), AggregateConfig::new());
    open(&stale, "a", 10).await;
    // Another process deposits; `stale` still holds the instance at version 1.
    let other = crate::app(store.clone(), AggregateConfig::new());
    other.dispatch(Deposit { id: "a".into(), amount: 100 }).await.expect("deposit");
    let id = uuid::Uuid::new_v4();
    let done =
        stale.dispatch_with(Withdraw { id: "a".into(), amount: 50 }, DispatchOptions::new().command_id(id)).await;
    assert!(done.is_ok(), "decided again on the current state: {done:?}");
    assert!(store.read_stream("$failed-a", StreamVersion(1), Direction::Forward, 10).await.expect("read").is_empty());
    assert_eq!(rebuild(store.as_ref(), "a").await.0.balance, 60);
}
