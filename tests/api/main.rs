//! Black-box tests of the HTTP API, each run against SQLite and PostgreSQL.

mod client;
mod helpers;
mod keys;
mod sweep;

mod abuse;
mod audit;
mod auth;
mod checkpoints;
mod chromium;
mod contract;
mod docs_page;
mod events;
mod fake_shopify;
mod import;
mod legacy;
mod limits;
mod metrics;
mod migrate_expiring;
mod openapi;
mod outage;
mod ownership;
mod protocol;
mod refresh;
mod rewrap;
mod rotation;
mod secrets;
mod storage_faults;
mod tokens;
mod validation;
