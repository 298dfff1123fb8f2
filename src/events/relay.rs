//! The outbox relay: publishes committed events to JetStream, in order, each once.
//!
//! One step ([`Relay::relay_once`]) claims the oldest pending events, publishes them one at
//! a time with `Nats-Msg-Id` = event_id, waiting for each JetStream ack, and marks published
//! exactly those that were acked. A failure stops the step at that event, so nothing is
//! published ahead of an earlier event; the next step starts again from it. A crash after
//! the ack but before the mark republishes the event with the same id, and JetStream's
//! de-duplication window drops the copy. [`run`] repeats steps, backs off while NATS or the
//! database is away, and prunes old published events.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, message::PublishMessage};
use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Instant;

use super::EventSettings;
use crate::store::{self, Backlog, Db, PendingEvent, StoreError};

/// Most events one step claims (and so one PostgreSQL claim transaction holds).
const BATCH: i64 = 100;
/// How often an idle relay looks for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Back-off after a failed step, doubling up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often published events older than the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const PRUNE_BATCH: i64 = 1000;
/// How often a backlog is reported while events are not getting out.
const BACKLOG_REPORT_EVERY: Duration = Duration::from_secs(30);

/// What one relay step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayStep {
    /// Published this many events (there may be more).
    Published(usize),
    /// Nothing was pending.
    Idle,
    /// Another replica is publishing; it keeps the order, this one waits.
    Busy,
}

/// Why a relay step stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("publishing event {event_id} (outbox seq {seq}) failed")]
    Publish {
        seq: i64,
        event_id: uuid::Uuid,
        #[source]
        source: anyhow::Error,
    },
    #[error("outbox database error")]
    Store(#[from] StoreError),
}

impl RelayError {
    /// Whether the stream is gone (deleted, or never created), so it should be ensured again.
    fn is_stream_missing(&self) -> bool {
        use jetstream::context::{PublishError, PublishErrorKind};
        match self {
            RelayError::Publish { source, .. } => source
                .downcast_ref::<PublishError>()
                .is_some_and(|e| e.kind() == PublishErrorKind::StreamNotFound),
            _ => false,
        }
    }
}

/// Publishes the outbox of one database to one JetStream.
#[derive(Clone)]
pub struct Relay {
    db: Db,
    client: async_nats::Client,
    js: jetstream::Context,
    settings: EventSettings,
}

impl Relay {
    pub fn new(db: Db, client: async_nats::Client, settings: EventSettings) -> Self {
        let js = jetstream::new(client.clone());
        Self {
            db,
            client,
            js,
            settings,
        }
    }

    /// Publishes the next batch of pending events, oldest first.
    pub async fn relay_once(&self) -> Result<RelayStep, RelayError> {
        if self.client.connection_state() != State::Connected {
            // Publishing now would only queue copies inside the client.
            return Err(RelayError::Disconnected);
        }
        let Some(claim) = store::claim_pending(&self.db, BATCH).await? else {
            return Ok(RelayStep::Busy);
        };
        let mut published = Vec::with_capacity(claim.events().len());
        let mut failure = None;
        for event in claim.events() {
            match self.publish(event).await {
                Ok(()) => published.push(event.seq),
                Err(source) => {
                    failure = Some(RelayError::Publish {
                        seq: event.seq,
                        event_id: event.event_id,
                        source,
                    });
                    break;
                }
            }
        }
        claim.finish(&self.db, &published, Utc::now()).await?;
        match failure {
            Some(e) => Err(e),
            None if published.is_empty() => Ok(RelayStep::Idle),
            None => Ok(RelayStep::Published(published.len())),
        }
    }

    async fn publish(&self, event: &PendingEvent) -> anyhow::Result<()> {
        let message = PublishMessage::build()
            .payload(event.payload.clone().into())
            .message_id(event.event_id.to_string())
            .expected_stream(&self.settings.stream);
        let subject = self.settings.subject(&event.subject);
        let ack = self.js.send_publish(subject, message).await?.await?;
        if ack.duplicate {
            tracing::debug!(event_id = %event.event_id, "event was already in the stream");
        }
        Ok(())
    }

    /// Deletes published events older than the retention; how many.
    pub async fn prune_once(&self) -> Result<u64, StoreError> {
        let cutoff = chrono::Duration::from_std(self.settings.outbox_retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention));
        let Some(cutoff) = cutoff else {
            return Ok(0); // a retention longer than time itself keeps everything
        };
        let mut total = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let deleted = store::prune_published(&mut tx, cutoff, PRUNE_BATCH).await?;
            tx.commit().await?;
            total += deleted;
            if deleted < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Pending events and the age of the oldest.
    pub async fn backlog(&self) -> Result<Backlog, StoreError> {
        outbox_backlog(&self.db).await
    }

    /// Publishes until nothing is pending, another replica takes over, or `deadline` passes;
    /// used at shutdown so the last requests' events go out before the process does.
    pub async fn flush(&self, deadline: Instant) {
        self.flush_with(deadline, &mut false).await
    }

    async fn flush_with(&self, deadline: Instant, stream_ready: &mut bool) {
        let mut backoff = FIRST_BACKOFF;
        while Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.step(stream_ready)).await {
                Ok(Ok(RelayStep::Published(_))) => backoff = FIRST_BACKOFF,
                Ok(Ok(RelayStep::Idle | RelayStep::Busy)) => return,
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "event relay flush step failed");
                    tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(_elapsed) => break,
            }
        }
        match self.backlog().await {
            Ok(b) if b.pending > 0 => tracing::warn!(
                pending = b.pending,
                "shutting down with events still in the outbox; they go out after restart"
            ),
            _ => {}
        }
    }
}

/// Pending events of the outbox.
pub(super) async fn outbox_backlog(db: &Db) -> Result<Backlog, StoreError> {
    let mut tx = db.begin().await?;
    let backlog = store::backlog(&mut tx).await;
    let _ = tx.rollback().await;
    backlog
}

/// Runs relay steps until `stop` turns true, then flushes for at most `flush_for`.
pub async fn run(relay: Relay, mut stop: watch::Receiver<bool>, flush_for: Duration) {
    let mut stream_ready = false;
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    let mut next_prune = Instant::now();
    let mut next_report = Instant::now();
    while !*stop.borrow() {
        let wait = match relay.step(&mut stream_ready).await {
            Ok(step) => {
                if failures > 0 {
                    tracing::info!(after_failures = failures, "event relay recovered");
                }
                failures = 0;
                backoff = FIRST_BACKOFF;
                next_report = Instant::now();
                match step {
                    RelayStep::Published(n) => {
                        tracing::debug!(published = n, "events published");
                        Duration::ZERO
                    }
                    RelayStep::Idle | RelayStep::Busy => POLL_INTERVAL,
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(stream = %relay.settings.stream, error = %format!("{e:#}"),
                    attempt = failures, retry_in_ms = backoff.as_millis() as u64,
                    "event relay step failed");
                if Instant::now() >= next_report && report_backlog(&relay).await {
                    next_report = Instant::now() + BACKLOG_REPORT_EVERY;
                }
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        if Instant::now() >= next_prune {
            match relay.prune_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned published events from the outbox"),
                Err(e) => tracing::warn!(error = %error_chain(&e), "pruning the outbox failed"),
            }
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }
    relay
        .flush_with(Instant::now() + flush_for, &mut stream_ready)
        .await;
}

impl Relay {
    /// One step of the running relay: makes sure the stream exists (first, and again after
    /// it went missing), then publishes.
    async fn step(&self, stream_ready: &mut bool) -> anyhow::Result<RelayStep> {
        if self.client.connection_state() != State::Connected {
            return Err(RelayError::Disconnected.into());
        }
        if !*stream_ready {
            super::bus::ensure_stream(&self.js, &self.settings).await?;
            *stream_ready = true;
        }
        let step = self.relay_once().await;
        if step.as_ref().is_err_and(RelayError::is_stream_missing) {
            *stream_ready = false;
        }
        Ok(step?)
    }
}

/// Logs the backlog if there is one; whether it did.
async fn report_backlog(relay: &Relay) -> bool {
    match relay.backlog().await {
        Ok(b) if b.pending > 0 => {
            let oldest_age_secs = b.oldest.map(|t| (Utc::now() - t).num_seconds().max(0));
            tracing::warn!(
                stream = %relay.settings.stream,
                pending = b.pending,
                oldest_age_secs,
                "outbox backlog: events are waiting to be published"
            );
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "reading the outbox backlog failed");
            false
        }
    }
}

/// An error and its causes on one line (driver messages, never secrets: events carry none).
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
