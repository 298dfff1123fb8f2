//! The relay inside the running service: outages, replicas, the stream it relies on.

use std::time::Duration;

use async_nats::jetstream::stream;
use serde_json::json;
use token_service::events::{ensure_stream, Relay, RelayStep};
use token_service::store;

use super::support::{
    drained, eventually, nats_available, nats_url, of_merchant, NatsProxy, TestBus,
};
use crate::helpers::{
    captured_logs, client_jwt, postgres_available, spawn_app_with, start_service, token_body,
    Backend,
};
use crate::on_both_backends;

const SHOP: &str = "relay-shop.myshopify.com";

on_both_backends!(events_written_while_nats_is_down_arrive_in_order_once_it_is_back);

async fn events_written_while_nats_is_down_arrive_in_order_once_it_is_back(backend: Backend) {
    if !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    let proxy = NatsProxy::start().await;
    proxy.cut();
    let overrides = bus.overrides(&proxy.url);
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The service starts and serves without the bus.
    let app = spawn_app_with(backend, &overrides).await;
    let ready = app
        .client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "/ready does not depend on NATS");

    let merchants: Vec<String> = (1..=5).map(|i| format!("m-down-{i}")).collect();
    for merchant in &merchants {
        let body = token_body(merchant, "shopify", SHOP, json!({"k": merchant}));
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
    }
    assert_eq!(app.delete(SHOP, "m-down-2", "shopify").await.status(), 200);
    let pending = super::support::outbox(&app.db).await;
    assert_eq!(pending.len(), 6);
    assert!(pending.iter().all(|r| !r.published), "NATS is away");
    // The failing relay and the backlog show in the logs.
    let logged = |needle: &'static str| {
        let stream = bus.stream.clone();
        move || {
            let stream = stream.clone();
            async move {
                captured_logs()
                    .lines()
                    .any(|l| l.contains(&stream) && l.contains(needle))
                    .then_some(())
            }
        }
    };
    eventually(
        "a relay failure log",
        Duration::from_secs(20),
        logged("event relay step failed"),
    )
    .await;
    eventually(
        "a backlog log",
        Duration::from_secs(40),
        logged(r#""pending":6"#),
    )
    .await;

    proxy.restore();
    let rows = drained(&app).await;
    let mut published = bus.messages("evt.token.stored.v1").await;
    published.extend(bus.messages("evt.token.deleted.v1").await);
    published.sort_by_key(|m| m.sequence);
    let ids: Vec<String> = published.iter().filter_map(|m| m.msg_id.clone()).collect();
    let expected: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    assert_eq!(ids, expected, "each event once, in outbox order");
    let order: Vec<(String, String)> = published
        .iter()
        .map(|m| {
            let e = m.json();
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["data"]["platform"]["merchant_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = merchants
        .iter()
        .map(|m| ("evt.token.stored.v1".to_owned(), m.clone()))
        .collect();
    want.push(("evt.token.deleted.v1".into(), "m-down-2".into()));
    assert_eq!(order, want);
}

/// Replicas share one PostgreSQL and publish concurrently. The stream is created with a
/// de-duplication window of 100 ms (the server's minimum), too short to hide a second
/// publication by another relay, so the count checks the relays themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_publish_every_event_once() {
    if !postgres_available().await || !nats_available().await {
        return;
    }
    let bus = TestBus::new().await;
    bus.create_stream(stream::Config {
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let overrides = bus.overrides(&nats_url());
    let overrides: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(Backend::Postgres, &overrides).await;
    let replica = start_service(&app.database.url, &overrides).await;

    let writes = (0..24).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            replica.clone()
        };
        let client = app.client.clone();
        async move {
            let merchant = format!("m-rep-{i}");
            let body = token_body(&merchant, "shopify", SHOP, json!({"k": i}));
            let stored = client
                .post(format!("{base}/api/v1/tokens"))
                .bearer_auth(client_jwt(SHOP))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(stored.status(), 201);
            let deleted = client
                .delete(format!("{base}/api/v1/tokens/{merchant}/shopify"))
                .bearer_auth(client_jwt(SHOP))
                .send()
                .await
                .unwrap();
            assert_eq!(deleted.status(), 200);
        }
    });
    futures_util::future::join_all(writes).await;

    let rows = drained(&app).await;
    assert_eq!(rows.len(), 48);
    let mut published = bus.messages("evt.token.stored.v1").await;
    published.extend(bus.messages("evt.token.deleted.v1").await);
    assert_eq!(published.len(), 48, "every event exactly once");
    let mut ids: Vec<String> = published.iter().filter_map(|m| m.msg_id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    published.sort_by_key(|m| m.sequence);
    for i in 0..24 {
        let types: Vec<String> = of_merchant(&published, &format!("m-rep-{i}"))
            .iter()
            .map(|m| m.json()["event_type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            types,
            ["evt.token.stored.v1", "evt.token.deleted.v1"],
            "a token's events keep their order"
        );
    }
}

/// While one relay holds the claim on PostgreSQL, another waits instead of publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_waits_while_another_holds_the_claim() {
    if !postgres_available().await || !nats_available().await {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, &[]).await;
    let bus = TestBus::new().await;
    ensure_stream(&bus.js, &bus.settings()).await.unwrap();
    let body = token_body("m-claim", "shopify", SHOP, json!({"k": 1}));
    assert_eq!(app.store(SHOP, &body).await.status(), 201);

    let relay = Relay::new(app.db.clone(), bus.client.clone(), bus.settings());
    let claim = store::claim_pending(&app.db, 10).await.unwrap().unwrap();
    assert_eq!(claim.events().len(), 1);
    assert_eq!(relay.relay_once().await.unwrap(), RelayStep::Busy);
    claim
        .finish(&app.db, &[], chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(relay.relay_once().await.unwrap(), RelayStep::Published(1));
    assert_eq!(bus.messages("evt.token.stored.v1").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_created_when_missing_and_never_reconfigured() {
    if !nats_available().await {
        return;
    }
    let missing = TestBus::new().await;
    ensure_stream(&missing.js, &missing.settings())
        .await
        .unwrap();
    let created = missing.stream_config().await;
    let p = &missing.prefix;
    assert_eq!(
        created.subjects,
        [
            format!("{p}.evt.>"),
            format!("{p}.cmd.>"),
            format!("{p}.dlq.>")
        ]
    );
    assert_eq!(created.duplicate_window, Duration::from_secs(120));

    let existing = TestBus::new().await;
    existing
        .create_stream(stream::Config {
            description: Some("owned by the platform team".into()),
            max_age: Duration::from_secs(3600),
            max_messages: 1000,
            ..Default::default()
        })
        .await;
    let before = existing.stream_config().await;
    ensure_stream(&existing.js, &existing.settings())
        .await
        .unwrap();
    let after = existing.stream_config().await;
    assert_eq!(after.subjects, before.subjects);
    assert_eq!(after.max_age, Duration::from_secs(3600));
    assert_eq!(after.max_messages, 1000);
    assert_eq!(
        after.description.as_deref(),
        Some("owned by the platform team")
    );
}

/// Two replicas' relays drain one backlog at the same time. Their own counts must add up to
/// the backlog (no event published by both, whatever JetStream would de-duplicate), and the
/// stream must hold the events in outbox order (one relay publishes at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_relays_publish_each_event_once_and_in_order() {
    if !postgres_available().await || !nats_available().await {
        return;
    }
    let app = spawn_app_with(Backend::Postgres, &[]).await;
    let bus = TestBus::new().await;
    ensure_stream(&bus.js, &bus.settings()).await.unwrap();
    let mut tx = app.db.begin().await.unwrap();
    for i in 0..250 {
        let event = token_service::events::token_deleted(
            token_service::events::PlatformRef {
                merchant_id: &format!("m-backlog-{i}"),
                platform_name: "shopify",
                platform_shop_id: "1",
                domain: SHOP,
            },
            token_service::events::DeletionReason::DeletedByOwner,
            "corr-backlog",
            chrono::Utc::now(),
        );
        store::insert_event(&mut tx, &event.as_new_event())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let drain = |relay: Relay| async move {
        let mut published = 0;
        loop {
            match relay.relay_once().await.unwrap() {
                RelayStep::Published(n) => published += n,
                RelayStep::Busy => tokio::time::sleep(Duration::from_millis(1)).await,
                RelayStep::Idle => return published,
            }
        }
    };
    let replica = |_| async {
        let db = store::Db::connect(
            &app.database.url,
            store::PoolSettings { max_connections: 2 },
        )
        .await
        .unwrap();
        Relay::new(db, bus.client.clone(), bus.settings())
    };
    let (a, b) = (replica(0).await, replica(1).await);
    let (from_a, from_b) = tokio::join!(drain(a), drain(b));
    assert_eq!(from_a + from_b, 250, "{from_a} + {from_b}");

    let rows = super::support::outbox(&app.db).await;
    assert!(rows.iter().all(|r| r.published));
    let ids: Vec<String> = bus
        .messages("evt.token.deleted.v1")
        .await
        .iter()
        .filter_map(|m| m.msg_id.clone())
        .collect();
    let expected: Vec<String> = rows.iter().map(|r| r.event_id.to_string()).collect();
    assert_eq!(ids, expected);
}
