//! Portable SQL on PostgreSQL: [`rewind::Projector`]s and queries written once for
//! every backend, run here.
//!
//! A [`Value`] is encoded as the type PostgreSQL inferred for its parameter, so one
//! statement text serves both backends: a UUID binds to `uuid` (or `text`), a time
//! to `timestamptz`, an integer to `bigint`, `integer` or `smallint` (refused if it
//! does not fit). A column reads back as the [`Value`] of its type: `bigint`,
//! `integer`, `smallint`, `boolean`, `text`/`varchar`, `uuid` and `timestamptz`;
//! any other type is refused with its name (cast it in the query: `sum(x)` is
//! `numeric`, `sum(x)::bigint` is portable).
//!
//! A batch's statements are sent in two round trips whatever their number: every
//! distinct text is prepared at once, then every statement is executed at once
//! (pipelined on the connection), inside the projector's transaction.

use crate::PostgresProjection;
use crate::projector::PostgresProjector;
use crate::read_model::PostgresReadModel;
use async_trait::async_trait;
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;
use rewind::sql::{Dialect, Row, Sql, Statement, Value};
use rewind::{Consumer, ConsumerError, Projector, ReadModel, RecordedEvent, StoreError};
use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use tokio_postgres::Transaction;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use uuid::Uuid;

type BoxError = Box<dyn Error + Sync + Send>;

/// A [`Value`] bound to a PostgreSQL parameter of the type the server inferred.
#[derive(Debug)]
struct Bound<'a>(&'a Value);

impl ToSql for Bound<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let text = matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME);
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql_checked(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql_checked(ty, out),
                _ => v.to_sql_checked(ty, out),
            },
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::Text(v) => match *ty {
                Type::UUID => v.parse::<Uuid>()?.to_sql_checked(ty, out),
                Type::TIMESTAMPTZ => DateTime::parse_from_rfc3339(v)?.to_utc().to_sql_checked(ty, out),
                _ => v.as_str().to_sql_checked(ty, out),
            },
            Value::Uuid(v) if text => v.to_string().to_sql_checked(ty, out),
            Value::Uuid(v) => v.to_sql_checked(ty, out),
            Value::Time(v) if text => v.to_rfc3339().to_sql_checked(ty, out),
            Value::Time(v) => v.to_sql_checked(ty, out),
            // An array of the parameter's element type, each element bound as above.
            Value::List(values) => values.iter().map(Bound).collect::<Vec<_>>().to_sql_checked(ty, out),
        }
    }

    /// Every type: the value decides in `to_sql`, and refuses a type it cannot be.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Runs `statements` in order in `tx`: prepared together, then executed together.
pub(crate) async fn execute(tx: &Transaction<'_>, statements: &[Statement]) -> Result<(), tokio_postgres::Error> {
    let mut texts: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for statement in statements {
        index.entry(&statement.sql).or_insert_with(|| {
            texts.push(&statement.sql);
            texts.len() - 1
        });
    }
    let prepared = try_join_all(texts.iter().map(|text| tx.prepare(text))).await?;
    let bound: Vec<Vec<Bound<'_>>> = statements.iter().map(|s| s.params.iter().map(Bound).collect()).collect();
    let calls = statements.iter().zip(&bound).map(|(statement, bound)| {
        let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
        let prepared = &prepared[index[&*statement.sql]];
        async move { tx.execute(prepared, &params).await }
    });
    try_join_all(calls).await.map(drop)
}

fn column(row: &tokio_postgres::Row, column: usize) -> Result<Value, tokio_postgres::Error> {
    fn or_null<T>(value: Option<T>, into: impl FnOnce(T) -> Value) -> Value {
        value.map_or(Value::Null, into)
    }
    Ok(match *row.columns()[column].type_() {
        Type::INT8 => or_null(row.try_get::<_, Option<i64>>(column)?, Value::Int),
        Type::INT4 => or_null(row.try_get::<_, Option<i32>>(column)?, |v| Value::Int(v.into())),
        Type::INT2 => or_null(row.try_get::<_, Option<i16>>(column)?, |v| Value::Int(v.into())),
        Type::BOOL => or_null(row.try_get::<_, Option<bool>>(column)?, Value::Bool),
        Type::UUID => or_null(row.try_get::<_, Option<Uuid>>(column)?, Value::Uuid),
        Type::TIMESTAMPTZ => or_null(row.try_get::<_, Option<DateTime<Utc>>>(column)?, Value::Time),
        // Text and every type without a portable value: `String` refuses the latter
        // with the column's type named.
        _ => or_null(row.try_get::<_, Option<String>>(column)?, Value::Text),
    })
}

/// Runs a query on `client`, its statement cached on the connection.
async fn query(
    client: &deadpool_postgres::Client,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    let bound: Vec<Bound<'_>> = params.iter().map(Bound).collect();
    let params: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|b| b as &(dyn ToSql + Sync)).collect();
    let rows = client.query(&statement, &params).await?;
    rows.iter().map(|row| Ok(Row::new((0..row.len()).map(|c| column(row, c)).collect::<Result<_, _>>()?))).collect()
}

fn quoted(table: &str) -> String {
    format!("\"{}\"", table.replace('"', "\"\""))
}

/// A [`Projector`] as a [`PostgresProjection`].
struct Portable(Arc<dyn Projector>);

impl Portable {
    async fn write(
        &self,
        tx: &Transaction<'_>,
        project: impl FnOnce(&mut Sql) -> Result<(), ConsumerError>,
    ) -> Result<(), ConsumerError> {
        let mut sql = Sql::new(Dialect::Postgres);
        project(&mut sql)?;
        Ok(execute(tx, sql.statements()).await?)
    }
}

#[async_trait]
impl PostgresProjection for Portable {
    async fn create(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(self.0.schema(Dialect::Postgres)).await
    }

    async fn drop_outdated(&self, tx: &Transaction<'_>) -> Result<bool, tokio_postgres::Error> {
        let Some(outdated) = self.0.outdated(Dialect::Postgres) else { return Ok(false) };
        if tx.query_opt(outdated, &[]).await?.is_none() {
            return Ok(false);
        }
        for table in self.0.tables() {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", quoted(table))).await?;
        }
        Ok(true)
    }

    async fn project(&self, tx: &Transaction<'_>, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.write(tx, |sql| self.0.project(event, sql)).await
    }

    async fn project_batch(&self, tx: &Transaction<'_>, events: &[RecordedEvent]) -> Result<(), ConsumerError> {
        self.write(tx, |sql| self.0.project_batch(events, sql)).await
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        for table in self.0.tables() {
            tx.batch_execute(&format!("DELETE FROM {}", quoted(table))).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ReadModel for PostgresReadModel {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn projector(&self, projector: Arc<dyn Projector>) -> Result<Arc<dyn Consumer>, StoreError> {
        let name = projector.name().to_owned();
        Ok(Arc::new(PostgresProjector::new(&name, Portable(projector), self).await?))
    }

    async fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        let client = self.client().await?;
        query(&client, sql, &params).await.map_err(StoreError::backend)
    }
}
