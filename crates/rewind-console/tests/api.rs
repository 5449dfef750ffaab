//! The console's JSON API and tail, driven in process (`oneshot`) over a memory
//! store: pages and their cursors, every envelope field, bad parameters as 400s,
//! operator actions, and the tail delivering an event appended while it is open.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rewind::store::BatchFailure;
use rewind::testing::new_event;
use rewind::{
    Application, Consumer, ConsumerError, ConsumerKind, ErrorPolicy, EventStore, ExpectedVersion, GlobalPosition,
    MemoryStore, MemorySubscriptionStore, RecordedEvent, SubscriptionOptions, Subscriptions,
};
use rewind_console::{Console, api, page};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn get(router: &Router, path: &str) -> (StatusCode, Value) {
    send(router, Request::get(path).body(Body::empty()).expect("request")).await
}

async fn post(router: &Router, path: &str) -> (StatusCode, Value) {
    send(router, Request::post(path).body(Body::empty()).expect("request")).await
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = tower::ServiceExt::oneshot(router.clone(), request).await.expect("answer");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// A projector stand-in: counts events, and a rebuild (reset) is seen.
#[derive(Default)]
struct Counter {
    done: Mutex<Option<GlobalPosition>>,
    resets: AtomicU64,
}

#[async_trait::async_trait]
impl Consumer for Counter {
    fn kind(&self) -> ConsumerKind {
        ConsumerKind::Projector
    }
    async fn checkpoint(&self) -> Result<Option<GlobalPosition>, ConsumerError> {
        Ok(*self.done.lock().unwrap())
    }
    async fn process(&self, events: Arc<[RecordedEvent]>) -> Result<(), BatchFailure> {
        *self.done.lock().unwrap() = events.last().map(|e| e.position);
        Ok(())
    }
    async fn skip(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        *self.done.lock().unwrap() = Some(event.position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), ConsumerError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        *self.done.lock().unwrap() = None;
        Ok(())
    }
}

/// A handler that refuses `Poison` events.
struct Picky;

#[async_trait::async_trait]
impl rewind::EventHandler for Picky {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        if event.event_type == "Poison" { Err("poisoned".into()) } else { Ok(()) }
    }
}

struct Setup {
    app: Application,
    router: Router,
    counter: Arc<Counter>,
    subscriptions: Arc<Subscriptions>,
}

async fn setup() -> Setup {
    let app = Application::builder(MemoryStore::new()).build();
    let store = app.store();
    for (stream, types) in
        [("account-1", &["Opened", "Deposited", "Poison"][..]), ("account-2", &["Opened"]), ("order-1", &["Placed"])]
    {
        let events = types.iter().map(|t| new_event(t, json!({ "stream": stream, "type": t }))).collect();
        store.append(stream, ExpectedVersion::Any, events).await.expect("append");
    }
    let counter = Arc::new(Counter::default());
    let subscriptions = Subscriptions::builder(&app, Arc::new(MemorySubscriptionStore::new()))
        .consumer("counter", counter.clone(), SubscriptionOptions::new())
        .handler("picky", Picky, SubscriptionOptions::new().on_error(ErrorPolicy::Skip))
        .start()
        .expect("start");
    let head = store.head_position().await.expect("head");
    subscriptions.wait_for("counter", head).await.expect("counted");
    subscriptions.wait_for("picky", head).await.expect("handled");
    let subscriptions = Arc::new(subscriptions);
    let console = Arc::new(Console::new(store.clone(), subscriptions.clone()));
    Setup { router: page().merge(api(console)), app, counter, subscriptions }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_events_page_with_cursors_and_every_envelope_field() {
    let Setup { router, .. } = setup().await;
    let (status, first) = get(&router, "/api/streams?prefix=account-&limit=1").await;
    assert_eq!(
        (status, first["data"][0]["stream_id"].clone(), first["next"].clone()),
        (StatusCode::OK, json!("account-1"), json!("account-1"))
    );
    let (_, second) = get(&router, "/api/streams?prefix=account-&after=account-1&limit=1").await;
    assert_eq!(second["data"][0]["stream_id"], "account-2");
    let (_, last) = get(&router, "/api/streams?prefix=account-&after=account-2&limit=1").await;
    assert_eq!((last["data"].clone(), last["next"].clone()), (json!([]), Value::Null));

    let (status, events) = get(&router, "/api/streams/account-1?from=2").await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&Value> =
        events["data"].as_array().expect("events").iter().map(|e| &e["stream_version"]).collect();
    assert_eq!(versions, [&json!(2), &json!(3)]);
    let event = &events["data"][0];
    assert_eq!(event["data"], json!({ "stream": "account-1", "type": "Deposited" }), "data as JSON, not a string");
    for field in ["event_id", "stream_id", "position", "event_type", "metadata", "created_at"] {
        assert!(!event[field].is_null(), "{field} is shown: {event}");
    }
    let id = event["event_id"].as_str().expect("id").to_owned();
    let (status, one) = get(&router, &format!("/api/events/{id}")).await;
    assert_eq!((status, &one["data"]["position"]), (StatusCode::OK, &event["position"]));

    let (_, global) = get(&router, "/api/events?from=2&limit=2").await;
    let positions: Vec<&Value> = global["data"].as_array().expect("events").iter().map(|e| &e["position"]).collect();
    assert_eq!((positions, global["next"].clone()), (vec![&json!(2), &json!(3)], json!(4)));

    assert_eq!(get(&router, "/api/streams/nobody").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&router, &format!("/api/events/{}", uuid::Uuid::new_v4())).await.0, StatusCode::NOT_FOUND);
    for bad in [
        "/api/events?limit=0",
        "/api/events?limit=501",
        "/api/events?from=x",
        "/api/events/not-a-uuid",
        "/api/streams?limit=-1",
    ] {
        let (status, body) = get(&router, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(body["errors"]["detail"].is_string(), "{bad}: {body}");
    }
    let (status, _) = send(&router, Request::get("/").body(Body::empty()).expect("request")).await;
    assert_eq!(status, StatusCode::OK, "the page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_subscriptions_rebuilds_a_projector_and_skips_a_dead_letter() {
    let Setup { router, counter, .. } = setup().await;
    let (_, subscriptions) = get(&router, "/api/subscriptions").await;
    let names: Vec<&Value> = subscriptions["data"].as_array().expect("list").iter().map(|s| &s["name"]).collect();
    assert_eq!(names, [&json!("counter"), &json!("picky")]);
    assert_eq!(subscriptions["data"][0]["lag"], 0);

    assert_eq!(post(&router, "/api/subscriptions/counter/rebuild").await.0, StatusCode::OK);
    assert_eq!(counter.resets.load(Ordering::SeqCst), 1, "the projector was reset");
    assert_eq!(
        post(&router, "/api/subscriptions/picky/rebuild").await.0,
        StatusCode::BAD_REQUEST,
        "a handler is never rebuilt"
    );
    assert_eq!(post(&router, "/api/subscriptions/nobody/rebuild").await.0, StatusCode::NOT_FOUND);

    let (_, letters) = get(&router, "/api/dead-letters").await;
    assert_eq!(letters["data"].as_array().map(Vec::len), Some(1), "{letters}");
    let id = letters["data"][0]["event"]["event_id"].as_str().expect("id").to_owned();
    assert_eq!(post(&router, &format!("/api/dead-letters/picky/{id}/skip")).await.0, StatusCode::OK);
    assert_eq!(get(&router, "/api/dead-letters").await.1["data"], json!([]));
    assert_eq!(post(&router, &format!("/api/dead-letters/picky/{id}/replay")).await.0, StatusCode::NOT_FOUND, "gone");
}

/// The samples of `/api/subscriptions/lag` after `since`.
async fn lag_since(router: &Router, since: u64) -> Vec<Value> {
    let (status, body) = get(router, &format!("/api/subscriptions/lag?since={since}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().expect("samples").clone()
}

// On Tokio's paused clock: a second passes only when every task is idle, so each
// sample sees what was done before it.
#[tokio::test(start_paused = true)]
async fn the_lag_of_the_last_five_minutes_is_kept_a_sample_a_second() {
    let Setup { router, app, subscriptions, .. } = setup().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let first = lag_since(&router, 0).await;
    let seqs: Vec<&Value> = first.iter().map(|s| &s["seq"]).collect();
    assert_eq!(seqs, [&json!(1), &json!(2)], "one sample at once, one a second later: {first:?}");
    assert_eq!(first[1]["lag"], json!({ "counter": 0, "picky": 0 }));
    let at = |sample: &Value| chrono::DateTime::parse_from_rfc3339(sample["at"].as_str().expect("at")).expect("time");
    assert_eq!(at(&first[1]) - at(&first[0]), chrono::TimeDelta::seconds(1));

    subscriptions.pause("counter").await.expect("pause");
    for _ in 0..2 {
        app.store()
            .append("order-2", ExpectedVersion::Any, vec![new_event("Placed", json!({}))])
            .await
            .expect("append");
    }
    let head = app.store().head_position().await.expect("head");
    subscriptions.wait_for("picky", head).await.expect("handled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = lag_since(&router, 2).await;
    assert_eq!(after.len(), 1, "only what came after the cursor: {after:?}");
    assert_eq!((&after[0]["seq"], &after[0]["lag"]), (&json!(3), &json!({ "counter": 2, "picky": 0 })));

    tokio::time::sleep(Duration::from_secs(400)).await;
    let kept = lag_since(&router, 0).await;
    assert_eq!(kept.len(), rewind_console::LAG_KEPT, "five minutes are kept, the older samples dropped");
    let seq = |sample: &Value| sample["seq"].as_u64().expect("seq");
    let (oldest, newest) = (seq(&kept[0]), seq(&kept[kept.len() - 1]));
    assert_eq!((newest - oldest + 1, newest), (rewind_console::LAG_KEPT as u64, 403), "none missing, none repeated");
    assert_eq!(lag_since(&router, 10_000).await.len(), rewind_console::LAG_KEPT, "a cursor of another run: all");
    assert_eq!(get(&router, "/api/subscriptions/lag?since=x").await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_sends_the_log_from_a_position_and_then_what_is_appended() {
    let Setup { router, app, subscriptions, .. } = setup().await;
    let request = Request::get("/api/tail?from=4").body(Body::empty()).expect("request");
    let response = tower::ServiceExt::oneshot(router.clone(), request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen: Vec<u64> = Vec::new();
    let mut text = String::new();
    let appended = tokio::spawn({
        let app = app.clone();
        async move {
            // Appended while the tail is open: the head watch wakes it.
            app.store()
                .append("order-2", ExpectedVersion::NoStream, vec![new_event("Placed", json!({}))])
                .await
                .expect("append")
        }
    });
    while seen.len() < 3 {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.expect("in time");
        let Some(Ok(frame)) = frame else { panic!("the tail ended") };
        let Ok(data) = frame.into_data() else { continue };
        text.push_str(std::str::from_utf8(&data).expect("utf-8"));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(line) = message.lines().find_map(|l| l.strip_prefix("data:")) {
                let event: Value = serde_json::from_str(line.trim()).expect("an event");
                seen.push(event["position"].as_u64().expect("position"));
            }
        }
    }
    let last = appended.await.expect("appended").last_position;
    assert_eq!(seen, [4, 5, last.0], "from position 4, in order, then the new one");
    assert_eq!(get(&router, "/api/tail?from=x").await.0, StatusCode::BAD_REQUEST);
    drop(subscriptions);
}

fn correlated(event_type: &str, correlation: uuid::Uuid, command: uuid::Uuid, cause: uuid::Uuid) -> rewind::NewEvent {
    let mut event = new_event(event_type, json!({}));
    event.metadata.correlation_id = Some(correlation);
    event.metadata.command_id = Some(command);
    event.metadata.causation_id = Some(cause);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_of_an_event_is_its_conversation_command_by_command() {
    let Setup { router, app, .. } = setup().await;
    let (correlation, request, reaction) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // A request appends to two streams; a process manager reacts to its first event
    // with a command of its own; something unrelated happens in between.
    let withdrawn = correlated("Withdrawn", correlation, request, request);
    let requested = correlated("TransferRequested", correlation, request, request);
    let deposited = correlated("Deposited", correlation, reaction, withdrawn.event_id);
    let store = app.store();
    store.append("account-a", ExpectedVersion::Any, vec![withdrawn.clone()]).await.expect("append");
    store.append("transfer-1", ExpectedVersion::Any, vec![requested.clone()]).await.expect("append");
    store.append("account-x", ExpectedVersion::Any, vec![new_event("Other", json!({}))]).await.expect("append");
    store.append("account-b", ExpectedVersion::Any, vec![deposited.clone()]).await.expect("append");

    let (status, trail) = get(&router, &format!("/api/events/{}/trail", deposited.event_id)).await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let trail = &trail["data"];
    assert_eq!(trail["correlation_id"], json!(correlation));
    let steps: Vec<(Value, Value, Vec<Value>)> = trail["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .map(|s| {
            let types = s["events"].as_array().expect("events").iter().map(|e| e["event_type"].clone()).collect();
            (s["command_id"].clone(), s["caused_by"].clone(), types)
        })
        .collect();
    assert_eq!(
        steps,
        [
            (json!(request), Value::Null, vec![json!("Withdrawn"), json!("TransferRequested")]),
            (json!(reaction), json!(withdrawn.event_id), vec![json!("Deposited")]),
        ]
    );
    // The same trail from its first event, and in pages.
    let (_, from_first) = get(&router, &format!("/api/events/{}/trail", withdrawn.event_id)).await;
    assert_eq!(from_first["data"]["commands"], trail["commands"]);
    let (_, paged) = get(&router, &format!("/api/events/{}/trail?limit=2", withdrawn.event_id)).await;
    let next = paged["data"]["next"].as_u64().expect("a next page");
    let (_, rest) = get(&router, &format!("/api/events/{}/trail?from={next}&limit=2", withdrawn.event_id)).await;
    assert_eq!(rest["data"]["commands"][0]["events"][0]["event_type"], "Deposited");

    // An event with no correlation id is its own trail.
    let (_, first) = get(&router, "/api/events?from=1&limit=1").await;
    let lone = first["data"][0]["event_id"].as_str().expect("id").to_owned();
    let (status, alone) = get(&router, &format!("/api/events/{lone}/trail")).await;
    assert_eq!((status, alone["data"]["correlation_id"].clone()), (StatusCode::OK, Value::Null));
    assert_eq!(alone["data"]["commands"][0]["events"][0]["event_id"], json!(lone));
    assert_eq!(get(&router, &format!("/api/events/{}/trail", uuid::Uuid::new_v4())).await.0, StatusCode::NOT_FOUND);

    // A conversation that goes on after more than a request's scan of the global
    // order: the trail says where to read on, and reading on finds the rest.
    let crowd: Vec<rewind::NewEvent> = (0..rewind_console::TRAIL_SCAN).map(|_| new_event("Crowd", json!({}))).collect();
    store.append("crowd", ExpectedVersion::Any, crowd).await.expect("append");
    let late_command = uuid::Uuid::new_v4();
    let refunded = correlated("Refunded", correlation, late_command, deposited.event_id);
    store.append("account-a", ExpectedVersion::Any, vec![refunded.clone()]).await.expect("append");
    let (_, first_part) = get(&router, &format!("/api/events/{}/trail?limit=500", refunded.event_id)).await;
    let types = |trail: &Value| -> Vec<Value> {
        let commands = trail["data"]["commands"].as_array().cloned().unwrap_or_default();
        commands
            .iter()
            .flat_map(|c| c["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["event_type"].clone())
            .collect()
    };
    assert_eq!(
        types(&first_part),
        [json!("Withdrawn"), json!("TransferRequested"), json!("Deposited")],
        "walked up to the request"
    );
    let next = first_part["data"]["next"].as_u64().expect("the scan stopped short of the head");
    let (_, rest) = get(&router, &format!("/api/events/{}/trail?from={next}", refunded.event_id)).await;
    assert_eq!((types(&rest), rest["data"]["next"].clone()), (vec![json!("Refunded")], Value::Null));
    assert_eq!(get(&router, "/api/events/nope/trail").await.0, StatusCode::BAD_REQUEST);
}

/// A view of the past for the test: how many events an account had, and their types.
struct Counted;

impl rewind_console::PastView for Counted {
    fn prefix(&self) -> &str {
        "account-"
    }
    fn at<'a>(
        &'a self,
        store: &'a rewind::SharedStore,
        stream_id: &'a str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> rewind::store::BoxFuture<'a, Result<Option<Value>, rewind::StoreError>> {
        Box::pin(async move {
            let events =
                store.read_stream(stream_id, rewind::StreamVersion(1), rewind::Direction::Forward, 500).await?;
            let then: Vec<&str> =
                events.iter().take_while(|e| e.created_at <= at).map(|e| e.event_type.as_str()).collect();
            Ok((!then.is_empty()).then(|| json!({ "count": then.len(), "types": then })))
        })
    }
    fn replay_command(&self, at: chrono::DateTime<chrono::Utc>) -> Option<String> {
        Some(format!("app replay --until {}", at.to_rfc3339()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_shown_as_it_was_at_a_moment_beside_now() {
    let Setup { app, subscriptions, .. } = setup().await;
    let store = app.store();
    let later = vec![new_event("Withdrawn", json!({}))];
    let first =
        store.read_stream("account-1", rewind::StreamVersion(1), rewind::Direction::Forward, 1).await.expect("read");
    // A later commit, so the two moments differ.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    store.append("account-1", ExpectedVersion::Any, later).await.expect("append");
    let console = Console::new(store.clone(), subscriptions).with_past(Counted);
    let router = api(Arc::new(console));
    let at = first[0].created_at.to_rfc3339();

    let (status, shown) = get(&router, &format!("/api/as-of/account-1?at={}", urlencode(&at))).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    let shown = &shown["data"];
    // Opened, Deposited and Poison were one commit; Withdrawn came after.
    assert_eq!(shown["then"], json!({ "count": 3, "types": ["Opened", "Deposited", "Poison"] }));
    assert_eq!(shown["now"]["count"], 4);
    assert_eq!(shown["replay"], json!(format!("app replay --until {}", first[0].created_at.to_rfc3339())));
    assert_eq!(get(&router, "/api/as-of").await.1["data"], json!(["account-"]));

    let before = (first[0].created_at - chrono::Duration::seconds(1)).to_rfc3339();
    assert_eq!(get(&router, &format!("/api/as-of/account-1?at={}", urlencode(&before))).await.0, StatusCode::NOT_FOUND);
    for bad in
        ["/api/as-of/account-1", "/api/as-of/account-1?at=yesterday", "/api/as-of/order-1?at=2026-01-01T00:00:00Z"]
    {
        let (status, body) = get(&router, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).expect("encodes")[1..].to_owned()
}
