//! The audit trail: `token_access_logs`, written in the same transaction as the operation.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::tokens::{statement_chunks, MAX_BINDS};
use super::{on_conn, StoreError, Tx};

tokio::task_local! {
    /// Where the group-commit writer running this task counts audit rows it could not
    /// write (a metric). Elsewhere a failure is only returned.
    pub static FAILED_AUDIT_WRITES: prometheus_client::metrics::counter::Counter;
}

/// What kind of access an audit row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessType {
    Read,
    Write,
    Delete,
    Denied,
    Refresh,
}

impl AccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessType::Read => "read",
            AccessType::Write => "write",
            AccessType::Delete => "delete",
            AccessType::Denied => "denied",
            AccessType::Refresh => "refresh",
        }
    }
}

/// One audit row. It never holds token material: codes, names and ids only.
#[derive(Debug, Clone)]
pub struct AccessRecord<'a> {
    pub token_id: Option<Uuid>,
    pub merchant_id: &'a str,
    pub platform_name: Option<&'a str>,
    pub accessed_by: &'a str,
    pub access_type: AccessType,
    pub success: bool,
    pub error_code: Option<&'static str>,
    pub correlation_id: &'a str,
    pub ip_address: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Writes one audit row. A failure fails the operation (the audit is fail-closed).
pub async fn record_access(tx: &mut Tx, record: &AccessRecord<'_>) -> Result<(), StoreError> {
    record_accesses(tx, std::slice::from_ref(record)).await
}

/// Writes audit rows, one statement per few hundred. A failure fails the operation.
pub async fn record_accesses(tx: &mut Tx, records: &[AccessRecord<'_>]) -> Result<(), StoreError> {
    let written = insert_accesses(tx, records).await;
    if written.is_err() {
        let _ = FAILED_AUDIT_WRITES.try_with(|failures| failures.inc_by(records.len() as u64));
    }
    written
}

async fn insert_accesses(tx: &mut Tx, records: &[AccessRecord<'_>]) -> Result<(), StoreError> {
    const COLUMNS: usize = 11;
    for chunk in statement_chunks(records, MAX_BINDS / COLUMNS) {
        on_conn!(tx, conn => {
            let mut query = sqlx::QueryBuilder::new(
                "INSERT INTO token_access_logs (id, token_id, merchant_id, platform_name, \
                 accessed_by, access_type, success, error_code, correlation_id, ip_address, \
                 accessed_at) ",
            );
            query.push_values(chunk, |mut row, record| {
                row.push_bind(Uuid::now_v7())
                    .push_bind(record.token_id)
                    .push_bind(record.merchant_id)
                    .push_bind(record.platform_name)
                    .push_bind(record.accessed_by)
                    .push_bind(record.access_type.as_str())
                    .push_bind(record.success)
                    .push_bind(record.error_code)
                    .push_bind(record.correlation_id)
                    .push_bind(record.ip_address)
                    .push_bind(record.at);
            });
            query.build().execute(&mut *conn).await?;
        });
    }
    Ok(())
}
