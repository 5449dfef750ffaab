//! The read side on the in-memory store: subscriptions, error policies, rebuilds,
//! strong consistency and process managers.

mod support;

use async_trait::async_trait;
use rewind::store::{BatchFailure, InstanceChange, Lease};
use rewind::{
    AggregateConfig, Application, CommandFailure, Consistency, Consumer, ConsumerError, ConsumerKind, DeadLetter,
    DispatchError, DispatchOptions, ErrorPolicy, EventFilter, EventHandler, EventStore, FailureReport, FailureState,
    GlobalPosition, Interest, MemoryStore, MemorySubscriptionStore, OnError, ProcessCommand, ProcessManager,
    RecordedEvent, StartFrom, StoreError, SubscriptionError, SubscriptionOptions, SubscriptionState,
    SubscriptionStatus, SubscriptionStore, Subscriptions, Transient,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

fn app() -> Application {
    Application::builder(MemoryStore::new()).router(router(AggregateConfig::new())).build()
}

async fn head(app: &Application) -> GlobalPosition {
    app.store().head_position().await.expect("head")
}

fn quick_retry(attempts: u32, then: ErrorPolicy) -> ErrorPolicy {
    ErrorPolicy::Retry {
        max_attempts: attempts,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        then: Box::new(then),
    }
}

/// Records every event it sees; fails (its own error, or a transient one) or panics
/// on chosen positions a set number of times.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<GlobalPosition>>>,
    fail_on: Arc<Mutex<HashMap<u64, u32>>>,
    transient_on: Arc<Mutex<HashMap<u64, u32>>>,
    panic_on: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Recorder {
    fn fail(self, position: u64, times: u32) -> Self {
        self.fail_on.lock().unwrap().insert(position, times);
        self
    }
    fn fail_transiently(self, position: u64, times: u32) -> Self {
        self.transient_on.lock().unwrap().insert(position, times);
        self
    }
    fn panic(self, position: u64, times: u32) -> Self {
        self.panic_on.lock().unwrap().insert(position, times);
        self
    }
    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().iter().map(|p| p.0).collect()
    }
}

fn take_one(map: &Mutex<HashMap<u64, u32>>, position: u64) -> bool {
    let mut map = map.lock().unwrap();
    match map.get_mut(&position) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => false,
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        if take_one(&self.panic_on, event.position.0) {
            panic!("boom at {}", event.position);
        }
        if take_one(&self.transient_on, event.position.0) {
            return Err(Box::new(Transient::new(format!("database away at {}", event.position))));
        }
        if take_one(&self.fail_on, event.position.0) {
            return Err(format!("failed at {}", event.position).into());
        }
        self.seen.lock().unwrap().push(event.position);
        Ok(())
    }
}

/// Balances by stream, and the checkpoint.
type BalanceModel = (HashMap<String, i64>, Option<GlobalPosition>);

/// A read model in memory whose data and checkpoint change together, like a SQL projector.
#[derive(Clone, Default)]
struct BalanceProjector {
    model: Arc<Mutex<BalanceModel>>,
    applied: Arc<AtomicUsize>,
}

impl BalanceProjector {
    fn balance(&self, stream: &str) -> Option<i64> {
        self.model.lock().unwrap().0.get(stream).copied()
    }
}

#[async_trait]
impl Consumer for BalanceProjector {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }
    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        Ok(self.model.lock().unwrap().1)
    }
    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        let mut model = self.model.lock().unwrap();
        for event in events.iter() {
            let balance = model.0.entry(event.stream_id.clone()).or_default();
            match event.decode::<AccountEvent>() {
                Ok(AccountEvent::AccountOpened { initial_balance }) => *balance = initial_balance,
                Ok(AccountEvent::Deposited { amount, .. }) => *balance += amount,
                Ok(AccountEvent::Withdrawn { amount, .. }) => *balance -= amount,
                Ok(AccountEvent::AccountClosed) | Err(_) => {}
            }
            self.applied.fetch_add(1, Ordering::SeqCst);
            model.1 = Some(event.position);
        }
        Ok(())
    }
    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.model.lock().unwrap().1 = Some(event.position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), ConsumerError> {
        *self.model.lock().unwrap() = Default::default();
        Ok(())
    }
}

async fn open(app: &Application, id: &str, balance: i64) {
    app.dispatch(Open { id: id.into(), initial_balance: balance }).await.expect("open");
}

async fn deposit(app: &Application, id: &str, amount: i64) {
    app.dispatch(Deposit { id: id.into(), amount }).await.expect("deposit");
}

fn bookkeeping() -> Arc<MemorySubscriptionStore> {
    Arc::new(MemorySubscriptionStore::new())
}

#[tokio::test]
async fn a_handler_catches_up_then_follows_live_in_order() {
    let app = app();
    open(&app, "a", 1).await;
    deposit(&app, "a", 2).await;
    let recorder = Recorder::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("recorder", recorder.clone(), SubscriptionOptions::new().batch_size(1))
        .start()
        .expect("start");
    subs.wait_for("recorder", head(&app).await).await.expect("caught up");
    open(&app, "b", 1).await;
    deposit(&app, "a", 1).await;
    subs.wait_for("recorder", head(&app).await).await.expect("live");
    assert_eq!(recorder.seen(), vec![1, 2, 3, 4]);
    let status = subs.status_of("recorder").expect("status");
    assert_eq!((status.position, status.lag, status.kind), (GlobalPosition(4), 0, ConsumerKind::EventHandler));
    subs.shutdown().await;
}

#[tokio::test]
async fn rebuilding_or_waiting_for_an_unknown_name_is_an_error_not_a_hang() {
    let app = app();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("recorder", Recorder::default(), SubscriptionOptions::new())
        .start()
        .expect("start");
    let rebuilt = tokio::time::timeout(Duration::from_secs(5), subs.rebuild("nobody")).await.expect("no hang");
    assert!(matches!(rebuilt, Err(SubscriptionError::Unknown(name)) if name == "nobody"));
    assert!(matches!(subs.wait_for("nobody", GlobalPosition(1)).await, Err(SubscriptionError::Unknown(_))));
    assert!(matches!(subs.pause("nobody").await, Err(SubscriptionError::Unknown(_))));
    subs.shutdown().await;
}

#[tokio::test]
async fn only_projectors_run_in_partitions() {
    let app = app();
    let started = Subscriptions::builder(&app, bookkeeping())
        .handler("recorder", Recorder::default(), SubscriptionOptions::new().concurrency(4))
        .start();
    assert!(matches!(started, Err(SubscriptionError::NotPartitionable(name)) if name == "recorder"));
}

#[tokio::test]
async fn a_restarted_subscription_resumes_from_its_checkpoint() {
    let app = app();
    let store = bookkeeping();
    open(&app, "a", 1).await;
    let first = Recorder::default();
    let subs = Subscriptions::builder(&app, store.clone())
        .handler("h", first.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("h", GlobalPosition(1)).await.expect("wait");
    subs.shutdown().await;
    deposit(&app, "a", 1).await;
    let second = Recorder::default();
    let subs = Subscriptions::builder(&app, store)
        .handler("h", second.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("h", GlobalPosition(2)).await.expect("wait");
    assert_eq!((first.seen(), second.seen()), (vec![1], vec![2]));
    subs.shutdown().await;
}

#[tokio::test]
async fn start_positions_and_filters() {
    let app = app();
    open(&app, "a", 1).await;
    open(&app, "b", 1).await;
    let (from_now, after_one, only_b) = (Recorder::default(), Recorder::default(), Recorder::default());
    let b_deposits = EventFilter { stream_prefix: Some("b".into()), event_types: vec!["Deposited".into()] };
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("now", from_now.clone(), SubscriptionOptions::new().start_from(StartFrom::Now))
        .handler("after", after_one.clone(), SubscriptionOptions::new().start_from(StartFrom::After(GlobalPosition(1))))
        .handler("b", only_b.clone(), SubscriptionOptions::new().filter(b_deposits))
        .start()
        .expect("start");
    subs.wait_for("now", GlobalPosition(2)).await.expect("wait");
    deposit(&app, "a", 1).await;
    deposit(&app, "b", 1).await;
    for name in ["now", "after"] {
        subs.wait_for(name, GlobalPosition(4)).await.expect("wait");
    }
    subs.wait_for("b", GlobalPosition(4)).await.expect("wait");
    assert_eq!(from_now.seen(), vec![3, 4]);
    assert_eq!(after_one.seen(), vec![2, 3, 4]);
    assert_eq!(only_b.seen(), vec![4]);
    subs.shutdown().await;
}

#[tokio::test]
async fn a_filtered_subscription_reaches_a_head_its_filter_passes_over() {
    let app = app();
    open(&app, "b", 1).await;
    deposit(&app, "b", 1).await;
    let only_b = Recorder::default();
    let b_deposits = EventFilter { stream_prefix: Some("b".into()), event_types: vec!["Deposited".into()] };
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("b", only_b.clone(), SubscriptionOptions::new().filter(b_deposits))
        .start()
        .expect("start");
    // The newest events are not for it, at catch-up and then live.
    open(&app, "a", 1).await;
    for round in 0..2 {
        if round > 0 {
            deposit(&app, "a", 1).await;
        }
        let reached = tokio::time::timeout(Duration::from_secs(5), subs.wait_for("b", head(&app).await)).await;
        assert!(reached.is_ok(), "stuck before the head: {:?}", subs.status_of("b"));
    }
    assert_eq!(subs.status_of("b").expect("status").lag, 0);
    assert_eq!(only_b.seen(), vec![2]);
    subs.shutdown().await;
}

#[tokio::test]
async fn a_failing_event_is_retried_with_backoff_until_it_succeeds() {
    let app = app();
    open(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    let recorder = Recorder::default().fail(2, 3);
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("h", recorder.clone(), SubscriptionOptions::new().on_error(quick_retry(10, ErrorPolicy::Stop)))
        .start()
        .expect("start");
    subs.wait_for("h", GlobalPosition(3)).await.expect("wait");
    assert_eq!(recorder.seen(), vec![1, 2, 3], "delivered in order, nothing skipped");
    let status = subs.status_of("h").expect("status");
    assert_eq!(status.last_error.as_deref(), Some("failed at 2"), "the last failure stays visible");
    assert_eq!(status.failed_position, None, "but it is no longer failing");
    subs.shutdown().await;
}

#[tokio::test]
async fn a_skipped_event_becomes_a_dead_letter_that_can_be_replayed() {
    let app = app();
    let store = bookkeeping();
    open(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    let recorder = Recorder::default().fail(2, 2);
    let subs = Subscriptions::builder(&app, store.clone())
        .handler("h", recorder.clone(), SubscriptionOptions::new().on_error(quick_retry(2, ErrorPolicy::Skip)))
        .start()
        .expect("start");
    subs.wait_for("h", GlobalPosition(3)).await.expect("wait");
    assert_eq!(recorder.seen(), vec![1, 3], "the failing event was skipped, the next one delivered");
    let letters = subs.dead_letters(Some("h")).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event.position, letters[0].error.as_str()), (GlobalPosition(2), "failed at 2"));
    subs.replay_dead_letter("h", letters[0].event.event_id).await.expect("replay");
    assert_eq!(recorder.seen(), vec![1, 3, 2]);
    assert!(subs.dead_letters(None).await.expect("letters").is_empty());
    assert_eq!(store.load_checkpoint("h").await.expect("checkpoint"), Some(GlobalPosition(3)), "replay did not rewind");
    subs.shutdown().await;
}

#[tokio::test]
async fn a_stop_policy_halts_and_shows_the_event_and_error() {
    let app = app();
    open(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    let recorder = Recorder::default().fail(2, u32::MAX);
    let other = Recorder::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("h", recorder.clone(), SubscriptionOptions::new().on_error(ErrorPolicy::Stop))
        .handler("other", other.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("other", GlobalPosition(3)).await.expect("others are not held up");
    subs.wait_for("h", GlobalPosition(1)).await.expect("wait");
    let status = loop {
        let status = subs.status_of("h").expect("status");
        if status.state == SubscriptionState::Stopped {
            break status;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!((status.position, status.failed_position), (GlobalPosition(1), Some(GlobalPosition(2))));
    assert_eq!(status.last_error.as_deref(), Some("failed at 2"));
    assert_eq!(recorder.seen(), vec![1]);
    subs.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_is_restarted_and_the_application_survives() {
    let app = app();
    open(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    let recorder = Recorder::default().panic(2, 1);
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("h", recorder.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("h", GlobalPosition(2)).await.expect("recovered");
    // At least once: the panic came before the batch's checkpoint, so event 1 came again.
    assert_eq!(recorder.seen(), vec![1, 1, 2]);
    assert!(subs.status_of("h").expect("status").last_error.expect("error kept").contains("boom at 2"));
    deposit(&app, "a", 1).await;
    subs.wait_for("h", GlobalPosition(3)).await.expect("still live");
    subs.shutdown().await;
}

#[tokio::test]
async fn duplicate_names_are_refused_at_start() {
    let app = app();
    let result = Subscriptions::builder(&app, bookkeeping())
        .handler("same", Recorder::default(), SubscriptionOptions::new())
        .handler("same", Recorder::default(), SubscriptionOptions::new())
        .start();
    assert!(matches!(result, Err(SubscriptionError::DuplicateName(name)) if name == "same"));
}

#[tokio::test]
async fn rebuilding_projections_never_re_runs_side_effects() {
    let app = app();
    open(&app, "a", 10).await;
    deposit(&app, "a", 5).await;
    let emails = Recorder::default();
    let projector = BalanceProjector::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("emails", emails.clone(), SubscriptionOptions::new())
        .consumer("balances", Arc::new(projector.clone()), SubscriptionOptions::new())
        .start()
        .expect("start");
    for name in ["emails", "balances"] {
        subs.wait_for(name, GlobalPosition(2)).await.expect("caught up");
    }
    assert!(matches!(subs.rebuild("emails").await, Err(SubscriptionError::NotRebuildable(_))));
    for name in subs.projectors() {
        subs.rebuild(&name).await.expect("rebuild");
    }
    subs.wait_for("balances", GlobalPosition(2)).await.expect("rebuilt");
    assert_eq!(projector.balance("a"), Some(15));
    assert_eq!(projector.applied.load(Ordering::SeqCst), 4, "every event applied again by the rebuild");
    assert_eq!(emails.seen(), vec![1, 2], "no email sent twice");
    subs.shutdown().await;
}

#[tokio::test]
async fn a_new_projector_catches_up_while_others_stay_live() {
    let app = app();
    for i in 0..50 {
        open(&app, &format!("acc-{i}"), 1).await;
    }
    let live = Recorder::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("live", live.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    subs.wait_for("live", GlobalPosition(50)).await.expect("wait");
    let late = BalanceProjector::default();
    subs.add("late", Arc::new(late.clone()), SubscriptionOptions::new().batch_size(7)).expect("add");
    deposit(&app, "acc-3", 4).await;
    subs.wait_for("late", GlobalPosition(51)).await.expect("caught up from the origin");
    subs.wait_for("live", GlobalPosition(51)).await.expect("still live");
    assert_eq!(late.balance("acc-3"), Some(5));
    assert_eq!(late.applied.load(Ordering::SeqCst), 51);
    subs.shutdown().await;
}

#[tokio::test]
async fn strongly_consistent_dispatch_returns_after_the_projection() {
    let app = app();
    let projector = BalanceProjector::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .consumer("balances", Arc::new(projector.clone()), SubscriptionOptions::new().strong())
        .start()
        .expect("start");
    for i in 1..=20 {
        app.dispatch_with(
            Open { id: format!("s{i}"), initial_balance: i },
            DispatchOptions::new().consistency(Consistency::Strong),
        )
        .await
        .expect("open");
        assert_eq!(projector.balance(&format!("s{i}")), Some(i), "the read model already shows the command");
    }
    let named = DispatchOptions::new().consistency(Consistency::Handlers(vec!["balances".into()]));
    app.dispatch_with(Deposit { id: "s1".into(), amount: 9 }, named).await.expect("deposit");
    assert_eq!(projector.balance("s1"), Some(10));
    let unknown = DispatchOptions::new().consistency(Consistency::Handlers(vec!["nope".into()]));
    let result = app.dispatch_with(Deposit { id: "s1".into(), amount: 1 }, unknown).await;
    assert!(matches!(&result, Err(DispatchError::UnknownHandler(name)) if name == "nope"), "{result:?}");
    assert_eq!(head(&app).await, GlobalPosition(21), "an unknown handler name appends nothing");
    subs.shutdown().await;
}

#[tokio::test]
async fn strong_consistency_times_out_distinctly_when_the_read_side_is_stuck() {
    let app = app();
    open(&app, "a", 1).await;
    let stuck = Recorder::default().fail(2, u32::MAX);
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("stuck", stuck, SubscriptionOptions::new().strong().on_error(ErrorPolicy::Stop))
        .start()
        .expect("start");
    let options = DispatchOptions::new().consistency(Consistency::Strong).timeout(Duration::from_millis(200));
    let result = app.dispatch_with(Deposit { id: "a".into(), amount: 1 }, options).await;
    assert!(matches!(result, Err(DispatchError::ConsistencyTimeout { position: GlobalPosition(2), .. })), "{result:?}");
    assert_eq!(head(&app).await, GlobalPosition(2), "the command itself was committed");
    subs.shutdown().await;
}

/// Sweeps half of every large deposit into `<id>-savings`; refunds it if the savings
/// account refuses.
struct Sweeper;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Sweep {
    swept: i64,
}

impl ProcessManager for Sweeper {
    type Event = AccountEvent;
    type State = Sweep;

    fn interested(&self, event: &AccountEvent, recorded: &RecordedEvent) -> Interest {
        match event {
            AccountEvent::Deposited { amount, .. } if *amount >= 100 && !recorded.stream_id.ends_with("-savings") => {
                Interest::Start(recorded.stream_id.clone())
            }
            _ => Interest::Ignore,
        }
    }

    fn handle(&self, _: &Sweep, event: &AccountEvent, recorded: &RecordedEvent) -> Vec<ProcessCommand> {
        let AccountEvent::Deposited { amount, .. } = event else { return vec![] };
        let id = recorded.stream_id.clone();
        vec![
            ProcessCommand::new(Withdraw { id: id.clone(), amount: amount / 2 }),
            ProcessCommand::new(Deposit { id: format!("{id}-savings"), amount: amount / 2 }),
        ]
    }

    fn apply(&self, state: &mut Sweep, event: &AccountEvent) {
        if let AccountEvent::Deposited { amount, .. } = event {
            state.swept += amount / 2;
        }
    }

    fn on_error(&self, failure: &CommandFailure, _: &Sweep, event: &AccountEvent) -> OnError {
        match (failure.domain_error::<AccountError>(), event) {
            (Some(AccountError::Closed | AccountError::NotFound), AccountEvent::Deposited { amount, .. }) => {
                OnError::Compensate(vec![ProcessCommand::new(Refund(amount / 2))])
            }
            _ => OnError::Fail,
        }
    }
}

/// The refund goes back to the source account, known from the failing deposit's context.
#[derive(Debug)]
struct Refund(i64);
impl rewind::Command for Refund {
    type Aggregate = Account;
    fn aggregate_id(&self) -> String {
        "src".into()
    }
}
impl rewind::Execute<Refund> for Account {
    fn execute(&self, Refund(amount): &Refund) -> Result<Vec<AccountEvent>, AccountError> {
        rewind::Execute::execute(self, &Deposit { id: String::new(), amount: *amount })
    }
}

async fn balance(app: &Application, id: &str) -> i64 {
    app.aggregate_state::<Account>(id).await.expect("state").0.balance
}

#[tokio::test]
async fn a_process_manager_dispatches_compensates_and_survives_redelivery() {
    let app =
        Application::builder(MemoryStore::new()).router(router(AggregateConfig::new()).command::<Refund>()).build();
    let store = bookkeeping();
    open(&app, "src", 1000).await;
    open(&app, "src-savings", 1).await;
    let start = |store: Arc<MemorySubscriptionStore>| {
        Subscriptions::builder(&app, store)
            .process_manager("sweeper", Sweeper, SubscriptionOptions::new())
            .start()
            .expect("start")
    };
    let subs = start(store.clone());
    deposit(&app, "src", 100).await;
    subs.wait_for("sweeper", head(&app).await).await.expect("wait");
    assert_eq!((balance(&app, "src").await, balance(&app, "src-savings").await), (1050, 51));
    assert_eq!(store.load_instance("sweeper", "src").await.expect("load").as_deref(), Some(r#"{"swept":50}"#));

    app.dispatch(Close { id: "src-savings".into() }).await.expect("close");
    deposit(&app, "src", 200).await;
    let deposited = head(&app).await;
    subs.wait_for("sweeper", deposited).await.expect("wait");
    // Withdrawn 100, the savings deposit refused, the 100 refunded.
    assert_eq!(balance(&app, "src").await, 1250);
    assert_eq!(balance(&app, "src-savings").await, 51);
    subs.shutdown().await;
    let appended = head(&app).await;

    // A crash before the checkpoint: every event is delivered again.
    store.reset_instances("sweeper").await.expect("reset");
    let subs = start(store.clone());
    subs.wait_for("sweeper", appended).await.expect("wait");
    assert_eq!(head(&app).await, appended, "redelivery appended nothing");
    assert_eq!((balance(&app, "src").await, balance(&app, "src-savings").await), (1250, 51));
    subs.shutdown().await;
}

#[tokio::test]
async fn a_subscription_pauses_and_resumes_and_a_stopped_one_restarts() {
    let app = app();
    open(&app, "a", 1).await;
    let recorder = Recorder::default().fail(2, 1);
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("h", recorder.clone(), SubscriptionOptions::new().on_error(ErrorPolicy::Stop))
        .start()
        .expect("start");
    deposit(&app, "a", 1).await;
    while subs.status_of("h").expect("status").state != SubscriptionState::Stopped {
        tokio::task::yield_now().await;
    }
    subs.resume("h").await.expect("restart after the cause is gone");
    subs.wait_for("h", GlobalPosition(2)).await.expect("wait");
    subs.pause("h").await.expect("pause");
    let paused = subs.status_of("h").expect("a paused subscription keeps its status");
    assert_eq!((paused.state, paused.position), (SubscriptionState::Paused, GlobalPosition(2)));
    deposit(&app, "a", 1).await;
    subs.resume("h").await.expect("resume");
    subs.wait_for("h", GlobalPosition(3)).await.expect("wait");
    assert_eq!(recorder.seen(), vec![1, 2, 3]);
    subs.shutdown().await;
}

#[tokio::test]
async fn a_process_manager_writes_its_checkpoint_lazily_for_events_it_ignores() {
    let app =
        Application::builder(MemoryStore::new()).router(router(AggregateConfig::new()).command::<Refund>()).build();
    let store = bookkeeping();
    open(&app, "src", 1).await;
    let subs = Subscriptions::builder(&app, store.clone())
        .process_manager("sweeper", Sweeper, SubscriptionOptions::new())
        .start()
        .expect("start");
    for _ in 0..10 {
        deposit(&app, "src", 1).await;
    }
    subs.wait_for("sweeper", head(&app).await).await.expect("wait");
    assert_eq!(store.load_checkpoint("sweeper").await.expect("load"), None, "ten ignored events: nothing written");
    let events = (0..1_000).map(|_| Deposit { id: "src".into(), amount: 1 });
    for command in events {
        app.dispatch(command).await.expect("deposit");
    }
    subs.wait_for("sweeper", head(&app).await).await.expect("wait");
    let saved = store.load_checkpoint("sweeper").await.expect("load").expect("written by now");
    assert!(head(&app).await.0 - saved.0 < 1_000, "the stored checkpoint lags by less than 1,000 events");
    subs.shutdown().await;
}

/// An event of a type the manager handles that does not decode is a failure for the
/// error policy (here: a dead letter), never passed over as if it were not for it.
#[tokio::test]
async fn a_process_manager_does_not_pass_over_an_unreadable_event_of_its_own_type() {
    let app =
        Application::builder(MemoryStore::new()).router(router(AggregateConfig::new()).command::<Refund>()).build();
    let store = bookkeeping();
    open(&app, "src", 1).await;
    let garbled = rewind::NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Deposited".into(),
        data: r#"{"garbled": true}"#.into(),
        metadata: Default::default(),
    };
    let written = app.store().append("src-old", rewind::ExpectedVersion::Any, vec![garbled]).await.expect("append");
    let subs = Subscriptions::builder(&app, store.clone())
        .process_manager("sweeper", Sweeper, SubscriptionOptions::new().on_error(ErrorPolicy::Skip))
        .start()
        .expect("start");
    subs.wait_for("sweeper", written.last_position).await.expect("wait");
    let letters = store.dead_letters(Some("sweeper")).await.expect("dead letters");
    assert_eq!(letters.iter().map(|l| l.event.position).collect::<Vec<_>>(), vec![written.last_position]);
    subs.shutdown().await;
}

/// A process manager's replayed dead letter takes effect once: its commands carry
/// ids derived from the event, and its state commits with the letter's removal, so
/// neither a failure after its effects nor a second replay applies it again.
#[tokio::test]
async fn a_process_manager_dead_letter_is_replayed_exactly_once() {
    let app =
        Application::builder(MemoryStore::new()).router(router(AggregateConfig::new()).command::<Refund>()).build();
    open(&app, "src", 1000).await;
    open(&app, "src-savings", 1).await;
    deposit(&app, "src", 100).await;
    let skipped = app.store().read_all(GlobalPosition(3), 1, &EventFilter::all()).await.expect("read").remove(0);
    let store = Arc::new(FlakyBookkeeping::default());
    // Its first removal of a dead letter fails, as if the database went away between
    // a replay's effects and the removal of its letter.
    store.failing_removals.store(1, Ordering::SeqCst);
    // The manager starts after the deposit, as if it had failed on it and skipped it.
    let letter = DeadLetter {
        subscription: "sweeper".into(),
        event: skipped.clone(),
        error: "savings ledger away".into(),
        failed_at: chrono::Utc::now(),
    };
    store.add_dead_letter(letter).await.expect("add");
    let options = SubscriptionOptions::new().start_from(StartFrom::After(skipped.position));
    let subs = Subscriptions::builder(&app, store.clone())
        .process_manager("sweeper", Sweeper, options)
        .start()
        .expect("start");
    let first = subs.replay_dead_letter("sweeper", skipped.event_id).await;
    // Whatever the first attempt answered, an operator tries again while the letter is listed.
    if !subs.dead_letters(Some("sweeper")).await.expect("letters").is_empty() {
        subs.replay_dead_letter("sweeper", skipped.event_id).await.expect("second attempt");
    }
    assert_eq!((balance(&app, "src").await, balance(&app, "src-savings").await), (1050, 51), "first: {first:?}");
    let state = store.load_instance("sweeper", "src").await.expect("load");
    assert_eq!(state.as_deref(), Some(r#"{"swept":50}"#), "the state took the event once (first: {first:?})");
    let appended = head(&app).await;
    let again = subs.replay_dead_letter("sweeper", skipped.event_id).await;
    assert!(matches!(again, Err(SubscriptionError::NoDeadLetter(..))), "{again:?}");
    assert_eq!(head(&app).await, appended, "nothing dispatched again");
    subs.wait_for("sweeper", appended).await.expect("running again after the replay");
    subs.shutdown().await;
}

/// Polls `name`'s status until `done` accepts it; fails after ten minutes (of paused
/// time: each poll moves the clock 10 ms, so that is quick).
async fn status_when(
    subs: &Subscriptions,
    name: &str,
    done: impl Fn(&SubscriptionStatus) -> bool,
) -> SubscriptionStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let status = subs.status_of(name).expect("status");
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reached; the status is {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_is_retried_for_ever_and_a_deterministic_one_takes_the_policy() {
    let app = app();
    open(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    deposit(&app, "a", 1).await;
    let store = bookkeeping();
    // Twenty transient failures: four times what the default policy (five tries, then
    // stop) would allow a deterministic one.
    let recorder = Recorder::default().fail_transiently(2, 20).fail(3, u32::MAX);
    let started = tokio::time::Instant::now();
    let subs = Subscriptions::builder(&app, store.clone())
        .handler("h", recorder.clone(), SubscriptionOptions::new().batch_size(1))
        .start()
        .expect("start");

    let retrying = |s: &SubscriptionStatus| matches!(s.state, SubscriptionState::Retrying { attempt: 10.., .. });
    let status = status_when(&subs, "h", retrying).await;
    assert_eq!(status.state, SubscriptionState::Retrying { attempt: 10, transient: true }, "shown as transient");
    assert_eq!(
        (status.failed_position, status.last_error.as_deref()),
        (Some(GlobalPosition(2)), Some("database away at 2"))
    );
    assert!(status.failing_since.is_some());
    let report = store.failures(Some("h")).await.expect("reports").pop().expect("reported to the bookkeeping");
    assert_eq!((report.state, report.attempt, report.transient), (FailureState::Retrying, 10, true));
    assert_eq!((report.position, report.error.as_str()), (Some(GlobalPosition(2)), "database away at 2"));

    // Then it proceeds, in order, and the deterministic failure on event 3 takes the
    // policy: five tries, then stop.
    let status = status_when(&subs, "h", |s| s.state == SubscriptionState::Stopped).await;
    assert_eq!(recorder.seen(), vec![1, 2], "event 2 delivered once it went through, nothing skipped");
    assert_eq!((status.position, status.failed_position), (GlobalPosition(2), Some(GlobalPosition(3))));
    assert_eq!(status.last_error.as_deref(), Some("failed at 3"));
    assert_eq!((status.transient_failures, status.deterministic_failures), (20, 5));
    let report = store.failures(Some("h")).await.expect("reports").pop().expect("the stop is reported");
    assert_eq!((report.state, report.attempt, report.transient), (FailureState::Stopped, 5, false));
    assert_eq!(report.position, Some(GlobalPosition(3)));

    // The waits doubled from 100 ms and were capped at 5 s (jittered between half and
    // all): 20 of them take 38-77 s, where doubling without a cap would take days.
    let elapsed = started.elapsed();
    assert!(elapsed > Duration::from_secs(38) && elapsed < Duration::from_secs(80), "{elapsed:?}");
    subs.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_read_of_the_store_is_retried_for_ever_and_shown() {
    let store = Arc::new(FaultyStore::default());
    let app = Application::builder(store.clone()).router(router(AggregateConfig::new())).build();
    open(&app, "a", 1).await;
    store.failing_reads.store(30, Ordering::SeqCst);
    let recorder = Recorder::default();
    let subs = Subscriptions::builder(&app, bookkeeping())
        .handler("h", recorder.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    let status = status_when(&subs, "h", |s| matches!(s.state, SubscriptionState::Retrying { attempt: 5.., .. })).await;
    assert_eq!(status.state, SubscriptionState::Retrying { attempt: 5, transient: true });
    let error = status.last_error.expect("the error is shown");
    assert!(error.starts_with("reading events: event store backend: connection reset"), "{error}");
    assert_eq!(status.failed_position, None, "no event is to blame");
    subs.wait_for("h", GlobalPosition(1)).await.expect("then it proceeds");
    let status = status_when(&subs, "h", |s| s.state == SubscriptionState::Live).await;
    assert_eq!((recorder.seen(), status.transient_failures, status.failing_since), (vec![1], 30, None));
    subs.shutdown().await;
}

/// Bookkeeping in memory whose lease checks, checkpoint loads and dead-letter
/// removals fail a set number of times.
#[derive(Default)]
struct FlakyBookkeeping {
    inner: MemorySubscriptionStore,
    failing_leases: AtomicUsize,
    failing_loads: AtomicUsize,
    failing_removals: AtomicUsize,
}

fn flaky(left: &AtomicUsize) -> Result<(), StoreError> {
    match left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => Err(StoreError::backend(ConnectionReset)),
        Err(_) => Ok(()),
    }
}

#[async_trait]
impl SubscriptionStore for FlakyBookkeeping {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<GlobalPosition>, StoreError> {
        flaky(&self.failing_loads)?;
        self.inner.load_checkpoint(subscription).await
    }
    async fn save_checkpoint(&self, subscription: &str, position: GlobalPosition) -> Result<(), StoreError> {
        self.inner.save_checkpoint(subscription, position).await
    }
    async fn delete_checkpoint(&self, subscription: &str) -> Result<(), StoreError> {
        self.inner.delete_checkpoint(subscription).await
    }
    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.inner.add_dead_letter(letter).await
    }
    async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(subscription).await
    }
    async fn remove_dead_letter(&self, subscription: &str, event_id: uuid::Uuid) -> Result<bool, StoreError> {
        flaky(&self.failing_removals)?;
        self.inner.remove_dead_letter(subscription, event_id).await
    }
    async fn clear_dead_letters(&self, subscription: &str) -> Result<u64, StoreError> {
        self.inner.clear_dead_letters(subscription).await
    }
    async fn commit_replayed(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        event_id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        self.inner.commit_replayed(manager, changes, event_id).await
    }
    async fn load_instance(&self, manager: &str, instance: &str) -> Result<Option<String>, StoreError> {
        self.inner.load_instance(manager, instance).await
    }
    async fn commit_instances(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        checkpoint: GlobalPosition,
    ) -> Result<(), StoreError> {
        self.inner.commit_instances(manager, changes, checkpoint).await
    }
    async fn reset_instances(&self, manager: &str) -> Result<(), StoreError> {
        self.inner.reset_instances(manager).await
    }
    async fn try_lease(&self, subscription: &str) -> Result<Option<Lease>, StoreError> {
        flaky(&self.failing_leases)?;
        self.inner.try_lease(subscription).await
    }
    async fn report_failure(&self, report: FailureReport) -> Result<(), StoreError> {
        self.inner.report_failure(report).await
    }
    async fn clear_failure(&self, subscription: &str) -> Result<(), StoreError> {
        self.inner.clear_failure(subscription).await
    }
    async fn failures(&self, subscription: Option<&str>) -> Result<Vec<FailureReport>, StoreError> {
        self.inner.failures(subscription).await
    }
}

#[tokio::test(start_paused = true)]
async fn failing_lease_checks_and_checkpoint_loads_are_retried_for_ever_and_shown() {
    let app = app();
    open(&app, "a", 1).await;
    let store = Arc::new(FlakyBookkeeping::default());
    store.failing_leases.store(8, Ordering::SeqCst);
    store.failing_loads.store(8, Ordering::SeqCst);
    let recorder = Recorder::default();
    let subs = Subscriptions::builder(&app, store.clone())
        .handler("h", recorder.clone(), SubscriptionOptions::new())
        .start()
        .expect("start");
    let mut shown = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while recorder.seen().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never delivered; shown: {shown:?}");
        let status = subs.status_of("h").expect("status");
        if let (SubscriptionState::Retrying { transient: true, .. }, Some(error)) = (&status.state, &status.last_error)
        {
            let what = error.split(':').next().unwrap_or_default().to_owned();
            if !shown.contains(&what) {
                shown.push(what);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shown, ["taking the lease", "loading the checkpoint"]);
    let status = status_when(&subs, "h", |s| s.state == SubscriptionState::Live).await;
    assert_eq!(status.transient_failures, 16);
    assert!(store.failures(None).await.expect("reports").is_empty(), "the report is removed once it proceeds");
    subs.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_process_manager_command_failing_transiently_is_retried_until_it_goes_through() {
    let store = Arc::new(FaultyStore::default());
    let app = Application::builder(store.clone()).router(router(AggregateConfig::new()).command::<Refund>()).build();
    open(&app, "src", 1000).await;
    open(&app, "src-savings", 1).await;
    deposit(&app, "src", 100).await;
    // The sweeper's withdrawal meets the store away twenty times; its `on_error`
    // says Fail to anything but a refusal by the domain.
    store.failing_appends.store(20, Ordering::SeqCst);
    let subs = Subscriptions::builder(&app, bookkeeping())
        .process_manager("sweeper", Sweeper, SubscriptionOptions::new())
        .start()
        .expect("start");
    let status = status_when(&subs, "sweeper", |s| s.transient_failures >= 20 && s.failing_since.is_none()).await;
    assert!(!matches!(status.state, SubscriptionState::Stopped));
    let error = status.last_error.expect("the last failure stays visible");
    // A failed append leaves its outcome unknown: retried with the same command id.
    assert!(error.starts_with("Withdraw failed: the outcome of command"), "{error}");
    assert!(error.contains("connection reset"), "{error}");
    subs.wait_for("sweeper", head(&app).await).await.expect("wait");
    assert_eq!((balance(&app, "src").await, balance(&app, "src-savings").await), (1050, 51));
    assert_eq!((status.transient_failures, status.deterministic_failures), (20, 0));
    subs.shutdown().await;
}
