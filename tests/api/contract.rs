//! The document's schemas against what the running service really answers: every documented
//! response (each status of each operation, or the shared response it refers to) is
//! provoked at least once, and its body must validate against the documented schema with
//! no undocumented field.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_shopify::FakeShopify;
use crate::helpers::{
    client_jwt, spawn_app_with, token_body, Backend, TestApp, OTHER_SERVICE_KEY, READER_KEY,
};
use crate::on_both_backends;
use crate::openapi::{assert_valid, documented_response, fetch_document};
use crate::refresh::app_with;

on_both_backends!(every_documented_response_matches_what_the_service_answers);

const SHOP: &str = "contract-shop.myshopify.com";
const OTHER_SHOP: &str = "other-shop.myshopify.com";

struct Contract {
    document: Value,
    exercised: BTreeSet<String>,
}

/// A request to send: method, path template, concrete path, and how to dress it.
struct Call<'a> {
    method: &'a str,
    template: &'a str,
    path: String,
    bearer: Option<String>,
    body: Option<(&'a str, Vec<u8>)>,
}

fn call<'a>(method: &'a str, template: &'a str, path: impl Into<String>) -> Call<'a> {
    Call {
        method,
        template,
        path: path.into(),
        bearer: None,
        body: None,
    }
}

impl<'a> Call<'a> {
    fn bearer(mut self, credential: impl Into<String>) -> Self {
        self.bearer = Some(credential.into());
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = Some(("application/json", body.to_string().into_bytes()));
        self
    }

    fn raw(mut self, content_type: &'a str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }
}

impl Contract {
    /// Sends the call, checks the answer against the document, and returns its status and
    /// JSON body (null when not JSON).
    async fn check(&mut self, app: &TestApp, call: Call<'_>) -> (u16, Value) {
        let mut request = app.client.request(
            call.method.parse().unwrap(),
            format!("{}{}", app.address, call.path),
        );
        if let Some(bearer) = &call.bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some((content_type, body)) = call.body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let what = format!("{} {} → {status}", call.method, call.path);
        let (shared, content) =
            documented_response(&self.document, call.method, call.template, status);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let essence = content_type.split(';').next().unwrap().trim().to_owned();
        assert!(
            content.contains_key(&essence),
            "{what}: {content_type} is not documented ({:?})",
            content.keys().collect::<Vec<_>>()
        );
        let body = if essence == "application/json" {
            let body: Value = response.json().await.unwrap();
            assert_valid(&self.document, &content[&essence]["schema"], &body, &what);
            body
        } else {
            assert!(!response.bytes().await.unwrap().is_empty(), "{what}: empty");
            Value::Null
        };
        self.exercised.insert(
            shared.unwrap_or_else(|| format!("{} {} {status}", call.method, call.template)),
        );
        (status, body)
    }

    /// Every response the document promises, named as [`Contract::check`] records them.
    fn promised(&self) -> BTreeSet<String> {
        let mut promised = BTreeSet::new();
        for (template, item) in self.document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    promised.insert(match response["$ref"].as_str() {
                        Some(r) => r.rsplit('/').next().unwrap().to_owned(),
                        None => format!("{} {template} {status}", method.to_uppercase()),
                    });
                }
            }
        }
        promised
    }
}

const STORE: &str = "/api/v1/tokens";
const READ: &str = "/api/v1/tokens/{merchant_id}";
const DELETE: &str = "/api/v1/tokens/{merchant_id}/{platform}";
const REFRESH: &str = "/api/v1/tokens/{merchant_id}/{platform}/refresh";

fn refreshable(merchant: &str, refresh_token: &str) -> Value {
    let expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
    json!({
        "merchant_id": merchant, "platform_name": "shopify", "platform_shop_id": "1001",
        "domain": SHOP, "token_type": "oauth", "expires_at": expires_at.to_rfc3339(),
        "token_data": {"access_token": "shpat_contract", "refresh_token": refresh_token},
        "scopes": "read_products"
    })
}

async fn every_documented_response_matches_what_the_service_answers(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = app_with(backend, &fake, &[]).await;
    let mut contract = Contract {
        document: fetch_document(&app).await,
        exercised: BTreeSet::new(),
    };
    let c = &mut contract;
    let jwt = client_jwt(SHOP);

    // Operators' and documentation routes.
    for (template, path) in [
        ("/health", "/health"),
        ("/ready", "/ready"),
        ("/metrics", "/metrics"),
        ("/openapi.json", "/openapi.json"),
        ("/docs", "/docs"),
        ("/docs/{asset}", "/docs/swagger-ui-bundle.js"),
        ("/docs/{asset}", "/docs/swagger-ui.css"),
    ] {
        assert_eq!(
            c.check(&app, call("GET", template, path)).await.0,
            200,
            "{path}"
        );
    }
    assert_eq!(
        c.check(&app, call("GET", "/docs/{asset}", "/docs/nope.js"))
            .await
            .0,
        404
    );

    // Store: every way it answers.
    let stored = c
        .check(
            &app,
            call("POST", STORE, STORE)
                .bearer(&jwt)
                .json(&refreshable("m-c1", &fake.issue_refresh_token())),
        )
        .await;
    assert_eq!(stored.0, 201);
    for (merchant, platform) in [("m-c1", "magento"), ("m-c1", "custom")] {
        let body = token_body(merchant, platform, SHOP, json!({"api_key": "k"}));
        assert_eq!(
            c.check(&app, call("POST", STORE, STORE).bearer(&jwt).json(&body))
                .await
                .0,
            201
        );
    }
    let body = token_body("m-c1", "custom", SHOP, json!({}));
    assert_eq!(
        c.check(&app, call("POST", STORE, STORE).json(&body))
            .await
            .1["error"]["code"],
        "UNAUTHORIZED"
    );
    let mismatch = token_body("m-c1", "custom", OTHER_SHOP, json!({}));
    let answer = c
        .check(
            &app,
            call("POST", STORE, STORE).bearer(&jwt).json(&mismatch),
        )
        .await;
    assert_eq!(answer.1["error"]["code"], "DOMAIN_MISMATCH");
    let theirs = token_body("m-c1", "custom", OTHER_SHOP, json!({}));
    let answer = c
        .check(
            &app,
            call("POST", STORE, STORE)
                .bearer(client_jwt(OTHER_SHOP))
                .json(&theirs),
        )
        .await;
    assert_eq!(answer.0, 403);
    let answer = c
        .check(
            &app,
            call("POST", STORE, STORE)
                .bearer(&jwt)
                .raw("text/plain", b"{}".to_vec()),
        )
        .await;
    assert_eq!(answer.0, 415);
    let huge = vec![b' '; 70 * 1024];
    let answer = c
        .check(
            &app,
            call("POST", STORE, STORE)
                .bearer(&jwt)
                .raw("application/json", huge),
        )
        .await;
    assert_eq!(answer.0, 413);
    let invalid = json!({"merchant_id": "", "platform_name": "ebay", "extra": 1});
    let answer = c
        .check(&app, call("POST", STORE, STORE).bearer(&jwt).json(&invalid))
        .await;
    assert_eq!(answer.0, 422);
    assert!(
        answer.1["error"]["details"]["validation_errors"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    );

    // Read, with a token that no longer decrypts listed under `failed`.
    app.set_ciphertext("m-c1", "magento", "v2:key_v1:tampered")
        .await;
    let answer = c
        .check(
            &app,
            call("GET", READ, "/api/v1/tokens/m-c1").bearer(READER_KEY),
        )
        .await;
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1["data"]["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(answer.1["data"]["failed"][0]["code"], "DECRYPTION_FAILED");
    let answer = c
        .check(
            &app,
            call("GET", READ, "/api/v1/tokens/nobody").bearer(READER_KEY),
        )
        .await;
    assert_eq!(answer.1["data"], json!({"tokens": [], "failed": []}));
    assert_eq!(
        c.check(&app, call("GET", READ, "/api/v1/tokens/m-c1"))
            .await
            .0,
        401
    );
    assert_eq!(
        c.check(
            &app,
            call("GET", READ, "/api/v1/tokens/m-c1").bearer(OTHER_SERVICE_KEY)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        c.check(
            &app,
            call("GET", READ, "/api/v1/tokens/m-c1?platform=ebay").bearer(READER_KEY)
        )
        .await
        .0,
        422
    );

    // Refresh: done, impossible, missing, refused by the platform, invalid.
    let path =
        |merchant: &str, platform: &str| format!("/api/v1/tokens/{merchant}/{platform}/refresh");
    let answer = c
        .check(
            &app,
            call("POST", REFRESH, path("m-c1", "shopify")).bearer(READER_KEY),
        )
        .await;
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1["data"]["platform_name"], "shopify");
    assert_eq!(
        c.check(
            &app,
            call("POST", REFRESH, path("m-c1", "custom")).bearer(READER_KEY)
        )
        .await
        .0,
        409
    );
    assert_eq!(
        c.check(
            &app,
            call("POST", REFRESH, path("nobody", "shopify")).bearer(READER_KEY)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        c.check(
            &app,
            call("POST", REFRESH, path("m-c1", "ebay")).bearer(READER_KEY)
        )
        .await
        .0,
        422
    );
    assert_eq!(
        c.check(&app, call("POST", REFRESH, path("m-c1", "shopify")))
            .await
            .0,
        401
    );
    assert_eq!(
        c.check(
            &app,
            call("POST", REFRESH, path("m-c1", "shopify")).bearer(OTHER_SERVICE_KEY)
        )
        .await
        .0,
        403
    );
    fake.behave(|b| b.invalid_grant = true);
    let answer = c
        .check(
            &app,
            call("POST", REFRESH, path("m-c1", "shopify")).bearer(READER_KEY),
        )
        .await;
    assert_eq!(answer.0, 502);
    assert_eq!(answer.1["error"]["details"]["reason"], "REAUTH_REQUIRED");

    // Delete.
    let delete = |merchant: &str, platform: &str| format!("/api/v1/tokens/{merchant}/{platform}");
    assert_eq!(
        c.check(
            &app,
            call("DELETE", DELETE, delete("m-c1", "custom")).bearer(&jwt)
        )
        .await
        .0,
        200
    );
    assert_eq!(
        c.check(
            &app,
            call("DELETE", DELETE, delete("m-c1", "custom")).bearer(&jwt)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        c.check(
            &app,
            call("DELETE", DELETE, delete("m-c1", "ebay")).bearer(&jwt)
        )
        .await
        .0,
        422
    );
    assert_eq!(
        c.check(&app, call("DELETE", DELETE, delete("m-c1", "custom")))
            .await
            .0,
        401
    );

    // An audit row that cannot be written fails the operation closed: 500, opaque.
    app.execute("ALTER TABLE token_access_logs RENAME TO token_access_logs_away")
        .await;
    let body = token_body("m-c2", "custom", SHOP, json!({"k": 1}));
    let answer = c
        .check(&app, call("POST", STORE, STORE).bearer(&jwt).json(&body))
        .await;
    app.execute("ALTER TABLE token_access_logs_away RENAME TO token_access_logs")
        .await;
    assert_eq!(answer.0, 500);

    // A request that outlives the timeout answers 503 in the envelope.
    let fake = FakeShopify::start().await;
    fake.behave(|b| b.delay = Duration::from_secs(10));
    let slow = app_with(backend, &fake, &[("REQUEST_TIMEOUT_SECS", "2")]).await;
    let jwt_slow = client_jwt(SHOP);
    let body = refreshable("m-c3", &fake.issue_refresh_token());
    assert_eq!(
        c.check(
            &slow,
            call("POST", STORE, STORE).bearer(&jwt_slow).json(&body)
        )
        .await
        .0,
        201
    );
    let answer = c
        .check(
            &slow,
            call("POST", REFRESH, path("m-c3", "shopify")).bearer(READER_KEY),
        )
        .await;
    assert_eq!(answer.0, 503);
    assert_eq!(answer.1["error"]["details"]["retryable"], true);

    // Over the per-address limit, every route answers 429 as documented.
    let limited = spawn_app_with(
        backend,
        &[
            ("RATE_LIMIT_IP_PER_SEC", "0.01"),
            ("RATE_LIMIT_IP_BURST", "1"),
        ],
    )
    .await;
    assert_eq!(
        c.check(&limited, call("GET", "/health", "/health")).await.0,
        200
    );
    let operations: Vec<(String, String)> = c.document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(template, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), template.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (method, template) in &operations {
        let concrete = template
            .replace("{merchant_id}", "m-c4")
            .replace("{platform}", "shopify")
            .replace("{asset}", "init.js");
        let answer = c.check(&limited, call(method, template, concrete)).await;
        assert_eq!(answer.0, 429, "{method} {template}");
    }

    let missing: Vec<_> = contract
        .promised()
        .difference(&contract.exercised)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "documented but never seen: {missing:?}");
}
