//! Opening a file that is not a store this code can use fails with a typed error
//! and leaves the file alone.

use rewind::StoreError;
use rewind_sqlite::SqliteStore;

#[tokio::test]
async fn a_newer_schema_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    SqliteStore::open(&path).await.expect("create").close().await.expect("close");
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.pragma_update(None, "user_version", 999).expect("pretend a newer version wrote it");
    drop(raw);
    match SqliteStore::open(&path).await {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("newer"), "{message}"),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("expected Corrupt, the store opened"),
    }
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let version: i64 = raw.pragma_query_value(None, "user_version", |row| row.get(0)).expect("version");
    assert_eq!(version, 999, "the file was left as it was");
}

#[tokio::test]
async fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other.db");
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)").expect("table");
    drop(raw);
    assert!(matches!(SqliteStore::open(&path).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn a_file_that_already_holds_a_read_model_becomes_a_store_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.db");
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.execute_batch("CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER)").expect("read model");
    drop(raw);
    SqliteStore::open(&path).await.expect("open beside the read model").close().await.expect("close");
    SqliteStore::open(&path).await.expect("and again").close().await.expect("close");
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_corrupt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).expect("write garbage");
    assert!(matches!(SqliteStore::open(&path).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn a_missing_directory_is_a_backend_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing").join("events.db");
    assert!(matches!(SqliteStore::open(&path).await, Err(StoreError::Backend(_))));
}
