//! A shop can only replace or delete its own credentials.

use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, token_body, Backend};
use crate::on_both_backends;

on_both_backends!(
    another_shop_cannot_overwrite,
    another_shop_cannot_delete,
    request_domain_must_match_the_jwt,
);

const A: &str = "shop-a.myshopify.com";
const B: &str = "shop-b.myshopify.com";

async fn another_shop_cannot_overwrite(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(
        app.store(A, &token_body("m-own", "shopify", A, json!({"owner": "a"})))
            .await
            .status(),
        201
    );
    let before = app.raw_row("m-own", "shopify").await.unwrap().0;

    let response = app
        .store(B, &token_body("m-own", "shopify", B, json!({"owner": "b"})))
        .await;
    assert_eq!(response.status(), 403);
    assert_eq!(error_code(response).await, "FORBIDDEN");

    assert_eq!(
        app.raw_row("m-own", "shopify").await.unwrap().0,
        before,
        "row untouched"
    );
    let data = app.read_data("m-own").await;
    assert_eq!(data["tokens"][0]["token_data"], json!({"owner": "a"}));
    assert_eq!(data["tokens"][0]["domain"], A);

    let refused: Vec<_> = app
        .audit_rows("m-own")
        .await
        .into_iter()
        .filter(|r| r.access_type == "write" && !r.success)
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].accessed_by, B);
    assert_eq!(refused[0].error_code.as_deref(), Some("FORBIDDEN"));
}

async fn another_shop_cannot_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(A, &token_body("m-own", "shopify", A, json!({"owner": "a"})))
        .await;

    let foreign = app.delete(B, "m-own", "shopify").await;
    let missing = app.delete(B, "m-nothing", "shopify").await;
    // Both answer the same: no way to learn that A's token exists.
    assert_eq!(foreign.status(), 404);
    assert_eq!(missing.status(), 404);
    let foreign: Value = foreign.json().await.unwrap();
    let missing: Value = missing.json().await.unwrap();
    assert_eq!(foreign["error"], missing["error"]);
    assert_eq!(foreign["error"]["code"], "TOKEN_NOT_FOUND");

    assert_eq!(
        app.read_data("m-own").await["tokens"][0]["token_data"],
        json!({"owner": "a"})
    );
    let refused: Vec<_> = app
        .audit_rows("m-own")
        .await
        .into_iter()
        .filter(|r| r.access_type == "delete")
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(!refused[0].success);
    assert_eq!(refused[0].accessed_by, B);
    assert!(
        refused[0].token_id.is_some(),
        "the audit trail knows which row was targeted"
    );
}

async fn request_domain_must_match_the_jwt(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .store(B, &token_body("m-mismatch", "shopify", A, json!({"x": 1})))
        .await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "DOMAIN_MISMATCH");
    assert!(app.raw_row("m-mismatch", "shopify").await.is_none());
}
