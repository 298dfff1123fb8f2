//! The real binary killed or stopped around publishing: no event is lost, none is doubled.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use token_service::store::{Db, PoolSettings};

use super::support::{eventually, nats_available, nats_url, outbox, NatsProxy, OutboxRow, TestBus};
use crate::client::TestClient;
use crate::helpers::{
    client_jwt, token_body, Backend, TestDatabase, CLIENT_SECRET, ENCRYPTION_KEY, READER_KEY,
};
use crate::on_both_backends;

const BIN: &str = env!("CARGO_BIN_EXE_token-service");
const SHOP: &str = "crash-shop.myshopify.com";

on_both_backends!(a_sigkill_between_commit_and_publish_loses_no_event);

/// The service as a child process; killed with SIGKILL when dropped.
struct Service {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(database_url: &str, nats: &str, bus: &TestBus) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(BIN);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .env("DATABASE_URL", database_url)
            .env("CLIENT_JWT_SECRET", CLIENT_SECRET)
            .env(
                "INTERNAL_JWT_SECRET",
                format!("platform-connector:{READER_KEY}"),
            )
            .env("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY)
            .env("API_HOST", "127.0.0.1")
            .env("TOKEN_API_EXTERNAL_PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in bus.overrides(nats) {
            command.env(key, value);
        }
        let child = command.arg("serve").spawn().unwrap();
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = TestClient::default();
        eventually("the service to listen", Duration::from_secs(20), || async {
            client
                .get(format!("{}/health", service.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
        })
        .await;
        service
    }

    async fn store(&self, merchant: &str) {
        let body = token_body(merchant, "shopify", SHOP, json!({"access_token": merchant}));
        let response = TestClient::default()
            .post(format!("{}/api/v1/tokens", self.base))
            .bearer_auth(client_jwt(SHOP))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the service did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn drained(db: &Db) -> Vec<OutboxRow> {
    eventually("the outbox to drain", Duration::from_secs(40), || async {
        let rows = outbox(db).await;
        rows.iter().all(|r| r.published).then_some(rows)
    })
    .await
}

/// Every outbox event is in the stream exactly once, in outbox order.
async fn assert_published_once_in_order(bus: &TestBus, rows: &[OutboxRow]) {
    let ids: Vec<String> = bus
        .messages("evt.token.stored.v1")
        .await
        .iter()
        .filter_map(|m| m.msg_id.clone())
        .collect();
    let expected: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    assert_eq!(ids, expected);
}

async fn a_sigkill_between_commit_and_publish_loses_no_event(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let database = TestDatabase::create(backend).await;
    let proxy = NatsProxy::start().await;
    proxy.cut();

    // Committed (201) while NATS is away, then killed before the relay could publish.
    let service = Service::start(&database.url, &proxy.url, &bus).await;
    for i in 0..5 {
        service.store(&format!("m-kill-{i}")).await;
    }
    service.sigkill();
    let db = Db::connect(&database.url, PoolSettings { max_connections: 2 })
        .await
        .unwrap();
    let rows = outbox(&db).await;
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| !r.published));

    // Restarted: everything goes out, in order.
    let service = Service::start(&database.url, &nats_url(), &bus).await;
    let rows = drained(&db).await;
    assert_published_once_in_order(&bus, &rows).await;

    // Killed again while it is publishing a burst: republished events are de-duplicated by
    // their Nats-Msg-Id, none is missing.
    for i in 5..35 {
        service.store(&format!("m-kill-{i}")).await;
    }
    service.sigkill();
    let _service = Service::start(&database.url, &nats_url(), &bus).await;
    let rows = drained(&db).await;
    assert_eq!(rows.len(), 35);
    assert_published_once_in_order(&bus, &rows).await;
}

/// SIGTERM publishes what is still in the outbox before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_the_outbox_before_exiting() {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let database = TestDatabase::create(Backend::Sqlite).await;
    let proxy = NatsProxy::start().await;
    proxy.cut();
    let mut service = Service::start(&database.url, &proxy.url, &bus).await;
    for i in 0..3 {
        service.store(&format!("m-term-{i}")).await;
    }
    proxy.restore();
    service.sigterm();
    assert!(service.wait_exit().await.success());

    let db = Db::connect(&database.url, PoolSettings { max_connections: 2 })
        .await
        .unwrap();
    let rows = outbox(&db).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter().all(|r| r.published),
        "flushed at shutdown: {rows:?}"
    );
    assert_published_once_in_order(&bus, &rows).await;
}
