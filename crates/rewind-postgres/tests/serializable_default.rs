//! The conformance suite on connections whose default isolation is SERIALIZABLE:
//! the append transactions pin READ COMMITTED (see `rewind_postgres::writer`), so
//! versions, positions and the gap-free order hold whatever the server's default.

mod common;

async fn make_store() -> Option<(rewind_postgres::PostgresStore, ())> {
    let url = common::database_url("serializable_default")?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20default_transaction_isolation%3Dserializable");
    Some((common::open(&url, &common::fresh_schema()).await, ()))
}

rewind::event_store_conformance!(make_store);

/// Where isolation matters: two stores (two writers) on one schema. Under a
/// SERIALIZABLE snapshot taken before the append lock is granted, a writer would read
/// a stale head and collide with the other's positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_append_concurrently_under_a_serializable_default() {
    use rewind::EventStore;
    let Some(url) = common::database_url("two_writers_append_concurrently_under_a_serializable_default") else {
        return;
    };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20default_transaction_isolation%3Dserializable");
    let schema = common::fresh_schema();
    let stores = [
        std::sync::Arc::new(common::open(&url, &schema).await),
        std::sync::Arc::new(common::open(&url, &schema).await),
    ];
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = stores[n % 2].clone();
            tokio::spawn(async move {
                let mut last = rewind::GlobalPosition::START;
                for _ in 0..25 {
                    let event = rewind::conformance::event("Ticked", serde_json::json!({ "n": n }));
                    last =
                        store.append(&format!("s-{n}"), rewind::ExpectedVersion::Any, vec![event]).await?.last_position;
                }
                Ok::<_, rewind::StoreError>(last)
            })
        })
        .collect();
    let mut last = rewind::GlobalPosition::START;
    for task in tasks {
        last = last.max(task.await.expect("task").expect("every append succeeds"));
    }
    rewind::conformance::settled(&*stores[0], last).await;
    let all = stores[0].read_all(rewind::GlobalPosition::START, 1000, &rewind::EventFilter::all()).await.expect("read");
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    // No append failed, so no transaction left a hole.
    assert_eq!(positions, (1..=200).collect::<Vec<_>>(), "dense, gap-free positions");
}
