//! Mining old events: a store written for months without the miner gets it later.
//!
//! 1. History: many users fill, trim and check out orders (and have some commands
//!    refused) with only the basket running.
//! 2. The shop starts again with the miner; it catches up from the origin while a
//!    task keeps dispatching, and those dispatches succeed during the catch-up.
//! 3. Once the miner has done the last removal, its table must equal exactly what
//!    a plain Rust fold of the store's events gives.
//!
//! The same test, and the same projector code, runs on SQLite and, when
//! `TEST_DATABASE_URL` is set, on PostgreSQL.

mod common;

use common::Rng;
use rewind::prelude::*;
use rewind_backend::Database;
use shop::order::{AddProduct, CheckOut, Item, OrderError, OrderEvent, RemoveProduct};
use shop::removed_products::{RemovedProduct, RemovedProductsProjector, all_removed};
use shop::{CatchUpError, Mining, ORDER_STREAM_PREFIX, Shop};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const USERS: usize = 15;
const NAMES: [&str; 12] =
    ["Tea", "Coffee", "Milk", "Bread", "Jam", "Honey", "Rice", "Oats", "Salt", "Pepper", "Olive oil", "Soap"];
/// Orders written before the miner exists, and while it catches up.
const HISTORY_ORDERS: usize = 240;
const LIVE_ORDERS: usize = 40;
/// Small batches, so the catch-up lasts long enough to serve during it.
const MINER_BATCH: usize = 10;
const PATIENCE: Duration = Duration::from_secs(120);

fn user(n: usize) -> Uuid {
    Uuid::from_u128(0x5000 + n as u128)
}

fn order(n: usize) -> Uuid {
    Uuid::from_u128(0x0d00_0000 + n as u128)
}

/// Product `n` as sold in order `order_no`: its name and price change over time,
/// so the miner must keep the latest removal's.
fn product(n: usize, order_no: usize) -> Item {
    let version = order_no % 3;
    Item {
        id: Uuid::from_u128(0x1000 + n as u128),
        name: format!("{} (v{version})", NAMES[n]),
        price_in_cents: 100 * (n as i64 + 1) + 10 * version as i64,
    }
}

/// One order's shopping: adds, a few removals, now and then a refused removal,
/// and a check-out one time in two. Panics on any unexpected answer.
async fn shop_one(shop: &Shop, rng: &mut Rng, order_no: usize) {
    let (order_id, user_id) = (order(order_no), user(rng.below(USERS)));
    let mut units = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let item = product(rng.below(NAMES.len()), order_no);
        units.push(item.id);
        shop.send(AddProduct { order_id, user_id, item }).await.expect("add is accepted");
    }
    for _ in 0..rng.below(4).min(units.len()) {
        let item_id = units.swap_remove(rng.below(units.len()));
        shop.send(RemoveProduct { order_id, user_id, item_id }).await.expect("remove is accepted");
    }
    if rng.one_in(5) {
        let item_id = Uuid::from_u128(0xdead);
        let refused = shop.send(RemoveProduct { order_id, user_id, item_id }).await;
        assert!(matches!(refused, Err(DispatchError::Domain(OrderError::NotInBasket { .. }))), "{refused:?}");
    }
    if !units.is_empty() && rng.one_in(2) {
        shop.send(CheckOut { order_id, user_id }).await.expect("check-out is accepted");
    }
}

/// Writes orders `0..HISTORY_ORDERS` from four concurrent shoppers.
async fn write_history(shop: &Arc<Shop>) {
    const SHOPPERS: usize = 4;
    let tasks: Vec<_> = (0..SHOPPERS)
        .map(|shopper| {
            let shop = shop.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(shopper as u64 + 1);
                for order_no in (shopper..HISTORY_ORDERS).step_by(SHOPPERS) {
                    shop_one(&shop, &mut rng, order_no).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("shopper");
    }
}

/// Every application event of the store, in global order.
async fn all_events(shop: &Shop) -> Vec<RecordedEvent> {
    let store = shop.app.store();
    store.settled_head().await.expect("settled head");
    let (mut events, mut from) = (Vec::new(), Default::default());
    loop {
        let page = store.read_all(from, 500, &EventFilter::all()).await.expect("read_all");
        let Some(last) = page.last() else { break };
        from = last.position.next();
        events.extend(page);
    }
    events.retain(|e| e.stream_id.starts_with(ORDER_STREAM_PREFIX));
    events
}

/// The miner's table computed by hand from the events: the model it must equal.
fn fold_removals(events: &[RecordedEvent]) -> BTreeMap<(Uuid, Uuid), RemovedProduct> {
    let mut table = BTreeMap::new();
    for event in events {
        let OrderEvent::ProductRemovedFromOrder { user_id, item, .. } = event.decode().expect("an order event") else {
            continue;
        };
        let row = table.entry((user_id, item.id)).or_insert(RemovedProduct {
            user_id,
            item_id: item.id,
            name: String::new(),
            price_in_cents: 0,
            times_removed: 0,
            last_removed_at: event.created_at,
        });
        row.times_removed += 1;
        (row.name, row.price_in_cents, row.last_removed_at) = (item.name, item.price_in_cents, event.created_at);
    }
    table
}

/// The position of the last removal, which the miner must reach.
fn last_removal(events: &[RecordedEvent]) -> &RecordedEvent {
    let filter = RemovedProductsProjector.filter();
    events.iter().rev().find(|e| filter.matches(&e.stream_id, &e.event_type)).expect("some removals")
}

async fn miner_catches_up_with_history_while_serving(database: Database) {
    // 1. History, before anyone thought of mining.
    let shop = Arc::new(Shop::start(&database, Mining::Off).await.expect("start without the miner"));
    write_history(&shop).await;
    assert!(matches!(shop.catch_up_miner(|_| {}).await, Err(CatchUpError::NotMining)));
    let history = all_events(&shop).await;
    let history_target = last_removal(&history).position;
    shop.shutdown().await;
    drop(shop);

    // 2. The miner is added; a task keeps shopping while it catches up.
    let shop = Arc::new(Shop::start(&database, Mining::InBatchesOf(MINER_BATCH)).await.expect("start with the miner"));
    let writer = {
        let shop = shop.clone();
        tokio::spawn(async move {
            let (mut rng, mut during_catch_up) = (Rng::new(99), 0);
            for order_no in HISTORY_ORDERS..HISTORY_ORDERS + LIVE_ORDERS {
                shop_one(&shop, &mut rng, order_no).await;
                let mined = shop.subscriptions.status_of("removed_products").expect("miner status").position;
                during_catch_up += usize::from(mined < history_target);
            }
            during_catch_up
        })
    };
    let mut reports = 0;
    let caught_up = tokio::time::timeout(PATIENCE, shop.catch_up_miner(|_| reports += 1))
        .await
        .expect("the miner catches up in time")
        .expect("the miner catches up");
    assert!(caught_up.target >= history_target.0, "it waited at least for the history");
    let during_catch_up = writer.await.expect("the writer's dispatches all succeed");
    assert!(during_catch_up > 0, "orders were served while the miner caught up ({reports} progress reports)");

    // 3. The miner, done with the last removal, holds exactly the fold of the events.
    let events = all_events(&shop).await;
    let target = last_removal(&events).position;
    tokio::time::timeout(PATIENCE, shop.subscriptions.wait_for("removed_products", target))
        .await
        .expect("the miner reaches the last removal in time")
        .expect("the miner is running");
    let expected = fold_removals(&events);
    let mined: BTreeMap<(Uuid, Uuid), RemovedProduct> =
        all_removed(&*shop.read_model).await.expect("query").into_iter().map(|r| ((r.user_id, r.item_id), r)).collect();
    let removals = expected.values().map(|r| r.times_removed).sum::<i64>();
    assert!(
        expected.len() > 50 && removals > 200,
        "a history worth mining: {} rows, {removals} removals",
        expected.len()
    );
    assert_eq!(mined.len(), expected.len(), "one row per user and product removed");
    for (key, want) in &expected {
        assert_eq!(mined.get(key), Some(want), "user {} product {}", key.0, key.1);
    }
    let status = shop.subscriptions.status_of("removed_products").expect("miner status");
    assert_eq!(status.last_error, None);
    shop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_catches_up_with_history_while_serving_on_sqlite() {
    let (database, _dir) = common::sqlite();
    miner_catches_up_with_history_while_serving(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miner_catches_up_with_history_while_serving_on_postgres() {
    let Some(database) = common::postgres("miner_catches_up_with_history_while_serving_on_postgres") else { return };
    miner_catches_up_with_history_while_serving(database).await;
}
