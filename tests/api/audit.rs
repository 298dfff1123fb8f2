//! Every access leaves an audit row, committed with the operation or not at all.

use serde_json::{json, Value};

use crate::helpers::{client_jwt, spawn_app, token_body, Backend, OTHER_SERVICE_KEY, READER_KEY};
use crate::on_both_backends;

on_both_backends!(
    every_operation_is_audited,
    audit_failure_fails_the_operation_closed
);

const SHOP: &str = "shop-a.myshopify.com";

async fn every_operation_is_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(client_jwt(SHOP))
        .header("x-correlation-id", "corr-write-1")
        .json(&token_body("m-audit", "shopify", SHOP, json!({"k": "v"})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-correlation-id"], "corr-write-1");
    let token_id = response.json::<Value>().await.unwrap()["data"]["token_id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();

    let response = app
        .client
        .get(format!("{}/api/v1/tokens/m-audit", app.address))
        .bearer_auth(READER_KEY)
        .header("x-correlation-id", "corr-read-1")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["meta"]["correlation_id"], "corr-read-1");
    app.read(READER_KEY, "m-audit", "").await;
    app.read(OTHER_SERVICE_KEY, "m-audit", "").await;
    app.delete(SHOP, "m-audit", "shopify").await;

    let rows = app.audit_rows("m-audit").await;
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.access_type.as_str(),
                r.accessed_by.as_str(),
                r.success,
                r.error_code.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("write", SHOP, true, None),
            ("read", "platform-connector", true, None),
            ("read", "platform-connector", true, None),
            (
                "denied",
                "billing-service",
                false,
                Some("SERVICE_NOT_ALLOWED")
            ),
            ("delete", SHOP, true, None),
        ]
    );
    assert_eq!(rows[0].token_id, Some(token_id));
    assert_eq!(rows[0].correlation_id.as_deref(), Some("corr-write-1"));
    assert_eq!(rows[1].correlation_id.as_deref(), Some("corr-read-1"));
    assert!(rows[2]
        .correlation_id
        .as_deref()
        .unwrap()
        .starts_with("corr_"));
    assert_eq!(rows[4].token_id, Some(token_id));
    assert!(rows
        .iter()
        .all(|r| r.platform_name.as_deref() == Some("shopify") || r.access_type == "denied"));
}

/// With the audit table refusing inserts, nothing may change and no secret may leave.
async fn audit_failure_fails_the_operation_closed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.store(
        SHOP,
        &token_body(
            "m-closed",
            "shopify",
            SHOP,
            json!({"access_token": "shpat_before"}),
        ),
    )
    .await;
    let before = app.raw_row("m-closed", "shopify").await.unwrap();

    match backend {
        Backend::Sqlite => {
            app.execute(
                "CREATE TRIGGER audit_down BEFORE INSERT ON token_access_logs \
                 BEGIN SELECT RAISE(ABORT, 'audit store down'); END",
            )
            .await
        }
        Backend::Postgres => {
            app.execute(
                "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit store down'; END $$",
            )
            .await;
            app.execute(
                "CREATE TRIGGER audit_down BEFORE INSERT ON token_access_logs \
                 FOR EACH ROW EXECUTE FUNCTION audit_down()",
            )
            .await
        }
    }

    let read = app.read(READER_KEY, "m-closed", "").await;
    assert_eq!(read.status(), 500);
    let text = read.text().await.unwrap();
    assert!(!text.contains("shpat_before"), "{text}");
    assert!(
        !text.contains("audit store down"),
        "no driver message leaks: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    let error_id = body["error"]["details"]["error_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        crate::helpers::captured_logs().contains(&error_id),
        "error_id is logged"
    );

    let store = app
        .store(
            SHOP,
            &token_body(
                "m-closed",
                "shopify",
                SHOP,
                json!({"access_token": "shpat_after"}),
            ),
        )
        .await;
    assert_eq!(store.status(), 500);
    let new = app
        .store(
            SHOP,
            &token_body("m-closed", "magento", SHOP, json!({"k": 1})),
        )
        .await;
    assert_eq!(new.status(), 500);
    let delete = app.delete(SHOP, "m-closed", "shopify").await;
    assert_eq!(delete.status(), 500);

    assert_eq!(
        app.raw_row("m-closed", "shopify").await.unwrap(),
        before,
        "counters and ciphertext unchanged"
    );
    assert!(app.raw_row("m-closed", "magento").await.is_none());

    let drop_trigger = match backend {
        Backend::Sqlite => "DROP TRIGGER audit_down",
        Backend::Postgres => "DROP TRIGGER audit_down ON token_access_logs",
    };
    app.execute(drop_trigger).await;
    let data = app.read_data("m-closed").await;
    assert_eq!(
        data["tokens"][0]["token_data"],
        json!({"access_token": "shpat_before"})
    );
}
