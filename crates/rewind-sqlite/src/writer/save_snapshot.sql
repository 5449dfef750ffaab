-- Keeps the newest snapshot per stream: an older one than the stored is ignored.
INSERT INTO snapshots (stream_id, version, tag, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (stream_id) DO UPDATE SET
    version = excluded.version, tag = excluded.tag, data = excluded.data, created_at = excluded.created_at
WHERE excluded.version >= snapshots.version
