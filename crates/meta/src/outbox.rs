//! The event outbox: webhook deliveries waiting to be sent, kept in the metadata store so that a
//! restart or a crash (kill -9) loses none of them.
//!
//! One row per (event, endpoint): the sink fans an event out to the endpoints whose filters match when
//! it records it, so each endpoint has its own queue, its own retry schedule and its own order (rows are
//! numbered by an ever-increasing `seq`). A delivery is *pending* until it is delivered (the row is
//! removed) or given up after its last attempt (the row stays, *failed*, for an operator to inspect).
//! The body is stored exactly as it will be sent, so every retry sends the same bytes and signature.
//!
//! Several instances share one outbox (PostgreSQL): before delivering an endpoint's queue, a worker
//! takes the endpoint's *claim* ([`EventOutbox::try_claim`]), held by one holder at a time across
//! every store on the same database and released when dropped or when its holder dies. So one
//! worker at a time sends an endpoint's deliveries, in `seq` order, and two instances never send the
//! same delivery at the same time. SQLite (one instance) implements it with a lock file beside the
//! database, with the same semantics.
//!
//! A separate trait from `MetaStore` on purpose: the registry's metadata operations do not change, and
//! a backend adds the outbox by implementing this and passing [`testsuite::run_all`]. This module never
//! knows what is inside a body nor how it is delivered.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use crate::sqlite::SqliteMetaStore;
use crate::{MetaError, Result};

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// Name of the endpoint (unique in the configuration).
    pub endpoint: String,
    /// The event's id (the same for every endpoint it goes to).
    pub event_id: String,
    /// The exact bytes to send.
    pub body: Vec<u8>,
}

/// A queued delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Order of queuing, increasing, never reused.
    pub seq: i64,
    pub endpoint: String,
    pub event_id: String,
    pub body: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Unix milliseconds before which the next attempt must not be made.
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// Unix milliseconds of queuing.
    pub created_ms: i64,
}

/// How many deliveries are waiting and how many were given up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub failed: u64,
}

/// Durable queue of webhook deliveries.
#[async_trait]
pub trait EventOutbox: Send + Sync + 'static {
    /// Queues `deliveries` (all or none), due at once.
    async fn enqueue(&self, deliveries: &[NewDelivery], now_ms: i64) -> Result<()>;
    /// Pending deliveries of `endpoint`, oldest first, at most `limit`.
    async fn pending(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>>;
    /// Removes a delivered delivery; `false` if it was not pending.
    async fn delivered(&self, seq: i64) -> Result<bool>;
    /// Records a failed attempt and when to try again; `false` if it was not pending.
    async fn reschedule(&self, seq: i64, attempts: u32, next_attempt_ms: i64, error: &str) -> Result<bool>;
    /// Records the last failed attempt and stops trying (the row stays, failed); `false` if it was
    /// not pending.
    async fn give_up(&self, seq: i64, attempts: u32, error: &str) -> Result<bool>;
    /// Deliveries of `endpoint` that were given up, oldest first, at most `limit`.
    async fn failed(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>>;
    /// Endpoints that have pending deliveries (to notice those no longer configured).
    async fn pending_endpoints(&self) -> Result<Vec<String>>;
    async fn counts(&self) -> Result<OutboxCounts>;
    /// Takes the right to deliver `endpoint`'s queue, without waiting: `None` if another holder (this
    /// store or another on the same database, in this process or another) has it. Released when the
    /// returned claim is dropped, or by the database when the holder's process dies. A worker checks
    /// [`EndpointClaim::still_held`] before each attempt.
    async fn try_claim(&self, endpoint: &str) -> Result<Option<EndpointClaim>>;
}

/// What keeps an [`EndpointClaim`] held (a lock file, a database session).
#[async_trait]
pub trait ClaimHold: Send + Sync + 'static {
    /// Whether the claim is still held: `false` once it may have been lost (the database session
    /// holding it closed), after which another holder may take it.
    async fn still_held(&self) -> bool;
}

/// The right to deliver one endpoint's queue ([`EventOutbox::try_claim`]); released when dropped.
pub struct EndpointClaim {
    held: Box<dyn ClaimHold>,
}

impl EndpointClaim {
    pub fn new(held: impl ClaimHold) -> EndpointClaim {
        EndpointClaim { held: Box::new(held) }
    }

    /// See [`ClaimHold::still_held`].
    pub async fn still_held(&self) -> bool {
        self.held.still_held().await
    }
}

impl std::fmt::Debug for EndpointClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointClaim")
    }
}

/// 64-bit FNV-1a of an endpoint name: names the lock of its claim (the same in every version).
pub(crate) fn claim_key(endpoint: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in endpoint.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An exclusive `flock` on a file: held until the file is closed.
struct FileClaim(#[allow(dead_code)] std::fs::File);

#[async_trait]
impl ClaimHold for FileClaim {
    async fn still_held(&self) -> bool {
        true
    }
}

/// The outbox table of the SQLite backend (applied with the rest of the schema).
pub(crate) const SQLITE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS event_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    failed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS event_outbox_queue ON event_outbox (endpoint, failed, seq);
"#;

const COLUMNS: &str = "seq, endpoint, event_id, body, attempts, next_attempt_ms, last_error, created_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        seq: r.get(0)?,
        endpoint: r.get(1)?,
        event_id: r.get(2)?,
        body: r.get(3)?,
        attempts: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
        next_attempt_ms: r.get(5)?,
        last_error: r.get(6)?,
        created_ms: r.get(7)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SqliteMetaStore {
    async fn list_deliveries(&self, endpoint: &str, failed: bool, n: usize) -> Result<Vec<Delivery>> {
        let endpoint = endpoint.to_string();
        // Through the writer: the worker must see its own latest updates, never a stale snapshot.
        self.write(move |c| {
            let sql =
                format!("SELECT {COLUMNS} FROM event_outbox WHERE endpoint = ?1 AND failed = ?2 ORDER BY seq LIMIT ?3");
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(params![endpoint, failed as i64, limit(n)], row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[async_trait]
impl EventOutbox for SqliteMetaStore {
    async fn enqueue(&self, deliveries: &[NewDelivery], now_ms: i64) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let deliveries = deliveries.to_vec();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO event_outbox (endpoint, event_id, body, next_attempt_ms, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?4)",
                )?;
                for d in &deliveries {
                    st.execute(params![d.endpoint, d.event_id, d.body, now_ms])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn pending(&self, endpoint: &str, n: usize) -> Result<Vec<Delivery>> {
        self.list_deliveries(endpoint, false, n).await
    }

    async fn delivered(&self, seq: i64) -> Result<bool> {
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM event_outbox WHERE seq = ?1 AND failed = 0")?.execute(params![seq])? > 0)
        })
        .await
    }

    async fn reschedule(&self, seq: i64, attempts: u32, next_attempt_ms: i64, error: &str) -> Result<bool> {
        let error = error.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE event_outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE seq = ?1 AND failed = 0",
            )?
            .execute(params![seq, attempts, next_attempt_ms, error])?
                > 0)
        })
        .await
    }

    async fn give_up(&self, seq: i64, attempts: u32, error: &str) -> Result<bool> {
        let error = error.to_string();
        self.write(move |c| {
            Ok(c.prepare_cached(
                "UPDATE event_outbox SET failed = 1, attempts = ?2, last_error = ?3 WHERE seq = ?1 AND failed = 0",
            )?
            .execute(params![seq, attempts, error])?
                > 0)
        })
        .await
    }

    async fn failed(&self, endpoint: &str, n: usize) -> Result<Vec<Delivery>> {
        self.list_deliveries(endpoint, true, n).await
    }

    async fn pending_endpoints(&self) -> Result<Vec<String>> {
        self.write(|c| {
            let mut st =
                c.prepare_cached("SELECT DISTINCT endpoint FROM event_outbox WHERE failed = 0 ORDER BY endpoint")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn counts(&self) -> Result<OutboxCounts> {
        self.read(|c| {
            let (pending, failed) = c
                .prepare_cached("SELECT COALESCE(SUM(failed = 0), 0), COALESCE(SUM(failed = 1), 0) FROM event_outbox")?
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .optional()?
                .ok_or_else(|| MetaError::Db("no row from an aggregate".into()))?;
            Ok(OutboxCounts { pending: pending.max(0) as u64, failed: failed.max(0) as u64 })
        })
        .await
    }

    async fn try_claim(&self, endpoint: &str) -> Result<Option<EndpointClaim>> {
        // `meta.db.webhook-<hash>.lock`: an exclusive lock on a file beside the database, per endpoint,
        // like the garbage collection lock; the kernel releases it if the holder dies.
        let db = self
            .read(|c| c.path().map(str::to_string).ok_or_else(|| MetaError::Db("the database has no file".into())))
            .await?;
        let name = format!("{db}.webhook-{:016x}.lock", claim_key(endpoint));
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&name)
                .map_err(|e| MetaError::Db(format!("cannot open the webhook claim file: {e}")))?;
            match file.try_lock() {
                Ok(()) => Ok(Some(EndpointClaim::new(FileClaim(file)))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(MetaError::Db(format!("cannot lock the webhook claim file: {e}")))
                }
            }
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))?
    }
}

/// The conformance suite every [`EventOutbox`] backend must pass, starting from an empty outbox.
pub mod testsuite {
    use super::*;

    fn new(endpoint: &str, id: &str) -> NewDelivery {
        NewDelivery {
            endpoint: endpoint.into(),
            event_id: id.into(),
            body: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        }
    }

    /// Runs every check against `store`.
    pub async fn run_all<S: EventOutbox + ?Sized>(store: &S) {
        assert_eq!(store.counts().await.expect("counts"), OutboxCounts::default());
        assert!(store.pending("a", 10).await.expect("pending").is_empty());
        store.enqueue(&[], 1).await.expect("empty enqueue");

        // Fan-out: one event to two endpoints, then two more to one.
        store.enqueue(&[new("a", "e1"), new("b", "e1")], 1_000).await.expect("enqueue");
        store.enqueue(&[new("a", "e2")], 2_000).await.expect("enqueue");
        store.enqueue(&[new("a", "e3")], 3_000).await.expect("enqueue");
        assert_eq!(store.counts().await.expect("counts"), OutboxCounts { pending: 4, failed: 0 });
        assert_eq!(store.pending_endpoints().await.expect("endpoints"), vec!["a".to_string(), "b".to_string()]);

        // Per-endpoint order, limit, and the stored fields.
        let a = store.pending("a", 10).await.expect("pending");
        assert_eq!(a.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e1", "e2", "e3"]);
        assert!(a.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
        assert_eq!(a[0].body, b"{\"id\":\"e1\"}");
        assert_eq!((a[0].attempts, a[0].next_attempt_ms, a[0].created_ms), (0, 1_000, 1_000));
        assert_eq!(a[0].last_error, None);
        assert_eq!(store.pending("a", 2).await.expect("pending").len(), 2);
        let b = store.pending("b", 10).await.expect("pending");
        assert_eq!(b.len(), 1);
        assert_ne!(b[0].seq, a[0].seq, "each endpoint has its own row");

        // A failed attempt keeps the delivery at the head of its queue, with the new schedule.
        assert!(store.reschedule(a[0].seq, 1, 5_000, "connection refused").await.expect("reschedule"));
        let head = &store.pending("a", 1).await.expect("pending")[0];
        assert_eq!((head.seq, head.attempts, head.next_attempt_ms), (a[0].seq, 1, 5_000));
        assert_eq!(head.last_error.as_deref(), Some("connection refused"));

        // Delivered: removed, and only once.
        assert!(store.delivered(a[0].seq).await.expect("delivered"));
        assert!(!store.delivered(a[0].seq).await.expect("delivered again"));
        assert!(!store.reschedule(a[0].seq, 2, 1, "x").await.expect("reschedule gone"));

        // Given up: out of the pending queue, listed as failed, counted.
        assert!(store.give_up(a[1].seq, 7, "HTTP 500").await.expect("give up"));
        assert!(!store.give_up(a[1].seq, 7, "HTTP 500").await.expect("give up twice"));
        assert!(!store.delivered(a[1].seq).await.expect("a failed delivery is not pending"));
        let rest = store.pending("a", 10).await.expect("pending");
        assert_eq!(rest.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e3"]);
        let failed = store.failed("a", 10).await.expect("failed");
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].event_id.as_str(), failed[0].attempts), ("e2", 7));
        assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 500"));
        assert!(store.failed("b", 10).await.expect("failed").is_empty());
        assert_eq!(store.counts().await.expect("counts"), OutboxCounts { pending: 2, failed: 1 });

        // Sequence numbers are never reused, even after the newest row is removed.
        assert!(store.delivered(rest[0].seq).await.expect("delivered"));
        store.enqueue(&[new("a", "e4")], 4_000).await.expect("enqueue");
        let e4 = &store.pending("a", 10).await.expect("pending")[0];
        assert!(e4.seq > rest[0].seq, "seq {} reused after {}", e4.seq, rest[0].seq);

        assert!(store.delivered(e4.seq).await.expect("delivered"));
        assert!(store.delivered(b[0].seq).await.expect("delivered"));
        assert!(store.pending_endpoints().await.expect("endpoints").is_empty());
        assert_eq!(store.counts().await.expect("counts"), OutboxCounts { pending: 0, failed: 1 });

        // Claims: one holder at a time per endpoint, even within one store.
        claims(store, store).await;
    }

    /// The claim checks, with `a` and `b` two stores on the same database (or the same store twice):
    /// one holder at a time per endpoint, endpoints independent, released on drop.
    pub async fn claims<A: EventOutbox + ?Sized, B: EventOutbox + ?Sized>(a: &A, b: &B) {
        let held = a.try_claim("a").await.expect("claim").expect("a free endpoint is claimed");
        assert!(held.still_held().await);
        assert!(b.try_claim("a").await.expect("claim").is_none(), "a held endpoint is not claimed again");
        assert!(a.try_claim("a").await.expect("claim").is_none(), "not even by its own holder's store");
        let other = b.try_claim("b").await.expect("claim").expect("another endpoint is independent");
        drop(held);
        let again = b.try_claim("a").await.expect("claim").expect("a released endpoint is claimed");
        assert!(a.try_claim("a").await.expect("claim").is_none());
        drop((again, other));
        assert!(a.try_claim("b").await.expect("claim").is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open");
        testsuite::run_all(&store).await;
    }

    #[tokio::test]
    async fn claims_across_two_stores_on_one_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open");
        let b = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open again");
        testsuite::claims(&a, &b).await;
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        {
            let store = SqliteMetaStore::open(&path).await.expect("open");
            let d = NewDelivery { endpoint: "hook".into(), event_id: "e".into(), body: b"{}".to_vec() };
            store.enqueue(&[d], 10).await.expect("enqueue");
        }
        let store = SqliteMetaStore::open(&path).await.expect("reopen");
        let pending = store.pending("hook", 10).await.expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].body, b"{}");
    }
}
