//! [`WebhookSink`]: the registry's [`EventSink`] for webhooks. It answers `wants` from the endpoints'
//! filters (no endpoint listening → the registry builds no event), and `record` encodes each event once
//! as a CloudEvent and queues one delivery per matching endpoint in the outbox — all of a call's
//! deliveries in one transaction — then wakes the endpoints' dispatchers. Never sends anything itself.

use std::sync::Arc;

use async_trait::async_trait;
use entrepot_meta::{EventOutbox, NewDelivery};
use entrepot_oci::RepoName;
use entrepot_registry::{EventKind, EventSink, EventSinkError, Metrics, RegistryEvent};
use tokio::sync::Notify;

use crate::config::Endpoint;
use crate::{cloudevent, dispatch::Dispatcher, now_ms};

/// What the sink and the dispatchers share.
pub(crate) struct Shared {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) outbox: Arc<dyn EventOutbox>,
    /// One per endpoint, same order: rung when something was queued for it.
    pub(crate) wakeups: Vec<Notify>,
}

/// Queues webhook deliveries for registry events.
#[derive(Clone)]
pub struct WebhookSink {
    shared: Arc<Shared>,
    source: String,
}

impl WebhookSink {
    /// A sink for `endpoints`, queuing into `outbox`, with `source` as every CloudEvent's `source`.
    pub fn new(endpoints: Vec<Endpoint>, outbox: Arc<dyn EventOutbox>, source: impl Into<String>) -> WebhookSink {
        let wakeups = endpoints.iter().map(|_| Notify::new()).collect();
        WebhookSink { shared: Arc::new(Shared { endpoints, outbox, wakeups }), source: source.into() }
    }

    /// The dispatcher that delivers what this sink queues.
    pub fn dispatcher(&self, metrics: Arc<Metrics>) -> Dispatcher {
        Dispatcher::new(self.shared.clone(), metrics)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.shared.endpoints
    }
}

#[async_trait]
impl EventSink for WebhookSink {
    fn wants(&self, kind: EventKind, repo: &RepoName) -> bool {
        self.shared.endpoints.iter().any(|e| e.matches(kind, repo))
    }

    async fn record(&self, events: Vec<RegistryEvent>) -> Result<(), EventSinkError> {
        let mut deliveries = Vec::new();
        let mut woken = vec![false; self.shared.endpoints.len()];
        for e in &events {
            let mut body = None;
            for (i, ep) in self.shared.endpoints.iter().enumerate() {
                if !ep.matches(e.kind, &e.repository) {
                    continue;
                }
                let (id, bytes) = body.get_or_insert_with(|| cloudevent::encode(e, &self.source));
                deliveries.push(NewDelivery { endpoint: ep.name.clone(), event_id: id.clone(), body: bytes.clone() });
                woken[i] = true;
            }
        }
        if deliveries.is_empty() {
            return Ok(());
        }
        self.shared.outbox.enqueue(&deliveries, now_ms()).await.map_err(|e| EventSinkError(e.to_string()))?;
        for (i, w) in woken.into_iter().enumerate() {
            if w {
                self.shared.wakeups[i].notify_one();
            }
        }
        Ok(())
    }
}
