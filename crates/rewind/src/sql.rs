//! Portable SQL: the statements a [`Projector`](crate::Projector) writes and the
//! rows a query reads, the same on every SQL backend.
//!
//! A statement is one text with numbered parameters (`$1`, `$2`, …, as PostgreSQL
//! writes them; SQLite reads `$1` as a named parameter and each backend binds by
//! number), and its parameters are [`Value`]s. Honest SQL, not an ORM: what a
//! statement means is what the database says. `INSERT … ON CONFLICT (…) DO UPDATE
//! SET n = t.n + excluded.n` reads alike on SQLite and PostgreSQL; where the
//! dialects differ (a function's name, a type), a projector asks
//! [`Sql::dialect`].
//!
//! A [`Value`] maps to each backend's own type once, in the backend: a [`Uuid`] is
//! PostgreSQL's `uuid` and SQLite's hyphenated `TEXT`, a [`DateTime`] is
//! `timestamptz` and RFC 3339 `TEXT`, a `bool` is `boolean` and `INTEGER` 0/1. A
//! [`Row`] reads them back the other way, so a query reads the same Rust values
//! from both.

use chrono::{DateTime, Utc};
use std::borrow::Cow;
use uuid::Uuid;

/// The SQL dialect a read model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite (`rewind-sqlite`).
    Sqlite,
    /// PostgreSQL (`rewind-postgres`).
    Postgres,
}

/// One parameter or column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit integer (money is integer minor units).
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Text.
    Text(String),
    /// A UUID: `uuid` on PostgreSQL, hyphenated text on SQLite.
    Uuid(Uuid),
    /// A moment: `timestamptz` on PostgreSQL, RFC 3339 text on SQLite.
    Time(DateTime<Utc>),
    /// A list, for one statement that writes many rows: a PostgreSQL array of the
    /// parameter's element type (`unnest($1::uuid[])`), a JSON array on SQLite
    /// (`json_each($1)`). Parameters only; a column never reads back as one.
    List(Vec<Value>),
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from($v: $t) -> Value {
                $e
            }
        })*
    };
}

value_from! {
    i64 => |v| Value::Int(v),
    i32 => |v| Value::Int(v.into()),
    u32 => |v| Value::Int(v.into()),
    bool => |v| Value::Bool(v),
    String => |v| Value::Text(v),
    &str => |v| Value::Text(v.to_owned()),
    &String => |v| Value::Text(v.clone()),
    Cow<'_, str> => |v| Value::Text(v.into_owned()),
    Uuid => |v| Value::Uuid(v),
    &Uuid => |v| Value::Uuid(*v),
    DateTime<Utc> => |v| Value::Time(v),
    &DateTime<Utc> => |v| Value::Time(*v),
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(values: Vec<T>) -> Value {
        Value::List(values.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// The parameters of one statement: a tuple of values (`(a, b, c)`), an array or
/// a `Vec` of [`Value`]s, or `()` for none.
///
/// ```
/// use rewind::sql::{Params, Value};
///
/// let values = ("ZC7", 250_i64, None::<String>).into_values();
/// assert_eq!(values, [Value::Text("ZC7".into()), Value::Int(250), Value::Null]);
/// assert_eq!([Value::Bool(true)].into_values(), [Value::Bool(true)]);
/// assert!(().into_values().is_empty());
/// ```
pub trait Params {
    /// The values, in parameter order (`$1` first).
    fn into_values(self) -> Vec<Value>;
}

impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}

impl<const N: usize> Params for [Value; N] {
    fn into_values(self) -> Vec<Value> {
        self.into()
    }
}

macro_rules! tuple_params {
    ($($name:ident)*) => {
        impl<$($name: Into<Value>),*> Params for ($($name,)*) {
            #[allow(non_snake_case)]
            fn into_values(self) -> Vec<Value> {
                let ($($name,)*) = self;
                vec![$($name.into()),*]
            }
        }
    };
}

tuple_params!();
tuple_params!(A);
tuple_params!(A B);
tuple_params!(A B C);
tuple_params!(A B C D);
tuple_params!(A B C D E);
tuple_params!(A B C D E F);
tuple_params!(A B C D E F G);
tuple_params!(A B C D E F G H);
tuple_params!(A B C D E F G H I);
tuple_params!(A B C D E F G H I J);
tuple_params!(A B C D E F G H I J K);
tuple_params!(A B C D E F G H I J K L);

/// One statement and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text, with `$1`, `$2`, … for the parameters.
    pub sql: Cow<'static, str>,
    /// The parameters, `$1` first.
    pub params: Vec<Value>,
}

/// The statements a projector writes for one event or batch, in order. The backend
/// runs them inside the batch's transaction, beside the checkpoint, so they take
/// effect exactly once or not at all.
///
/// ```
/// use rewind::sql::{Dialect, Sql, Value};
///
/// let mut sql = Sql::new(Dialect::Sqlite);
/// sql.execute("INSERT INTO seen (name, n) VALUES ($1, $2)", ("opened", 1));
/// assert_eq!(sql.statements()[0].params, [Value::Text("opened".into()), Value::Int(1)]);
/// ```
#[derive(Debug)]
pub struct Sql {
    dialect: Dialect,
    statements: Vec<Statement>,
}

impl Sql {
    /// No statements yet, for `dialect`.
    pub fn new(dialect: Dialect) -> Sql {
        Sql { dialect, statements: Vec::new() }
    }

    /// The dialect the statements run in, for the rare statement that must differ.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Adds a statement.
    pub fn execute(&mut self, sql: impl Into<Cow<'static, str>>, params: impl Params) -> &mut Sql {
        self.statements.push(Statement { sql: sql.into(), params: params.into_values() });
        self
    }

    /// The statements so far.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// Takes the statements out, leaving none.
    pub fn take(&mut self) -> Vec<Statement> {
        std::mem::take(&mut self.statements)
    }
}

/// A value read back that is not the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: expected {expected}, found {found:?}")]
pub struct ValueError {
    /// The column's index.
    pub column: usize,
    /// The Rust type asked for.
    pub expected: &'static str,
    /// What the column held.
    pub found: Value,
}

/// A column that does not hold what its query says: the read model is not what
/// its projector wrote.
impl From<ValueError> for crate::event_store::StoreError {
    fn from(error: ValueError) -> Self {
        crate::event_store::StoreError::Corrupt(format!("read model: {error}"))
    }
}

/// A Rust value a [`Row`]'s column can be read as.
///
/// Implemented for the types a [`Value`] holds, and for `Option`s of them (`NULL` is
/// `None`). A newtype of the application's reads through the type it wraps:
///
/// ```
/// use rewind::sql::{FromValue, Row, Value, ValueError};
///
/// #[derive(Debug, PartialEq)]
/// struct Cents(i64);
///
/// impl FromValue for Cents {
///     fn from_value(value: &Value, column: usize) -> Result<Cents, ValueError> {
///         i64::from_value(value, column).map(Cents)
///     }
/// }
///
/// let row = Row::new(vec![Value::Int(1250), Value::Null, Value::Text("x".into())]);
/// assert_eq!(row.get::<Cents>(0), Ok(Cents(1250)));
/// assert_eq!(row.get::<Option<Cents>>(1), Ok(None));
/// assert_eq!(row.get::<Cents>(2).unwrap_err().column, 2);
/// ```
pub trait FromValue: Sized {
    /// Reads `value` (column `column`), or says why it cannot.
    fn from_value(value: &Value, column: usize) -> Result<Self, ValueError>;
}

fn mismatch<T>(value: &Value, column: usize, expected: &'static str) -> Result<T, ValueError> {
    Err(ValueError { column, expected, found: value.clone() })
}

impl FromValue for i64 {
    fn from_value(value: &Value, column: usize) -> Result<i64, ValueError> {
        match value {
            Value::Int(v) => Ok(*v),
            other => mismatch(other, column, "an integer"),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: &Value, column: usize) -> Result<bool, ValueError> {
        match value {
            Value::Bool(v) => Ok(*v),
            Value::Int(v @ (0 | 1)) => Ok(*v == 1),
            other => mismatch(other, column, "a boolean"),
        }
    }
}

impl FromValue for String {
    fn from_value(value: &Value, column: usize) -> Result<String, ValueError> {
        match value {
            Value::Text(v) => Ok(v.clone()),
            other => mismatch(other, column, "text"),
        }
    }
}

impl FromValue for Uuid {
    fn from_value(value: &Value, column: usize) -> Result<Uuid, ValueError> {
        match value {
            Value::Uuid(v) => Ok(*v),
            Value::Text(text) => text.parse().or_else(|_| mismatch(value, column, "a UUID")),
            other => mismatch(other, column, "a UUID"),
        }
    }
}

impl FromValue for DateTime<Utc> {
    fn from_value(value: &Value, column: usize) -> Result<DateTime<Utc>, ValueError> {
        match value {
            Value::Time(v) => Ok(*v),
            Value::Text(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| t.to_utc())
                .or_else(|_| mismatch(value, column, "an RFC 3339 time")),
            other => mismatch(other, column, "a time"),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: &Value, column: usize) -> Result<Option<T>, ValueError> {
        match value {
            Value::Null => Ok(None),
            value => T::from_value(value, column).map(Some),
        }
    }
}

/// One row of a query's answer.
///
/// ```
/// use rewind::sql::{Row, Value};
///
/// let row = Row::new(vec![Value::Text("67e55044-10b1-426f-9247-bb680e5fe0c8".into()), Value::Null]);
/// let id: uuid::Uuid = row.get(0).unwrap();
/// let reason: Option<String> = row.get(1).unwrap();
/// assert_eq!((id.to_string().len(), reason), (36, None));
/// assert!(row.get::<i64>(0).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    /// A row of these column values.
    pub fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Column `column` as a `T`.
    pub fn get<T: FromValue>(&self, column: usize) -> Result<T, ValueError> {
        T::from_value(self.values.get(column).unwrap_or(&Value::Null), column)
    }

    /// The column values.
    pub fn values(&self) -> &[Value] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_tuples_become_values_in_order() {
        let values = (Some(3_i64), None::<String>, true, "x").into_values();
        assert_eq!(values, [Value::Int(3), Value::Null, Value::Bool(true), Value::Text("x".into())]);
    }

    #[test]
    fn sqlite_text_reads_as_uuid_and_time() {
        let at = Utc::now();
        let row = Row::new(vec![Value::Text(at.to_rfc3339()), Value::Int(1)]);
        assert_eq!(row.get::<DateTime<Utc>>(0), Ok(at));
        assert_eq!(row.get::<bool>(1), Ok(true));
        assert!(row.get::<Uuid>(0).is_err());
        assert_eq!(row.get::<Option<i64>>(7), Ok(None), "a column past the end is NULL");
    }
}
