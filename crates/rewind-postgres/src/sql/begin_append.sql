-- Opens an append transaction and takes the schema's append lock (see writer.rs);
-- sent as one simple query, one message. The lock is a separate statement from the
-- reads and writes that follow so that their snapshots are taken after it is held,
-- which holds only at READ COMMITTED (one snapshot per statement): named here so a
-- server or role default of REPEATABLE READ or SERIALIZABLE cannot change it.
BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({lock_key})
