//! `token-service shopify migrate-expiring` against the loopback Shopify: every
//! non-expiring token exchanged exactly once, failures retried by the next run.

use std::collections::HashSet;
use std::process::Output;

use serde_json::{json, Value};

use crate::fake_shopify::FakeShopify;
use crate::helpers::{Backend, TestApp, CLIENT_SECRET, ENCRYPTION_KEY, READER_KEY};
use crate::on_both_backends;
use crate::refresh::app_with;

on_both_backends!(migration_exchanges_every_token_once_across_runs);

const TOKENS: usize = 1000;

async fn run_migration(app: &TestApp, fake: &FakeShopify) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_token-service"));
    command
        .env_clear()
        .env("DATABASE_URL", &app.database.url)
        .env("CLIENT_JWT_SECRET", CLIENT_SECRET)
        .env(
            "INTERNAL_JWT_SECRET",
            format!("platform-connector:{READER_KEY}"),
        )
        .env("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .args(["shopify", "migrate-expiring", "--concurrency", "8"]);
    for (name, value) in fake.settings() {
        command.env(name, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

async fn migration_exchanges_every_token_once_across_runs(backend: Backend) {
    let fake = FakeShopify::start().await;
    let app = std::sync::Arc::new(app_with(backend, &fake, &[]).await);
    let mut stores = tokio::task::JoinSet::new();
    for i in 0..TOKENS {
        let (app, prefix) = (app.clone(), fake.prefix.clone());
        stores.spawn(async move {
            let shop = format!("mig-{i}.myshopify.com");
            let body = json!({
                "merchant_id": format!("m-mig-{i}"), "platform_name": "shopify",
                "platform_shop_id": i.to_string(), "domain": shop,
                "token_data": {"access_token": format!("shpat_offline_{prefix}_{i}")},
                "token_type": "oauth"
            });
            assert_eq!(app.store(&shop, &body).await.status(), 201);
        });
    }
    while let Some(r) = stores.join_next().await {
        r.unwrap();
    }
    // Not candidates: another platform, and a Shopify token that already expires.
    let other = json!({"merchant_id": "m-mig-other", "platform_name": "magento", "platform_shop_id": "1",
        "domain": "mig-0.myshopify.com", "token_data": {"access_token": "magento"}, "token_type": "oauth"});
    assert_eq!(app.store("mig-0.myshopify.com", &other).await.status(), 201);
    let expiring = json!({"merchant_id": "m-mig-expiring", "platform_name": "shopify", "platform_shop_id": "1",
        "domain": "mig-0.myshopify.com", "token_data": {"access_token": "a", "refresh_token": fake.issue_refresh_token()},
        "token_type": "oauth", "expires_at": "2099-01-01T00:00:00Z"});
    assert_eq!(
        app.store("mig-0.myshopify.com", &expiring).await.status(),
        201
    );

    let failing: Vec<String> = (0..TOKENS)
        .step_by(20)
        .map(|i| format!("shpat_offline_{}_{i}", fake.prefix))
        .collect();
    fake.behave(|b| b.fail_exchange_once = failing.clone());

    let first = run_migration(&app, &fake).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        !first.status.success(),
        "failures make the run fail: {stdout}"
    );
    assert!(
        stdout.contains(&format!("{TOKENS} non-expiring")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "exchanged: {}, skipped: 0, failed: {}",
            TOKENS - failing.len(),
            failing.len()
        )),
        "{stdout}"
    );

    let second = run_migration(&app, &fake).await;
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "exchanged: {}, skipped: 0, failed: 0",
            failing.len()
        )),
        "{stdout}"
    );

    let third = run_migration(&app, &fake).await;
    assert!(third.status.success());
    assert!(String::from_utf8_lossy(&third.stdout).contains("0 non-expiring"));

    let exchanged = fake.exchanged_subjects();
    assert_eq!(exchanged.len(), TOKENS);
    assert_eq!(
        exchanged.iter().collect::<HashSet<_>>().len(),
        TOKENS,
        "each token exchanged once"
    );
    assert_eq!(fake.exchange_calls(), TOKENS + failing.len());

    let data = app.read_data("m-mig-20").await;
    let token: &Value = &data["tokens"][0];
    let access = token["token_data"]["access_token"].as_str().unwrap();
    assert!(
        access.starts_with(&format!("shpat_{}_x", fake.prefix)),
        "{access}"
    );
    assert!(token["token_data"]["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("shprt_"));
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(token["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires_at > chrono::Utc::now() + chrono::Duration::minutes(55));
    let audits = app.audit_rows("m-mig-20").await;
    let refreshes: Vec<_> = audits
        .iter()
        .filter(|r| r.access_type == "refresh")
        .collect();
    assert_eq!(
        refreshes.len(),
        2,
        "the refused attempt and the exchange are both audited"
    );
    assert!(refreshes
        .iter()
        .all(|r| r.accessed_by == "cli:shopify-migrate-expiring"));
    assert!(!refreshes[0].success && refreshes[1].success);

    let untouched = app.read_data("m-mig-expiring").await;
    assert_eq!(untouched["tokens"][0]["token_data"]["access_token"], "a");
}
