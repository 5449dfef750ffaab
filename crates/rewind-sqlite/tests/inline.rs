//! Inline projectors: written in the appends' own transaction, with the
//! subscription as the fallback, and never applying an event twice.

use rewind::{
    Consumer, ErrorPolicy, EventFilter, EventStore, ExpectedVersion, GlobalPosition, StoreError, SubscriptionOptions,
    SubscriptionStore, Subscriptions,
};
use rewind_sqlite::{SqliteProjector, SqliteReadModel, SqliteStore, SqliteSubscriptionStore};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

mod common;

use common::{StreamCounts, counted};

fn counts(model: &SqliteReadModel) -> HashMap<String, i64> {
    model
        .lookup(|conn| {
            let mut statement = conn.prepare("SELECT stream_id, n FROM stream_counts")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .expect("counts")
}

fn checkpoint(model: &SqliteReadModel, name: &str) -> Option<i64> {
    use rusqlite::OptionalExtension;
    model
        .lookup(|conn| {
            conn.query_row("SELECT position FROM rewind_projections WHERE name = ?1", [name], |r| r.get(0)).optional()
        })
        .expect("checkpoint")
}

struct Setup {
    store: Arc<SqliteStore>,
    app: rewind::Application,
    model: SqliteReadModel,
    bookkeeping: Arc<SqliteSubscriptionStore>,
}

async fn open(path: &Path) -> Setup {
    let store = Arc::new(SqliteStore::open(path).await.expect("store"));
    let model = SqliteReadModel::sharing(store.clone()).await.expect("model");
    let bookkeeping = Arc::new(SqliteSubscriptionStore::open(&model).await.expect("bookkeeping"));
    let app = rewind::Application::builder(store.clone()).build();
    Setup { store, app, model, bookkeeping }
}

async fn inline_projector(
    setup: &Setup,
    poison: Option<i64>,
    filter: EventFilter,
) -> Arc<SqliteProjector<StreamCounts>> {
    let projector = SqliteProjector::new("counts", StreamCounts { poison }, &setup.model).await.expect("projector");
    Arc::new(projector.inline(filter).expect("inline"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_is_projected_in_its_own_transaction() {
    let dir = tempfile::tempdir().expect("dir");
    let setup = open(&dir.path().join("bank.db")).await;
    let projector = inline_projector(&setup, None, EventFilter::all()).await;
    // No subscription runs: only the writer can have projected these.
    for i in 0..5 {
        setup
            .store
            .append(&format!("s-{}", i % 2), ExpectedVersion::Any, vec![counted(i), counted(i)])
            .await
            .expect("append");
    }
    let counts = counts(&setup.model);
    assert_eq!((counts["s-0"], counts["s-1"]), (6, 4));
    assert_eq!(checkpoint(&setup.model, "counts"), Some(10));
    assert_eq!(projector.covered(), Some(GlobalPosition(10)), "announced once durable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_and_its_subscription_apply_each_event_once() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    let setup = open(&path).await;
    // Events from before the projector existed: the subscription must catch up on
    // them while new appends arrive, and the writer must not project past a gap.
    for i in 0..300 {
        setup.store.append(&format!("s-{}", i % 10), ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    let projector = inline_projector(&setup, None, EventFilter::all()).await;
    let subs = Subscriptions::builder(&setup.app, setup.bookkeeping.clone())
        .consumer("counts", projector.clone(), SubscriptionOptions::new().batch_size(7))
        .start()
        .expect("start");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = setup.store.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    store
                        .append(&format!("s-{}", (w + i) % 10), ExpectedVersion::Any, vec![counted(i)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    subs.wait_for("counts", GlobalPosition(1_100)).await.expect("caught up");
    // Once caught up, the writer projects again: one more append is covered inline.
    setup.store.append("s-0", ExpectedVersion::Any, vec![counted(0)]).await.expect("append");
    assert_eq!(projector.covered(), Some(GlobalPosition(1_101)), "the writer took over after the catch-up");
    subs.shutdown().await;
    let counts = counts(&setup.model);
    assert_eq!(counts.values().sum::<i64>(), 1_101, "every event exactly once");
    assert!(counts.values().all(|n| *n == 110 || *n == 111), "{counts:?}");
    assert_eq!(checkpoint(&setup.model, "counts"), Some(1_101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_inline_projection_leaves_the_event_to_its_subscription() {
    let dir = tempfile::tempdir().expect("dir");
    let setup = open(&dir.path().join("bank.db")).await;
    let projector = inline_projector(&setup, Some(13), EventFilter::all()).await;
    let subs = Subscriptions::builder(&setup.app, setup.bookkeeping.clone())
        .consumer("counts", projector.clone(), SubscriptionOptions::new().on_error(ErrorPolicy::Skip))
        .start()
        .expect("start");
    for i in 10..20 {
        // The poisoned event (n = 13, position 4) still commits.
        setup.store.append("s", ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    subs.wait_for("counts", GlobalPosition(10)).await.expect("past the poison");
    assert_eq!(counts(&setup.model)["s"], 9, "all but the poisoned event, each once");
    let letters = setup.bookkeeping.dead_letters(Some("counts")).await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event.position, letters[0].error.as_str()), (GlobalPosition(4), "poisoned event 4"));
    setup.store.append("s", ExpectedVersion::Any, vec![counted(20)]).await.expect("append");
    assert_eq!(projector.covered(), Some(GlobalPosition(11)), "inline again once the subscription moved past");
    subs.shutdown().await;
}

#[tokio::test]
async fn the_filter_chooses_what_is_projected_and_the_checkpoint_passes_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let setup = open(&dir.path().join("bank.db")).await;
    let projector =
        inline_projector(&setup, None, EventFilter { stream_prefix: Some("a-".into()), event_types: Vec::new() }).await;
    setup.store.append("a-1", ExpectedVersion::Any, vec![counted(1)]).await.expect("append");
    setup.store.append("b-1", ExpectedVersion::Any, vec![counted(2), counted(3)]).await.expect("append");
    setup.store.append("a-2", ExpectedVersion::Any, vec![counted(4)]).await.expect("append");
    let counts = counts(&setup.model);
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!((counts["a-1"], counts["a-2"]), (1, 1));
    assert_eq!(projector.covered(), Some(GlobalPosition(4)));
}

#[tokio::test]
async fn inline_needs_the_event_store_file() {
    let dir = tempfile::tempdir().expect("dir");
    let own = SqliteReadModel::open(dir.path().join("read.db")).await.expect("model");
    assert!(!own.is_sharing());
    let projector = SqliteProjector::new("counts", StreamCounts { poison: None }, &own).await.expect("projector");
    match projector.inline(EventFilter::all()) {
        Err(StoreError::Invalid(message)) => assert!(message.contains("counts"), "{message}"),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("a model with a file of its own cannot be written inline"),
    }
}

/// A consumer without an inline path reports nothing covered.
#[tokio::test]
async fn a_projector_not_inline_covers_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let setup = open(&dir.path().join("bank.db")).await;
    let projector =
        SqliteProjector::new("counts", StreamCounts { poison: None }, &setup.model).await.expect("projector");
    setup.store.append("s", ExpectedVersion::Any, vec![counted(1)]).await.expect("append");
    assert_eq!(projector.covered(), None);
    assert!(counts(&setup.model).is_empty(), "nothing projected without a subscription");
}

/// A rebuild of an inline projector re-projects the whole history, whatever the
/// writer projected inline before it, and events appended while it catches up or
/// after it are projected exactly once: the tables end as a fresh projection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_inline_projector_equals_a_fresh_projection() {
    let dir = tempfile::tempdir().expect("dir");
    let setup = open(&dir.path().join("bank.db")).await;
    let projector = inline_projector(&setup, None, EventFilter::all()).await;
    // The same events projected once, from the origin, into a file of its own.
    let fresh_model = SqliteReadModel::open(dir.path().join("fresh.db")).await.expect("fresh model");
    let fresh = SqliteProjector::new("fresh", StreamCounts { poison: None }, &fresh_model).await.expect("fresh");
    let subs = Subscriptions::builder(&setup.app, setup.bookkeeping.clone())
        .consumer("counts", projector.clone(), SubscriptionOptions::new().batch_size(7))
        .consumer("fresh", Arc::new(fresh), SubscriptionOptions::new())
        .start()
        .expect("start");
    for i in 0..200 {
        setup.store.append(&format!("s-{}", i % 10), ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    assert_eq!(projector.covered(), Some(GlobalPosition(200)), "written inline before the rebuild");

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = setup.store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .append(&format!("s-{}", (w + i) % 10), ExpectedVersion::Any, vec![counted(i)])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    subs.rebuild("counts").await.expect("rebuild");
    for writer in writers {
        writer.await.expect("writer");
    }
    for i in 0..10 {
        setup.store.append(&format!("s-{i}"), ExpectedVersion::Any, vec![counted(i)]).await.expect("append");
    }
    let head = setup.store.head_position().await.expect("head");
    assert_eq!(head, GlobalPosition(310));
    subs.wait_for("counts", head).await.expect("rebuilt");
    subs.wait_for("fresh", head).await.expect("fresh");
    setup.store.append("s-0", ExpectedVersion::Any, vec![counted(0)]).await.expect("append");
    assert_eq!(projector.covered(), Some(GlobalPosition(311)), "the writer takes over once caught up");
    subs.wait_for("fresh", GlobalPosition(311)).await.expect("fresh");
    subs.shutdown().await;

    let (rebuilt, fresh) = (counts(&setup.model), counts(&fresh_model));
    assert_eq!(rebuilt.values().sum::<i64>(), 311, "every event exactly once: {rebuilt:?}");
    assert_eq!(rebuilt, fresh);
    assert_eq!(checkpoint(&setup.model, "counts"), Some(311));
}
