//! Events on the platform bus, against the real NATS server: the outbox, the relay, the
//! uninstall listener and crash safety.

mod crash;
mod listener;
mod outbox;
mod relay;
pub mod support;
