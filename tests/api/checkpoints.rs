//! SQLite's WAL is checkpointed by a background task of the service, never by its writer.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, token_body, Backend};

const SHOP: &str = "wal-shop.myshopify.com";

/// Between bursts of writes the background checkpoint copies the WAL into the database and
/// the WAL starts over: it stays the size of a burst instead of growing with the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_starts_over_between_bursts() {
    let app = spawn_app(Backend::Sqlite).await;
    let wal = app
        .database
        .sqlite_files()
        .into_iter()
        .find(|path| path.to_string_lossy().ends_with("-wal"))
        .expect("the database runs in WAL mode");
    let blob = "w".repeat(8 * 1024);
    const BURSTS: usize = 12;
    let mut first_burst = 0;
    for burst in 0..BURSTS {
        for i in 0..10 {
            let merchant = format!("m-wal-{burst}-{i}");
            let body = token_body(&merchant, "shopify", SHOP, json!({"blob": blob}));
            assert_eq!(app.store(SHOP, &body).await.status(), 201);
        }
        // Several checkpoint intervals (250 ms) pass before the next burst.
        tokio::time::sleep(Duration::from_millis(800)).await;
        if burst == 0 {
            first_burst = std::fs::metadata(&wal).unwrap().len();
        }
    }
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(
        first_burst > 10 * 8 * 1024,
        "a burst wrote {first_burst} bytes"
    );
    // Without checkpoints the WAL would hold all twelve bursts.
    assert!(
        size < 3 * first_burst,
        "the WAL grew to {size} bytes; one burst wrote {first_burst}"
    );
}
