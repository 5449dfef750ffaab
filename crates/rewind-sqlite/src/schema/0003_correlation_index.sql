-- Rewind SQLite store, schema version 3.
--
-- Everything one request set in motion shares a correlation id; the console's
-- causation trail reads it by that id. The index holds (correlation_id, rowid), so
-- one range of it is the conversation in the global order. Events without a
-- correlation id (imports from older tools, bare appends) are left out of it.
CREATE INDEX events_by_correlation ON events (correlation_id) WHERE correlation_id IS NOT NULL;
