//! The HTTP API driven in process (`router(state).oneshot(request)`) on a fresh
//! SQLite file per test, and on PostgreSQL when `TEST_DATABASE_URL` is set: the
//! original wire format, every error, idempotency, ETag / If-Match, auth and limits.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bank::http::{AppState, metrics::CommandMetrics, metrics::Metrics, router};
use bank::service::Bank;
use rewind_cli::Database;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct Api {
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn api_on(database: Database, token: Option<&str>, dir: tempfile::TempDir) -> Api {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let command_metrics: Arc<dyn rewind::Middleware> = Arc::new(CommandMetrics(metrics.clone()));
    let bank = Arc::new(Bank::start(&database, vec![command_metrics]).await.expect("bank"));
    let state = AppState { bank, metrics, replies: Arc::default(), token: token.map(Arc::from) };
    Api { state, _dir: dir }
}

async fn sqlite_api() -> Api {
    let dir = tempfile::tempdir().expect("dir");
    api_on(Database::Sqlite(dir.path().join("bank.db")), None, dir).await
}

/// Both backends, when PostgreSQL is configured.
async fn apis() -> Vec<Api> {
    let mut apis = vec![sqlite_api().await];
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            // The `rwt_<seconds>_` prefix lets the store tests' sweeper drop it later.
            let seconds = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let schema = format!("rwt_{seconds}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let database = Database::Postgres { url, schema };
            apis.push(api_on(database, None, tempfile::tempdir().expect("dir")).await);
        }
        _ => eprintln!("PostgreSQL part skipped: TEST_DATABASE_URL is not set"),
    }
    apis
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = router(self.state.clone()).oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply { status, headers, body }
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_with(path, body.to_string(), &[]).await
    }

    async fn post_with(&self, path: &str, body: String, headers: &[(&str, &str)]) -> Reply {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(body)).expect("request")).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Request::get(path).body(Body::empty()).expect("request")).await
    }

    async fn open(&self, balance: i64) -> String {
        let reply = self.post("/api/accounts", json!({"account": {"initial_balance": balance}})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["data"]["uuid"].as_str().expect("uuid").to_owned()
    }

    async fn head(&self) -> u64 {
        self.state.bank.settled_head().await.expect("head").0
    }

    async fn settle(&self) {
        self.state.bank.settle().await.expect("settle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_lifecycle_in_the_original_wire_format() {
    for api in apis().await {
        let reply = api.post("/api/accounts", json!({"account": {"initial_balance": 1000}})).await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let id = reply.body["data"]["uuid"].as_str().expect("uuid").to_owned();
        assert_eq!(reply.body, json!({"data": {"uuid": id, "current_balance": 1000, "status": "open"}}));

        let reply = api.get(&format!("/api/accounts/{id}")).await;
        assert_eq!((reply.status, reply.headers[header::ETAG].to_str().unwrap()), (StatusCode::OK, "\"1\""));
        assert_eq!(reply.body["data"]["current_balance"], 1000);

        let reply = api.post(&format!("/api/accounts/{id}/deposit"), json!({"deposit_amount": 42})).await;
        assert_eq!(
            (reply.status, &reply.body["data"]["current_balance"]),
            (StatusCode::OK, &json!(1042)),
            "the new balance"
        );
        let reply = api.post(&format!("/api/accounts/{id}/withdraw"), json!({"withdrawal_amount": 40})).await;
        assert_eq!((reply.status, &reply.body["data"]["current_balance"]), (StatusCode::OK, &json!(1002)));

        let other = api.open(5).await;
        let reply = api
            .post(&format!("/api/accounts/{id}/transfer"), json!({"transfer_amount": 2, "destination_account": other}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let transfer = reply.body["data"]["uuid"].as_str().expect("transfer uuid").to_owned();
        // The transfer process may already have settled it by the time the answer is read.
        let status = reply.body["data"]["status"].as_str().unwrap_or_default().to_owned();
        assert!(status == "pending" || status == "completed", "{status}");
        api.settle().await;
        assert_eq!(api.get(&format!("/api/transfers/{transfer}")).await.body["data"]["status"], "completed");
        assert_eq!(api.get(&format!("/api/accounts/{other}")).await.body["data"]["current_balance"], 7);
        let kinds: Vec<Value> = api.get(&format!("/api/accounts/{id}/transactions")).await.body["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|t| t["kind"].clone())
            .collect();
        assert_eq!(kinds, [json!("deposit"), json!("withdrawal"), json!("transfer_out")]);

        let reply = api.send(Request::delete(format!("/api/accounts/{id}")).body(Body::empty()).unwrap()).await;
        assert_eq!((reply.status, reply.body), (StatusCode::OK, Value::Null), "200 with an empty body");
        assert_eq!(api.get(&format!("/api/accounts/{id}")).await.body["data"]["status"], "closed");
        api.state.bank.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_errors_are_422_and_change_nothing() {
    let api = sqlite_api().await;
    let id = api.open(10).await;
    let closed = api.open(1).await;
    api.send(Request::delete(format!("/api/accounts/{closed}")).body(Body::empty()).unwrap()).await;
    let before = api.head().await;
    let cases = [
        (format!("/api/accounts/{id}/withdraw"), json!({"withdrawal_amount": 11}), "insufficient funds"),
        (format!("/api/accounts/{id}/deposit"), json!({"deposit_amount": i64::MAX}), "balance would overflow"),
        (format!("/api/accounts/{closed}/deposit"), json!({"deposit_amount": 1}), "account closed"),
        (
            format!("/api/accounts/{id}/transfer"),
            json!({"transfer_amount": 11, "destination_account": closed}),
            "invalid request",
        ),
        (
            format!("/api/accounts/{id}/transfer"),
            json!({"transfer_amount": 1, "destination_account": id}),
            "invalid request",
        ),
        (format!("/api/accounts/{id}/deposit"), json!({"deposit_amount": 0}), "invalid request"),
    ];
    for (path, body, message) in cases {
        let reply = api.post(&path, body.clone()).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {:?}", reply.body);
        assert_eq!(reply.body["errors"]["message"], message, "{path} {body}");
    }
    let reply = api
        .post(&format!("/api/accounts/{id}/transfer"), json!({"transfer_amount": 1, "destination_account": closed}))
        .await;
    assert_eq!(reply.body["errors"]["fields"]["destination_account"], json!(["account is closed"]));
    let reply = api.send(Request::delete(format!("/api/accounts/{closed}")).body(Body::empty()).unwrap()).await;
    assert_eq!(
        (reply.status, &reply.body["errors"]["message"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("account already closed"))
    );
    assert_eq!(api.head().await, before, "refused commands appended nothing");
    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_accounts_are_404() {
    let api = sqlite_api().await;
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/api/accounts/{unknown}"),
        "/api/accounts/not-a-uuid".into(),
        format!("/api/transfers/{unknown}"),
        "/nowhere".into(),
    ] {
        let reply = api.get(&path).await;
        assert_eq!(
            (reply.status, reply.body),
            (StatusCode::NOT_FOUND, json!({"errors": {"detail": "Not Found"}})),
            "{path}"
        );
    }
    let reply = api.post(&format!("/api/accounts/{unknown}/deposit"), json!({"deposit_amount": 1})).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(api.head().await, 0);
    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_4xx_with_a_json_error_and_changes_nothing() {
    let api = sqlite_api().await;
    let id = api.open(10).await;
    let before = api.head().await;
    let deposit = format!("/api/accounts/{id}/deposit");
    let bodies = [
        "{\"deposit_amount\": ".to_owned(),
        "not json".into(),
        "{}".into(),
        "{\"deposit_amount\": \"12\"}".into(),
        "{\"deposit_amount\": 1.5}".into(),
        "{\"deposit_amount\": 99999999999999999999999}".into(),
        "{\"deposit_amount\": -5}".into(),
        "[1, 2]".into(),
        "{\"deposit_amount\": null}".into(),
    ];
    for body in bodies {
        let reply = api.post_with(&deposit, body.clone(), &[]).await;
        assert!(matches!(reply.status.as_u16(), 400 | 422), "{body}: {}", reply.status);
        assert!(reply.body["errors"].is_object(), "{body}: {:?}", reply.body);
    }
    let huge = format!("{{\"deposit_amount\": 1, \"padding\": \"{}\"}}", "x".repeat(2 << 20));
    assert_eq!(api.post_with(&deposit, huge, &[]).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let no_type = api.send(Request::post(&deposit).body(Body::from("{\"deposit_amount\": 1}")).unwrap()).await;
    assert!(no_type.status.is_client_error() && no_type.body["errors"].is_object());
    let bad_uuid = api
        .post(&format!("/api/accounts/{id}/transfer"), json!({"transfer_amount": 1, "destination_account": "nope"}))
        .await;
    assert_eq!(bad_uuid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.head().await, before, "nothing changed");
    assert_eq!(api.get(&format!("/api/accounts/{id}")).await.body["data"]["current_balance"], 10);
    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_retry_return_the_first_answer() {
    let api = sqlite_api().await;
    let key = [("idempotency-key", "open-once")];
    let first = api.post_with("/api/accounts", json!({"account": {"initial_balance": 70}}).to_string(), &key).await;
    let again = api.post_with("/api/accounts", json!({"account": {"initial_balance": 70}}).to_string(), &key).await;
    assert_eq!((first.status, &first.body), (again.status, &again.body), "same answer");
    let id = first.body["data"]["uuid"].as_str().expect("uuid").to_owned();
    let heads = api.head().await;
    let deposit = format!("/api/accounts/{id}/deposit");
    let key = [("idempotency-key", "deposit-1")];
    for _ in 0..3 {
        let reply = api.post_with(&deposit, json!({"deposit_amount": 5}).to_string(), &key).await;
        assert_eq!(reply.body["data"]["current_balance"], 75);
    }
    assert_eq!(api.head().await, heads + 1, "one deposit, however often it was sent");

    // After a restart the remembered answers are gone, but the command ids are not.
    let fresh = AppState { replies: Arc::default(), ..api.state.clone() };
    let restarted = Api { state: fresh, _dir: tempfile::tempdir().unwrap() };
    let reply = restarted.post_with(&deposit, json!({"deposit_amount": 5}).to_string(), &key).await;
    assert_eq!((reply.status, &reply.body["data"]["current_balance"]), (StatusCode::OK, &json!(75)));
    assert_eq!(api.head().await, heads + 1);
    api.state.bank.shutdown().await;
}

/// One key names one request: the same key with another body is refused with 422 and
/// changes nothing — from the remembered answer, and after a restart from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_refused_even_after_a_restart() {
    for api in apis().await {
        let opened = api.post("/api/accounts", json!({"account": {"initial_balance": 100}})).await;
        let id = opened.body["data"]["uuid"].as_str().expect("uuid").to_owned();
        let (deposit, withdraw) = (format!("/api/accounts/{id}/deposit"), format!("/api/accounts/{id}/withdraw"));
        let key = [("idempotency-key", "d1")];
        let first = api.post_with(&deposit, json!({"deposit_amount": 10}).to_string(), &key).await;
        assert_eq!((first.status, &first.body["data"]["current_balance"]), (StatusCode::OK, &json!(110)));
        let refusal = [("idempotency-key", "w1")];
        let refused = api.post_with(&withdraw, json!({"withdrawal_amount": 1000}).to_string(), &refusal).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
        let head = api.head().await;
        let fresh = AppState { replies: Arc::default(), ..api.state.clone() };
        let restarted = Api { state: fresh, _dir: tempfile::tempdir().expect("dir") };
        for (who, api) in [("remembered", &api), ("after a restart", &restarted)] {
            let other = api.post_with(&deposit, json!({"deposit_amount": 999}).to_string(), &key).await;
            assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{who}: {}", other.body);
            let message = other.body["errors"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("Idempotency-Key") && message.contains("different"), "{who}: {message}");
            let other = api.post_with(&withdraw, json!({"withdrawal_amount": 1}).to_string(), &refusal).await;
            assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY, "{who}: {}", other.body);
            assert!(other.body["errors"]["message"].as_str().unwrap_or_default().contains("different"), "{who}");
            // The same request again still gets its first answer.
            let again = api.post_with(&deposit, json!({"deposit_amount": 10}).to_string(), &key).await;
            assert_eq!(
                (again.status, &again.body["data"]["current_balance"]),
                (StatusCode::OK, &json!(110)),
                "{who}: {:?}",
                again.headers
            );
            assert_eq!(api.head().await, head, "{who}: nothing appended");
        }
        api.state.bank.shutdown().await;
    }
}

/// Requests racing with one key make one effect; each gets the first answer or 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_effect() {
    let api = Arc::new(sqlite_api().await);
    let opened = api.post("/api/accounts", json!({"account": {"initial_balance": 1}})).await;
    let id = opened.body["data"]["uuid"].as_str().expect("uuid").to_owned();
    let head = api.head().await;
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (api, path) = (api.clone(), format!("/api/accounts/{id}/deposit"));
            tokio::spawn(async move {
                api.post_with(&path, json!({"deposit_amount": 5}).to_string(), &[("idempotency-key", "race")]).await
            })
        })
        .collect();
    let mut answered = 0;
    for racer in racers {
        let reply = racer.await.expect("racer");
        match reply.status {
            StatusCode::OK => {
                assert_eq!(reply.body["data"]["current_balance"], 6, "{}", reply.body);
                answered += 1;
            }
            StatusCode::CONFLICT => assert!(reply.body["errors"]["message"].as_str().is_some()),
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert!(answered >= 1, "someone got the answer");
    assert_eq!(api.head().await, head + 1, "one deposit");
    api.state.bank.shutdown().await;
}

/// A key that is too long or not printable is refused with 400 before anything happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_idempotency_keys_are_refused() {
    let api = sqlite_api().await;
    let before = api.head().await;
    let open = || json!({"account": {"initial_balance": 7}}).to_string();
    let long = "k".repeat(256);
    for key in [long.as_str(), "tab\there", "é"] {
        let reply = api.post_with("/api/accounts", open(), &[("idempotency-key", key)]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{key:?}");
        let message = reply.body["errors"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("Idempotency-Key"), "{key:?}: {}", reply.body);
    }
    assert_eq!(api.head().await, before, "nothing happened");
    let at_limit = "k".repeat(255);
    let reply = api.post_with("/api/accounts", open(), &[("idempotency-key", &at_limit)]).await;
    assert_eq!(reply.status, StatusCode::CREATED);

    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_if_match_is_refused_with_412() {
    let api = sqlite_api().await;
    let id = api.open(10).await;
    let etag = api.get(&format!("/api/accounts/{id}")).await.headers[header::ETAG].to_str().unwrap().to_owned();
    let deposit = format!("/api/accounts/{id}/deposit");
    let reply = api.post_with(&deposit, json!({"deposit_amount": 1}).to_string(), &[("if-match", &etag)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let before = api.head().await;
    let reply = api.post_with(&deposit, json!({"deposit_amount": 1}).to_string(), &[("if-match", &etag)]).await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{:?}", reply.body);
    assert_eq!(api.head().await, before, "nothing changed");
    // The forms the OpenAPI document allows, and nothing else.
    for form in ["\"{}\"", "W/\"{}\"", "{}", "*"] {
        let current = api.get(&format!("/api/accounts/{id}")).await.headers[header::ETAG].to_str().unwrap().to_owned();
        let tag = form.replace("{}", current.trim_matches('"'));
        let reply = api.post_with(&deposit, json!({"deposit_amount": 1}).to_string(), &[("if-match", &tag)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{tag}: {:?}", reply.body);
    }
    let before = api.head().await;
    for tag in ["", "\"\"", "W/7", "\"7", "abc", "-1", "1234567890123456789"] {
        let reply = api.post_with(&deposit, json!({"deposit_amount": 1}).to_string(), &[("if-match", tag)]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{tag:?}: {:?}", reply.body);
    }
    assert_eq!(api.head().await, before, "nothing changed");
    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_api_and_metrics_but_not_health() {
    let dir = tempfile::tempdir().expect("dir");
    let api = api_on(Database::Sqlite(dir.path().join("bank.db")), Some("s3cret"), dir).await;
    let open = || json!({"account": {"initial_balance": 1}}).to_string();
    assert_eq!(api.post_with("/api/accounts", open(), &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.post_with("/api/accounts", open(), &[("authorization", "Bearer nope")]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.post_with("/api/accounts", open(), &[("authorization", "Bearer s3cret")]).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.post_with("/api/accounts", open(), &[("authorization", "bearer s3cret")]).await.status,
        StatusCode::CREATED,
        "the scheme is matched without regard to case"
    );
    assert_eq!(api.get("/health").await.status, StatusCode::OK);
    let metrics = |auth: Option<&'static str>| {
        let mut request = Request::get("/metrics");
        if let Some(value) = auth {
            request = request.header("authorization", value);
        }
        request.body(Body::empty()).unwrap()
    };
    let refused = api.send(metrics(None)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "metrics are behind the token");
    assert_eq!(refused.body["errors"]["message"], "unauthorized", "with the JSON error body");
    assert_eq!(api.send(metrics(Some("Bearer s3cret"))).await.status, StatusCode::OK);
    api.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_openapi_are_served() {
    let api = sqlite_api().await;
    api.open(3).await;
    let metrics = api.send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = metrics.body.as_str().expect("text").to_owned();
    for name in ["bank_http_request_duration_seconds", "bank_command_duration_seconds", "rewind_subscription_lag"] {
        assert!(text.contains(name), "{name} missing");
    }
    assert!(text.contains("rewind_subscription_lag{subscription=\"bank_read_model\"}"));
    assert!(text.contains("rewind_subscription_failing{subscription=\"transfer_process\"} 0"), "{text}");
    assert!(text.contains("rewind_subscription_state{state=\"retrying\",subscription=\"bank_read_model\"} 0"));
    let spec = api.get("/api/openapi.json").await;
    assert_eq!(spec.body["openapi"], "3.0.3");
    assert!(spec.body["paths"]["/api/accounts/{id}/transfer"]["post"].is_object());
    // Without a token nothing asks for one, and the document says so.
    assert_eq!(spec.body["security"], json!([]), "{}", spec.body["security"]);
    assert_eq!(spec.body["paths"]["/metrics"]["get"]["security"], json!([]));
    api.state.bank.shutdown().await;

    let dir = tempfile::tempdir().expect("dir");
    let guarded = api_on(Database::Sqlite(dir.path().join("bank.db")), Some("t"), dir).await;
    let request = Request::get("/api/openapi.json").header("authorization", "Bearer t").body(Body::empty());
    let spec = guarded.send(request.expect("request")).await;
    assert_eq!(spec.body["security"], json!([{"bearer": []}]));
    assert!(spec.body["paths"]["/metrics"]["get"].get("security").is_none());
    guarded.state.bank.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_whose_destination_closes_mid_way_is_refunded() {
    for api in apis().await {
        let (a, b) = (api.open(100).await, api.open(5).await);
        // Hold the transfer process so the destination can close in between.
        api.state.bank.subscriptions.pause(bank::service::TRANSFER_PROCESS).await.expect("pause");
        let reply = api
            .post(&format!("/api/accounts/{a}/transfer"), json!({"transfer_amount": 30, "destination_account": b}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
        let transfer = reply.body["data"]["uuid"].as_str().expect("uuid").to_owned();
        let closed = api.send(Request::delete(format!("/api/accounts/{b}")).body(Body::empty()).unwrap()).await;
        assert_eq!(closed.status, StatusCode::OK);
        api.state.bank.subscriptions.resume(bank::service::TRANSFER_PROCESS).await.expect("resume");
        api.settle().await;
        let transfer = api.get(&format!("/api/transfers/{transfer}")).await.body["data"].clone();
        assert_eq!(
            (transfer["status"].as_str(), transfer["reason"].as_str()),
            (Some("failed"), Some("account closed"))
        );
        assert_eq!(api.get(&format!("/api/accounts/{a}")).await.body["data"]["current_balance"], 100, "refunded");
        assert_eq!(api.get(&format!("/api/accounts/{b}")).await.body["data"]["current_balance"], 5);
        let kinds: Vec<String> = api.get(&format!("/api/accounts/{a}/transactions")).await.body["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|t| t["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kinds, ["transfer_out", "refund"]);
        api.state.bank.shutdown().await;
    }
}

impl Api {
    /// Waits until the statements projection has done the head; its error if it is
    /// failing instead (completion is signalled; the status is looked at meanwhile).
    async fn statements_settled(&self) -> Result<(), String> {
        let statements = bank::read_model::statements::STATEMENTS;
        let subscriptions = &self.state.bank.subscriptions;
        let done = subscriptions.wait_for(statements, self.state.bank.settled_head().await.expect("head"));
        tokio::pin!(done);
        loop {
            tokio::select! {
                _ = &mut done => return Ok(()),
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {
                    let status = subscriptions.status_of(statements).expect("status");
                    if let (Some(_), Some(error)) = (status.failed_position, status.last_error) {
                        return Err(error);
                    }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_of_money_beyond_i64_is_shown_as_such_not_as_an_error() {
    for api in apis().await {
        let id = api.open(1).await;
        let almost_all = i64::MAX - 1;
        // In and out and in again: each balance fits, the month's money in does not.
        for (path, body) in [
            ("deposit", json!({"deposit_amount": almost_all})),
            ("withdraw", json!({"withdrawal_amount": almost_all})),
            ("deposit", json!({"deposit_amount": almost_all})),
        ] {
            let reply = api.post(&format!("/api/accounts/{id}/{path}"), body).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
        api.statements_settled().await.expect("the statements projection goes on");
        let reply = api.get(&format!("/api/accounts/{id}/statements")).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let month = &reply.body["data"][0];
        assert_eq!(
            (&month["opening_balance"], &month["closing_balance"], &month["transactions"]),
            (&json!(0), &json!(i64::MAX), &json!(4)),
            "{month}"
        );
        assert_eq!((&month["credits"], &month["debits"]), (&Value::Null, &json!(almost_all)), "{month}");
        assert_eq!(month["overflow"], json!(true), "{month}");

        // Later movements of the month still count where the total is exact, up to
        // i64::MAX itself, and the other total stays unknown.
        for (amount, debits) in [(1, json!(i64::MAX)), (1, Value::Null)] {
            let reply = api.post(&format!("/api/accounts/{id}/withdraw"), json!({"withdrawal_amount": amount})).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            api.statements_settled().await.expect("the statements projection goes on");
            let month = api.get(&format!("/api/accounts/{id}/statements")).await.body["data"][0].clone();
            assert_eq!(
                (&month["credits"], &month["debits"], &month["overflow"]),
                (&Value::Null, &debits, &json!(true))
            );
        }
        let month = api.get(&format!("/api/accounts/{id}/statements")).await.body["data"][0].clone();
        assert_eq!((&month["closing_balance"], &month["transactions"]), (&json!(i64::MAX - 2), &json!(6)), "{month}");

        // A rebuild folds the month in large batches: the same statement.
        api.state.bank.subscriptions.rebuild(bank::read_model::statements::STATEMENTS).await.expect("rebuild");
        api.statements_settled().await.expect("rebuilt");
        assert_eq!(api.get(&format!("/api/accounts/{id}/statements")).await.body["data"][0], month);
        api.state.bank.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_read_as_it_was_at_a_moment_from_its_events() {
    use chrono::SecondsFormat;
    use rewind::{Direction, EventStore, StreamVersion};
    for api in apis().await {
        let id = api.open(100).await;
        for (path, body) in [("deposit", json!({"deposit_amount": 50})), ("withdraw", json!({"withdrawal_amount": 30}))]
        {
            assert_eq!(api.post(&format!("/api/accounts/{id}/{path}"), body).await.status, StatusCode::OK);
        }
        let stream = bank::app::account_stream(id.parse().expect("uuid"));
        let events = api.state.bank.app.store().read_stream(&stream, StreamVersion(1), Direction::Forward, 10).await;
        let times: Vec<_> = events.expect("the stream").iter().map(|e| e.created_at).collect();
        assert_eq!(times.len(), 3, "opened, deposited, withdrawn");
        let at = |moment: chrono::DateTime<chrono::Utc>| moment.to_rfc3339_opts(SecondsFormat::Micros, true);
        let show = |moment| format!("/api/accounts/{id}?as_of={}", at(moment));
        let listed = |moment| format!("/api/accounts/{id}/transactions?as_of={}", at(moment));

        let before = api.get(&show(times[0] - chrono::Duration::microseconds(1))).await;
        assert_eq!(before.status, StatusCode::NOT_FOUND, "the account did not exist yet: {:?}", before.body);
        let opened = api.get(&show(times[0])).await;
        assert_eq!((opened.status, &opened.body["data"]["current_balance"]), (StatusCode::OK, &json!(100)));
        assert_eq!(api.get(&listed(times[0])).await.body["data"], json!([]));
        let deposited = api.get(&show(times[1])).await;
        assert_eq!(deposited.body["data"]["current_balance"], json!(150), "{:?}", deposited.body);
        let movements = api.get(&listed(times[1])).await.body["data"].clone();
        assert_eq!((movements[0]["kind"].clone(), movements.as_array().map(Vec::len)), (json!("deposit"), Some(1)));

        // Later than every event: the past is now, as the read model shows it.
        let later = times[2] + chrono::Duration::hours(1);
        assert_eq!(api.get(&show(later)).await.body, api.get(&format!("/api/accounts/{id}")).await.body);
        assert_eq!(api.get(&listed(later)).await.body, api.get(&format!("/api/accounts/{id}/transactions")).await.body);

        for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00Z&as_of=2026-01-02T00:00:00Z", "%zz"] {
            let reply = api.get(&format!("/api/accounts/{id}?as_of={bad}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", reply.body);
            assert!(reply.body["errors"].is_object(), "{bad}: the API's error format: {:?}", reply.body);
        }
        let unknown = format!("/api/accounts/{}?as_of={}", uuid::Uuid::new_v4(), at(later));
        assert_eq!(api.get(&unknown).await.status, StatusCode::NOT_FOUND);
        api.state.bank.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_and_its_data_is_behind_the_token() {
    let dir = tempfile::tempdir().expect("dir");
    let api =
        api_on(Database::Sqlite(dir.path().join("bank.db")), Some("s3cret"), tempfile::tempdir().expect("dir")).await;
    let page = api.get("/console").await;
    assert_eq!(page.status, StatusCode::OK, "the page itself holds no data");
    assert!(page.body.as_str().is_some_and(|html| html.contains("Rewind console")));
    assert_eq!(api.get("/console/api/streams").await.status, StatusCode::UNAUTHORIZED);

    let bearer = [("authorization", "Bearer s3cret")];
    let opened = api.post_with("/api/accounts", json!({"account": {"initial_balance": 5}}).to_string(), &bearer).await;
    let id = opened.body["data"]["uuid"].as_str().expect("uuid").to_owned();
    let mut request = Request::get("/console/api/streams?prefix=account-").header("authorization", "Bearer s3cret");
    let streams = api.send(request.body(Body::empty()).expect("request")).await;
    assert_eq!(streams.status, StatusCode::OK);
    assert_eq!(streams.body["data"][0]["stream_id"], format!("{}{id}", bank::app::ACCOUNT_PREFIX));
    request = Request::get("/console/api/subscriptions").header("authorization", "Bearer s3cret");
    let subscriptions = api.send(request.body(Body::empty()).expect("request")).await;
    let names: Vec<&str> =
        subscriptions.body["data"].as_array().expect("list").iter().filter_map(|s| s["name"].as_str()).collect();
    assert!(
        names.contains(&bank::read_model::PROJECTOR) && names.contains(&bank::service::TRANSFER_PROCESS),
        "{names:?}"
    );
    api.state.bank.shutdown().await;
}
