-- STRICT: a value of the wrong type is refused, never stored (SQLite would turn an
-- overflowing sum into a REAL). `credits` and `debits` are NULL once the month's
-- total is beyond i64 (see statements.rs).
CREATE TABLE IF NOT EXISTS monthly_statements (
    account_uuid    TEXT NOT NULL,
    month           TEXT NOT NULL,
    opening_balance INTEGER NOT NULL,
    credits         INTEGER,
    debits          INTEGER,
    closing_balance INTEGER NOT NULL,
    transactions    INTEGER NOT NULL,
    PRIMARY KEY (account_uuid, month)
) STRICT;
