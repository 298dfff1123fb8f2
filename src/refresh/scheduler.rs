//! The background task: refresh tokens before reads would have to wait for it.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Refresher;
use crate::vault::{AuditContext, RefreshPurpose};

/// Tokens refreshed at once; keeps bursts (many tokens stored together) gentle on platforms.
const CONCURRENCY: usize = 4;
/// Tokens taken per scan.
const BATCH: i64 = 200;

/// Every `interval`, refreshes the tokens that will enter the read window within the lead
/// time. Each token is picked when its own expiry approaches, which spreads the work out;
/// failures back off per token. Stops when `stop` turns true.
pub fn spawn_background_refresh(
    refresher: Arc<Refresher>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let interval = refresher.settings.interval;
        loop {
            if let Err(error) = scan_once(&refresher).await {
                tracing::warn!(%error, "background token refresh scan failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    })
}

/// One pass: refresh everything due within window + lead. Returns how many were attempted.
pub async fn scan_once(refresher: &Arc<Refresher>) -> Result<usize, crate::vault::VaultError> {
    let settings = &refresher.settings;
    let due = Utc::now() + settings.window + settings.lead;
    let platforms: Vec<&str> = refresher.platforms.iter().map(String::as_str).collect();
    if platforms.is_empty() {
        return Ok(0);
    }
    let ids = refresher
        .vault
        .refresh_candidates(&platforms, due, BATCH)
        .await?;
    let attempted = ids.len();
    let mut running = JoinSet::new();
    for id in ids {
        if running.len() >= CONCURRENCY {
            running.join_next().await;
        }
        let refresher = refresher.clone();
        running.spawn(async move {
            let audit = AuditContext {
                actor: super::REFRESHER_ACTOR.into(),
                correlation_id: format!("corr_{}", crate::http::context::random_hex12()),
                ip_address: None,
            };
            let _ = refresher
                .refresh(id, RefreshPurpose::IfDueBefore(due), audit)
                .await;
        });
    }
    while running.join_next().await.is_some() {}
    Ok(attempted)
}
