-- Where an event id is stored, if anywhere (the unique index on event_id).
SELECT position, stream_id, stream_version FROM events WHERE event_id = ?1
