//! Subscription bookkeeping in SQLite: checkpoints, dead letters, process manager
//! state and failure reports, in the same file as the events by default.
//!
//! Instance changes and a process manager's checkpoint commit in one transaction.
//! Leases are advisory file locks beside the database (`<file>-leases/<name>.lock`,
//! the name hex-encoded): exclusive across processes and within one (each attempt
//! opens its own file description), released when the lease is dropped or its
//! process dies, kill -9 included. So two servers on one file, or a server and an
//! operator's rebuild, never run the same subscription at once.

use crate::read_model::SqliteReadModel;
use async_trait::async_trait;
use rewind::store::{InstanceChange, Lease};
use rewind::{DeadLetter, FailureReport, FailureState, GlobalPosition, StoreError, SubscriptionStore};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::PathBuf;
use uuid::Uuid;

/// [`SubscriptionStore`] on SQLite.
pub struct SqliteSubscriptionStore {
    model: SqliteReadModel,
    /// Where the lease files live.
    leases: PathBuf,
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(error)
}

fn checkpoint(conn: &Connection, name: &str) -> rusqlite::Result<Option<GlobalPosition>> {
    conn.query_row("SELECT position FROM rewind_subscriptions WHERE name = ?1", [name], |row| row.get::<_, i64>(0))
        .optional()
        .map(|p| p.map(|p| GlobalPosition(p as u64)))
}

fn save_checkpoint(tx: &Connection, name: &str, position: GlobalPosition) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO rewind_subscriptions (name, position) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET position = max(position, excluded.position)",
        params![name, position.0 as i64],
    )
    .map(drop)
}

fn write_changes(tx: &Connection, manager: &str, changes: &[InstanceChange]) -> rusqlite::Result<()> {
    for change in changes {
        match change {
            InstanceChange::Save(instance, state) => tx.execute(
                "INSERT OR REPLACE INTO rewind_process_instances (manager, instance, state) VALUES (?1, ?2, ?3)",
                params![manager, instance, state],
            )?,
            InstanceChange::Delete(instance) => tx.execute(
                "DELETE FROM rewind_process_instances WHERE manager = ?1 AND instance = ?2",
                params![manager, instance],
            )?,
        };
    }
    Ok(())
}

fn remove_dead_letter(tx: &Connection, subscription: &str, event_id: Uuid) -> rusqlite::Result<bool> {
    tx.execute(
        "DELETE FROM rewind_dead_letters WHERE subscription = ?1 AND event_id = ?2",
        params![subscription, event_id.to_string()],
    )
    .map(|deleted| deleted > 0)
}

impl SqliteSubscriptionStore {
    /// Creates the bookkeeping tables in `model` (usually the event store's file).
    pub async fn open(model: &SqliteReadModel) -> Result<SqliteSubscriptionStore, StoreError> {
        model
            .transaction(|conn| conn.execute_batch(include_str!("read_model/bookkeeping.sql")).map_err(backend))
            .await?;
        let mut leases = model.path().as_os_str().to_owned();
        leases.push("-leases");
        Ok(SqliteSubscriptionStore { model: model.clone(), leases: PathBuf::from(leases) })
    }

    async fn transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.model.transaction(move |conn| work(conn).map_err(backend)).await
    }
}

fn timestamp(text: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    Ok(chrono::DateTime::parse_from_rfc3339(text).map_err(|e| StoreError::Corrupt(e.to_string()))?.to_utc())
}

/// A failure report's columns as stored, before they are checked.
type FailureRow = (String, String, i64, bool, String, Option<i64>, String, String);

fn failure_report(row: FailureRow) -> Result<FailureReport, StoreError> {
    let (subscription, state, attempt, transient, error, position, since, updated_at) = row;
    Ok(FailureReport {
        state: FailureState::from_name(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("failure report of `{subscription}`: state `{state}`")))?,
        subscription,
        attempt: u32::try_from(attempt).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        transient,
        error,
        position: position.map(|p| GlobalPosition(p.max(0) as u64)),
        since: timestamp(&since)?,
        updated_at: timestamp(&updated_at)?,
    })
}

#[async_trait]
impl SubscriptionStore for SqliteSubscriptionStore {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<GlobalPosition>, StoreError> {
        let name = subscription.to_owned();
        self.model.read(move |conn| checkpoint(conn, &name)).await
    }

    async fn save_checkpoint(&self, subscription: &str, position: GlobalPosition) -> Result<(), StoreError> {
        let name = subscription.to_owned();
        self.transaction(move |tx| save_checkpoint(tx, &name, position)).await
    }

    async fn delete_checkpoint(&self, subscription: &str) -> Result<(), StoreError> {
        let name = subscription.to_owned();
        self.transaction(move |tx| tx.execute("DELETE FROM rewind_subscriptions WHERE name = ?1", [name]).map(drop))
            .await
    }

    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let event = serde_json::to_string(&letter.event).map_err(backend)?;
        self.transaction(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO rewind_dead_letters (subscription, position, event_id, event, error, failed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    letter.subscription,
                    letter.event.position.0 as i64,
                    letter.event.event_id.to_string(),
                    event,
                    letter.error,
                    letter.failed_at.to_rfc3339()
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let filter = subscription.map(str::to_owned);
        let rows = self
            .model
            .read(move |conn| {
                let mut statement = conn.prepare(
                    "SELECT subscription, event, error, failed_at FROM rewind_dead_letters
                     WHERE ?1 IS NULL OR subscription = ?1 ORDER BY position, subscription",
                )?;
                let rows = statement.query_map([filter], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(subscription, event, error, failed_at)| {
                Ok(DeadLetter {
                    subscription,
                    event: serde_json::from_str(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    error,
                    failed_at: chrono::DateTime::parse_from_rfc3339(&failed_at)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?
                        .to_utc(),
                })
            })
            .collect()
    }

    async fn remove_dead_letter(&self, subscription: &str, event_id: Uuid) -> Result<bool, StoreError> {
        let name = subscription.to_owned();
        self.transaction(move |tx| remove_dead_letter(tx, &name, event_id)).await
    }

    async fn clear_dead_letters(&self, subscription: &str) -> Result<u64, StoreError> {
        let name = subscription.to_owned();
        self.transaction(move |tx| {
            tx.execute("DELETE FROM rewind_dead_letters WHERE subscription = ?1", [name]).map(|n| n as u64)
        })
        .await
    }

    async fn load_instance(&self, manager: &str, instance: &str) -> Result<Option<String>, StoreError> {
        let (manager, instance) = (manager.to_owned(), instance.to_owned());
        self.model
            .read(move |conn| {
                conn.query_row(
                    "SELECT state FROM rewind_process_instances WHERE manager = ?1 AND instance = ?2",
                    [manager, instance],
                    |row| row.get(0),
                )
                .optional()
            })
            .await
    }

    async fn commit_instances(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        position: GlobalPosition,
    ) -> Result<(), StoreError> {
        let manager = manager.to_owned();
        self.transaction(move |tx| {
            write_changes(tx, &manager, &changes)?;
            save_checkpoint(tx, &manager, position)
        })
        .await
    }

    async fn commit_replayed(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        event_id: Uuid,
    ) -> Result<bool, StoreError> {
        let manager = manager.to_owned();
        self.transaction(move |tx| {
            // The letter's removal decides, inside the transaction: a replay that lost
            // the race (or came after a discard) writes nothing.
            if !remove_dead_letter(tx, &manager, event_id)? {
                return Ok(false);
            }
            write_changes(tx, &manager, &changes).map(|()| true)
        })
        .await
    }

    async fn reset_instances(&self, manager: &str) -> Result<(), StoreError> {
        let manager = manager.to_owned();
        self.transaction(move |tx| {
            tx.execute("DELETE FROM rewind_process_instances WHERE manager = ?1", [&manager])?;
            tx.execute("DELETE FROM rewind_subscriptions WHERE name = ?1", [&manager]).map(drop)
        })
        .await
    }

    async fn report_failure(&self, report: FailureReport) -> Result<(), StoreError> {
        self.transaction(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO rewind_subscription_failures
                 (subscription, state, attempt, transient, error, position, since, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    report.subscription,
                    report.state.as_str(),
                    report.attempt,
                    report.transient,
                    report.error,
                    report.position.map(|p| p.0 as i64),
                    report.since.to_rfc3339(),
                    report.updated_at.to_rfc3339()
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn clear_failure(&self, subscription: &str) -> Result<(), StoreError> {
        let name = subscription.to_owned();
        self.transaction(move |tx| {
            tx.execute("DELETE FROM rewind_subscription_failures WHERE subscription = ?1", [name]).map(drop)
        })
        .await
    }

    async fn failures(&self, subscription: Option<&str>) -> Result<Vec<FailureReport>, StoreError> {
        let filter = subscription.map(str::to_owned);
        let rows = self
            .model
            .read(move |conn| {
                let mut statement = conn.prepare(
                    "SELECT subscription, state, attempt, transient, error, position, since, updated_at
                     FROM rewind_subscription_failures WHERE ?1 IS NULL OR subscription = ?1 ORDER BY subscription",
                )?;
                let rows = statement.query_map([filter], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                        row.get(7)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<FailureRow>>>()
            })
            .await?;
        rows.into_iter().map(failure_report).collect()
    }

    async fn try_lease(&self, subscription: &str) -> Result<Option<Lease>, StoreError> {
        std::fs::create_dir_all(&self.leases).map_err(backend)?;
        let name: String = subscription.bytes().map(|b| format!("{b:02x}")).collect();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.leases.join(format!("{name}.lock")))
            .map_err(backend)?;
        match file.try_lock() {
            // A file lock is never lost while its process lives: no sender is needed.
            Ok(()) => Ok(Some(Lease::new(tokio::sync::watch::channel(false).1, file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(backend(error)),
        }
    }
}
