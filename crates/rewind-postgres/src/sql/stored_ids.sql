-- Which of the given event ids are stored already, and where.
SELECT event_id, stream_id, stream_version, position
FROM {schema}.events
WHERE event_id = ANY($1::uuid[])
