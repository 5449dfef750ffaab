-- Schema version 4: an index for reading one conversation.
--
-- Everything one request set in motion shares a correlation id; the console's
-- causation trail reads it by that id, in the global order. Events without one are
-- left out of the index. On a large existing log this CREATE INDEX holds off
-- appends while it builds (it runs in the migration's transaction, so it cannot be
-- CONCURRENTLY); an operator who cannot pause writes creates
-- `events_by_correlation` CONCURRENTLY by hand first, and this migration keeps it.
CREATE INDEX IF NOT EXISTS events_by_correlation
    ON {schema}.events (correlation_id, position) WHERE correlation_id IS NOT NULL;
