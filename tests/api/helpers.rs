//! `spawn_app()`: a real service on a real socket, with a fresh database per test.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, Once};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, Row};
use token_service::config::{Config, LogFormat};
use token_service::startup::{Application, BuildOptions};
use token_service::store::Db;
use uuid::Uuid;

use crate::client::TestClient;
use crate::sweep::{self, LogLeakCheck, SecretKind};

/// Which engine a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for an `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::helpers::postgres_available().await {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            }
        }
    )+};
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static LOG_INIT: Once = Once::new();

/// Everything every spawned app has logged so far (all tests of this binary share it).
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stdout().write_all(buf)?;
        }
        // The fmt layer writes each event with one `write_all`, which lands here whole.
        sweep::record_log_line(buf);
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    LOG_INIT.call_once(|| {
        token_service::telemetry::init("debug", LogFormat::Json, || CaptureWriter);
    });
}

/// The server that holds the per-test PostgreSQL databases.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether PostgreSQL tests can run. With `CI=true` an unreachable server fails the test.
pub async fn postgres_available() -> bool {
    match PgConnection::connect(&postgres_admin_url()).await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "PostgreSQL is unreachable at {} and CI=true: {e}",
                postgres_admin_url()
            )
        }
        Err(e) => {
            eprintln!("skipping a PostgreSQL test: server unreachable ({e})");
            false
        }
    }
}

pub const CLIENT_SECRET: &str = "test-client-jwt-secret-0123456789abcdef";
pub const ENCRYPTION_KEY: &str = "test-encryption-key-0123456789abcdefghij";
pub const READER_KEY: &str = "pc-key-0123456789abcdef";
pub const OTHER_SERVICE_KEY: &str = "billing-key-0123456789abcdef";

/// A freshly created database that is dropped with the test.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/token-service.db", dir.path().display());
                Self {
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let name = format!("ts_test_{}", Uuid::new_v4().simple());
                let mut admin = PgConnection::connect(&postgres_admin_url()).await.unwrap();
                admin
                    .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
                    .await
                    .unwrap();
                let base = postgres_admin_url();
                let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
                Self {
                    url,
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// A SQLite database at `url`, in a directory the test owns.
    pub fn sqlite_at(url: &str) -> TestDatabase {
        TestDatabase {
            url: url.to_owned(),
            pg_name: None,
            _dir: None,
        }
    }

    /// Another handle on the same database, for a second service instance; the original
    /// keeps ownership (and drops it).
    pub fn shared(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            pg_name: None,
            _dir: None,
        }
    }

    /// The SQLite file (and its WAL) on disk.
    pub fn sqlite_files(&self) -> Vec<std::path::PathBuf> {
        let dir = self._dir.as_ref().expect("a SQLite database");
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = postgres_admin_url();
            // Drop is synchronous; a short-lived runtime on another thread does the async work.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async {
                        if let Ok(mut conn) = PgConnection::connect(&admin).await {
                            let _ = conn
                                .execute(
                                    format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)
                                        .as_str(),
                                )
                                .await;
                        }
                    })
            })
            .join();
        }
    }
}

/// A running service and what a test needs to talk to it.
pub struct TestApp {
    pub address: String,
    /// The port of `/metrics` when `METRICS_PORT` is set.
    pub metrics_port: Option<u16>,
    /// Sends through reqwest and sweeps every response for secrets.
    pub client: TestClient,
    /// A separate pool on the service's database, for checking what is stored.
    pub db: Db,
    pub database: TestDatabase,
    /// Fails the test if anything leaked into the logs by the time it ends.
    _leak_check: LogLeakCheck,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Starts the service with extra or replaced settings.
pub async fn spawn_app_with(backend: Backend, overrides: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend).await;
    spawn_app_on(database, overrides).await
}

/// Starts the service on an existing database (to restart it with other settings).
pub async fn spawn_app_on(database: TestDatabase, overrides: &[(&str, &str)]) -> TestApp {
    let (address, metrics_port) = start(&database.url, overrides).await;
    let db = Db::connect(
        &database.url,
        token_service::store::PoolSettings { max_connections: 2 },
    )
    .await
    .unwrap();
    TestApp {
        address,
        metrics_port,
        client: TestClient::default(),
        db,
        database,
        _leak_check: LogLeakCheck,
    }
}

/// Starts one more instance of the service on `url` (a replica); its base address.
pub async fn start_service(url: &str, overrides: &[(&str, &str)]) -> String {
    start(url, overrides).await.0
}

/// Starts the service: its base address, and its metrics port when `METRICS_PORT` is set.
async fn start(url: &str, overrides: &[(&str, &str)]) -> (String, Option<u16>) {
    init_logs();
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", url),
        ("API_HOST", "127.0.0.1"),
        ("TOKEN_API_EXTERNAL_PORT", "0"),
        ("CLIENT_JWT_SECRET", CLIENT_SECRET),
        ("TOKEN_ENCRYPTION_KEY", ENCRYPTION_KEY),
        ("DATABASE_MAX_CONNECTIONS", "6"),
        ("DATABASE_WRITERS", "3"),
        // Tests drive load from one address as one shop; the limit tests turn limits on.
        ("RATE_LIMIT_IP_PER_SEC", "0"),
        ("RATE_LIMIT_SHOP_PER_SEC", "0"),
        ("RATE_LIMIT_SERVICE_PER_SEC", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    vars.insert(
        "INTERNAL_JWT_SECRET".into(),
        format!("platform-connector:{READER_KEY},billing-service:{OTHER_SERVICE_KEY}"),
    );
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    for (name, value) in &vars {
        sweep::register_setting(name, value);
    }
    let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("test configuration");
    let app = Application::build(&config, BuildOptions { migrate: true })
        .await
        .expect("service starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_port = app.metrics_port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (address, metrics_port)
}

/// A client JWT for `shop`, valid for an hour.
pub fn client_jwt(shop: &str) -> String {
    sign(
        json!({"sub": shop, "exp": now() + 3600, "scope": "tokens:write"}),
        Algorithm::HS256,
        CLIENT_SECRET,
    )
}

/// A JWT with these claims; registered with the leak sweep.
pub fn sign(claims: Value, alg: Algorithm, secret: &str) -> String {
    let jwt = encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    sweep::register(SecretKind::Jwt, &jwt);
    jwt
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A valid store request body; the token values in it are registered with the leak sweep.
pub fn token_body(merchant: &str, platform: &str, shop: &str, token_data: Value) -> Value {
    sweep::register_token_values(&token_data);
    json!({
        "merchant_id": merchant,
        "platform_name": platform,
        "platform_shop_id": "shop-123",
        "domain": shop,
        "token_data": token_data,
        "token_type": "oauth",
        "scopes": "read_products,write_orders",
    })
}

/// An audit row, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub token_id: Option<Uuid>,
    pub merchant_id: String,
    pub platform_name: Option<String>,
    pub accessed_by: String,
    pub access_type: String,
    pub success: bool,
    pub error_code: Option<String>,
    pub correlation_id: Option<String>,
}

impl TestApp {
    pub async fn store(&self, shop: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/tokens", self.address))
            .bearer_auth(client_jwt(shop))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn read(&self, key: &str, merchant: &str, query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/api/v1/tokens/{merchant}{query}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// Reads as the allow-listed service and returns `data`.
    pub async fn read_data(&self, merchant: &str) -> Value {
        let response = self.read(READER_KEY, merchant, "").await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["data"].clone()
    }

    pub async fn delete(&self, shop: &str, merchant: &str, platform: &str) -> reqwest::Response {
        self.client
            .delete(format!(
                "{}/api/v1/tokens/{merchant}/{platform}",
                self.address
            ))
            .bearer_auth(client_jwt(shop))
            .send()
            .await
            .unwrap()
    }

    /// The single number a query answers (a `COUNT(*)`), on the service's database.
    pub async fn count(&self, sql: &str) -> i64 {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs one statement on the service's database.
    pub async fn execute(&self, sql: &str) {
        match &self.db {
            Db::Sqlite(pool) => pool.execute(sql).await.map(drop),
            Db::Postgres(pool) => pool.execute(sql).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn audit_rows(&self, merchant: &str) -> Vec<AuditRow> {
        const SQL: &str = "SELECT token_id, merchant_id, platform_name, accessed_by, access_type, \
             success, error_code, correlation_id FROM token_access_logs WHERE merchant_id = $1 \
             ORDER BY accessed_at, id";
        macro_rules! rows {
            ($pool:expr) => {
                sqlx::query(SQL)
                    .bind(merchant)
                    .fetch_all($pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| AuditRow {
                        token_id: r.get("token_id"),
                        merchant_id: r.get("merchant_id"),
                        platform_name: r.get("platform_name"),
                        accessed_by: r.get("accessed_by"),
                        access_type: r.get("access_type"),
                        success: r.get("success"),
                        error_code: r.get("error_code"),
                        correlation_id: r.get("correlation_id"),
                    })
                    .collect()
            };
        }
        match &self.db {
            Db::Sqlite(pool) => rows!(pool),
            Db::Postgres(pool) => rows!(pool),
        }
    }

    /// (encrypted_token, access_count) of a row.
    pub async fn raw_row(&self, merchant: &str, platform: &str) -> Option<(String, i64)> {
        const SQL: &str = "SELECT encrypted_token, access_count FROM platform_tokens \
             WHERE merchant_id = $1 AND platform_name = $2";
        macro_rules! row {
            ($pool:expr) => {
                sqlx::query(SQL)
                    .bind(merchant)
                    .bind(platform)
                    .fetch_optional($pool)
                    .await
                    .unwrap()
                    .map(|r| (r.get(0), r.get(1)))
            };
        }
        match &self.db {
            Db::Sqlite(pool) => row!(pool),
            Db::Postgres(pool) => row!(pool),
        }
    }

    pub async fn set_ciphertext(&self, merchant: &str, platform: &str, ciphertext: &str) {
        const SQL: &str = "UPDATE platform_tokens SET encrypted_token = $1 \
             WHERE merchant_id = $2 AND platform_name = $3";
        match &self.db {
            Db::Sqlite(pool) => sqlx::query(SQL)
                .bind(ciphertext)
                .bind(merchant)
                .bind(platform)
                .execute(pool)
                .await
                .map(drop),
            Db::Postgres(pool) => sqlx::query(SQL)
                .bind(ciphertext)
                .bind(merchant)
                .bind(platform)
                .execute(pool)
                .await
                .map(drop),
        }
        .unwrap();
    }

    /// Every stored byte: the SQLite files, or every row of both tables as text on PostgreSQL.
    pub async fn everything_stored(&self) -> Vec<u8> {
        match &self.db {
            Db::Sqlite(_) => self
                .database
                .sqlite_files()
                .iter()
                .flat_map(|p| std::fs::read(p).unwrap())
                .collect(),
            Db::Postgres(pool) => {
                let mut all = Vec::new();
                for table in ["platform_tokens", "token_access_logs"] {
                    let sql = format!("SELECT row_to_json(t)::text FROM {table} t");
                    for row in sqlx::query(&sql).fetch_all(pool).await.unwrap() {
                        all.extend_from_slice(row.get::<String, _>(0).as_bytes());
                    }
                }
                all
            }
        }
    }
}

/// `error.code` of an error envelope.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
