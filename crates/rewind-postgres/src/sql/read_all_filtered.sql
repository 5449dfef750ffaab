-- $3: a stream id prefix or NULL; $4: event types (empty = all).
SELECT position, event_id, stream_id, stream_version, event_type,
       coalesce(data_text, data::text), coalesce(metadata_text, metadata::text),
       causation_id, correlation_id, created_at
FROM {schema}.events
WHERE position >= $1
  AND tx < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
  AND ($3::text IS NULL OR starts_with(stream_id, $3::text))
  AND (cardinality($4::text[]) = 0 OR event_type = ANY($4::text[]))
ORDER BY position
LIMIT $2
