//! The event outbox ([`crate::EventOutbox`]) in PostgreSQL: the same table and semantics as the SQLite
//! backend's (`seq` from an identity column, so never reused; a failed delivery stays, marked failed).
//!
//! Each call is one statement (`enqueue` one transaction), so an instance's worker always reads the
//! latest committed state. An endpoint's claim ([`EventOutbox::try_claim`]) is a session-level
//! `pg_try_advisory_lock(NS_OUTBOX, hash of the name)` on a connection of its own, outside the pool,
//! like the garbage collection lock: held exactly as long as the claim (dropping it closes the
//! connection), released by the server if the instance dies; a hash collision only makes two
//! endpoints share one holder. This module never looks inside a body and never delivers anything.

use async_trait::async_trait;

use super::{PgMetaStore, pool, to_u64};
use crate::Result;
use crate::outbox::{ClaimHold, Delivery, EndpointClaim, EventOutbox, NewDelivery, OutboxCounts, claim_key};

/// Advisory lock namespace of endpoint claims ("En" then a kind, as `super::NS_GLOBAL`).
const NS_OUTBOX: i32 = 0x456e_7410;

/// A claim: the connection whose session holds the advisory lock.
struct PgClaim(pool::Conn);

#[async_trait]
impl ClaimHold for PgClaim {
    async fn still_held(&self) -> bool {
        // The lock lives as long as the session: a live connection still holds it.
        !self.0.client.is_closed() && self.0.client.simple_query("SELECT 1").await.is_ok()
    }
}

const PENDING: &str = "SELECT seq, endpoint, event_id, body, attempts, next_attempt_ms, last_error, created_ms
     FROM event_outbox WHERE endpoint = $1 AND failed = $2 ORDER BY seq LIMIT $3";

fn delivery(r: &tokio_postgres::Row) -> Result<Delivery> {
    Ok(Delivery {
        seq: r.try_get(0)?,
        endpoint: r.try_get(1)?,
        event_id: r.try_get(2)?,
        body: r.try_get(3)?,
        attempts: r.try_get::<_, i32>(4)?.max(0) as u32,
        next_attempt_ms: r.try_get(5)?,
        last_error: r.try_get(6)?,
        created_ms: r.try_get(7)?,
    })
}

fn attempts(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgMetaStore {
    async fn list_deliveries(&self, endpoint: &str, failed: bool, n: usize) -> Result<Vec<Delivery>> {
        let mut c = self.conn().await?;
        let st = c.prep(PENDING).await?;
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        c.client.query(&st, &[&endpoint, &failed, &limit]).await?.iter().map(delivery).collect()
    }
}

#[async_trait]
impl EventOutbox for PgMetaStore {
    async fn enqueue(&self, deliveries: &[NewDelivery], now_ms: i64) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let st = c
            .prep(
                "INSERT INTO event_outbox (endpoint, event_id, body, next_attempt_ms, created_ms)
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .await?;
        let tx = c.client.transaction().await?;
        for d in deliveries {
            tx.execute(&st, &[&d.endpoint, &d.event_id, &d.body, &now_ms]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pending(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.list_deliveries(endpoint, false, limit).await
    }

    async fn delivered(&self, seq: i64) -> Result<bool> {
        let mut c = self.conn().await?;
        let st = c.prep("DELETE FROM event_outbox WHERE seq = $1 AND NOT failed").await?;
        Ok(c.client.execute(&st, &[&seq]).await? > 0)
    }

    async fn reschedule(&self, seq: i64, n: u32, next_attempt_ms: i64, error: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let st = c
            .prep(
                "UPDATE event_outbox SET attempts = $2, next_attempt_ms = $3, last_error = $4 WHERE seq = $1 AND NOT failed",
            )
            .await?;
        Ok(c.client.execute(&st, &[&seq, &attempts(n), &next_attempt_ms, &error]).await? > 0)
    }

    async fn give_up(&self, seq: i64, n: u32, error: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let st = c
            .prep("UPDATE event_outbox SET failed = TRUE, attempts = $2, last_error = $3 WHERE seq = $1 AND NOT failed")
            .await?;
        Ok(c.client.execute(&st, &[&seq, &attempts(n), &error]).await? > 0)
    }

    async fn failed(&self, endpoint: &str, limit: usize) -> Result<Vec<Delivery>> {
        self.list_deliveries(endpoint, true, limit).await
    }

    async fn pending_endpoints(&self) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT DISTINCT endpoint FROM event_outbox WHERE NOT failed ORDER BY endpoint").await?;
        c.client.query(&st, &[]).await?.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    async fn counts(&self) -> Result<OutboxCounts> {
        let mut c = self.conn().await?;
        let st = c
            .prep("SELECT COUNT(*) FILTER (WHERE NOT failed), COUNT(*) FILTER (WHERE failed) FROM event_outbox")
            .await?;
        let r = c.client.query_one(&st, &[]).await?;
        Ok(OutboxCounts { pending: to_u64(r.try_get(0)?), failed: to_u64(r.try_get(1)?) })
    }

    async fn try_claim(&self, endpoint: &str) -> Result<Option<EndpointClaim>> {
        let conn = self.pool.connect().await?;
        // The low 32 bits of the name's 64-bit hash, as the lock's second key.
        let id = claim_key(endpoint) as u32 as i32;
        let got: bool =
            conn.client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NS_OUTBOX, &id]).await?.try_get(0)?;
        Ok(got.then(|| EndpointClaim::new(PgClaim(conn))))
    }
}
