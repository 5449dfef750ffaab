-- Opens a careful-path append transaction; sent as one simple query, one message.
-- READ COMMITTED (one snapshot per statement) whatever a server or role default says,
-- so each read sees every append committed before it starts.
BEGIN ISOLATION LEVEL READ COMMITTED
