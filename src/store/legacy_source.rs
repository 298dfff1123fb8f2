//! Reading a database written by the original (Python) service: its `platform_tokens`
//! (whose domain column is `domain` or, in some deployments, `shop_domain`) and its
//! `token_access_logs`. Always PostgreSQL; only ever read.

use std::str::FromStr;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

/// A `platform_tokens` row as the original service wrote it; `id` is its TEXT uuid.
pub struct LegacyToken {
    pub id: String,
    pub merchant_id: String,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    pub encrypted_token: String,
    pub encryption_key_id: String,
    pub token_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<String>,
    pub last_accessed_by: Option<String>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A `token_access_logs` row, with the merchant and platform of its token (the original
/// did not record them; `None` when the token row is gone).
///
/// The original's free-text `error_message` never leaves its database: it may quote
/// exception text, and so secrets. Only a stable code derived from it is read.
pub struct LegacyAccessLog {
    pub id: String,
    pub token_id: String,
    pub merchant_id: Option<String>,
    pub platform_name: Option<String>,
    pub accessed_by: String,
    pub access_type: String,
    pub success: bool,
    pub error_code: Option<String>,
    pub correlation_id: Option<String>,
    pub ip_address: Option<String>,
    pub accessed_at: DateTime<Utc>,
}

/// The original's database, with the name of its domain column.
pub struct LegacySource {
    pool: PgPool,
    domain_column: &'static str,
}

impl LegacySource {
    /// Connects (in UTC, so that `timestamp` columns without a time zone, as Prisma may
    /// create them, read as the UTC they hold) and finds the domain column.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("parsing --from (a postgres:// URL)")?
            .options([("TimeZone", "UTC")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .context("connecting to the original service's database")?;
        const SQL: &str = "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'platform_tokens' \
             AND column_name IN ('domain', 'shop_domain')";
        let columns: Vec<String> = sqlx::query_scalar(SQL)
            .fetch_all(&pool)
            .await
            .context("reading the original database's schema")?;
        // Only ever one of two fixed names, so it can be spliced into SQL.
        let domain_column = if columns.iter().any(|c| c == "domain") {
            "domain"
        } else if columns.iter().any(|c| c == "shop_domain") {
            "shop_domain"
        } else {
            bail!(
                "the source has no platform_tokens table with a domain or shop_domain column: \
                 is --from the original service's database?"
            );
        };
        Ok(Self {
            pool,
            domain_column,
        })
    }

    /// `domain` or `shop_domain`, whichever this deployment of the original used.
    pub fn domain_column(&self) -> &'static str {
        self.domain_column
    }

    /// How many tokens there are to import (the progress total).
    pub async fn count_tokens(&self) -> anyhow::Result<u64> {
        self.count("SELECT count(*) FROM platform_tokens").await
    }

    /// How many access logs there are to import (the progress total).
    pub async fn count_access_logs(&self) -> anyhow::Result<u64> {
        self.count("SELECT count(*) FROM token_access_logs").await
    }

    async fn count(&self, sql: &str) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .context("counting rows in the original database")?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// Up to `limit` tokens after id `after` (from the start when `None`), in id order.
    pub async fn tokens_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<LegacyToken>> {
        let sql = format!(
            "SELECT id, merchant_id, platform_name, platform_shop_id, {} AS domain, \
             encrypted_token, encryption_key_id, token_type, expires_at::timestamptz AS expires_at, \
             scopes, last_accessed_by, last_accessed_at::timestamptz AS last_accessed_at, \
             access_count::bigint AS access_count, created_at::timestamptz AS created_at, \
             updated_at::timestamptz AS updated_at \
             FROM platform_tokens WHERE {} ORDER BY id LIMIT $1",
            self.domain_column,
            page_filter("id", after)
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .context("reading platform_tokens from the original database")?;
        rows.iter()
            .map(|r| {
                Ok(LegacyToken {
                    id: r.try_get("id")?,
                    merchant_id: r.try_get("merchant_id")?,
                    platform_name: r.try_get("platform_name")?,
                    platform_shop_id: r.try_get("platform_shop_id")?,
                    domain: r.try_get("domain")?,
                    encrypted_token: r.try_get("encrypted_token")?,
                    encryption_key_id: r.try_get("encryption_key_id")?,
                    token_type: r.try_get("token_type")?,
                    expires_at: r.try_get("expires_at")?,
                    scopes: r.try_get("scopes")?,
                    last_accessed_by: r.try_get("last_accessed_by")?,
                    last_accessed_at: r.try_get("last_accessed_at")?,
                    access_count: r.try_get("access_count")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding platform_tokens rows")
    }

    /// Up to `limit` access logs after id `after`, in id order, with their token's
    /// merchant and platform. `error_message` is reduced to a code here, in SQL: any
    /// "Decryption failed…" (the only error the original recorded) is `DECRYPTION_FAILED`,
    /// any other text `LEGACY_ERROR`.
    pub async fn access_logs_after(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<LegacyAccessLog>> {
        let sql = format!(
            "SELECT l.id, l.token_id, t.merchant_id, t.platform_name, \
             l.accessed_by, l.access_type, l.success, \
             CASE WHEN l.error_message IS NULL THEN NULL \
                  WHEN l.error_message LIKE 'Decryption failed%' THEN 'DECRYPTION_FAILED' \
                  ELSE 'LEGACY_ERROR' END AS error_code, \
             l.correlation_id, l.ip_address, l.accessed_at::timestamptz AS accessed_at \
             FROM token_access_logs l LEFT JOIN platform_tokens t ON t.id = l.token_id \
             WHERE {} ORDER BY l.id LIMIT $1",
            page_filter("l.id", after)
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .bind(after)
            .fetch_all(&self.pool)
            .await
            .context("reading token_access_logs from the original database")?;
        rows.iter()
            .map(|r| {
                Ok(LegacyAccessLog {
                    id: r.try_get("id")?,
                    token_id: r.try_get("token_id")?,
                    merchant_id: r.try_get("merchant_id")?,
                    platform_name: r.try_get("platform_name")?,
                    accessed_by: r.try_get("accessed_by")?,
                    access_type: r.try_get("access_type")?,
                    success: r.try_get("success")?,
                    error_code: r.try_get("error_code")?,
                    correlation_id: r.try_get("correlation_id")?,
                    ip_address: r.try_get("ip_address")?,
                    accessed_at: r.try_get("accessed_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .context("decoding token_access_logs rows")
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The keyset condition of a page: everything for the first, `column > $2` after that. Two
/// statements rather than `$2 IS NULL OR …`, so that every page is an index range scan.
fn page_filter(column: &str, after: Option<&str>) -> String {
    match after {
        None => "$2::text IS NULL".to_owned(),
        Some(_) => format!("{column} > $2"),
    }
}
