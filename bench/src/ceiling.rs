//! The SQLite ceiling: the service's read transaction (select the token row, count the read,
//! insert the audit row, commit) run in-process on the same database file, calling the
//! engine directly, with the service's durability settings (WAL, synchronous=FULL) and no
//! HTTP, JSON, crypto or async driver in the way.
//!
//! SQLite has one writer, so a one-commit-per-read design gains nothing from more
//! connections (they only wait on the write lock, sleeping in the busy handler). The
//! generous version measured here shares one connection between all clients: at every
//! concurrency it is the best that one commit per read can do. `batch` > 1 puts that many
//! reads in each transaction, which bounds what group commit can reach.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::load::Window;
use crate::population::{self, Rng, FIRST_PLATFORM};
use crate::stats::{self, Summary};

// The statements the service runs for a read of one platform.
const SELECT: &str = "SELECT id, platform_name, platform_shop_id, domain, encrypted_token, \
     token_type, expires_at, scopes FROM platform_tokens \
     WHERE merchant_id = ?1 AND (?2 IS NULL OR platform_name = ?2) ORDER BY platform_name";
const COUNT_READ: &str = "UPDATE platform_tokens SET access_count = access_count + 1, \
     last_accessed_by = ?1, last_accessed_at = ?2 WHERE id = ?3";
const AUDIT: &str = "INSERT INTO token_access_logs (id, token_id, merchant_id, platform_name, \
     accessed_by, access_type, success, error_code, correlation_id, ip_address, accessed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "journal mode is {mode}, not WAL"
    );
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

/// `clients` threads sharing one connection, each running read transactions back to back.
pub fn run(
    conn: Arc<Mutex<Connection>>,
    merchants: usize,
    clients: usize,
    batch: usize,
    window: Window,
) -> anyhow::Result<Summary> {
    let begin = Instant::now();
    let measure_from = begin + window.warmup;
    let end = measure_from + window.duration;
    let threads: Vec<_> = (0..clients)
        .map(|id| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(population::mix(id as u64 + 7));
                let mut histogram = stats::histogram();
                let mut reads = 0u64;
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    {
                        let mut conn = conn.lock().expect("no client panicked");
                        read_transaction(&mut conn, &mut rng, merchants, batch)?;
                    }
                    let done = Instant::now();
                    if started >= measure_from && done <= end {
                        stats::record(&mut histogram, done - started);
                        reads += batch as u64;
                    }
                }
                anyhow::Ok((histogram, reads))
            })
        })
        .collect();
    let mut histogram = stats::histogram();
    let mut reads = 0;
    for thread in threads {
        let (h, n) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        histogram.add(&h)?;
        reads += n;
    }
    Ok(Summary::new(&histogram, reads, 0, window.duration))
}

fn read_transaction(
    conn: &mut Connection,
    rng: &mut Rng,
    merchants: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    let now = chrono::Utc::now().to_rfc3339();
    for _ in 0..batch {
        let merchant = population::merchant_id(rng.below(merchants));
        let row = tx
            .prepare_cached(SELECT)?
            .query_row(params![merchant, FIRST_PLATFORM], |row| {
                // Read the row as the service does, ciphertext included.
                let id: Vec<u8> = row.get(0)?;
                let _ciphertext: String = row.get(4)?;
                Ok(id)
            })
            .optional()?;
        let id = row.context("a seeded merchant has a shopify row")?;
        tx.prepare_cached(COUNT_READ)?
            .execute(params!["platform-connector", now, id])?;
        tx.prepare_cached(AUDIT)?.execute(params![
            Uuid::now_v7().as_bytes().as_slice(),
            id,
            merchant,
            FIRST_PLATFORM,
            "platform-connector",
            "read",
            true,
            None::<&str>,
            "corr_ceiling",
            "127.0.0.1",
            now,
        ])?;
    }
    tx.commit()?;
    Ok(())
}
