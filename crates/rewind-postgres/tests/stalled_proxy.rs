//! A TCP proxy between the store and PostgreSQL stops forwarding without closing
//! anything (as a dead NAT or a hung middlebox does: the kernel still acknowledges
//! every segment, so TCP keepalive and `tcp_user_timeout` see nothing). The writer's
//! appends must fail within the URL's `query_timeout` (plus one `connect_timeout`),
//! not hang; once the path forwards again the store reconnects, every acknowledged
//! append is in the log exactly once, and a subscription following the store (its
//! checkpoints kept through the same proxy) sees every event, in order.

mod common;

use rewind::conformance::event;
use rewind::{
    Application, ConsumerError, EventHandler, EventStore, ExpectedVersion, GlobalPosition, RecordedEvent, StoreError,
    SubscriptionOptions, Subscriptions,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `target` until stalled; while stalled it reads and
/// writes nothing and closes nothing.
struct Proxy {
    addr: SocketAddr,
    stalled: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stalled, watch) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, watch.clone()));
                tokio::spawn(pipe(server_read, client_write, watch.clone()));
            }
        });
        Proxy { addr, stalled, task }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction of a proxied connection.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = stalled.wait_for(|s| *s) => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // What was read while the switch flipped is held, not sent.
        if stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

/// Records the positions it is handed.
struct Follower(Arc<Mutex<Vec<GlobalPosition>>>);

#[async_trait::async_trait]
impl EventHandler for Follower {
    async fn handle(&self, event: &RecordedEvent) -> Result<(), ConsumerError> {
        self.0.lock().expect("positions").push(event.position);
        Ok(())
    }
}

const QUERY_TIMEOUT: Duration = Duration::from_millis(1500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The test database's URL pointed at the proxy, with test-sized timeouts.
fn proxied_url(url: &str, proxy: SocketAddr) -> (String, SocketAddr) {
    let config: tokio_postgres::Config = url.parse().expect("TEST_DATABASE_URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let target = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .expect("resolve the database host")
        .next()
        .expect("an address");
    let mut proxied = format!(
        "host=127.0.0.1 port={} user={} dbname={} statement_timeout=1s query_timeout={}ms connect_timeout={}",
        proxy.port(),
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
        QUERY_TIMEOUT.as_millis(),
        CONNECT_TIMEOUT.as_secs()
    );
    if let Some(password) = config.get_password() {
        proxied.push_str(&format!(" password='{}'", String::from_utf8_lossy(password)));
    }
    (proxied, target)
}

/// What one appender saw.
#[derive(Default)]
struct Outcomes {
    acknowledged: Vec<uuid::Uuid>,
    unknown: Vec<uuid::Uuid>,
    unavailable: usize,
    slowest: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_path_is_noticed_and_nothing_acknowledged_is_lost() {
    let Some(url) = common::database_url("a_stalled_path_is_noticed_and_nothing_acknowledged_is_lost") else {
        return;
    };
    let schema = common::fresh_schema();
    // Find the target first, then start the proxy in front of it.
    let (_, target) = proxied_url(&url, "127.0.0.1:1".parse().expect("addr"));
    let proxy = Proxy::start(target).await;
    let (proxied, _) = proxied_url(&url, proxy.addr);
    let store = rewind_postgres::PostgresStore::connect_with(common::options(&proxied, &schema))
        .await
        .expect("open through the proxy");
    let app = Application::builder(store).build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backoff = rewind::Backoff::new(Duration::from_millis(20), Duration::from_millis(200));
    // Its bookkeeping goes through the proxy too.
    let model = rewind_postgres::PostgresReadModel::connect(&proxied, &schema).await.expect("read model");
    let bookkeeping = Arc::new(rewind_postgres::PostgresSubscriptionStore::new(&model));
    let subs = Subscriptions::builder(&app, bookkeeping)
        .handler("follower", Follower(seen.clone()), SubscriptionOptions::new().batch_size(50).backoff(backoff))
        .start()
        .expect("start the subscription");

    let (stop, stopped) = watch::channel(false);
    let acked = Arc::new(AtomicU64::new(0));
    let appenders: Vec<_> = (0..4)
        .map(|n| {
            let app = app.clone();
            let acked = acked.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut outcomes = Outcomes::default();
                while !*stopped.borrow_and_update() {
                    let event = event("Ticked", serde_json::json!({ "appender": n }));
                    let id = event.event_id;
                    let started = Instant::now();
                    let result = app.store().append(&format!("ticks-{n}"), ExpectedVersion::Any, vec![event]).await;
                    outcomes.slowest = outcomes.slowest.max(started.elapsed());
                    match result {
                        Ok(_) => {
                            outcomes.acknowledged.push(id);
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(StoreError::Backend(_)) => outcomes.unknown.push(id),
                        Err(StoreError::Unavailable(_)) => outcomes.unavailable += 1,
                        Err(other) => panic!("unexpected append error: {other}"),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                outcomes
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = acked.load(Ordering::SeqCst);
    assert!(before > 0, "appends flowed through the proxy");
    proxy.stall(true);
    let stalled_at = Instant::now();
    tokio::time::sleep(QUERY_TIMEOUT + CONNECT_TIMEOUT + Duration::from_secs(1)).await;
    proxy.stall(false);
    let stall = stalled_at.elapsed();
    // After the path forwards again, appends must succeed again.
    let resumed = acked.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), async {
        while acked.load(Ordering::SeqCst) < resumed + 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("appends succeed again after the stall");
    stop.send_replace(true);
    let mut all = Outcomes::default();
    for appender in appenders {
        let outcomes = appender.await.expect("appender");
        all.acknowledged.extend(outcomes.acknowledged);
        all.unknown.extend(outcomes.unknown);
        all.unavailable += outcomes.unavailable;
        all.slowest = all.slowest.max(outcomes.slowest);
    }
    assert!(
        !all.unknown.is_empty() || all.unavailable > 0,
        "appends during the {stall:?} stall failed (none hung past it)"
    );
    // One round trip's bound, then a reconnect bounded by connect_timeout, and a
    // group ahead of it in the queue: nothing waits for the whole stall plus more.
    let bound = 2 * (QUERY_TIMEOUT + CONNECT_TIMEOUT);
    assert!(all.slowest < bound, "slowest append took {:?} (bound {bound:?})", all.slowest);

    // The log, read around the proxy.
    let raw = common::raw_client(&url).await;
    let rows = raw
        .query(&format!("SELECT event_id, position FROM \"{schema}\".events ORDER BY position"), &[])
        .await
        .expect("read the log");
    let logged: Vec<uuid::Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let positions: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    // Holes where a transaction was cut off after taking its positions.
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "increasing positions");
    for id in &all.acknowledged {
        assert_eq!(logged.iter().filter(|l| *l == id).count(), 1, "acknowledged {id} is in the log once");
    }
    let known: std::collections::HashSet<_> = all.acknowledged.iter().chain(&all.unknown).collect();
    assert!(logged.iter().all(|id| known.contains(id)), "the log holds only appends that were asked for");

    // The subscription saw everything, in order (redeliveries aside).
    let head = GlobalPosition(positions.len() as u64);
    tokio::time::timeout(Duration::from_secs(15), subs.wait_for("follower", head))
        .await
        .expect("the subscription caught up after the stall")
        .expect("wait");
    let seen = seen.lock().expect("positions").clone();
    let mut first_sightings = Vec::new();
    for position in seen {
        if first_sightings.last().is_none_or(|last| position > *last) {
            first_sightings.push(position);
        } else {
            assert!(first_sightings.contains(&position), "{position:?} delivered out of order");
        }
    }
    assert_eq!(first_sightings, (1..=head.0).map(GlobalPosition).collect::<Vec<_>>(), "every event, in order");
    subs.shutdown().await;
}
