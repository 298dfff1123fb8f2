//! `token-service import-legacy`: from a PostgreSQL database created with the original
//! service's schema (tests/fixtures/legacy_schema.sql) into either store, twice.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, Row};
use token_service::store::Db;
use uuid::Uuid;

use crate::helpers::{postgres_available, token_body, Backend, TestApp, TestDatabase};
use crate::keys::{
    keyring_env, legacy_secret, legacy_vectors, read_token, run_command, spawn_with_keys, text,
    K2_SECRET,
};
use crate::on_both_backends;

on_both_backends!(
    import_twice_copies_everything_once,
    import_reads_a_shop_domain_column,
    import_reports_failures_and_keeps_existing_rows,
);

const SCHEMA: &str = include_str!("../fixtures/legacy_schema.sql");
const SHOP: &str = "legacy-shop.myshopify.com";
/// Free text the original put into error_message; it must not reach the new store.
const LEAKY_ERROR: &str = "Decryption failed: InvalidToken near shpat_leaked_in_exception_text";

fn keys() -> Vec<(String, String)> {
    keyring_env(("key_v2", K2_SECRET), &[("key_v1", &legacy_secret())])
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A database as the original service left it.
struct LegacyDb {
    database: TestDatabase,
    conn: PgConnection,
}

impl LegacyDb {
    async fn create(domain_column: &str) -> Self {
        let database = TestDatabase::create(Backend::Postgres).await;
        let mut conn = PgConnection::connect(&database.url).await.unwrap();
        let schema = if domain_column == "domain" {
            SCHEMA.to_owned()
        } else {
            SCHEMA
                .replace(
                    "    domain            TEXT NOT NULL,",
                    "    shop_domain       TEXT NOT NULL,",
                )
                .replace(
                    "ON platform_tokens (domain)",
                    "ON platform_tokens (shop_domain)",
                )
        };
        assert!(schema.contains(domain_column));
        conn.execute(sqlx::raw_sql(&schema)).await.unwrap();
        Self { database, conn }
    }

    #[allow(clippy::too_many_arguments)]
    async fn token(
        &mut self,
        domain_column: &str,
        id: Uuid,
        merchant: &str,
        platform: &str,
        domain: &str,
        ciphertext: &str,
        key_id: &str,
        access_count: i32,
    ) {
        let sql = format!(
            "INSERT INTO platform_tokens (id, merchant_id, platform_name, platform_shop_id, \
             {domain_column}, encrypted_token, encryption_key_id, token_type, expires_at, scopes, \
             last_accessed_by, last_accessed_at, access_count, created_at, updated_at) \
             VALUES ($1, $2, $3, 'shop-77', $4, $5, $6, 'oauth', $7, 'read_products', \
             'platform-connector', $8, $9, $10, $11)"
        );
        sqlx::query(&sql)
            .bind(id.to_string())
            .bind(merchant)
            .bind(platform)
            .bind(domain)
            .bind(ciphertext)
            .bind(key_id)
            .bind(at("2030-01-01T00:00:00.500Z"))
            .bind(at("2025-03-04T05:06:07.123Z"))
            .bind(access_count)
            .bind(at("2024-01-02T03:04:05.678Z"))
            .bind(at("2024-06-07T08:09:10.111Z"))
            .execute(&mut self.conn)
            .await
            .unwrap();
    }

    async fn log(
        &mut self,
        id: Uuid,
        token_id: Uuid,
        accessed_by: &str,
        access_type: &str,
        success: bool,
        error_message: Option<&str>,
    ) {
        const SQL: &str = "INSERT INTO token_access_logs (id, token_id, accessed_by, access_type, \
             correlation_id, ip_address, success, error_message, accessed_at) \
             VALUES ($1, $2, $3, $4, 'corr-legacy', '10.1.2.3', $5, $6, $7)";
        sqlx::query(SQL)
            .bind(id.to_string())
            .bind(token_id.to_string())
            .bind(accessed_by)
            .bind(access_type)
            .bind(success)
            .bind(error_message)
            .bind(at("2025-05-05T05:05:05.555Z"))
            .execute(&mut self.conn)
            .await
            .unwrap();
    }
}

async fn import(app: &TestApp, legacy: &LegacyDb) -> (bool, String, String) {
    let args = [
        "import-legacy",
        "--from",
        &legacy.database.url,
        "--batch-size",
        "2",
    ];
    let out = run_command(&app.database, &keys(), &args).await;
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Every column of both tables, in id order, for "a second run changes nothing".
async fn snapshot(db: &Db) -> Vec<String> {
    const TOKENS: &str = "SELECT id, merchant_id, platform_name, platform_shop_id, domain, \
         encrypted_token, encryption_key_id, token_type, expires_at, scopes, last_accessed_by, \
         last_accessed_at, access_count, created_at, updated_at FROM platform_tokens ORDER BY id";
    const LOGS: &str = "SELECT id, token_id, merchant_id, platform_name, accessed_by, \
         access_type, success, error_code, correlation_id, ip_address, accessed_at \
         FROM token_access_logs ORDER BY id";
    macro_rules! rows {
        ($pool:expr) => {{
            let mut all = Vec::new();
            for r in sqlx::query(TOKENS).fetch_all($pool).await.unwrap() {
                all.push(format!(
                    "{:?}",
                    (
                        r.get::<Uuid, _>(0),
                        r.get::<String, _>(1),
                        r.get::<String, _>(2),
                        r.get::<String, _>(3),
                        r.get::<String, _>(4),
                        r.get::<String, _>(5),
                        r.get::<String, _>(6),
                        r.get::<String, _>(7),
                        r.get::<Option<DateTime<Utc>>, _>(8),
                        r.get::<Option<String>, _>(9),
                        (
                            r.get::<Option<String>, _>(10),
                            r.get::<Option<DateTime<Utc>>, _>(11),
                            r.get::<i64, _>(12),
                            r.get::<DateTime<Utc>, _>(13),
                            r.get::<DateTime<Utc>, _>(14),
                        ),
                    )
                ));
            }
            for r in sqlx::query(LOGS).fetch_all($pool).await.unwrap() {
                all.push(format!(
                    "{:?}",
                    (
                        r.get::<Uuid, _>(0),
                        r.get::<Option<Uuid>, _>(1),
                        r.get::<String, _>(2),
                        r.get::<Option<String>, _>(3),
                        r.get::<String, _>(4),
                        r.get::<String, _>(5),
                        r.get::<bool, _>(6),
                        r.get::<Option<String>, _>(7),
                        r.get::<Option<String>, _>(8),
                        r.get::<Option<String>, _>(9),
                        r.get::<DateTime<Utc>, _>(10),
                    )
                ));
            }
            all
        }};
    }
    match db {
        Db::Sqlite(pool) => rows!(pool),
        Db::Postgres(pool) => rows!(pool),
    }
}

/// (token_id, merchant_id, platform_name, accessed_by, access_type, success, error_code,
/// correlation_id, ip_address, accessed_at) of one audit row.
type LogRow = (
    Option<Uuid>,
    String,
    Option<String>,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

async fn log_row(db: &Db, id: Uuid) -> LogRow {
    const SQL: &str = "SELECT token_id, merchant_id, platform_name, accessed_by, access_type, \
         success, error_code, correlation_id, ip_address, accessed_at FROM token_access_logs \
         WHERE id = $1";
    macro_rules! row {
        ($pool:expr) => {{
            let r = sqlx::query(SQL).bind(id).fetch_one($pool).await.unwrap();
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
                r.get(9),
            )
        }};
    }
    match db {
        Db::Sqlite(pool) => row!(pool),
        Db::Postgres(pool) => row!(pool),
    }
}

/// (id, domain, encryption_key_id, access_count, last_accessed_at, created_at, updated_at).
async fn token_row(
    db: &Db,
    merchant: &str,
) -> (
    Uuid,
    String,
    String,
    i64,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    DateTime<Utc>,
) {
    const SQL: &str = "SELECT id, domain, encryption_key_id, access_count, last_accessed_at, \
         created_at, updated_at FROM platform_tokens WHERE merchant_id = $1";
    macro_rules! row {
        ($pool:expr) => {{
            let r = sqlx::query(SQL)
                .bind(merchant)
                .fetch_one($pool)
                .await
                .unwrap();
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        }};
    }
    match db {
        Db::Sqlite(pool) => row!(pool),
        Db::Postgres(pool) => row!(pool),
    }
}

async fn import_twice_copies_everything_once(backend: Backend) {
    if !postgres_available().await {
        return;
    }
    let mut legacy = LegacyDb::create("domain").await;
    let vectors = legacy_vectors();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let platforms = ["shopify", "woocommerce", "bigcommerce"];
    for (i, vector) in vectors.iter().take(3).enumerate() {
        let merchant = format!("m-imp-{i}");
        let domain = "Legacy-Shop.MyShopify.com"; // the original kept the case it was sent
        let (id, ciphertext) = (ids[i], &vector.encrypted_token);
        legacy
            .token(
                "domain",
                id,
                &merchant,
                platforms[i],
                domain,
                ciphertext,
                "key_v1",
                7 + i as i32,
            )
            .await;
    }
    let gone_token = Uuid::new_v4(); // deleted by the original; its logs remain
    let logs = [
        (
            Uuid::new_v4(),
            ids[0],
            "platform-connector",
            "read",
            true,
            None,
        ),
        (
            Uuid::new_v4(),
            ids[0],
            "platform-connector",
            "read",
            false,
            Some(LEAKY_ERROR),
        ),
        (Uuid::new_v4(), ids[1], SHOP, "write", true, None),
        (Uuid::new_v4(), gone_token, SHOP, "delete", true, None),
        (
            Uuid::new_v4(),
            ids[2],
            "platform-connector",
            "read",
            false,
            Some("boom: secret-ish"),
        ),
    ];
    for (id, token_id, by, kind, success, error) in logs {
        legacy.log(id, token_id, by, kind, success, error).await;
    }

    let app = spawn_with_keys(backend, &keys()).await;
    let (ok, stdout, stderr) = import(&app, &legacy).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "tokens: imported 3, skipped 0 (already imported 0, kept existing 0), failed 0"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("access logs: imported 5, skipped 0 (already present), failed 0"),
        "{stdout}"
    );

    // Ids, counters and timestamps kept; domain lower-cased; re-encrypted under key_v2.
    for (i, id) in ids.iter().enumerate() {
        let merchant = format!("m-imp-{i}");
        let row = token_row(&app.db, &merchant).await;
        assert_eq!(row.0, *id);
        assert_eq!(row.1, "legacy-shop.myshopify.com");
        assert_eq!(row.2, "key_v2");
        assert_eq!(row.3, 7 + i as i64);
        assert_eq!(row.4, Some(at("2025-03-04T05:06:07.123Z")));
        assert_eq!(row.5, at("2024-01-02T03:04:05.678Z"));
        assert_eq!(row.6, at("2024-06-07T08:09:10.111Z"));
        let (ciphertext, _) = app.raw_row(&merchant, platforms[i]).await.unwrap();
        assert!(ciphertext.starts_with("tse1.key_v2."));
        let audit = app.audit_rows(&merchant).await;
        let entry = audit
            .iter()
            .find(|a| a.accessed_by == "cli:import-legacy")
            .unwrap();
        assert_eq!((entry.access_type.as_str(), entry.success), ("write", true));
        assert_eq!(entry.token_id, Some(*id));
    }
    // Logs: original ids and times, merchant and platform from their token, codes not text.
    let first = log_row(&app.db, logs[0].0).await;
    assert_eq!(
        first,
        (
            Some(ids[0]),
            "m-imp-0".to_owned(),
            Some("shopify".to_owned()),
            "platform-connector".to_owned(),
            "read".to_owned(),
            true,
            None,
            Some("corr-legacy".to_owned()),
            Some("10.1.2.3".to_owned()),
            at("2025-05-05T05:05:05.555Z"),
        )
    );
    assert_eq!(
        log_row(&app.db, logs[1].0).await.6.as_deref(),
        Some("DECRYPTION_FAILED")
    );
    assert_eq!(
        log_row(&app.db, logs[4].0).await.6.as_deref(),
        Some("LEGACY_ERROR")
    );
    let orphan = log_row(&app.db, logs[3].0).await;
    assert_eq!(
        (orphan.0, orphan.1.as_str(), orphan.2),
        (Some(gone_token), "(unknown)", None)
    );
    let stored = String::from_utf8_lossy(&app.everything_stored().await).into_owned();
    assert!(!stored.contains("shpat_leaked_in_exception_text") && !stored.contains("secret-ish"));

    // The shop disconnects one platform after the import; a re-run must not bring it back.
    assert_eq!(
        app.delete(SHOP, "m-imp-2", "bigcommerce").await.status(),
        200
    );
    let before = snapshot(&app.db).await;
    let (ok, stdout, stderr) = import(&app, &legacy).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "tokens: imported 0, skipped 3 (already imported 3, kept existing 0), failed 0"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("access logs: imported 0, skipped 5"),
        "{stdout}"
    );
    assert_eq!(
        snapshot(&app.db).await,
        before,
        "a second run changes nothing"
    );

    for (i, vector) in vectors.iter().take(2).enumerate() {
        let token = read_token(&app, &format!("m-imp-{i}"))
            .await
            .expect("imported");
        assert_eq!(token["token_data"], vector.token_data);
        assert_eq!(token["domain"], SHOP);
        assert_eq!(token["expires_at"], "2030-01-01T00:00:00.500Z");
    }
    assert!(read_token(&app, "m-imp-2").await.is_none());
}

async fn import_reads_a_shop_domain_column(backend: Backend) {
    if !postgres_available().await {
        return;
    }
    let mut legacy = LegacyDb::create("shop_domain").await;
    let vector = &legacy_vectors()[1];
    let id = Uuid::new_v4();
    let domain = "Other-Shop.example.COM";
    legacy
        .token(
            "shop_domain",
            id,
            "m-shop-domain",
            "woocommerce",
            domain,
            &vector.encrypted_token,
            "key_v1",
            0,
        )
        .await;
    let app = spawn_with_keys(backend, &keys()).await;
    let (ok, stdout, stderr) = import(&app, &legacy).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("tokens: imported 1,"), "{stdout}");
    let token = read_token(&app, "m-shop-domain").await.unwrap();
    assert_eq!(token["domain"], "other-shop.example.com");
    assert_eq!(token["token_data"], vector.token_data);
    assert_eq!(token_row(&app.db, "m-shop-domain").await.0, id);
}

async fn import_reports_failures_and_keeps_existing_rows(backend: Backend) {
    if !postgres_available().await {
        return;
    }
    let mut legacy = LegacyDb::create("domain").await;
    let v = legacy_vectors();
    let (good, bad_platform, bad_key, taken) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    legacy
        .token(
            "domain",
            good,
            "m-good",
            "shopify",
            SHOP,
            &v[0].encrypted_token,
            "key_v1",
            1,
        )
        .await;
    legacy
        .token(
            "domain",
            bad_platform,
            "m-etsy",
            "etsy",
            SHOP,
            &v[0].encrypted_token,
            "key_v1",
            1,
        )
        .await;
    legacy
        .token(
            "domain",
            bad_key,
            "m-key",
            "magento",
            SHOP,
            &v[1].encrypted_token,
            "key_v7",
            1,
        )
        .await;
    legacy
        .token(
            "domain",
            taken,
            "m-taken",
            "shopify",
            SHOP,
            &v[2].encrypted_token,
            "key_v1",
            1,
        )
        .await;
    let bad_log = Uuid::new_v4();
    legacy
        .log(bad_log, good, "platform-connector", "update", true, None)
        .await;
    legacy
        .log(
            Uuid::new_v4(),
            good,
            "platform-connector",
            "read",
            true,
            None,
        )
        .await;

    let app = spawn_with_keys(backend, &keys()).await;
    // The new service already holds a newer token for m-taken: the import must keep it.
    let newer = json!({"access_token": "shpat_stored_after_cutover"});
    let body = token_body("m-taken", "shopify", SHOP, newer.clone());
    assert_eq!(app.store(SHOP, &body).await.status(), 201);

    let (ok, stdout, stderr) = import(&app, &legacy).await;
    assert!(!ok, "a failed row fails the run: {stdout}");
    assert!(
        stderr.contains("3 row(s) could not be imported"),
        "{stderr}"
    );
    assert!(
        stdout.contains(
            "tokens: imported 1, skipped 1 (already imported 0, kept existing 1), failed 2"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "failed token: id={bad_platform} merchant_id=m-etsy platform=etsy code=INVALID_PLATFORM"
    )));
    assert!(stdout.contains(&format!(
        "failed token: id={bad_key} merchant_id=m-key platform=magento code=UNKNOWN_KEY"
    )));
    assert!(stdout.contains(&format!("kept existing: id={taken} merchant_id=m-taken")));
    assert!(stdout.contains(&format!(
        "failed access log: id={bad_log} merchant_id=m-good platform=shopify code=INVALID_ACCESS_TYPE"
    )));
    assert!(stdout.contains("access logs: imported 1, skipped 0 (already present), failed 1"));
    for secret in [
        v[0].encrypted_token.as_str(),
        &v[1].encrypted_token,
        &legacy_secret(),
        K2_SECRET,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "output leaks a secret"
        );
    }
    assert_eq!(
        read_token(&app, "m-good").await.unwrap()["token_data"],
        v[0].token_data
    );
    assert_eq!(
        read_token(&app, "m-taken").await.unwrap()["token_data"],
        newer
    );
    assert!(read_token(&app, "m-key").await.is_none());
    // The original's timestamps, not the import's.
    assert_eq!(
        token_row(&app.db, "m-good").await.5,
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(678)
    );
}
