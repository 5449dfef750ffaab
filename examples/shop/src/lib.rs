//! Shop: Rewind's example of mining old events. Users fill baskets
//! (`product_added_to_order`, `product_removed_from_order`, `order_checked_out`);
//! long afterwards, a new projector reads the removals back out of the history to
//! learn which products each user put back, so they can be told when those go on
//! sale. The application keeps serving while the new projector catches up.
//!
//! # Layout
//!
//! * [`order`]: the order aggregate, its commands, events and rules (pure).
//! * [`basket`]: the `basket` projector (current basket lines, strongly
//!   consistent) and its query.
//! * [`removed_products`]: the `removed_products` projector, the miner, and its
//!   queries.
//! * Here: [`Shop`], the application and its subscriptions opened on one
//!   database URL through `rewind_backend`, with or without the miner.
//! * `main.rs`: the `shop` command line.
//!
//! Both projectors are portable: the same code runs on SQLite and PostgreSQL.

pub mod basket;
pub mod order;
pub mod removed_products;

use basket::{Basket, BasketProjector};
use order::{Order, OrderError};
use removed_products::{RemovedProduct, RemovedProductsProjector};
use rewind::prelude::*;
use rewind_backend::{Backend, Database, OpenError, OpenMode};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The prefix of every order's stream (`order-<uuid>`), as the commands declare it.
pub const ORDER_STREAM_PREFIX: &str = "order-";

/// Whether the removed-products miner runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mining {
    /// Only the basket: the shop as it was before anyone thought of mining.
    Off,
    /// The basket and the miner, which catches up from the origin when new.
    On,
    /// [`On`](Mining::On), the miner reading at most this many removals per
    /// transaction: smaller batches leave more of the database to the serving side
    /// while it catches up.
    InBatchesOf(usize),
}

/// Why the shop could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database could not be opened, or a projector's tables made.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The subscriptions could not start.
    #[error("cannot start subscriptions: {0}")]
    Subscriptions(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why waiting for the miner ended without it catching up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatchUpError {
    /// The shop was started with [`Mining::Off`].
    #[error("the miner is not running (start the shop with mining on)")]
    NotMining,
    /// The miner stopped on an event; its status says which and why.
    #[error("the miner stopped: {0}")]
    Stopped(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How far the miner is, while it catches up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The last position it has done.
    pub position: u64,
    /// The position it is catching up to.
    pub target: u64,
}

/// The shop, running: commands, queries and subscriptions on one database.
pub struct Shop {
    /// Commands go here.
    pub app: Application,
    /// The projectors, running.
    pub subscriptions: Subscriptions,
    /// Queries read here.
    pub read_model: Arc<dyn ReadModel>,
    /// The database, kept open while the shop runs.
    pub backend: Backend,
}

/// The shop's router: every order command to the order aggregate.
pub fn router() -> Router {
    Router::new().commands::<(order::AddProduct, order::RemoveProduct, order::CheckOut)>()
}

impl Shop {
    /// Opens `database` (creating it if missing), registers the basket (strongly
    /// consistent) and, unless [`Mining::Off`], the miner, and starts them in the
    /// background: a new miner starts from the origin and catches up while the
    /// shop serves. On error nothing runs; tables already made stay.
    pub async fn start(database: &Database, mining: Mining) -> Result<Shop, StartError> {
        let backend = Backend::open(database, OpenMode::Create).await?;
        let app = Application::builder_shared(backend.store.clone()).router(router()).build();
        let mut builder = backend
            .subscriptions(&app)
            .projector_with(BasketProjector, SubscriptionOptions::new().strong())
            .await
            .map_err(OpenError::store(database))?;
        let miner = match mining {
            Mining::Off => None,
            Mining::On => Some(SubscriptionOptions::new()),
            Mining::InBatchesOf(size) => Some(SubscriptionOptions::new().batch_size(size)),
        };
        if let Some(options) = miner {
            builder =
                builder.projector_with(RemovedProductsProjector, options).await.map_err(OpenError::store(database))?;
        }
        let subscriptions = builder.start().map_err(|e| StartError::Subscriptions(Box::new(e)))?;
        Ok(Shop { app, subscriptions, read_model: backend.read_model.portable(), backend })
    }

    /// Dispatches an order command and returns once the basket shows it. On a
    /// domain error nothing was recorded; see [`Application::dispatch_with`] for
    /// the others.
    pub async fn send<C: Command<Aggregate = Order>>(&self, command: C) -> Result<(), DispatchError<OrderError>> {
        let options = DispatchOptions::new().consistency(Consistency::Strong);
        self.app.dispatch_with(command, options).await.map(drop)
    }

    /// The basket of an order, or `None` if nothing was added to it.
    pub async fn basket(&self, order_id: Uuid) -> Result<Option<Basket>, StoreError> {
        basket::basket(&*self.read_model, order_id).await
    }

    /// What `user_id` removed, as mined so far.
    pub async fn removed_by(&self, user_id: Uuid) -> Result<Vec<RemovedProduct>, StoreError> {
        removed_products::removed_by(&*self.read_model, user_id).await
    }

    /// Waits until the miner has done every removal recorded before this call,
    /// calling `progress` about twice a second meanwhile. The shop keeps serving.
    /// Waiting changes nothing; an error leaves the miner where it is.
    pub async fn catch_up_miner(&self, mut progress: impl FnMut(Progress)) -> Result<Progress, CatchUpError> {
        let name = RemovedProductsProjector.name();
        if self.subscriptions.status_of(name).is_none() {
            return Err(CatchUpError::NotMining);
        }
        let Some(last) = self.last_removal().await? else { return Ok(Progress { position: 0, target: 0 }) };
        let target = last.position.0;
        loop {
            let wait = self.subscriptions.wait_for(name, last.position);
            match tokio::time::timeout(Duration::from_millis(500), wait).await {
                Ok(Ok(())) => return Ok(Progress { position: target, target }),
                Ok(Err(_)) => return Err(CatchUpError::NotMining),
                Err(_) => {}
            }
            let Some(status) = self.subscriptions.status_of(name) else { return Err(CatchUpError::NotMining) };
            if status.state.name() == "stopped" {
                return Err(CatchUpError::Stopped(status.last_error.unwrap_or_default()));
            }
            progress(Progress { position: status.position.0, target });
        }
    }

    /// The last removal recorded now, if any.
    ///
    /// The miner's subscription reads only removals, so once it has done the last
    /// one its position stays there: waiting for the store's head would not end
    /// while the newest event is something else.
    async fn last_removal(&self) -> Result<Option<RecordedEvent>, StoreError> {
        const PAGE: usize = 1_000;
        let (store, filter) = (self.app.store(), RemovedProductsProjector.filter());
        let mut from = Default::default(); // the origin; `GlobalPosition` is not in the prelude
        let mut last = None;
        loop {
            let page = store.read_all(from, PAGE, &filter).await?;
            let full = page.len() == PAGE;
            let Some(newest) = page.into_iter().last() else { return Ok(last) };
            from = newest.position.next();
            last = Some(newest);
            if !full {
                return Ok(last);
            }
        }
    }

    /// Stops the projectors at a checkpoint.
    pub async fn shutdown(&self) {
        self.subscriptions.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_route_to_order_streams() {
        assert_eq!(order::AddProduct::STREAM_PREFIX, Some(ORDER_STREAM_PREFIX));
        assert_eq!(order::RemoveProduct::STREAM_PREFIX, Some(ORDER_STREAM_PREFIX));
        assert_eq!(order::CheckOut::STREAM_PREFIX, Some(ORDER_STREAM_PREFIX));
    }
}
