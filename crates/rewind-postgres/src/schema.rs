//! Creates and migrates a store's PostgreSQL schema.
//!
//! Promises: after `migrate` returns `Ok` the schema holds every table this version
//! of the crate uses, at the newest schema version it knows. Concurrent processes
//! opening the same schema serialize on an advisory lock, so each migration runs
//! exactly once, in one transaction with its version row (all or nothing). A schema
//! newer than this code is refused with [`StoreError::Corrupt`] and left untouched.

use crate::error::from_pg;
use crate::sql::{MIGRATIONS, SCHEMA_VERSION, render};
use rewind::StoreError;
use tokio_postgres::Client;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION_CURRENT: i32 = MIGRATIONS.len() as i32;

/// Brings `schema` to [`SCHEMA_VERSION_CURRENT`].
pub(crate) async fn migrate(client: &mut Client, schema: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(from_pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key("migrate", schema)]).await.map_err(from_pg)?;
    tx.batch_execute(&render(SCHEMA_VERSION, schema)).await.map_err(from_pg)?;
    let version_sql = render("SELECT coalesce(max(version), 0) FROM {schema}.schema_version", schema);
    let current: i32 = tx.query_one(&version_sql, &[]).await.map_err(from_pg)?.try_get(0).map_err(from_pg)?;
    if current > SCHEMA_VERSION_CURRENT {
        return Err(StoreError::Corrupt(format!(
            "schema `{schema}` is at version {current}, newer than version {SCHEMA_VERSION_CURRENT} that this \
             rewind-postgres knows; upgrade rewind-postgres to open it"
        )));
    }
    let insert_sql = render("INSERT INTO {schema}.schema_version (version) VALUES ($1)", schema);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(&render(migration, schema)).await.map_err(from_pg)?;
        tx.execute(&insert_sql, &[&(index as i32 + 1)]).await.map_err(from_pg)?;
        tracing::info!(schema, version = index + 1, "migrated event store schema");
    }
    tx.commit().await.map_err(from_pg)
}

/// A stable 64-bit advisory lock key for `purpose` on `schema` (FNV-1a; the same in
/// every process and version). A collision between two schemas only makes them share
/// a lock, which is slower but still correct.
pub(crate) fn lock_key(purpose: &str, schema: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "rewind:".bytes().chain(purpose.bytes()).chain([b':']).chain(schema.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("append", "s"), lock_key("append", "s"));
        assert_ne!(lock_key("append", "s"), lock_key("migrate", "s"));
        assert_ne!(lock_key("append", "s1"), lock_key("append", "s2"));
        assert_eq!(lock_key("append", "rewind"), 2_566_518_446_923_468_601, "keys never change across versions");
    }
}
