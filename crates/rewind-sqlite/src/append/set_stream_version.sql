-- Records a stream's new version after an append wrote events to it.
INSERT INTO streams (stream_id, version) VALUES (?1, ?2)
ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version
