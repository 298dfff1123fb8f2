//! What the event tests share: the NATS server, a stream and subject prefix per test, a TCP
//! proxy that can cut the service off NATS, and views of the outbox.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use serde_json::Value;
use sqlx::Row;
use token_service::events::EventSettings;
use token_service::store::Db;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::helpers::TestApp;

/// The NATS server the tests use.
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Whether NATS tests can run. With `CI=true` an unreachable server fails the test.
pub async fn nats_available() -> bool {
    let connected = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::connect(nats_url().as_str()),
    )
    .await;
    match connected {
        Ok(Ok(client)) => {
            drop(client);
            true
        }
        failed if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "NATS is unreachable at {} and CI=true: {failed:?}",
                nats_url()
            )
        }
        failed => {
            eprintln!("skipping a NATS test: server unreachable ({failed:?})");
            false
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stream and subject prefix of one test's own, so parallel tests sharing the server never
/// see each other's events. The stream is deleted with the value.
pub struct TestBus {
    pub stream: String,
    pub prefix: String,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

/// One message as stored in the stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub sequence: u64,
    pub msg_id: Option<String>,
    pub headers: async_nats::HeaderMap,
    pub payload: Vec<u8>,
}

impl StoredMessage {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("a JSON event")
    }

    pub fn header(&self, name: &str) -> Option<String> {
        // A `&str` key never matches a standard header name; a parsed one does.
        let name: async_nats::HeaderName = name.parse().unwrap();
        self.headers.get(name).map(|v| v.as_str().to_owned())
    }
}

impl TestBus {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string();
        let client = async_nats::connect(nats_url().as_str()).await.unwrap();
        Self {
            stream: format!("TS_TEST_{}", &id[..16]),
            prefix: format!("t{}", &id[..16]),
            js: jetstream::new(client.clone()),
            client,
        }
    }

    /// The service settings that point at this test's stream through `url`.
    pub fn overrides(&self, url: &str) -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), url.into()),
            ("NATS_STREAM".into(), self.stream.clone()),
            ("NATS_SUBJECT_PREFIX".into(), self.prefix.clone()),
        ]
    }

    /// The event settings a test-driven relay uses.
    pub fn settings(&self) -> EventSettings {
        let vars = self.overrides(&nats_url());
        EventSettings::from_vars(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("valid event settings")
    }

    pub fn subject(&self, subject: &str) -> String {
        format!("{}.{subject}", self.prefix)
    }

    /// Creates the stream the way an operator might, before the service runs.
    pub async fn create_stream(&self, config: stream::Config) {
        self.js
            .create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject(">")],
                ..config
            })
            .await
            .unwrap();
    }

    pub async fn stream_config(&self) -> stream::Config {
        let mut stream = self.js.get_stream(&self.stream).await.unwrap();
        stream.info().await.unwrap().config.clone()
    }

    /// Every message of the stream on `subject` (without prefix), in stream order.
    pub async fn messages(&self, subject: &str) -> Vec<StoredMessage> {
        let Ok(mut stream) = self.js.get_stream(&self.stream).await else {
            return Vec::new();
        };
        let state = stream.info().await.unwrap().state.clone();
        let wanted = self.subject(subject);
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            if message.subject.as_str() == wanted {
                out.push(StoredMessage {
                    sequence: message.sequence,
                    msg_id: message
                        .headers
                        .get(async_nats::header::NATS_MESSAGE_ID)
                        .map(|v| v.as_str().to_owned()),
                    headers: message.headers.clone(),
                    payload: message.payload.to_vec(),
                });
            }
        }
        out
    }

    /// Publishes `payload` on `subject` (without prefix); its stream sequence.
    pub async fn publish(&self, subject: &str, payload: Vec<u8>) -> u64 {
        self.js
            .publish(self.subject(subject), payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// Waits until the service has created its durable consumer `name` (and so the stream).
    pub async fn wait_consumer(&self, name: &str) {
        eventually("the consumer to exist", Duration::from_secs(30), || async {
            let stream = self.js.get_stream(&self.stream).await.ok()?;
            stream.consumer_info(name).await.ok()
        })
        .await;
    }

    /// Waits until the durable consumer `name` has settled every message up to `seq`. Long
    /// enough for one redelivery after the ack wait: a message the server handed to a
    /// connection that was breaking comes back only then.
    pub async fn wait_settled(&self, name: &str, seq: u64) -> jetstream::consumer::Info {
        eventually(
            "the consumer to settle the message",
            Duration::from_secs(45),
            || async {
                let stream = self.js.get_stream(&self.stream).await.ok()?;
                let info = stream.consumer_info(name).await.ok()?;
                (info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0).then_some(info)
            },
        )
        .await
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let name = self.stream.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(client) = async_nats::connect(nats_url().as_str()).await {
                        let _ = jetstream::new(client).delete_stream(&name).await;
                    }
                })
        })
        .join();
    }
}

/// A TCP proxy to NATS that a test can cut (dropping every connection and refusing new
/// ones) and restore, to take the bus away from a running service.
pub struct NatsProxy {
    pub url: String,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    connections: Vec<AbortHandle>,
}

impl NatsProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let target = nats_url()
            .trim_start_matches("nats://")
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if shared.lock().unwrap().cut {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                shared.lock().unwrap().connections.push(task.abort_handle());
            }
        })
        .abort_handle();
        Self { url, state, accept }
    }

    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Drop for NatsProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// One outbox row as the tests look at it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub subject: String,
    pub payload: Value,
    pub published: bool,
}

/// The outbox in sequence order.
pub async fn outbox(db: &Db) -> Vec<OutboxRow> {
    const SQL: &str = "SELECT event_id, subject, payload, published_at IS NOT NULL AS published \
         FROM event_outbox ORDER BY seq";
    macro_rules! rows {
        ($pool:expr) => {
            sqlx::query(SQL)
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| OutboxRow {
                    event_id: r.get("event_id"),
                    subject: r.get("subject"),
                    payload: serde_json::from_str(r.get::<&str, _>("payload")).unwrap(),
                    published: r.get("published"),
                })
                .collect()
        };
    }
    match db {
        Db::Sqlite(pool) => rows!(pool),
        Db::Postgres(pool) => rows!(pool),
    }
}

/// Waits until the service has published everything in its outbox; the outbox then.
pub async fn drained(app: &TestApp) -> Vec<OutboxRow> {
    eventually("the outbox to drain", Duration::from_secs(40), || async {
        let rows = outbox(&app.db).await;
        rows.iter().all(|r| r.published).then_some(rows)
    })
    .await
}

/// The messages about one merchant, in stream order.
pub fn of_merchant<'a>(messages: &'a [StoredMessage], merchant: &str) -> Vec<&'a StoredMessage> {
    messages
        .iter()
        .filter(|m| m.json()["data"]["platform"]["merchant_id"] == merchant)
        .collect()
}
