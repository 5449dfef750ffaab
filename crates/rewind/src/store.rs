//! What only a store or consumer implementer needs: type-erased stores, the
//! batch shapes of the store contract, leases and process-manager bookkeeping
//! changes, a consumer's batch failure. Applications use [`crate::prelude`].

pub use crate::event_store::StreamAppend;
pub use crate::shared_store::{BoxFuture, DynEventStore};
pub use crate::subscription::BatchFailure;
pub use crate::subscription_store::{InstanceChange, Lease};
