//! token-service: the encrypted, audited store of merchants' platform credentials.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod events;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod rate_limit;
pub mod refresh;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod vault;
