//! The real `bank serve` on SQLite on the fault-injecting file system
//! (`rewind-faultfs`), which the test serves: the server is a child process, so a
//! kill -9 leaves its unsynced writes with the file system, and a simulated power
//! cut then drops them, as losing power would.
//!
//! * Five rounds of concurrent deposits, kill -9 in the middle, power cut,
//!   restart: every acknowledged deposit is there (each unanswered one is sent
//!   again with its Idempotency-Key, after which every balance is exactly its
//!   opening balance plus its deposits), and the books balance.
//! * fsync answering EIO: deposits get 503, and keep getting 503 once fsync works
//!   again (the store refuses writes until restarted); after a cut and a restart,
//!   nothing acknowledged is missing and nothing refused took effect.
//! * A full disk: deposits get 503 and change nothing; once there is room they
//!   succeed again, and a cut and restart keep exactly the acknowledged ones.
//!
//! Skipped, saying so, only where /dev/fuse is missing. The test process never
//! opens the database itself (see `rewind_faultfs` on why).

use rewind_faultfs::FaultFs;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

mod common;

use common::Server;

const ACCOUNTS: usize = 6;
const CLIENTS: usize = 8;
const OPENING: i64 = 1_000;

fn mounted() -> Option<FaultFs> {
    if !FaultFs::available() {
        eprintln!("SKIPPED: /dev/fuse is missing, so the power-loss tests cannot mount their file system");
        return None;
    }
    Some(FaultFs::mount().expect("mount the fault-injecting file system"))
}

fn database(fs: &FaultFs) -> String {
    format!("sqlite://{}", fs.path().join("bank.db").display())
}

/// kill -9, then reaps the process.
fn kill_9(mut server: Server) {
    Command::new("kill").args(["-KILL", &server.child.id().to_string()]).status().expect("kill -9");
    server.child.wait().expect("reap the server");
}

/// One deposit of 1 sent, with its key; `acknowledged` once answered 200.
#[derive(Debug, Clone)]
struct Deposit {
    account: String,
    key: String,
    acknowledged: bool,
}

async fn deposit(server: &Server, account: &str, key: &str) -> Option<u16> {
    let path = format!("/api/accounts/{account}/deposit");
    server.post(&path, json!({"deposit_amount": 1}), Some(key)).await.ok().map(|(status, _)| status)
}

/// Waits until every account's balance is what `deposits` say (opening balance
/// plus one per deposit that took effect), or fails after a while: the read model
/// may still be catching up after a restart.
async fn expect_balances(server: &Server, accounts: &[String], deposits: &[&Deposit], context: &str) {
    let mut expected: BTreeMap<&str, i64> = accounts.iter().map(|a| (a.as_str(), OPENING)).collect();
    for deposit in deposits {
        *expected.get_mut(deposit.account.as_str()).expect("known account") += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut actual = BTreeMap::new();
        for account in accounts {
            actual.insert(account.as_str(), server.balance(account).await);
        }
        if actual == expected {
            let total: i64 = actual.values().sum();
            assert_eq!(total, OPENING * accounts.len() as i64 + deposits.len() as i64, "{context}: the books balance");
            return;
        }
        assert!(Instant::now() < deadline, "{context}: balances {actual:?}, expected {expected:?}");
        // The read model catches up on its own; there is no signal to wait on over HTTP.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `CLIENTS` tasks depositing into random accounts until the server dies; the
/// server is killed once `kill_after` deposits were acknowledged.
async fn deposit_until_killed(server: Server, accounts: &[String], kill_after: usize) -> Vec<Deposit> {
    let server = Arc::new(server);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (acks, mut acked) = tokio::sync::watch::channel(0usize);
    let acks = Arc::new(acks);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (server, sent, acks, accounts) = (server.clone(), sent.clone(), acks.clone(), accounts.to_vec());
            tokio::spawn(async move {
                loop {
                    let account = accounts[rand::random_range(0..accounts.len())].clone();
                    let key = Uuid::new_v4().to_string();
                    let status = deposit(&server, &account, &key).await;
                    let acknowledged = status == Some(200);
                    sent.lock().expect("sent").push(Deposit { account, key, acknowledged });
                    if acknowledged {
                        acks.send_modify(|n| *n += 1);
                    }
                    if status.is_none() {
                        return; // the server is gone
                    }
                }
            })
        })
        .collect();
    acked.wait_for(|n| *n >= kill_after).await.expect("acks");
    let pid = server.child.id().to_string();
    Command::new("kill").args(["-KILL", &pid]).status().expect("kill -9");
    for client in clients {
        client.await.expect("client");
    }
    let mut server = Arc::into_inner(server).expect("clients are done");
    server.child.wait().expect("reap the server");
    Arc::into_inner(sent).expect("clients are done").into_inner().expect("sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_power_cuts_under_load_lose_no_acknowledged_deposit() {
    let Some(mut fs) = mounted() else { return };
    let database = database(&fs);
    let mut server = Server::start(&database);
    let accounts = server.open_many(ACCOUNTS, OPENING).await;
    let mut deposits: Vec<Deposit> = Vec::new();
    for round in 0..5 {
        let sent = deposit_until_killed(server, &accounts, rand::random_range(20..150)).await;
        let cut = fs.power_cut().expect("power cut");
        server = Server::start(&database);
        let unanswered: Vec<Deposit> = sent.iter().filter(|d| !d.acknowledged).cloned().collect();
        for again in &unanswered {
            assert_eq!(deposit(&server, &again.account, &again.key).await, Some(200), "{again:?} sent again");
        }
        eprintln!(
            "round {round}: {} acknowledged, {} sent again after the cut; cut {cut:?}",
            sent.len() - unanswered.len(),
            unanswered.len()
        );
        deposits.extend(sent);
        expect_balances(&server, &accounts, &deposits.iter().collect::<Vec<_>>(), &format!("round {round}")).await;
    }
    kill_9(server);
    assert!(fs.fsyncs() > 0, "the server fsynced through the file system");
}

/// Deposits one at a time while `status` is expected; returns those acknowledged.
async fn deposits_answered(server: &Server, account: &str, count: usize, status: u16) -> Vec<Deposit> {
    let mut acknowledged = Vec::new();
    for _ in 0..count {
        let key = Uuid::new_v4().to_string();
        assert_eq!(deposit(server, account, &key).await, Some(status), "deposit answered {status}");
        if status == 200 {
            acknowledged.push(Deposit { account: account.to_owned(), key, acknowledged: true });
        }
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_is_a_503_until_restart_and_loses_nothing_acknowledged() {
    let Some(mut fs) = mounted() else { return };
    let database = database(&fs);
    let server = Server::start(&database);
    let accounts = server.open_many(1, OPENING).await;
    let mut acknowledged = deposits_answered(&server, &accounts[0], 5, 200).await;
    fs.fail_fsync(true);
    deposits_answered(&server, &accounts[0], 3, 503).await;
    assert!(fs.failed_fsyncs() > 0, "an fsync failed");
    fs.fail_fsync(false);
    // The kernel may have dropped what it could not write: no later write is trusted.
    deposits_answered(&server, &accounts[0], 3, 503).await;
    kill_9(server);
    fs.power_cut().expect("power cut");
    let server = Server::start(&database);
    expect_balances(&server, &accounts, &acknowledged.iter().collect::<Vec<_>>(), "after the cut").await;
    acknowledged.extend(deposits_answered(&server, &accounts[0], 3, 200).await);
    expect_balances(&server, &accounts, &acknowledged.iter().collect::<Vec<_>>(), "restarted").await;
    kill_9(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_that_changes_nothing_and_deposits_succeed_once_there_is_room() {
    let Some(mut fs) = mounted() else { return };
    let database = database(&fs);
    let server = Server::start(&database);
    let accounts = server.open_many(1, OPENING).await;
    let mut acknowledged = deposits_answered(&server, &accounts[0], 5, 200).await;
    fs.disk_full(true);
    deposits_answered(&server, &accounts[0], 3, 503).await;
    assert!(fs.refused_writes() > 0, "a write was refused");
    // SQLite rolled the write back: the answer says nothing changed, not "outcome unknown".
    let path = format!("/api/accounts/{}/deposit", accounts[0]);
    let (status, body) = server.post(&path, serde_json::json!({"deposit_amount": 1}), None).await.expect("deposit");
    assert_eq!(status, 503, "{body}");
    assert!(body["errors"].get("outcome").is_none(), "{body}");
    assert!(body["errors"]["message"].as_str().unwrap_or_default().contains("nothing was changed"), "{body}");
    fs.disk_full(false);
    acknowledged.extend(deposits_answered(&server, &accounts[0], 3, 200).await);
    expect_balances(&server, &accounts, &acknowledged.iter().collect::<Vec<_>>(), "room again").await;
    kill_9(server);
    fs.power_cut().expect("power cut");
    let server = Server::start(&database);
    expect_balances(&server, &accounts, &acknowledged.iter().collect::<Vec<_>>(), "after the cut").await;
    kill_9(server);
}
