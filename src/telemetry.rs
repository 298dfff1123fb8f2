//! Structured logging: JSON lines by default, human-readable with `LOG_FORMAT=pretty`.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber writing to `writer`. Dependencies log at `warn` and above.
pub fn init<W>(level: &str, format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::new(format!("warn,token_service={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}
