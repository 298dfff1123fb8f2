//! Rotating keys while serving: old rows stay readable, new rows use the new key, `rewrap`
//! moves everything to it, and then the old key can go.

use serde_json::{json, Value};

use crate::helpers::{token_body, Backend};
use crate::keys::{
    all_ciphertexts, count_with_prefix, insert_legacy_row, keyring_env, legacy_secret,
    legacy_vectors, read_token, restart_with_keys, run_command, spawn_with_keys, text, K2_SECRET,
};
use crate::on_both_backends;

on_both_backends!(full_rotation_loses_nothing);

const SHOP: &str = "rotation-shop.myshopify.com";

async fn full_rotation_loses_nothing(backend: Backend) {
    let legacy = legacy_secret();
    // Day 0: key_v1 is the original service's secret, so its rows read too.
    let k1 = keyring_env(("key_v1", &legacy), &[]);
    let app = spawn_with_keys(backend, &k1).await;
    let mut expected: Vec<(String, Value)> = Vec::new();
    for i in 0..4 {
        let merchant = format!("m-rot-{i}");
        let data = json!({"access_token": format!("shpat_rotation_{i}")});
        let body = token_body(&merchant, "shopify", SHOP, data.clone());
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
        expected.push((merchant, data));
    }
    for (i, vector) in legacy_vectors().iter().take(2).enumerate() {
        let merchant = format!("m-rot-legacy-{i}");
        insert_legacy_row(
            &app,
            &merchant,
            "woocommerce",
            SHOP,
            &vector.encrypted_token,
            "key_v1",
        )
        .await;
        expected.push((merchant, vector.token_data.clone()));
    }
    assert_eq!(count_with_prefix(&app.db, "tse1.key_v1.").await, 4);

    // Restart with key_v2 primary and key_v1 kept for reading.
    let k2_k1 = keyring_env(("key_v2", K2_SECRET), &[("key_v1", &legacy)]);
    let app = restart_with_keys(app, &k2_k1).await;
    for (merchant, data) in &expected {
        let token = read_token(&app, merchant).await.expect("still readable");
        assert_eq!(&token["token_data"], data, "{merchant}");
    }
    let fresh = json!({"access_token": "shpat_after_rotation"});
    let body = token_body("m-rot-new", "magento", SHOP, fresh.clone());
    assert_eq!(app.store(SHOP, &body).await.status(), 201);
    let (ciphertext, _) = app.raw_row("m-rot-new", "magento").await.unwrap();
    assert!(
        ciphertext.starts_with("tse1.key_v2."),
        "new writes use the new key"
    );
    expected.push(("m-rot-new".into(), fresh));

    // Rewrap everything to key_v2 while the service runs.
    let out = run_command(&app.database, &k2_k1, &["rewrap", "--batch-size", "2"]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("not in the current format: 6 (key key_v1: 4, legacy: 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("rewrapped: 6"), "{stdout}");
    assert!(stdout.contains("re-check: 0 row(s)"), "{stdout}");
    // Without a terminal, progress goes to the log (stderr) as JSON lines.
    let stderr = text(&out.stderr);
    let finished = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "finished")
        .unwrap_or_else(|| panic!("a final progress line: {stderr}"));
    assert_eq!(
        (&finished["task"], &finished["done"]),
        (&json!("rewrap"), &json!(6))
    );
    for secret in [legacy.as_str(), K2_SECRET, "shpat_rotation_0"] {
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "output leaks a secret"
        );
    }
    let rows = all_ciphertexts(&app.db).await;
    assert_eq!(rows.len(), 7);
    assert!(
        rows.iter().all(|(_, _, c)| c.starts_with("tse1.key_v2.")),
        "{rows:?}"
    );
    for (merchant, _) in expected.iter().filter(|(m, _)| m != "m-rot-new") {
        let audit = app.audit_rows(merchant).await;
        let rewrap = audit
            .iter()
            .find(|a| a.accessed_by == "cli:rewrap")
            .expect("audited");
        assert_eq!(rewrap.access_type, "write");
        assert!(rewrap.success && rewrap.token_id.is_some());
        assert!(rewrap
            .correlation_id
            .as_deref()
            .unwrap()
            .starts_with("rewrap_"));
    }

    // Restart with key_v2 alone: nothing was lost.
    let k2 = keyring_env(("key_v2", K2_SECRET), &[]);
    let app = restart_with_keys(app, &k2).await;
    for (merchant, data) in &expected {
        let token = read_token(&app, merchant)
            .await
            .expect("readable with key_v2 alone");
        assert_eq!(&token["token_data"], data, "{merchant}");
    }
}
