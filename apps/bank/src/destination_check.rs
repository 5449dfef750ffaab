//! Middleware that refuses a transfer whose destination does not exist or is
//! closed, with a field-level message, before the command reaches the aggregate.
//!
//! It reads the read model, so it is a courtesy check: a destination closed
//! between this check and the deposit is still handled by the transfer process,
//! which refunds the source.

use crate::domain::TransferBetweenAccounts;
use crate::read_model::Queries;
use async_trait::async_trait;
use rewind::{Middleware, Pipeline, Rejection, ValidationErrors};

/// See the module docs.
pub struct DestinationCheck(pub Queries);

#[async_trait]
impl Middleware for DestinationCheck {
    async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
        let Some(transfer) = pipeline.command.as_any().downcast_ref::<TransferBetweenAccounts>() else {
            return Ok(());
        };
        let problem = match self.0.account(transfer.destination_account_uuid).await {
            Ok(Some(account)) if account.status == "open" => return Ok(()),
            Ok(Some(_)) => "account is closed",
            Ok(None) => "account does not exist",
            Err(error) => return Err(Rejection::Other(format!("could not check the destination account: {error}"))),
        };
        let mut errors = ValidationErrors::new();
        errors.add("destination_account", problem);
        Err(Rejection::Invalid(errors))
    }
}
