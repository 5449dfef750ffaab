//! The store conformance suite on the in-memory store.

use rewind::MemoryStore;

async fn make_store() -> Option<(MemoryStore, ())> {
    Some((MemoryStore::new(), ()))
}

rewind::event_store_conformance!(make_store);
