-- Schema version 1 of a Rewind event store. `{schema}` is replaced by the quoted
-- schema name. Applied once, inside the migration transaction (see schema.rs).

-- The event log. One row per event; `position` is the global order, dense from 1,
-- assigned under the append lock (see writer.rs) so it is also commit order.
CREATE TABLE {schema}.events (
    position       bigint      NOT NULL PRIMARY KEY CHECK (position > 0),
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      text        NOT NULL CHECK (stream_id <> ''),
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    event_type     text        NOT NULL,
    -- The event's JSON, inspectable with SQL. PostgreSQL's jsonb cannot hold the
    -- escape \u0000; such rare documents are kept verbatim in `data_text` instead.
    data           jsonb,
    data_text      text,
    -- The metadata's custom keys (causation and correlation have their own columns),
    -- with the same \u0000 fallback.
    metadata       jsonb,
    metadata_text  text,
    causation_id   uuid,
    correlation_id uuid,
    created_at     timestamptz NOT NULL,
    UNIQUE (stream_id, stream_version),
    CHECK ((data IS NULL) <> (data_text IS NULL)),
    CHECK ((metadata IS NULL) <> (metadata_text IS NULL))
);

-- The newest snapshot of each stream; `data` is the aggregate's state as text.
CREATE TABLE {schema}.snapshots (
    stream_id  text        NOT NULL PRIMARY KEY,
    version    bigint      NOT NULL,
    tag        text        NOT NULL,
    data       text        NOT NULL,
    created_at timestamptz NOT NULL
);
