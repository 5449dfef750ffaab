//! The lag of every subscription over the last minutes, one sample a second, kept by
//! the console rather than by the page: an operator who opens the console during an
//! incident sees the minutes before it, and a reload loses nothing.
//!
//! A task samples [`Subscriptions::status`] (in memory, no store read) while the
//! console lives; it holds the console's parts weakly, so dropping the console ends
//! it. Times come from one wall-clock reading at the start plus a monotonic clock,
//! so the samples stay a second apart when the system clock is stepped.

use crate::Console;
use crate::api::{Answer, number, params};
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use rewind::Subscriptions;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How many samples are kept: five minutes, one a second.
pub const KEPT: usize = 300;

/// Every subscription's lag at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct LagSample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Its place in the history, counting from 1 (the `since` cursor).
    pub seq: u64,
    /// Lag (events not yet done) by subscription name.
    pub lag: BTreeMap<String, u64>,
}

/// The last [`KEPT`] samples, oldest first.
#[derive(Default)]
pub(crate) struct LagHistory {
    /// A std mutex: held only to push or copy, never across an await.
    samples: Mutex<VecDeque<LagSample>>,
}

impl LagHistory {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<LagSample>> {
        self.samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, at: DateTime<Utc>, subscriptions: &Subscriptions) {
        let lag = subscriptions.status().into_iter().map(|s| (s.name, s.lag)).collect();
        let mut samples = self.lock();
        let seq = samples.back().map_or(1, |last| last.seq + 1);
        samples.push_back(LagSample { at, seq, lag });
        while samples.len() > KEPT {
            samples.pop_front();
        }
    }

    /// The samples after `seq`; all of them for a `seq` this history never reached
    /// (a page that read a server since restarted).
    fn since(&self, seq: u64) -> Vec<LagSample> {
        let samples = self.lock();
        let seq = if samples.back().is_some_and(|last| seq > last.seq) { 0 } else { seq };
        samples.iter().filter(|s| s.seq > seq).cloned().collect()
    }
}

/// Starts sampling into `history` each second, if there is a runtime to run on (a
/// console made outside one has no history, and its page draws only what it sees).
pub(crate) fn start(history: &Arc<LagHistory>, subscriptions: &Arc<Subscriptions>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (history, subscriptions) = (Arc::downgrade(history), Arc::downgrade(subscriptions));
    runtime.spawn(sample(history, subscriptions));
}

async fn sample(history: Weak<LagHistory>, subscriptions: Weak<Subscriptions>) {
    let (wall, origin) = (Utc::now(), tokio::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = tick.tick().await;
        let (Some(history), Some(subscriptions)) = (history.upgrade(), subscriptions.upgrade()) else {
            return;
        };
        let at = chrono::TimeDelta::from_std(now - origin).map_or_else(|_| Utc::now(), |since| wall + since);
        history.record(at, &subscriptions);
    }
}

/// `GET /api/subscriptions/lag?since=SEQ`: the samples after `since` (all kept, by
/// default, or when `since` is beyond the newest), oldest first.
pub(crate) async fn lag(State(console): State<Arc<Console>>, RawQuery(query): RawQuery) -> Answer {
    let params = params(query)?;
    let since = number(&params, "since", 0)?;
    Ok(Json(json!({ "data": console.lag.since(since) })).into_response())
}
