-- Opens an append transaction and takes the schema's append lock (see writer.rs);
-- sent as one simple query, one message. The lock is a separate statement from the
-- reads and writes that follow so that their snapshots are taken after it is held.
BEGIN; SELECT pg_advisory_xact_lock({lock_key})
