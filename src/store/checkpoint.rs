//! SQLite WAL checkpoints on their own connection.
//!
//! Left to itself SQLite checkpoints in the connection that commits, once the WAL holds
//! 1,000 pages: every few hundred group commits one of them also writes those pages into the
//! database file and syncs it, and every request waiting for that writer waits too. The
//! service turns that off and runs this task instead: passive checkpoints copy pages while
//! the writer goes on appending to the WAL. Under sustained load a passive checkpoint may
//! never catch up completely, so past [`RESTART_ABOVE`] frames one checkpoint waits for the
//! writer and lets the WAL start over.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::watch;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(250);

/// WAL frames (pages, 4 KiB each by default) above which a checkpoint restarts the WAL.
const RESTART_ABOVE: i64 = 16_384;

pub(super) async fn run(options: SqliteConnectOptions, mut stop: watch::Receiver<bool>) {
    let mut conn = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = stop.wait_for(|stopped| *stopped) => break,
        }
        match checkpoint(&options, &mut conn).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints succeed again");
            }
            Ok(()) => {}
            Err(error) => {
                // A broken connection is opened anew next time.
                conn = None;
                if !failing {
                    failing = true;
                    tracing::warn!(%error, "WAL checkpoint failed; retrying in the background");
                }
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

async fn checkpoint(
    options: &SqliteConnectOptions,
    conn: &mut Option<SqliteConnection>,
) -> Result<(), sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(options.connect().await?),
    };
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await?;
    if frames > RESTART_ABOVE {
        sqlx::query("PRAGMA wal_checkpoint(RESTART)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
