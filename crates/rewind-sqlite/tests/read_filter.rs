//! Filtered reads of the global order compare stream prefixes bytewise: no
//! character of a prefix is a wildcard.

mod common;

use common::{TempStore, events};
use rewind::{EventFilter, EventStore, ExpectedVersion, GlobalPosition};

#[tokio::test]
async fn prefixes_match_literally() {
    let store = TempStore::new().await;
    for stream in ["a_b", "axb", "a%c", "A_b", "a_", "a\u{0}z"] {
        store.append(stream, ExpectedVersion::NoStream, events(1)).await.expect("append");
    }
    let streams = |prefix: &str| {
        let filter = EventFilter { stream_prefix: Some(prefix.into()), event_types: vec![] };
        let store = &store;
        async move {
            let read = store.read_all(GlobalPosition::START, 100, &filter).await.expect("read");
            read.into_iter().map(|e| e.stream_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(streams("a_").await, ["a_b", "a_"]);
    assert_eq!(streams("a%").await, ["a%c"]);
    assert_eq!(streams("a\u{0}").await, ["a\u{0}z"]);
    assert_eq!(streams("").await.len(), 6, "an empty prefix matches everything");
    assert!(streams("b").await.is_empty());
}

#[tokio::test]
async fn type_filters_match_exact_names() {
    let store = TempStore::new().await;
    let mut batch = events(3);
    batch[0].event_type = "Opened".into();
    batch[1].event_type = "opened".into();
    batch[2].event_type = "Opened\"".into();
    store.append("s", ExpectedVersion::NoStream, batch).await.expect("append");
    let filter = EventFilter { stream_prefix: None, event_types: vec!["Opened".into(), "Opened\"".into()] };
    let read = store.read_all(GlobalPosition::START, 100, &filter).await.expect("read");
    assert_eq!(read.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["Opened", "Opened\""]);
}
