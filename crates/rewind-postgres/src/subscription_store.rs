//! Subscription bookkeeping in PostgreSQL, and the leases that keep each named
//! subscription active in exactly one process.
//!
//! A lease is a session-level advisory lock held on a connection of its own: when
//! the holding process dies, PostgreSQL ends the session and frees the lock, and a
//! process standing by takes over on its next try (every `lease_retry`, a second by
//! default) and resumes from the checkpoint. If the lease's connection drops while
//! the process lives, the lease reports itself lost and the subscription stands by.
//!
//! Every call is bounded by the connection's `query_timeout` ([`crate::connection`]),
//! so bookkeeping on a path that stopped answering fails (transiently) instead of
//! holding its subscription for ever. A lease's own idle connection is watched by TCP
//! keepalive only.

use crate::read_model::PostgresReadModel;
use async_trait::async_trait;
use rewind::store::{InstanceChange, Lease};
use rewind::{DeadLetter, FailureReport, FailureState, GlobalPosition, StoreError, SubscriptionStore};
use tokio::sync::watch;
use uuid::Uuid;

/// [`SubscriptionStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PostgresSubscriptionStore {
    model: PostgresReadModel,
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(error)
}

const SAVE_CHECKPOINT: &str = "INSERT INTO rewind_subscriptions (name, position) VALUES ($1, $2)
     ON CONFLICT (name) DO UPDATE SET position = GREATEST(rewind_subscriptions.position, EXCLUDED.position)";

async fn write_changes(
    tx: &tokio_postgres::Transaction<'_>,
    manager: &str,
    changes: &[InstanceChange],
) -> Result<(), StoreError> {
    for change in changes {
        let written = match change {
            InstanceChange::Save(instance, state) => {
                tx.execute(
                    "INSERT INTO rewind_process_instances (manager, instance, state) VALUES ($1, $2, $3::text::jsonb)
                     ON CONFLICT (manager, instance) DO UPDATE SET state = EXCLUDED.state",
                    &[&manager, instance, state],
                )
                .await
            }
            InstanceChange::Delete(instance) => {
                tx.execute(
                    "DELETE FROM rewind_process_instances WHERE manager = $1 AND instance = $2",
                    &[&manager, instance],
                )
                .await
            }
        };
        written.map_err(backend)?;
    }
    Ok(())
}

const REMOVE_DEAD_LETTER: &str = "DELETE FROM rewind_dead_letters WHERE subscription = $1 AND event_id = $2";

impl PostgresSubscriptionStore {
    /// Bookkeeping in `model`'s schema (its tables are created with the model).
    pub fn new(model: &PostgresReadModel) -> PostgresSubscriptionStore {
        PostgresSubscriptionStore { model: model.clone() }
    }
}

/// Holds the lease's connection; dropping it closes the session and frees the lock.
struct HeldLease {
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[async_trait]
impl SubscriptionStore for PostgresSubscriptionStore {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<GlobalPosition>, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                let row = client
                    .query_opt("SELECT position FROM rewind_subscriptions WHERE name = $1", &[&subscription])
                    .await
                    .map_err(backend)?;
                Ok(row.map(|row| GlobalPosition(row.get::<_, i64>(0).max(0) as u64)))
            })
            .await
    }

    async fn save_checkpoint(&self, subscription: &str, position: GlobalPosition) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                client.execute(SAVE_CHECKPOINT, &[&subscription, &(position.0 as i64)]).await.map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn delete_checkpoint(&self, subscription: &str) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                client
                    .execute("DELETE FROM rewind_subscriptions WHERE name = $1", &[&subscription])
                    .await
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn add_dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.model.bounded(async {
        let event = serde_json::to_value(&letter.event).map_err(backend)?;
        let client = self.model.client().await?;
        client
            .execute(
                "INSERT INTO rewind_dead_letters (subscription, position, event_id, event, error, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (subscription, position) DO UPDATE
                 SET event_id = EXCLUDED.event_id, event = EXCLUDED.event, error = EXCLUDED.error, failed_at = EXCLUDED.failed_at",
                &[
                    &letter.subscription,
                    &(letter.event.position.0 as i64),
                    &letter.event.event_id,
                    &event,
                    &letter.error,
                    &letter.failed_at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
        })
        .await
    }

    async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                let rows = client
                    .query(
                        "SELECT subscription, event, error, failed_at FROM rewind_dead_letters
                 WHERE $1::text IS NULL OR subscription = $1 ORDER BY position, subscription",
                        &[&subscription],
                    )
                    .await
                    .map_err(backend)?;
                rows.into_iter()
                    .map(|row| {
                        Ok(DeadLetter {
                            subscription: row.try_get(0).map_err(backend)?,
                            event: serde_json::from_value(row.try_get(1).map_err(backend)?)
                                .map_err(|e| StoreError::Corrupt(format!("dead letter event: {e}")))?,
                            error: row.try_get(2).map_err(backend)?,
                            failed_at: row.try_get(3).map_err(backend)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn remove_dead_letter(&self, subscription: &str, event_id: Uuid) -> Result<bool, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                let deleted = client.execute(REMOVE_DEAD_LETTER, &[&subscription, &event_id]).await.map_err(backend)?;
                Ok(deleted > 0)
            })
            .await
    }

    async fn clear_dead_letters(&self, subscription: &str) -> Result<u64, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                client
                    .execute("DELETE FROM rewind_dead_letters WHERE subscription = $1", &[&subscription])
                    .await
                    .map_err(backend)
            })
            .await
    }

    async fn load_instance(&self, manager: &str, instance: &str) -> Result<Option<String>, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                let row = client
                    .query_opt(
                        "SELECT state::text FROM rewind_process_instances WHERE manager = $1 AND instance = $2",
                        &[&manager, &instance],
                    )
                    .await
                    .map_err(backend)?;
                row.map(|row| row.try_get(0).map_err(backend)).transpose()
            })
            .await
    }

    async fn commit_instances(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        position: GlobalPosition,
    ) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let mut client = self.model.client().await?;
                let tx = client.transaction().await.map_err(backend)?;
                write_changes(&tx, manager, &changes).await?;
                tx.execute(SAVE_CHECKPOINT, &[&manager, &(position.0 as i64)]).await.map_err(backend)?;
                tx.commit().await.map_err(backend)
            })
            .await
    }

    async fn reset_instances(&self, manager: &str) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let mut client = self.model.client().await?;
                let tx = client.transaction().await.map_err(backend)?;
                tx.execute("DELETE FROM rewind_process_instances WHERE manager = $1", &[&manager])
                    .await
                    .map_err(backend)?;
                tx.execute("DELETE FROM rewind_subscriptions WHERE name = $1", &[&manager]).await.map_err(backend)?;
                tx.commit().await.map_err(backend)
            })
            .await
    }

    async fn commit_replayed(
        &self,
        manager: &str,
        changes: Vec<InstanceChange>,
        event_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.model
            .bounded(async {
                let mut client = self.model.client().await?;
                let tx = client.transaction().await.map_err(backend)?;
                // The letter's removal decides, inside the transaction (a concurrent replay
                // waits on the row and then deletes nothing): a replay that lost the race,
                // or came after a discard, writes nothing.
                if tx.execute(REMOVE_DEAD_LETTER, &[&manager, &event_id]).await.map_err(backend)? == 0 {
                    return Ok(false);
                }
                write_changes(&tx, manager, &changes).await?;
                tx.commit().await.map_err(backend)?;
                Ok(true)
            })
            .await
    }

    async fn report_failure(&self, report: FailureReport) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                client
                    .execute(
                        "INSERT INTO rewind_subscription_failures
                 (subscription, state, attempt, transient, error, position, since, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (subscription) DO UPDATE
                 SET state = EXCLUDED.state, attempt = EXCLUDED.attempt, transient = EXCLUDED.transient,
                     error = EXCLUDED.error, position = EXCLUDED.position, since = EXCLUDED.since,
                     updated_at = EXCLUDED.updated_at",
                        &[
                            &report.subscription,
                            &report.state.as_str(),
                            &i32::try_from(report.attempt).unwrap_or(i32::MAX),
                            &report.transient,
                            &report.error,
                            &report.position.map(|p| p.0 as i64),
                            &report.since,
                            &report.updated_at,
                        ],
                    )
                    .await
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn clear_failure(&self, subscription: &str) -> Result<(), StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                client
                    .execute("DELETE FROM rewind_subscription_failures WHERE subscription = $1", &[&subscription])
                    .await
                    .map_err(backend)?;
                Ok(())
            })
            .await
    }

    async fn failures(&self, subscription: Option<&str>) -> Result<Vec<FailureReport>, StoreError> {
        self.model
            .bounded(async {
                let client = self.model.client().await?;
                let rows = client
                    .query(
                        "SELECT subscription, state, attempt, transient, error, position, since, updated_at
                 FROM rewind_subscription_failures WHERE $1::text IS NULL OR subscription = $1
                 ORDER BY subscription COLLATE \"C\"",
                        &[&subscription],
                    )
                    .await
                    .map_err(backend)?;
                rows.into_iter()
                    .map(|row| {
                        let subscription: String = row.try_get(0).map_err(backend)?;
                        let state: String = row.try_get(1).map_err(backend)?;
                        let attempt: i32 = row.try_get(2).map_err(backend)?;
                        let position: Option<i64> = row.try_get(5).map_err(backend)?;
                        Ok(FailureReport {
                            state: FailureState::from_name(&state).ok_or_else(|| {
                                StoreError::Corrupt(format!("failure report of `{subscription}`: state `{state}`"))
                            })?,
                            subscription,
                            attempt: u32::try_from(attempt).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            transient: row.try_get(3).map_err(backend)?,
                            error: row.try_get(4).map_err(backend)?,
                            position: position.map(|p| GlobalPosition(p.max(0) as u64)),
                            since: row.try_get(6).map_err(backend)?,
                            updated_at: row.try_get(7).map_err(backend)?,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn try_lease(&self, subscription: &str) -> Result<Option<Lease>, StoreError> {
        let (client, mut driver) = self.model.dedicated().await?;
        let held: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('rewind:lease:' || $1), hashtext($2))",
                &[&self.model.schema(), &subscription],
            )
            .await
            .map_err(backend)?
            .get(0);
        if !held {
            driver.abort();
            return Ok(None);
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        // Watch the session: if the connection ends, so does the lock.
        let watcher = tokio::spawn(async move {
            let _ = (&mut driver).await;
            let _ = lost_tx.send(true);
        });
        Ok(Some(Lease::new(lost_rx, HeldLease { _client: client, driver: watcher })))
    }
}
