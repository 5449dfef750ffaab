//! The real `bank` binary on a real socket: the lifecycle, shutdown on SIGTERM, the
//! start-up refusal, 16 concurrent clients keeping the books balanced, and a kill -9
//! under load that loses no acknowledged command. On SQLite, and on PostgreSQL when
//! `TEST_DATABASE_URL` is set.

use bank::domain::{Account, AccountEvent};
use rand::Rng;
use rewind::{Aggregate, RecordedEvent};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod common;

use common::{Server, all_events, databases};

/// Each account's state folded from the log.
fn fold(events: &[RecordedEvent]) -> BTreeMap<String, Account> {
    let mut accounts: BTreeMap<String, Account> = BTreeMap::new();
    for event in events {
        let decoded: AccountEvent = event.decode().expect("decode");
        let id = event.stream_id.trim_start_matches("account-").to_owned();
        accounts.entry(id).or_default().apply(&decoded);
    }
    accounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_over_a_real_socket_then_sigterm_exits_0() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let server = Server::start(&database);
        let (a, b) = (server.open(1000).await, server.open(50).await);
        let (status, body) = server
            .post(&format!("/api/accounts/{a}/deposit"), json!({"deposit_amount": 100}), None)
            .await
            .expect("deposit");
        assert_eq!((status, &body["data"]["current_balance"]), (200, &json!(1100)));
        let (status, body) = server
            .post(&format!("/api/accounts/{a}/withdraw"), json!({"withdrawal_amount": 30}), None)
            .await
            .expect("withdraw");
        assert_eq!((status, &body["data"]["current_balance"]), (200, &json!(1070)));
        let (status, body) = server
            .post(
                &format!("/api/accounts/{a}/transfer"),
                json!({"transfer_amount": 70, "destination_account": b}),
                None,
            )
            .await
            .expect("transfer");
        assert_eq!(status, 201, "{body}");
        let transfer = body["data"]["uuid"].as_str().expect("uuid").to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.get(&format!("/api/transfers/{transfer}")).await.1["data"]["status"] != "completed" {
            assert!(Instant::now() < deadline, "transfer settled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((server.balance(&a).await, server.balance(&b).await), (1000, 120));
        let closed = server.http.delete(format!("{}/api/accounts/{b}", server.base)).send().await.expect("close");
        assert_eq!(closed.status().as_u16(), 200);
        assert_eq!(server.get(&format!("/api/accounts/{b}")).await.1["data"]["status"], "closed");
        let status = server.terminate();
        assert!(status.success(), "SIGTERM exits 0, got {status}");
        // The data outlives the process.
        let server = Server::start(&database);
        assert_eq!(server.balance(&a).await, 1000);
        server.terminate();
    }
}

#[test]
fn refuses_to_listen_beyond_loopback_without_a_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["serve", "--listen", "0.0.0.0:0", "--database", "sqlite:///nonexistent-dir-never-created/bank.db"])
        .env_remove("BANK_API_TOKEN")
        .output()
        .expect("run bank");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without BANK_API_TOKEN"), "{stderr}");
}

#[test]
fn a_bad_database_url_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["serve", "--database", "mysql://nope"])
        .output()
        .expect("run bank");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported database URL"));
}

/// What the clients were told happened.
#[derive(Default)]
struct Ledger {
    deposits: i64,
    withdrawals: i64,
    /// Idempotency keys of acknowledged deposits and withdrawals.
    acknowledged: Vec<(String, String)>,
}

/// `clients` tasks doing random deposits, withdrawals and transfers across `accounts`
/// until `stop` or `ops` each; every operation carries an idempotency key.
async fn load(server: Arc<Server>, accounts: Arc<Vec<String>>, clients: usize, ops: usize, ledger: Arc<Mutex<Ledger>>) {
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (server, accounts, ledger) = (server.clone(), accounts.clone(), ledger.clone());
            tokio::spawn(async move {
                for op in 0..ops {
                    let (from, to, amount, kind) = {
                        let mut rng = rand::rng();
                        let from = rng.random_range(0..accounts.len());
                        (
                            from,
                            (from + rng.random_range(1..accounts.len())) % accounts.len(),
                            rng.random_range(1..200),
                            rng.random_range(0..3),
                        )
                    };
                    let key = format!("c{client}-op{op}");
                    let account = &accounts[from];
                    let (path, body) = match kind {
                        0 => (format!("/api/accounts/{account}/deposit"), json!({"deposit_amount": amount})),
                        1 => (format!("/api/accounts/{account}/withdraw"), json!({"withdrawal_amount": amount})),
                        _ => (
                            format!("/api/accounts/{account}/transfer"),
                            json!({"transfer_amount": amount, "destination_account": accounts[to]}),
                        ),
                    };
                    let Ok((status, _)) = server.post(&path, body, Some(&key)).await else { return };
                    if status / 100 == 2 && kind < 2 {
                        let mut ledger = ledger.lock().unwrap();
                        if kind == 0 {
                            ledger.deposits += amount
                        } else {
                            ledger.withdrawals += amount
                        }
                        ledger.acknowledged.push((path, key));
                    }
                    assert!(status != 500, "no 500 under load");
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits until no transfer is pending in the read model.
async fn settled(server: &Server, events: &[RecordedEvent]) {
    let transfers: HashSet<Uuid> = events
        .iter()
        .filter_map(|e| match e.decode::<AccountEvent>() {
            Ok(AccountEvent::MoneyTransferRequested { transfer_uuid, .. }) => Some(transfer_uuid),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for transfer in transfers {
        loop {
            let status = server.get(&format!("/api/transfers/{transfer}")).await.1["data"]["status"].clone();
            if status == "completed" || status == "failed" {
                break;
            }
            assert!(Instant::now() < deadline, "transfer {transfer} never settled ({status})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Sum of balances = openings + deposits − withdrawals (transfers move money, refunds
/// return it); no balance negative; read model = state folded from the log.
async fn check_books(server: &Server, database: &str, accounts: &[String], opening: i64) -> (i64, i64) {
    let events = all_events(database).await;
    settled(server, &events).await;
    let events = all_events(database).await;
    let folded = fold(&events);
    let (mut deposits, mut withdrawals) = (0, 0);
    for event in &events {
        match event.decode::<AccountEvent>().expect("decode") {
            AccountEvent::DepositedIntoAccount { deposit_amount, transfer_uuid: None, .. } => {
                deposits += deposit_amount
            }
            AccountEvent::WithdrawnFromAccount { withdraw_amount, transfer_uuid: None, .. } => {
                withdrawals += withdraw_amount
            }
            _ => {}
        }
    }
    let mut total = 0;
    for account in accounts {
        let served = server.balance(account).await;
        assert!(served >= 0, "{account} went negative");
        assert_eq!(served, folded[account].balance, "read model = aggregate state for {account}");
        total += served;
    }
    assert_eq!(total, opening * accounts.len() as i64 + deposits - withdrawals, "money neither lost nor created");
    (deposits, withdrawals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_keep_the_books_balanced() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let server = Arc::new(Server::start(&database));
        let accounts = Arc::new(server.open_many(20, 1_000).await);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        load(server.clone(), accounts.clone(), 16, 40, ledger.clone()).await;
        let (deposits, withdrawals) = check_books(&server, &database, &accounts, 1_000).await;
        let ledger = ledger.lock().unwrap();
        assert_eq!(
            (deposits, withdrawals),
            (ledger.deposits, ledger.withdrawals),
            "the log holds exactly what was acknowledged"
        );
        drop(ledger);
        Arc::into_inner(server).expect("sole owner").terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let server = Arc::new(Server::start(&database));
        let accounts = Arc::new(server.open_many(20, 1_000).await);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let load = tokio::spawn(load(server.clone(), accounts.clone(), 16, 1_000, ledger.clone()));
        while ledger.lock().unwrap().acknowledged.len() < 100 + rand::rng().random_range(0..200) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // kill -9 while requests are in flight.
        let pid = server.child.id().to_string();
        Command::new("kill").args(["-KILL", &pid]).status().expect("kill -9");
        let _ = load.await;
        let acknowledged = std::mem::take(&mut ledger.lock().unwrap().acknowledged);
        if let Ok(mut server) = Arc::try_unwrap(server) {
            let _ = server.child.wait();
        }

        let server = Server::start(&database);
        let events = all_events(&database).await;
        let causes: HashSet<Uuid> = events.iter().filter_map(|e| e.metadata.causation_id).collect();
        for (path, key) in &acknowledged {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("idempotency-key", key.parse().expect("header"));
            let keyed = bank::http::idempotency::Keyed::of(&headers, &format!("POST {path}"), None);
            let command = keyed.derive("command");
            assert!(causes.contains(&command), "acknowledged {path} ({key}) is in the log");
        }
        check_books(&server, &database, &accounts, 1_000).await;
        server.terminate();
    }
}

/// `memory://` serves the same API on an in-memory store, and keeps nothing: a
/// restart starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_store_serves_and_keeps_nothing() {
    let server = Server::start("memory://");
    let (a, b) = (server.open(1_000).await, server.open(10).await);
    let (status, _) =
        server.post(&format!("/api/accounts/{a}/deposit"), json!({"deposit_amount": 5}), None).await.expect("deposit");
    assert_eq!(status, 200);
    assert_eq!((server.balance(&a).await, server.balance(&b).await), (1_005, 10));
    assert_eq!(server.terminate().code(), Some(0));
    let restarted = Server::start("memory://");
    assert_eq!(restarted.get(&format!("/api/accounts/{a}")).await.0, 404);
    assert_eq!(restarted.terminate().code(), Some(0));
}

/// `--otlp-endpoint`: the real binary sends its traces over OTLP/HTTP (protobuf) to
/// a collector, here an axum route standing in for one; what is still buffered at
/// SIGTERM is sent before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_collector_over_http() {
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let _ = sender.send((content_type, body.to_vec()));
            async { axum::http::StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = tempfile::tempdir().expect("dir");
    let database = format!("sqlite://{}", dir.path().join("bank.db").display());
    let server = Server::start_with(&database, &["--otlp-endpoint", &endpoint]);
    server.open(10).await;
    assert!(server.terminate().success(), "SIGTERM exits 0");

    let mut exported = Vec::new();
    while let Ok(Some((content_type, body))) = tokio::time::timeout(Duration::from_secs(10), received.recv()).await {
        assert_eq!(content_type, "application/x-protobuf");
        exported.extend(body);
        // Protobuf keeps strings as they are: the spans' names are in the bytes.
        if [&b"POST /api/accounts"[..], b"dispatch", b"append"].iter().all(|name| contains(&exported, name)) {
            return;
        }
    }
    panic!("the collector did not receive the request's spans ({} bytes)", exported.len());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}
