//! Black-box tests of the HTTP API, each run against SQLite and PostgreSQL.

mod helpers;

mod audit;
mod auth;
mod events;
mod outage;
mod ownership;
mod protocol;
mod secrets;
mod tokens;
mod validation;
