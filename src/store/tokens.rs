//! Queries on `platform_tokens`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{on_conn, StoreError, Tx};

/// A credential row as stored: still encrypted.
#[derive(Debug)]
pub struct StoredToken {
    pub id: Uuid,
    pub merchant_id: String,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
    pub encrypted_token: String,
    /// Names the keyring secret of a legacy ciphertext (the envelope format names its own).
    pub encryption_key_id: String,
    pub token_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Option<String>,
    pub refresh: RefreshColumns,
}

/// The refresh bookkeeping of a row (see `crate::refresh`).
#[derive(Debug, Clone, Default)]
pub struct RefreshColumns {
    /// `token_data` holds a refresh token.
    pub refreshable: bool,
    /// `Some("reauth_required")` once the platform refused the refresh token.
    pub state: Option<String>,
    pub failures: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
}

/// The columns [`stored_token!`] reads.
pub(super) const TOKEN_COLUMNS: &str = "id, merchant_id, platform_name, platform_shop_id, domain, \
     encrypted_token, encryption_key_id, token_type, expires_at, scopes, refreshable, refresh_state, \
     refresh_failures, next_refresh_at, refresh_error, refresh_lease_owner, refresh_lease_until";

/// Maps a row selected with [`TOKEN_COLUMNS`], for either driver's row type.
macro_rules! stored_token {
    ($row:expr) => {
        $crate::store::StoredToken {
            id: $row.try_get("id")?,
            merchant_id: $row.try_get("merchant_id")?,
            platform_name: $row.try_get("platform_name")?,
            platform_shop_id: $row.try_get("platform_shop_id")?,
            domain: $row.try_get("domain")?,
            encrypted_token: $row.try_get("encrypted_token")?,
            encryption_key_id: $row.try_get("encryption_key_id")?,
            token_type: $row.try_get("token_type")?,
            expires_at: $row.try_get("expires_at")?,
            scopes: $row.try_get("scopes")?,
            refresh: $crate::store::RefreshColumns {
                refreshable: $row.try_get("refreshable")?,
                state: $row.try_get("refresh_state")?,
                failures: $row.try_get("refresh_failures")?,
                next_attempt_at: $row.try_get("next_refresh_at")?,
                last_error: $row.try_get("refresh_error")?,
                lease_owner: $row.try_get("refresh_lease_owner")?,
                lease_until: $row.try_get("refresh_lease_until")?,
            },
        }
    };
}
pub(super) use stored_token;

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
    pub refreshable: bool,
    pub now: DateTime<Utc>,
}

/// Most values bound in one statement: well inside SQLite's limit of 32,766 and
/// PostgreSQL's of 65,535.
pub(super) const MAX_BINDS: usize = 8_000;

/// Splits `items` into runs whose lengths are powers of two (at most `max_rows`, at least 1):
/// 13 rows go as 8 + 4 + 1. A multi-row statement's text depends on its number of rows, and
/// every distinct text is a prepared statement cached per connection; this keeps them to a
/// handful instead of one per batch size.
pub(super) fn statement_chunks<T>(items: &[T], max_rows: usize) -> impl Iterator<Item = &[T]> {
    let largest = 1usize << max_rows.max(1).ilog2();
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let take = largest.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        Some(chunk)
    })
}

/// Every token of these merchants (a statement per power-of-two run of them), ordered by
/// merchant, then platform.
pub async fn find_tokens(tx: &mut Tx, merchants: &[&str]) -> Result<Vec<StoredToken>, StoreError> {
    let (mut tokens, mut statements) = (Vec::new(), 0);
    for chunk in statement_chunks(merchants, MAX_BINDS) {
        statements += 1;
        on_conn!(tx, conn => {
            let mut query = sqlx::QueryBuilder::new(format!(
                "SELECT {TOKEN_COLUMNS} FROM platform_tokens WHERE merchant_id IN ("
            ));
            let mut list = query.separated(", ");
            for merchant in chunk {
                list.push_bind(*merchant);
            }
            query.push(") ORDER BY merchant_id, platform_name");
            for row in query.build().fetch_all(&mut *conn).await? {
                tokens.push(stored_token!(row));
            }
        });
    }
    if statements > 1 {
        // Each statement's rows came back ordered, but the merchants need not have been.
        tokens.sort_by(|a, b| {
            (&a.merchant_id, &a.platform_name).cmp(&(&b.merchant_id, &b.platform_name))
        });
    }
    Ok(tokens)
}

/// Binds a [`NewToken`] as `$1`…`$11`, the order both writes below use.
macro_rules! bind_new_token {
    ($query:expr, $token:expr) => {
        $query
            .bind($token.merchant_id)
            .bind($token.platform_name)
            .bind($token.platform_shop_id)
            .bind($token.domain)
            .bind($token.encrypted_token)
            .bind($token.encryption_key_id)
            .bind($token.token_type)
            .bind($token.expires_at)
            .bind($token.scopes)
            .bind($token.now)
            .bind($token.refreshable)
    };
}

/// Replaces the row of (merchant, platform) if `token.domain` owns it; its id if it did.
pub async fn update_owned(tx: &mut Tx, token: &NewToken<'_>) -> Result<Option<Uuid>, StoreError> {
    // A newly stored credential starts its refresh bookkeeping afresh.
    const SQL: &str = "UPDATE platform_tokens SET platform_shop_id = $3, encrypted_token = $5, \
         encryption_key_id = $6, token_type = $7, expires_at = $8, scopes = $9, updated_at = $10, \
         refreshable = $11, refresh_state = NULL, refresh_failures = 0, next_refresh_at = NULL, \
         refresh_error = NULL \
         WHERE merchant_id = $1 AND platform_name = $2 AND domain = $4 RETURNING id";
    on_conn!(tx, conn => Ok(bind_new_token!(sqlx::query_scalar(SQL), token)
        .fetch_optional(&mut *conn)
        .await?))
}

/// Inserts a new row unless (merchant, platform) already exists; its id if it inserted.
pub async fn insert_new(
    tx: &mut Tx,
    id: Uuid,
    token: &NewToken<'_>,
) -> Result<Option<Uuid>, StoreError> {
    const SQL: &str = "INSERT INTO platform_tokens (merchant_id, platform_name, \
         platform_shop_id, domain, encrypted_token, encryption_key_id, token_type, expires_at, \
         scopes, created_at, updated_at, refreshable, access_count, id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, 0, $12) \
         ON CONFLICT (merchant_id, platform_name) DO NOTHING RETURNING id";
    on_conn!(tx, conn => Ok(bind_new_token!(sqlx::query_scalar(SQL), token)
        .bind(id)
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

/// Deletes (merchant, platform) if `domain` owns it; the deleted row's id and platform_shop_id.
pub async fn delete_owned(
    tx: &mut Tx,
    merchant_id: &str,
    platform_name: &str,
    domain: &str,
) -> Result<Option<(Uuid, String)>, StoreError> {
    const SQL: &str = "DELETE FROM platform_tokens \
         WHERE merchant_id = $1 AND platform_name = $2 AND domain = $3 \
         RETURNING id, platform_shop_id";
    on_conn!(tx, conn => Ok(sqlx::query_as(SQL)
        .bind(merchant_id)
        .bind(platform_name)
        .bind(domain)
        .fetch_optional(&mut *conn)
        .await?))
}

/// A row removed because its shop uninstalled the app.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeletedToken {
    pub id: Uuid,
    pub merchant_id: String,
    pub platform_name: String,
    pub platform_shop_id: String,
    pub domain: String,
}

/// Deletes every token of the shop (`platform_name` + `platform_shop_id`, and `domain` when
/// given) last written before `written_before`; the deleted rows, by merchant.
pub async fn delete_for_shop(
    tx: &mut Tx,
    platform_name: &str,
    platform_shop_id: &str,
    domain: Option<&str>,
    written_before: DateTime<Utc>,
) -> Result<Vec<DeletedToken>, StoreError> {
    // On SQLite timestamps are RFC 3339 text in UTC, written and bound alike, so `<=` orders
    // them chronologically there too.
    const SQL: &str = "DELETE FROM platform_tokens WHERE platform_name = $1 \
         AND platform_shop_id = $2 AND ($3 IS NULL OR domain = $3) AND updated_at <= $4 \
         RETURNING id, merchant_id, platform_name, platform_shop_id, domain";
    on_conn!(tx, conn => {
        let mut rows: Vec<DeletedToken> = sqlx::query_as(SQL)
            .bind(platform_name)
            .bind(platform_shop_id)
            .bind(domain)
            .bind(written_before)
            .fetch_all(&mut *conn)
            .await?;
        rows.sort_by(|a, b| a.merchant_id.cmp(&b.merchant_id));
        Ok(rows)
    })
}

/// A successful read of a token by `service`, for its counters.
#[derive(Debug, Clone, Copy)]
pub struct CountedRead<'a> {
    pub token_id: Uuid,
    pub service: &'a str,
    pub at: DateTime<Utc>,
}

/// Counts successful reads (`access_count`, last reader and time), one statement per
/// [`MAX_BINDS`] rows. Reads of the same token add up; the last one names the reader.
pub async fn record_reads(tx: &mut Tx, reads: &[CountedRead<'_>]) -> Result<(), StoreError> {
    // By id, so that concurrent writers lock rows in the same order.
    let mut counted: BTreeMap<Uuid, (i64, &str, DateTime<Utc>)> = BTreeMap::new();
    for read in reads {
        let entry = counted
            .entry(read.token_id)
            .or_insert((0, read.service, read.at));
        *entry = (entry.0 + 1, read.service, read.at);
    }
    let counted: Vec<_> = counted.into_iter().collect();
    for chunk in statement_chunks(&counted, MAX_BINDS / 4) {
        on_conn!(tx, conn => {
            let mut query =
                sqlx::QueryBuilder::new("WITH counted (id, reads, reader, read_at) AS (");
            query.push_values(chunk, |mut row, (id, (reads, reader, at))| {
                row.push_bind(*id).push_bind(*reads).push_bind(*reader).push_bind(*at);
            });
            query.push(
                ") UPDATE platform_tokens SET access_count = access_count + counted.reads, \
                 last_accessed_by = counted.reader, last_accessed_at = counted.read_at \
                 FROM counted WHERE platform_tokens.id = counted.id",
            );
            query.build().execute(&mut *conn).await?;
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::statement_chunks;

    #[test]
    fn statement_chunks_are_powers_of_two_within_the_limit() {
        let items: Vec<u32> = (0..1000).collect();
        for (len, max, expected) in [
            (0, 16, vec![]),
            (1, 16, vec![1]),
            (13, 16, vec![8, 4, 1]),
            (16, 16, vec![16]),
            (40, 16, vec![16, 16, 8]),
            (1000, 727, vec![512, 256, 128, 64, 32, 8]),
            (3, 1, vec![1, 1, 1]),
        ] {
            let sizes: Vec<usize> = statement_chunks(&items[..len], max)
                .map(<[u32]>::len)
                .collect();
            assert_eq!(sizes, expected, "{len} rows, at most {max}");
            let joined: Vec<u32> = statement_chunks(&items[..len], max)
                .flatten()
                .copied()
                .collect();
            assert_eq!(joined, items[..len], "every row once, in order");
        }
    }
}
