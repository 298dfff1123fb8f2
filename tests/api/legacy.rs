//! Rows written by the original service are read like any other, with the keyring secret
//! their `encryption_key_id` names, and only with it.

use serde_json::json;

use crate::helpers::Backend;
use crate::keys::{
    insert_legacy_row, keyring_env, legacy_secret, legacy_vectors, read_token, spawn_with_keys,
    K2_SECRET,
};
use crate::on_both_backends;

on_both_backends!(
    legacy_rows_read_with_the_secret_their_key_id_names,
    legacy_rows_fail_with_any_other_secret,
);

const SHOP: &str = "legacy-shop.myshopify.com";

async fn legacy_rows_read_with_the_secret_their_key_id_names(backend: Backend) {
    // After a rotation: the legacy secret is an old key under the id the rows carry.
    let secret = legacy_secret();
    let app = spawn_with_keys(
        backend,
        &keyring_env(("key_v2", K2_SECRET), &[("key_v1", &secret)]),
    )
    .await;
    let vectors = legacy_vectors();
    for (i, vector) in vectors.iter().enumerate() {
        let merchant = format!("m-legacy-{i}");
        insert_legacy_row(
            &app,
            &merchant,
            "shopify",
            SHOP,
            &vector.encrypted_token,
            "key_v1",
        )
        .await;
    }
    for (i, vector) in vectors.iter().enumerate() {
        let merchant = format!("m-legacy-{i}");
        let token = read_token(&app, &merchant)
            .await
            .expect("the row is returned");
        assert_eq!(token["token_data"], vector.token_data, "{merchant}");
        assert_eq!(token["domain"], SHOP);
        assert_eq!(token["platform_shop_id"], "legacy-shop-1");
        let audit = app.audit_rows(&merchant).await;
        assert_eq!(audit.len(), 1);
        assert!(audit[0].success && audit[0].access_type == "read");
    }
    let (_, count) = app.raw_row("m-legacy-0", "shopify").await.unwrap();
    assert_eq!(count, 1, "a legacy read is counted like any other");
}

async fn legacy_rows_fail_with_any_other_secret(backend: Backend) {
    // The row names key_v1, but key_v1 is now another secret; and a row naming an id the
    // keyring does not hold.
    let app = spawn_with_keys(backend, &keyring_env(("key_v1", K2_SECRET), &[])).await;
    let vector = &legacy_vectors()[0];
    insert_legacy_row(
        &app,
        "m-wrong",
        "shopify",
        SHOP,
        &vector.encrypted_token,
        "key_v1",
    )
    .await;
    insert_legacy_row(
        &app,
        "m-unknown",
        "shopify",
        SHOP,
        &vector.encrypted_token,
        "key_v9",
    )
    .await;
    for merchant in ["m-wrong", "m-unknown"] {
        let data = app.read_data(merchant).await;
        assert_eq!(data["tokens"], json!([]), "{merchant}");
        assert_eq!(
            data["failed"],
            json!([{"platform_name": "shopify", "code": "DECRYPTION_FAILED"}])
        );
        let audit = app.audit_rows(merchant).await;
        assert_eq!(audit[0].error_code.as_deref(), Some("DECRYPTION_FAILED"));
    }
}
