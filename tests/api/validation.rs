//! Every input rule answers 422 with the offending field, or its own status for size and type.

use serde_json::{json, Value};

use crate::helpers::{client_jwt, spawn_app, token_body, Backend, READER_KEY};
use crate::on_both_backends;

on_both_backends!(
    each_field_rule_is_enforced,
    body_limits_and_media_type,
    path_values_are_validated
);

const SHOP: &str = "shop-a.myshopify.com";

async fn each_field_rule_is_enforced(backend: Backend) {
    let app = spawn_app(backend).await;
    let valid = token_body("m-val", "shopify", SHOP, json!({"k": "v"}));
    let deep = (0..16).fold(json!({}), |inner, _| json!({ "a": inner }));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("merchant_id", json!(""), "string_length"),
        ("merchant_id", json!("a".repeat(129)), "string_length"),
        ("merchant_id", json!("has space"), "string_pattern_mismatch"),
        ("merchant_id", json!(42), "string_type"),
        ("platform_name", json!("ebay"), "enum"),
        ("platform_shop_id", json!(""), "string_length"),
        ("platform_shop_id", json!("x".repeat(256)), "string_length"),
        ("domain", json!("not a host!"), "host_name"),
        ("domain", json!(""), "string_length"),
        ("token_data", json!("a string"), "dict_type"),
        ("token_data", json!([1, 2]), "dict_type"),
        (
            "token_data",
            json!({"big": "x".repeat(16 * 1024)}),
            "too_long",
        ),
        ("token_data", deep, "too_deep"),
        ("token_type", json!("password"), "enum"),
        ("expires_at", json!("tomorrow"), "datetime_parsing"),
        ("scopes", json!("s".repeat(4097)), "string_length"),
        ("unexpected", json!(1), "extra_forbidden"),
    ];
    for (field, value, kind) in cases {
        let mut body = valid.clone();
        body[field] = value;
        let response = app.store(SHOP, &body).await;
        assert_eq!(response.status(), 422, "{field} {kind}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        let errors = body["error"]["details"]["validation_errors"]
            .as_array()
            .unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["type"] == kind && e["message"].is_string()),
            "{field} {kind}: {errors:?}"
        );
    }
    for field in [
        "merchant_id",
        "platform_name",
        "platform_shop_id",
        "domain",
        "token_data",
        "token_type",
    ] {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(field);
        let response = app.store(SHOP, &body).await;
        assert_eq!(response.status(), 422, "missing {field}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["details"]["validation_errors"][0]["type"],
            "missing"
        );
    }
    assert!(
        app.raw_row("m-val", "shopify").await.is_none(),
        "nothing invalid was stored"
    );
}

async fn body_limits_and_media_type(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/api/v1/tokens", app.address);
    let send = |body: String, content_type: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(client_jwt(SHOP))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let huge = json!({"merchant_id": "m", "token_data": {"x": "y".repeat(70 * 1024)}}).to_string();
    let response = send(huge, "application/json").await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        crate::helpers::error_code(response).await,
        "PAYLOAD_TOO_LARGE"
    );

    let valid = token_body("m-media", "shopify", SHOP, json!({"k": 1})).to_string();
    let response = send(valid.clone(), "text/plain").await.unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        crate::helpers::error_code(response).await,
        "UNSUPPORTED_MEDIA_TYPE"
    );
    let response = send(valid, "application/json; charset=utf-8")
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    for bad in [
        "{\"merchant_id\": ",
        "[1,2]",
        "\u{0}",
        r#"{"merchant_id":"a","merchant_id":"b"}"#,
    ] {
        let response = send(bad.to_owned(), "application/json").await.unwrap();
        assert_eq!(response.status(), 422, "{bad:?}");
    }
    let invalid_utf8 = reqwest::Body::from(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']);
    let response = app
        .client
        .post(&url)
        .bearer_auth(client_jwt(SHOP))
        .header("content-type", "application/json")
        .body(invalid_utf8)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

async fn path_values_are_validated(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.read(READER_KEY, "bad%20merchant", "").await;
    assert_eq!(response.status(), 422);
    let response = app.delete(SHOP, "m-1", "ebay").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["validation_errors"][0]["field"],
        "platform"
    );
    let response = app.delete(SHOP, &"m".repeat(129), "shopify").await;
    assert_eq!(response.status(), 422);
}
