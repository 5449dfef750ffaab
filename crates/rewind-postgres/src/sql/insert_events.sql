-- Writes a whole group commit in one statement: one array per column, one element
-- per event. Positions (taken by the transaction) and versions were decided by the writer.
-- Rows go in (stream, version) order, as in `append_layer` (see schema_v3.sql).
INSERT INTO {schema}.events (
    position, event_id, stream_id, stream_version, event_type,
    data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
)
SELECT position, event_id, stream_id, stream_version, event_type,
       data::jsonb, data_text, metadata::jsonb, metadata_text, causation_id, correlation_id, now()
FROM unnest(
    $1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
    $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::uuid[]
) AS e(position, event_id, stream_id, stream_version, event_type,
       data, data_text, metadata, metadata_text, causation_id, correlation_id)
ORDER BY stream_id, stream_version
