//! `token-service import-legacy --from <postgres url> [--batch-size N]`: copy the original
//! service's tokens and access logs into this service's store (`DATABASE_URL`, either
//! engine), re-encrypted in the current format. Safe to run again: a second run changes
//! nothing. Exits non-zero if any row could not be imported.

use anyhow::{anyhow, Context};

use super::maintenance;
use super::progress::Progress;
use super::CliError;
use crate::lifecycle::import::{self, AccessLogReport, TokenReport};
use crate::lifecycle::RowFailure;
use crate::store::LegacySource;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// The original service's PostgreSQL database (postgres://…); it is only read.
    #[arg(long, value_name = "POSTGRES_URL")]
    pub from: String,
    /// Rows copied per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
}

pub async fn run(opts: Opts) -> Result<(), CliError> {
    if !(opts.from.starts_with("postgres://") || opts.from.starts_with("postgresql://")) {
        return Err(anyhow!("--from must be a postgres:// or postgresql:// URL").into());
    }
    let env = maintenance::load().await?;
    env.db.migrate().await?;
    let source = LegacySource::connect(&opts.from).await?;
    tracing::info!(
        domain_column = source.domain_column(),
        "reading the original database"
    );

    let mut progress = Progress::start("import tokens", source.count_tokens().await?);
    let tokens = import::import_tokens(&source, &env.db, &env.keyring, opts.batch_size, |n| {
        progress.advance(n)
    })
    .await
    .context("importing platform_tokens");
    progress.finish();
    let tokens = tokens?;

    let mut progress = Progress::start("import access logs", source.count_access_logs().await?);
    let logs =
        import::import_access_logs(&source, &env.db, opts.batch_size, |n| progress.advance(n))
            .await
            .context("importing token_access_logs");
    progress.finish();
    let logs = logs?;
    source.close().await;
    env.db.close().await;

    tracing::info!(
        tokens_imported = tokens.imported,
        tokens_already_imported = tokens.already_imported,
        tokens_kept_existing = tokens.kept_existing.len(),
        tokens_failed = tokens.failed.len(),
        logs_imported = logs.imported,
        logs_already_present = logs.already_present,
        logs_failed = logs.failed.len(),
        "import summary"
    );
    print_report(&tokens, &logs);
    let failed = tokens.failed.len() + logs.failed.len();
    if failed > 0 {
        return Err(anyhow!("{failed} row(s) could not be imported; see the list above").into());
    }
    Ok(())
}

fn print_report(tokens: &TokenReport, logs: &AccessLogReport) {
    println!(
        "run: {} (the correlation id of its audit entries)",
        tokens.run_id
    );
    println!(
        "tokens: imported {}, skipped {} (already imported {}, kept existing {}), failed {}",
        tokens.imported,
        tokens.already_imported + tokens.kept_existing.len() as u64,
        tokens.already_imported,
        tokens.kept_existing.len(),
        tokens.failed.len()
    );
    print_rows("kept existing", &tokens.kept_existing);
    print_rows("failed token", &tokens.failed);
    println!(
        "access logs: imported {}, skipped {} (already present), failed {}",
        logs.imported,
        logs.already_present,
        logs.failed.len()
    );
    print_rows("failed access log", &logs.failed);
}

fn print_rows(label: &str, rows: &[RowFailure]) {
    for row in rows {
        println!(
            "  {label}: id={} merchant_id={} platform={} code={}",
            row.id, row.merchant_id, row.platform_name, row.code
        );
    }
}
