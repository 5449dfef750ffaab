SELECT stream_id, version, tag, data, created_at FROM {schema}.snapshots WHERE stream_id = $1
