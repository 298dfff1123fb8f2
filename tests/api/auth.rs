//! Client JWTs and internal service keys.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::helpers::{
    client_jwt, error_code, now, sign, spawn_app, spawn_app_with, token_body, Backend,
    CLIENT_SECRET, OTHER_SERVICE_KEY, READER_KEY,
};
use crate::on_both_backends;

on_both_backends!(
    client_jwt_cases,
    optional_exp_audience_and_issuer,
    internal_key_cases,
    service_not_on_the_allow_list_is_refused_and_audited,
);

const SHOP: &str = "shop-a.myshopify.com";

async fn post_with(
    app: &crate::helpers::TestApp,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .json(&token_body("m-auth", "shopify", SHOP, json!({"k": "v"})));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

fn hs(claims: Value, alg: Algorithm) -> String {
    sign(claims, alg, CLIENT_SECRET)
}

/// An unsigned token (`alg: none`), which must never be accepted.
fn unsigned(claims: Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.")
}

async fn client_jwt_cases(backend: Backend) {
    let app = spawn_app(backend).await;
    let good = json!({"sub": SHOP, "exp": now() + 600});
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("wrong scheme", Some(format!("Basic {}", client_jwt(SHOP)))),
        ("no credential", Some("Bearer ".into())),
        ("garbage", Some("Bearer not.a.jwt".into())),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                sign(
                    good.clone(),
                    Algorithm::HS256,
                    "another-secret-0123456789abcdefghijk"
                )
            )),
        ),
        (
            "alg none",
            Some(format!("Bearer {}", unsigned(good.clone()))),
        ),
        (
            "HS384",
            Some(format!("Bearer {}", hs(good.clone(), Algorithm::HS384))),
        ),
        (
            "HS512",
            Some(format!("Bearer {}", hs(good.clone(), Algorithm::HS512))),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs(json!({"sub": SHOP, "exp": now() - 600}), Algorithm::HS256)
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                hs(
                    json!({"sub": SHOP, "exp": now() + 600, "nbf": now() + 300}),
                    Algorithm::HS256
                )
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                hs(json!({"sub": SHOP}), Algorithm::HS256)
            )),
        ),
        (
            "no sub",
            Some(format!(
                "Bearer {}",
                hs(json!({"exp": now() + 600}), Algorithm::HS256)
            )),
        ),
        ("internal key", Some(format!("Bearer {READER_KEY}"))),
    ];
    for (case, header) in refused {
        let response = post_with(&app, header.as_deref()).await;
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(error_code(response).await, "UNAUTHORIZED", "{case}");
    }
    assert!(app.raw_row("m-auth", "shopify").await.is_none());

    // The subject is compared case-insensitively after trimming.
    let loose = hs(
        json!({"sub": "  Shop-A.MyShopify.com ", "exp": now() + 600}),
        Algorithm::HS256,
    );
    let response = post_with(&app, Some(&format!("bearer {loose}"))).await;
    assert_eq!(response.status(), 201);
}

async fn optional_exp_audience_and_issuer(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("CLIENT_JWT_REQUIRE_EXP", "false"),
            ("CLIENT_JWT_AUDIENCE", "token-service"),
            ("CLIENT_JWT_ISSUER", "glam-bff"),
        ],
    )
    .await;
    let ok = hs(
        json!({"sub": SHOP, "aud": "token-service", "iss": "glam-bff"}),
        Algorithm::HS256,
    );
    assert_eq!(
        post_with(&app, Some(&format!("Bearer {ok}")))
            .await
            .status(),
        201
    );
    for claims in [
        json!({"sub": SHOP, "aud": "other", "iss": "glam-bff"}),
        json!({"sub": SHOP, "aud": "token-service", "iss": "someone"}),
        json!({"sub": SHOP, "iss": "glam-bff"}),
        json!({"sub": SHOP, "aud": "token-service"}),
        json!({"sub": SHOP, "aud": "token-service", "iss": "glam-bff", "exp": now() - 600}),
    ] {
        let token = hs(claims.clone(), Algorithm::HS256);
        assert_eq!(
            post_with(&app, Some(&format!("Bearer {token}")))
                .await
                .status(),
            401,
            "{claims}"
        );
    }
}

async fn internal_key_cases(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(SHOP, &token_body("m-key", "shopify", SHOP, json!({"k": 1})))
        .await;
    let prefix = &READER_KEY[..READER_KEY.len() - 1];
    let longer = format!("{READER_KEY}0");
    for key in [
        "wrong-key",
        prefix,
        longer.as_str(),
        "",
        "platform-connector",
    ] {
        let response = app
            .client
            .get(format!("{}/api/v1/tokens/m-key", app.address))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
        assert_eq!(error_code(response).await, "UNAUTHORIZED");
    }
    // A client JWT is not an internal credential.
    let response = app.read(&client_jwt(SHOP), "m-key", "").await;
    assert_eq!(response.status(), 401);

    let response = app.read(READER_KEY, "m-key", "").await;
    assert_eq!(response.status(), 200);
}

async fn service_not_on_the_allow_list_is_refused_and_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(
        SHOP,
        &token_body("m-deny", "shopify", SHOP, json!({"secret": "s3cr3t"})),
    )
    .await;
    let response = app.read(OTHER_SERVICE_KEY, "m-deny", "").await;
    assert_eq!(response.status(), 403);
    let text = response.text().await.unwrap();
    assert!(text.contains("SERVICE_NOT_ALLOWED"));
    assert!(!text.contains("s3cr3t"));

    let denied: Vec<_> = app
        .audit_rows("m-deny")
        .await
        .into_iter()
        .filter(|r| r.access_type == "denied")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].accessed_by, "billing-service");
    assert!(!denied[0].success);
    assert_eq!(denied[0].error_code.as_deref(), Some("SERVICE_NOT_ALLOWED"));
    // The refused read did not count as an access.
    assert_eq!(app.raw_row("m-deny", "shopify").await.unwrap().1, 0);
}
