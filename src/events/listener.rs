//! Acting on app uninstalls: a durable JetStream consumer of `evt.webhook.app.uninstalled.v1`.
//!
//! Each message is applied through the vault (same transaction rules as an API delete) and
//! acked only after the commit. A message that cannot be read goes to
//! `dlq.webhook.app.uninstalled.v1` (the original body, the reason in headers) and is then
//! terminated, so it is never redelivered. While the database is away a message is nak'ed
//! with a delay and comes back; a message that keeps failing for another reason is
//! dead-lettered after [`MAX_ATTEMPTS`] deliveries. Replicas share the durable consumer, so
//! each message is handled by one of them at a time.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::{self, AckKind, Message};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::relay::error_chain;
use super::uninstall::{self, AppUninstalled};
use super::EventSettings;
use crate::vault::{AuditContext, UninstallCommand, Vault, VaultError};

/// The consumed subject (before the deployment's prefix).
pub const UNINSTALLED_SUBJECT: &str = "evt.webhook.app.uninstalled.v1";
/// Where unreadable uninstall messages go (before the deployment's prefix).
pub const DLQ_SUBJECT: &str = "dlq.webhook.app.uninstalled.v1";
/// The durable consumer every replica shares.
pub const CONSUMER_NAME: &str = "token-service-app-uninstalled";
/// Who the audit trail names for deletions caused by an uninstall.
pub const UNINSTALL_ACTOR: &str = "event:app.uninstalled";
/// Deliveries after which a message that keeps failing (not for an outage) is dead-lettered.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long the server waits for an ack before redelivering (a message handed to a connection
/// that broke comes back after this); work in progress extends it every [`PROGRESS_EVERY`].
const ACK_WAIT: Duration = Duration::from_secs(10);
const PROGRESS_EVERY: Duration = Duration::from_secs(4);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The uninstall consumer of one service instance.
pub struct UninstallListener {
    vault: Vault,
    js: jetstream::Context,
    settings: EventSettings,
}

impl UninstallListener {
    pub fn new(vault: Vault, client: async_nats::Client, settings: EventSettings) -> Self {
        Self {
            vault,
            js: jetstream::new(client),
            settings,
        }
    }

    /// Handles messages until `stop` turns true. A message being handled is finished first;
    /// dropping the listener then releases its vault handle.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        while !*stop.borrow() {
            match self.consume(&mut stop).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
                        "uninstall listener not consuming");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Binds the durable consumer and handles its messages until `stop` turns true (`Ok`) or
    /// the binding breaks (`Err`: bind again after a pause).
    async fn consume(&self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
        let stream = self.js.get_stream(&self.settings.stream).await?;
        let config = pull::Config {
            durable_name: Some(CONSUMER_NAME.into()),
            description: Some("token-service: delete the credentials of uninstalled shops".into()),
            filter_subject: self.settings.subject(UNINSTALLED_SUBJECT),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let consumer = stream.get_or_create_consumer(CONSUMER_NAME, config).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(10)
            .messages()
            .await?;
        tracing::info!(consumer = CONSUMER_NAME, "listening for app uninstalls");
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                _ = stop.changed() => return Ok(()),
            };
            match next {
                Some(Ok(message)) => self.handle(message).await,
                Some(Err(e)) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                    // NATS is away; the client reconnects and the pulls resume.
                    tracing::warn!(error = %error_chain(&e), "uninstall consumer missed heartbeats");
                }
                // Deleted consumer, no responders, failed pull: bind again (after a pause).
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the message stream ended"),
            }
        }
    }

    /// Applies one message and settles it with the server.
    pub async fn handle(&self, message: Message) {
        let (stream_seq, delivered) = message
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 1));
        let event = match uninstall::parse(&message.payload) {
            Ok(event) => event,
            Err(reason) => {
                tracing::warn!(stream_seq, %reason, "malformed uninstall event");
                return self.dead_letter(&message, stream_seq, &reason).await;
            }
        };
        let event_id = event.event_id.clone().unwrap_or_default();
        let applied = with_progress(&message, self.vault.uninstall(command(event))).await;
        match applied {
            Ok(outcome) => {
                let merchants: Vec<&str> = outcome
                    .deleted
                    .iter()
                    .map(|t| t.merchant_id.as_str())
                    .collect();
                tracing::info!(%event_id, stream_seq, deleted = merchants.len(), ?merchants,
                    "app uninstall applied");
                settle(&message, AckKind::Ack).await;
            }
            Err(e @ (VaultError::Unavailable(_) | VaultError::ShuttingDown)) => {
                tracing::warn!(%event_id, error = %error_chain(&e), delivered, "uninstall deferred");
                settle(&message, AckKind::Nak(Some(retry_delay(delivered)))).await;
            }
            Err(e) if delivered >= MAX_ATTEMPTS => {
                tracing::error!(%event_id, error = %error_chain(&e), delivered, "uninstall failed; dead-lettering");
                self.dead_letter(&message, stream_seq, "processing failed repeatedly")
                    .await;
            }
            Err(e) => {
                tracing::error!(%event_id, error = %error_chain(&e), delivered, "uninstall failed");
                settle(&message, AckKind::Nak(Some(retry_delay(delivered)))).await;
            }
        }
    }

    /// Publishes the message to the dead-letter subject, then terminates it. If the dead
    /// letter cannot be published, the message is nak'ed so that it is not lost.
    async fn dead_letter(&self, message: &Message, stream_seq: u64, reason: &str) {
        let mut headers = HeaderMap::new();
        let msg_id = format!("dlq-{}-{stream_seq}", self.settings.stream);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        headers.insert("Dlq-Error", header_text(reason).as_str());
        headers.insert("Dlq-Original-Subject", message.subject.as_str());
        headers.insert("Dlq-Original-Sequence", stream_seq.to_string().as_str());
        headers.insert("Dlq-Source-Service", super::SOURCE_SERVICE);
        let subject = self.settings.subject(DLQ_SUBJECT);
        let published = match self
            .js
            .publish_with_headers(subject, headers, message.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(drop),
            Err(e) => Err(e),
        };
        match published {
            Ok(()) => settle(message, AckKind::Term).await,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), stream_seq, "dead-lettering failed; will retry");
                settle(message, AckKind::Nak(Some(FIRST_BACKOFF * 8))).await;
            }
        }
    }
}

fn command(event: AppUninstalled) -> UninstallCommand {
    let correlation_id = event
        .correlation_id
        .unwrap_or_else(|| format!("corr_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    UninstallCommand {
        platform: event.platform,
        platform_shop_id: event.platform_shop_id,
        domain: event.domain,
        occurred_at: event.occurred_at.unwrap_or_else(chrono::Utc::now),
        audit: AuditContext {
            actor: UNINSTALL_ACTOR.into(),
            correlation_id,
            ip_address: None,
        },
    }
}

/// Runs `work`, telling the server every few seconds that the message is still in hand so
/// that a slow database does not get it redelivered meanwhile.
async fn with_progress<T>(message: &Message, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "extending the ack wait failed");
                }
            }
        }
    }
}

/// Waits for the server to confirm the ack (or nak/term); a lost confirmation only means the
/// message may come again, which is harmless.
async fn settle(message: &Message, kind: AckKind) {
    if let Err(e) = message.double_ack_with(kind).await {
        tracing::warn!(error = %e, "settling an uninstall message failed; it may be redelivered");
    }
}

fn retry_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 8)).unwrap_or(8);
    (FIRST_BACKOFF * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// A header value: one line of printable text, bounded.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert!(retry_delay(3) > retry_delay(2));
        assert_eq!(retry_delay(100), MAX_BACKOFF);
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        let text = header_text(&format!("a\r\nb{}", "x".repeat(1000)));
        assert!(!text.contains('\n') && !text.contains('\r'));
        assert_eq!(text.chars().count(), 512);
    }
}
