//! Queries of `token-service rewrap`: find rows whose ciphertext is not in the current
//! format, and replace a ciphertext only if nobody changed it meanwhile.
//!
//! "Current" is decided by the ciphertext's prefix (`tse1.<primary key id>.`), not by the
//! `encryption_key_id` column: a legacy row can carry the primary key's id.

use sqlx::Row;
use uuid::Uuid;

use super::{on_conn, StoreError, Tx};

/// A row's identity and ciphertext, as rewrap needs them.
pub struct CiphertextRow {
    pub id: Uuid,
    pub merchant_id: String,
    pub platform_name: String,
    pub encryption_key_id: String,
    pub encrypted_token: String,
}

/// A row named in a report: never its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    pub id: Uuid,
    pub merchant_id: String,
    pub platform_name: String,
    pub encryption_key_id: String,
}

const COLUMNS: &str = "id, merchant_id, platform_name, encryption_key_id, encrypted_token";

/// The first `limit` rows, in id order, after `after` (from the start when `None`) whose
/// ciphertext does not start with `current_prefix`. Paging by id keeps every page an index
/// range scan, so a pass over the table is linear.
pub async fn find_not_current(
    tx: &mut Tx,
    current_prefix: &str,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<CiphertextRow>, StoreError> {
    let filter = "substr(encrypted_token, 1, $1) <> $2";
    let sql = match after {
        None => {
            format!("SELECT {COLUMNS} FROM platform_tokens WHERE {filter} ORDER BY id LIMIT $3")
        }
        Some(_) => format!(
            "SELECT {COLUMNS} FROM platform_tokens WHERE {filter} AND id > $4 ORDER BY id LIMIT $3"
        ),
    };
    on_conn!(tx, conn => {
        let mut query = sqlx::query(&sql)
            .bind(prefix_len(current_prefix))
            .bind(current_prefix)
            .bind(i64::from(limit));
        if let Some(after) = after {
            query = query.bind(after);
        }
        let rows = query.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|row| {
                Ok(CiphertextRow {
                    id: row.try_get("id")?,
                    merchant_id: row.try_get("merchant_id")?,
                    platform_name: row.try_get("platform_name")?,
                    encryption_key_id: row.try_get("encryption_key_id")?,
                    encrypted_token: row.try_get("encrypted_token")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    })
}

/// How many rows are not in the current format.
pub async fn count_not_current(tx: &mut Tx, current_prefix: &str) -> Result<u64, StoreError> {
    const SQL: &str =
        "SELECT count(*) FROM platform_tokens WHERE substr(encrypted_token, 1, $1) <> $2";
    on_conn!(tx, conn => {
        let count: i64 = sqlx::query_scalar(SQL)
            .bind(prefix_len(current_prefix))
            .bind(current_prefix)
            .fetch_one(&mut *conn)
            .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    })
}

/// Up to `limit` of the rows not in the current format, for the final report.
pub async fn list_not_current(
    tx: &mut Tx,
    current_prefix: &str,
    limit: u32,
) -> Result<Vec<RowRef>, StoreError> {
    Ok(find_not_current(tx, current_prefix, None, limit)
        .await?
        .into_iter()
        .map(|row| RowRef {
            id: row.id,
            merchant_id: row.merchant_id,
            platform_name: row.platform_name,
            encryption_key_id: row.encryption_key_id,
        })
        .collect())
}

/// Replaces the ciphertext of row `id` if it still is `old` (compare-and-swap). Returns
/// whether it did: `false` means the row was rewritten or deleted since it was read, and
/// the newer data stays.
pub async fn replace_ciphertext(
    tx: &mut Tx,
    id: Uuid,
    old: &str,
    new: &str,
    new_key_id: &str,
) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE platform_tokens SET encrypted_token = $1, encryption_key_id = $2 \
         WHERE id = $3 AND encrypted_token = $4";
    on_conn!(tx, conn => {
        let done = sqlx::query(SQL)
            .bind(new)
            .bind(new_key_id)
            .bind(id)
            .bind(old)
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    })
}

/// The prefix's length in characters, as SQL's `substr` counts (PostgreSQL wants an int4).
fn prefix_len(prefix: &str) -> i32 {
    i32::try_from(prefix.chars().count()).expect("a key id is at most 64 characters")
}
