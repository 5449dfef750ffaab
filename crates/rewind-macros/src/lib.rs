//! Derive macros for Rewind, used through the `rewind` crate (its default `derive`
//! feature re-exports them next to the traits they implement, as serde does).
//!
//! * [`macro@Command`] implements `rewind::Command` for a struct from one
//!   `#[command(...)]` attribute: which aggregate handles it, which field names the
//!   instance, and optionally the stream prefix and the field checks.
//! * [`macro@Event`] implements `rewind::Event` for an enum whose variants are stored
//!   under their serde names; [`macro@event`] does the same and also gives variants
//!   stored names of their own with `#[event(name = "...")]`.
//!
//! The macros only write the impls a person would write by hand: the rules they rely
//! on (a command's aggregate must execute it, the stream prefix must agree, events
//! are serde's externally tagged enums) stay in `rewind`, which checks them the same
//! way for hand-written impls. The generated code names everything by absolute
//! `::rewind::...` paths, so the using crate needs `rewind` and nothing else.
//!
//! # Layout
//!
//! `command.rs` and `event.rs` hold one macro family each; `attr.rs` the parsing of
//! `key = value` lists they share.

#![warn(missing_docs)]

mod attr;
mod command;
mod event;

use proc_macro::TokenStream;

/// Implements `rewind::Command` for a struct.
///
/// ```text
/// #[command(aggregate = Type, id = field)]                  required
/// #[command(prefix = "account-")]                           optional: `Command::STREAM_PREFIX`
/// #[command(validate = path::to::check)]                    optional: `Command::validate`
/// ```
///
/// * `aggregate`: the aggregate type that handles the command. It must implement
///   `rewind::Execute<ThisCommand>`; if it does not, the impl does not compile.
/// * `id`: the field (a name, or an index for a tuple struct) whose `ToString` is the
///   targeted instance's identity, `aggregate_id`.
/// * `prefix`: the stream prefix the command expects its aggregate to have. The
///   router uses it when the aggregate's configuration states none, and panics when
///   it meets two different prefixes for one aggregate (see `rewind::Router`).
/// * `validate`: a `fn(&Self) -> Result<(), rewind::ValidationErrors>` used as
///   `Command::validate` (which otherwise accepts everything).
///
/// The keys may be spread over several `#[command(...)]` attributes; each may appear
/// once.
///
/// ```
/// use rewind::{Aggregate, Command, Execute, ValidationErrors};
///
/// #[derive(Debug, Default, Clone)]
/// struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum AccountEvent { Opened }
/// # use rewind::Never;
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account";
/// #     type Event = AccountEvent; type Error = Never;
/// #     fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// # impl Execute<OpenAccount> for Account {
/// #     fn execute(&self, _: &OpenAccount) -> Result<Vec<AccountEvent>, Never> { Ok(vec![]) }
/// # }
///
/// #[derive(Debug, Command)]
/// #[command(aggregate = Account, id = number, prefix = "account-", validate = positive)]
/// struct OpenAccount {
///     number: u32,
///     initial_balance: i64,
/// }
///
/// fn positive(command: &OpenAccount) -> Result<(), ValidationErrors> {
///     let mut errors = ValidationErrors::new();
///     if command.initial_balance <= 0 {
///         errors.add("initial_balance", "must be greater than 0");
///     }
///     errors.into_result()
/// }
///
/// let command = OpenAccount { number: 7, initial_balance: 0 };
/// assert_eq!(command.aggregate_id(), "7");
/// assert_eq!(OpenAccount::STREAM_PREFIX, Some("account-"));
/// assert!(command.validate().is_err());
/// ```
///
/// A command its aggregate cannot execute is a compile error, as it is by hand:
///
/// ```compile_fail,E0277
/// # use rewind::{Aggregate, Command};
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum AccountEvent { Opened }
/// # use rewind::Never;
/// # impl Aggregate for Account {
/// #     const NAME: &'static str = "account";
/// #     type Event = AccountEvent; type Error = Never;
/// #     fn apply(&mut self, _: &AccountEvent) {}
/// # }
/// #[derive(Debug, Command)]
/// #[command(aggregate = Account, id = number)] // no `impl Execute<CloseAccount> for Account`
/// struct CloseAccount { number: u32 }
/// ```
///
/// So is an unknown key, a missing `aggregate` or `id`, a field that does not exist,
/// or anything but a struct:
///
/// ```compile_fail
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum Ev { Opened }
/// # impl rewind::Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = rewind::Never;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// # impl<C> rewind::Execute<C> for Account {
/// #     fn execute(&self, _: &C) -> Result<Vec<Ev>, rewind::Never> { Ok(vec![]) }
/// # }
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Account, id = number, stream = "x")] // `stream` is no key
/// struct CloseAccount { number: u32 }
/// ```
///
/// ```compile_fail
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum Ev { Opened }
/// # impl rewind::Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = rewind::Never;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// # impl<C> rewind::Execute<C> for Account {
/// #     fn execute(&self, _: &C) -> Result<Vec<Ev>, rewind::Never> { Ok(vec![]) }
/// # }
/// #[derive(Debug, rewind::Command)]
/// #[command(id = number)] // no `aggregate`
/// struct CloseAccount { number: u32 }
/// ```
///
/// ```compile_fail
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum Ev { Opened }
/// # impl rewind::Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = rewind::Never;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// # impl<C> rewind::Execute<C> for Account {
/// #     fn execute(&self, _: &C) -> Result<Vec<Ev>, rewind::Never> { Ok(vec![]) }
/// # }
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Account, id = account)] // no field `account`
/// struct CloseAccount { number: u32 }
/// ```
///
/// ```compile_fail
/// # #[derive(Debug, Default, Clone)] struct Account;
/// # #[derive(Debug, Clone, serde::Serialize, serde::Deserialize, rewind::Event)] enum Ev { Opened }
/// # impl rewind::Aggregate for Account {
/// #     const NAME: &'static str = "account"; type Event = Ev; type Error = rewind::Never;
/// #     fn apply(&mut self, _: &Ev) {}
/// # }
/// # impl<C> rewind::Execute<C> for Account {
/// #     fn execute(&self, _: &C) -> Result<Vec<Ev>, rewind::Never> { Ok(vec![]) }
/// # }
/// #[derive(Debug, rewind::Command)]
/// #[command(aggregate = Account, id = 0)]
/// enum CloseAccount { Number(u32) }
/// ```
#[proc_macro_derive(Command, attributes(command))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    command::derive(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `rewind::Event` for an enum whose variants are stored under their serde
/// names (the variant's name, or its `#[serde(rename = "...")]`).
///
/// ```text
/// #[event(upcast = path::to::upcast)]    optional, on the enum: `Event::upcast`
/// ```
///
/// `upcast` is a `fn(&str, &str) -> Option<(String, serde_json::Value)>` used as
/// `Event::upcast`. The enum must derive serde's `Serialize` and `Deserialize` itself,
/// with the default (externally tagged) representation: `#[serde(tag)]` or
/// `#[serde(untagged)]` are refused, since the stored form is the tag and its content.
///
/// To store a variant under a name of its own, use the attribute [`macro@event`] in
/// place of this derive: a derive cannot add the `#[serde(rename)]` that makes serde
/// agree, so `#[event(name = "...")]` on a variant is refused here.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, rewind::Event)]
/// #[event(upcast = upcast)]
/// enum CounterEvent {
///     Incremented { by: u32 },
///     Reset,
/// }
///
/// /// Version 1 called `Reset` `Cleared`.
/// fn upcast(event_type: &str, _data: &str) -> Option<(String, serde_json::Value)> {
///     (event_type == "Cleared").then(|| ("Reset".to_owned(), serde_json::Value::Null))
/// }
///
/// let encoded = rewind::encode_event(&CounterEvent::Incremented { by: 2 }).unwrap();
/// assert_eq!((encoded.event_type.as_str(), encoded.data.as_str()), ("Incremented", r#"{"by":2}"#));
/// assert_eq!(rewind::decode_event::<CounterEvent>("Cleared", "null").unwrap(), CounterEvent::Reset);
/// ```
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::derive(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `rewind::Event` for an enum, like [`macro@Event`], and stores each
/// variant marked `#[event(name = "...")]` under that name.
///
/// ```text
/// #[rewind::event]                       on the enum, above its `#[derive]`
/// #[rewind::event(upcast = path)]        the same, with `Event::upcast`
/// #[event(name = "product_added")]       optional, on a variant: its stored type name
/// ```
///
/// The name is given to serde: the attribute rewrites `#[event(name = "x")]` into
/// `#[serde(rename = "x")]` before serde's derive runs, so encoding, decoding,
/// `rewind::event::type_names` and plain `serde_json` all use the one name. A variant
/// without it keeps its serde name. A variant may not carry both `#[event(name)]` and
/// a `#[serde(rename)]`, and two variants may not be stored under one name.
///
/// Put `#[rewind::event]` above `#[derive(Serialize, Deserialize)]`: attributes run
/// top to bottom, and serde must see the renamed variants.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[rewind::event]
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum OrderEvent {
///     #[event(name = "product_added_to_order")]
///     ProductAdded { sku: String },
///     OrderPlaced,
/// }
///
/// let encoded = rewind::encode_event(&OrderEvent::ProductAdded { sku: "A1".into() }).unwrap();
/// assert_eq!(encoded.event_type, "product_added_to_order");
/// let back: OrderEvent = rewind::decode_event(&encoded.event_type, &encoded.data).unwrap();
/// assert_eq!(back, OrderEvent::ProductAdded { sku: "A1".into() });
/// assert_eq!(rewind::event::type_names::<OrderEvent>(), &["product_added_to_order", "OrderPlaced"]);
/// assert!(rewind::decode_event::<OrderEvent>("ProductAdded", r#"{"sku":"A1"}"#).is_err());
/// ```
///
/// ```compile_fail
/// #[rewind::event]
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// enum OrderEvent {
///     #[event(name = "placed")]
///     Placed,
///     #[event(name = "placed")] // the same stored name twice
///     PlacedAgain,
/// }
/// ```
///
/// ```compile_fail
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// #[rewind::event] // below the derive: serde would store `Placed`, so it is refused
/// enum OrderEvent {
///     #[event(name = "placed")]
///     Placed,
/// }
/// ```
#[proc_macro_attribute]
pub fn event(args: TokenStream, input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    event::attribute(args.into(), input).unwrap_or_else(syn::Error::into_compile_error).into()
}
