//! The connection to NATS and the stream the platform's events live in.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use super::envelope::{TOKEN_DELETED, TOKEN_STORED};
use super::listener::{DLQ_SUBJECT, UNINSTALLED_SUBJECT};
use super::EventSettings;

/// How long a created stream keeps events (an existing stream keeps its own settings).
const STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Publishes with the same `Nats-Msg-Id` within this window are stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connects to NATS without waiting for it: the client keeps (re)connecting in the background,
/// so the service starts, and serves, while the bus is away.
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("token-service")
        .retry_on_initial_connect()
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                other => tracing::warn!(event = %other, "NATS client event"),
            }
        })
        .connect(url)
        .await
        // The error may quote the address; the address may carry a password.
        .map_err(|e| anyhow::anyhow!("connecting to NATS: {}", e.kind()))
}

/// Creates the stream (subjects `evt.>`, `cmd.>`, `dlq.>`) when it does not exist. An existing
/// stream is used as it is, never reconfigured; a warning says so if it does not capture the
/// subjects this service uses.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &EventSettings,
) -> anyhow::Result<()> {
    let subjects: Vec<String> = ["evt.>", "cmd.>", "dlq.>"]
        .iter()
        .map(|s| settings.subject(s))
        .collect();
    let existing = match js.get_stream(&settings.stream).await {
        Ok(mut stream) => Some(stream.info().await?.config.subjects.clone()),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(e).context("looking up the event stream"),
    };
    let configured = match existing {
        Some(configured) => configured,
        None => {
            let config = stream::Config {
                name: settings.stream.clone(),
                description: Some("Platform events (created by token-service)".into()),
                subjects: subjects.clone(),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: STREAM_MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            // A replica creating it at the same moment makes this fail; then it exists.
            match js.create_stream(config).await {
                Ok(_) => tracing::info!(stream = %settings.stream, "created the event stream"),
                Err(e) => tracing::debug!(error = %e, "stream creation raced; looking it up"),
            }
            let mut stream = js
                .get_stream(&settings.stream)
                .await
                .context("creating the event stream")?;
            stream.info().await?.config.subjects.clone()
        }
    };
    let ours = [
        TOKEN_STORED,
        TOKEN_DELETED,
        UNINSTALLED_SUBJECT,
        DLQ_SUBJECT,
    ];
    let uncovered: Vec<String> = ours
        .iter()
        .map(|s| settings.subject(s))
        .filter(|s| !configured.iter().any(|filter| subject_matches(filter, s)))
        .collect();
    if !uncovered.is_empty() {
        tracing::warn!(stream = %settings.stream, ?configured, ?uncovered,
            "the existing event stream does not capture these subjects; left unchanged");
    }
    Ok(())
}

fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    match err.kind() {
        jetstream::context::GetStreamErrorKind::JetStream(e) => {
            e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
        }
        _ => false,
    }
}

/// Whether the subject filter (with `*` and `>` wildcards) captures the subject.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for part in filter.split('.') {
        match (part, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("evt.>", "evt.token.stored.v1"));
        assert!(subject_matches(">", "evt.token.stored.v1"));
        assert!(subject_matches("evt.*.stored.v1", "evt.token.stored.v1"));
        assert!(subject_matches(
            "evt.token.stored.v1",
            "evt.token.stored.v1"
        ));
        assert!(!subject_matches("evt.>", "evt"));
        assert!(!subject_matches("evt.*", "evt.token.stored"));
        assert!(!subject_matches("cmd.>", "evt.token.stored.v1"));
        assert!(!subject_matches("evt.token", "evt.token.stored"));
    }
}
