//! Counters of the registry's own work that an operator watches: garbage collection, storage used,
//! events and webhook deliveries. One [`Metrics`] per registry, reachable as `registry.metrics()`, so
//! any service (GC, the webhook worker, a background task) can bump it.
//!
//! Plain atomics: bumping a counter never takes a lock. The HTTP edge renders these in Prometheus
//! format alongside its request metrics; this module never formats anything and knows nothing of HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// How one webhook delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed and another one is scheduled.
    Retried,
    /// The attempt failed and was the last one allowed: the delivery is given up.
    Dropped,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 3] =
        [DeliveryOutcome::Delivered, DeliveryOutcome::Retried, DeliveryOutcome::Dropped];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retried => "retried",
            DeliveryOutcome::Dropped => "dropped",
        }
    }
}

/// What one garbage-collection run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcRun {
    pub manifests_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
}

/// The registry's counters and gauges.
#[derive(Debug, Default)]
pub struct Metrics {
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
    gc_manifests_deleted: AtomicU64,
    gc_blobs_deleted: AtomicU64,
    gc_bytes_reclaimed: AtomicU64,
    gc_last_run_unix: AtomicU64,
    storage_used_bytes: AtomicU64,
    storage_used_known: AtomicBool,
    events_recorded: AtomicU64,
    events_unrecorded: AtomicU64,
    deliveries: [AtomicU64; 3],
    webhook_queue: AtomicU64,
}

impl Metrics {
    /// Records a completed garbage-collection run.
    pub fn gc_run(&self, run: GcRun) {
        self.gc_runs.fetch_add(1, Relaxed);
        self.gc_manifests_deleted.fetch_add(run.manifests_deleted, Relaxed);
        self.gc_blobs_deleted.fetch_add(run.blobs_deleted, Relaxed);
        self.gc_bytes_reclaimed.fetch_add(run.bytes_reclaimed, Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
        self.gc_last_run_unix.store(now.unwrap_or(0), Relaxed);
    }

    /// Records a garbage-collection run that failed.
    pub fn gc_failed(&self) {
        self.gc_failures.fetch_add(1, Relaxed);
    }

    /// Sets the bytes of blobs the metadata store knows (refreshed periodically, not per scrape).
    pub fn set_storage_used(&self, bytes: u64) {
        self.storage_used_bytes.store(bytes, Relaxed);
        self.storage_used_known.store(true, Relaxed);
    }

    pub(crate) fn events_recorded(&self, n: u64) {
        self.events_recorded.fetch_add(n, Relaxed);
    }

    pub(crate) fn events_unrecorded(&self, n: u64) {
        self.events_unrecorded.fetch_add(n, Relaxed);
    }

    /// Records the outcome of one webhook delivery attempt.
    pub fn webhook_delivery(&self, outcome: DeliveryOutcome) {
        self.deliveries[outcome as usize].fetch_add(1, Relaxed);
    }

    /// Sets the number of webhook deliveries waiting in the outbox.
    pub fn set_webhook_queue(&self, pending: u64) {
        self.webhook_queue.store(pending, Relaxed);
    }

    // ------------------------------------------------------------------ reading

    pub fn gc_runs(&self) -> u64 {
        self.gc_runs.load(Relaxed)
    }
    pub fn gc_failures(&self) -> u64 {
        self.gc_failures.load(Relaxed)
    }
    /// Totals over every run so far.
    pub fn gc_totals(&self) -> GcRun {
        GcRun {
            manifests_deleted: self.gc_manifests_deleted.load(Relaxed),
            blobs_deleted: self.gc_blobs_deleted.load(Relaxed),
            bytes_reclaimed: self.gc_bytes_reclaimed.load(Relaxed),
        }
    }
    /// Unix seconds of the last completed run, 0 if none.
    pub fn gc_last_run_unix(&self) -> u64 {
        self.gc_last_run_unix.load(Relaxed)
    }
    /// `None` until it was measured once.
    pub fn storage_used(&self) -> Option<u64> {
        self.storage_used_known.load(Relaxed).then(|| self.storage_used_bytes.load(Relaxed))
    }
    pub fn events_recorded_total(&self) -> u64 {
        self.events_recorded.load(Relaxed)
    }
    pub fn events_unrecorded_total(&self) -> u64 {
        self.events_unrecorded.load(Relaxed)
    }
    pub fn webhook_deliveries(&self, outcome: DeliveryOutcome) -> u64 {
        self.deliveries[outcome as usize].load(Relaxed)
    }
    pub fn webhook_queue(&self) -> u64 {
        self.webhook_queue.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_accumulate() {
        let m = Metrics::default();
        assert_eq!(m.storage_used(), None);
        m.gc_run(GcRun { manifests_deleted: 1, blobs_deleted: 2, bytes_reclaimed: 300 });
        m.gc_run(GcRun { manifests_deleted: 0, blobs_deleted: 1, bytes_reclaimed: 20 });
        assert_eq!(m.gc_runs(), 2);
        assert_eq!(m.gc_totals(), GcRun { manifests_deleted: 1, blobs_deleted: 3, bytes_reclaimed: 320 });
        assert!(m.gc_last_run_unix() > 0);
        m.set_storage_used(42);
        assert_eq!(m.storage_used(), Some(42));
        m.webhook_delivery(DeliveryOutcome::Retried);
        m.webhook_delivery(DeliveryOutcome::Delivered);
        m.webhook_delivery(DeliveryOutcome::Retried);
        assert_eq!(m.webhook_deliveries(DeliveryOutcome::Retried), 2);
        assert_eq!(m.webhook_deliveries(DeliveryOutcome::Delivered), 1);
        assert_eq!(m.webhook_deliveries(DeliveryOutcome::Dropped), 0);
    }
}
