//! The subscription store conformance suite on the in-memory bookkeeping.

use rewind::MemorySubscriptionStore;

async fn make_bookkeeping() -> Option<(MemorySubscriptionStore, ())> {
    Some((MemorySubscriptionStore::new(), ()))
}

rewind::subscription_store_conformance!(make_bookkeeping);
