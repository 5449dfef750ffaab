//! Rewind's operations mounted in the real `bank` binary, end to end: `events`,
//! `projections` (status, rebuild, dead letters), `replay`, `export` and `import`,
//! and their refusals. Data is written by an in-process bank on the same database
//! (the commands are what is under test), then the binary is run on it. On SQLite,
//! and on PostgreSQL when `TEST_DATABASE_URL` is set. The monthly statements
//! projection catching up on an existing store is tested here too.

mod common;

use bank::domain::*;
use bank::read_model::PROJECTOR;
use bank::read_model::statements::STATEMENTS;
use bank::service::{Bank, BankApp, TRANSFER_PROCESS};
use common::{Server, all_events, databases, seconds};
use rewind::{Application, Consistency, DeadLetter, DispatchOptions, EventStore, FailureReport, FailureState};
use rewind_cli::{Backend, Database, OpenMode};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use uuid::Uuid;

/// Runs `bank ARGS…`.
fn bank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bank")).args(args).env("RUST_LOG", "warn").output().expect("run bank")
}

/// Runs `bank ARGS…`, which must succeed; its stdout.
fn ok(args: &[&str]) -> String {
    let output = bank(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bank {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Runs `bank ARGS…`, which must fail; its stderr.
fn fails(args: &[&str]) -> String {
    let output = bank(args);
    assert!(!output.status.success(), "bank {args:?} should have failed");
    String::from_utf8(output.stderr).expect("utf-8")
}

async fn open(app: &Application, balance: i64) -> Uuid {
    let account_uuid = Uuid::new_v4();
    // Strong: the read model shows it on return (transfers check their destination there).
    let strong = DispatchOptions::new().consistency(Consistency::Strong);
    app.dispatch_with(OpenAccount { account_uuid, initial_balance: balance }, strong).await.expect("open");
    account_uuid
}

async fn deposit(app: &Application, account_uuid: Uuid, amount: i64) {
    app.dispatch(DepositIntoAccount { account_uuid, deposit_amount: amount, transfer_uuid: None })
        .await
        .expect("deposit");
}

/// Waits until every subscription of `bank` has done everything, its own reactions included.
async fn settle(bank: &Bank) {
    bank.settle().await.expect("settle");
}

/// A bank with accounts, deposits, withdrawals, a settled transfer and a closed
/// account; returns the accounts.
async fn seed(database: &str) -> Vec<Uuid> {
    let database: Database = database.parse().expect("database");
    let bank = Bank::start(&database, Vec::new()).await.expect("start");
    let mut accounts = Vec::new();
    for i in 0..6 {
        let account = open(&bank.app, 1_000 + i).await;
        deposit(&bank.app, account, 10 * (i + 1)).await;
        accounts.push(account);
    }
    let withdraw = WithdrawFromAccount { account_uuid: accounts[1], withdraw_amount: 7, transfer_uuid: None };
    bank.app.dispatch(withdraw).await.expect("withdraw");
    let transfer = TransferBetweenAccounts {
        account_uuid: accounts[2],
        transfer_uuid: Uuid::new_v4(),
        transfer_amount: 300,
        destination_account_uuid: accounts[3],
    };
    bank.app.dispatch(transfer).await.expect("transfer");
    bank.app.dispatch(CloseAccount { account_uuid: accounts[5] }).await.expect("close");
    settle(&bank).await;
    bank.shutdown().await;
    accounts
}

/// A second database beside `database`, of the same backend.
fn sibling(database: &str, dir: &std::path::Path, name: &str) -> String {
    if database.starts_with("sqlite://") {
        format!("sqlite://{}", dir.join(format!("{name}.db")).display())
    } else {
        let base = database.split("schema=").next().expect("url");
        format!("{base}schema=rwt_{}_{}{name}", seconds(), &Uuid::new_v4().simple().to_string()[..8])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_commands_show_streams_events_and_follow_new_commits() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let accounts = seed(&database).await;
        let streams = ok(&["events", "streams", "--database", &database, "--prefix", "account-"]);
        assert_eq!(streams.lines().count(), 6, "{streams}");
        let first = format!("account-{}", accounts[0]);
        assert!(streams.lines().any(|l| l == format!("{first}  2")), "stream and version: {streams}");

        let read = ok(&["events", "read", &first, "--database", &database, "--json"]);
        let lines: Vec<serde_json::Value> = read.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event_type"], "AccountOpened");
        assert_eq!(lines[1]["data"]["new_current_balance"], 1_010);
        let last = ok(&["events", "read", &first, "--database", &database, "--backward", "--limit", "1"]);
        assert_eq!(last.lines().count(), 1);
        assert!(last.contains("DepositedIntoAccount") && last.contains(&format!("{first}@2")), "{last}");

        let all = ok(&["events", "all", "--database", &database]);
        assert_eq!(all.lines().count(), all_events(&database).await.len());
        let closed = ok(&["events", "all", "--database", &database, "--type", "AccountClosed", "--json"]);
        assert_eq!(closed.lines().count(), 1, "{closed}");

        // `tail` follows commits made by another process.
        let mut tail = Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["events", "tail", "--database", &database, "--json"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("tail");
        let (lines, received) = std::sync::mpsc::channel();
        let stdout = tail.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        // The tail starts at the next commit; keep depositing until it shows one
        // (a deposit made before it started reading is not shown, by design).
        let writer = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("writer");
        let mut seen = None;
        for _ in 0..100 {
            deposit(&writer.app, accounts[0], 1).await;
            if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
                seen = Some(line);
                break;
            }
        }
        writer.shutdown().await;
        let _ = tail.kill();
        let _ = tail.wait();
        let line: serde_json::Value = serde_json::from_str(&seen.expect("tail printed a new commit")).expect("JSON");
        assert_eq!(line["event_type"], "DepositedIntoAccount");
        assert_eq!(line["stream_id"], first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_until_a_time_serves_the_bank_as_it_was() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let db: Database = database.parse().expect("db");
        let bank = Bank::start(&db, Vec::new()).await.expect("start");
        let account = open(&bank.app, 1_000).await;
        deposit(&bank.app, account, 10).await;
        let stream = format!("account-{account}");
        let events =
            bank.app.store().read_stream(&stream, rewind::StreamVersion(1), rewind::Direction::Forward, 10).await;
        let moment = events.expect("read")[1].created_at;
        deposit(&bank.app, account, 20).await;
        settle(&bank).await;
        bank.shutdown().await;
        drop(bank);

        let until = moment.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let then = sibling(&database, dir.path(), "then");
        ok(&["replay", "--database", &database, "--until", &until, "--into", &then]);
        let server = Server::start(&then);
        assert_eq!(server.balance(&account.to_string()).await, 1_010, "between the two deposits ({database})");
        let statements = server.get(&format!("/api/accounts/{account}/statements")).await.1;
        assert_eq!(statements["data"][0]["closing_balance"], 1_010, "every projection is as of then: {statements}");
        assert_eq!(server.terminate().code(), Some(0));

        let first = sibling(&database, dir.path(), "first");
        ok(&["replay", "--database", &database, "--position", "1", "--into", &first]);
        let server = Server::start(&first);
        assert_eq!(server.balance(&account.to_string()).await, 1_000, "after the opening only");
        assert_eq!(server.terminate().code(), Some(0));

        let refused = fails(&["replay", "--database", &database, "--position", "1", "--into", &first]);
        assert!(refused.contains("must be empty"), "{refused}");
    }
}

/// Every account as a server answers it.
async fn accounts_served(server: &Server, accounts: &[Uuid]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for account in accounts {
        all.push(server.get(&format!("/api/accounts/{account}")).await.1);
        all.push(server.get(&format!("/api/accounts/{account}/transactions")).await.1);
        all.push(server.get(&format!("/api/accounts/{account}/statements")).await.1);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_another_backend_serves_the_same_bank() {
    let dir = tempfile::tempdir().expect("dir");
    let source = format!("sqlite://{}", dir.path().join("source.db").display());
    let accounts = seed(&source).await;
    let file = dir.path().join("bank.jsonl");
    let file = file.to_str().expect("path");
    let output = bank(&["export", "--database", &source, "--out", file]);
    assert!(output.status.success());
    let exported = std::fs::read_to_string(file).expect("export file");
    let original = all_events(&source).await;
    assert_eq!(exported.lines().count(), original.len());
    // Not a terminal: no progress bar, only the summary.
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(stderr, format!("exported {} events\n", original.len()));

    // Into PostgreSQL when configured (the documented way off SQLite), else into another SQLite file.
    let destination = databases(dir.path()).pop().filter(|d| d.starts_with("postgres")).map_or_else(
        || format!("sqlite://{}", dir.path().join("imported.db").display()),
        |pg| sibling(&pg, dir.path(), "imported"),
    );
    ok(&["import", "--database", &destination, "--in", file]);
    let imported = all_events(&destination).await;
    assert_eq!(imported.len(), original.len());
    for (copy, source) in imported.iter().zip(&original) {
        let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
        assert_eq!(json(&copy.data), json(&source.data));
        assert_eq!(
            (copy.event_id, &copy.stream_id, copy.stream_version, copy.position, &copy.metadata, copy.created_at),
            (
                source.event_id,
                &source.stream_id,
                source.stream_version,
                source.position,
                &source.metadata,
                source.created_at
            ),
        );
    }
    let (from, to) = (Server::start(&source), Server::start(&destination));
    assert_eq!(accounts_served(&to, &accounts).await, accounts_served(&from, &accounts).await, "{destination}");
    assert_eq!(from.terminate().code(), Some(0));
    assert_eq!(to.terminate().code(), Some(0));

    // Export to standard output gives the same lines; exporting the copy gives the
    // same events (PostgreSQL's jsonb may reorder keys, so compare parsed lines).
    assert_eq!(ok(&["export", "--database", &source, "--out", "-"]), exported);
    let parse =
        |text: &str| text.lines().map(|l| serde_json::from_str(l).expect("line")).collect::<Vec<serde_json::Value>>();
    assert_eq!(parse(&ok(&["export", "--database", &destination, "--out", "-"])), parse(&exported), "{destination}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_import_names_its_line_and_imports_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let source = format!("sqlite://{}", dir.path().join("source.db").display());
    seed(&source).await;
    let good = ok(&["export", "--database", &source, "--out", "-"]);
    let lines: Vec<&str> = good.lines().collect();
    let truncated = [&lines[..2], &[&lines[2][..lines[2].len() / 2]], &lines[3..]].concat();
    // Positions may have holes (a PostgreSQL store leaves them), so a missing line
    // shows where its stream's versions jump: here the first account's opening.
    let gap = lines[1..].to_vec();
    let mut twice = lines.clone();
    twice.insert(4, lines[3]);
    for database in databases(dir.path()) {
        let destination = sibling(&database, dir.path(), "bad");
        for (bad, line, why) in [
            (&truncated, "line 3", "not an exported event"),
            (&gap, "line 1", "which is at version 0"),
            (&twice, "line 5", "position 4 is not after 4"),
        ] {
            let file = dir.path().join("bad.jsonl");
            std::fs::write(&file, bad.join("\n") + "\n").expect("write");
            let error = fails(&["import", "--database", &destination, "--in", file.to_str().expect("path")]);
            assert!(error.contains(line) && error.contains(why) && error.contains("nothing was imported"), "{error}");
        }
        let missing = fails(&["events", "all", "--database", &destination]);
        assert!(missing.contains("no event store"), "nothing was created: {missing}");
    }
}

/// A SQLite value as the row text shows it: its storage class where it is not
/// plain text or integer (a REAL where an integer belongs must show).
fn sqlite_value(value: rusqlite::Result<rusqlite::types::ValueRef<'_>>) -> String {
    use rusqlite::types::ValueRef;
    match value.expect("value") {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
        other => format!("{other:?}"),
    }
}

/// Fails with the rows only one side has, if the two differ.
#[track_caller]
fn assert_same_rows(actual: &[String], expected: &[String], context: &str) {
    let missing: Vec<&String> = expected.iter().filter(|row| !actual.contains(row)).collect();
    let extra: Vec<&String> = actual.iter().filter(|row| !expected.contains(row)).collect();
    assert!(actual == expected, "{context}\nexpected but missing: {missing:#?}\npresent but not expected: {extra:#?}");
}

/// Every row of the bank's read model tables, as text, in a stable order (a table
/// not made yet has none).
async fn tables(database: &str) -> Vec<String> {
    let names = ["accounts", "account_transactions", "transfers", "monthly_statements"];
    let backend = Backend::open(&database.parse().expect("db"), OpenMode::Existing).await.expect("open");
    match &backend.read_model {
        rewind_cli::ReadModel::Sqlite(model) => model
            .read(move |conn| {
                let mut rows = Vec::new();
                for table in names {
                    let exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
                    if !conn.prepare(exists)?.exists([table])? {
                        continue;
                    }
                    let mut statement = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))?;
                    let columns = statement.column_count();
                    let mut query = statement.query([])?;
                    while let Some(row) = query.next()? {
                        let values: Vec<String> = (0..columns).map(|i| sqlite_value(row.get_ref(i))).collect();
                        rows.push(format!("{table}: {}", values.join(" | ")));
                    }
                }
                Ok::<_, rusqlite::Error>(rows)
            })
            .await
            .expect("read tables"),
        rewind_cli::ReadModel::Postgres(model) => {
            let client = model.client().await.expect("client");
            let mut rows = Vec::new();
            for table in names {
                let exists = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.expect("exists");
                if !exists.get::<_, bool>(0) {
                    continue;
                }
                for row in client.query(&format!("SELECT t::text FROM {table} t ORDER BY 1"), &[]).await.expect("rows")
                {
                    rows.push(format!("{table}: {}", row.get::<_, String>(0)));
                }
            }
            rows
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_reproduces_the_live_tables_and_status_shows_every_subscription() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        seed(&database).await;
        let live = tables(&database).await;
        assert!(live.len() > 20, "the seed filled the tables: {live:?}");
        ok(&["projections", "rebuild", "--all", "--database", &database]);
        assert_eq!(tables(&database).await, live, "a rebuild from the origin gives the same rows");
        ok(&["projections", "rebuild", "bank_read_model", "--database", &database]);
        assert_eq!(tables(&database).await, live);
        let refused = fails(&["projections", "rebuild", TRANSFER_PROCESS, "--database", &database]);
        assert!(refused.contains("not a projector"), "{refused}");
        // A running service (here: this test process) holds its projectors' leases:
        // a rebuild in another process must not reset the tables under it.
        let running = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("start");
        settle(&running).await;
        let busy = fails(&["projections", "rebuild", "--all", "--database", &database]);
        assert!(busy.contains("running in another process"), "{busy}");
        assert_eq!(tables(&database).await, live, "nothing was reset");
        running.shutdown().await;

        let status = ok(&["projections", "status", "--database", &database, "--json"]);
        let statuses: Vec<serde_json::Value> = status.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
        let names: Vec<&str> = statuses.iter().map(|s| s["name"].as_str().expect("name")).collect();
        assert_eq!(names, ["bank_read_model", TRANSFER_PROCESS, STATEMENTS]);
        assert_eq!(statuses[0]["lag"], 0);
        assert_eq!(statuses[0]["state"], "caught up");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_skipped() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        seed(&database).await;
        let events = all_events(&database).await;
        let backend = Backend::open(&database.parse().expect("db"), OpenMode::Existing).await.expect("open");
        let letter = |event: &rewind::RecordedEvent| DeadLetter {
            subscription: "bank_read_model".into(),
            event: event.clone(),
            error: "disk on fire".into(),
            failed_at: chrono::Utc::now(),
        };
        backend.bookkeeping.add_dead_letter(letter(&events[0])).await.expect("add");
        backend.bookkeeping.add_dead_letter(letter(&events[1])).await.expect("add");

        let status = ok(&["projections", "status", "--database", &database]);
        let row = status.lines().find(|l| l.starts_with("bank_read_model")).expect("row");
        assert!(row.contains(" 2 ") && row.contains("disk on fire"), "{status}");
        let listed = ok(&["projections", "dead-letters", "--database", &database, "--json"]);
        assert_eq!(listed.lines().count(), 2, "{listed}");
        // Replaying a projector's letters rebuilds it, which re-runs their events in order.
        ok(&["projections", "dead-letters", "--database", &database, "--replay"]);
        assert!(backend.bookkeeping.dead_letters(None).await.expect("letters").is_empty());

        backend.bookkeeping.add_dead_letter(letter(&events[2])).await.expect("add");
        ok(&["projections", "dead-letters", "--database", &database, "--name", "bank_read_model", "--skip"]);
        assert!(backend.bookkeeping.dead_letters(None).await.expect("letters").is_empty());
    }
}

/// A dead letter of `subscription` for `event`.
fn dead_letter(subscription: &str, event: &rewind::RecordedEvent) -> DeadLetter {
    DeadLetter {
        subscription: subscription.into(),
        event: event.clone(),
        error: "disk on fire".into(),
        failed_at: chrono::Utc::now(),
    }
}

/// The seeded bank with one more deposit into `accounts[0]`: its first deposit is
/// then older than its newest, so applying it again out of order shows.
async fn seed_with_a_later_deposit(database: &str) -> (Vec<Uuid>, rewind::RecordedEvent) {
    let accounts = seed(database).await;
    let bank = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("start");
    deposit(&bank.app, accounts[0], 5).await;
    settle(&bank).await;
    bank.shutdown().await;
    drop(bank);
    let stream = format!("account-{}", accounts[0]);
    let first_deposit = all_events(database)
        .await
        .into_iter()
        .find(|e| e.stream_id == stream && e.event_type == "DepositedIntoAccount")
        .expect("the first deposit");
    (accounts, first_deposit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_projector_dead_letter_keeps_order_and_applies_once() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let (_, first_deposit) = seed_with_a_later_deposit(&database).await;
        // The live tables are a fresh projection's (see the rebuild test).
        let live = tables(&database).await;
        let backend = Backend::open(&database.parse().expect("db"), OpenMode::Existing).await.expect("open");
        // A running service holds the transfer process's lease: its letter must wait.
        backend.bookkeeping.add_dead_letter(dead_letter(TRANSFER_PROCESS, &first_deposit)).await.expect("add");
        let running = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("start");
        settle(&running).await;
        let busy = fails(&["projections", "dead-letters", "--database", &database, "--replay"]);
        assert!(busy.contains("running in another process"), "{busy}");
        running.shutdown().await;
        drop(running);
        for name in ["bank_read_model", STATEMENTS] {
            backend.bookkeeping.add_dead_letter(dead_letter(name, &first_deposit)).await.expect("add");
        }
        let replayed = bank(&["projections", "dead-letters", "--database", &database, "--replay"]);
        let stderr = String::from_utf8_lossy(&replayed.stderr);
        assert!(replayed.status.success(), "{stderr}");
        assert!(stderr.contains("replayed 3 dead letters (rebuilt bank_read_model, monthly_statements)"), "{stderr}");
        let after = tables(&database).await;
        assert_same_rows(&after, &live, &format!("the old deposit is not applied after the newer one ({database})"));
        assert!(backend.bookkeeping.dead_letters(None).await.expect("letters").is_empty());
        ok(&["projections", "dead-letters", "--database", &database, "--replay"]);
        assert_same_rows(&tables(&database).await, &live, "nothing left to apply twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_supersedes_its_own_dead_letters_only() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let (_, first_deposit) = seed_with_a_later_deposit(&database).await;
        let live = tables(&database).await;
        let backend = Backend::open(&database.parse().expect("db"), OpenMode::Existing).await.expect("open");
        // A rebuild re-runs every event, the dead-lettered ones included.
        for name in ["bank_read_model", STATEMENTS] {
            backend.bookkeeping.add_dead_letter(dead_letter(name, &first_deposit)).await.expect("add");
        }
        ok(&["projections", "rebuild", STATEMENTS, "--database", &database]);
        ok(&["projections", "dead-letters", "--database", &database, "--name", STATEMENTS, "--replay"]);
        assert_same_rows(&tables(&database).await, &live, "the statements count the deposit once");
        let left = backend.bookkeeping.dead_letters(None).await.expect("letters");
        let names: Vec<&str> = left.iter().map(|l| l.subscription.as_str()).collect();
        assert_eq!(names, ["bank_read_model"], "the rebuilt projector's letters went, the other's stayed");
        ok(&["projections", "dead-letters", "--database", &database, "--name", "bank_read_model", "--skip"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_replay_of_a_projector_dead_letter_equals_a_fresh_projection() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let (accounts, first_deposit) = seed_with_a_later_deposit(&database).await;
        let live = tables(&database).await;
        let bank = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("start");
        settle(&bank).await;
        let letter = dead_letter(PROJECTOR, &first_deposit);
        bank.backend.bookkeeping.add_dead_letter(letter).await.expect("add");
        let replay = bank.subscriptions.replay_dead_letter(PROJECTOR, first_deposit.event_id);
        replay.await.expect("replay");
        settle(&bank).await;
        assert_same_rows(&tables(&database).await, &live, &database);
        let again = bank.subscriptions.replay_dead_letter(PROJECTOR, first_deposit.event_id).await;
        assert!(matches!(again, Err(rewind::SubscriptionError::NoDeadLetter(..))), "{again:?}");
        let served = bank.queries.account(accounts[0]).await.expect("query").expect("account");
        assert_eq!(served.current_balance, 1_015);

        // An in-process rebuild supersedes the rebuilt projector's letters only.
        for name in [STATEMENTS, TRANSFER_PROCESS] {
            bank.backend.bookkeeping.add_dead_letter(dead_letter(name, &first_deposit)).await.expect("add");
        }
        bank.subscriptions.rebuild(STATEMENTS).await.expect("rebuild");
        let left = bank.subscriptions.dead_letters(None).await.expect("letters");
        assert_eq!(left.iter().map(|l| l.subscription.as_str()).collect::<Vec<_>>(), [TRANSFER_PROCESS]);
        // The process manager's letter (a deposit it ignores) is replayed with the
        // manager stopped and its lease held here, then the manager runs on.
        let replay = bank.subscriptions.replay_dead_letter(TRANSFER_PROCESS, first_deposit.event_id);
        replay.await.expect("replay the process manager's letter");
        assert!(bank.subscriptions.dead_letters(None).await.expect("letters").is_empty());
        settle(&bank).await;
        assert_same_rows(&tables(&database).await, &live, "rebuilt");
        bank.shutdown().await;
    }
}

/// The line of `projections status` for subscription `name`.
fn row_of(table: &str, name: &str) -> String {
    table.lines().find(|l| l.starts_with(name)).expect("row").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_a_running_service_reports_retrying_or_stopped() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        seed(&database).await;
        let backend = Backend::open(&database.parse().expect("db"), OpenMode::Existing).await.expect("open");
        // What a service's runner records while its transfer process retries (the
        // runner writing it is tested in rewind; here: what the operator sees).
        let now = chrono::Utc::now();
        let report = FailureReport {
            subscription: TRANSFER_PROCESS.into(),
            state: FailureState::Retrying,
            attempt: 7,
            transient: true,
            error: "reading events: connection refused".into(),
            position: None,
            since: now - chrono::Duration::seconds(125),
            updated_at: now - chrono::Duration::seconds(3),
        };
        backend.bookkeeping.report_failure(report).await.expect("report");
        let stopped = FailureReport {
            subscription: STATEMENTS.into(),
            state: FailureState::Stopped,
            attempt: 5,
            transient: false,
            error: "statement month unreadable".into(),
            position: Some(rewind::GlobalPosition(4)),
            since: now,
            updated_at: now,
        };
        backend.bookkeeping.report_failure(stopped).await.expect("report");

        let table = ok(&["projections", "status", "--database", &database]);
        let row = |name: &str| row_of(&table, name);
        let retrying = row(TRANSFER_PROCESS);
        assert!(retrying.contains("retrying"), "{table}");
        assert!(retrying.contains("attempt 7, transient, failing for 2m 5s (reported 3s ago)"), "{table}");
        assert!(retrying.contains("reading events: connection refused"), "{table}");
        let halted = row(STATEMENTS);
        assert!(halted.contains("stopped") && halted.contains("deterministic on event #4"), "{table}");
        assert!(row("bank_read_model").contains("caught up"), "{table}");
        let json = ok(&["projections", "status", "--database", &database, "--json"]);
        let process: serde_json::Value = json
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
            .find(|s| s["name"] == TRANSFER_PROCESS)
            .expect("transfer process");
        assert_eq!((&process["state"], &process["failure"]["attempt"]), (&"retrying".into(), &7.into()));
        assert_eq!(process["last_error"], "reading events: connection refused");

        // Once the service gets past it, the report goes and the status is as before.
        backend.bookkeeping.clear_failure(TRANSFER_PROCESS).await.expect("clear");
        // (Caught up or a little behind: a manager writes its checkpoint lazily for
        // events it ignores, and whether the seed's last event is one is a race.)
        let table = ok(&["projections", "status", "--database", &database]);
        let cleared = row_of(&table, TRANSFER_PROCESS);
        assert!(!cleared.contains("retrying") && !cleared.contains("connection refused"), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_missing_stores_and_newer_schemas_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let error = fails(&["events", "all", "--database", "mysql://localhost/bank"]);
    assert!(error.contains("unsupported database URL"), "{error}");
    let missing = format!("sqlite://{}", dir.path().join("nothing.db").display());
    for command in [&["events", "streams"][..], &["projections", "status"], &["export", "--out", "-"]] {
        let error = fails(&[command, &["--database", &missing]].concat());
        assert!(error.contains("no event store"), "{command:?}: {error}");
    }
    assert!(!dir.path().join("nothing.db").exists(), "inspecting creates nothing");

    for database in databases(dir.path()) {
        seed(&database).await;
        match database.parse().expect("db") {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open");
                conn.pragma_update(None, "user_version", 99).expect("bump");
            }
            Database::Postgres { url, schema } => {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("pg");
                tokio::spawn(connection);
                client.execute(&format!("INSERT INTO {schema}.schema_version VALUES (99)"), &[]).await.expect("bump");
            }
            Database::Memory => unreachable!("not a test database"),
        }
        let error = fails(&["events", "all", "--database", &database]);
        assert!(error.contains("newer"), "{error}");
    }
    let error = fails(&["events", "all", "--database", "postgres://postgres@127.0.0.1:1/none"]);
    assert!(error.contains("postgres://postgres@127.0.0.1:1/none"), "says which database: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_projection_catches_up_on_old_events_while_the_bank_serves() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let db: Database = database.parse().expect("db");
        // A store written before monthly statements existed.
        let before = BankApp { statements: false, ..BankApp::default() };
        let old = Bank::start_app(&db, &before).await.expect("start");
        let mut accounts = Vec::new();
        for i in 0..40 {
            let account = open(&old.app, 100 + i).await;
            for d in 1..=5 {
                deposit(&old.app, account, d).await;
            }
            accounts.push(account);
        }
        settle(&old).await;
        old.shutdown().await;
        drop(old);
        assert!(tables(&database).await.iter().all(|row| !row.starts_with("monthly_statements")));

        // Deployed: the new projection starts from the origin; the bank serves meanwhile
        // (a strongly consistent write does not wait for it).
        let bank = Bank::start_app(&db, &BankApp::default()).await.expect("start");
        let late = open(&bank.app, 5).await;
        let served = bank.queries.account(late).await.expect("query");
        assert_eq!(served.map(|a| a.current_balance), Some(5), "the service answers at once");
        let head = bank.settled_head().await.expect("head");
        bank.subscriptions.wait_for(STATEMENTS, head).await.expect("caught up");
        for (i, account) in accounts.iter().enumerate() {
            let statements = bank.queries.statements(*account).await.expect("statements");
            assert_eq!(statements.len(), 1, "one month");
            let expected = 100 + i as i64 + 15;
            assert_eq!(
                (statements[0].credits, statements[0].closing_balance, statements[0].transactions),
                (Some(expected), expected, 6)
            );
        }
        bank.shutdown().await;
    }
}

/// The issue-14 report, as a user ran it: a settled transfer, then enough deposits
/// into the destination that no cache remembers the transfer's deposit, then the
/// destination closed. Served from a replayed copy, the transfer process starts
/// from the origin; it must find every step already done (in the log, not in a
/// cache) and move no money: no refund of the completed transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_copy_finishes_nothing_that_was_finished() {
    let dir = tempfile::tempdir().expect("dir");
    for database in databases(dir.path()) {
        let db: Database = database.parse().expect("db");
        let bank = Bank::start(&db, Vec::new()).await.expect("start");
        let a = open(&bank.app, 1_000).await;
        let b = open(&bank.app, 100).await;
        let transfer = TransferBetweenAccounts {
            account_uuid: a,
            transfer_uuid: Uuid::new_v4(),
            transfer_amount: 250,
            destination_account_uuid: b,
        };
        bank.app.dispatch(transfer).await.expect("transfer");
        settle(&bank).await;
        for _ in 0..40 {
            deposit(&bank.app, b, 2).await;
        }
        bank.app.dispatch(CloseAccount { account_uuid: b }).await.expect("close");
        settle(&bank).await;
        bank.shutdown().await;
        drop(bank);

        let copy = sibling(&database, dir.path(), "copy");
        ok(&["replay", "--database", &database, "--position", "1000000", "--into", &copy]);
        let copy_db: Database = copy.parse().expect("copy");
        let served = Bank::start(&copy_db, Vec::new()).await.expect("serve the copy");
        let copied = served.settled_head().await.expect("head");
        settle(&served).await;
        settle(&served).await;
        let balance = |id: Uuid| {
            let app = served.app.clone();
            async move { app.aggregate_state::<Account>(&id.to_string()).await.expect("state").0.balance }
        };
        assert_eq!((balance(a).await, balance(b).await), (750, 430), "the copy keeps the books ({database})");
        assert_eq!(served.settled_head().await.expect("head"), copied, "the copy's transfer process appended nothing");
        served.shutdown().await;
    }
}

/// Whether each read-model table of the SQLite file at `path` is STRICT.
fn strict_tables(path: &std::path::Path) -> Vec<(String, bool)> {
    let conn = rusqlite::Connection::open(path).expect("open");
    let mut statement = conn
        .prepare(
            "SELECT name, strict FROM pragma_table_list WHERE schema = 'main' AND name IN
             ('accounts', 'account_transactions', 'transfers', 'monthly_statements') ORDER BY name",
        )
        .expect("prepare");
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

/// A file written before the read-model tables were STRICT: the tables as they were
/// made then, with their rows, and a REAL where an overflowing total left one.
fn make_tables_lax(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    let names = ["accounts", "account_transactions", "transfers", "monthly_statements"];
    let lax = [
        include_str!("../src/read_model/accounts_sqlite.sql"),
        include_str!("../src/read_model/statements_sqlite.sql"),
    ]
    .concat()
    .replace(") STRICT;", ");");
    for name in names {
        conn.execute_batch(&format!("ALTER TABLE {name} RENAME TO strict_{name}")).expect("rename");
    }
    conn.execute_batch(&lax).expect("lax tables");
    for name in names {
        conn.execute_batch(&format!("INSERT INTO {name} SELECT * FROM strict_{name}; DROP TABLE strict_{name}"))
            .expect("copy");
    }
    conn.execute_batch(&lax).expect("the index again");
    conn.execute_batch("UPDATE monthly_statements SET credits = 1.5e19").expect("a REAL");
    assert!(strict_tables(path).iter().all(|(_, strict)| !strict));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_tables_from_before_strict_is_rebuilt_strict() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bank.db");
    let database = format!("sqlite://{}", path.display());
    let accounts = seed(&database).await;
    let live = tables(&database).await;
    make_tables_lax(&path);

    let bank = Bank::start(&database.parse().expect("db"), Vec::new()).await.expect("start");
    settle(&bank).await;
    let expected: Vec<(String, bool)> =
        ["account_transactions", "accounts", "monthly_statements", "transfers"].map(|n| (n.to_owned(), true)).into();
    assert_eq!(strict_tables(&path), expected);
    let statements = bank.queries.statements(accounts[0]).await.expect("statements read");
    assert_eq!(statements[0].credits, Some(1_010));
    bank.shutdown().await;
    drop(bank);
    assert_same_rows(&tables(&database).await, &live, "rebuilt from the events");
}
