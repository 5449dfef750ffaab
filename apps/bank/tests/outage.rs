//! Subscriptions heal (DESIGN promise 10): the bank on a PostgreSQL cluster of this
//! test's own, under a transfer load, while the cluster is stopped for 20 seconds
//! (`pg_ctl stop -m fast`), then comes back first as a hot standby, read-only, for
//! a few seconds (as a failover to a replica looks before its promotion: reads work,
//! every write fails), and is then promoted. Without restarting the service, every
//! transfer requested settles (completed, or failed and refunded), money is neither
//! lost nor created, no subscription ends stopped, and during the outage each one
//! showed `retrying` with its error, in its status and in `/metrics`.
//!
//! The read-only phase is what a subscription's error policy used to meet: the
//! transfer process reads its backlog, every command fails, and after five tries in
//! about three seconds it stopped for good (and so did the projectors, whose
//! checkpoint `SELECT … FOR UPDATE` fails). While the server is simply down, reads
//! fail before any event is handed over, which the runner always retried.
//!
//! Skipped, with a notice, when `TEST_DATABASE_URL` is unset (the PostgreSQL tests'
//! switch) or the PostgreSQL server binaries (`initdb`, `pg_ctl`) are not installed.
//! The shared server on 5432 is never touched: the cluster ([`cluster::Cluster`])
//! lives in a temporary directory, on a free port, with its socket inside it.

// The harness lives with the PostgreSQL store's tests, which use it too.
#[path = "../../../crates/rewind-postgres/tests/common/cluster.rs"]
mod cluster;

use bank::domain::{Account, AccountEvent};
use bank::http::{AppState, metrics::CommandMetrics, metrics::Metrics, router};
use bank::read_model::PROJECTOR;
use bank::service::{Bank, TRANSFER_PROCESS};
use cluster::Cluster;
use rand::Rng;
use rewind::{
    Aggregate, EventFilter, EventStore, GlobalPosition, RecordedEvent, SubscriptionState, SubscriptionStatus,
};
use rewind_cli::Database;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const ACCOUNTS: usize = 12;
const OPENING: i64 = 1_000;
const CLIENTS: usize = 6;
const OUTAGE: Duration = Duration::from_secs(20);
/// Longer than the old default error policy's five tries (about three seconds).
const READ_ONLY: Duration = Duration::from_secs(6);

/// The bank in this process, serving HTTP on a loopback socket.
struct Service {
    bank: Arc<Bank>,
    base: String,
    http: reqwest::Client,
}

impl Service {
    async fn start(database: &Database) -> Service {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let command_metrics: Arc<dyn rewind::Middleware> = Arc::new(CommandMetrics(metrics.clone()));
        let bank = Arc::new(Bank::start(database, vec![command_metrics]).await.expect("bank"));
        let state = AppState { bank: bank.clone(), metrics, replies: Arc::default(), token: None };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
        Service { bank, base, http }
    }

    async fn post(&self, path: &str, body: serde_json::Value, key: &str) -> Option<(u16, serde_json::Value)> {
        let request = self.http.post(format!("{}{path}", self.base)).json(&body).header("idempotency-key", key);
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(serde_json::Value::Null)))
    }

    async fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(serde_json::Value::Null)))
    }

    async fn open(&self, balance: i64) -> String {
        let key = Uuid::new_v4().to_string();
        let (status, body) =
            self.post("/api/accounts", json!({"account": {"initial_balance": balance}}), &key).await.expect("open");
        assert_eq!(status, 201, "{body}");
        body["data"]["uuid"].as_str().expect("uuid").to_owned()
    }
}

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Transfers answered 201, by uuid.
    acknowledged: BTreeSet<Uuid>,
    /// Requests answered otherwise (or not at all), by status (0: no answer).
    refused: BTreeMap<u16, usize>,
}

/// `CLIENTS` tasks requesting transfers between random accounts until `stop`.
fn load(
    service: Arc<Service>,
    accounts: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (service, accounts, stop, ledger) = (service.clone(), accounts.clone(), stop.clone(), ledger.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (from, to, amount) = {
                        let mut rng = rand::rng();
                        let from = rng.random_range(0..accounts.len());
                        (from, (from + rng.random_range(1..accounts.len())) % accounts.len(), rng.random_range(1..300))
                    };
                    let path = format!("/api/accounts/{}/transfer", accounts[from]);
                    let body = json!({"transfer_amount": amount, "destination_account": accounts[to]});
                    let answer = service.post(&path, body, &Uuid::new_v4().to_string()).await;
                    let refused = {
                        let mut ledger = ledger.lock().unwrap();
                        match answer {
                            Some((201, body)) => {
                                let uuid = body["data"]["uuid"].as_str().and_then(|s| s.parse().ok());
                                ledger.acknowledged.insert(uuid.expect("transfer uuid"));
                                false
                            }
                            other => {
                                *ledger.refused.entry(other.map_or(0, |(status, _)| status)).or_default() += 1;
                                true
                            }
                        }
                    };
                    if refused {
                        // Refusals come fast while the database is away; do not spin.
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                }
            })
        })
        .collect()
}

/// Each transfer the log holds, and whether it settled (completed, failed or refunded).
fn transfers(events: &[RecordedEvent]) -> HashMap<Uuid, bool> {
    let mut transfers = HashMap::new();
    for event in events {
        match event.decode::<AccountEvent>().expect("decode") {
            AccountEvent::MoneyTransferRequested { transfer_uuid, .. } => {
                transfers.entry(transfer_uuid).or_insert(false);
            }
            AccountEvent::DepositedIntoAccount { transfer_uuid: Some(transfer_uuid), .. }
            | AccountEvent::MoneyTransferFailed { transfer_uuid, .. }
            | AccountEvent::MoneyTransferRefunded { transfer_uuid, .. } => {
                transfers.insert(transfer_uuid, true);
            }
            _ => {}
        }
    }
    transfers
}

/// Every application event in the service's store (the framework's `$` streams,
/// recorded refusals, left out).
async fn all_events(bank: &Bank) -> Vec<RecordedEvent> {
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut from = GlobalPosition(1);
    bank.app.store().settled_head().await.expect("settled head");
    loop {
        let batch = bank.app.store().read_all(from, 5_000, &EventFilter::all()).await.expect("read the log");
        let Some(last) = batch.last() else { return all };
        from = last.position.next();
        all.extend(batch.into_iter().filter(|e| !rewind::command_outcome::is_system_stream(&e.stream_id)));
    }
}

/// Each account's state folded from the log, by account uuid.
fn fold(events: &[RecordedEvent]) -> BTreeMap<String, Account> {
    let mut accounts: BTreeMap<String, Account> = BTreeMap::new();
    for event in events {
        let decoded: AccountEvent = event.decode().expect("decode");
        accounts.entry(event.stream_id.trim_start_matches("account-").to_owned()).or_default().apply(&decoded);
    }
    accounts
}

/// What the status and `/metrics` showed while the database was away.
#[derive(Default, Debug)]
struct Seen {
    /// Subscriptions seen `retrying` in their status, with the first error shown.
    retrying: BTreeMap<String, String>,
    /// Subscriptions seen retrying and failing in `/metrics`.
    in_metrics: BTreeSet<String>,
}

/// Samples every subscription's status and the service's `/metrics` until `stop`.
fn watch(service: Arc<Service>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        while !stop.load(Ordering::Relaxed) {
            let statuses = service.bank.subscriptions.status();
            for status in &statuses {
                if let (SubscriptionState::Retrying { .. }, Some(error)) = (&status.state, &status.last_error) {
                    seen.retrying.entry(status.name.clone()).or_insert_with(|| error.clone());
                }
            }
            let metrics = service.http.get(format!("{}/metrics", service.base)).send().await;
            let text = match metrics {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            for status in &statuses {
                let retrying =
                    format!(r#"rewind_subscription_state{{state="retrying",subscription="{}"}} 1"#, status.name);
                let failing = format!(r#"rewind_subscription_failing{{subscription="{}"}} 1"#, status.name);
                if text.lines().any(|l| l == retrying) && text.lines().any(|l| l == failing) {
                    seen.in_metrics.insert(status.name.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

fn describe(statuses: &[SubscriptionStatus]) -> String {
    statuses.iter().map(|s| format!("\n  {s:?}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_settle_after_the_database_was_away_then_read_only() {
    let test = "transfers_settle_after_the_database_was_away_then_read_only";
    if std::env::var("TEST_DATABASE_URL").map_or(true, |url| url.is_empty()) {
        eprintln!("skipped {test}: TEST_DATABASE_URL is not set");
        return;
    }
    let Some(cluster) = Cluster::create(test) else { return };
    // `RUST_LOG=rewind=warn` shows the subscriptions' retries.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let began = Instant::now();
    let database = Database::Postgres { url: cluster.url(), schema: "bank".into() };
    let service = Arc::new(Service::start(&database).await);
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        accounts.push(service.open(OPENING).await);
    }
    let accounts = Arc::new(accounts);

    let (stop_load, ledger) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Ledger::default())));
    let clients = load(service.clone(), accounts.clone(), stop_load.clone(), ledger.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = ledger.lock().unwrap().acknowledged.len();
    assert!(before > 0, "transfers were acknowledged before the outage");

    // The outage, under load: the cluster stops, comes back read-only 20 s later, and
    // is promoted 6 s after that. The service keeps running throughout.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch(service.clone(), stop_watch.clone());
    let outage = Instant::now();
    assert!(cluster.stop("fast"), "pg_ctl stop");
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    cluster.start_read_only();
    tokio::time::sleep(READ_ONLY).await;
    cluster.promote();
    let restarted = Instant::now();
    let outage = outage.elapsed();
    stop_watch.store(true, Ordering::Relaxed);
    let seen = watcher.await.expect("watcher");

    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_load.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client");
    }

    // Every transfer in the log settles, within seconds of the cluster's return.
    let deadline = restarted + Duration::from_secs(20);
    let (events, unsettled) = loop {
        let events = all_events(&service.bank).await;
        let unsettled: Vec<Uuid> = transfers(&events).into_iter().filter(|(_, done)| !done).map(|(t, _)| t).collect();
        if unsettled.is_empty() || Instant::now() > deadline {
            break (events, unsettled);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settled_after = restarted.elapsed();
    let statuses = service.bank.subscriptions.status();
    assert!(
        statuses.iter().all(|s| s.state != SubscriptionState::Stopped),
        "no subscription stopped:{}",
        describe(&statuses)
    );
    assert!(
        unsettled.is_empty(),
        "{} of {} transfers never settled after the outage:{}",
        unsettled.len(),
        transfers(&events).len(),
        describe(&statuses)
    );
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let logged = transfers(&events);
    for transfer in &ledger.acknowledged {
        assert!(logged.contains_key(transfer), "acknowledged transfer {transfer} is in the log");
    }

    // Money is conserved: the log and the read model (once caught up) agree on every
    // balance, and the balances add up to the opening sum.
    let head = events.last().map_or(GlobalPosition::START, |e| e.position);
    let caught_up = service.bank.subscriptions.wait_for(PROJECTOR, head);
    tokio::time::timeout(Duration::from_secs(10), caught_up).await.expect("the read model caught up").expect("wait");
    let folded = fold(&events);
    let mut total = 0;
    for account in accounts.iter() {
        let (status, body) = service.get(&format!("/api/accounts/{account}")).await.expect("read account");
        assert_eq!(status, 200, "{body}");
        let balance = body["data"]["current_balance"].as_i64().expect("balance");
        assert_eq!(balance, folded[account].balance, "read model = log for {account}");
        total += balance;
    }
    assert_eq!(total, OPENING * ACCOUNTS as i64, "money neither lost nor created");

    // During the outage every subscription said it was retrying, with its error, in
    // its status and in `/metrics`.
    assert!(statuses.iter().any(|s| s.name == TRANSFER_PROCESS), "the transfer process is among them");
    for status in &statuses {
        assert!(
            seen.retrying.contains_key(&status.name),
            "`{}` showed `retrying` with an error: {seen:?}",
            status.name
        );
        assert!(seen.in_metrics.contains(&status.name), "`{}` showed retrying in /metrics: {seen:?}", status.name);
    }
    eprintln!(
        "{test}: {} transfers ({} acknowledged; refused by status: {:?}); database away {:.1} s (then read-only {} s); \
         all settled {:.1} s after the promotion; {:.1} s in all. First errors shown: {:?}",
        logged.len(),
        ledger.acknowledged.len(),
        ledger.refused,
        outage.as_secs_f64() - READ_ONLY.as_secs_f64(),
        READ_ONLY.as_secs(),
        settled_after.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        seen.retrying,
    );
    service.bank.shutdown().await;
}
