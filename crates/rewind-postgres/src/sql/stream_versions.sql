-- The current version of each named stream (0 for a stream without events).
SELECT s.stream_id,
       coalesce((SELECT e.stream_version FROM {schema}.events e
                 WHERE e.stream_id = s.stream_id
                 ORDER BY e.stream_version DESC LIMIT 1), 0)
FROM unnest($1::text[]) AS s(stream_id)
