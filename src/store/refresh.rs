//! Queries behind token refresh: leases, outcomes and the background task's work list.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::tokens::{stored_token, TOKEN_COLUMNS};
use super::{on_conn, StoreError, StoredToken, Tx};

/// One row by id.
pub async fn find_token_by_id(tx: &mut Tx, id: Uuid) -> Result<Option<StoredToken>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM platform_tokens WHERE id = $1");
    on_conn!(tx, conn => {
        let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *conn).await?;
        row.map(|row| Ok::<_, sqlx::Error>(stored_token!(row)))
            .transpose()
            .map_err(StoreError::from)
    })
}

/// Takes the refresh lease unless another live owner holds it. True when taken.
pub async fn take_lease(
    tx: &mut Tx,
    id: Uuid,
    owner: &str,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    const SQL: &str =
        "UPDATE platform_tokens SET refresh_lease_owner = $1, refresh_lease_until = $2 \
         WHERE id = $3 AND (refresh_lease_until IS NULL OR refresh_lease_until < $4 \
         OR refresh_lease_owner = $1)";
    on_conn!(tx, conn => {
        let done = sqlx::query(SQL).bind(owner).bind(until).bind(id).bind(now)
            .execute(&mut *conn).await?;
        Ok(done.rows_affected() == 1)
    })
}

/// The refreshed credential, written only if the row still holds the ciphertext the refresh
/// started from (a newer credential stored meanwhile wins). True when written.
pub struct Refreshed<'a> {
    pub id: Uuid,
    pub owner: &'a str,
    pub previous_ciphertext: &'a str,
    pub encrypted_token: &'a str,
    pub encryption_key_id: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

pub async fn save_refreshed(tx: &mut Tx, r: &Refreshed<'_>) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET encrypted_token = $1, encryption_key_id = $2, \
         expires_at = $3, updated_at = $4, refreshable = $8, refresh_state = NULL, \
         refresh_failures = 0, next_refresh_at = NULL, refresh_error = NULL, \
         refresh_lease_owner = NULL, refresh_lease_until = NULL \
         WHERE id = $5 AND encrypted_token = $6 AND refresh_lease_owner = $7";
    on_conn!(tx, conn => {
        let done = sqlx::query(SQL)
            .bind(r.encrypted_token)
            .bind(r.encryption_key_id)
            .bind(r.expires_at)
            .bind(r.now)
            .bind(r.id)
            .bind(r.previous_ciphertext)
            .bind(r.owner)
            .bind(true)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Records a failed attempt: `reauth` stops further attempts, otherwise `next_attempt_at`
/// schedules the next one. Releases the lease.
pub async fn save_refresh_failure(
    tx: &mut Tx,
    id: Uuid,
    owner: &str,
    error_code: &str,
    reauth: bool,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET refresh_failures = refresh_failures + 1, \
         refresh_error = $1, next_refresh_at = $2, \
         refresh_state = CASE WHEN $3 THEN 'reauth_required' ELSE refresh_state END, \
         refresh_lease_owner = NULL, refresh_lease_until = NULL \
         WHERE id = $4 AND refresh_lease_owner = $5";
    on_conn!(tx, conn => {
        sqlx::query(SQL).bind(error_code).bind(next_attempt_at).bind(reauth).bind(id).bind(owner)
            .execute(&mut *conn).await?;
        Ok(())
    })
}

/// Gives the lease back without changing anything else.
pub async fn release_lease(tx: &mut Tx, id: Uuid, owner: &str) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET refresh_lease_owner = NULL, \
         refresh_lease_until = NULL WHERE id = $1 AND refresh_lease_owner = $2";
    on_conn!(tx, conn => {
        sqlx::query(SQL).bind(id).bind(owner).execute(&mut *conn).await?;
        Ok(())
    })
}

/// Refreshable tokens of `platforms` expiring before `due`, not backing off, not leased:
/// the background task's work, soonest first.
pub async fn refresh_candidates(
    tx: &mut Tx,
    platforms: &[&str],
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    let mut ids = Vec::new();
    // One query per platform keeps the SQL identical on both engines (no array binds).
    for platform in platforms {
        const SQL: &str = "SELECT id FROM platform_tokens WHERE refreshable = $1 \
             AND platform_name = $2 AND refresh_state IS NULL AND expires_at <= $3 \
             AND (next_refresh_at IS NULL OR next_refresh_at <= $4) \
             AND (refresh_lease_until IS NULL OR refresh_lease_until < $4) \
             ORDER BY expires_at LIMIT $5";
        let found: Vec<Uuid> = on_conn!(tx, conn => sqlx::query_scalar(SQL)
            .bind(true)
            .bind(*platform)
            .bind(due)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?);
        ids.extend(found);
    }
    Ok(ids)
}

/// Shopify tokens without a refresh token (non-expiring offline tokens), after `after`.
pub async fn non_expiring_shopify_tokens(
    tx: &mut Tx,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    const SQL: &str = "SELECT id FROM platform_tokens WHERE platform_name = 'shopify' \
         AND refreshable = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3";
    on_conn!(tx, conn => Ok(sqlx::query_scalar(SQL)
        .bind(false)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?))
}
