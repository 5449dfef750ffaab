//! The bank's domain: the account aggregate, its commands and events, and the
//! transfer process manager. Pure: no I/O anywhere below this module.

pub mod account;
pub mod commands;
pub mod events;
pub mod transfer;

pub use account::{Account, AccountError, Status};
pub use commands::*;
pub use events::AccountEvent;
pub use transfer::{Transfer, TransferProcess};
