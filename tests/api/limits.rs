//! Rate limits (per client address before authentication, per shop, per service) and the
//! request timeout: both answer in the envelope, and neither ever drops a connection.
//!
//! Limits live in each replica's memory, not in the database, so these run on SQLite only.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_shopify::FakeShopify;
use crate::helpers::{spawn_app_with, token_body, Backend, TestApp, OTHER_SERVICE_KEY, READER_KEY};
use crate::metrics::Scrape;
use crate::refresh::app_with;

const SHOP: &str = "limits-shop.myshopify.com";

/// Checks a 429 and returns its `Retry-After`, in seconds.
async fn assert_limited(response: reqwest::Response, limit: &str) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // One request every 4 s in these tests: the wait is at most that.
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["details"]["limit"], limit);
    assert_eq!(body["error"]["details"]["retryable"], true);
    assert_eq!(body["error"]["details"]["retry_after_seconds"], retry_after);
    assert!(body["meta"]["request_id"].is_string());
    retry_after
}

async fn get(app: &TestApp, path: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}{path}", app.address));
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_shop_limit_gets_429_and_the_limit_recovers() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_SHOP_PER_SEC", "0.25"),
            ("RATE_LIMIT_SHOP_BURST", "3"),
        ],
    )
    .await;
    let before = Scrape::take(&app).await;
    let body = |i: usize| token_body(&format!("m-lim-{i}"), "shopify", SHOP, json!({"k": i}));
    for i in 0..3 {
        assert_eq!(
            app.store(SHOP, &body(i)).await.status(),
            201,
            "within the burst"
        );
    }
    let retry_after = assert_limited(app.store(SHOP, &body(3)).await, "shop").await;
    assert_limited(app.delete(SHOP, "m-lim-0", "shopify").await, "shop").await;
    assert_eq!(
        app.raw_row("m-lim-3", "shopify").await,
        None,
        "a refused request never reaches the vault"
    );
    // Another shop has its own allowance.
    let other = "limits-other.myshopify.com";
    let theirs = token_body("m-lim-other", "shopify", other, json!({}));
    assert_eq!(app.store(other, &theirs).await.status(), 201);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.store(SHOP, &body(3)).await.status(), 201, "recovered");

    let after = Scrape::take(&app).await;
    let limited = r#"token_service_rate_limited_total{scope="shop"}"#;
    assert_eq!(after.get(limited) - before.get(limited), 2.0);
    let answered =
        r#"token_service_http_requests_total{method="POST",route="/api/v1/tokens",status="429"}"#;
    assert_eq!(after.get(answered) - before.get(answered), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_has_its_own_limit() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_SERVICE_PER_SEC", "0.25"),
            ("RATE_LIMIT_SERVICE_BURST", "2"),
        ],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(app.read(READER_KEY, "m-svc", "").await.status(), 200);
    }
    let retry_after = assert_limited(app.read(READER_KEY, "m-svc", "").await, "service").await;
    // Another service is judged on its own (and refused for what it is, not for volume).
    assert_eq!(app.read(OTHER_SERVICE_KEY, "m-svc", "").await.status(), 403);
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.read(READER_KEY, "m-svc", "").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_limit_applies_before_authentication() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_IP_PER_SEC", "0.25"),
            ("RATE_LIMIT_IP_BURST", "3"),
        ],
    )
    .await;
    // Failed authentications use up the address's allowance like anything else.
    for _ in 0..3 {
        assert_eq!(app.read("not-a-key", "m-ip", "").await.status(), 401);
    }
    assert_limited(app.read(READER_KEY, "m-ip", "").await, "ip").await;
    assert_limited(get(&app, "/health", None).await, "ip").await;
    // Without trusted proxies, a forwarded address is not believed.
    let retry_after = assert_limited(get(&app, "/health", Some("203.0.113.9")).await, "ip").await;
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(&app, "/health", None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_are_limited_one_by_one() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("RATE_LIMIT_IP_PER_SEC", "0.25"),
            ("RATE_LIMIT_IP_BURST", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    assert_eq!(
        get(&app, "/health", Some("203.0.113.1")).await.status(),
        200
    );
    assert_limited(get(&app, "/health", Some("203.0.113.1")).await, "ip").await;
    // The proxy appends the address it saw; what the client wrote before it is ignored.
    assert_limited(
        get(&app, "/health", Some("198.51.100.7, 203.0.113.1")).await,
        "ip",
    )
    .await;
    assert_eq!(
        get(&app, "/health", Some("203.0.113.2")).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_over_the_timeout_answers_503_in_the_envelope() {
    // A handler waiting on a platform that does not answer in time. (A client that stalls
    // its upload is answered the same way: see `abuse`.)
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.delay = Duration::from_secs(10));
    let app = app_with(Backend::Sqlite, &fake, &[("REQUEST_TIMEOUT_SECS", "2")]).await;
    let mut body = token_body(
        "m-slow",
        "shopify",
        SHOP,
        json!({"access_token": "a", "refresh_token": fake.issue_refresh_token()}),
    );
    body["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    assert_eq!(app.store(SHOP, &body).await.status(), 201);
    let started = Instant::now();
    let response = app
        .client
        .post(format!(
            "{}/api/v1/tokens/m-slow/shopify/refresh",
            app.address
        ))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    // The service is still there for the next request.
    assert_eq!(get(&app, "/health", None).await.status(), 200);
}
