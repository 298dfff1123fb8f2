//! Persistence: one set of queries serving SQLite (embedded) and PostgreSQL (scale-out).
//!
//! The backend is chosen from the `DATABASE_URL` scheme. Queries are written once against
//! [`Tx`]; the [`on_conn!`] macro expands each of them for both drivers, so nothing above this
//! module knows which engine it talks to.

mod audit;
mod import;
mod legacy_source;
mod outbox;
pub mod refresh;
mod rewrap;
mod tokens;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sqlx::pool::{PoolConnectionMetadata, PoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqliteSynchronous,
};
use sqlx::{Connection, Executor, Postgres, Sqlite, Transaction};

pub use audit::{record_access, record_accesses, FAILED_AUDIT_WRITES};
pub use audit::{AccessRecord, AccessType};
pub use import::{
    has_audit_entry_by, insert_imported_access_logs, insert_imported_token, ImportedAccessLog,
    ImportedToken,
};
pub use legacy_source::{LegacyAccessLog, LegacySource, LegacyToken};
pub use outbox::{
    backlog, claim_pending, insert_event, prune_published, Backlog, Claim, NewEvent, PendingEvent,
};
pub use rewrap::{
    count_not_current, find_not_current, list_not_current, replace_ciphertext, CiphertextRow,
    RowRef,
};
pub use tokens::{
    delete_for_shop, delete_owned, find_owner, find_tokens, insert_new, record_reads, update_owned,
    CountedRead, DeletedToken, NewToken, RefreshColumns, StoredToken,
};

/// How long a request waits for a database connection before the database counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection. Multi-row statements come in power-of-two sizes
/// (see `tokens::statement_chunks`): about a dozen texts each, which must stay cached.
const STATEMENT_CACHE: usize = 200;

/// WAL pages after which the committing connection checkpoints (SQLite's default is 1,000).
/// Every read writes, at about three pages each, so the WAL fills fast: smaller, more
/// frequent checkpoints keep each one short. Measured at 6,000 reads/s open loop (half the
/// maximum) on the 2-core machine: p99 6.4 ms at 250 pages, 11.7 ms at 1,000, 19.8 ms at
/// 4,000; a background checkpointer on its own connection did worse (39 ms: a passive
/// checkpoint cannot catch up with a busy writer, and the blocking one it then needs stalls
/// the writer for seconds).
const WAL_AUTOCHECKPOINT_PAGES: &str = "250";

/// A connection pool to one of the two supported engines.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// An open transaction on either engine.
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection, whichever the engine.
macro_rules! on_conn {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::store::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_conn;

/// A database failure, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: retry later (503).
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A race with a concurrent writer (uniqueness, deadlock): the operation may be retried.
    #[error("concurrent write conflict")]
    Conflict(#[source] sqlx::Error),
    /// Anything else: a bug or a broken database (500).
    #[error("database error")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
                StoreError::Unavailable(err)
            }
            E::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Unique violations, serialization failures and deadlocks (class 40).
                if db.is_unique_violation() || code.starts_with("40") {
                    StoreError::Conflict(err)
                } else if is_unavailable_code(&code) {
                    StoreError::Unavailable(err)
                } else {
                    StoreError::Other(err)
                }
            }
            _ => StoreError::Other(err),
        }
    }
}

/// PostgreSQL connection, resource and shutdown classes; SQLite busy, locked, I/O, full,
/// read-only and cannot-open (primary result codes 5, 6, 10, 13, 8, 14).
fn is_unavailable_code(code: &str) -> bool {
    const PG_PREFIXES: [&str; 3] = ["08", "53", "57P"];
    const SQLITE_PRIMARY: [i64; 6] = [5, 6, 8, 10, 13, 14];
    if PG_PREFIXES.iter().any(|p| code.starts_with(p)) {
        return true;
    }
    code.parse::<i64>()
        .map(|c| SQLITE_PRIMARY.contains(&(c & 0xff)))
        .unwrap_or(false)
}

/// Refuses a new SQLite connection on a file it could only open read-only (SQLite falls back
/// to read-only when the file cannot be opened for writing, and such a connection would fail
/// every write long after the file is writable again).
fn refuse_read_only(
    conn: &mut SqliteConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(check_writable(conn))
}

/// A write in a transaction that is rolled back: it fails at once with `SQLITE_READONLY` on a
/// connection SQLite could only open read-only, and on a writable one stays in memory, so
/// nothing reaches the file.
async fn check_writable(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    conn.execute("BEGIN IMMEDIATE").await?;
    let write = conn
        .execute("CREATE TABLE connection_write_check (x)")
        .await;
    conn.execute("ROLLBACK").await?;
    write.map(drop)
}

/// Closes a SQLite connection that comes back to the pool still inside a transaction, instead
/// of reusing it. After a failed `COMMIT` (full disk, I/O error) SQLite has already rolled
/// the transaction back, so the driver's own `ROLLBACK` fails and the driver keeps counting
/// the transaction as open: every later `BEGIN` on that connection would fail, and the
/// service would not recover without a restart.
fn close_if_still_in_transaction(
    conn: &mut SqliteConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        // A committed transaction has left the count at 0, and a queued rollback can only
        // lower it: only a connection still counting one needs to wait for that rollback.
        if conn.is_in_transaction() {
            conn.ping().await?;
        }
        Ok(!conn.is_in_transaction())
    })
}

/// Pool sizing for [`Db::connect`].
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    pub max_connections: u32,
}

/// Connections of a pool: open (idle or in use), idle, and the most it may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

impl Db {
    /// Opens a pool for `url`. SQLite runs in WAL mode with `synchronous=FULL`, so a commit
    /// survives power loss; its file and directory are created on first use. A SQLite file
    /// that can only be opened read-only is refused, at start-up and on every new connection.
    pub async fn connect(url: &str, settings: PoolSettings) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parsing the SQLite DATABASE_URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
                .statement_cache_capacity(STATEMENT_CACHE);
            if let Some(dir) = options.get_filename().parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("creating the database directory {}", dir.display())
                    })?;
                }
            }
            // A file that cannot be written is a configuration error: say so now, rather than
            // let the pool retry until its timeout (the pool refuses such connections too).
            let path = options.get_filename().display().to_string();
            let mut conn = SqliteConnection::connect_with(&options)
                .await
                .with_context(|| format!("opening the SQLite database {path}"))?;
            let writable = check_writable(&mut conn).await;
            let _ = conn.close().await;
            writable.with_context(|| {
                format!(
                    "the SQLite database {path} cannot be written (is the file or its file \
                     system read-only?); the service writes on every operation"
                )
            })?;
            // One writer does all the work (SQLite has one writer anyway); one more
            // connection serves readiness checks and background tasks.
            let pool = PoolOptions::new()
                .max_connections(2)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .after_connect(refuse_read_only)
                .after_release(close_if_still_in_transaction)
                .connect_with(options)
                .await
                .context("opening the SQLite database")?;
            Ok(Db::Sqlite(pool))
        } else {
            let options = PgConnectOptions::from_str(url)
                .context("parsing the PostgreSQL DATABASE_URL")?
                .statement_cache_capacity(STATEMENT_CACHE);
            let pool = PoolOptions::new()
                .max_connections(settings.max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Db::Postgres(pool))
        }
    }

    /// Applies the versioned migrations of this engine that are not applied yet.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
        }
        .context("applying database migrations")
    }

    /// Whether the database can serve (readiness). On SQLite every operation writes (reads
    /// are audited), so a write must commit: a full disk or a read-only file is not ready.
    /// PostgreSQL must answer a trivial query.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(pool) => sqlx::query(
                "INSERT INTO readiness_probe (id, checked_at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(pool)
            .await
            .map(drop)?,
            Db::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    /// Starts a transaction. Not getting a connection at all means the database is down,
    /// whatever the driver's reason.
    ///
    /// On SQLite the write lock is taken at the start (`BEGIN IMMEDIATE`), waiting out the
    /// busy timeout: a transaction that reads first and writes later would otherwise fail at
    /// once with `SQLITE_BUSY` whenever another process (`rewrap`, `import-legacy`) committed
    /// in between.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Db::Sqlite(pool) => pool.begin_with("BEGIN IMMEDIATE").await.map(Tx::Sqlite),
            Db::Postgres(pool) => pool.begin().await.map(Tx::Postgres),
        }
        .map_err(StoreError::Unavailable)
    }

    /// Starts a transaction that only reads: on SQLite it takes no write lock, so it never
    /// waits for (or holds up) the group-commit writer; on PostgreSQL it is `READ ONLY`.
    pub async fn begin_read(&self) -> Result<Tx, StoreError> {
        match self {
            Db::Sqlite(pool) => pool.begin().await.map(Tx::Sqlite),
            Db::Postgres(pool) => pool.begin_with("BEGIN READ ONLY").await.map(Tx::Postgres),
        }
        .map_err(StoreError::Unavailable)
    }

    /// How many connections the pool holds, for `/metrics`.
    pub fn pool_usage(&self) -> PoolUsage {
        let (open, idle, max) = match self {
            Db::Sqlite(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
            Db::Postgres(pool) => (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            ),
        };
        PoolUsage {
            open,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }

    /// How many group-commit writers make sense: SQLite has a single writer.
    pub fn writer_count(&self, configured: usize) -> usize {
        match self {
            Db::Sqlite(_) => 1,
            Db::Postgres(_) => configured,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}
