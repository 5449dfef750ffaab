//! The queries the API answers from, one text for every backend.

use super::statements::StatementView;
use super::{AccountView, TransactionView, TransferView};
use rewind::sql::{Row, ValueError};
use rewind::{ReadModel, StoreError};
use std::sync::Arc;
use uuid::Uuid;

/// Reads the bank's read model. Cheap to clone.
#[derive(Clone)]
pub struct Queries(pub Arc<dyn ReadModel>);

fn account(row: &Row) -> Result<AccountView, ValueError> {
    Ok(AccountView { uuid: row.get(0)?, current_balance: row.get(1)?, status: row.get(2)?, version: row.get(3)? })
}

fn transaction(row: &Row) -> Result<TransactionView, ValueError> {
    Ok(TransactionView {
        kind: row.get(0)?,
        amount: row.get(1)?,
        balance_after: row.get(2)?,
        transfer_uuid: row.get(3)?,
        occurred_at: row.get(4)?,
    })
}

fn transfer(row: &Row) -> Result<TransferView, ValueError> {
    Ok(TransferView {
        uuid: row.get(0)?,
        source_account_uuid: row.get(1)?,
        destination_account_uuid: row.get(2)?,
        amount: row.get(3)?,
        status: row.get(4)?,
        reason: row.get(5)?,
    })
}

fn statement(row: &Row) -> Result<StatementView, ValueError> {
    let totals = (row.get(2)?, row.get(3)?);
    Ok(StatementView::new(row.get(0)?, row.get(1)?, totals, row.get(4)?, row.get(5)?))
}

impl Queries {
    /// One account.
    pub async fn account(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        let sql = "SELECT uuid, current_balance, status, version FROM accounts WHERE uuid = $1";
        let row = self.0.query_opt(sql, (id,)).await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    /// An account's money movements, oldest first.
    pub async fn transactions(&self, account: Uuid) -> Result<Vec<TransactionView>, StoreError> {
        let sql = "SELECT kind, amount, balance_after, transfer_uuid, occurred_at FROM account_transactions
                   WHERE account_uuid = $1 ORDER BY position";
        let rows = self.0.query(sql, (account,)).await?;
        Ok(rows.iter().map(transaction).collect::<Result<_, _>>()?)
    }

    /// One transfer.
    pub async fn transfer(&self, id: Uuid) -> Result<Option<TransferView>, StoreError> {
        let sql = "SELECT uuid, source_account_uuid, destination_account_uuid, amount, status, reason
                   FROM transfers WHERE uuid = $1";
        let row = self.0.query_opt(sql, (id,)).await?;
        Ok(row.as_ref().map(transfer).transpose()?)
    }

    /// An account's monthly statements, oldest first (empty until that projection
    /// has caught up, see [`super::statements`]).
    pub async fn statements(&self, account: Uuid) -> Result<Vec<StatementView>, StoreError> {
        let sql = "SELECT month, opening_balance, credits, debits, closing_balance, transactions
                   FROM monthly_statements WHERE account_uuid = $1 ORDER BY month";
        let rows = self.0.query(sql, (account,)).await?;
        Ok(rows.iter().map(statement).collect::<Result<_, _>>()?)
    }
}
