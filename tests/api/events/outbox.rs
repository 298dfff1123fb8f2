//! The outbox and the relay driven step by step: the service runs without `NATS_URL`, so its
//! events stay in the outbox until the test relays them.

use std::time::Duration;

use serde_json::json;
use token_service::events::{Relay, RelayStep};
use token_service::store;

use super::support::{nats_available, outbox, TestBus};
use crate::helpers::{spawn_app, token_body, Backend};
use crate::on_both_backends;

const SHOP: &str = "outbox-shop.myshopify.com";
const SECRET: &str = "shpat_outbox_secret_value_0123456789";

on_both_backends!(
    store_and_delete_each_produce_exactly_one_correct_event,
    refused_and_missing_writes_produce_no_event,
    published_events_are_pruned_after_the_retention,
);

async fn store_and_delete_each_produce_exactly_one_correct_event(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let app = spawn_app(backend).await;
    let bus = TestBus::new().await;
    let mut body = token_body("m-evt", "shopify", SHOP, json!({"access_token": SECRET}));
    body["expires_at"] = json!("2027-01-01T00:00:00Z");
    let store = |correlation: &'static str| {
        app.client
            .post(format!("{}/api/v1/tokens", app.address))
            .bearer_auth(crate::helpers::client_jwt(SHOP))
            .header("X-Correlation-ID", correlation)
            .json(&body)
            .send()
    };
    assert_eq!(store("corr-store-1").await.unwrap().status(), 201);
    assert_eq!(store("corr-store-2").await.unwrap().status(), 201);
    let delete = app
        .client
        .delete(format!("{}/api/v1/tokens/m-evt/shopify", app.address))
        .bearer_auth(crate::helpers::client_jwt(SHOP))
        .header("X-Correlation-ID", "corr-delete")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);

    // Without NATS_URL the events wait in the outbox.
    let rows = outbox(&app.db).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| !r.published));

    token_service::events::ensure_stream(&bus.js, &bus.settings())
        .await
        .unwrap();
    let relay = Relay::new(app.db.clone(), bus.client.clone(), bus.settings());
    assert_eq!(relay.relay_once().await.unwrap(), RelayStep::Published(3));
    assert_eq!(relay.relay_once().await.unwrap(), RelayStep::Idle);
    assert!(outbox(&app.db).await.iter().all(|r| r.published));

    let stored = bus.messages("evt.token.stored.v1").await;
    let deleted = bus.messages("evt.token.deleted.v1").await;
    assert_eq!(
        (stored.len(), deleted.len()),
        (2, 1),
        "one message per change"
    );
    for (message, row) in stored.iter().chain(&deleted).zip(&rows) {
        assert_eq!(message.msg_id, Some(row.event_id.to_string()));
        assert_eq!(message.json(), row.payload, "published byte for byte");
        assert!(!String::from_utf8_lossy(&message.payload).contains(SECRET));
    }
    let platform = json!({"merchant_id": "m-evt", "platform_name": "shopify",
        "platform_shop_id": "shop-123", "domain": SHOP});
    let first = stored[0].json();
    assert_eq!(first["event_id"], rows[0].event_id.to_string());
    assert_eq!(first["event_type"], "evt.token.stored.v1");
    assert_eq!(first["correlation_id"], "corr-store-1");
    assert_eq!(first["source_service"], "token-service");
    assert!(first["timestamp"]
        .as_str()
        .unwrap()
        .parse::<chrono::DateTime<chrono::Utc>>()
        .is_ok());
    assert_eq!(
        first["data"],
        json!({"platform": platform, "token_type": "oauth", "expires_at": "2027-01-01T00:00:00Z",
               "scopes": "read_products,write_orders", "created": true})
    );
    assert_eq!(stored[1].json()["data"]["created"], false);
    assert_eq!(stored[1].json()["correlation_id"], "corr-store-2");
    let gone = deleted[0].json();
    assert_eq!(gone["event_type"], "evt.token.deleted.v1");
    assert_eq!(gone["correlation_id"], "corr-delete");
    assert_eq!(
        gone["data"],
        json!({"platform": platform, "reason": "deleted_by_owner"})
    );
    assert!(
        stored[1].sequence < deleted[0].sequence,
        "published in commit order"
    );
}

async fn refused_and_missing_writes_produce_no_event(backend: Backend) {
    let app = spawn_app(backend).await;
    let mine = token_body("m-quiet", "shopify", SHOP, json!({"k": 1}));
    assert_eq!(app.store(SHOP, &mine).await.status(), 201);
    let hijack = token_body("m-quiet", "shopify", "other.myshopify.com", json!({"k": 2}));
    assert_eq!(
        app.store("other.myshopify.com", &hijack).await.status(),
        403
    );
    assert_eq!(
        app.delete("other.myshopify.com", "m-quiet", "shopify")
            .await
            .status(),
        404
    );
    assert_eq!(app.delete(SHOP, "m-quiet", "magento").await.status(), 404);
    let reader = app.read_data("m-quiet").await;
    assert_eq!(reader["tokens"].as_array().unwrap().len(), 1);

    let rows = outbox(&app.db).await;
    assert_eq!(rows.len(), 1, "only the successful store: {rows:?}");
    assert_eq!(rows[0].subject, "evt.token.stored.v1");
}

async fn published_events_are_pruned_after_the_retention(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let app = spawn_app(backend).await;
    let bus = TestBus::new().await;
    for merchant in ["m-prune-1", "m-prune-2"] {
        let body = token_body(merchant, "shopify", SHOP, json!({"k": 1}));
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
    }
    token_service::events::ensure_stream(&bus.js, &bus.settings())
        .await
        .unwrap();
    let keep_an_hour = {
        let mut settings = bus.settings();
        settings.outbox_retention = Duration::from_secs(3600);
        Relay::new(app.db.clone(), bus.client.clone(), settings)
    };
    assert_eq!(
        keep_an_hour.relay_once().await.unwrap(),
        RelayStep::Published(2)
    );
    let body = token_body("m-prune-3", "shopify", SHOP, json!({"k": 1}));
    assert_eq!(app.store(SHOP, &body).await.status(), 201);

    assert_eq!(keep_an_hour.prune_once().await.unwrap(), 0, "too young");
    let keep_nothing = {
        let mut settings = bus.settings();
        settings.outbox_retention = Duration::ZERO;
        Relay::new(app.db.clone(), bus.client.clone(), settings)
    };
    assert_eq!(keep_nothing.prune_once().await.unwrap(), 2);
    let left = outbox(&app.db).await;
    assert_eq!(left.len(), 1, "the pending event is never pruned");
    assert!(!left[0].published);
    assert_eq!(
        left[0].payload["data"]["platform"]["merchant_id"],
        "m-prune-3"
    );

    let backlog = keep_nothing.backlog().await.unwrap();
    assert_eq!(backlog.pending, 1);
    let mut tx = app.db.begin().await.unwrap();
    assert_eq!(store::backlog(&mut tx).await.unwrap(), backlog);
    tx.rollback().await.unwrap();
}
