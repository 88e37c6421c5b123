//! [`Dispatcher`]: one task per endpoint that sends the endpoint's outbox queue in order.
//!
//! For the oldest pending delivery: wait until it is due, POST it (`Content-Type:
//! application/cloudevents+json`, `X-Entrepot-Signature` when the endpoint has a secret), and on a 2xx
//! remove it; otherwise reschedule it after the endpoint's backoff (doubling, capped) or, after its last
//! attempt, give it up (kept in the outbox as failed). Later deliveries of the same endpoint wait behind
//! a failing one, so a receiver sees events in the order they happened. Redirects are not followed.
//! The queue is polled every few seconds besides being woken by the sink, so deliveries queued by
//! another process on the same database (a `gc` run, another instance) go out too.
//!
//! Several instances on one database: a task sends an endpoint's queue only while it holds the
//! endpoint's claim in the outbox ([`EventOutbox::try_claim`], checked again before every attempt),
//! so one task at a time, across all instances, sends a given endpoint's deliveries — each once, in
//! order; the others leave the endpoint alone until the holder's queue is empty (it then lets go) or
//! the holder dies (its claim dies with it). Never changes what it sends: the body
//! is the one stored at queuing time.

use std::sync::Arc;
use std::time::Duration;

use entrepot_meta::outbox::EndpointClaim;
use entrepot_meta::{Delivery, EventOutbox};
use entrepot_registry::Metrics;
use entrepot_registry::metrics::DeliveryOutcome;
use tokio::task::JoinHandle;

use crate::config::Endpoint;
use crate::sink::Shared;
use crate::{cloudevent, now_ms, sign};

/// How often an idle endpoint looks at the outbox without being woken.
const POLL: Duration = Duration::from_secs(2);
/// How long to wait after the outbox itself failed.
const OUTBOX_RETRY: Duration = Duration::from_secs(1);
/// How often the queue-depth gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Deliveries read from the outbox at once.
const BATCH: usize = 32;

/// Delivers queued webhook events.
pub struct Dispatcher {
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
}

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct DispatchError(#[from] reqwest::Error);

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>, metrics: Arc<Metrics>) -> Dispatcher {
        Dispatcher { shared, metrics }
    }

    /// Starts one task per endpoint and one for the queue gauge; they run until the runtime stops.
    pub fn spawn(self) -> Result<Vec<JoinHandle<()>>, DispatchError> {
        // reqwest may be built with rustls but no bundled provider (the S3 store's https): use the
        // process's provider, ring (as the server's TLS), installing it if nobody has yet.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("entrepot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut tasks = Vec::new();
        for i in 0..self.shared.endpoints.len() {
            let (shared, metrics, client) = (self.shared.clone(), self.metrics.clone(), client.clone());
            tasks.push(tokio::spawn(async move { run_endpoint(shared, i, client, metrics).await }));
        }
        let (shared, metrics) = (self.shared.clone(), self.metrics.clone());
        tasks.push(tokio::spawn(async move {
            warn_orphans(&shared).await;
            loop {
                if let Ok(c) = shared.outbox.counts().await {
                    metrics.set_webhook_queue(c.pending);
                }
                tokio::time::sleep(GAUGE_EVERY).await;
            }
        }));
        Ok(tasks)
    }
}

/// Deliveries queued for endpoints that are no longer configured stay queued (they go out if the
/// endpoint comes back under the same name); say so once.
async fn warn_orphans(shared: &Shared) {
    if let Ok(names) = shared.outbox.pending_endpoints().await {
        for n in names.iter().filter(|n| !shared.endpoints.iter().any(|e| &e.name == *n)) {
            tracing::warn!(endpoint = %n, "webhook deliveries are queued for an endpoint that is not configured");
        }
    }
}

async fn run_endpoint(shared: Arc<Shared>, i: usize, client: reqwest::Client, metrics: Arc<Metrics>) {
    let ep = &shared.endpoints[i];
    let outbox: &dyn EventOutbox = shared.outbox.as_ref();
    loop {
        // Only an endpoint with work is claimed (a claim costs a PostgreSQL connection of its own).
        let work = match outbox.pending(&ep.name, 1).await {
            Ok(b) => !b.is_empty(),
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, error = %e, "cannot read the webhook outbox");
                tokio::time::sleep(OUTBOX_RETRY).await;
                continue;
            }
        };
        if work {
            match outbox.try_claim(&ep.name).await {
                Ok(Some(claim)) => {
                    deliver_queue(ep, &client, outbox, &metrics, &claim).await;
                    drop(claim);
                }
                // Another instance is delivering this endpoint's queue; look again later, in case it
                // stops.
                Ok(None) => tracing::debug!(endpoint = %ep.name, "another instance delivers this endpoint"),
                Err(e) => {
                    tracing::warn!(endpoint = %ep.name, error = %e, "cannot claim the webhook endpoint");
                    tokio::time::sleep(OUTBOX_RETRY).await;
                    continue;
                }
            }
        }
        tokio::select! {
            _ = shared.wakeups[i].notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Sends the endpoint's queue, oldest first, while `claim` is held; returns once the queue is empty,
/// the claim is lost or the outbox cannot be read.
async fn deliver_queue(
    ep: &Endpoint,
    client: &reqwest::Client,
    outbox: &dyn EventOutbox,
    metrics: &Metrics,
    claim: &EndpointClaim,
) {
    loop {
        let batch = match outbox.pending(&ep.name, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(endpoint = %ep.name, error = %e, "cannot read the webhook outbox");
                tokio::time::sleep(OUTBOX_RETRY).await;
                return;
            }
        };
        if batch.is_empty() {
            return;
        }
        for d in batch {
            let wait = d.next_attempt_ms.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
            }
            if !claim.still_held().await {
                // Another instance may have taken over: it sends from the head of the queue.
                tracing::warn!(endpoint = %ep.name, "lost the claim on the webhook endpoint; stepping back");
                return;
            }
            if !attempt(ep, client, outbox, metrics, &d).await {
                // The head of the queue failed: everything behind it waits for its next attempt.
                break;
            }
        }
    }
}

/// One attempt; `true` if the delivery left the queue (delivered or given up).
async fn attempt(
    ep: &Endpoint,
    client: &reqwest::Client,
    outbox: &dyn EventOutbox,
    metrics: &Metrics,
    d: &Delivery,
) -> bool {
    let attempts = d.attempts.saturating_add(1);
    let result = send(ep, client, d, attempts).await;
    let stored = match &result {
        Ok(()) => {
            metrics.webhook_delivery(DeliveryOutcome::Delivered);
            tracing::debug!(endpoint = %ep.name, event = %d.event_id, attempts, "webhook delivered");
            outbox.delivered(d.seq).await.map(|_| true)
        }
        Err(why) if attempts >= ep.max_attempts => {
            metrics.webhook_delivery(DeliveryOutcome::Dropped);
            tracing::warn!(endpoint = %ep.name, event = %d.event_id, attempts, error = %why, "webhook delivery given up");
            outbox.give_up(d.seq, attempts, why).await.map(|_| true)
        }
        Err(why) => {
            metrics.webhook_delivery(DeliveryOutcome::Retried);
            let delay = ep.backoff(attempts);
            tracing::info!(endpoint = %ep.name, event = %d.event_id, attempts, error = %why, retry_in_ms = delay.as_millis() as u64, "webhook delivery failed");
            let next = now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            outbox.reschedule(d.seq, attempts, next, why).await.map(|_| false)
        }
    };
    match stored {
        Ok(left) => left,
        Err(e) => {
            // The outcome could not be recorded: the delivery stays as it was and is tried again
            // (at least once), after a pause so a failing database is not hammered.
            tracing::warn!(endpoint = %ep.name, error = %e, "cannot update the webhook outbox");
            tokio::time::sleep(OUTBOX_RETRY).await;
            false
        }
    }
}

async fn send(ep: &Endpoint, client: &reqwest::Client, d: &Delivery, attempt: u32) -> Result<(), String> {
    let mut req = client
        .post(ep.url.clone())
        .timeout(ep.timeout)
        .header("content-type", cloudevent::CONTENT_TYPE)
        .header("x-entrepot-attempt", attempt.to_string())
        .body(d.body.clone());
    if let Some(secret) = &ep.secret {
        req = req.header(sign::SIGNATURE_HEADER, sign::signature(secret, &d.body));
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
        Err(e) if e.is_timeout() => Err(format!("no answer within {} ms", ep.timeout.as_millis())),
        // Without the URL: it may carry credentials.
        Err(e) => Err(e.without_url().to_string()),
    }
}
