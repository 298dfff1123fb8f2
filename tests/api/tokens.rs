//! Storing, reading and deleting credentials.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, token_body, Backend, READER_KEY};
use crate::on_both_backends;

on_both_backends!(
    round_trip_returns_token_data_exactly,
    storing_again_replaces_the_token_in_place,
    platform_filter_narrows_the_answer,
    is_expired_follows_expires_at,
    unknown_merchant_is_an_empty_answer,
    owner_can_delete_and_then_it_is_gone,
    concurrent_operations_all_commit,
    concurrent_reads_are_each_answered_counted_and_audited,
);

async fn round_trip_returns_token_data_exactly(backend: Backend) {
    let app = spawn_app(backend).await;
    // Key order, number spelling, unicode, escapes and nesting must come back unchanged.
    let token_data = r#"{"z_last":1,"access_token":"shpat_abc","price":1.50,"big":12345678901234567890123,"nested":{"list":[1,2.5,null,true,{"deep":"café ✓ 🚀"}],"esc":"a\"b\\c\nd"},"a_first":"x"}"#;
    let body_text = token_body("m-round", "shopify", "shop-a.myshopify.com", json!({}))
        .to_string()
        .replace(
            r#""token_data":{}"#,
            &format!(r#""token_data":{token_data}"#),
        );
    assert!(body_text.contains(token_data));
    let response = app
        .client
        .post(format!("{}/api/v1/tokens", app.address))
        .bearer_auth(crate::helpers::client_jwt("shop-a.myshopify.com"))
        .header("content-type", "application/json")
        .body(body_text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let stored: Value = response.json().await.unwrap();
    assert_eq!(stored["data"]["status"], "stored");
    let token_id = stored["data"]["token_id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(token_id).is_ok());

    let response = app.read(READER_KEY, "m-round", "").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(&format!(r#""token_data":{token_data}"#)),
        "{text}"
    );
    let data: Value = serde_json::from_str::<Value>(&text).unwrap()["data"].clone();
    let token = &data["tokens"][0];
    assert_eq!(data["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(data["failed"], json!([]));
    assert_eq!(token["platform_name"], "shopify");
    assert_eq!(token["platform_shop_id"], "shop-123");
    assert_eq!(token["domain"], "shop-a.myshopify.com");
    assert_eq!(token["token_type"], "oauth");
    assert_eq!(token["scopes"], "read_products,write_orders");
    assert_eq!(token["expires_at"], Value::Null);
    assert_eq!(token["is_expired"], false);
}

async fn storing_again_replaces_the_token_in_place(backend: Backend) {
    let app = spawn_app(backend).await;
    let shop = "shop-a.myshopify.com";
    let first = app
        .store(
            shop,
            &token_body("m-up", "shopify", shop, json!({"access_token": "old"})),
        )
        .await;
    let first_id = first.json::<Value>().await.unwrap()["data"]["token_id"].clone();
    let mut body = token_body("m-up", "shopify", shop, json!({"access_token": "new"}));
    body["token_type"] = json!("bearer");
    body["platform_shop_id"] = json!("shop-456");
    let second = app.store(shop, &body).await;
    assert_eq!(second.status(), 201);
    assert_eq!(
        second.json::<Value>().await.unwrap()["data"]["token_id"],
        first_id
    );

    let data = app.read_data("m-up").await;
    let tokens = data["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["token_data"], json!({"access_token": "new"}));
    assert_eq!(tokens[0]["token_type"], "bearer");
    assert_eq!(tokens[0]["platform_shop_id"], "shop-456");
}

async fn platform_filter_narrows_the_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let shop = "shop-a.myshopify.com";
    for platform in ["shopify", "woocommerce", "magento"] {
        let body = token_body("m-filter", platform, shop, json!({"platform": platform}));
        assert_eq!(app.store(shop, &body).await.status(), 201);
    }
    let response = app
        .read(READER_KEY, "m-filter", "?platform=woocommerce")
        .await;
    assert_eq!(response.status(), 200);
    let data = response.json::<Value>().await.unwrap()["data"].clone();
    let tokens = data["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["token_data"], json!({"platform": "woocommerce"}));

    let names: Vec<_> = app.read_data("m-filter").await["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["platform_name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["magento", "shopify", "woocommerce"]);

    let response = app.read(READER_KEY, "m-filter", "?platform=ebay").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
    assert_eq!(
        body["error"]["details"]["validation_errors"][0]["field"],
        "platform"
    );
}

async fn is_expired_follows_expires_at(backend: Backend) {
    let app = spawn_app(backend).await;
    let shop = "shop-a.myshopify.com";
    let mut past = token_body("m-exp", "shopify", shop, json!({"t": 1}));
    past["expires_at"] = json!("2020-01-01T00:00:00Z");
    let mut future = token_body("m-exp", "magento", shop, json!({"t": 2}));
    future["expires_at"] = json!("2099-06-30T12:00:00.250+02:00");
    assert_eq!(app.store(shop, &past).await.status(), 201);
    assert_eq!(app.store(shop, &future).await.status(), 201);

    let data = app.read_data("m-exp").await;
    let by_platform = |p: &str| {
        data["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["platform_name"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(by_platform("shopify")["is_expired"], true);
    assert_eq!(by_platform("shopify")["expires_at"], "2020-01-01T00:00:00Z");
    assert_eq!(by_platform("magento")["is_expired"], false);
    assert_eq!(
        by_platform("magento")["expires_at"],
        "2099-06-30T10:00:00.250Z"
    );
}

async fn unknown_merchant_is_an_empty_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let data = app.read_data("nobody-here").await;
    assert_eq!(data, json!({"tokens": [], "failed": []}));
}

async fn owner_can_delete_and_then_it_is_gone(backend: Backend) {
    let app = spawn_app(backend).await;
    let shop = "shop-a.myshopify.com";
    app.store(shop, &token_body("m-del", "shopify", shop, json!({"a": 1})))
        .await;
    app.store(shop, &token_body("m-del", "magento", shop, json!({"b": 2})))
        .await;

    let response = app.delete(shop, "m-del", "shopify").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"],
        json!({"status": "deleted"})
    );
    let data = app.read_data("m-del").await;
    assert_eq!(data["tokens"].as_array().unwrap().len(), 1);
    assert_eq!(data["tokens"][0]["platform_name"], "magento");

    let again = app.delete(shop, "m-del", "shopify").await;
    assert_eq!(again.status(), 404);
    assert_eq!(crate::helpers::error_code(again).await, "TOKEN_NOT_FOUND");
}

/// Many operations at once share commits; every one of them must still land and be audited.
async fn concurrent_operations_all_commit(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    let shop = "shop-a.myshopify.com";
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let app = app.clone();
        tasks.spawn(async move {
            let merchant = format!("m-conc-{}", i % 8);
            let platform = ["shopify", "magento", "custom", "woocommerce"][(i / 8) % 4];
            let body = token_body(&merchant, platform, shop, json!({"i": i}));
            assert_eq!(app.store(shop, &body).await.status(), 201);
            assert_eq!(app.read(READER_KEY, &merchant, "").await.status(), 200);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
    let mut writes = 0;
    for m in 0..8 {
        let merchant = format!("m-conc-{m}");
        let rows = app.audit_rows(&merchant).await;
        writes += rows
            .iter()
            .filter(|r| r.access_type == "write" && r.success)
            .count();
        // Each merchant got 8 stores: two on each of 4 platforms, racing each other.
        assert_eq!(
            app.read_data(&merchant).await["tokens"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
    assert_eq!(writes, 64);
}

/// Reads that share a group commit are answered from one query: each caller must still get
/// its own merchant's rows, and every read must be counted and audited once.
async fn concurrent_reads_are_each_answered_counted_and_audited(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    let shop = "shop-a.myshopify.com";
    for (merchant, platform) in [
        ("m-hot", "shopify"),
        ("m-hot", "magento"),
        ("m-cold", "shopify"),
    ] {
        let data = json!({"owner": format!("{merchant}/{platform}")});
        let body = token_body(merchant, platform, shop, data);
        assert_eq!(app.store(shop, &body).await.status(), 201);
    }
    // (merchant, query, platforms expected back), 16 concurrent readers of each.
    let cases: [(&str, &str, &[&str]); 4] = [
        ("m-hot", "", &["magento", "shopify"]),
        ("m-hot", "?platform=shopify", &["shopify"]),
        ("m-cold", "", &["shopify"]),
        ("m-nobody", "", &[]),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..16 {
        for (merchant, query, expected) in cases {
            let app = app.clone();
            tasks.spawn(async move {
                let response = app.read(READER_KEY, merchant, query).await;
                assert_eq!(response.status(), 200, "round {round}");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["data"]["failed"], json!([]), "{merchant}{query}");
                let owners: Vec<String> = body["data"]["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t["token_data"]["owner"].as_str().unwrap().to_owned())
                    .collect();
                let wanted: Vec<String> =
                    expected.iter().map(|p| format!("{merchant}/{p}")).collect();
                assert_eq!(owners, wanted, "{merchant}{query} got another's rows");
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }

    let count = |merchant: &'static str, platform: &'static str| {
        let app = app.clone();
        async move { app.raw_row(merchant, platform).await.unwrap().1 }
    };
    assert_eq!(count("m-hot", "shopify").await, 32);
    assert_eq!(count("m-hot", "magento").await, 16);
    assert_eq!(count("m-cold", "shopify").await, 16);
    let reads = |rows: Vec<crate::helpers::AuditRow>| {
        rows.into_iter()
            .filter(|r| r.access_type == "read" && r.success)
            .collect::<Vec<_>>()
    };
    assert_eq!(reads(app.audit_rows("m-hot").await).len(), 48);
    assert_eq!(reads(app.audit_rows("m-cold").await).len(), 16);
    let nobody = reads(app.audit_rows("m-nobody").await);
    assert_eq!(nobody.len(), 16);
    assert!(nobody.iter().all(|r| r.token_id.is_none()));
}
