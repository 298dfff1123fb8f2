//! Secrets stay secret: encrypted at rest, bound to their row, never logged.

use serde_json::{json, Value};

use crate::helpers::{captured_logs, client_jwt, spawn_app, token_body, Backend, READER_KEY};
use crate::on_both_backends;

on_both_backends!(
    canary_never_appears_at_rest_or_in_logs,
    ciphertext_moved_to_another_row_does_not_decrypt,
    tampered_ciphertext_is_reported_as_failed,
);

const SHOP: &str = "shop-a.myshopify.com";

async fn canary_never_appears_at_rest_or_in_logs(backend: Backend) {
    let app = spawn_app(backend).await;
    let canary = format!("canary_{}", uuid::Uuid::new_v4().simple());
    let jwt = client_jwt(SHOP);
    let body = token_body(
        "m-canary",
        "shopify",
        SHOP,
        json!({"access_token": canary, "refresh": format!("{canary}-r")}),
    );
    let response = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(&jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let read = app.read_data("m-canary").await;
    assert_eq!(
        read["tokens"][0]["token_data"]["access_token"],
        canary.as_str()
    );
    // Failed and refused requests carrying the canary must not echo it either.
    let mut bad = body.clone();
    bad["token_type"] = json!(canary);
    let response = app.store(SHOP, &bad).await;
    assert!(!response.text().await.unwrap().contains(&canary));
    let response = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(&jwt)
        .header("content-type", "application/json")
        .body(format!("{{\"token_data\": {{\"x\": \"{canary}\""))
        .send()
        .await
        .unwrap();
    assert!(!response.text().await.unwrap().contains(&canary));

    let stored = app.everything_stored().await;
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        !stored.contains(&canary),
        "the canary is in the database in clear"
    );
    assert!(stored.contains("tse1.key_v1.") || backend == Backend::Sqlite);

    let logs = captured_logs();
    assert!(logs.contains(&request_id), "the requests were logged");
    for secret in [canary.as_str(), jwt.as_str(), READER_KEY] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
    let ciphertext = app.raw_row("m-canary", "shopify").await.unwrap().0;
    assert!(!logs.contains(&ciphertext), "a ciphertext is in the logs");
}

async fn ciphertext_moved_to_another_row_does_not_decrypt(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(
        SHOP,
        &token_body("m-victim", "shopify", SHOP, json!({"owner": "victim"})),
    )
    .await;
    app.store(
        SHOP,
        &token_body("m-attacker", "shopify", SHOP, json!({"owner": "attacker"})),
    )
    .await;
    app.store(
        SHOP,
        &token_body(
            "m-attacker",
            "magento",
            SHOP,
            json!({"owner": "attacker-2"}),
        ),
    )
    .await;
    let victims = app.raw_row("m-victim", "shopify").await.unwrap().0;
    app.set_ciphertext("m-attacker", "shopify", &victims).await;

    let data = app.read_data("m-attacker").await;
    assert_eq!(
        data["failed"],
        json!([{"platform_name": "shopify", "code": "DECRYPTION_FAILED"}])
    );
    let tokens = data["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1, "the healthy row is still returned");
    assert_eq!(tokens[0]["token_data"], json!({"owner": "attacker-2"}));
    assert!(!data.to_string().contains("victim"));

    let failed: Vec<_> = app
        .audit_rows("m-attacker")
        .await
        .into_iter()
        .filter(|r| r.access_type == "read" && !r.success)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error_code.as_deref(), Some("DECRYPTION_FAILED"));
}

async fn tampered_ciphertext_is_reported_as_failed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(
        SHOP,
        &token_body("m-flip", "shopify", SHOP, json!({"k": "v"})),
    )
    .await;
    let original = app.raw_row("m-flip", "shopify").await.unwrap().0;
    let mut bytes = original.into_bytes();
    let last = bytes.len() - 3;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    app.set_ciphertext("m-flip", "shopify", &tampered).await;

    let response = app.read(READER_KEY, "m-flip", "").await;
    assert_eq!(response.status(), 200);
    let data = response.json::<Value>().await.unwrap()["data"].clone();
    assert_eq!(data["tokens"], json!([]));
    assert_eq!(data["failed"][0]["code"], "DECRYPTION_FAILED");
}
