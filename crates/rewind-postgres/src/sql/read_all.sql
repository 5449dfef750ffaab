-- Settled events only (see head.sql): a reader never passes a position that a
-- running transaction may still fill.
SELECT position, event_id, stream_id, stream_version, event_type,
       coalesce(data_text, data::text), coalesce(metadata_text, metadata::text),
       causation_id, correlation_id, created_at
FROM {schema}.events
WHERE position >= $1
  AND tx < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
ORDER BY position
LIMIT $2
