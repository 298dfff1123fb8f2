//! Writes of `token-service import-legacy`: rows copied with their original ids, counters
//! and timestamps, never over anything already there.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{on_conn, AccessType, StoreError, Tx};

/// A token row to import, already re-encrypted in the current format.
pub struct ImportedToken<'a> {
    pub id: Uuid,
    pub merchant_id: &'a str,
    pub platform_name: &'a str,
    pub platform_shop_id: &'a str,
    pub domain: &'a str,
    pub encrypted_token: &'a str,
    pub encryption_key_id: &'a str,
    pub token_type: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<&'a str>,
    pub last_accessed_by: Option<&'a str>,
    pub last_accessed_at: Option<DateTime<Utc>>,
    pub access_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An audit row to import with its original id and time.
pub struct ImportedAccessLog<'a> {
    pub id: Uuid,
    pub token_id: Uuid,
    pub merchant_id: &'a str,
    pub platform_name: Option<&'a str>,
    pub accessed_by: &'a str,
    pub access_type: AccessType,
    pub success: bool,
    pub error_code: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub ip_address: Option<&'a str>,
    pub accessed_at: DateTime<Utc>,
}

/// Inserts the row unless its id or its (merchant, platform) is already taken; whether it did.
pub async fn insert_imported_token(
    tx: &mut Tx,
    token: &ImportedToken<'_>,
) -> Result<bool, StoreError> {
    const SQL: &str = "INSERT INTO platform_tokens (id, merchant_id, platform_name, \
         platform_shop_id, domain, encrypted_token, encryption_key_id, token_type, expires_at, \
         scopes, last_accessed_by, last_accessed_at, access_count, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         ON CONFLICT DO NOTHING";
    on_conn!(tx, conn => {
        let done = sqlx::query(SQL)
            .bind(token.id)
            .bind(token.merchant_id)
            .bind(token.platform_name)
            .bind(token.platform_shop_id)
            .bind(token.domain)
            .bind(token.encrypted_token)
            .bind(token.encryption_key_id)
            .bind(token.token_type)
            .bind(token.expires_at)
            .bind(token.scopes)
            .bind(token.last_accessed_by)
            .bind(token.last_accessed_at)
            .bind(token.access_count)
            .bind(token.created_at)
            .bind(token.updated_at)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// Whether `token_id` has an audit entry by `actor`: how import knows a token was imported
/// by an earlier run, even if it has been deleted since (so it is not brought back).
pub async fn has_audit_entry_by(
    tx: &mut Tx,
    token_id: Uuid,
    actor: &str,
) -> Result<bool, StoreError> {
    // `accessed_by || ''` keeps SQLite off the accessed_by index, which matches every row
    // this command writes and would make each lookup a scan of them; token_id is selective.
    const SQL: &str = "SELECT count(*) FROM token_access_logs \
         WHERE token_id = $1 AND accessed_by || '' = $2";
    on_conn!(tx, conn => {
        let n: i64 = sqlx::query_scalar(SQL)
            .bind(token_id)
            .bind(actor)
            .fetch_one(&mut *conn)
            .await?;
        Ok(n > 0)
    })
}

/// Inserts the audit rows whose ids are not there yet, many per statement (logs usually
/// outnumber tokens by far); how many it inserted.
pub async fn insert_imported_access_logs(
    tx: &mut Tx,
    logs: &[ImportedAccessLog<'_>],
) -> Result<u64, StoreError> {
    const COLUMNS: usize = 11;
    // SQLite allows 32,766 bound values per statement, PostgreSQL 65,535.
    const ROWS_PER_STATEMENT: usize = 1000;
    let mut inserted = 0;
    for chunk in logs.chunks(ROWS_PER_STATEMENT) {
        let values = (0..chunk.len())
            .map(|row| {
                let params = (1..=COLUMNS)
                    .map(|col| format!("${}", row * COLUMNS + col))
                    .collect::<Vec<_>>();
                format!("({})", params.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO token_access_logs (id, token_id, merchant_id, platform_name, \
             accessed_by, access_type, success, error_code, correlation_id, ip_address, \
             accessed_at) VALUES {values} ON CONFLICT (id) DO NOTHING"
        );
        inserted += on_conn!(tx, conn => {
            let mut query = sqlx::query(&sql);
            for log in chunk {
                query = query
                    .bind(log.id)
                    .bind(log.token_id)
                    .bind(log.merchant_id)
                    .bind(log.platform_name)
                    .bind(log.accessed_by)
                    .bind(log.access_type.as_str())
                    .bind(log.success)
                    .bind(log.error_code)
                    .bind(log.correlation_id)
                    .bind(log.ip_address)
                    .bind(log.accessed_at);
            }
            query.execute(&mut *conn).await?.rows_affected()
        });
    }
    Ok(inserted)
}
