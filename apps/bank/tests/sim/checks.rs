//! The invariants, checked against the event log and the read model tables.

use crate::sim::workload::Users;
use bank::domain::AccountEvent;
use bank::read_model::{Accounts, Statements};
use rewind::ReadModel;
use rewind::{EventFilter, EventStore, GlobalPosition, RecordedEvent, SharedStore};
use rewind_sqlite::SqliteReadModel;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// The read model tables the bank's projections write.
pub const TABLES: [&str; 4] = ["accounts", "account_transactions", "transfers", "monthly_statements"];

pub async fn all_events(store: &SharedStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let from = events.last().map_or(GlobalPosition(1), |e: &RecordedEvent| e.position.next());
        let page = store.read_all(from, 1_000, &EventFilter::all()).await.expect("read the log");
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

#[derive(Default)]
struct Legs {
    requested: u32,
    withdrawn: u32,
    deposited: u32,
    refunded: u32,
    failed: u32,
}

/// Money is conserved and every transfer settled exactly once. `settled`: nothing is
/// left in flight (the process manager has caught up).
pub fn check_books(events: &[RecordedEvent], settled: bool) -> Vec<String> {
    let mut violations = Vec::new();
    let mut external: i128 = 0;
    let mut balances: HashMap<Uuid, i64> = HashMap::new();
    let mut transfers: BTreeMap<Uuid, Legs> = BTreeMap::new();
    for recorded in events {
        let Ok(event) = recorded.decode::<AccountEvent>() else { continue };
        match &event {
            AccountEvent::AccountOpened { account_uuid, initial_balance } => {
                external += *initial_balance as i128;
                balances.insert(*account_uuid, *initial_balance);
            }
            AccountEvent::DepositedIntoAccount { account_uuid, deposit_amount, new_current_balance, transfer_uuid } => {
                match transfer_uuid {
                    Some(t) => transfers.entry(*t).or_default().deposited += 1,
                    None => external += *deposit_amount as i128,
                }
                step(
                    &mut balances,
                    &mut violations,
                    recorded,
                    *account_uuid,
                    *deposit_amount as i128,
                    *new_current_balance,
                );
            }
            AccountEvent::WithdrawnFromAccount {
                account_uuid,
                withdraw_amount,
                new_current_balance,
                transfer_uuid,
            } => {
                match transfer_uuid {
                    Some(t) => transfers.entry(*t).or_default().withdrawn += 1,
                    None => external -= *withdraw_amount as i128,
                }
                let delta = -(*withdraw_amount as i128);
                step(&mut balances, &mut violations, recorded, *account_uuid, delta, *new_current_balance);
            }
            AccountEvent::MoneyTransferRefunded {
                transfer_uuid, account_uuid, amount, new_current_balance, ..
            } => {
                transfers.entry(*transfer_uuid).or_default().refunded += 1;
                step(&mut balances, &mut violations, recorded, *account_uuid, *amount as i128, *new_current_balance);
            }
            AccountEvent::MoneyTransferRequested { transfer_uuid, .. } => {
                transfers.entry(*transfer_uuid).or_default().requested += 1
            }
            AccountEvent::MoneyTransferFailed { transfer_uuid, .. } => {
                transfers.entry(*transfer_uuid).or_default().failed += 1
            }
            AccountEvent::AccountClosed { .. } => {}
        }
    }
    let mut in_flight: i128 = 0;
    for (uuid, legs) in &transfers {
        let shape = (legs.requested, legs.withdrawn, legs.deposited, legs.refunded, legs.failed);
        let ok = match shape {
            (1, 0, 0, 0, 1) | (1, 1, 1, 0, 0) | (1, 1, 0, 1, 0) => true,
            (1, 0, 0, 0, 0) | (1, 1, 0, 0, 0) => !settled,
            _ => false,
        };
        if !ok {
            violations.push(format!(
                "transfer {uuid}: requested {} withdrawn {} deposited {} refunded {} failed {}{}",
                legs.requested,
                legs.withdrawn,
                legs.deposited,
                legs.refunded,
                legs.failed,
                if settled { " (settled)" } else { "" }
            ));
        }
        if legs.withdrawn > legs.deposited + legs.refunded {
            in_flight += 1;
        }
    }
    let total: i128 = balances.values().map(|&b| b as i128).sum();
    if settled && total != external {
        violations.push(format!("money not conserved: balances {total}, external flows {external}"));
    }
    let _ = in_flight;
    violations
}

fn step(
    balances: &mut HashMap<Uuid, i64>,
    violations: &mut Vec<String>,
    recorded: &RecordedEvent,
    account: Uuid,
    delta: i128,
    after: i64,
) {
    let before = balances.get(&account).copied().unwrap_or(0);
    if before as i128 + delta != after as i128 {
        violations.push(format!(
            "event {} on {account}: balance {before} {delta:+} is not the recorded {after}",
            recorded.position
        ));
    }
    balances.insert(account, after);
}

/// Every acknowledged command's events are in the log, exactly once.
pub fn check_acknowledged(events: &[RecordedEvent], users: &Users) -> Vec<String> {
    let mut by_command: HashMap<Uuid, Vec<&RecordedEvent>> = HashMap::new();
    for event in events {
        if let Some(id) = event.metadata.causation_id {
            by_command.entry(id).or_default().push(event);
        }
    }
    let mut violations = Vec::new();
    for (id, (version, position)) in &users.acknowledged {
        match by_command.get(id).map(Vec::as_slice) {
            Some([event]) if event.position == *position && event.stream_version == *version => {}
            found => violations.push(format!(
                "acknowledged command {id} (version {version}, position {position}): found {:?}",
                found.map(|f| f.iter().map(|e| (e.position, e.stream_version)).collect::<Vec<_>>())
            )),
        }
    }
    violations
}

/// The rows of the bank's tables, as text, in a fixed order.
pub fn dump(model: &SqliteReadModel) -> BTreeMap<&'static str, Vec<String>> {
    let mut tables = BTreeMap::new();
    for table in TABLES {
        let rows = model
            .lookup(|conn| {
                let mut statement = conn.prepare(&format!("SELECT * FROM {table}"))?;
                let columns = statement.column_count();
                let rows = statement.query_map([], |row| {
                    let mut text = String::new();
                    for i in 0..columns {
                        let value: rusqlite::types::Value = row.get(i)?;
                        text.push_str(&format!("{value:?}|"));
                    }
                    Ok(text)
                })?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap_or_else(|e| vec![format!("<{table} unreadable: {e}>")]);
        let mut rows = rows;
        rows.sort();
        tables.insert(table, rows);
    }
    tables
}

/// The tables a fresh projection of `events` writes.
pub async fn fresh(events: &[RecordedEvent]) -> BTreeMap<&'static str, Vec<String>> {
    let events: Vec<RecordedEvent> =
        events.iter().filter(|e| !rewind::command_outcome::is_system_stream(&e.stream_id)).cloned().collect();
    let dir = crate::sim::world::scratch();
    let model = SqliteReadModel::open(dir.path().join("fresh.db")).await.expect("fresh model");
    let accounts = model.projector(Arc::new(Accounts)).await.expect("projector");
    let statements = model.projector(Arc::new(Statements)).await.expect("projector");
    for consumer in [accounts, statements] {
        for chunk in events.chunks(500) {
            // An event no projection can read is passed over, as the live one's
            // dead-letter policy does.
            let mut rest: Vec<RecordedEvent> = chunk.to_vec();
            while !rest.is_empty() {
                match consumer.process(Arc::from(rest.clone())).await {
                    Ok(()) => break,
                    Err(failure) => {
                        let _ = consumer.skip(&rest[failure.failed_at]).await;
                        rest.drain(..=failure.failed_at);
                    }
                }
            }
        }
    }
    dump(&model)
}

/// Differences between two sets of tables, as violations.
pub fn compare(
    what: &str,
    live: &BTreeMap<&'static str, Vec<String>>,
    fresh: &BTreeMap<&'static str, Vec<String>>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for table in TABLES {
        let (a, b) = (&live[table], &fresh[table]);
        if a != b {
            let only_live: Vec<_> = a.iter().filter(|r| !b.contains(r)).take(2).collect();
            let only_fresh: Vec<_> = b.iter().filter(|r| !a.contains(r)).take(2).collect();
            violations.push(format!(
                "{what}: table {table} differs from a fresh projection ({} rows vs {}); only live: {only_live:?}; only fresh: {only_fresh:?}",
                a.len(),
                b.len()
            ));
        }
    }
    violations
}
