//! The event store conformance suite on SQLite, each test on a fresh temporary
//! file, plus the follower gap check at a larger scale.

mod common;

use common::TempStore;
use std::sync::Arc;

async fn make_store() -> Option<(TempStore, ())> {
    Some((TempStore::new().await, ()))
}

rewind::event_store_conformance!(make_store);

/// 16 writers × 400 appends (about 12,800 events, a fifth of the appends failing
/// their version check) while a follower tails `$all`: nothing skipped or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_never_skips_at_scale() {
    rewind::conformance::follow_while_writing(Arc::new(TempStore::new().await), 16, 400).await;
}
