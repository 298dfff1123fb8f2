//! Refreshing rotating OAuth tokens (Shopify expiring offline tokens) against a loopback
//! server that behaves like Shopify's.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_shopify::{FakeShopify, CLIENT_SECRET};
use crate::helpers::{
    captured_logs, spawn_app_on, spawn_app_with, Backend, TestApp, TestDatabase, OTHER_SERVICE_KEY,
    READER_KEY,
};
use crate::on_both_backends;

on_both_backends!(
    concurrent_reads_share_one_refresh,
    lost_answer_is_retried_with_the_same_refresh_token,
    invalid_grant_requires_reauthorization,
    failed_refresh_returns_the_still_valid_token_then_backs_off,
    background_task_refreshes_ahead_of_the_window,
    forced_refresh_endpoint,
    only_shop_domains_under_the_suffix_are_called,
);

const SHOP: &str = "refresh-shop.myshopify.com";

pub(crate) async fn app_with(
    backend: Backend,
    fake: &FakeShopify,
    extra: &[(&str, &str)],
) -> TestApp {
    let settings = fake.settings();
    let mut overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    overrides.extend_from_slice(extra);
    spawn_app_with(backend, &overrides).await
}

/// Stores an expiring Shopify token whose access token expires in `expires_in_secs`.
async fn store_expiring(
    app: &TestApp,
    shop: &str,
    merchant: &str,
    refresh_token: &str,
    expires_in_secs: i64,
) {
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(expires_in_secs);
    let body = json!({
        "merchant_id": merchant,
        "platform_name": "shopify",
        "platform_shop_id": "1001",
        "domain": shop,
        "token_data": {"access_token": "shpat_original", "refresh_token": refresh_token, "scope": "read_products"},
        "token_type": "oauth",
        "expires_at": expires_at.to_rfc3339(),
    });
    assert_eq!(app.store(shop, &body).await.status(), 201);
}

async fn shopify_token(app: &TestApp, merchant: &str) -> Value {
    let data = app.read_data(merchant).await;
    data["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["platform_name"] == "shopify")
        .cloned()
        .unwrap_or(Value::Null)
}

fn refresh_audits(rows: &[crate::helpers::AuditRow]) -> Vec<(bool, Option<String>)> {
    rows.iter()
        .filter(|r| r.access_type == "refresh")
        .map(|r| (r.success, r.error_code.clone()))
        .collect()
}

async fn concurrent_reads_share_one_refresh(backend: Backend) {
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.delay = Duration::from_millis(300));
    let app = Arc::new(app_with(backend, &fake, &[]).await);
    let r0 = fake.issue_refresh_token();
    store_expiring(&app, SHOP, "m-fresh", &r0, 60).await;

    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        reads.spawn(async move {
            let response = app.read(READER_KEY, "m-fresh", "?platform=shopify").await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["data"]["tokens"][0].clone()
        });
    }
    let mut seen = Vec::new();
    while let Some(token) = reads.join_next().await {
        seen.push(token.unwrap());
    }
    assert_eq!(
        fake.refresh_calls(),
        1,
        "one refresh for 100 concurrent reads"
    );
    let expected = format!("shpat_{}_2", fake.prefix);
    for token in &seen {
        assert_eq!(token["token_data"]["access_token"], expected.as_str());
        assert_eq!(token["is_expired"], false);
        assert!(token.get("refresh_error").is_none());
    }
    let token = &seen[0];
    assert_eq!(
        token["token_data"]["refresh_token"],
        format!("shprt_{}_2", fake.prefix).as_str()
    );
    assert_eq!(token["token_data"]["scope"], "read_products,write_orders");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(token["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires_at > chrono::Utc::now() + chrono::Duration::minutes(55));
    assert_eq!(
        refresh_audits(&app.audit_rows("m-fresh").await),
        [(true, None)]
    );
    let reads = app
        .audit_rows("m-fresh")
        .await
        .iter()
        .filter(|r| r.access_type == "read")
        .count();
    assert_eq!(reads, 100, "each read audited exactly once");

    let events = crate::events::support::outbox(&app.db).await;
    let refreshed: Vec<_> = events
        .iter()
        .filter(|e| e.subject == "evt.token.refreshed.v1")
        .collect();
    assert_eq!(refreshed.len(), 1, "one refreshed event");
    assert_eq!(
        refreshed[0].payload["data"]["platform"]["merchant_id"],
        "m-fresh"
    );
    assert_eq!(refreshed[0].payload["data"]["grant"], "refresh");
    let all_events =
        serde_json::to_string(&events.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    for secret in [
        r0.as_str(),
        expected.as_str(),
        CLIENT_SECRET,
        "shpat_original",
    ] {
        assert!(
            !all_events.contains(secret),
            "a token or the client secret is in an event"
        );
    }

    let logs = captured_logs();
    for secret in [
        r0.as_str(),
        expected.as_str(),
        CLIENT_SECRET,
        &format!("shprt_{}_2", fake.prefix),
    ] {
        assert!(
            !logs.contains(secret),
            "a token or the client secret is in the logs"
        );
    }
}

async fn lost_answer_is_retried_with_the_same_refresh_token(backend: Backend) {
    let fake = FakeShopify::start().await;
    // The first answer is processed by the platform (tokens rotated) but never arrives.
    fake.behave(|b| b.swallow_next = 1);
    let app = app_with(backend, &fake, &[]).await;
    let r0 = fake.issue_refresh_token();
    store_expiring(&app, SHOP, "m-lost", &r0, 60).await;

    let token = shopify_token(&app, "m-lost").await;
    assert_eq!(fake.refresh_calls(), 2, "the lost answer was retried");
    let (access, refresh) = (
        format!("shpat_{}_3", fake.prefix),
        format!("shprt_{}_3", fake.prefix),
    );
    assert_eq!(token["token_data"]["access_token"], access.as_str());
    assert_eq!(token["token_data"]["refresh_token"], refresh.as_str());

    // The stored refresh token still works: nothing was lost.
    let response = app
        .client
        .post(format!(
            "{}/api/v1/tokens/m-lost/shopify/refresh",
            app.address
        ))
        .bearer_auth(READER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"]["token_data"]["access_token"],
        format!("shpat_{}_4", fake.prefix).as_str()
    );
}

async fn invalid_grant_requires_reauthorization(backend: Backend) {
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.invalid_grant = true);
    let app = app_with(backend, &fake, &[]).await;
    store_expiring(&app, SHOP, "m-reauth", &fake.issue_refresh_token(), 120).await;
    store_expiring(
        &app,
        "other-shop.myshopify.com",
        "m-reauth-expired",
        &fake.issue_refresh_token(),
        -60,
    )
    .await;

    // Still valid: the old token comes back, flagged.
    let token = shopify_token(&app, "m-reauth").await;
    assert_eq!(token["token_data"]["access_token"], "shpat_original");
    assert_eq!(token["refresh_error"], "REAUTH_REQUIRED");
    assert_eq!(
        refresh_audits(&app.audit_rows("m-reauth").await),
        [(false, Some("REAUTH_REQUIRED".into()))]
    );

    let events = crate::events::support::outbox(&app.db).await;
    let reauth: Vec<_> = events
        .iter()
        .filter(|e| e.subject == "evt.token.reauth_required.v1")
        .collect();
    assert_eq!(reauth.len(), 1);
    assert_eq!(
        reauth[0].payload["data"]["platform"]["merchant_id"],
        "m-reauth"
    );
    assert_eq!(reauth[0].payload["data"]["error_code"], "REAUTH_REQUIRED");

    // Re-authorization state: no more calls to the platform.
    let calls = fake.refresh_calls();
    let token = shopify_token(&app, "m-reauth").await;
    assert_eq!(token["refresh_error"], "REAUTH_REQUIRED");
    assert_eq!(fake.refresh_calls(), calls);

    // Expired: no stale credential is handed out.
    let data = app.read_data("m-reauth-expired").await;
    assert_eq!(data["tokens"], json!([]));
    assert_eq!(
        data["failed"],
        json!([{"platform_name": "shopify", "code": "REFRESH_FAILED"}])
    );

    // Storing a new grant (the merchant re-authorized) clears the state.
    fake.behave(|b| b.invalid_grant = false);
    store_expiring(&app, SHOP, "m-reauth", &fake.issue_refresh_token(), 60).await;
    let token = shopify_token(&app, "m-reauth").await;
    assert!(token.get("refresh_error").is_none());
    assert!(token["token_data"]["access_token"]
        .as_str()
        .unwrap()
        .starts_with("shpat_"));
    assert_ne!(token["token_data"]["access_token"], "shpat_original");
}

async fn failed_refresh_returns_the_still_valid_token_then_backs_off(backend: Backend) {
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.fail_next = 1000);
    let app = app_with(backend, &fake, &[]).await;
    store_expiring(&app, SHOP, "m-fail", &fake.issue_refresh_token(), 120).await;

    let token = shopify_token(&app, "m-fail").await;
    assert_eq!(token["token_data"]["access_token"], "shpat_original");
    assert_eq!(token["refresh_error"], "REFRESH_UNAVAILABLE");
    assert_eq!(fake.refresh_calls(), 3, "retried, then gave up");

    // Backing off: the next read does not call the platform again.
    let token = shopify_token(&app, "m-fail").await;
    assert_eq!(token["refresh_error"], "REFRESH_UNAVAILABLE");
    assert_eq!(fake.refresh_calls(), 3);
    assert_eq!(
        refresh_audits(&app.audit_rows("m-fail").await),
        [(false, Some("REFRESH_UNAVAILABLE".into()))]
    );
}

async fn background_task_refreshes_ahead_of_the_window(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = app_with(
        backend,
        &fake,
        &[
            ("TOKEN_REFRESH_INTERVAL", "1s"),
            ("TOKEN_REFRESH_LEAD", "10m"),
        ],
    )
    .await;
    // Eight minutes left: outside the 5-minute read window, inside window + lead.
    store_expiring(&app, SHOP, "m-bg", &fake.issue_refresh_token(), 8 * 60).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while fake.refresh_calls() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the background task did not refresh"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the refresh commit, then check it without having read before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let rows = app.audit_rows("m-bg").await;
        if !refresh_audits(&rows).is_empty() {
            assert_eq!(refresh_audits(&rows), [(true, None)]);
            assert!(
                rows.iter().all(|r| r.access_type != "read"),
                "no read triggered it"
            );
            assert_eq!(
                rows.iter()
                    .find(|r| r.access_type == "refresh")
                    .unwrap()
                    .accessed_by,
                "token-service:refresher"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = shopify_token(&app, "m-bg").await;
    assert_eq!(
        token["token_data"]["access_token"],
        format!("shpat_{}_2", fake.prefix).as_str()
    );
    assert_eq!(fake.refresh_calls(), 1);
}

async fn forced_refresh_endpoint(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = app_with(backend, &fake, &[]).await;
    // Far from expiry: only a forced refresh touches it.
    store_expiring(&app, SHOP, "m-force", &fake.issue_refresh_token(), 3000).await;
    let force = |merchant: &str, platform: &str, key: &str| {
        app.client
            .post(format!(
                "{}/api/v1/tokens/{merchant}/{platform}/refresh",
                app.address
            ))
            .bearer_auth(key.to_owned())
            .send()
    };
    let response = force("m-force", "shopify", READER_KEY).await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["platform_name"], "shopify");
    assert_eq!(
        body["data"]["token_data"]["access_token"],
        format!("shpat_{}_2", fake.prefix).as_str()
    );
    assert_eq!(fake.refresh_calls(), 1);

    let body = json!({
        "merchant_id": "m-force", "platform_name": "magento", "platform_shop_id": "1",
        "domain": SHOP, "token_data": {"api_key": "k"}, "token_type": "api_key"
    });
    app.store(SHOP, &body).await;
    let response = force("m-force", "magento", READER_KEY).await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        crate::helpers::error_code(response).await,
        "NOT_REFRESHABLE"
    );
    let response = force("m-nobody", "shopify", READER_KEY).await.unwrap();
    assert_eq!(response.status(), 404);
    let response = force("m-force", "shopify", OTHER_SERVICE_KEY)
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = force("m-force", "ebay", READER_KEY).await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(fake.refresh_calls(), 1);
}

async fn only_shop_domains_under_the_suffix_are_called(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = app_with(backend, &fake, &[]).await;
    store_expiring(
        &app,
        "shop.attacker.example",
        "m-evil",
        &fake.issue_refresh_token(),
        60,
    )
    .await;
    let token = shopify_token(&app, "m-evil").await;
    assert_eq!(token["refresh_error"], "REFRESH_DOMAIN_NOT_ALLOWED");
    assert_eq!(fake.refresh_calls(), 0);
    assert!(fake.shops().is_empty());
}

/// Two service instances on one PostgreSQL refresh a token once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_refresh() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.delay = Duration::from_millis(500));
    let first = Arc::new(app_with(Backend::Postgres, &fake, &[]).await);
    let settings = fake.settings();
    let overrides: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let second = Arc::new(spawn_app_on(first.database.shared(), &overrides).await);
    store_expiring(&first, SHOP, "m-two", &fake.issue_refresh_token(), 60).await;

    let mut reads = tokio::task::JoinSet::new();
    for i in 0..40 {
        let app = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        reads.spawn(async move { shopify_token(&app, "m-two").await });
    }
    let expected = format!("shpat_{}_2", fake.prefix);
    while let Some(token) = reads.join_next().await {
        assert_eq!(
            token.unwrap()["token_data"]["access_token"],
            expected.as_str()
        );
    }
    assert_eq!(fake.refresh_calls(), 1, "one refresh across both instances");
    let _: &TestDatabase = &first.database;
}
