//! Shared by the key-lifecycle tests: the legacy vectors, keyrings, rows written as the
//! original service wrote them, and running the real binary's maintenance commands.

use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use sqlx::Row;
use token_service::config::KeyringSettings;
use token_service::crypto::Keyring;
use token_service::store::Db;
use uuid::Uuid;

use crate::helpers::{spawn_app_on, spawn_app_with, Backend, TestApp, TestDatabase};
use crate::sweep::{self, SecretKind};

const VECTORS: &str = include_str!("../fixtures/legacy_fernet_vectors.json");
pub const BIN: &str = env!("CARGO_BIN_EXE_token-service");

/// A second and third secret for rotations (the first is the legacy vectors' secret).
pub const K2_SECRET: &str = "rotation-key-two-0123456789abcdefghijklm";
pub const K3_SECRET: &str = "rotation-key-three-0123456789abcdefghijk";

/// One ciphertext exactly as the original service wrote it, and what it holds.
#[derive(Debug, Clone)]
pub struct LegacyVector {
    pub encrypted_token: String,
    pub token_data: Value,
}

/// The shared vectors' secret (kept in the keyring as `key_v1`, the original's default id).
pub fn legacy_secret() -> String {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let secret = v["encryption_key"].as_str().unwrap().to_owned();
    sweep::register(SecretKind::EncryptionKey, &secret);
    secret
}

/// The vectors; their token values are registered with the leak sweep.
pub fn legacy_vectors() -> Vec<LegacyVector> {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            sweep::register_token_values(&c["token_data"]);
            LegacyVector {
                encrypted_token: c["encrypted_token"].as_str().unwrap().to_owned(),
                token_data: c["token_data"].clone(),
            }
        })
        .collect()
}

/// Keyring settings as environment variables: `primary` is (id, secret), then old keys.
pub fn keyring_env(primary: (&str, &str), old: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("TOKEN_ENCRYPTION_KEY_ID".to_owned(), primary.0.to_owned()),
        ("TOKEN_ENCRYPTION_KEY".to_owned(), primary.1.to_owned()),
    ];
    if !old.is_empty() {
        let old = old
            .iter()
            .map(|(id, secret)| format!("{id}:{secret}"))
            .collect::<Vec<_>>()
            .join(",");
        env.push(("TOKEN_ENCRYPTION_OLD_KEYS".to_owned(), old));
    }
    env
}

/// The keyring the service builds from those variables.
pub fn keyring(env: &[(String, String)]) -> Keyring {
    KeyringSettings::from_lookup(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .unwrap()
        .build()
        .unwrap()
}

fn as_overrides(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A service on a fresh database with this keyring.
pub async fn spawn_with_keys(backend: Backend, env: &[(String, String)]) -> TestApp {
    spawn_app_with(backend, &as_overrides(env)).await
}

/// The same database served again with another keyring (a restart after a config change).
pub async fn restart_with_keys(app: TestApp, env: &[(String, String)]) -> TestApp {
    let TestApp { db, database, .. } = app;
    db.close().await;
    spawn_app_on(database, &as_overrides(env)).await
}

/// Writes a row exactly as the original service did: its Fernet format, its key id.
pub async fn insert_legacy_row(
    app: &TestApp,
    merchant: &str,
    platform: &str,
    shop: &str,
    encrypted_token: &str,
    key_id: &str,
) -> Uuid {
    const SQL: &str = "INSERT INTO platform_tokens (id, merchant_id, platform_name, \
         platform_shop_id, domain, encrypted_token, encryption_key_id, token_type, access_count, \
         created_at, updated_at) VALUES ($1, $2, $3, 'legacy-shop-1', $4, $5, $6, 'oauth', 0, $7, $7)";
    let id = Uuid::new_v4();
    let now = chrono::Utc::now();
    macro_rules! insert {
        ($pool:expr) => {
            sqlx::query(SQL)
                .bind(id)
                .bind(merchant)
                .bind(platform)
                .bind(shop)
                .bind(encrypted_token)
                .bind(key_id)
                .bind(now)
                .execute($pool)
                .await
                .map(drop)
        };
    }
    match &app.db {
        Db::Sqlite(pool) => insert!(pool),
        Db::Postgres(pool) => insert!(pool),
    }
    .unwrap();
    id
}

/// (merchant_id, platform_name, encrypted_token) of every row, in merchant order.
pub async fn all_ciphertexts(db: &Db) -> Vec<(String, String, String)> {
    const SQL: &str = "SELECT merchant_id, platform_name, encrypted_token FROM platform_tokens \
         ORDER BY merchant_id, platform_name";
    macro_rules! rows {
        ($pool:expr) => {
            sqlx::query(SQL)
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        };
    }
    match db {
        Db::Sqlite(pool) => rows!(pool),
        Db::Postgres(pool) => rows!(pool),
    }
}

/// How many rows' ciphertexts start with `prefix`.
pub async fn count_with_prefix(db: &Db, prefix: &str) -> usize {
    all_ciphertexts(db)
        .await
        .iter()
        .filter(|(_, _, c)| c.starts_with(prefix))
        .count()
}

/// An empty directory for the binary to run in, so that it finds no `.env` file.
fn empty_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The binary with only the given variables (and PATH), in an empty directory.
pub fn command(database: &TestDatabase, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("LOG_FORMAT", "json")
        .current_dir(empty_dir())
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a maintenance command to completion.
pub async fn run_command(
    database: &TestDatabase,
    env: &[(String, String)],
    args: &[&str],
) -> Output {
    let mut cmd = command(database, env, args);
    tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs"))
        .await
        .unwrap()
}

/// Starts a maintenance command in the background.
pub fn spawn_command(database: &TestDatabase, env: &[(String, String)], args: &[&str]) -> Child {
    command(database, env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The token of `merchant` as the service returns it, or `None` when it has none.
pub async fn read_token(app: &TestApp, merchant: &str) -> Option<Value> {
    let data = app.read_data(merchant).await;
    assert_eq!(
        data["failed"],
        serde_json::json!([]),
        "{merchant} has rows that do not decrypt"
    );
    data["tokens"].as_array().unwrap().first().cloned()
}
