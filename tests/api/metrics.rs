//! `/metrics`: each counter moves by exactly what the requests made did, and no label ever
//! carries a shop, a merchant or a secret.

use std::collections::HashMap;

use serde_json::json;

use crate::fake_shopify::FakeShopify;
use crate::helpers::{token_body, Backend, TestApp, CLIENT_SECRET, OTHER_SERVICE_KEY, READER_KEY};
use crate::on_both_backends;
use crate::refresh::app_with;

on_both_backends!(
    metrics_move_by_what_the_requests_did,
    audit_write_failures_are_counted
);

const SHOP: &str = "metrics-shop.myshopify.com";

/// One scrape: sample (name with labels, as exposed) → value.
#[derive(Debug)]
pub(crate) struct Scrape {
    pub text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    pub(crate) async fn take(app: &TestApp) -> Self {
        let response = app
            .client
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("name value");
                (name.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        Self { text, samples }
    }

    /// The sample's value; a series never touched counts as 0.
    pub(crate) fn get(&self, sample: &str) -> f64 {
        self.samples.get(sample).copied().unwrap_or(0.0)
    }
}

fn moved(before: &Scrape, after: &Scrape, sample: &str) -> f64 {
    after.get(sample) - before.get(sample)
}

fn http(method: &str, route: &str, status: u16) -> String {
    format!(
        r#"token_service_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
    )
}

fn operation(operation: &str, caller: &str, outcome: &str) -> String {
    format!(
        r#"token_service_token_operations_total{{operation="{operation}",caller="{caller}",outcome="{outcome}"}}"#
    )
}

async fn metrics_move_by_what_the_requests_did(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = app_with(backend, &fake, &[]).await;
    let before = Scrape::take(&app).await;

    // 3 stores, 2 good reads and 1 refused, 1 delete and 1 of nothing, 1 forced refresh,
    // 1 unknown route, 1 tampered token read once.
    let refresh_token = fake.issue_refresh_token();
    let mut refreshable = token_body(
        "m-met-1",
        "shopify",
        SHOP,
        json!({"access_token": "a", "refresh_token": refresh_token}),
    );
    refreshable["expires_at"] =
        json!((chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339());
    assert_eq!(app.store(SHOP, &refreshable).await.status(), 201);
    for platform in ["magento", "custom"] {
        let body = token_body(
            "m-met-1",
            platform,
            SHOP,
            json!({"api_key": "secret-api-key-met"}),
        );
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
    }
    assert_eq!(
        app.read(READER_KEY, "m-met-1", "?platform=shopify")
            .await
            .status(),
        200
    );
    assert_eq!(app.read(READER_KEY, "m-met-2", "").await.status(), 200);
    assert_eq!(
        app.read(OTHER_SERVICE_KEY, "m-met-1", "").await.status(),
        403
    );
    assert_eq!(app.delete(SHOP, "m-met-1", "custom").await.status(), 200);
    assert_eq!(app.delete(SHOP, "m-met-1", "custom").await.status(), 404);
    let forced = app
        .client
        .post(format!(
            "{}/api/v1/tokens/m-met-1/shopify/refresh",
            app.address
        ))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 200);
    let unknown = app
        .client
        .get(format!("{}/no/such/{SHOP}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    app.set_ciphertext("m-met-1", "magento", "v2:key_v1:tampered")
        .await;
    let read = app.read(READER_KEY, "m-met-1", "?platform=magento").await;
    assert_eq!(read.status(), 200);

    let after = Scrape::take(&app).await;
    let delta = |sample: &str| moved(&before, &after, sample);
    assert_eq!(delta(&http("POST", "/api/v1/tokens", 201)), 3.0);
    assert_eq!(
        delta(&http("GET", "/api/v1/tokens/{merchant_id}", 200)),
        3.0
    );
    assert_eq!(
        delta(&http("GET", "/api/v1/tokens/{merchant_id}", 403)),
        1.0
    );
    assert_eq!(
        delta(&http(
            "DELETE",
            "/api/v1/tokens/{merchant_id}/{platform}",
            200
        )),
        1.0
    );
    assert_eq!(
        delta(&http(
            "DELETE",
            "/api/v1/tokens/{merchant_id}/{platform}",
            404
        )),
        1.0
    );
    assert_eq!(delta(&http("GET", "unmatched", 404)), 1.0);
    // The first scrape itself is counted by the second.
    assert_eq!(delta(&http("GET", "/metrics", 200)), 1.0);
    let latency = r#"token_service_http_request_duration_seconds_count{method="POST",route="/api/v1/tokens",status="201"}"#;
    assert_eq!(delta(latency), 3.0);

    assert_eq!(delta(&operation("store", "shop", "success")), 3.0);
    assert_eq!(
        delta(&operation("read", "platform-connector", "success")),
        3.0
    );
    assert_eq!(
        delta(&operation("read", "billing-service", "SERVICE_NOT_ALLOWED")),
        1.0
    );
    assert_eq!(delta(&operation("delete", "shop", "success")), 1.0);
    assert_eq!(delta(&operation("delete", "shop", "TOKEN_NOT_FOUND")), 1.0);
    assert_eq!(
        delta(&operation("refresh", "platform-connector", "success")),
        1.0
    );
    assert_eq!(
        delta(r#"token_service_token_refreshes_total{purpose="forced",outcome="success"}"#),
        1.0
    );
    assert_eq!(delta("token_service_decryption_failures_total"), 1.0);
    assert_eq!(delta("token_service_audit_write_failures_total"), 0.0);
    assert_eq!(fake.refresh_calls(), 1);

    // Every vault operation went through a group-commit batch: 3 stores, 3 reads, 1 denial
    // record, 2 deletes, and the forced refresh's claim, save and read.
    assert_eq!(delta("token_service_db_batch_size_sum"), 12.0);
    assert!(delta("token_service_db_batch_size_count") >= 1.0);
    assert!(delta("token_service_db_batch_duration_seconds_count") >= 1.0);
    let max = if backend == Backend::Sqlite { 2.0 } else { 6.0 };
    assert_eq!(after.get("token_service_db_pool_max_connections"), max);
    let open = after.get(r#"token_service_db_pool_connections{state="idle"}"#)
        + after.get(r#"token_service_db_pool_connections{state="in_use"}"#);
    assert!(open >= 1.0 && open <= max, "{open} connections open");
    assert_eq!(after.get("token_service_db_queue_depth"), 0.0);
    // Without NATS the events these requests wrote wait in the outbox; the gauge counts them.
    let pending = app
        .count("SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL")
        .await;
    assert!(
        pending >= 4,
        "3 stores and a delete announce themselves: {pending}"
    );
    assert_eq!(after.get("token_service_outbox_backlog"), pending as f64);

    // Bounded, secret-free labels: no shop, merchant, key or token appears anywhere.
    for leak in [
        SHOP,
        "m-met-1",
        "m-met-2",
        READER_KEY,
        OTHER_SERVICE_KEY,
        CLIENT_SECRET,
        "secret-api-key-met",
        &refresh_token,
    ] {
        assert!(!after.text.contains(leak), "{leak} appears in /metrics");
    }
}

async fn audit_write_failures_are_counted(backend: Backend) {
    let app = crate::helpers::spawn_app(backend).await;
    let before = Scrape::take(&app).await;
    app.execute("ALTER TABLE token_access_logs RENAME TO token_access_logs_away")
        .await;
    let body = token_body("m-audit", "custom", SHOP, json!({"k": 1}));
    assert_eq!(app.store(SHOP, &body).await.status(), 500);
    assert_eq!(app.read(READER_KEY, "m-audit", "").await.status(), 500);
    app.execute("ALTER TABLE token_access_logs_away RENAME TO token_access_logs")
        .await;
    assert_eq!(app.store(SHOP, &body).await.status(), 201);

    let after = Scrape::take(&app).await;
    assert_eq!(
        moved(&before, &after, "token_service_audit_write_failures_total"),
        2.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &operation("store", "shop", "INTERNAL_ERROR")
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            &operation("read", "platform-connector", "INTERNAL_ERROR")
        ),
        1.0
    );
    assert_eq!(
        moved(&before, &after, &operation("store", "shop", "success")),
        1.0
    );
}
