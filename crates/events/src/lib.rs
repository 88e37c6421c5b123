//! Webhooks for registry events (push, pull, delete, gc).
//!
//! The flow: the registry emits a [`RegistryEvent`](entrepot_registry::RegistryEvent) after a change
//! commits → [`WebhookSink`] turns it into one CloudEvents 1.0 JSON body ([`cloudevent`]) and queues one
//! delivery per endpoint whose filters match, in the metadata store's outbox → a [`Dispatcher`] task per
//! endpoint sends its queue in order, signed with HMAC-SHA256 ([`sign`]), retrying with exponential
//! backoff until the receiver answers 2xx or the endpoint's attempts run out.
//!
//! Guarantees: at least once, in order per endpoint (a delivery that keeps failing holds back the ones
//! queued after it on the same endpoint, until it is delivered or given up). Deliveries survive restarts
//! and kill -9 because they are in the outbox before the request that caused them is answered.
//!
//! The window: the outbox row is written in its own transaction right *after* the change commits (the
//! `MetaStore` trait runs each change in one closed transaction). A crash between the two commits —
//! two consecutive transactions on the same writer connection, microseconds apart — loses that one
//! event; the reverse (an event for a change that did not commit) cannot happen.
//!
//! Nothing here knows about the HTTP edge of the registry; it only speaks HTTP as a client.

pub mod cloudevent;
pub mod config;
pub mod dispatch;
pub mod sign;
pub mod sink;

pub use config::{Endpoint, WebhookConfig};
pub use dispatch::Dispatcher;
pub use sink::WebhookSink;

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
