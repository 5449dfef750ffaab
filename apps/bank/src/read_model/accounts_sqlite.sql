-- STRICT: a value of the wrong type is refused, never stored (a money column never
-- holds a REAL). A file made before the tables were STRICT is rebuilt (`Accounts::outdated` in accounts.rs).
CREATE TABLE IF NOT EXISTS accounts (
    uuid            TEXT PRIMARY KEY NOT NULL,
    current_balance INTEGER NOT NULL,
    status          TEXT NOT NULL,
    version         INTEGER NOT NULL,
    inserted_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS account_transactions (
    event_id      TEXT PRIMARY KEY NOT NULL,
    position      INTEGER NOT NULL,
    account_uuid  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    transfer_uuid TEXT,
    occurred_at   TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS account_transactions_by_account ON account_transactions (account_uuid, position);
CREATE TABLE IF NOT EXISTS transfers (
    uuid                     TEXT PRIMARY KEY NOT NULL,
    source_account_uuid      TEXT NOT NULL,
    destination_account_uuid TEXT NOT NULL,
    amount                   INTEGER NOT NULL,
    status                   TEXT NOT NULL,
    reason                   TEXT,
    requested_at             TEXT NOT NULL,
    updated_at               TEXT NOT NULL
) STRICT;
