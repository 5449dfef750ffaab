//! The `basket` projector: each order's current lines and whether it was checked
//! out, in tables `basket_orders` and `basket_lines`; and the query that reads an
//! order's basket back.
//!
//! It is registered strongly consistent ([`crate::Shop`]), so a dispatch returns
//! once its change shows here, and `shop add` can print the basket it made. The
//! statements are portable: one text for SQLite and PostgreSQL; only the DDL
//! differs per dialect (`uuid`/`boolean` on PostgreSQL, `TEXT`/`INTEGER` on
//! SQLite), in the `.sql` files beside this one.
//!
//! The read model runs each event exactly once (in the batch's transaction with the
//! checkpoint), so the quantity may be counted up and down rather than recomputed.

use crate::ORDER_STREAM_PREFIX;
use crate::order::OrderEvent;
use rewind::prelude::*;
use rewind::sql::{Row, ValueError};
use uuid::Uuid;

/// The projector (name `basket`).
pub struct BasketProjector;

const ORDER: &str = "INSERT INTO basket_orders (order_id, user_id, checked_out) VALUES ($1, $2, $3)
     ON CONFLICT (order_id) DO NOTHING";
const ADD: &str = "INSERT INTO basket_lines (order_id, item_id, name, price_in_cents, quantity)
     VALUES ($1, $2, $3, $4, 1) ON CONFLICT (order_id, item_id) DO UPDATE
     SET quantity = basket_lines.quantity + 1, name = excluded.name, price_in_cents = excluded.price_in_cents";
const REMOVE: &str = "UPDATE basket_lines SET quantity = quantity - 1 WHERE order_id = $1 AND item_id = $2";
const EMPTIED: &str = "DELETE FROM basket_lines WHERE order_id = $1 AND item_id = $2 AND quantity <= 0";
const CHECK_OUT: &str = "UPDATE basket_orders SET checked_out = $2 WHERE order_id = $1";

impl Projector for BasketProjector {
    fn name(&self) -> &str {
        "basket"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().prefix(ORDER_STREAM_PREFIX)
    }

    fn schema(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => include_str!("basket_postgres.sql"),
            _ => include_str!("basket_sqlite.sql"),
        }
    }

    fn tables(&self) -> &'static [&'static str] {
        &["basket_orders", "basket_lines"]
    }

    fn project(&self, event: &RecordedEvent, sql: &mut Sql) -> Result<(), ConsumerError> {
        match event.decode::<OrderEvent>()? {
            OrderEvent::ProductAddedToOrder { user_id, order_id, item } => {
                sql.execute(ORDER, (order_id, user_id, false));
                sql.execute(ADD, (order_id, item.id, item.name, item.price_in_cents));
            }
            OrderEvent::ProductRemovedFromOrder { order_id, item, .. } => {
                sql.execute(REMOVE, (order_id, item.id));
                sql.execute(EMPTIED, (order_id, item.id));
            }
            OrderEvent::OrderCheckedOut { order_id, .. } => {
                sql.execute(CHECK_OUT, (order_id, true));
            }
        }
        Ok(())
    }
}

/// One product in a basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasketLine {
    /// The product.
    pub item_id: Uuid,
    /// Its name, as last added.
    pub name: String,
    /// Its unit price in cents, as last added.
    pub price_in_cents: i64,
    /// How many units, ≥ 1.
    pub quantity: i64,
}

/// An order's basket as the read model shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basket {
    /// The order.
    pub order_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Whether it was checked out.
    pub checked_out: bool,
    /// Its lines, by product id.
    pub lines: Vec<BasketLine>,
}

impl Basket {
    /// The total in cents, or `None` if it does not fit in `i64` (the order
    /// aggregate refuses such a basket, so only a corrupt table gives `None`).
    pub fn total_in_cents(&self) -> Option<i64> {
        self.lines
            .iter()
            .try_fold(0_i64, |total, line| total.checked_add(line.price_in_cents.checked_mul(line.quantity)?))
    }
}

fn line(row: &Row) -> Result<BasketLine, ValueError> {
    Ok(BasketLine { item_id: row.get(0)?, name: row.get(1)?, price_in_cents: row.get(2)?, quantity: row.get(3)? })
}

/// The basket of `order_id`, or `None` if nothing was ever added to it. Reads
/// only; an error changes nothing.
pub async fn basket(read_model: &dyn ReadModel, order_id: Uuid) -> Result<Option<Basket>, StoreError> {
    let sql = "SELECT user_id, checked_out FROM basket_orders WHERE order_id = $1";
    let Some(order) = read_model.query_opt(sql, (order_id,)).await? else { return Ok(None) };
    let sql = "SELECT item_id, name, price_in_cents, quantity FROM basket_lines WHERE order_id = $1 ORDER BY item_id";
    let rows = read_model.query(sql, (order_id,)).await?;
    let lines = rows.iter().map(line).collect::<Result<_, _>>()?;
    Ok(Some(Basket { order_id, user_id: order.get(0)?, checked_out: order.get(1)?, lines }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::Item;

    #[test]
    fn an_add_creates_the_order_and_counts_a_unit() {
        let item = Item { id: Uuid::from_u128(3), name: "Tea".into(), price_in_cents: 350 };
        let added = OrderEvent::ProductAddedToOrder { user_id: Uuid::from_u128(1), order_id: Uuid::from_u128(2), item };
        let event = rewind::testing::recorded("order-2", 1, &added).unwrap();
        let mut sql = Sql::new(Dialect::Sqlite);
        BasketProjector.project(&event, &mut sql).unwrap();
        let texts: Vec<&str> = sql.statements().iter().map(|s| s.sql.as_ref()).collect();
        assert_eq!(texts, [ORDER, ADD]);
    }

    #[test]
    fn the_total_is_checked() {
        let line = |price_in_cents, quantity| BasketLine {
            item_id: Uuid::nil(),
            name: String::new(),
            price_in_cents,
            quantity,
        };
        let basket = |lines| Basket { order_id: Uuid::nil(), user_id: Uuid::nil(), checked_out: false, lines };
        assert_eq!(basket(vec![line(350, 2), line(100, 1)]).total_in_cents(), Some(800));
        assert_eq!(basket(vec![line(i64::MAX, 1), line(1, 1)]).total_in_cents(), None);
    }
}
