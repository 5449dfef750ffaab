-- Schema version 2: the writer's fast path (see layer.rs) as two functions, so a
-- group commit that fits one statement runs as that one statement, with no
-- BEGIN/COMMIT messages around it.
--
-- Each function takes the append lock (see writer.rs) before its query runs. A
-- VOLATILE function's queries take their snapshots as they start, so the query sees
-- every append committed before the lock was granted, as a separate lock statement
-- would. The lock is held to the end of the caller's transaction (the implicit one
-- of a lone call), so the argument of writer.rs is unchanged.
--
-- Columns that are NULL for every event may come as a NULL array (`unnest` pads it
-- with NULLs), and empty custom metadata as NULL (stored as '{}'): most events have
-- neither, and parsing 100 copies of '{}' costs more than one might think.

-- One layer of a group commit: appends to distinct streams, any number of requests.
--
-- $1..$5, one element per append, in arrival order:
--   request index, stream id, expected kind (0 any, 1 no stream, 2 stream exists,
--   3 exact), expected version (for kind 3), number of events.
-- $6..$15, one element per event: the append it belongs to (1-based, as ordinality
--   of $1..$5), its 1-based offset within that append, then the event's columns.
--
-- A request is written only if every one of its appends passes its version check;
-- positions are dense from the head, in arrival order, over the written requests.
-- An event id stored already fails the INSERT with a unique violation, and the
-- writer redoes the group on its careful path (see writer.rs), which tells retries
-- apart from duplicates; a request not written whose ids are stored is flagged for
-- the careful path too.
--
-- Returns one row per append: its index, whether its request is written, whether its
-- own check passed, the stream's version before it, the events written before it in
-- this call, the head before this call, the events the call inserted, and (for
-- appends not written) whether one of its event ids is stored already.
CREATE FUNCTION {schema}.append_layer(
    int[], text[], int[], bigint[], bigint[],
    bigint[], bigint[], uuid[], text[], text[], text[], text[], text[], uuid[], uuid[]
) RETURNS TABLE (
    o_ord bigint, o_written boolean, o_passed boolean, o_actual bigint, o_before bigint,
    o_head bigint, o_inserted bigint, o_stored boolean
) LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock({lock_key});
    RETURN QUERY
        WITH appends AS (
            SELECT a.ord, a.request, a.stream_id, a.kind, a.expected, a.count,
                   coalesce((SELECT e.stream_version FROM {schema}.events e
                             WHERE e.stream_id = a.stream_id
                             ORDER BY e.stream_version DESC LIMIT 1), 0) AS actual
            FROM unnest($1::int[], $2::text[], $3::int[], $4::bigint[], $5::bigint[])
                 WITH ORDINALITY AS a(request, stream_id, kind, expected, count, ord)
        ), checked AS (
            SELECT appends.*,
                   CASE kind WHEN 0 THEN true
                             WHEN 1 THEN actual = 0
                             WHEN 2 THEN actual > 0
                             ELSE actual = expected END AS passed
            FROM appends
        ), requests AS (
            SELECT request, bool_and(passed) AS written FROM checked GROUP BY request
        ), placed AS (
            SELECT c.*, r.written,
                   coalesce(sum(CASE WHEN r.written THEN c.count ELSE 0 END)
                            OVER (ORDER BY c.ord ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::bigint AS before
            FROM checked c JOIN requests r USING (request)
        ), head AS (
            SELECT coalesce(max(position), 0) AS head FROM {schema}.events
        ), inserted AS (
            INSERT INTO {schema}.events (
                position, event_id, stream_id, stream_version, event_type,
                data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
            )
            SELECT head.head + p.before + e.k, e.event_id, p.stream_id, p.actual + e.k, e.event_type,
                   e.data::jsonb, e.data_text,
                   coalesce(e.metadata, CASE WHEN e.metadata_text IS NULL THEN '{}' END)::jsonb, e.metadata_text,
                   e.causation_id, e.correlation_id, now()
            FROM unnest(
                $6::bigint[], $7::bigint[], $8::uuid[], $9::text[], $10::text[], $11::text[],
                $12::text[], $13::text[], $14::uuid[], $15::uuid[]
            ) AS e(append, k, event_id, event_type, data, data_text, metadata, metadata_text, causation_id, correlation_id)
            JOIN placed p ON p.ord = e.append
            CROSS JOIN head
            WHERE p.written
            RETURNING 1
        )
        SELECT p.ord, p.written, p.passed, p.actual, p.before, head.head, (SELECT count(*) FROM inserted),
               -- For an append not written: is any of its event ids stored already? Then the
               -- writer must decide it on the careful path (retry or duplicate comes first).
               (NOT p.written AND EXISTS (
                    SELECT 1 FROM unnest($6::bigint[], $8::uuid[]) AS x(append, event_id)
                    JOIN {schema}.events s ON s.event_id = x.event_id
                    WHERE x.append = p.ord)) AS stored
        FROM placed p CROSS JOIN head
        ORDER BY p.ord;
END
$fn$;

-- A group commit of one append (an `append` call alone in its group: the common
-- case, and every large batch): the same decision as `append_layer` without the
-- machinery for many requests, and the same result row.
--
-- $1 stream id, $2 expected kind, $3 expected version, $4..$11 one element per
-- event: id, type, data, data_text, metadata, metadata_text, causation, correlation.
CREATE FUNCTION {schema}.append_one(
    text, int, bigint, uuid[], text[], text[], text[], text[], text[], uuid[], uuid[]
) RETURNS TABLE (
    o_ord bigint, o_written boolean, o_passed boolean, o_actual bigint, o_before bigint,
    o_head bigint, o_inserted bigint, o_stored boolean
) LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock({lock_key});
    RETURN QUERY
        WITH state AS (
            SELECT coalesce((SELECT e.stream_version FROM {schema}.events e
                             WHERE e.stream_id = $1
                             ORDER BY e.stream_version DESC LIMIT 1), 0) AS actual,
                   (SELECT coalesce(max(h.position), 0) FROM {schema}.events h) AS head
        ), checked AS (
            SELECT s.actual, s.head,
                   CASE $2 WHEN 0 THEN true
                           WHEN 1 THEN s.actual = 0
                           WHEN 2 THEN s.actual > 0
                           ELSE s.actual = $3 END AS passed
            FROM state s
        ), inserted AS (
            INSERT INTO {schema}.events (
                position, event_id, stream_id, stream_version, event_type,
                data, data_text, metadata, metadata_text, causation_id, correlation_id, created_at
            )
            SELECT c.head + e.k, e.event_id, $1, c.actual + e.k, e.event_type,
                   e.data::jsonb, e.data_text,
                   coalesce(e.metadata, CASE WHEN e.metadata_text IS NULL THEN '{}' END)::jsonb, e.metadata_text,
                   e.causation_id, e.correlation_id, now()
            FROM checked c,
                 unnest($4, $5, $6, $7, $8, $9, $10, $11) WITH ORDINALITY
                     AS e(event_id, event_type, data, data_text, metadata, metadata_text, causation_id, correlation_id, k)
            WHERE c.passed
            RETURNING 1
        )
        SELECT 1::bigint, c.passed, c.passed, c.actual, 0::bigint, c.head, (SELECT count(*) FROM inserted),
               (NOT c.passed AND EXISTS (SELECT 1 FROM {schema}.events s WHERE s.event_id = ANY ($4)))
        FROM checked c;
END
$fn$;
