//! Rewrap: re-encrypt every row that is not in the current format under the primary key.
//!
//! Safe while the service runs. Each batch is read, then decrypted and re-sealed outside
//! any transaction; then one short transaction replaces each ciphertext only if it is still
//! the one that was read (compare-and-swap) and writes the row's audit entry. A row
//! stored or deleted meanwhile keeps the newer data. Nothing is remembered between runs:
//! a killed run leaves converted rows converted, and the next run finds what is left.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::{row_failure, RowFailure};
use crate::crypto::{Keyring, RowIdentity, StoredFormat};
use crate::store::{self, AccessRecord, AccessType, CiphertextRow, Db, RowRef, StoreError, Tx};

/// The `accessed_by` of rewrap's audit entries.
pub const ACTOR: &str = "cli:rewrap";
/// Rows listed in the final report at most; the count is always complete.
const LISTED_AT_MOST: u32 = 1000;
/// Attempts at a batch's transaction that lost a race (deadlock, serialization).
const ATTEMPTS: usize = 3;

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct RewrapOptions {
    /// Rows read, converted and committed together.
    pub batch_size: u32,
    /// Only count and check what would be converted; write nothing.
    pub dry_run: bool,
    /// Rest between batches, leaving the database to the service.
    pub pause: Duration,
}

/// What a run did. Rows are named by id, merchant and platform only.
#[derive(Debug, Default)]
pub struct RewrapReport {
    /// The correlation id of this run's audit entries.
    pub run_id: String,
    /// Rows found not in the current format, by what they were: `legacy` or `key <id>`.
    pub found_by_source: BTreeMap<String, u64>,
    /// Rows re-encrypted under the primary key (that would be, in a dry run).
    pub rewrapped: u64,
    /// Rows stored or deleted by someone else between read and write; their newer data stays.
    pub changed_concurrently: u64,
    /// Rows that could not be decrypted, with the reason.
    pub failed: Vec<RowFailure>,
    /// After the run: how many rows are still not in the current format, and (some of) which.
    pub remaining: u64,
    pub remaining_rows: Vec<RowRef>,
}

/// One batch, read and re-sealed but not yet written.
pub struct PreparedBatch {
    converted: Vec<(CiphertextRow, String)>,
    failed: Vec<(Uuid, RowFailure)>,
    sources: Vec<String>,
}

impl PreparedBatch {
    /// Rows in the batch, converted or not: what progress counts.
    pub fn len(&self) -> usize {
        self.converted.len() + self.failed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What writing one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub rewrapped: u64,
    pub changed_concurrently: u64,
}

/// Walks the table once in id order. Tests drive it batch by batch; [`run`] loops it.
pub struct Rewrapper<'a> {
    db: &'a Db,
    keyring: &'a Keyring,
    prefix: String,
    batch_size: u32,
    cursor: Option<Uuid>,
    /// Ties this run's audit entries together.
    pub run_id: String,
}

impl<'a> Rewrapper<'a> {
    pub fn new(db: &'a Db, keyring: &'a Keyring, batch_size: u32) -> Self {
        Self {
            db,
            keyring,
            prefix: keyring.current_prefix(),
            batch_size: batch_size.max(1),
            cursor: None,
            run_id: format!("rewrap_{}", &Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    /// Reads the next batch and re-seals it in memory; `None` once the table is done.
    /// Plaintexts live only inside this call, in zeroizing buffers.
    pub async fn prepare_next(&mut self) -> Result<Option<PreparedBatch>, StoreError> {
        let mut tx = self.db.begin().await?;
        let rows =
            store::find_not_current(&mut tx, &self.prefix, self.cursor, self.batch_size).await;
        finish_read(tx).await;
        let rows = rows?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        self.cursor = Some(last.id);

        let mut batch = PreparedBatch {
            converted: Vec::with_capacity(rows.len()),
            failed: Vec::new(),
            sources: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            batch
                .sources
                .push(match self.keyring.format_of(&row.encrypted_token) {
                    StoredFormat::Legacy => "legacy".to_owned(),
                    _ => format!("key {}", envelope_key_id(&row.encrypted_token)),
                });
            let identity = RowIdentity {
                merchant_id: &row.merchant_id,
                platform_name: &row.platform_name,
            };
            match self
                .keyring
                .open_stored(identity, &row.encryption_key_id, &row.encrypted_token)
            {
                Ok(plaintext) => {
                    let (sealed, _) = self.keyring.seal(identity, &plaintext);
                    batch.converted.push((row, sealed));
                }
                Err(e) => batch.failed.push((
                    row.id,
                    row_failure(
                        row.id,
                        &row.merchant_id,
                        &row.platform_name,
                        super::decrypt_error_code(&e),
                    ),
                )),
            }
        }
        Ok(Some(batch))
    }

    /// Writes a prepared batch: each ciphertext replaced only if unchanged since it was read,
    /// each attempt audited, all in one transaction.
    pub async fn apply(&self, batch: &PreparedBatch) -> Result<BatchOutcome, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.db.begin().await?;
            match self.write_batch(&mut tx, batch).await {
                Ok(outcome) => match tx.commit().await {
                    Ok(()) => return Ok(outcome),
                    Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => {}
                    Err(e) => return Err(e),
                },
                Err(StoreError::Conflict(_)) if attempt < ATTEMPTS => {
                    let _ = tx.rollback().await;
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
            tracing::warn!(
                attempt,
                "rewrap batch lost a race with a concurrent writer; retrying"
            );
            tokio::time::sleep(Duration::from_millis(20 * attempt as u64)).await;
        }
    }

    async fn write_batch(
        &self,
        tx: &mut Tx,
        batch: &PreparedBatch,
    ) -> Result<BatchOutcome, StoreError> {
        let now = Utc::now();
        let primary = self.keyring.primary_id().as_str();
        let mut outcome = BatchOutcome::default();
        let audit = |id, merchant_id, platform_name, success, error_code| AccessRecord {
            token_id: Some(id),
            merchant_id,
            platform_name: Some(platform_name),
            accessed_by: ACTOR,
            access_type: AccessType::Write,
            success,
            error_code,
            correlation_id: &self.run_id,
            ip_address: None,
            at: now,
        };
        for (row, sealed) in &batch.converted {
            let replaced =
                store::replace_ciphertext(tx, row.id, &row.encrypted_token, sealed, primary)
                    .await?;
            let error_code = if replaced {
                outcome.rewrapped += 1;
                None
            } else {
                outcome.changed_concurrently += 1;
                Some("CHANGED_CONCURRENTLY")
            };
            let record = audit(
                row.id,
                &row.merchant_id,
                &row.platform_name,
                replaced,
                error_code,
            );
            store::record_access(tx, &record).await?;
        }
        for (id, failure) in &batch.failed {
            let record = audit(
                *id,
                &failure.merchant_id,
                &failure.platform_name,
                false,
                Some(failure.code),
            );
            store::record_access(tx, &record).await?;
        }
        Ok(outcome)
    }

    /// The final re-check: what is still not in the current format, whoever left it.
    async fn recheck(&self, report: &mut RewrapReport) -> Result<(), StoreError> {
        let mut tx = self.db.begin().await?;
        let counted = store::count_not_current(&mut tx, &self.prefix).await;
        let listed = store::list_not_current(&mut tx, &self.prefix, LISTED_AT_MOST).await;
        finish_read(tx).await;
        report.remaining = counted?;
        report.remaining_rows = listed?;
        Ok(())
    }
}

/// How many rows are not in the current format now.
pub async fn count_remaining(db: &Db, keyring: &Keyring) -> Result<u64, StoreError> {
    let mut tx = db.begin().await?;
    let count = store::count_not_current(&mut tx, &keyring.current_prefix()).await;
    finish_read(tx).await;
    count
}

/// Converts every row, calling `progress` with the number of rows each batch examined.
pub async fn run(
    db: &Db,
    keyring: &Keyring,
    options: RewrapOptions,
    mut progress: impl FnMut(u64),
) -> Result<RewrapReport, StoreError> {
    let mut rewrapper = Rewrapper::new(db, keyring, options.batch_size);
    let mut report = RewrapReport {
        run_id: rewrapper.run_id.clone(),
        ..RewrapReport::default()
    };
    let mut first = true;
    loop {
        // The rest comes between batches, never between a batch's read and its write.
        if !first && !options.pause.is_zero() {
            tokio::time::sleep(options.pause).await;
        }
        first = false;
        let Some(batch) = rewrapper.prepare_next().await? else {
            break;
        };
        for source in &batch.sources {
            *report.found_by_source.entry(source.clone()).or_default() += 1;
        }
        if options.dry_run {
            report.rewrapped += batch.converted.len() as u64;
        } else {
            let outcome = rewrapper.apply(&batch).await?;
            report.rewrapped += outcome.rewrapped;
            report.changed_concurrently += outcome.changed_concurrently;
        }
        progress(batch.len() as u64);
        report
            .failed
            .extend(batch.failed.into_iter().map(|(_, failure)| failure));
    }
    if options.dry_run {
        // Nothing was written: what remains is what was found.
        report.remaining = report.found_by_source.values().sum();
    } else {
        rewrapper.recheck(&mut report).await?;
    }
    Ok(report)
}

/// The key id an envelope-format ciphertext names (`tse1.<id>.…`).
fn envelope_key_id(stored: &str) -> &str {
    stored.split('.').nth(1).unwrap_or("?")
}

/// Ends a read-only transaction; a failure to roll back cannot lose anything.
async fn finish_read(tx: Tx) {
    let _ = tx.rollback().await;
}
