//! The read side on PostgreSQL: bookkeeping conformance, projectors that apply each
//! event exactly once, failure isolation, rebuilds, and one active consumer across
//! processes with failover when the active one is killed.

mod common;

use common::{database_url, fresh_schema, open};
use rewind::{
    Application, ConsumerError, ErrorPolicy, EventStore, ExpectedVersion, GlobalPosition, Metadata, NewEvent,
    RecordedEvent, SubscriptionOptions, SubscriptionStore, Subscriptions,
};
use rewind_postgres::{PostgresProjection, PostgresProjector, PostgresReadModel, PostgresSubscriptionStore};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio_postgres::Transaction;

async fn make_bookkeeping() -> Option<(PostgresSubscriptionStore, ())> {
    let url = database_url("subscription store conformance")?;
    let model = PostgresReadModel::connect(&url, &fresh_schema()).await.expect("read model");
    Some((PostgresSubscriptionStore::new(&model), ()))
}

rewind::subscription_store_conformance!(make_bookkeeping);

/// Counts events per stream with a plain increment, so applying one twice shows.
struct StreamCounts {
    poison: Option<i64>,
}

#[async_trait::async_trait]
impl PostgresProjection for StreamCounts {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("CREATE TABLE IF NOT EXISTS stream_counts (stream_id text PRIMARY KEY, n bigint NOT NULL)")
            .await
    }
    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let value: serde_json::Value = serde_json::from_str(&event.data)?;
        if self.poison.is_some() && value["n"].as_i64() == self.poison {
            // A real SQL failure, which aborts the transaction.
            tx.batch_execute("SELECT 1 / 0").await?;
        }
        tx.execute(
            "INSERT INTO stream_counts VALUES ($1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = stream_counts.n + 1",
            &[&event.stream_id],
        )
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute("DELETE FROM stream_counts").await
    }
}

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        event_type: "Counted".into(),
        data: format!(r#"{{"n":{n}}}"#),
        metadata: Metadata::default(),
    }
}

async fn counts(model: &PostgresReadModel) -> HashMap<String, i64> {
    let client = model.client().await.expect("client");
    let rows = client.query("SELECT stream_id, n FROM stream_counts", &[]).await.expect("counts");
    rows.into_iter().map(|row| (row.get(0), row.get(1))).collect()
}

struct Setup {
    app: Application,
    model: PostgresReadModel,
    bookkeeping: Arc<PostgresSubscriptionStore>,
}

async fn setup(url: &str, schema: &str) -> Setup {
    let store = open(url, schema).await;
    let model = PostgresReadModel::connect(url, schema).await.expect("read model");
    let bookkeeping = Arc::new(PostgresSubscriptionStore::new(&model));
    Setup { app: Application::builder(store).build(), model, bookkeeping }
}

async fn seed(app: &Application, streams: usize, per_stream: usize) {
    for s in 0..streams {
        let events = (0..per_stream).map(|i| event(i as i64)).collect();
        app.store().append(&format!("s-{s}"), ExpectedVersion::Any, events).await.expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_applies_every_event_once_isolates_failures_and_rebuilds() {
    let Some(url) = database_url("projector") else { return };
    let Setup { app, model, bookkeeping } = setup(&url, &fresh_schema()).await;
    for i in 0..40 {
        app.store().append(&format!("s-{}", i % 4), ExpectedVersion::Any, vec![event(i)]).await.expect("append");
    }
    let projector =
        PostgresProjector::new("counts", StreamCounts { poison: Some(17) }, &model).await.expect("projector");
    let subs = Subscriptions::builder(&app, bookkeeping.clone())
        .consumer("counts", Arc::new(projector), SubscriptionOptions::new().batch_size(16).on_error(ErrorPolicy::Skip))
        .start()
        .expect("start");
    subs.wait_for("counts", GlobalPosition(40)).await.expect("caught up");
    let live = counts(&model).await;
    assert_eq!(live.values().sum::<i64>(), 39, "all but the poisoned event, each once");
    assert_eq!(live["s-1"], 9, "event 18 (n = 17, stream s-1) skipped");
    let letters = bookkeeping.dead_letters(Some("counts")).await.expect("letters");
    assert_eq!(letters.iter().map(|l| l.event.position).collect::<Vec<_>>(), [GlobalPosition(18)]);
    assert!(letters[0].error.contains("division by zero"), "{}", letters[0].error);

    app.store().append("s-0", ExpectedVersion::Any, vec![event(1)]).await.expect("append");
    subs.wait_for("counts", GlobalPosition(41)).await.expect("live");
    assert_eq!(counts(&model).await["s-0"], 11);
    subs.rebuild("counts").await.expect("rebuild");
    subs.wait_for("counts", GlobalPosition(41)).await.expect("rebuilt");
    let rebuilt = counts(&model).await;
    assert_eq!(rebuilt.values().sum::<i64>(), 40, "the rebuild skips the poisoned event again");
    subs.shutdown().await;
}

const CHILD_ENV: &str = "REWIND_PG_FAILOVER_CHILD";
const STREAMS: usize = 10;
const PER_STREAM: usize = 400;

#[test]
#[ignore = "a child process of one_projector_is_active_across_processes_and_fails_over; does nothing alone"]
fn failover_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let Some((url, schema)) = spec.split_once('|') else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let Setup { app, model, bookkeeping } = setup(url, schema).await;
        let projector =
            PostgresProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
        let options = SubscriptionOptions::new().batch_size(10).lease_retry(Duration::from_millis(200));
        let subs = Subscriptions::builder(&app, bookkeeping)
            .consumer("counts", Arc::new(projector), options)
            .start()
            .expect("start");
        let total = (STREAMS * PER_STREAM) as u64;
        let mut progress = subs.status_of("counts").expect("status").position;
        while progress.0 < total {
            subs.wait_for("counts", progress.next()).await.expect("wait");
            progress = subs.status_of("counts").expect("status").position;
            println!("PROGRESS {}", progress.0);
        }
        println!("DONE");
        std::future::pending::<()>().await;
    });
}

fn spawn_child(url: &str, schema: &str, index: usize, lines: mpsc::Sender<(usize, String)>) -> Child {
    spawn("failover_child", CHILD_ENV, url, schema, index, lines)
}

/// Runs this test binary's ignored test `test` as a child process, its lines sent to `lines`.
fn spawn(test: &str, env: &str, url: &str, schema: &str, index: usize, lines: mpsc::Sender<(usize, String)>) -> Child {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--nocapture", "--include-ignored", "--test-threads=1"])
        .env(env, format!("{url}|{schema}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send((index, line)).is_err() {
                return;
            }
        }
    });
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projector_is_active_across_processes_and_fails_over() {
    let Some(url) = database_url("failover") else { return };
    let schema = fresh_schema();
    let Setup { app, model, .. } = setup(&url, &schema).await;
    seed(&app, STREAMS, PER_STREAM).await;
    let (send, lines) = mpsc::channel();
    let mut children = [spawn_child(&url, &schema, 0, send.clone()), spawn_child(&url, &schema, 1, send)];
    let deadline = Instant::now() + Duration::from_secs(120);
    let next = |deadline: Instant| {
        lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("child output in time")
    };

    // Whoever prints progress holds the lease; the other must stay silent.
    let mut active = None;
    let mut seen = 0;
    while seen < 20 {
        let (index, line) = next(deadline);
        if line.starts_with("PROGRESS") {
            assert!(active.is_none_or(|a| a == index), "two processes projected at once");
            active = Some(index);
            seen += 1;
        }
        assert_ne!(line, "DONE", "the projection finished before the kill; make it longer");
    }
    let killed = active.expect("one child active");
    children[killed].kill().expect("kill -9");
    children[killed].wait().expect("reap");
    let killed_at = Instant::now();

    let survivor = 1 - killed;
    let mut took_over = None;
    loop {
        let (index, line) = next(deadline);
        if index != survivor {
            continue; // lines the killed child printed before it died
        }
        if line.starts_with("PROGRESS") && took_over.is_none() {
            took_over = Some(killed_at.elapsed());
        }
        if line == "DONE" {
            break;
        }
    }
    let took_over = took_over.expect("the survivor made progress");
    assert!(took_over < Duration::from_secs(10), "took over after {took_over:?}");
    children[survivor].kill().expect("kill");
    children[survivor].wait().expect("reap");

    let counts = counts(&model).await;
    assert_eq!(counts.len(), STREAMS);
    for (stream, n) in counts {
        assert_eq!(n, PER_STREAM as i64, "{stream}: no event applied twice, none missed");
    }
}

/// A one-command aggregate so the test can dispatch.
#[derive(Debug, Default, Clone)]
struct Tally;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum TallyEvent {
    Counted { n: i64 },
}
impl rewind::Event for TallyEvent {}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Never;
impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
impl std::error::Error for Never {}

impl rewind::Aggregate for Tally {
    const NAME: &'static str = "tally";
    type Event = TallyEvent;
    type Error = Never;
    fn apply(&mut self, _: &TallyEvent) {}
}

#[derive(Debug)]
struct Count(String);
impl rewind::Command for Count {
    type Aggregate = Tally;
    fn aggregate_id(&self) -> String {
        self.0.clone()
    }
}
impl rewind::Execute<Count> for Tally {
    fn execute(&self, _: &Count) -> Result<Vec<TallyEvent>, Never> {
        Ok(vec![TallyEvent::Counted { n: 1 }])
    }
}

/// A process whose projector stands by (another process holds the lease) still gets
/// strongly consistent dispatches: it waits on the persisted checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strong_consistency_waits_for_a_projector_running_in_another_process() {
    let Some(url) = database_url("strong consistency across processes") else { return };
    let schema = fresh_schema();
    let mut running = Vec::new();
    for _ in 0..2 {
        let Setup { app, model, bookkeeping } = setup(&url, &schema).await;
        let app =
            Application::builder_shared(app.store().clone()).router(rewind::Router::new().command::<Count>()).build();
        let projector =
            PostgresProjector::new("counts", StreamCounts { poison: None }, &model).await.expect("projector");
        let options = SubscriptionOptions::new().strong().lease_retry(Duration::from_millis(100));
        let subs = Subscriptions::builder(&app, bookkeeping)
            .consumer("counts", Arc::new(projector), options)
            .start()
            .expect("start");
        // Let the first process take the lease before the second starts.
        while subs.status_of("counts").expect("status").state == rewind::SubscriptionState::Standby
            && running.is_empty()
        {
            tokio::task::yield_now().await;
        }
        running.push((app, model, subs));
    }
    let (app, model, subs) = &running[1];
    assert_eq!(subs.status_of("counts").expect("status").state, rewind::SubscriptionState::Standby);
    for i in 1..=5 {
        app.dispatch_with(
            Count(format!("t-{i}")),
            rewind::DispatchOptions::new().consistency(rewind::Consistency::Strong),
        )
        .await
        .expect("dispatch");
        assert_eq!(
            counts(model).await.get(&format!("t-{i}")),
            Some(&1),
            "projected by the other process before the answer"
        );
    }
    for (_, _, subs) in &running {
        subs.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_projector_keeps_its_promises() {
    let Some(url) = database_url("partitioned projector") else { return };
    let schema = fresh_schema();
    let Setup { app, model, bookkeeping } = setup(&url, &schema).await;
    // Another process's bookkeeping: its own connections, so its own leases.
    let elsewhere = PostgresReadModel::connect(&url, &schema).await.expect("read model");
    let other: Arc<dyn SubscriptionStore> = Arc::new(PostgresSubscriptionStore::new(&elsewhere));
    rewind::partition_conformance::partitioned_projectors(&app, Arc::new(model), [bookkeeping, other]).await;
}

const PARTITION_CHILD_ENV: &str = "REWIND_PG_PARTITION_CHILD";

/// Events per stream, by portable increments, so it can run in partitions.
struct PortableCounts;

impl rewind::Projector for PortableCounts {
    fn name(&self) -> &str {
        "portable_counts"
    }
    fn schema(&self, _: rewind::sql::Dialect) -> &'static str {
        "CREATE TABLE IF NOT EXISTS portable_counts (stream_id text PRIMARY KEY, n bigint NOT NULL)"
    }
    fn tables(&self) -> &'static [&'static str] {
        &["portable_counts"]
    }
    fn project(&self, event: &RecordedEvent, sql: &mut rewind::sql::Sql) -> Result<(), ConsumerError> {
        sql.execute(
            "INSERT INTO portable_counts VALUES ($1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = portable_counts.n + 1",
            (event.stream_id.as_str(),),
        );
        Ok(())
    }
}

#[test]
#[ignore = "a child process of partitions_spread_over_processes_and_fail_over; does nothing alone"]
fn partition_child() {
    let Ok(spec) = std::env::var(PARTITION_CHILD_ENV) else { return };
    let Some((url, schema)) = spec.split_once('|') else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let Setup { app, model, bookkeeping } = setup(url, schema).await;
        let options = SubscriptionOptions::new().concurrency(4).batch_size(5).lease_retry(Duration::from_millis(100));
        let subs = Subscriptions::builder(&app, bookkeeping)
            .read_model(Arc::new(model))
            .projector_with(PortableCounts, options)
            .await
            .expect("partitions")
            .start()
            .expect("start");
        // Reports how many partitions this process runs, for the parent to watch.
        loop {
            let active = subs.status().iter().filter(|s| s.state != rewind::SubscriptionState::Standby).count();
            println!("ACTIVE {active}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

async fn portable_counts(model: &PostgresReadModel) -> HashMap<String, i64> {
    let client = model.client().await.expect("client");
    let rows = client.query("SELECT stream_id, n FROM portable_counts", &[]).await.unwrap_or_default();
    rows.into_iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_spread_over_processes_and_fail_over() {
    let Some(url) = database_url("partitions over processes") else { return };
    let schema = fresh_schema();
    let Setup { app, model, .. } = setup(&url, &schema).await;
    seed(&app, STREAMS, 20).await;
    let mut per_stream = 20;
    let (send, lines) = mpsc::channel();
    let mut children = [
        spawn("partition_child", PARTITION_CHILD_ENV, &url, &schema, 0, send.clone()),
        spawn("partition_child", PARTITION_CHILD_ENV, &url, &schema, 1, send),
    ];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut active = [0usize; 2];
    // Wait, appending as the children report, until each runs 2 of the 4 partitions.
    while active != [2, 2] {
        let (index, line) =
            lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("child output in time");
        if let Some(n) = line.strip_prefix("ACTIVE ") {
            active[index] = n.parse().expect("a count");
            seed(&app, STREAMS, 1).await;
            per_stream += 1;
        }
    }
    children[0].kill().expect("kill -9");
    children[0].wait().expect("reap");
    let killed_at = Instant::now();
    loop {
        let (index, line) =
            lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("survivor output in time");
        if index == 1 && line == "ACTIVE 4" {
            break;
        }
        if index == 1 {
            seed(&app, STREAMS, 1).await;
            per_stream += 1;
        }
    }
    let took_over = killed_at.elapsed();
    assert!(took_over < Duration::from_secs(15), "took over after {took_over:?}");
    let total = (STREAMS * per_stream) as i64;
    while portable_counts(&model).await.values().sum::<i64>() < total {
        assert!(Instant::now() < deadline, "the survivor did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    children[1].kill().expect("kill");
    children[1].wait().expect("reap");
    let counts = portable_counts(&model).await;
    assert_eq!(counts.len(), STREAMS);
    for (stream, n) in counts {
        assert_eq!(n, per_stream as i64, "{stream}: no event applied twice, none missed");
    }
}
