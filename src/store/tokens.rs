//! Queries on `platform_tokens`.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{on_conn, StoreError, Tx};

/// A credential row as stored: still encrypted.
#[derive(Debug)]
pub struct StoredToken {
    pub id: Uuid,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    pub encrypted_token: String,
    /// Names the keyring secret of a legacy ciphertext (the envelope format names its own).
    pub encryption_key_id: String,
    pub token_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<String>,
}

/// Everything a store writes into a row, already encrypted.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub merchant_id: &'a str,
    pub platform_name: &'a str,
    pub platform_shop_id: &'a str,
    pub domain: &'a str,
    pub encrypted_token: &'a str,
    pub encryption_key_id: &'a str,
    pub token_type: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<&'a str>,
    pub now: DateTime<Utc>,
}

const SELECT_TOKENS: &str = "SELECT id, platform_name, platform_shop_id, domain, encrypted_token, \
     encryption_key_id, token_type, expires_at, scopes FROM platform_tokens \
     WHERE merchant_id = $1 AND ($2 IS NULL OR platform_name = $2) ORDER BY platform_name";

/// The merchant's tokens, optionally only one platform's.
pub async fn find_tokens(
    tx: &mut Tx,
    merchant_id: &str,
    platform: Option<&str>,
) -> Result<Vec<StoredToken>, StoreError> {
    on_conn!(tx, conn => {
        let rows = sqlx::query(SELECT_TOKENS)
            .bind(merchant_id)
            .bind(platform)
            .fetch_all(&mut *conn)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredToken {
                    id: row.try_get("id")?,
                    platform_name: row.try_get("platform_name")?,
                    platform_shop_id: row.try_get("platform_shop_id")?,
                    domain: row.try_get("domain")?,
                    encrypted_token: row.try_get("encrypted_token")?,
                    encryption_key_id: row.try_get("encryption_key_id")?,
                    token_type: row.try_get("token_type")?,
                    expires_at: row.try_get("expires_at")?,
                    scopes: row.try_get("scopes")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    })
}

/// Replaces the row of (merchant, platform) if `token.domain` owns it; its id if it did.
pub async fn update_owned(tx: &mut Tx, token: &NewToken<'_>) -> Result<Option<Uuid>, StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET platform_shop_id = $1, encrypted_token = $2, \
         encryption_key_id = $3, token_type = $4, expires_at = $5, scopes = $6, updated_at = $7 \
         WHERE merchant_id = $8 AND platform_name = $9 AND domain = $10 RETURNING id";
    on_conn!(tx, conn => Ok(sqlx::query_scalar(SQL)
        .bind(token.platform_shop_id)
        .bind(token.encrypted_token)
        .bind(token.encryption_key_id)
        .bind(token.token_type)
        .bind(token.expires_at)
        .bind(token.scopes)
        .bind(token.now)
        .bind(token.merchant_id)
        .bind(token.platform_name)
        .bind(token.domain)
        .fetch_optional(&mut *conn)
        .await?))
}

/// Inserts a new row unless (merchant, platform) already exists; its id if it inserted.
pub async fn insert_new(
    tx: &mut Tx,
    id: Uuid,
    token: &NewToken<'_>,
) -> Result<Option<Uuid>, StoreError> {
    const SQL: &str = "INSERT INTO platform_tokens (id, merchant_id, platform_name, \
         platform_shop_id, domain, encrypted_token, encryption_key_id, token_type, expires_at, \
         scopes, access_count, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $11) \
         ON CONFLICT (merchant_id, platform_name) DO NOTHING RETURNING id";
    on_conn!(tx, conn => Ok(sqlx::query_scalar(SQL)
        .bind(id)
        .bind(token.merchant_id)
        .bind(token.platform_name)
        .bind(token.platform_shop_id)
        .bind(token.domain)
        .bind(token.encrypted_token)
        .bind(token.encryption_key_id)
        .bind(token.token_type)
        .bind(token.expires_at)
        .bind(token.scopes)
        .bind(token.now)
        .fetch_optional(&mut *conn)
        .await?))
}

/// The id and owning domain of (merchant, platform), whoever owns it.
pub async fn find_owner(
    tx: &mut Tx,
    merchant_id: &str,
    platform_name: &str,
) -> Result<Option<(Uuid, String)>, StoreError> {
    const SQL: &str =
        "SELECT id, domain FROM platform_tokens WHERE merchant_id = $1 AND platform_name = $2";
    on_conn!(tx, conn => Ok(sqlx::query_as(SQL)
        .bind(merchant_id)
        .bind(platform_name)
        .fetch_optional(&mut *conn)
        .await?))
}

/// Deletes (merchant, platform) if `domain` owns it; the deleted row's id.
pub async fn delete_owned(
    tx: &mut Tx,
    merchant_id: &str,
    platform_name: &str,
    domain: &str,
) -> Result<Option<Uuid>, StoreError> {
    const SQL: &str = "DELETE FROM platform_tokens \
         WHERE merchant_id = $1 AND platform_name = $2 AND domain = $3 RETURNING id";
    on_conn!(tx, conn => Ok(sqlx::query_scalar(SQL)
        .bind(merchant_id)
        .bind(platform_name)
        .bind(domain)
        .fetch_optional(&mut *conn)
        .await?))
}

/// Counts a successful read of the token by `service`.
pub async fn record_read(
    tx: &mut Tx,
    id: Uuid,
    service: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET access_count = access_count + 1, \
         last_accessed_by = $1, last_accessed_at = $2 WHERE id = $3";
    on_conn!(tx, conn => {
        sqlx::query(SQL).bind(service).bind(at).bind(id).execute(&mut *conn).await?;
        Ok(())
    })
}
