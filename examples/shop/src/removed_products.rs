//! The `removed_products` projector, the miner: for each user, the products they
//! took out of a basket (how often, at what name and price, and when last), mined
//! from `product_removed_from_order` events that were recorded long before the
//! projector existed. The use: tell users when a product they put back goes on
//! sale.
//!
//! Adding it later is the point of the example. Registered on a store that already
//! holds years of orders, it starts from the origin (a new name is a new
//! projector), reads only the removals (its [`filter`](Projector::filter)), and
//! catches up in batches while the application goes on serving; from then on it
//! follows new events like any projector. Nothing in the order aggregate or its
//! events was written for it: the removal event already carries the item.
//!
//! One portable upsert per event; the DDL differs per dialect only in column
//! types (`uuid`/`timestamptz` on PostgreSQL, `TEXT` on SQLite). The read model
//! applies each event exactly once, so `times_removed` can be counted up.

use crate::ORDER_STREAM_PREFIX;
use crate::order::OrderEvent;
use chrono::{DateTime, Utc};
use rewind::prelude::*;
use rewind::sql::{Row, ValueError};
use uuid::Uuid;

/// The projector (name `removed_products`).
pub struct RemovedProductsProjector;

/// The stored name of the one event type the miner reads.
pub const REMOVED: &str = "product_removed_from_order";

/// The latest removal's name and price win: a product's name or price may have
/// changed between removals, and the newest is what a sale is compared with.
const UPSERT: &str = "INSERT INTO removed_products
     (user_id, item_id, name, price_in_cents, times_removed, last_removed_at) VALUES ($1, $2, $3, $4, 1, $5)
     ON CONFLICT (user_id, item_id) DO UPDATE SET times_removed = removed_products.times_removed + 1,
     name = excluded.name, price_in_cents = excluded.price_in_cents, last_removed_at = excluded.last_removed_at";

impl Projector for RemovedProductsProjector {
    fn name(&self) -> &str {
        "removed_products"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().prefix(ORDER_STREAM_PREFIX).types([REMOVED])
    }

    fn schema(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => include_str!("removed_products_postgres.sql"),
            _ => include_str!("removed_products_sqlite.sql"),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["removed_products"]
    }

    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        // The filter lets only removals through; anything else is left alone.
        if let OrderEvent::ProductRemovedFromOrder { user_id, item, .. } = event.decode::<OrderEvent>()? {
            sql.execute(UPSERT, (user_id, item.id, item.name, item.price_in_cents, event.created_at));
        }
        Ok(())
    }
}

/// One product a user removed, as mined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedProduct {
    /// Who removed it.
    pub user_id: Uuid,
    /// The product.
    pub item_id: Uuid,
    /// Its name at the latest removal.
    pub name: String,
    /// Its unit price in cents at the latest removal.
    pub price_in_cents: i64,
    /// How many units this user removed, over all their orders.
    pub times_removed: i64,
    /// When the latest removal was recorded.
    pub last_removed_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "SELECT user_id, item_id, name, price_in_cents, times_removed, last_removed_at FROM removed_products";

fn removed(row: &Row) -> Result<RemovedProduct, ValueError> {
    Ok(RemovedProduct {
        user_id: row.get(0)?,
        item_id: row.get(1)?,
        name: row.get(2)?,
        price_in_cents: row.get(3)?,
        times_removed: row.get(4)?,
        last_removed_at: row.get(5)?,
    })
}

async fn select(
    read_model: &dyn ReadModel,
    sql: String,
    params: Vec<rewind::sql::Value>,
) -> Result<Vec<RemovedProduct>, StoreError> {
    let rows = read_model.query(&sql, params).await?;
    Ok(rows.iter().map(removed).collect::<Result<_, _>>()?)
}

/// The products `user_id` removed, by product id (empty until the miner has caught
/// up, or when it is not registered). Reads only.
pub async fn removed_by(read_model: &dyn ReadModel, user_id: Uuid) -> Result<Vec<RemovedProduct>, StoreError> {
    select(read_model, format!("{COLUMNS} WHERE user_id = $1 ORDER BY item_id"), vec![user_id.into()]).await
}

/// Every mined row, by user and product: what a sale notifier would scan. Reads only.
pub async fn all_removed(read_model: &dyn ReadModel) -> Result<Vec<RemovedProduct>, StoreError> {
    select(read_model, format!("{COLUMNS} ORDER BY user_id, item_id"), Vec::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Item;

    #[test]
    fn a_removal_is_one_upsert_keyed_by_user_and_product() {
        let item = Item { id: Uuid::from_u128(3), name: "Tea".into(), price_in_cents: 350 };
        let user_id = Uuid::from_u128(1);
        let removed = OrderEvent::ProductRemovedFromOrder { user_id, order_id: Uuid::from_u128(2), item };
        let event = rewind::testing::recorded("order-2", 4, &removed).unwrap();
        assert_eq!(event.event_type, REMOVED, "the filter names the event's stored name");
        let mut sql = Sql::new(Dialect::Postgres);
        RemovedProductsProjector.project(&event, &mut sql).unwrap();
        let [statement] = sql.statements() else { panic!("one statement") };
        assert_eq!(statement.sql, UPSERT);
        assert_eq!(statement.params[0], user_id.into());
        assert_eq!(statement.params[4], event.created_at.into());
    }

    #[test]
    fn reads_only_removals_of_orders() {
        let filter = RemovedProductsProjector.filter();
        assert!(filter.matches("order-1", REMOVED));
        assert!(!filter.matches("order-1", "product_added_to_order"));
        assert!(!filter.matches("$outcome-1", REMOVED));
    }
}
