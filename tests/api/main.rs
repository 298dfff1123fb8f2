//! Black-box tests of the HTTP API, each run against SQLite and PostgreSQL.

mod helpers;
mod keys;

mod abuse;
mod audit;
mod auth;
mod events;
mod fake_shopify;
mod import;
mod legacy;
mod migrate_expiring;
mod outage;
mod ownership;
mod protocol;
mod refresh;
mod rewrap;
mod rotation;
mod secrets;
mod tokens;
mod validation;
