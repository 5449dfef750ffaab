//! Where an application keeps its data, as one URL: `sqlite://PATH` (the embedded
//! default), `postgres://…[?schema=NAME]`, or `memory://` (nothing kept; for
//! trials and benchmarks). Parsed once, with an error that says what is accepted.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The PostgreSQL schema used unless the URL names one (`?schema=NAME`).
pub const DEFAULT_SCHEMA: &str = "rewind";

/// A database a Rewind application can run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// One SQLite file holding events and read model.
    Sqlite(PathBuf),
    /// A PostgreSQL database; events and read model live in `schema`.
    Postgres {
        /// The connection URL, without the `schema` parameter.
        url: String,
        /// The schema for the events and the read model.
        schema: String,
    },
    /// Events in memory, read model in a temporary SQLite file; gone at exit.
    Memory,
}

/// A database URL no backend accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported database URL `{0}`: use sqlite://PATH, postgres://USER@HOST/DB[?schema=NAME] or memory://")]
pub struct BadDatabaseUrl(pub String);

impl FromStr for Database {
    type Err = BadDatabaseUrl;

    /// `sqlite://bank.db` (relative), `sqlite:///var/lib/bank.db` (absolute),
    /// `postgres://…` or `postgresql://…` with an optional `schema` query parameter,
    /// `memory://`.
    fn from_str(url: &str) -> Result<Database, BadDatabaseUrl> {
        if url == "memory://" {
            return Ok(Database::Memory);
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(BadDatabaseUrl(url.to_owned()));
            }
            return Ok(Database::Sqlite(PathBuf::from(path)));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(BadDatabaseUrl(url.to_owned()));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = DEFAULT_SCHEMA.to_owned();
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", name)) if !name.is_empty() => schema = name.to_owned(),
                Some(("schema", _)) => return Err(BadDatabaseUrl(url.to_owned())),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        Ok(Database::Postgres { url, schema })
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Database::Postgres { url, schema } => {
                let separator = if url.contains('?') { '&' } else { '?' };
                write!(f, "{url}{separator}schema={schema}")
            }
            Database::Memory => f.write_str("memory://"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_paths() {
        assert_eq!("sqlite://bank.db".parse(), Ok(Database::Sqlite("bank.db".into())));
        assert_eq!("sqlite:///var/lib/bank.db".parse(), Ok(Database::Sqlite("/var/lib/bank.db".into())));
        assert!("sqlite://".parse::<Database>().is_err());
    }

    #[test]
    fn parses_postgres_urls_and_their_schema() {
        let db: Database = "postgres://postgres@127.0.0.1:5432/test?schema=b1&sslmode=disable".parse().unwrap();
        assert_eq!(
            db,
            Database::Postgres {
                url: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into(),
                schema: "b1".into()
            }
        );
        let db: Database = "postgresql://localhost/bank".parse().unwrap();
        assert_eq!(db, Database::Postgres { url: "postgresql://localhost/bank".into(), schema: "rewind".into() });
        assert_eq!(db.to_string(), "postgresql://localhost/bank?schema=rewind");
    }

    #[test]
    fn parses_memory() {
        assert_eq!("memory://".parse(), Ok(Database::Memory));
        assert_eq!(Database::Memory.to_string(), "memory://");
    }

    #[test]
    fn refuses_other_urls() {
        for url in ["mysql://x", "bank.db", "", "postgres://h/db?schema=", "memory://x"] {
            assert!(url.parse::<Database>().is_err(), "{url}");
        }
    }
}
