//! The transactional outbox: `event_outbox`.
//!
//! The vault inserts an event in the same transaction as the change it announces; the relay
//! claims pending events in sequence order, publishes them, and marks them published. On
//! PostgreSQL a claim holds a transaction-scoped advisory lock (one relay publishes at a time,
//! so replicas keep the order) and row locks (`FOR UPDATE SKIP LOCKED`: a row is never in two
//! claims). SQLite serves one process with one relay, so a claim is a plain read.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{on_conn, Db, StoreError, Tx};

/// Advisory lock key held by the PostgreSQL relay that is publishing ("tsoutbox" in ASCII).
const RELAY_LOCK_KEY: i64 = 0x7473_6f75_7462_6f78;

/// An event to write next to the change it announces.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub event_id: Uuid,
    /// Without the deployment's subject prefix.
    pub subject: &'a str,
    /// The JSON envelope, published byte for byte.
    pub payload: &'a str,
    pub created_at: DateTime<Utc>,
}

/// An event waiting to be published.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: Uuid,
    pub subject: String,
    pub payload: String,
}

/// How far the relay is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Queues an event in the caller's transaction: it commits, or vanishes, with the change.
pub async fn insert_event(tx: &mut Tx, event: &NewEvent<'_>) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO event_outbox (event_id, subject, payload, created_at) \
         VALUES ($1, $2, $3, $4)";
    on_conn!(tx, conn => {
        sqlx::query(SQL)
            .bind(event.event_id)
            .bind(event.subject)
            .bind(event.payload)
            .bind(event.created_at)
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

/// Pending events reserved for one relay step, oldest first.
///
/// On PostgreSQL the claim keeps its transaction (and so its locks) open until
/// [`Claim::finish`]; dropping it unfinished rolls back and releases everything.
pub struct Claim {
    tx: Option<Tx>,
    events: Vec<PendingEvent>,
}

impl Claim {
    pub fn events(&self) -> &[PendingEvent] {
        &self.events
    }

    /// Marks the events with these sequence numbers published and releases the claim.
    pub async fn finish(
        self,
        db: &Db,
        published: &[i64],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE event_outbox SET published_at = $1 WHERE seq = $2";
        let mut tx = match self.tx {
            Some(tx) => tx,
            None if published.is_empty() => return Ok(()),
            None => db.begin().await?,
        };
        for seq in published {
            on_conn!(&mut tx, conn => {
                sqlx::query(SQL).bind(at).bind(*seq).execute(&mut *conn).await?;
            });
        }
        tx.commit().await
    }
}

/// Claims up to `limit` pending events in sequence order; `None` while another relay (another
/// replica) holds the PostgreSQL claim.
pub async fn claim_pending(db: &Db, limit: i64) -> Result<Option<Claim>, StoreError> {
    const PENDING: &str = "SELECT seq, event_id, subject, payload FROM event_outbox \
         WHERE published_at IS NULL ORDER BY seq LIMIT $1";
    let mut tx = db.begin().await?;
    let rows: Vec<(i64, Uuid, String, String)> = match &mut tx {
        Tx::Postgres(t) => {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut **t)
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(None);
            }
            sqlx::query_as(&format!("{PENDING} FOR UPDATE SKIP LOCKED"))
                .bind(limit)
                .fetch_all(&mut **t)
                .await?
        }
        Tx::Sqlite(t) => {
            sqlx::query_as(PENDING)
                .bind(limit)
                .fetch_all(&mut **t)
                .await?
        }
    };
    let events = rows
        .into_iter()
        .map(|(seq, event_id, subject, payload)| PendingEvent {
            seq,
            event_id,
            subject,
            payload,
        })
        .collect();
    let tx = match tx {
        tx @ Tx::Postgres(_) => Some(tx),
        // A read transaction held across publishing would block SQLite's single writer, or
        // fail to upgrade later; the claim is only a snapshot there.
        tx @ Tx::Sqlite(_) => {
            tx.rollback().await?;
            None
        }
    };
    Ok(Some(Claim { tx, events }))
}

/// Deletes up to `limit` events published before `cutoff`; how many it deleted.
pub async fn prune_published(
    tx: &mut Tx,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    // Timestamps are bound in the same encoding they were written in (RFC 3339 text in UTC on
    // SQLite), so the comparison is chronological on both engines.
    const SQL: &str = "DELETE FROM event_outbox WHERE seq IN (SELECT seq FROM event_outbox \
         WHERE published_at IS NOT NULL AND published_at < $1 ORDER BY seq LIMIT $2)";
    on_conn!(tx, conn => Ok(sqlx::query(SQL)
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *conn)
        .await?
        .rows_affected()))
}

/// How many events wait to be published, and since when.
pub async fn backlog(tx: &mut Tx) -> Result<Backlog, StoreError> {
    const COUNT: &str = "SELECT COUNT(*) FROM event_outbox WHERE published_at IS NULL";
    const OLDEST: &str = "SELECT created_at FROM event_outbox WHERE published_at IS NULL \
         ORDER BY seq LIMIT 1";
    on_conn!(tx, conn => {
        let pending: i64 = sqlx::query_scalar(COUNT).fetch_one(&mut *conn).await?;
        let oldest: Option<DateTime<Utc>> =
            sqlx::query_scalar(OLDEST).fetch_optional(&mut *conn).await?;
        Ok(Backlog { pending, oldest })
    })
}
