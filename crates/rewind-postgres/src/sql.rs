//! The SQL the store runs, kept in `.sql` files beside this module and rendered once
//! per store for its schema.
//!
//! Every file names tables as `{schema}.table`; [`Sql::new`] replaces `{schema}` with
//! the quoted schema name (and `{lock_key}` and `{channel}`, which derive from it).
//! The name was validated by [`crate::options`] to be a plain identifier, so the
//! replacements cannot change a statement's meaning.

/// The bootstrap run before every migration (creates the schema and version table).
pub(crate) const SCHEMA_VERSION: &str = include_str!("sql/schema_version.sql");

/// The migrations, in order; migration `i` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] =
    &[include_str!("sql/schema_v1.sql"), include_str!("sql/schema_v2.sql"), include_str!("sql/schema_v3.sql")];

/// Renders a statement for one schema.
pub(crate) fn render(template: &str, schema: &str) -> String {
    template
        .replace("{schema}", &format!("\"{schema}\""))
        .replace("{lock_key}", &crate::schema::lock_key("append", schema).to_string())
}

/// The LISTEN/NOTIFY channel of a store: `rewind.<schema>` (a plain identifier, see
/// [`crate::options`], so it can be written into SQL).
pub(crate) fn channel(schema: &str) -> String {
    format!("rewind.{schema}")
}

/// A call of one of the schema's functions with `arguments` parameters.
fn call(function: &str, arguments: usize) -> String {
    let parameters: Vec<String> = (1..=arguments).map(|n| format!("${n}")).collect();
    format!("SELECT * FROM {{schema}}.{function}({})", parameters.join(", "))
}

/// Every statement of one store, rendered for its schema.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub append_layer: String,
    pub append_one: String,
    pub take_positions: String,
    pub begin_append: String,
    pub insert_events: String,
    pub stream_versions: String,
    pub stored_ids: String,
    pub head: String,
    pub read_stream_forward: String,
    pub read_stream_backward: String,
    pub read_all: String,
    pub read_all_filtered: String,
    pub stream_version: String,
    pub read_event: String,
    pub save_snapshot: String,
    pub load_snapshot: String,
    pub list_streams: String,
    pub import: crate::import::ImportSql,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Sql {
        let r = |template| render(template, schema);
        Sql {
            append_layer: r(&call("append_layer", 16)),
            append_one: r(&call("append_one", 12)),
            take_positions: r(&call("take_positions", 1)),
            begin_append: r(include_str!("sql/begin_append.sql")),
            insert_events: r(include_str!("sql/insert_events.sql")),
            stream_versions: r(include_str!("sql/stream_versions.sql")),
            stored_ids: r(include_str!("sql/stored_ids.sql")),
            head: r(include_str!("sql/head.sql")),
            read_stream_forward: r(include_str!("sql/read_stream_forward.sql")),
            read_stream_backward: r(include_str!("sql/read_stream_backward.sql")),
            read_all: r(include_str!("sql/read_all.sql")),
            read_all_filtered: r(include_str!("sql/read_all_filtered.sql")),
            stream_version: r(include_str!("sql/stream_version.sql")),
            read_event: r(include_str!("sql/read_event.sql")),
            save_snapshot: r(include_str!("sql/save_snapshot.sql")),
            load_snapshot: r(include_str!("sql/load_snapshot.sql")),
            list_streams: r(include_str!("sql/list_streams.sql")),
            import: crate::import::ImportSql {
                taken: r("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {schema}.positions"),
                take_positions: r(&call("take_import_positions", 2)),
                versions: r(include_str!("sql/import_versions.sql")),
                copy: r(include_str!("sql/import_copy.sql")),
            },
        }
    }
}
