//! PostgreSQL going away: clear 503s, probes that tell the truth, recovery without restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::{
    postgres_admin_url, postgres_available, spawn_app, token_body, Backend, READER_KEY,
};

const SHOP: &str = "shop-a.myshopify.com";

async fn admin(sql: &str) {
    let mut conn = PgConnection::connect(&postgres_admin_url()).await.unwrap();
    conn.execute(sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers() {
    if !postgres_available().await {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    let body = token_body("m-outage", "shopify", SHOP, json!({"k": "before"}));
    assert_eq!(app.store(SHOP, &body).await.status(), 201);
    let name = app.database.url.rsplit('/').next().unwrap().to_owned();
    app.db.close().await;

    admin(&format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
    ))
    .await;
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;

    let started = Instant::now();
    let response = app.read(READER_KEY, "m-outage", "").await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within the timeouts"
    );
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "SERVICE_UNAVAILABLE");
    assert_eq!(error["error"]["details"]["retryable"], true);
    let store = app
        .store(
            SHOP,
            &token_body("m-outage", "magento", SHOP, json!({"k": 1})),
        )
        .await;
    assert_eq!(store.status(), 503);

    let ready = app
        .client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = app
        .client
        .get(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    admin(&format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
    ))
    .await;
    let response = app.read(READER_KEY, "m-outage", "").await;
    assert_eq!(response.status(), 200);
    let data: Value = response.json().await.unwrap();
    assert_eq!(
        data["data"]["tokens"][0]["token_data"],
        json!({"k": "before"})
    );
    let ready = app
        .client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}
