SELECT position, event_id, stream_id, stream_version, event_type,
       coalesce(data_text, data::text), coalesce(metadata_text, metadata::text),
       causation_id, correlation_id, created_at
FROM {schema}.events
WHERE event_id = $1
