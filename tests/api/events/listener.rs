//! The uninstall listener inside the running service.

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use token_service::events::listener::{CONSUMER_NAME, DLQ_SUBJECT, UNINSTALLED_SUBJECT};

use super::support::{drained, nats_available, nats_url, of_merchant, NatsProxy, TestBus};
use crate::helpers::{spawn_app_with, token_body, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(
    an_uninstall_deletes_exactly_the_matching_tokens_and_audits_them,
    a_redelivered_uninstall_changes_nothing_more,
    a_malformed_uninstall_lands_in_the_dlq_once,
);

/// A service listening on this test's stream.
async fn listening_app(backend: Backend, bus: &TestBus) -> TestApp {
    let overrides = bus.overrides(&nats_url());
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(backend, &overrides).await;
    bus.wait_consumer(CONSUMER_NAME).await;
    app
}

/// Stores a token of `merchant` on `platform` for the shop (`shop_id`, `domain`).
async fn install(app: &TestApp, merchant: &str, platform: &str, shop_id: &str, domain: &str) {
    let mut body = token_body(merchant, platform, domain, json!({"access_token": "x"}));
    body["platform_shop_id"] = json!(shop_id);
    assert_eq!(app.store(domain, &body).await.status(), 201);
}

fn uninstalled(shop_id: &str, domain: Option<&str>, correlation_id: &str) -> Vec<u8> {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "evt.webhook.app.uninstalled.v1",
        "correlation_id": correlation_id,
        "source_service": "webhook-service",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": {"platform_name": "shopify", "platform_shop_id": shop_id, "domain": domain},
    })
    .to_string()
    .into_bytes()
}

async fn platforms_of(app: &TestApp, merchant: &str) -> Vec<String> {
    app.read_data(merchant).await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["platform_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn an_uninstall_deletes_exactly_the_matching_tokens_and_audits_them(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let app = listening_app(backend, &bus).await;
    let shop = format!("shop-{}", uuid::Uuid::new_v4().simple());
    let a = "a-shop.myshopify.com";
    let b = "b-shop.myshopify.com";
    install(&app, "m-un-a", "shopify", &shop, a).await;
    install(&app, "m-un-a", "woocommerce", &shop, a).await;
    install(&app, "m-un-b", "shopify", &shop, b).await;
    install(&app, "m-un-c", "shopify", "another-shop", a).await;

    // With a domain: only that shop's token on that platform.
    let seq = bus
        .publish(
            UNINSTALLED_SUBJECT,
            uninstalled(&shop, Some("A-Shop.myshopify.com"), "corr-uninstall-1"),
        )
        .await;
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert_eq!(platforms_of(&app, "m-un-a").await, ["woocommerce"]);
    assert_eq!(platforms_of(&app, "m-un-b").await, ["shopify"]);
    assert_eq!(platforms_of(&app, "m-un-c").await, ["shopify"]);

    let by_event: Vec<_> = app
        .audit_rows("m-un-a")
        .await
        .into_iter()
        .filter(|r| r.accessed_by == "event:app.uninstalled")
        .collect();
    assert_eq!(by_event.len(), 1, "{by_event:?}");
    assert_eq!(by_event[0].access_type, "delete");
    assert!(by_event[0].success);
    assert_eq!(by_event[0].platform_name.as_deref(), Some("shopify"));
    assert_eq!(
        by_event[0].correlation_id.as_deref(),
        Some("corr-uninstall-1")
    );
    assert!(by_event[0].token_id.is_some());

    // Without a domain: every shopify token of the shop id.
    let seq = bus
        .publish(
            UNINSTALLED_SUBJECT,
            uninstalled(&shop, None, "corr-uninstall-2"),
        )
        .await;
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert!(platforms_of(&app, "m-un-b").await.is_empty());
    assert_eq!(platforms_of(&app, "m-un-a").await, ["woocommerce"]);
    assert_eq!(platforms_of(&app, "m-un-c").await, ["shopify"]);

    drained(&app).await;
    let deleted = bus.messages("evt.token.deleted.v1").await;
    assert_eq!(deleted.len(), 2, "one event per deleted token");
    let first = deleted[0].json();
    assert_eq!(first["correlation_id"], "corr-uninstall-1");
    assert_eq!(
        first["data"],
        json!({"platform": {"merchant_id": "m-un-a", "platform_name": "shopify",
                            "platform_shop_id": shop, "domain": a},
               "reason": "app_uninstalled"})
    );
    let second = deleted[1].json();
    assert_eq!(second["data"]["platform"]["merchant_id"], "m-un-b");
    assert_eq!(second["correlation_id"], "corr-uninstall-2");
}

async fn a_redelivered_uninstall_changes_nothing_more(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let app = listening_app(backend, &bus).await;
    let shop = format!("shop-{}", uuid::Uuid::new_v4().simple());
    let domain = "again.myshopify.com";
    install(&app, "m-again", "shopify", &shop, domain).await;
    let event = uninstalled(&shop, Some(domain), "corr-again");

    let seq = bus.publish(UNINSTALLED_SUBJECT, event.clone()).await;
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert!(platforms_of(&app, "m-again").await.is_empty());
    let audit_after_first = app.audit_rows("m-again").await;

    // The same event again: nothing left to delete.
    let seq = bus.publish(UNINSTALLED_SUBJECT, event.clone()).await;
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert_eq!(app.audit_rows("m-again").await, audit_after_first);

    // The shop installs again; the old event arriving once more must not remove the new token.
    install(&app, "m-again", "shopify", &shop, domain).await;
    let seq = bus.publish(UNINSTALLED_SUBJECT, event).await;
    let info = bus.wait_settled(CONSUMER_NAME, seq).await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(platforms_of(&app, "m-again").await, ["shopify"]);
    let deletes_by_event = app
        .audit_rows("m-again")
        .await
        .iter()
        .filter(|r| r.accessed_by == "event:app.uninstalled")
        .count();
    assert_eq!(deletes_by_event, 1);

    drained(&app).await;
    let deleted = bus.messages("evt.token.deleted.v1").await;
    assert_eq!(of_merchant(&deleted, "m-again").len(), 1);
}

async fn a_malformed_uninstall_lands_in_the_dlq_once(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let app = listening_app(backend, &bus).await;
    let not_json = b"{not json".to_vec();
    let bad_platform = json!({"data": {"platform_name": "ebay", "platform_shop_id": "1"}})
        .to_string()
        .into_bytes();
    let first = bus.publish(UNINSTALLED_SUBJECT, not_json.clone()).await;
    let second = bus.publish(UNINSTALLED_SUBJECT, bad_platform.clone()).await;
    let info = bus.wait_settled(CONSUMER_NAME, second).await;
    assert_eq!(info.num_redelivered, 0, "terminated, not retried");
    assert_eq!(info.num_pending, 0);

    let dead = bus.messages(DLQ_SUBJECT).await;
    assert_eq!(dead.len(), 2, "each malformed message once");
    assert_eq!(dead[0].payload, not_json, "the original body");
    assert_eq!(dead[1].payload, bad_platform);
    assert!(dead[0]
        .header("Dlq-Error")
        .unwrap()
        .contains("not a JSON object"));
    assert!(dead[1]
        .header("Dlq-Error")
        .unwrap()
        .contains("platform_name"));
    assert_eq!(
        dead[0].header("Dlq-Original-Sequence"),
        Some(first.to_string())
    );
    assert_eq!(
        dead[1].header("Dlq-Original-Subject"),
        Some(bus.subject(UNINSTALLED_SUBJECT))
    );

    // The listener goes on with the next, valid message.
    let shop = format!("shop-{}", uuid::Uuid::new_v4().simple());
    install(&app, "m-after-dlq", "shopify", &shop, "after.myshopify.com").await;
    let seq = bus
        .publish(UNINSTALLED_SUBJECT, uninstalled(&shop, None, "corr-after"))
        .await;
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert!(platforms_of(&app, "m-after-dlq").await.is_empty());
    assert_eq!(bus.messages(DLQ_SUBJECT).await.len(), 2);
    assert_eq!(
        dead[0].header("Dlq-Source-Service").as_deref(),
        Some("token-service")
    );
}

/// The consumer is bound, NATS goes away and comes back: uninstalls are handled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_resumes_after_nats_comes_back() {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let proxy = NatsProxy::start().await;
    let overrides = bus.overrides(&proxy.url);
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(Backend::Sqlite, &overrides).await;
    bus.wait_consumer(CONSUMER_NAME).await;
    let shop = format!("shop-{}", uuid::Uuid::new_v4().simple());
    install(&app, "m-resume", "shopify", &shop, "resume.myshopify.com").await;

    proxy.cut();
    // Published while the service is cut off; it is delivered once the service is back.
    let seq = bus
        .publish(UNINSTALLED_SUBJECT, uninstalled(&shop, None, "corr-resume"))
        .await;
    proxy.restore();
    bus.wait_settled(CONSUMER_NAME, seq).await;
    assert!(platforms_of(&app, "m-resume").await.is_empty());
}
