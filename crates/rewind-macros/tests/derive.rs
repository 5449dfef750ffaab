//! The derives as an application uses them: commands routed and dispatched on
//! `MemoryStore` in the stream their prefix names, events stored under the names
//! their variants are given.

use rewind::{
    Aggregate, AggregateConfig, Application, Command, Direction, DispatchError, EventStore, Execute, MemoryStore,
    Never, Router, StreamVersion, ValidationErrors, ValidationMiddleware,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[rewind::event]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CartEvent {
    #[event(name = "product_added_to_cart")]
    ProductAdded {
        sku: String,
    },
    CartEmptied,
}

#[derive(Debug, Default, Clone)]
struct Cart {
    skus: Vec<String>,
}

impl Aggregate for Cart {
    const NAME: &'static str = "cart";
    type Event = CartEvent;
    type Error = Never;
    fn apply(&mut self, event: &CartEvent) {
        match event {
            CartEvent::ProductAdded { sku } => self.skus.push(sku.clone()),
            CartEvent::CartEmptied => self.skus.clear(),
        }
    }
}

#[derive(Debug, Command)]
#[command(aggregate = Cart, id = cart, prefix = "cart-", validate = known_sku)]
struct AddProduct {
    cart: u64,
    sku: String,
}

fn known_sku(command: &AddProduct) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    if command.sku.is_empty() {
        errors.add("sku", "must not be empty");
    }
    errors.into_result()
}

/// A tuple struct names its id field by index; no prefix: it takes the cart's.
#[derive(Debug, Command)]
#[command(aggregate = Cart, id = 0)]
struct EmptyCart(u64);

impl Execute<AddProduct> for Cart {
    fn execute(&self, command: &AddProduct) -> Result<Vec<CartEvent>, Never> {
        Ok(vec![CartEvent::ProductAdded { sku: command.sku.clone() }])
    }
}

impl Execute<EmptyCart> for Cart {
    fn execute(&self, _: &EmptyCart) -> Result<Vec<CartEvent>, Never> {
        Ok(vec![CartEvent::CartEmptied])
    }
}

fn app(store: Arc<MemoryStore>) -> Application {
    Application::builder(store)
        .router(Router::new().commands::<(AddProduct, EmptyCart)>())
        .middleware(ValidationMiddleware)
        .build()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(future)
}

#[test]
fn derived_commands_dispatch_into_the_stream_their_prefix_names() {
    block_on(async {
        let store = Arc::new(MemoryStore::new());
        let app = app(store.clone());
        app.dispatch(AddProduct { cart: 3, sku: "A1".into() }).await.expect("add");
        app.dispatch(EmptyCart(3)).await.expect("empty, routed by its tuple field");

        assert_eq!(app.stream_id::<Cart>("3").as_deref(), Some("cart-3"));
        let stored = store.read_stream("cart-3", StreamVersion(1), Direction::Forward, 10).await.expect("read");
        let types: Vec<&str> = stored.iter().map(|event| event.event_type.as_str()).collect();
        assert_eq!(types, ["product_added_to_cart", "CartEmptied"]);
        assert_eq!(stored[0].data, r#"{"sku":"A1"}"#);
    });
}

#[test]
fn derived_validate_runs_before_dispatch() {
    block_on(async {
        let app = app(Arc::new(MemoryStore::new()));
        let refused = app.dispatch(AddProduct { cart: 3, sku: String::new() }).await;
        assert!(matches!(refused, Err(DispatchError::Rejected(_))), "{refused:?}");
    });
}

#[test]
fn a_named_variant_round_trips_through_its_stored_name_only() {
    let event = CartEvent::ProductAdded { sku: "A1".into() };
    let encoded = rewind::encode_event(&event).expect("encode");
    assert_eq!(encoded.event_type, "product_added_to_cart");
    assert_eq!(rewind::decode_event::<CartEvent>(&encoded.event_type, &encoded.data).expect("decode"), event);
    assert!(rewind::decode_event::<CartEvent>("ProductAdded", &encoded.data).is_err(), "the Rust name is not stored");
    assert_eq!(rewind::event::type_names::<CartEvent>(), ["product_added_to_cart", "CartEmptied"]);
    assert_eq!(serde_json::to_string(&event).expect("json"), r#"{"product_added_to_cart":{"sku":"A1"}}"#);
}

#[test]
fn the_derive_writes_what_a_hand_written_impl_would() {
    let command = AddProduct { cart: 9, sku: "B2".into() };
    assert_eq!(command.aggregate_id(), "9");
    assert_eq!(AddProduct::STREAM_PREFIX, Some("cart-"));
    assert_eq!(EmptyCart::STREAM_PREFIX, None);
    assert!(EmptyCart(1).validate().is_ok(), "no `validate`: accepts everything");
}

#[test]
#[should_panic(expected = "is given the stream prefix \"basket-\" by its AggregateConfig::identity_prefix \
                           and \"cart-\" by AddProduct::STREAM_PREFIX")]
fn a_configured_prefix_that_disagrees_with_a_command_panics() {
    let _ = Router::new().aggregate(AggregateConfig::<Cart>::new().identity_prefix("basket-")).command::<AddProduct>();
}
