-- An import's rows, streamed in binary: every column as recorded by the source store.
COPY {schema}.events (
    position, event_id, stream_id, stream_version, event_type,
    data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
) FROM STDIN (FORMAT binary)
