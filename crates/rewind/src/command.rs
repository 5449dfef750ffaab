//! Commands: requests to change one aggregate instance.
//!
//! A command is a plain struct. It names, at compile time, the aggregate type that
//! handles it and, at run time, the identity of the instance it targets; the
//! [`Router`](crate::Router) adds an optional identity prefix to form the stream id.

use crate::aggregate::{Aggregate, Execute};
use crate::middleware::validation::ValidationErrors;
use std::any::Any;
use std::fmt;

/// A request to an aggregate.
///
/// ```
/// # use rewind::{Aggregate, Command, Execute, ValidationErrors};
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)] enum AccountEvent { Opened }
/// # impl rewind::Event for AccountEvent {}
/// # #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)] #[error("never")] struct Never;
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account";
/// #     type Event = AccountEvent; type Error = Never;
/// #     fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// # impl Execute<OpenAccount> for Account {
/// #     fn execute(&self, _: &OpenAccount) -> Result<Vec<AccountEvent>, Never> { Ok(vec![]) }
/// # }
/// #[derive(Debug)]
/// struct OpenAccount { account_number: String, initial_balance: i64 }
///
/// impl Command for OpenAccount {
///     type Aggregate = Account;
///     fn aggregate_id(&self) -> String { self.account_number.clone() }
///     fn validate(&self) -> Result<(), ValidationErrors> {
///         let mut errors = ValidationErrors::new();
///         if self.initial_balance <= 0 {
///             errors.add("initial_balance", "must be greater than 0");
///         }
///         errors.into_result()
///     }
/// }
///
/// let command = OpenAccount { account_number: "ZC7".into(), initial_balance: 0 };
/// assert!(command.validate().is_err());
/// ```
pub trait Command: fmt::Debug + Send + Sync + Sized + 'static {
    /// The aggregate type that handles this command.
    type Aggregate: Execute<Self>;

    /// The stream prefix this command expects its aggregate to be configured with, or
    /// `None` (the default) for no opinion.
    ///
    /// The [`Router`](crate::Router) uses it when the aggregate's
    /// [`AggregateConfig`](crate::AggregateConfig) sets no
    /// [`identity_prefix`](crate::AggregateConfig::identity_prefix), and panics when
    /// it meets a different prefix for the same aggregate, from its configuration or
    /// from another command: the prefix is part of every stream id, so a disagreement
    /// would send one instance's commands to two streams.
    const STREAM_PREFIX: Option<&'static str> = None;

    /// The identity of the targeted instance (without the router's prefix).
    fn aggregate_id(&self) -> String;

    /// Field-level checks, run by [`ValidationMiddleware`](crate::ValidationMiddleware)
    /// before dispatch. The default accepts everything.
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

/// A command seen by middleware, whatever its type.
///
/// Every [`Command`] is one. Middleware reads the common parts (name, identity) and
/// downcasts to look inside one command type:
///
/// ```
/// use rewind::{Aggregate, AnyCommand, Application, DispatchError, Execute, MemoryStore, Middleware};
/// use rewind::{Never, Pipeline, Rejection, Router};
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)]
/// # enum AccountEvent { Withdrawn { amount: u64 } }
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = AccountEvent; type Error = Never;
/// #     fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// # impl Execute<Withdraw> for Account {
/// #     fn execute(&self, w: &Withdraw) -> Result<Vec<AccountEvent>, Never> {
/// #         Ok(vec![AccountEvent::Withdrawn { amount: w.amount }])
/// #     }
/// # }
///
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Account, id = account)]
/// struct Withdraw { account: String, amount: u64 }
///
/// /// Refuses withdrawals over a limit; lets every other command through.
/// struct Limit(u64);
///
/// #[async_trait::async_trait]
/// impl Middleware for Limit {
///     async fn before_dispatch(&self, pipeline: &mut Pipeline<'_>) -> Result<(), Rejection> {
///         let command: &dyn AnyCommand = pipeline.command;
///         match command.as_any().downcast_ref::<Withdraw>() {
///             Some(withdraw) if withdraw.amount > self.0 => Err(Rejection::Unauthorized(format!(
///                 "{} of {} from {}",
///                 command.command_name(),
///                 withdraw.amount,
///                 command.aggregate_id()
///             ))),
///             _ => Ok(()),
///         }
///     }
/// }
///
/// let app = Application::builder(MemoryStore::new())
///     .router(Router::new().command::<Withdraw>())
///     .middleware(Limit(100))
///     .build();
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// app.dispatch(Withdraw { account: "ZC7".into(), amount: 50 }).await.unwrap();
/// let refused = app.dispatch(Withdraw { account: "ZC7".into(), amount: 500 }).await.unwrap_err();
/// let DispatchError::Rejected(Rejection::Unauthorized(why)) = &refused else { panic!("{refused}") };
/// assert_eq!(why, "Withdraw of 500 from ZC7");
/// # });
/// ```
pub trait AnyCommand: fmt::Debug + Send + Sync {
    /// The command's Rust type name without its module path (`OpenAccount`).
    fn command_name(&self) -> &'static str;
    /// For middleware that inspects one command type.
    fn as_any(&self) -> &dyn Any;
    /// The command's own field checks.
    fn validate(&self) -> Result<(), ValidationErrors>;
    /// The targeted identity (without prefix).
    fn aggregate_id(&self) -> String;
    /// The handling aggregate's [`Aggregate::NAME`].
    fn aggregate_name(&self) -> &'static str;
}

impl<C: Command> AnyCommand for C {
    fn command_name(&self) -> &'static str {
        short_type_name::<C>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn validate(&self) -> Result<(), ValidationErrors> {
        Command::validate(self)
    }
    fn aggregate_id(&self) -> String {
        Command::aggregate_id(self)
    }
    fn aggregate_name(&self) -> &'static str {
        <C::Aggregate as Aggregate>::NAME
    }
}

/// `a::b::OpenAccount` → `OpenAccount`.
pub(crate) fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}
