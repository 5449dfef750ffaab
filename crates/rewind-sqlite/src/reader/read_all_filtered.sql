-- The global order from a position (inclusive), keeping only matching events (the
-- caller stops stepping at its limit, see read_all.sql):
--   ?2: stream id prefix as a UTF-8 blob (compared bytewise, so no character is a
--       wildcard and embedded NULs are fine), or NULL for any stream;
--   ?3: JSON array of event type names, or NULL for any type.
SELECT position, event_id, stream_id, stream_version, event_type, data,
       causation_id, correlation_id, metadata, created_at
FROM events
WHERE position >= ?1
  AND (?2 IS NULL OR substr(CAST(stream_id AS BLOB), 1, length(?2)) = ?2)
  AND (?3 IS NULL OR event_type IN (SELECT value FROM json_each(?3)))
ORDER BY position
