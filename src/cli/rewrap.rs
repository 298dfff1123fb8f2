//! `token-service rewrap [--dry-run] [--batch-size N] [--pause-ms MS]`: re-encrypt every row
//! that is not in the current format (legacy rows, rows under an old key) under the primary
//! key, while the service keeps serving. Exits non-zero when any row is left unconverted.

use std::time::Duration;

use anyhow::anyhow;

use super::maintenance;
use super::progress::Progress;
use super::CliError;
use crate::lifecycle::rewrap::{self, RewrapOptions, RewrapReport};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Count the rows that need rewrapping and check that they decrypt; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows converted and committed per transaction.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Milliseconds to rest between batches, to leave more of the database to the service.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

pub async fn run(opts: Opts) -> Result<(), CliError> {
    let env = maintenance::load().await?;
    let total = rewrap::count_remaining(&env.db, &env.keyring)
        .await
        .map_err(anyhow::Error::from)?;
    let options = RewrapOptions {
        batch_size: opts.batch_size,
        dry_run: opts.dry_run,
        pause: Duration::from_millis(opts.pause_ms),
    };
    let mut progress = Progress::start("rewrap", total);
    let result = rewrap::run(&env.db, &env.keyring, options, |rows| {
        progress.advance(rows)
    })
    .await;
    progress.finish();
    env.db.close().await;
    let report = result.map_err(anyhow::Error::from)?;

    tracing::info!(
        dry_run = opts.dry_run,
        rewrapped = report.rewrapped,
        changed_concurrently = report.changed_concurrently,
        failed = report.failed.len(),
        remaining = report.remaining,
        "rewrap summary"
    );
    print_report(&report, opts.dry_run, env.keyring.primary_id().as_str());
    if !report.failed.is_empty() {
        return Err(anyhow!("{} row(s) could not be decrypted", report.failed.len()).into());
    }
    if !opts.dry_run && report.remaining > 0 {
        return Err(anyhow!(
            "{} row(s) are still not in the current format; run rewrap again once every \
             replica writes with the primary key",
            report.remaining
        )
        .into());
    }
    Ok(())
}

/// The summary on stdout: counts, then every problem row by id, merchant and platform.
fn print_report(report: &RewrapReport, dry_run: bool, primary: &str) {
    let found: u64 = report.found_by_source.values().sum();
    let sources = report
        .found_by_source
        .iter()
        .map(|(source, n)| format!("{source}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "run: {} (the correlation id of its audit entries)",
        report.run_id
    );
    println!("primary key: {primary}");
    println!("not in the current format: {found} ({sources})");
    if dry_run {
        println!("dry run: nothing was written");
        println!("would rewrap: {}", report.rewrapped);
        println!("would fail: {}", report.failed.len());
    } else {
        println!("rewrapped: {}", report.rewrapped);
        println!(
            "changed concurrently (newer data kept): {}",
            report.changed_concurrently
        );
        println!("failed: {}", report.failed.len());
    }
    for f in &report.failed {
        println!(
            "  failed: id={} merchant_id={} platform={} code={}",
            f.id, f.merchant_id, f.platform_name, f.code
        );
    }
    if !dry_run {
        println!(
            "re-check: {} row(s) not in the current format",
            report.remaining
        );
        for row in &report.remaining_rows {
            println!(
                "  remaining: id={} merchant_id={} platform={} key_id={}",
                row.id, row.merchant_id, row.platform_name, row.encryption_key_id
            );
        }
        let unlisted = report.remaining - report.remaining_rows.len() as u64;
        if unlisted > 0 {
            println!("  … and {unlisted} more");
        }
    }
}
