//! The order aggregate: a user's basket until it is checked out. Pure and
//! synchronous; storing, routing and the read side are Rewind's.
//!
//! Each order lives in stream `order-<uuid>` and belongs to the user who first
//! added to it. Money is `i64` minor units (cents); the basket's total is kept
//! with checked arithmetic, so an order whose total would overflow refuses the
//! item rather than wrapping.
//!
//! The events keep what a later reader needs: a removal records the whole item
//! (name and price as they were in the basket), so the removed-products miner
//! ([`crate::removed_products`]), written long after the events, needs nothing
//! but the events.

use rewind::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A product as it is put in a basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The product's id.
    pub id: Uuid,
    /// Its name, as shown when it was added.
    pub name: String,
    /// Its unit price in cents, ≥ 0.
    pub price_in_cents: i64,
}

/// Puts one unit of a product in the basket (a second add of the same product
/// adds to its quantity and takes the newer name and price).
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Order, id = order_id, prefix = "order-")]
pub struct AddProduct {
    /// The order.
    pub order_id: Uuid,
    /// Who is shopping.
    pub user_id: Uuid,
    /// What goes in.
    pub item: Item,
}

/// Takes one unit of a product out of the basket.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Order, id = order_id, prefix = "order-")]
pub struct RemoveProduct {
    /// The order.
    pub order_id: Uuid,
    /// Who is shopping.
    pub user_id: Uuid,
    /// The product to take out.
    pub item_id: Uuid,
}

/// Closes the order: nothing can be added or removed afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Command)]
#[command(aggregate = Order, id = order_id, prefix = "order-")]
pub struct CheckOut {
    /// The order.
    pub order_id: Uuid,
    /// Who is shopping.
    pub user_id: Uuid,
}

/// Everything that can happen to an order, stored under snake_case names.
#[rewind::event]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// One unit of `item` went into the basket.
    #[event(name = "product_added_to_order")]
    ProductAddedToOrder {
        /// The order's owner.
        user_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// The product, with its name and price at the time.
        item: Item,
    },
    /// One unit of `item` came out of the basket.
    #[event(name = "product_removed_from_order")]
    ProductRemovedFromOrder {
        /// The order's owner.
        user_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// The product as it was in the basket (for the miner: name and price).
        item: Item,
    },
    /// The order was checked out.
    #[event(name = "order_checked_out")]
    OrderCheckedOut {
        /// The order's owner.
        user_id: Uuid,
        /// The order.
        order_id: Uuid,
    },
}

/// Why an order refused a command. Serializable, since Rewind records a refusal
/// for a repeat of the same command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// Removing a product that is not in the basket.
    #[error("product {item_id} is not in the basket")]
    NotInBasket {
        /// The product asked for.
        item_id: Uuid,
    },
    /// Adding, removing or checking out after check-out.
    #[error("the order is already checked out")]
    CheckedOut,
    /// Checking out an order with nothing in it.
    #[error("cannot check out an empty order")]
    Empty,
    /// An item priced below zero.
    #[error("price must not be negative (got {price_in_cents} cents)")]
    NegativePrice {
        /// The refused price.
        price_in_cents: i64,
    },
    /// A user touching an order that another user started.
    #[error("the order belongs to another user")]
    NotYourOrder,
    /// The basket's total would not fit in `i64` cents.
    #[error("the order's total would overflow")]
    TotalOverflow,
}

/// One product in the basket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    item: Item,
    quantity: i64,
}

/// The order's state: what its rules need.
///
/// Invariant: `total_in_cents` is the sum of `price × quantity` over `lines`, and
/// every line has `quantity ≥ 1` (kept by [`Order::apply`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Order {
    /// Who started it; `None` until the first product is added.
    user_id: Option<Uuid>,
    /// What is in the basket, by product id.
    lines: BTreeMap<Uuid, Line>,
    /// The basket's total in cents.
    total_in_cents: i64,
    /// Whether it was checked out.
    checked_out: bool,
}

impl Order {
    /// Refuses a command from anyone but the owner, or after check-out.
    fn open_for(&self, user_id: Uuid) -> Result<(), OrderError> {
        if self.user_id.is_some_and(|owner| owner != user_id) {
            return Err(OrderError::NotYourOrder);
        }
        if self.checked_out {
            return Err(OrderError::CheckedOut);
        }
        Ok(())
    }

    /// The basket's total in cents.
    pub fn total_in_cents(&self) -> i64 {
        self.total_in_cents
    }

    fn debug_check(&self) {
        debug_assert!(self.lines.values().all(|line| line.quantity >= 1), "a line with no units");
        debug_assert_eq!(
            self.lines.values().map(|l| l.item.price_in_cents * l.quantity).sum::<i64>(),
            self.total_in_cents,
            "total out of step with the lines"
        );
    }
}

impl Aggregate for Order {
    const NAME: &'static str = "order";
    type Event = OrderEvent;
    type Error = OrderError;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::ProductAddedToOrder { user_id, item, .. } => {
                self.user_id.get_or_insert(*user_id);
                let line = self.lines.entry(item.id).or_insert(Line { item: item.clone(), quantity: 0 });
                // A re-add at a new price reprices the units already there.
                self.total_in_cents +=
                    item.price_in_cents * (line.quantity + 1) - line.item.price_in_cents * line.quantity;
                line.item = item.clone();
                line.quantity += 1;
            }
            OrderEvent::ProductRemovedFromOrder { item, .. } => {
                if let Some(line) = self.lines.get_mut(&item.id) {
                    self.total_in_cents -= line.item.price_in_cents;
                    line.quantity -= 1;
                    if line.quantity == 0 {
                        self.lines.remove(&item.id);
                    }
                }
            }
            OrderEvent::OrderCheckedOut { .. } => self.checked_out = true,
        }
        self.debug_check();
    }
}

impl Execute<AddProduct> for Order {
    fn execute(&self, c: &AddProduct) -> Result<Vec<OrderEvent>, OrderError> {
        self.open_for(c.user_id)?;
        let price = c.item.price_in_cents;
        if price < 0 {
            return Err(OrderError::NegativePrice { price_in_cents: price });
        }
        let quantity = self.lines.get(&c.item.id).map_or(0, |line| line.quantity);
        let before = self.lines.get(&c.item.id).map_or(0, |line| line.item.price_in_cents * quantity);
        let after = quantity.checked_add(1).and_then(|q| price.checked_mul(q)).ok_or(OrderError::TotalOverflow)?;
        (self.total_in_cents - before).checked_add(after).ok_or(OrderError::TotalOverflow)?;
        Ok(vec![OrderEvent::ProductAddedToOrder { user_id: c.user_id, order_id: c.order_id, item: c.item.clone() }])
    }
}

impl Execute<RemoveProduct> for Order {
    fn execute(&self, c: &RemoveProduct) -> Result<Vec<OrderEvent>, OrderError> {
        self.open_for(c.user_id)?;
        let line = self.lines.get(&c.item_id).ok_or(OrderError::NotInBasket { item_id: c.item_id })?;
        Ok(vec![OrderEvent::ProductRemovedFromOrder {
            user_id: c.user_id,
            order_id: c.order_id,
            item: line.item.clone(),
        }])
    }
}

impl Execute<CheckOut> for Order {
    fn execute(&self, c: &CheckOut) -> Result<Vec<OrderEvent>, OrderError> {
        self.open_for(c.user_id)?;
        if self.lines.is_empty() {
            return Err(OrderError::Empty);
        }
        Ok(vec![OrderEvent::OrderCheckedOut { user_id: c.user_id, order_id: c.order_id }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rewind::testing::given;

    const ORDER: Uuid = Uuid::from_u128(1);
    const ALICE: Uuid = Uuid::from_u128(2);
    const BOB: Uuid = Uuid::from_u128(3);
    const TEA: Uuid = Uuid::from_u128(10);

    fn tea(price_in_cents: i64) -> Item {
        Item { id: TEA, name: "Tea".into(), price_in_cents }
    }

    fn added(item: Item) -> OrderEvent {
        OrderEvent::ProductAddedToOrder { user_id: ALICE, order_id: ORDER, item }
    }

    fn add(user_id: Uuid, item: Item) -> AddProduct {
        AddProduct { order_id: ORDER, user_id, item }
    }

    fn remove(user_id: Uuid, item_id: Uuid) -> RemoveProduct {
        RemoveProduct { order_id: ORDER, user_id, item_id }
    }

    fn checked_out() -> OrderEvent {
        OrderEvent::OrderCheckedOut { user_id: ALICE, order_id: ORDER }
    }

    #[test]
    fn adds_a_product_to_a_new_order() {
        let order = given::<Order>([]).when(add(ALICE, tea(350))).then_events([added(tea(350))]);
        assert_eq!(order.total_in_cents(), 350);
    }

    #[test]
    fn a_second_add_reprices_the_units_already_there() {
        let order = given::<Order>([added(tea(300))]).when(add(ALICE, tea(400))).then_events([added(tea(400))]);
        assert_eq!(order.total_in_cents(), 800);
    }

    #[test]
    fn removal_records_the_item_as_it_was_in_the_basket() {
        let removed = OrderEvent::ProductRemovedFromOrder { user_id: ALICE, order_id: ORDER, item: tea(350) };
        let order = given::<Order>([added(tea(350))]).when(remove(ALICE, TEA)).then_events([removed]);
        assert_eq!(order.total_in_cents(), 0);
    }

    #[test]
    fn rejects_removing_a_product_not_in_the_basket() {
        given::<Order>([added(tea(350))])
            .when(remove(ALICE, Uuid::from_u128(11)))
            .then_error(OrderError::NotInBasket { item_id: Uuid::from_u128(11) });
    }

    #[test]
    fn rejects_removing_more_units_than_were_added() {
        let removed = OrderEvent::ProductRemovedFromOrder { user_id: ALICE, order_id: ORDER, item: tea(350) };
        given::<Order>([added(tea(350)), removed])
            .when(remove(ALICE, TEA))
            .then_error(OrderError::NotInBasket { item_id: TEA });
    }

    #[test]
    fn rejects_adding_after_check_out() {
        given::<Order>([added(tea(350)), checked_out()]).when(add(ALICE, tea(1))).then_error(OrderError::CheckedOut);
    }

    #[test]
    fn rejects_removing_after_check_out() {
        given::<Order>([added(tea(350)), checked_out()]).when(remove(ALICE, TEA)).then_error(OrderError::CheckedOut);
    }

    #[test]
    fn rejects_checking_out_twice() {
        given::<Order>([added(tea(350)), checked_out()])
            .when(CheckOut { order_id: ORDER, user_id: ALICE })
            .then_error(OrderError::CheckedOut);
    }

    #[test]
    fn checks_out_a_full_basket() {
        given::<Order>([added(tea(350))])
            .when(CheckOut { order_id: ORDER, user_id: ALICE })
            .then_events([checked_out()]);
    }

    #[test]
    fn rejects_checking_out_an_empty_order() {
        given::<Order>([]).when(CheckOut { order_id: ORDER, user_id: ALICE }).then_error(OrderError::Empty);
    }

    #[test]
    fn rejects_a_negative_price() {
        given::<Order>([]).when(add(ALICE, tea(-1))).then_error(OrderError::NegativePrice { price_in_cents: -1 });
    }

    #[test]
    fn rejects_another_users_order() {
        given::<Order>([added(tea(350))]).when(add(BOB, tea(1))).then_error(OrderError::NotYourOrder);
        given::<Order>([added(tea(350))]).when(remove(BOB, TEA)).then_error(OrderError::NotYourOrder);
        given::<Order>([added(tea(350))])
            .when(CheckOut { order_id: ORDER, user_id: BOB })
            .then_error(OrderError::NotYourOrder);
    }

    #[test]
    fn rejects_a_total_beyond_i64() {
        let other = Item { id: Uuid::from_u128(11), name: "Gold".into(), price_in_cents: i64::MAX };
        given::<Order>([added(tea(1))]).when(add(ALICE, other)).then_error(OrderError::TotalOverflow);
        given::<Order>([added(tea(i64::MAX))]).when(add(ALICE, tea(i64::MAX))).then_error(OrderError::TotalOverflow);
    }
}
