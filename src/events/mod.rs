//! Events on the platform bus (NATS JetStream, SPEC §5).
//!
//! The vault writes `evt.token.*` events to an outbox table in the same transaction as the
//! change ([`envelope`]); the [`relay`] publishes them; the [`listener`] deletes the tokens of
//! shops that uninstalled the app. Without `NATS_URL` events accumulate in the outbox and
//! neither task runs. The bus is never needed to serve: `/ready` does not look at it.

mod bus;
pub mod envelope;
pub mod listener;
pub mod relay;
mod settings;
pub mod uninstall;

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bus::{connect, ensure_stream};
pub use envelope::{
    token_deleted, token_reauth_required, token_refreshed, token_stored, DeletionReason,
    OutboxEvent, PlatformRef, StoredDetails, SOURCE_SERVICE, TOKEN_DELETED, TOKEN_REAUTH_REQUIRED,
    TOKEN_REFRESHED, TOKEN_STORED,
};
pub use listener::UninstallListener;
pub use relay::{Relay, RelayError, RelayStep};
pub use settings::EventSettings;

use crate::store::Db;
use crate::vault::Vault;

/// How long shutdown waits for the relay to publish what the last requests wrote.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// The event tasks of a running service (none without `NATS_URL`).
pub struct EventTasks {
    listener: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    relay: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl EventTasks {
    /// Starts the relay and the uninstall listener when NATS is configured. Never waits for
    /// NATS: the client connects in the background and the tasks retry until it is there.
    pub async fn start(db: &Db, vault: &Vault, settings: &EventSettings) -> anyhow::Result<Self> {
        let Some(url) = settings.nats_url() else {
            match relay::outbox_backlog(db).await {
                Ok(backlog) => tracing::info!(
                    pending = backlog.pending,
                    "NATS_URL is not set: events stay in the outbox"
                ),
                Err(e) => tracing::warn!(error = %e, "reading the outbox backlog failed"),
            }
            return Ok(Self {
                listener: None,
                relay: None,
            });
        };
        let client = connect(url).await?;
        let relay = Relay::new(db.clone(), client.clone(), settings.clone());
        let (relay_stop, relay_rx) = watch::channel(false);
        let relay_task = tokio::spawn(relay::run(relay, relay_rx, SHUTDOWN_FLUSH));
        let listener = UninstallListener::new(vault.clone(), client, settings.clone());
        let (listener_stop, listener_rx) = watch::channel(false);
        let listener_task = tokio::spawn(listener.run(listener_rx));
        tracing::info!(stream = %settings.stream, "event relay and uninstall listener started");
        Ok(Self {
            listener: Some((listener_stop, listener_task)),
            relay: Some((relay_stop, relay_task)),
        })
    }

    /// Stops consuming (the message in hand is finished) and releases the listener's vault
    /// handle, so that the vault's writers can drain and stop.
    pub async fn stop_listener(&mut self) {
        if let Some((stop, task)) = self.listener.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// Publishes what is still pending (for a bounded time) and stops the relay.
    pub async fn stop_relay(&mut self) {
        if let Some((stop, task)) = self.relay.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}
