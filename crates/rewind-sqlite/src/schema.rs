//! The store's schema and its migrations, applied when a store is opened.
//!
//! The schema version is SQLite's `PRAGMA user_version`; migration `n` (the `n`th
//! file in [`MIGRATIONS`], `schema/000n_*.sql`) takes a file from version `n - 1`
//! to `n`. All pending migrations run in one transaction, so a file is either at
//! its old version or fully migrated. `PRAGMA application_id` marks a file as a
//! Rewind store, so opening some other application's database fails instead of
//! adding tables to it. A file without either mark may already hold other tables
//! (a read model sharing the file), as long as none has a name the store uses.
//! The tables themselves are documented in the SQL.

use crate::error::store_error;
use rewind::StoreError;
use rusqlite::{Connection, OptionalExtension};

/// Marks a file as a Rewind store ("RWND").
pub(crate) const APPLICATION_ID: i32 = 0x5257_4E44;

/// Every migration, in order; the schema version is the number applied.
const MIGRATIONS: &[&str] =
    &[include_str!("schema/0001_initial.sql"), include_str!("schema/0002_versions_from_index.sql")];

/// The schema version this code writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file behind `conn` to [`SCHEMA_VERSION`], creating the schema in an
/// empty file. On error nothing changed.
///
/// Fails with [`StoreError::Corrupt`] when the file's schema is newer than this
/// code or the file belongs to another application.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(store_error)?;
    match migrate_in_transaction(conn) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(store_error),
        Err(error) => {
            // The transaction is discarded either way; a failed ROLLBACK adds nothing useful.
            let _ = conn.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

fn migrate_in_transaction(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(store_error)?;
    let application: i32 = conn.pragma_query_value(None, "application_id", |row| row.get(0)).map_err(store_error)?;
    if application != APPLICATION_ID && (application != 0 || version != 0) {
        return Err(StoreError::Corrupt(format!(
            "the file is a SQLite database of another application (application_id {application}, \
             schema version {version}), not a Rewind store"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the store's schema is version {version}, newer than version {SCHEMA_VERSION} that this rewind-sqlite knows; \
             open it with a newer rewind-sqlite"
        )));
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!("the store's schema version {version} is negative")));
    }
    if version == 0 {
        refuse_foreign_tables(conn)?;
        conn.pragma_update(None, "application_id", APPLICATION_ID).map_err(store_error)?;
    }
    for migration in &MIGRATIONS[version as usize..] {
        conn.execute_batch(migration).map_err(store_error)?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(store_error)?;
    Ok(())
}

/// A file without a Rewind schema may hold other tables (a read model sharing the
/// file), but none with the names the store is about to create.
fn refuse_foreign_tables(conn: &Connection) -> Result<(), StoreError> {
    let taken: Option<String> =
        conn.query_row(include_str!("schema/taken_names.sql"), [], |row| row.get(0)).optional().map_err(store_error)?;
    match taken {
        Some(name) => Err(StoreError::Corrupt(format!(
            "the file already holds `{name}`, but no Rewind schema; it is not a Rewind store"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_changes_nothing() {
        let conn = Connection::open_in_memory().expect("open");
        migrate(&conn).expect("first");
        migrate(&conn).expect("second");
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn version_1_files_lose_the_streams_table_and_keep_their_versions() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("version 1");
        conn.pragma_update(None, "application_id", APPLICATION_ID).expect("mark");
        conn.pragma_update(None, "user_version", 1).expect("version");
        conn.execute_batch(
            "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, data, created_at)
             VALUES (1, x'01', 's', 1, 'E', '{}', 0), (2, x'02', 's', 2, 'E', '{}', 0);
             INSERT INTO streams VALUES ('s', 2);",
        )
        .expect("version 1 rows");
        migrate(&conn).expect("migrate");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'streams'", [], |r| r.get(0))
            .expect("tables");
        assert_eq!(tables, 0);
        let version: Option<i64> = conn
            .query_row(include_str!("reader/stream_version.sql"), ["s"], |r| r.get(0))
            .expect("version from the index");
        assert_eq!(version, Some(2));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let conn = Connection::open_in_memory().expect("open");
        migrate(&conn).expect("migrate");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("bump");
        let error = migrate(&conn).expect_err("newer schema");
        assert!(matches!(&error, StoreError::Corrupt(m) if m.contains("newer")), "{error}");
    }

    #[test]
    fn refuses_another_applications_database() {
        let conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "application_id", 42).expect("mark");
        assert!(matches!(migrate(&conn), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn refuses_a_file_with_a_foreign_events_table() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY)").expect("foreign table");
        let error = migrate(&conn).expect_err("name taken");
        assert!(matches!(&error, StoreError::Corrupt(m) if m.contains("`events`")), "{error}");
    }

    #[test]
    fn shares_a_file_with_other_tables() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE accounts (id TEXT PRIMARY KEY)").expect("read model table");
        migrate(&conn).expect("migrate beside it");
    }
}
