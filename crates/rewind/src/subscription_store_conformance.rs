//! The conformance suite for [`SubscriptionStore`]: checkpoints, dead letters,
//! process manager state, leases and failure reports, written once for every backend.
//!
//! ```ignore
//! async fn make_bookkeeping() -> Option<(MyBookkeeping, ())> { Some((MyBookkeeping::open_fresh().await, ())) }
//! // The second value is a guard that must outlive the store (a temporary directory).
//! rewind::subscription_store_conformance!(make_bookkeeping);
//! ```

use crate::envelope::{Metadata, RecordedEvent};
use crate::stream::{GlobalPosition, StreamVersion};
use crate::subscription_store::{DeadLetter, FailureReport, FailureState, InstanceChange, SubscriptionStore};
use std::sync::Arc;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per check, like [`event_store_conformance!`](crate::event_store_conformance).
#[macro_export]
macro_rules! subscription_store_conformance {
    ($make:path) => {
        $crate::subscription_store_conformance!(@tests $make;
            checkpoints_start_empty_and_never_move_back,
            deleting_a_checkpoint_starts_over,
            dead_letters_round_trip_in_event_order,
            clearing_dead_letters_forgets_one_subscription,
            a_replayed_letter_commits_its_changes_once,
            instances_commit_with_the_checkpoint,
            resetting_instances_forgets_the_manager,
            leases_are_exclusive_until_dropped,
            failure_reports_are_replaced_and_cleared
        );
    };
    (@tests $make:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                match $make().await {
                    Some((store, _guard)) => $crate::subscription_store_conformance::$name(::std::sync::Arc::new(store)).await,
                    None => eprintln!("skipped {}: store not configured", stringify!($name)),
                }
            }
        )*
    };
}

fn event(position: u64) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::new_v4(),
        stream_id: "s-ü".into(),
        stream_version: StreamVersion(position),
        position: GlobalPosition(position),
        event_type: "Happened".into(),
        data: r#"{"n":1}"#.into(),
        metadata: Metadata { causation_id: Some(Uuid::new_v4()), ..Default::default() },
        created_at: chrono::DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid time"),
    }
}

/// None at first; saving an older position keeps the newer one.
pub async fn checkpoints_start_empty_and_never_move_back<S: SubscriptionStore>(store: Arc<S>) {
    assert_eq!(store.load_checkpoint("h").await.expect("load"), None);
    store.save_checkpoint("h", GlobalPosition(10)).await.expect("save");
    store.save_checkpoint("h", GlobalPosition(4)).await.expect("save older");
    assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(GlobalPosition(10)));
    store.save_checkpoint("h", GlobalPosition(12)).await.expect("save newer");
    assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(GlobalPosition(12)));
    assert_eq!(store.load_checkpoint("other").await.expect("load"), None);
}

/// A deleted checkpoint reads as never run.
pub async fn deleting_a_checkpoint_starts_over<S: SubscriptionStore>(store: Arc<S>) {
    store.save_checkpoint("h", GlobalPosition(3)).await.expect("save");
    store.delete_checkpoint("h").await.expect("delete");
    assert_eq!(store.load_checkpoint("h").await.expect("load"), None);
    store.save_checkpoint("h", GlobalPosition(1)).await.expect("save after delete");
    assert_eq!(store.load_checkpoint("h").await.expect("load"), Some(GlobalPosition(1)));
}

/// Dead letters keep the whole event and come back in event order, per subscription.
pub async fn dead_letters_round_trip_in_event_order<S: SubscriptionStore>(store: Arc<S>) {
    let letter = |subscription: &str, position| DeadLetter {
        subscription: subscription.into(),
        event: event(position),
        error: format!("failed at {position}"),
        failed_at: chrono::DateTime::from_timestamp_micros(1_800_000_000_000_000).expect("valid time"),
    };
    let (late, early, other) = (letter("a", 9), letter("a", 2), letter("b", 5));
    for l in [&late, &early, &other] {
        store.add_dead_letter(l.clone()).await.expect("add");
    }
    assert_eq!(store.dead_letters(Some("a")).await.expect("list"), vec![early.clone(), late.clone()]);
    assert_eq!(store.dead_letters(None).await.expect("list").len(), 3);
    assert!(store.remove_dead_letter("a", early.event.event_id).await.expect("remove"));
    assert!(!store.remove_dead_letter("a", early.event.event_id).await.expect("remove again"));
    assert!(!store.remove_dead_letter("a", other.event.event_id).await.expect("wrong subscription"));
    assert_eq!(store.dead_letters(Some("a")).await.expect("list"), vec![late]);
}

fn letter(subscription: &str, position: u64) -> DeadLetter {
    DeadLetter {
        subscription: subscription.into(),
        event: event(position),
        error: format!("failed at {position}"),
        failed_at: chrono::DateTime::from_timestamp_micros(1_800_000_000_000_000).expect("valid time"),
    }
}

/// Clearing removes one subscription's letters, all of them, and says how many.
pub async fn clearing_dead_letters_forgets_one_subscription<S: SubscriptionStore>(store: Arc<S>) {
    let other = letter("b", 5);
    for l in [letter("a", 9), letter("a", 2), other.clone()] {
        store.add_dead_letter(l).await.expect("add");
    }
    assert_eq!(store.clear_dead_letters("a").await.expect("clear"), 2);
    assert_eq!(store.dead_letters(None).await.expect("list"), vec![other]);
    assert_eq!(store.clear_dead_letters("a").await.expect("clear again"), 0);
}

/// A replay's instance changes land with the removal of its letter, once; the
/// checkpoint stays where it was.
pub async fn a_replayed_letter_commits_its_changes_once<S: SubscriptionStore>(store: Arc<S>) {
    let (replayed, others) = (letter("pm", 4), letter("other", 5));
    store.add_dead_letter(replayed.clone()).await.expect("add");
    store.add_dead_letter(others.clone()).await.expect("add");
    let save = |n: u32| vec![InstanceChange::Save("t".into(), format!(r#"{{"n":{n}}}"#))];
    store.commit_instances("pm", save(1), GlobalPosition(9)).await.expect("commit");
    let id = replayed.event.event_id;
    assert!(store.commit_replayed("pm", save(2), id).await.expect("replay"));
    assert_eq!(json(store.load_instance("pm", "t").await.expect("load")), Some(serde_json::json!({"n": 2})));
    assert_eq!(store.dead_letters(Some("pm")).await.expect("list"), Vec::new());
    assert_eq!(store.load_checkpoint("pm").await.expect("load"), Some(GlobalPosition(9)));

    assert!(!store.commit_replayed("pm", save(3), id).await.expect("replay again"), "the letter is gone");
    assert_eq!(json(store.load_instance("pm", "t").await.expect("load")), Some(serde_json::json!({"n": 2})));
    let stop = vec![InstanceChange::Delete("t".into())];
    assert!(!store.commit_replayed("pm", stop, others.event.event_id).await.expect("another's letter"));
    assert!(store.load_instance("pm", "t").await.expect("load").is_some(), "nothing written without the letter");
    assert_eq!(store.dead_letters(Some("other")).await.expect("list"), vec![others]);
}

/// States are JSON: a backend may normalise the text (PostgreSQL's `jsonb` does).
fn json(state: Option<String>) -> Option<serde_json::Value> {
    state.map(|s| serde_json::from_str(&s).expect("state is JSON"))
}

/// Saves, deletes and the checkpoint land together.
pub async fn instances_commit_with_the_checkpoint<S: SubscriptionStore>(store: Arc<S>) {
    assert_eq!(store.load_instance("pm", "t1").await.expect("load"), None);
    let saves =
        vec![InstanceChange::Save("t1".into(), r#"{"a":1}"#.into()), InstanceChange::Save("t2".into(), "{}".into())];
    store.commit_instances("pm", saves, GlobalPosition(5)).await.expect("commit");
    assert_eq!(json(store.load_instance("pm", "t1").await.expect("load")), Some(serde_json::json!({"a": 1})));
    assert_eq!(store.load_checkpoint("pm").await.expect("load"), Some(GlobalPosition(5)));
    let changes = vec![InstanceChange::Delete("t2".into()), InstanceChange::Save("t1".into(), r#"{"a":2}"#.into())];
    store.commit_instances("pm", changes, GlobalPosition(7)).await.expect("commit");
    assert_eq!(json(store.load_instance("pm", "t1").await.expect("load")), Some(serde_json::json!({"a": 2})));
    assert_eq!(store.load_instance("pm", "t2").await.expect("load"), None);
    assert_eq!(store.load_instance("other", "t1").await.expect("load"), None, "instances belong to their manager");
    store.commit_instances("pm", Vec::new(), GlobalPosition(6)).await.expect("commit older");
    assert_eq!(store.load_checkpoint("pm").await.expect("load"), Some(GlobalPosition(7)));
}

/// A reset forgets instances and checkpoint of one manager only.
pub async fn resetting_instances_forgets_the_manager<S: SubscriptionStore>(store: Arc<S>) {
    store
        .commit_instances("pm", vec![InstanceChange::Save("t".into(), "{}".into())], GlobalPosition(3))
        .await
        .expect("commit");
    store
        .commit_instances("other", vec![InstanceChange::Save("t".into(), "{}".into())], GlobalPosition(3))
        .await
        .expect("commit");
    store.reset_instances("pm").await.expect("reset");
    assert_eq!(store.load_instance("pm", "t").await.expect("load"), None);
    assert_eq!(store.load_checkpoint("pm").await.expect("load"), None);
    assert!(store.load_instance("other", "t").await.expect("load").is_some());
}

/// One holder per name at a time; dropping the lease frees the name.
pub async fn leases_are_exclusive_until_dropped<S: SubscriptionStore>(store: Arc<S>) {
    let first = store.try_lease("projector").await.expect("lease").expect("free");
    assert!(store.try_lease("projector").await.expect("lease").is_none(), "held");
    let other = store.try_lease("another").await.expect("lease");
    assert!(other.is_some(), "names are independent");
    drop(first);
    let mut again = None;
    for _ in 0..100 {
        again = store.try_lease("projector").await.expect("lease");
        if again.is_some() {
            break;
        }
        // A backend may release asynchronously (closing a connection).
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "released on drop");
}

/// A report replaces the subscription's earlier one, round-trips whole, and is gone
/// once cleared.
pub async fn failure_reports_are_replaced_and_cleared<S: SubscriptionStore>(store: Arc<S>) {
    let at = |micros| chrono::DateTime::from_timestamp_micros(micros).expect("valid time");
    let retrying = FailureReport {
        subscription: "pm".into(),
        state: FailureState::Retrying,
        attempt: 1,
        transient: true,
        error: "reading events: connection refused — ü".into(),
        position: None,
        since: at(1_800_000_000_000_000),
        updated_at: at(1_800_000_000_000_000),
    };
    store.report_failure(retrying.clone()).await.expect("report");
    let stopped = FailureReport {
        subscription: "other".into(),
        state: FailureState::Stopped,
        attempt: 5,
        transient: false,
        error: "failed at 7".into(),
        position: Some(GlobalPosition(7)),
        ..retrying.clone()
    };
    store.report_failure(stopped.clone()).await.expect("report");
    let later = FailureReport { attempt: 9, updated_at: at(1_800_000_009_000_000), ..retrying.clone() };
    store.report_failure(later.clone()).await.expect("report again");
    assert_eq!(store.failures(None).await.expect("list"), vec![stopped.clone(), later.clone()]);
    assert_eq!(store.failures(Some("pm")).await.expect("list"), vec![later]);
    store.clear_failure("pm").await.expect("clear");
    store.clear_failure("never-reported").await.expect("clearing nothing");
    assert_eq!(store.failures(None).await.expect("list"), vec![stopped]);
}
