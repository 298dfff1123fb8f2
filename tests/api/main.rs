//! Black-box tests of the HTTP API, each run against SQLite and PostgreSQL.

mod helpers;
mod keys;

mod audit;
mod auth;
mod import;
mod legacy;
mod outage;
mod ownership;
mod protocol;
mod rewrap;
mod rotation;
mod secrets;
mod tokens;
mod validation;
