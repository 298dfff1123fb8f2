//! Event bus settings, read with the rest of the configuration.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::ConfigError;

/// Where and how events are exchanged with the platform bus.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Unset: events stay in the outbox and nothing listens (the embedded default). May hold
    /// credentials (`nats://user:password@host`), hence secret.
    pub nats_url: Option<SecretString>,
    /// The JetStream stream that captures `evt.>`, `cmd.>` and `dlq.>`.
    pub stream: String,
    /// Put in front of every subject (`<prefix>.evt.token.stored.v1`), to share one NATS
    /// account between deployments; `None` uses the platform's subjects as they are.
    pub subject_prefix: Option<String>,
    /// How long published events stay in the outbox before they are pruned.
    pub outbox_retention: Duration,
}

impl EventSettings {
    /// Reads the event variables through `var` (already filtered of blank values).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // NATS_URL: the platform bus, e.g. nats://nats:4222 (a comma-separated list is a
        // cluster); unset keeps events in the outbox.
        let nats_url = var("NATS_URL").map(|url| url.trim().to_owned());
        if let Some(url) = &nats_url {
            let valid = url
                .split(',')
                .all(|addr| async_nats::ServerAddr::from_str(addr.trim()).is_ok());
            if !valid {
                return Err(ConfigError::new(
                    "NATS_URL",
                    "must be nats://host:port (or a comma-separated list of them)",
                ));
            }
        }
        // NATS_STREAM: the JetStream stream of the platform's events; default GLAM_EVENTS.
        let stream = var("NATS_STREAM").unwrap_or_else(|| "GLAM_EVENTS".into());
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !name_ok(&stream) {
            return Err(ConfigError::new(
                "NATS_STREAM",
                "must be 1 to 64 characters of letters, digits, _ and -",
            ));
        }
        // NATS_SUBJECT_PREFIX: prepended to every subject published and consumed; unset.
        let subject_prefix = var("NATS_SUBJECT_PREFIX").map(|p| p.trim().to_owned());
        if let Some(prefix) = &subject_prefix {
            if prefix.len() > 64 || !prefix.split('.').all(name_ok) {
                return Err(ConfigError::new(
                    "NATS_SUBJECT_PREFIX",
                    "must be dot-separated tokens of letters, digits, _ and -, at most 64 characters",
                ));
            }
        }
        // OUTBOX_RETENTION_HOURS: how long published events stay in the outbox; default 168.
        let hours: u64 = match var("OUTBOX_RETENTION_HOURS") {
            None => 168,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|h| *h <= 24 * 3650)
                .ok_or_else(|| {
                    ConfigError::new(
                        "OUTBOX_RETENTION_HOURS",
                        "must be a whole number of hours from 0 to 87600",
                    )
                })?,
        };
        Ok(Self {
            nats_url: nats_url.map(SecretString::from),
            stream,
            subject_prefix,
            outbox_retention: Duration::from_secs(hours * 3600),
        })
    }

    /// The subject as published or consumed in this deployment.
    pub fn subject(&self, subject: &str) -> String {
        match &self.subject_prefix {
            Some(prefix) => format!("{prefix}.{subject}"),
            None => subject.to_owned(),
        }
    }

    /// The URL to connect to, for the NATS client only: never log it.
    pub(crate) fn nats_url(&self) -> Option<&str> {
        self.nats_url.as_ref().map(|url| url.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<EventSettings, ConfigError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        EventSettings::from_vars(|name| map.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn defaults_keep_events_in_the_outbox() {
        let settings = parse(&[]).unwrap();
        assert!(settings.nats_url.is_none());
        assert_eq!(settings.stream, "GLAM_EVENTS");
        assert_eq!(
            settings.subject("evt.token.stored.v1"),
            "evt.token.stored.v1"
        );
        assert_eq!(
            settings.outbox_retention,
            Duration::from_secs(7 * 24 * 3600)
        );
    }

    #[test]
    fn prefix_stream_and_retention_are_read() {
        let settings = parse(&[
            ("NATS_URL", "nats://user:pw@127.0.0.1:4222"),
            ("NATS_STREAM", "STAGING_EVENTS"),
            ("NATS_SUBJECT_PREFIX", "staging.eu"),
            ("OUTBOX_RETENTION_HOURS", "0"),
        ])
        .unwrap();
        assert_eq!(settings.nats_url(), Some("nats://user:pw@127.0.0.1:4222"));
        assert_eq!(settings.subject("evt.x.v1"), "staging.eu.evt.x.v1");
        assert_eq!(settings.outbox_retention, Duration::ZERO);
        assert!(
            !format!("{settings:?}").contains("pw"),
            "the URL is redacted"
        );
    }

    #[test]
    fn bad_values_name_their_variable_without_echoing_it() {
        let cases = [
            ("NATS_URL", "nats://host:notaport"),
            ("NATS_STREAM", "has.dot"),
            ("NATS_STREAM", "sp ace"),
            ("NATS_SUBJECT_PREFIX", "wild.*"),
            ("NATS_SUBJECT_PREFIX", "trailing."),
            ("OUTBOX_RETENTION_HOURS", "-1"),
        ];
        for (var, value) in cases {
            let err = parse(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{value}");
            assert!(!err.to_string().contains(value), "{err}");
        }
    }
}
