//! The bank history the operations benches project and copy: 1,000 accounts
//! opened, then deposits spread over them, in the bank's real event format, with
//! timestamps spread over a year (as a real history's would be, for the monthly
//! statements).

use bank::domain::AccountEvent;
use rewind::{GlobalPosition, Metadata, RecordedEvent, StreamVersion};
use uuid::Uuid;

/// How many accounts the history has.
pub const ACCOUNTS: usize = 1_000;

/// The bank history: `total` events.
pub fn history(total: usize) -> Vec<RecordedEvent> {
    let start = chrono::DateTime::parse_from_rfc3339("2025-11-01T00:00:00Z").expect("time").to_utc();
    let step = chrono::Duration::microseconds((365 * 24 * 3600 * 1_000_000i64) / total as i64);
    let accounts: Vec<Uuid> = (0..ACCOUNTS).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
    let mut balances = vec![0i64; ACCOUNTS];
    let mut versions = vec![0u64; ACCOUNTS];
    (0..total)
        .map(|i| {
            let a = i % ACCOUNTS;
            let event = if i < ACCOUNTS {
                balances[a] = 1_000;
                AccountEvent::AccountOpened { account_uuid: accounts[a], initial_balance: 1_000 }
            } else {
                balances[a] += 10;
                AccountEvent::DepositedIntoAccount {
                    account_uuid: accounts[a],
                    deposit_amount: 10,
                    new_current_balance: balances[a],
                    transfer_uuid: None,
                }
            };
            versions[a] += 1;
            let encoded = rewind::encode_event(&event).expect("encode");
            let command = Uuid::new_v4();
            RecordedEvent {
                event_id: Uuid::now_v7(),
                stream_id: format!("account-{}", accounts[a]),
                stream_version: StreamVersion(versions[a]),
                position: GlobalPosition(i as u64 + 1),
                event_type: encoded.event_type,
                data: encoded.data,
                metadata: Metadata {
                    causation_id: Some(command),
                    correlation_id: Some(command),
                    ..Metadata::default()
                },
                created_at: start + step * i as i32,
            }
        })
        .collect()
}
