//! The shared event store conformance suite, run against PostgreSQL.

mod common;

async fn make_store() -> Option<(rewind_postgres::PostgresStore, ())> {
    Some((common::fresh_store("conformance").await?, ()))
}

rewind::event_store_conformance!(make_store);
