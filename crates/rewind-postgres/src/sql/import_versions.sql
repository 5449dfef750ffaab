-- The current version of each stream an import touches (streams without events
-- are absent). Run under the append lock.
SELECT stream_id, max(stream_version) FROM {schema}.events
WHERE stream_id = ANY($1)
GROUP BY stream_id
