//! Domain events and their stored form.
//!
//! An aggregate's events are one Rust enum with serde's default (externally tagged)
//! representation. The variant name — or its `#[serde(rename = "...")]` — is the
//! event's stable *type name*; the variant's content is the event's JSON *data*.
//! Neither depends on the Rust module path, so code can move freely without
//! orphaning stored events. Old names and shapes are read through [`Event::upcast`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A domain event: an enum whose variants are the event types of one aggregate.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     Incremented { by: u32 },
///     #[serde(rename = "CounterReset")]
///     Reset,
/// }
/// impl rewind::Event for CounterEvent {}
///
/// let encoded = rewind::encode_event(&CounterEvent::Incremented { by: 2 }).unwrap();
/// assert_eq!(encoded.event_type, "Incremented");
/// assert_eq!(encoded.data, r#"{"by":2}"#);
/// let back: CounterEvent = rewind::decode_event("CounterReset", "null").unwrap();
/// assert_eq!(back, CounterEvent::Reset);
/// ```
pub trait Event: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// Rewrites an event stored under an old type name or shape into the current one.
    ///
    /// Called for every event read back, before decoding. Return `None` when the
    /// event is already current (the default); otherwise the current type name and
    /// data. Upcasting happens on read only: stored events are never rewritten.
    fn upcast(event_type: &str, data: &str) -> Option<(String, serde_json::Value)> {
        let _ = (event_type, data);
        None
    }
}

/// An event turned into its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// The stable type name.
    pub event_type: String,
    /// The event's content as JSON text.
    pub data: String,
}

/// An event that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event type is not an externally tagged enum, so it has no type name.
    #[error("events must be enums with serde's default (externally tagged) representation; got {0}")]
    NotAnEnum(String),
    /// serde_json refused the event or its stored data.
    #[error("event `{event_type}` could not be (de)serialized: {source}")]
    Json {
        /// The type name involved.
        event_type: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

/// Encodes an event into its type name and JSON data.
pub fn encode_event<E: Event>(event: &E) -> Result<EncodedEvent, EventError> {
    let json = serde_json::to_string(event)
        .map_err(|source| EventError::Json { event_type: std::any::type_name::<E>().to_owned(), source })?;
    split_tagged(json)
}

/// serde_json writes an externally tagged variant as `{"Name":<content>}` (or
/// `"Name"` for a unit variant); split that into name and content without
/// re-parsing.
fn split_tagged(mut json: String) -> Result<EncodedEvent, EventError> {
    if json.starts_with('"') {
        let event_type: String = serde_json::from_str(&json).map_err(|_| EventError::NotAnEnum(json.clone()))?;
        return Ok(EncodedEvent { event_type, data: "null".to_owned() });
    }
    let key_end = match json.strip_prefix("{\"").and_then(|rest| rest.find("\":")) {
        Some(i) => i + 2,
        None => return Err(EventError::NotAnEnum(json)),
    };
    let name = &json[2..key_end];
    if name.contains('\\') || !json.ends_with('}') {
        return Err(EventError::NotAnEnum(json));
    }
    let event_type = name.to_owned();
    json.truncate(json.len() - 1);
    json.drain(..key_end + 2);
    Ok(EncodedEvent { event_type, data: json })
}

/// Decodes a stored event, upcasting it first when [`Event::upcast`] says so.
pub fn decode_event<E: Event>(event_type: &str, data: &str) -> Result<E, EventError> {
    let json_error = |source| EventError::Json { event_type: event_type.to_owned(), source };
    if let Some((current_type, value)) = E::upcast(event_type, data) {
        let mut map = serde_json::Map::with_capacity(1);
        map.insert(current_type, value);
        return serde_json::from_value(serde_json::Value::Object(map)).map_err(json_error);
    }
    let type_json = serde_json::to_string(event_type).map_err(json_error)?;
    let mut tagged = String::with_capacity(type_json.len() + data.len() + 3);
    tagged.push('{');
    tagged.push_str(&type_json);
    tagged.push(':');
    tagged.push_str(data);
    tagged.push('}');
    serde_json::from_str(&tagged).map_err(json_error)
}

/// Whether a stored event is of one of `E`'s types — a current type name, or an old
/// one that [`Event::upcast`] rewrites — whether or not its data decodes. A consumer
/// that must not pass over its own events (a process manager) tells an event it
/// cannot read from one that is not for it with this.
///
/// ```
/// #[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
/// enum Ev { Opened { id: u32 }, Closed }
/// impl rewind::Event for Ev {}
///
/// assert!(rewind::event::is_type_of::<Ev>("Opened", r#"{"garbled": true}"#));
/// assert!(!rewind::event::is_type_of::<Ev>("SomethingElse", "{}"));
/// ```
pub fn is_type_of<E: Event>(event_type: &str, data: &str) -> bool {
    type_names::<E>().contains(&event_type) || E::upcast(event_type, data).is_some()
}

/// The type names `E` declares: its variants' serde names. Empty for a type serde
/// does not deserialize as an externally tagged enum.
pub fn type_names<E: Event>() -> &'static [&'static str] {
    let mut probe = VariantProbe(None);
    let _ = E::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that answers nothing and remembers the variant names an enum asks
/// for, so they come from serde's own derive rather than a list kept by hand.
struct VariantProbe(Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for &mut VariantProbe {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("probing variant names"))
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(variants);
        Err(serde::de::Error::custom("probing variant names"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn knows_its_own_type_names_current_and_old() {
        assert_eq!(type_names::<Ev>(), &["Opened", "Tuple", "Closed", "Renamed.V2"]);
        assert!(is_type_of::<Ev>("Renamed.V2", "{}"));
        assert!(is_type_of::<Ev>("Deposited", "{}"), "an old name that upcasts");
        assert!(!is_type_of::<Ev>("Renamed", "{}"));
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Opened {
            id: String,
            amount: i64,
        },
        Tuple(u32),
        Closed,
        #[serde(rename = "Renamed.V2")]
        Renamed {
            note: String,
        },
    }

    impl Event for Ev {
        fn upcast(event_type: &str, data: &str) -> Option<(String, serde_json::Value)> {
            // v1 "Deposited" carried `amount` only; today it is `Opened` with an id.
            (event_type == "Deposited").then(|| {
                let old: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                let amount = old.get("amount").cloned().unwrap_or(0.into());
                ("Opened".to_owned(), serde_json::json!({"id": "legacy", "amount": amount}))
            })
        }
    }

    #[test]
    fn round_trips_every_variant_shape() {
        let events = [
            Ev::Opened { id: "a\"b ü".into(), amount: -3 },
            Ev::Tuple(7),
            Ev::Closed,
            Ev::Renamed { note: "x".into() },
        ];
        for event in events {
            let encoded = encode_event(&event).unwrap();
            let back: Ev = decode_event(&encoded.event_type, &encoded.data).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn type_name_comes_from_serde_not_rust_path() {
        let e = encode_event(&Ev::Renamed { note: "n".into() }).unwrap();
        assert_eq!(e.event_type, "Renamed.V2");
        assert_eq!(e.data, r#"{"note":"n"}"#);
        assert_eq!(encode_event(&Ev::Closed).unwrap().data, "null");
    }

    #[test]
    fn upcasts_an_old_event() {
        let e: Ev = decode_event("Deposited", r#"{"amount": 12}"#).unwrap();
        assert_eq!(e, Ev::Opened { id: "legacy".into(), amount: 12 });
    }

    #[test]
    fn rejects_non_enum_events_and_unknown_types() {
        #[derive(Debug, Clone, Serialize, Deserialize)]
        struct NotEnum(u8);
        impl Event for NotEnum {}
        assert!(matches!(encode_event(&NotEnum(1)), Err(EventError::NotAnEnum(_))));
        assert!(decode_event::<Ev>("Nope", "{}").is_err());
        assert!(decode_event::<Ev>("Opened", "{not json").is_err());
    }
}
