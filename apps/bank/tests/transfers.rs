//! Transfers end to end on the in-memory store: completed, failed, refunded, and
//! idempotent under redelivery. Money is never lost or created.

use bank::app::application;
use bank::domain::*;
use rewind::{
    Application, DispatchError, EventStore, GlobalPosition, MemoryStore, MemorySubscriptionStore, Rejection,
    SubscriptionOptions, SubscriptionStore, Subscriptions,
};
use std::sync::Arc;
use uuid::Uuid;

async fn open(app: &Application, balance: i64) -> Uuid {
    let account_uuid = Uuid::new_v4();
    app.dispatch(OpenAccount { account_uuid, initial_balance: balance }).await.expect("open");
    account_uuid
}

async fn balance(app: &Application, account: Uuid) -> i64 {
    app.aggregate_state::<Account>(&account.to_string()).await.expect("state").0.balance
}

/// The newest event of an account's stream.
async fn last_event(app: &Application, account: Uuid) -> AccountEvent {
    let stream = format!("account-{account}");
    let events = app
        .store()
        .read_stream(&stream, rewind::StreamVersion::END, rewind::Direction::Backward, 1)
        .await
        .expect("read");
    events.first().expect("events").decode().expect("decode")
}

async fn transfer(app: &Application, from: Uuid, to: Uuid, amount: i64) -> Uuid {
    let transfer_uuid = Uuid::new_v4();
    let command = TransferBetweenAccounts {
        account_uuid: from,
        transfer_uuid,
        transfer_amount: amount,
        destination_account_uuid: to,
    };
    app.dispatch(command).await.expect("transfer requested");
    transfer_uuid
}

fn start(app: &Application, bookkeeping: Arc<MemorySubscriptionStore>) -> Subscriptions {
    Subscriptions::builder(app, bookkeeping)
        .process_manager("transfers", TransferProcess, SubscriptionOptions::new())
        .start()
        .expect("start")
}

async fn settle(app: &Application, subs: &Subscriptions) -> GlobalPosition {
    // Each step appends more events; wait until a pass appends nothing new.
    loop {
        let head = app.store().settled_head().await.expect("head");
        subs.wait_for("transfers", head).await.expect("wait");
        if app.store().settled_head().await.expect("head") == head {
            return head;
        }
    }
}

#[tokio::test]
async fn a_transfer_moves_the_money() {
    let app = application(MemoryStore::new());
    let subs = start(&app, Arc::new(MemorySubscriptionStore::new()));
    let (a, b) = (open(&app, 100).await, open(&app, 5).await);
    transfer(&app, a, b, 40).await;
    settle(&app, &subs).await;
    assert_eq!((balance(&app, a).await, balance(&app, b).await), (60, 45));
    subs.shutdown().await;
}

#[tokio::test]
async fn a_transfer_to_a_closed_account_is_refunded() {
    let app = application(MemoryStore::new());
    let bookkeeping = Arc::new(MemorySubscriptionStore::new());
    let (a, b) = (open(&app, 100).await, open(&app, 5).await);
    let t = transfer(&app, a, b, 40).await;
    // The destination closes after the request, before the process runs.
    app.dispatch(CloseAccount { account_uuid: b }).await.expect("close");
    let subs = start(&app, bookkeeping.clone());
    settle(&app, &subs).await;
    assert_eq!((balance(&app, a).await, balance(&app, b).await), (100, 5));
    let last = last_event(&app, a).await;
    assert!(
        matches!(last, AccountEvent::MoneyTransferRefunded { transfer_uuid, amount: 40, .. } if transfer_uuid == t)
    );
    assert_eq!(bookkeeping.load_instance("transfers", &t.to_string()).await.expect("load"), None, "instance stopped");
    subs.shutdown().await;
}

#[tokio::test]
async fn a_transfer_whose_withdrawal_fails_is_recorded_as_failed() {
    let app = application(MemoryStore::new());
    let (a, b) = (open(&app, 100).await, open(&app, 5).await);
    let t = transfer(&app, a, b, 80).await;
    app.dispatch(WithdrawFromAccount { account_uuid: a, withdraw_amount: 50, transfer_uuid: None })
        .await
        .expect("withdraw");
    let subs = start(&app, Arc::new(MemorySubscriptionStore::new()));
    settle(&app, &subs).await;
    assert_eq!((balance(&app, a).await, balance(&app, b).await), (50, 5));
    let last = last_event(&app, a).await;
    assert_eq!(
        last,
        AccountEvent::MoneyTransferFailed { transfer_uuid: t, account_uuid: a, reason: "insufficient funds".into() }
    );
    subs.shutdown().await;
}

#[tokio::test]
async fn redelivering_every_event_moves_no_money_twice() {
    let app = application(MemoryStore::new());
    let bookkeeping = Arc::new(MemorySubscriptionStore::new());
    let accounts = [open(&app, 100).await, open(&app, 100).await, open(&app, 100).await];
    let subs = start(&app, bookkeeping.clone());
    for i in 0..9 {
        transfer(&app, accounts[i % 3], accounts[(i + 1) % 3], 10 + i as i64).await;
    }
    app.dispatch(CloseAccount { account_uuid: accounts[2] }).await.expect("close");
    transfer(&app, accounts[0], accounts[2], 7).await;
    let settled = settle(&app, &subs).await;
    subs.shutdown().await;
    let balances =
        [balance(&app, accounts[0]).await, balance(&app, accounts[1]).await, balance(&app, accounts[2]).await];
    assert_eq!(balances.iter().sum::<i64>(), 300, "money conserved");

    // Simulate a crash before any checkpoint: the process sees every event again.
    bookkeeping.reset_instances("transfers").await.expect("reset");
    let subs = start(&app, bookkeeping);
    subs.wait_for("transfers", settled).await.expect("wait");
    assert_eq!(app.store().settled_head().await.expect("head"), settled, "no command appended anything new");
    for (account, expected) in accounts.iter().zip(balances) {
        assert_eq!(balance(&app, *account).await, expected);
    }
    subs.shutdown().await;
}

#[tokio::test]
async fn validation_rejects_bad_amounts_and_self_transfers() {
    let app = application(MemoryStore::new());
    let a = open(&app, 10).await;
    let result = app.dispatch(DepositIntoAccount { account_uuid: a, deposit_amount: 0, transfer_uuid: None }).await;
    assert!(
        matches!(&result, Err(DispatchError::Rejected(Rejection::Invalid(e))) if e.fields().contains_key("deposit_amount"))
    );
    let same = TransferBetweenAccounts {
        account_uuid: a,
        transfer_uuid: Uuid::new_v4(),
        transfer_amount: 1,
        destination_account_uuid: a,
    };
    let result = app.dispatch(same).await;
    assert!(
        matches!(&result, Err(DispatchError::Rejected(Rejection::Invalid(e))) if e.fields().contains_key("destination_account"))
    );
    assert_eq!(app.store().settled_head().await.expect("head"), GlobalPosition(1));
}
