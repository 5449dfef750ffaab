//! Portable SQL on SQLite: [`rewind::Projector`]s and queries written once for
//! every backend, run here.
//!
//! A statement's `$1`, `$2`, … are SQLite named parameters; they are bound by
//! number, so `$2` may come before `$1` in the text and a parameter may repeat. A
//! [`Value`] is stored as the read model's tables have always stored it: a UUID as
//! hyphenated `TEXT`, a time as RFC 3339 `TEXT`, a boolean as `INTEGER` 0/1; a
//! column reads back as [`Value::Int`], [`Value::Text`] or [`Value::Null`]
//! ([`rewind::sql::Row`] parses UUIDs and times from text). A `REAL` or a `BLOB`
//! is refused: money is integer minor units.
//!
//! A portable projector runs as any other [`SqliteProjection`]: exactly once per
//! event, in the batch's transaction beside its checkpoint, and inline on a read
//! model that shares the event store's file.

use crate::SqliteProjection;
use crate::projector::SqliteProjector;
use crate::read_model::SqliteReadModel;
use async_trait::async_trait;
use rewind::sql::{Dialect, Row, Sql, Statement, Value};
use rewind::{Consumer, ConsumerError, Projector, ReadModel, RecordedEvent, StoreError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use std::sync::Arc;

/// A [`Value`] bound to a SQLite parameter.
struct Bound<'a>(&'a Value);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
            Value::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Value::Uuid(v) => ToSqlOutput::from(v.to_string()),
            Value::Time(v) => ToSqlOutput::from(v.to_rfc3339()),
            Value::List(values) => ToSqlOutput::from(json(values).to_string()),
        })
    }
}

/// A list as the JSON array `json_each` reads: each value as SQLite stores it.
fn json(values: &[Value]) -> serde_json::Value {
    let each = |value: &Value| match value {
        Value::Null => serde_json::Value::Null,
        Value::Int(v) => (*v).into(),
        Value::Bool(v) => i64::from(*v).into(),
        Value::Text(v) => v.as_str().into(),
        Value::Uuid(v) => v.to_string().into(),
        Value::Time(v) => v.to_rfc3339().into(),
        Value::List(inner) => json(inner),
    };
    serde_json::Value::Array(values.iter().map(each).collect())
}

/// The parameter names `$1` … `$64`, so binding allocates nothing.
static NAMES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (1..=64).map(|n| format!("${n}")).collect());

/// Binds `params` to `$1`, `$2`, …; every parameter must be given.
fn bind(statement: &mut rusqlite::Statement<'_>, params: &[Value]) -> rusqlite::Result<()> {
    let expected = statement.parameter_count();
    if expected != params.len() {
        return Err(rusqlite::Error::InvalidParameterCount(params.len(), expected));
    }
    for (n, value) in params.iter().enumerate() {
        let owned;
        let name = match NAMES.get(n) {
            Some(name) => name.as_str(),
            None => {
                owned = format!("${}", n + 1);
                &owned
            }
        };
        // Parameters written in order sit at their own number; looking a name up
        // scans them all, which a many-row statement would pay for every one.
        let index = match statement.parameter_name(n + 1) {
            Some(at) if at == name => n + 1,
            _ => statement.parameter_index(name)?.ok_or_else(|| rusqlite::Error::InvalidParameterName(name.into()))?,
        };
        statement.raw_bind_parameter(index, Bound(value))?;
    }
    Ok(())
}

/// Runs one statement on `conn`.
pub(crate) fn execute(conn: &Connection, statement: &Statement) -> rusqlite::Result<usize> {
    let mut prepared = conn.prepare_cached(&statement.sql)?;
    bind(&mut prepared, &statement.params)?;
    prepared.raw_execute()
}

fn value(row: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Value> {
    Ok(match row.get_ref(column)? {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
        other => {
            let name = row.as_ref().column_name(column).unwrap_or("?").to_owned();
            return Err(rusqlite::Error::InvalidColumnType(column, name, other.data_type()));
        }
    })
}

/// Runs a query on `conn`.
pub(crate) fn query(conn: &Connection, sql: &str, params: &[Value]) -> rusqlite::Result<Vec<Row>> {
    let mut prepared = conn.prepare_cached(sql)?;
    bind(&mut prepared, params)?;
    let columns = prepared.column_count();
    let mut rows = prepared.raw_query();
    let mut answer = Vec::new();
    while let Some(row) = rows.next()? {
        answer.push(Row::new((0..columns).map(|c| value(row, c)).collect::<rusqlite::Result<_>>()?));
    }
    Ok(answer)
}

fn quoted(table: &str) -> String {
    format!("\"{}\"", table.replace('"', "\"\""))
}

/// A [`Projector`] as a [`SqliteProjection`].
struct Portable(Arc<dyn Projector>);

impl SqliteProjection for Portable {
    fn create(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(self.0.schema(Dialect::Sqlite))
    }

    fn drop_outdated(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let Some(outdated) = self.0.outdated(Dialect::Sqlite) else { return Ok(false) };
        if !conn.prepare(outdated)?.exists([])? {
            return Ok(false);
        }
        for table in self.0.tables() {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quoted(table)))?;
        }
        Ok(true)
    }

    fn project(&self, conn: &Connection, event: &RecordedEvent) -> Result<(), ConsumerError> {
        let mut sql = Sql::new(Dialect::Sqlite);
        self.0.project(event, &mut sql)?;
        for statement in sql.statements() {
            execute(conn, statement)?;
        }
        Ok(())
    }

    fn reset(&self, conn: &Connection) -> rusqlite::Result<()> {
        for table in self.0.tables() {
            conn.prepare_cached(&format!("DELETE FROM {}", quoted(table)))?.execute([])?;
        }
        Ok(())
    }
}

#[async_trait]
impl ReadModel for SqliteReadModel {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Inline as well when the model shares the event store's file
    /// ([`SqliteProjector::inline`]), with the projector's own filter.
    async fn projector(&self, projector: Arc<dyn Projector>) -> Result<Arc<dyn Consumer>, StoreError> {
        let (name, filter) = (projector.name().to_owned(), projector.filter());
        let runner = SqliteProjector::new(&name, Portable(projector), self).await?;
        Ok(Arc::new(if self.is_sharing() { runner.inline(filter)? } else { runner }))
    }

    /// On the calling thread, as [`SqliteReadModel::lookup`]: for the short queries
    /// an API answers with.
    async fn query_values(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, StoreError> {
        self.lookup(|conn| query(conn, sql, &params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_binds_as_the_json_array_json_each_reads() {
        let conn = Connection::open_in_memory().unwrap();
        let list = Value::from(vec![Value::Int(2), Value::Null, Value::Uuid(uuid::Uuid::nil()), Value::Bool(true)]);
        let rows = query(
            &conn,
            "SELECT count(*), sum(CASE WHEN type = 'integer' THEN value END), max(length(value)) FROM json_each($1)",
            &[list],
        )
        .unwrap();
        assert_eq!(rows[0].values(), [Value::Int(4), Value::Int(3), Value::Int(36)]);
    }

    #[test]
    fn parameters_bind_by_number_in_any_order_and_repeat() {
        let conn = Connection::open_in_memory().unwrap();
        let rows = query(&conn, "SELECT $2, $1, $2", &[Value::Int(1), Value::Text("two".into())]).unwrap();
        assert_eq!(rows[0].values(), [Value::Text("two".into()), Value::Int(1), Value::Text("two".into())]);
        let missing = query(&conn, "SELECT $1, $2", &[Value::Int(1)]);
        assert!(matches!(missing, Err(rusqlite::Error::InvalidParameterCount(1, 2))), "{missing:?}");
        let numbered = query(&conn, "SELECT ?1", &[Value::Int(1)]);
        assert!(numbered.is_err(), "`?1` is not portable: {numbered:?}");
    }

    #[test]
    fn an_upsert_qualified_by_its_table_reads_as_on_postgres() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE n (k TEXT PRIMARY KEY, n INTEGER NOT NULL) STRICT").unwrap();
        let upsert = Statement {
            sql: "INSERT INTO n (k, n) VALUES ($1, 1) ON CONFLICT (k) DO UPDATE SET n = n.n + excluded.n".into(),
            params: vec![Value::Uuid(uuid::Uuid::nil())],
        };
        execute(&conn, &upsert).unwrap();
        execute(&conn, &upsert).unwrap();
        let rows = query(&conn, "SELECT k, n FROM n", &[]).unwrap();
        assert_eq!(rows[0].get::<uuid::Uuid>(0), Ok(uuid::Uuid::nil()));
        assert_eq!(rows[0].get::<i64>(1), Ok(2));
    }
}
