-- `credits` and `debits` are NULL once the month's total is beyond bigint (see
-- statements.rs).
CREATE TABLE IF NOT EXISTS monthly_statements (
    account_uuid    uuid   NOT NULL,
    month           text   NOT NULL,
    opening_balance bigint NOT NULL,
    credits         bigint,
    debits          bigint,
    closing_balance bigint NOT NULL,
    transactions    bigint NOT NULL,
    PRIMARY KEY (account_uuid, month)
);
-- Tables made before totals could be beyond bigint require them; the check keeps
-- the ALTER (and its exclusive lock) to the one start that needs it.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'monthly_statements'
                 AND column_name IN ('credits', 'debits') AND is_nullable = 'NO') THEN
        ALTER TABLE monthly_statements ALTER COLUMN credits DROP NOT NULL, ALTER COLUMN debits DROP NOT NULL;
    END IF;
END $$;
