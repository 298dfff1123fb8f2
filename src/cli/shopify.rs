//! `token-service shopify migrate-expiring`: exchange every stored non-expiring Shopify
//! offline token for an expiring pair before Shopify stops accepting them (2027-01-01).
//!
//! Resumable and idempotent: an exchanged token becomes refreshable and is skipped by the
//! next run; Shopify answers the same pair when the same exchange is retried within seven
//! days, so a run killed between the exchange and the commit loses nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::CliError;
use crate::config::{Config, ConfigError};
use crate::domain::Platform;
use crate::refresh::Refresher;
use crate::store::{Db, PoolSettings};
use crate::vault::{AuditContext, RefreshFailure, RefreshPurpose, Vault};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Exchange non-expiring offline tokens for expiring ones (token exchange, expiring=1).
    MigrateExpiring(MigrateOpts),
}

#[derive(Debug, clap::Args)]
pub struct MigrateOpts {
    /// Only count the tokens that would be exchanged.
    #[arg(long)]
    pub dry_run: bool,
    /// Exchanges in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

const ACTOR: &str = "cli:shopify-migrate-expiring";

pub async fn run(command: Command) -> Result<(), CliError> {
    let Command::MigrateExpiring(opts) = command;
    let config = Config::from_env()?;
    crate::telemetry::init(&config.log_level, config.log_format, std::io::stderr);
    if !config.refresh.providers.contains_key(&Platform::Shopify) {
        return Err(ConfigError::new(
            "SHOPIFY_CLIENT_ID",
            "SHOPIFY_CLIENT_ID and SHOPIFY_CLIENT_SECRET are required to exchange tokens",
        )
        .into());
    }
    let db = Db::connect(&config.database_url, PoolSettings { max_connections: 4 }).await?;
    db.migrate().await?;
    let keyring = Arc::new(config.keyring.build().context("loading the keyring")?);
    // Nothing scrapes a command's metrics; the vault still needs somewhere to count.
    let metrics = crate::metrics::Metrics::new();
    let (vault, committer) = Vault::start(db.clone(), keyring, config.commit_settings(), metrics);
    let refresher = Refresher::new(vault.clone(), config.refresh.clone());

    let ids = all_candidates(&vault).await?;
    println!("{} non-expiring Shopify token(s) to exchange", ids.len());
    let summary = if opts.dry_run {
        Summary::default()
    } else {
        migrate(&refresher, ids, usize::from(opts.concurrency)).await
    };
    drop((refresher, vault));
    committer.finish().await;
    db.close().await;
    if opts.dry_run {
        return Ok(());
    }
    summary.print();
    if !summary.failed.is_empty() {
        return Err(anyhow::anyhow!(
            "{} token(s) were not exchanged; run again to retry them",
            summary.failed.len()
        )
        .into());
    }
    Ok(())
}

async fn all_candidates(vault: &Vault) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    loop {
        let page = vault
            .non_expiring_shopify_tokens(ids.last().copied(), 1000)
            .await?;
        if page.is_empty() {
            return Ok(ids);
        }
        ids.extend(page);
    }
}

#[derive(Default)]
struct Summary {
    exchanged: usize,
    skipped: usize,
    failed: Vec<(Uuid, &'static str)>,
}

impl Summary {
    fn print(&self) {
        println!(
            "exchanged: {}, skipped: {}, failed: {}",
            self.exchanged,
            self.skipped,
            self.failed.len()
        );
        for (id, code) in &self.failed {
            println!("  failed: token {id}: {code}");
        }
    }
}

async fn migrate(refresher: &Arc<Refresher>, ids: Vec<Uuid>, concurrency: usize) -> Summary {
    let total = ids.len();
    let done = Arc::new(AtomicUsize::new(0));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let progress = tokio::spawn(report_progress(done.clone(), total));
    let mut running = JoinSet::new();
    for id in ids {
        while running.len() >= concurrency {
            running.join_next().await;
        }
        let (refresher, done, summary) = (refresher.clone(), done.clone(), summary.clone());
        running.spawn(async move {
            let audit = AuditContext {
                actor: ACTOR.into(),
                correlation_id: format!("corr_{}", crate::http::context::random_hex12()),
                ip_address: None,
            };
            let result = refresher
                .refresh(id, RefreshPurpose::ExchangeToExpiring, audit)
                .await;
            let mut summary = summary.lock().expect("summary lock");
            match result {
                Ok(()) => summary.exchanged += 1,
                // Deleted, or exchanged by a concurrent run meanwhile.
                Err(RefreshFailure::NotFound | RefreshFailure::NotRefreshable) => {
                    summary.skipped += 1
                }
                Err(RefreshFailure::Failed(code)) => summary.failed.push((id, code)),
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    while running.join_next().await.is_some() {}
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Arc::try_unwrap(summary)
        .map(|m| m.into_inner().expect("summary lock"))
        .unwrap_or_default()
}

/// A progress line on a terminal; a log line every ten seconds otherwise.
async fn report_progress(done: Arc<AtomicUsize>, total: usize) {
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let period = if terminal {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(10)
    };
    loop {
        tokio::time::sleep(period).await;
        let n = done.load(Ordering::Relaxed);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
        if terminal {
            eprint!("\r{n}/{total} exchanged or attempted ({rate:.0}/s)   ");
        } else {
            tracing::info!(
                done = n,
                total,
                rate = format!("{rate:.0}/s"),
                "migrate-expiring progress"
            );
        }
    }
}
