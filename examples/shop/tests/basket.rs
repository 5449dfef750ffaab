//! The basket read model, strongly consistent: every read right after a dispatch
//! shows it, on SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

mod common;

use rewind::prelude::*;
use rewind_backend::Database;
use shop::basket::BasketLine;
use shop::order::{AddProduct, CheckOut, Item, OrderError, RemoveProduct};
use shop::{Mining, Shop};
use uuid::Uuid;

fn item(id: u128, name: &str, price_in_cents: i64) -> Item {
    Item { id: Uuid::from_u128(id), name: name.into(), price_in_cents }
}

fn line(item: &Item, quantity: i64) -> BasketLine {
    BasketLine { item_id: item.id, name: item.name.clone(), price_in_cents: item.price_in_cents, quantity }
}

async fn basket_reads_back_each_change(database: Database) {
    let shop = Shop::start(&database, Mining::Off).await.expect("start");
    let (order_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let (tea, coffee) = (item(1, "Tea", 350), item(2, "Coffee", 1200));
    assert_eq!(shop.basket(order_id).await.expect("query"), None, "nothing added yet");

    shop.send(AddProduct { order_id, user_id, item: tea.clone() }).await.expect("add tea");
    shop.send(AddProduct { order_id, user_id, item: tea.clone() }).await.expect("add tea again");
    shop.send(AddProduct { order_id, user_id, item: coffee.clone() }).await.expect("add coffee");
    let basket = shop.basket(order_id).await.expect("query").expect("a basket");
    assert_eq!((basket.user_id, basket.checked_out), (user_id, false));
    assert_eq!(basket.lines, [line(&tea, 2), line(&coffee, 1)]);
    assert_eq!(basket.total_in_cents(), Some(1900));

    shop.send(RemoveProduct { order_id, user_id, item_id: coffee.id }).await.expect("remove coffee");
    shop.send(RemoveProduct { order_id, user_id, item_id: tea.id }).await.expect("remove one tea");
    let basket = shop.basket(order_id).await.expect("query").expect("a basket");
    assert_eq!(basket.lines, [line(&tea, 1)], "an emptied line is gone, the other counted down");

    let refused = shop.send(RemoveProduct { order_id, user_id, item_id: coffee.id }).await;
    assert!(matches!(refused, Err(DispatchError::Domain(OrderError::NotInBasket { .. }))), "{refused:?}");
    let refused = shop.send(CheckOut { order_id, user_id: Uuid::new_v4() }).await;
    assert!(matches!(refused, Err(DispatchError::Domain(OrderError::NotYourOrder))), "{refused:?}");

    shop.send(CheckOut { order_id, user_id }).await.expect("check out");
    let basket = shop.basket(order_id).await.expect("query").expect("a basket");
    assert!(basket.checked_out);
    let refused = shop.send(AddProduct { order_id, user_id, item: coffee }).await;
    assert!(matches!(refused, Err(DispatchError::Domain(OrderError::CheckedOut))), "{refused:?}");
    assert_eq!(shop.basket(order_id).await.expect("query").expect("a basket").lines, [line(&tea, 1)]);
    shop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basket_reads_back_each_change_on_sqlite() {
    let (database, _dir) = common::sqlite();
    basket_reads_back_each_change(database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basket_reads_back_each_change_on_postgres() {
    let Some(database) = common::postgres("basket_reads_back_each_change_on_postgres") else { return };
    basket_reads_back_each_change(database).await;
}
