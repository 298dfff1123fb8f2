//! Group commit: many concurrent operations share one transaction and one commit.
//!
//! Every read is also a write (audit row and counters), so throughput is bounded by how many
//! commits the engine can make. Writers take every job waiting in the queue, run them in
//! one transaction, commit once, and only then answer each of them: a 2xx still means the
//! operation and its audit are durable. If anything in a batch fails, the batch is rolled
//! back and its jobs are re-run one per transaction, so one bad job cannot sink the rest.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use super::ops::{self, Outcome};
use super::{Job, ReadCommand, VaultError};
use crate::crypto::Keyring;
use crate::metrics::Metrics;
use crate::store::{Db, StoreError, Tx, FAILED_AUDIT_WRITES};

/// How the writers work: how many, and how many jobs one transaction may take.
#[derive(Debug, Clone, Copy)]
pub struct CommitSettings {
    /// Concurrent writers on PostgreSQL (SQLite always has one).
    pub writers: usize,
    /// Most jobs one transaction takes; bounds the latency a batch adds to its first job.
    /// 1 commits every operation on its own (the naive design, for comparison).
    pub max_batch: usize,
}
/// Jobs that may wait for a writer before callers are slowed down.
pub(super) const QUEUE_DEPTH: usize = 4096;

/// The running writers. Dropping every [`super::Vault`] lets them drain the queue and stop.
pub struct Committer {
    writers: JoinSet<()>,
}

impl Committer {
    pub(super) fn start(
        db: Db,
        keyring: Arc<Keyring>,
        settings: CommitSettings,
        metrics: &Metrics,
    ) -> (mpsc::Sender<Job>, Self) {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut set = JoinSet::new();
        for _ in 0..db.writer_count(settings.writers) {
            let writer = write_loop(
                db.clone(),
                keyring.clone(),
                receiver.clone(),
                metrics.clone(),
                settings.max_batch.max(1),
            );
            set.spawn(FAILED_AUDIT_WRITES.scope(metrics.audit_write_failures(), writer));
        }
        (sender, Self { writers: set })
    }

    /// Waits until every queued job has been answered and the writers have stopped.
    pub async fn finish(mut self) {
        while self.writers.join_next().await.is_some() {}
    }
}

async fn write_loop(
    db: Db,
    keyring: Arc<Keyring>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    metrics: Metrics,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, max_batch).await == 0 {
                return;
            }
        }
        let (jobs, started) = (batch.len(), Instant::now());
        run_batch(&db, &keyring, std::mem::take(&mut batch)).await;
        metrics.batch(jobs, started.elapsed());
    }
}

async fn run_batch(db: &Db, keyring: &Keyring, jobs: Vec<Job>) {
    match run_in_one_transaction(db, keyring, &jobs).await {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                job.reply(Ok(outcome));
            }
        }
        Err(StoreError::Unavailable(e)) => {
            tracing::error!(error = %e, jobs = jobs.len(), "database unavailable");
            let reason = Arc::new(e);
            for job in jobs {
                let err = anyhow::anyhow!("database unavailable: {reason}");
                job.reply(Err(VaultError::Unavailable(err)));
            }
        }
        Err(e) if jobs.len() == 1 => {
            // Retry a lone job once if it lost a race; otherwise report it.
            let job = jobs.into_iter().next().expect("one job");
            let result = match e {
                StoreError::Conflict(_) => run_alone(db, keyring, &job).await,
                other => Err(other.into()),
            };
            job.reply(result);
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = jobs.len(), "batch failed; re-running its jobs one by one");
            for job in jobs {
                let result = run_alone(db, keyring, &job).await;
                job.reply(result);
            }
        }
    }
}

async fn run_alone(db: &Db, keyring: &Keyring, job: &Job) -> Result<Outcome, VaultError> {
    let mut outcome = run_in_one_transaction(db, keyring, std::slice::from_ref(job)).await;
    if let Err(StoreError::Conflict(_)) = outcome {
        outcome = run_in_one_transaction(db, keyring, std::slice::from_ref(job)).await;
    }
    outcome
        .map(|mut o| o.pop().expect("one outcome per job"))
        .map_err(VaultError::from)
}

async fn run_in_one_transaction(
    db: &Db,
    keyring: &Keyring,
    jobs: &[Job],
) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = db.begin().await?;
    match apply_all(&mut tx, keyring, jobs).await {
        Ok(outcomes) => {
            tx.commit().await?;
            Ok(outcomes)
        }
        Err(e) => {
            // Best effort: a broken connection rolls back by itself.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// Runs the batch's reads together first, then every other job in queue order. Every job
/// in a batch was waiting at the same time, so any order is one its callers could have seen.
async fn apply_all(
    tx: &mut Tx,
    keyring: &Keyring,
    jobs: &[Job],
) -> Result<Vec<Outcome>, StoreError> {
    let reads: Vec<&ReadCommand> = jobs
        .iter()
        .filter_map(|job| match job {
            Job::Read(command, _) => Some(command),
            _ => None,
        })
        .collect();
    let mut read_outcomes = if reads.is_empty() {
        Vec::new()
    } else {
        ops::read_tokens(tx, keyring, &reads).await?
    }
    .into_iter();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome = match job {
            Job::Read(..) => Outcome::Read(read_outcomes.next().expect("one outcome per read")),
            other => ops::apply(tx, keyring, other).await?,
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
