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
