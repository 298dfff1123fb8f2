//! SQLite's WAL is checkpointed often, in small steps, so it stays small under load.

use serde_json::json;

use crate::helpers::{spawn_app, token_body, Backend};

const SHOP: &str = "wal-shop.myshopify.com";

/// Every read writes, so the WAL fills fast. The service checkpoints every 250 pages (1 MiB;
/// SQLite's default is 1,000): after about 11 MiB of writes, the WAL is still small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_stays_small_under_writes() {
    let app = spawn_app(Backend::Sqlite).await;
    let wal = app
        .database
        .sqlite_files()
        .into_iter()
        .find(|path| path.to_string_lossy().ends_with("-wal"))
        .expect("the database runs in WAL mode");
    let blob = "w".repeat(8 * 1024);
    let mut largest = 0;
    for i in 0..120 {
        let merchant = format!("m-wal-{i}");
        let body = token_body(&merchant, "shopify", SHOP, json!({"blob": blob}));
        assert_eq!(app.store(SHOP, &body).await.status(), 201);
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    }
    // One store writes its pages and an audit row: tens of KiB of frames each time.
    const MIB: u64 = 1024 * 1024;
    assert!(
        largest < 2 * MIB,
        "the WAL grew to {largest} bytes; checkpoints should keep it near 1 MiB"
    );
}
