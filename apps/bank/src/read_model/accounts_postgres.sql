CREATE TABLE IF NOT EXISTS accounts (
    uuid            uuid PRIMARY KEY,
    current_balance bigint NOT NULL,
    status          text NOT NULL,
    version         bigint NOT NULL,
    inserted_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS account_transactions (
    event_id      uuid PRIMARY KEY,
    position      bigint NOT NULL,
    account_uuid  uuid NOT NULL,
    kind          text NOT NULL,
    amount        bigint NOT NULL,
    balance_after bigint NOT NULL,
    transfer_uuid uuid,
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS account_transactions_by_account ON account_transactions (account_uuid, position);
CREATE TABLE IF NOT EXISTS transfers (
    uuid                     uuid PRIMARY KEY,
    source_account_uuid      uuid NOT NULL,
    destination_account_uuid uuid NOT NULL,
    amount                   bigint NOT NULL,
    status                   text NOT NULL,
    reason                   text,
    requested_at             timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
