//! The embedded backend: one SQLite database file in WAL mode, through rusqlite.
//!
//! Every trait call runs the whole operation — a transaction with all its statements — in one go,
//! with cached prepared statements: on a blocking thread, except the short ones on the request path
//! (point reads, upload session rows, a manifest put), which run right on the calling thread when a
//! connection is free (saving two thread switches, most of their cost) and on a blocking thread when
//! not. No operation that calls back into another store (a `LockedCheck`) runs inline, and
//! checkpoints (which fsync) run on a blocking thread, never inside a request's transaction. Writes
//! go through a single connection (SQLite allows one writer; queuing in-process avoids `SQLITE_BUSY`
//! storms and makes every write transaction `IMMEDIATE`); reads use a small pool of read-only
//! connections, which WAL lets run alongside the writer. WAL with `synchronous=NORMAL` keeps every
//! committed transaction across a process crash (kill -9); after a power cut the last transactions
//! may roll back, never half-apply.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use entrepot_oci::{Algorithm, Digest, RepoName, Tag, UploadId};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::lifecycle::{
    BlobRecord, CollectedLink, CollectedManifest, LockedCheck, LockedSweep, ManifestGcPolicy, RepoUsage, SweepOutcome,
    TagRecord,
};
use crate::{ManifestRecord, MetaError, MetaStore, NewManifest, Referrer, Result, UploadSession};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS repositories (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS repo_blobs_digest ON repo_blobs (digest);
CREATE TABLE IF NOT EXISTS manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    content BLOB NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests (repo, subject);
CREATE TABLE IF NOT EXISTS manifest_refs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (repo, digest, kind, target)
);
CREATE INDEX IF NOT EXISTS manifest_refs_target ON manifest_refs (target);
CREATE TABLE IF NOT EXISTS tags (
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_digest ON tags (repo, digest);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    byte_offset INTEGER NOT NULL,
    hash_state BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"#;

/// Read-only connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// Write transactions between two checkpoints of the WAL into the database (run on a blocking
/// thread, never inside a request's transaction: see [`SqliteMetaStore::write_inline`]).
const CHECKPOINT_EVERY: u64 = 256;

/// Metadata in an embedded SQLite database.
#[derive(Clone)]
pub struct SqliteMetaStore {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: Arc<PathBuf>,
    /// Write calls so far, to checkpoint every [`CHECKPOINT_EVERY`].
    writes: Arc<AtomicU64>,
    /// Blocking threads waiting for the writer: while there are any, no write runs inline, so that a
    /// stream of short inline writes never keeps a long one (a garbage collection) waiting.
    waiting: Arc<AtomicU64>,
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> Self {
        MetaError::Db(e.to_string())
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

impl SqliteMetaStore {
    /// Opens (creating if needed) the database file at `path` and applies the schema.
    pub async fn open(path: &Path) -> Result<SqliteMetaStore> {
        let path = path.to_path_buf();
        let writer = tokio::task::spawn_blocking({
            let path = path.clone();
            move || -> Result<Connection> {
                let mut conn = Connection::open(&path)?;
                configure(&conn)?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                // Checkpoints (which fsync) run on a blocking thread every CHECKPOINT_EVERY writes
                // instead of inside whichever commit crosses the default 1000-page mark, which may
                // be one run inline on a runtime thread.
                conn.pragma_update(None, "wal_autocheckpoint", 0)?;
                conn.execute_batch(SCHEMA)?;
                conn.execute_batch(crate::outbox::SQLITE_SCHEMA)?;
                crate::lifecycle::migrate(&mut conn)?;
                Ok(conn)
            }
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))??;
        Ok(SqliteMetaStore {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(Mutex::new(Vec::new())),
            path: Arc::new(path),
            writes: Arc::default(),
            waiting: Arc::default(),
        })
    }

    /// Counts a write; every [`CHECKPOINT_EVERY`] writes, checkpoints the WAL on a blocking thread
    /// (`PASSIVE`: it copies what no reader still needs and never waits for readers).
    fn wrote(&self) {
        if !(self.writes.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(CHECKPOINT_EVERY) {
            return;
        }
        let (writer, waiting) = (self.writer.clone(), self.waiting.clone());
        waiting.fetch_add(1, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || {
            let conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            waiting.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        });
    }

    /// Runs a short write (a few statements on indexed rows, no callback into other stores) with the
    /// writer connection: right here when nobody holds it or waits for it, saving the hop to a blocking thread and
    /// back that is most of the cost of such a write; through [`SqliteMetaStore::write`] otherwise.
    /// It never checkpoints (see [`SqliteMetaStore::wrote`]), so it never waits for a disk flush.
    async fn write_inline<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            let held = match self.writer.try_lock() {
                Ok(g) => Some(g),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut conn) = held {
                let r = f(&mut conn);
                drop(conn);
                self.wrote();
                return r;
            }
        }
        self.write(f).await
    }

    /// Runs a point read (one indexed lookup) with a pooled reader right here when one is idle,
    /// through [`SqliteMetaStore::read`] otherwise. Listings always go through `read`.
    async fn read_inline<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pooled = match self.readers.try_lock() {
            Ok(mut idle) => idle.pop(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().pop(),
            Err(TryLockError::WouldBlock) => None,
        };
        let Some(conn) = pooled else { return self.read(f).await };
        let result = f(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs `f` with the writer connection on a blocking thread.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (writer, waiting) = (self.writer.clone(), self.waiting.clone());
        waiting.fetch_add(1, Ordering::SeqCst);
        let r = tokio::task::spawn_blocking(move || {
            let mut conn = writer.lock().unwrap_or_else(|p| p.into_inner());
            waiting.fetch_sub(1, Ordering::SeqCst);
            f(&mut conn)
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))?;
        self.wrote();
        r
    }

    /// Runs `f` with a pooled read-only connection on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        path.as_path(),
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                    )?;
                    configure(&c)?;
                    c
                }
            };
            let result = f(&conn);
            let mut idle = readers.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))?
    }
}

fn ensure_repo(tx: &rusqlite::Transaction<'_>, repo: &str, at: i64) -> Result<()> {
    tx.prepare_cached("INSERT INTO repositories (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")?
        .execute(params![repo, at])?;
    Ok(())
}

fn link(tx: &rusqlite::Transaction<'_>, repo: &str, digest: &str, size: u64, at: i64) -> Result<()> {
    ensure_repo(tx, repo, at)?;
    tx.prepare_cached(
        "INSERT INTO blobs (digest, size, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (digest) DO NOTHING",
    )?
    .execute(params![digest, to_i64(size), at])?;
    tx.prepare_cached(
        "INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (repo, digest) DO UPDATE SET created_at = excluded.created_at",
    )?
    .execute(params![repo, digest, at])?;
    Ok(())
}

fn immediate(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let d = digest.to_string();
        self.read_inline(move |c| {
            Ok(c.prepare_cached("SELECT size FROM blobs WHERE digest = ?1")?
                .query_row(params![d], |r| r.get::<_, i64>(0))
                .optional()?
                .map(|s| s as u64))
        })
        .await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, check: LockedCheck) -> Result<()> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |c| {
            let tx = immediate(c)?;
            check().map_err(MetaError::Precondition)?;
            link(&tx, &repo, &digest, size, now())?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.read_inline(move |c| {
            Ok(c.prepare_cached(
                "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = ?1 AND rb.digest = ?2",
            )?
            .query_row(params![repo, digest], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|s| s as u64))
        })
        .await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2")?
                .execute(params![repo, digest])?
                > 0)
        })
        .await
    }

    async fn put_manifest(&self, repo: &RepoName, m: &NewManifest, tags: &[Tag], protected: &[Tag]) -> Result<()> {
        let repo = repo.to_string();
        let m = m.clone();
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let protected: Vec<String> = protected.iter().map(|t| t.to_string()).collect();
        self.write_inline(move |c| {
            let at = now();
            let tx = immediate(c)?;
            {
                let mut linked = tx.prepare_cached("SELECT 1 FROM repo_blobs WHERE repo = ?1 AND digest = ?2")?;
                for b in &m.blobs {
                    if !linked.exists(params![repo, b.to_string()])? {
                        return Err(MetaError::MissingBlob(b.clone()));
                    }
                }
                if m.require_children {
                    let mut found = tx.prepare_cached("SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2")?;
                    for child in &m.children {
                        if !found.exists(params![repo, child.to_string()])? {
                            return Err(MetaError::MissingManifest(child.clone()));
                        }
                    }
                }
            }
            let digest = m.digest.to_string();
            if !protected.is_empty() {
                let mut current = tx.prepare_cached("SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2")?;
                for t in &protected {
                    let now_at: Option<String> =
                        current.query_row(params![repo, t], |r| r.get(0)).optional()?;
                    if let Some(d) = now_at.filter(|d| *d != digest) {
                        return Err(MetaError::TagProtected { tag: t.clone(), current: parse_digest(&d)? });
                    }
                }
            }
            ensure_repo(&tx, &repo, at)?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO manifests (repo, digest, media_type, content, artifact_type, subject, annotations, created_at, pushed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) ON CONFLICT (repo, digest) DO NOTHING",
                )?
                .execute(params![
                    repo,
                    digest,
                    m.media_type,
                    m.content,
                    m.artifact_type,
                    m.subject.as_ref().map(Digest::to_string),
                    m.annotations,
                    at
                ])?;
            if inserted == 0 {
                // Pushed again: garbage collection's grace period starts over.
                tx.prepare_cached("UPDATE manifests SET pushed_at = ?3 WHERE repo = ?1 AND digest = ?2")?
                    .execute(params![repo, digest, at])?;
            } else {
                let mut refs = tx.prepare_cached(
                    "INSERT INTO manifest_refs (repo, digest, target, kind) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?;
                for b in &m.blobs {
                    refs.execute(params![repo, digest, b.to_string(), "blob"])?;
                }
                for child in &m.children {
                    refs.execute(params![repo, digest, child.to_string(), "manifest"])?;
                }
            }
            {
                let mut tag = tx.prepare_cached(
                    "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                )?;
                for t in &tags {
                    tag.execute(params![repo, t, digest, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let (repo, d) = (repo.to_string(), digest.clone());
        self.read_inline(move |c| {
            Ok(c.prepare_cached("SELECT media_type, content FROM manifests WHERE repo = ?1 AND digest = ?2")?
                .query_row(params![repo, d.to_string()], |r| {
                    Ok(ManifestRecord { digest: d.clone(), media_type: r.get(0)?, content: r.get(1)? })
                })
                .optional()?)
        })
        .await
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.read_inline(move |c| {
            c.prepare_cached("SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2")?
                .query_row(params![repo, tag], |r| r.get::<_, String>(0))
                .optional()?
                .map(|d| parse_digest(&d))
                .transpose()
        })
        .await
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, d) = (repo.to_string(), digest.to_string());
        self.write(move |c| {
            let tx = immediate(c)?;
            let n = tx
                .prepare_cached("DELETE FROM manifests WHERE repo = ?1 AND digest = ?2")?
                .execute(params![repo, d])?;
            tx.prepare_cached("DELETE FROM tags WHERE repo = ?1 AND digest = ?2")?.execute(params![repo, d])?;
            tx.prepare_cached("DELETE FROM manifest_refs WHERE repo = ?1 AND digest = ?2")?
                .execute(params![repo, d])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.write(move |c| {
            Ok(c.prepare_cached("DELETE FROM tags WHERE repo = ?1 AND tag = ?2")?.execute(params![repo, tag])? > 0)
        })
        .await
    }

    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let (repo, last) = (repo.to_string(), last.unwrap_or("").to_string());
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT tag FROM tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3")?;
            let rows = st.query_map(params![repo, last, to_i64(n as u64)], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let last = last.unwrap_or("").to_string();
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT name FROM repositories WHERE name > ?1 ORDER BY name LIMIT ?2")?;
            let rows = st.query_map(params![last, to_i64(n as u64)], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let repo = repo.to_string();
        self.read_inline(move |c| {
            Ok(c.prepare_cached("SELECT 1 FROM repositories WHERE name = ?1")?.exists(params![repo])?)
        })
        .await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT digest, media_type, length(content), artifact_type, annotations FROM manifests
                 WHERE repo = ?1 AND subject = ?2 ORDER BY digest",
            )?;
            let rows = st.query_map(params![repo, subject], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (digest, media_type, size, artifact_type, annotations) = row?;
                out.push(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type,
                    size: size as u64,
                    artifact_type,
                    annotations,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<()> {
        let s = s.clone();
        self.write_inline(move |c| {
            c.prepare_cached(
                "INSERT INTO uploads (id, repo, algorithm, byte_offset, hash_state, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                s.id.as_str(),
                s.repo.as_str(),
                s.algorithm.as_str(),
                to_i64(s.offset),
                s.hash_state,
                s.created_at,
                s.updated_at
            ])?;
            Ok(())
        })
        .await
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let id = id.clone();
        // Through the writer: a session is read right before it is advanced and must be the latest.
        self.write_inline(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT repo, algorithm, byte_offset, hash_state, created_at, updated_at FROM uploads WHERE id = ?1",
                )?
                .query_row(params![id.as_str()], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .optional()?;
            let Some((repo, algorithm, offset, hash_state, created_at, updated_at)) = row else { return Ok(None) };
            Ok(Some(UploadSession {
                repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
                algorithm: Algorithm::parse(&algorithm).map_err(|e| MetaError::Corrupt(e.to_string()))?,
                offset: offset as u64,
                hash_state,
                created_at,
                updated_at,
                id,
            }))
        })
        .await
    }

    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        offset: u64,
        hash_state: &[u8],
        now: i64,
    ) -> Result<bool> {
        let (id, hash_state) = (id.to_string(), hash_state.to_vec());
        self.write_inline(move |c| {
            Ok(c.prepare_cached(
                "UPDATE uploads SET byte_offset = ?1, hash_state = ?2, updated_at = ?3 WHERE id = ?4 AND byte_offset = ?5",
            )?
            .execute(params![to_i64(offset), hash_state, now, id, to_i64(expected_offset)])?
                > 0)
        })
        .await
    }

    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        check: LockedCheck,
    ) -> Result<()> {
        let (id, repo, digest) = (id.to_string(), repo.to_string(), digest.to_string());
        self.write(move |c| {
            let tx = immediate(c)?;
            check().map_err(MetaError::Precondition)?;
            link(&tx, &repo, &digest, size, now())?;
            tx.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute(params![id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let id = id.to_string();
        self.write_inline(move |c| Ok(c.prepare_cached("DELETE FROM uploads WHERE id = ?1")?.execute(params![id])? > 0))
            .await
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadId>> {
        self.read(move |c| {
            let mut st = c.prepare_cached("SELECT id FROM uploads WHERE updated_at < ?1")?;
            let rows = st.query_map(params![before], |r| r.get::<_, String>(0))?;
            let ids = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids.iter().filter_map(|s| UploadId::parse(s)).collect())
        })
        .await
    }

    async fn gc_repository(
        &self,
        repo: &RepoName,
        policy: &ManifestGcPolicy,
    ) -> Result<(Vec<CollectedManifest>, Vec<CollectedLink>)> {
        let (repo, policy) = (repo.to_string(), *policy);
        self.write(move |c| {
            let tx = immediate(c)?;
            let manifests = crate::lifecycle::gc_manifests(&tx, &repo, &policy)?;
            let links = crate::lifecycle::gc_links(&tx, &repo, policy.cutoff)?;
            if policy.dry_run {
                tx.rollback()?;
            } else {
                tx.commit()?;
            }
            Ok((manifests, links))
        })
        .await
    }

    async fn blob_records(&self, unlinked_only: bool) -> Result<Vec<BlobRecord>> {
        self.read(move |c| crate::lifecycle::blob_records(c, unlinked_only)).await
    }

    async fn sweep_blob(&self, digest: &Digest, sweep: LockedSweep) -> Result<SweepOutcome> {
        let digest = digest.to_string();
        self.write(move |c| {
            let tx = immediate(c)?;
            let outcome = crate::lifecycle::sweep_blob(&tx, &digest, sweep)?;
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn forget_blob(&self, digest: &Digest) -> Result<Vec<String>> {
        let digest = digest.to_string();
        self.write(move |c| {
            let tx = immediate(c)?;
            let repos = crate::lifecycle::forget_blob(&tx, &digest)?;
            tx.commit()?;
            Ok(repos)
        })
        .await
    }

    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>> {
        let repo = repo.to_string();
        self.read(move |c| crate::lifecycle::tag_records(c, &repo)).await
    }

    async fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, digest: &Digest, updated_at: i64) -> Result<bool> {
        let (repo, tag, digest) = (repo.to_string(), tag.to_string(), digest.to_string());
        self.write(move |c| crate::lifecycle::delete_tag_if(c, &repo, &tag, &digest, updated_at)).await
    }

    async fn repo_usage(&self, repo: &RepoName) -> Result<RepoUsage> {
        let repo = repo.to_string();
        self.read(move |c| crate::lifecycle::repo_usage(c, &repo)).await
    }

    async fn all_usage(&self) -> Result<Vec<RepoUsage>> {
        self.read(crate::lifecycle::all_usage).await
    }

    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let repo = repo.to_string();
        self.read(move |c| crate::lifecycle::manifest_digests(c, &repo)).await
    }

    async fn try_gc_lock(&self) -> Result<Option<crate::GcLock>> {
        // An exclusive lock on a file beside the database: held by one process (and one store) at a
        // time, released by the kernel if the holder dies.
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".gc-lock");
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&name)
                .map_err(|e| MetaError::Db(format!("cannot open the garbage collection lock file: {e}")))?;
            match file.try_lock() {
                Ok(()) => Ok(Some(crate::GcLock::new(file))),
                Err(std::fs::TryLockError::WouldBlock) => Ok(None),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(MetaError::Db(format!("cannot lock the garbage collection lock file: {e}")))
                }
            }
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))?
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?
                .query_row(params![key], |r| r.get::<_, String>(0))
                .optional()?)
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        let (key, value) = (key.to_string(), value.map(str::to_string));
        self.write(move |c| {
            match value {
                Some(v) => c
                    .prepare_cached(
                        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )?
                    .execute(params![key, v, now()])?,
                None => c.prepare_cached("DELETE FROM settings WHERE key = ?1")?.execute(params![key])?,
            };
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteMetaStore::open(&dir.path().join("meta.db")).await.expect("open");
        crate::testsuite::run_all(&store).await;
    }

    /// With the automatic checkpoint off on the writer, the store's own checkpoints must keep the WAL
    /// from growing with the number of writes (inline or not).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let store = SqliteMetaStore::open(&path).await.expect("open");
        let repo = RepoName::parse("a/b").expect("name");
        let writes = 4_000u64;
        for i in 0..writes {
            let s = UploadSession {
                id: UploadId::parse(&format!("u-{i}")).expect("id"),
                repo: repo.clone(),
                algorithm: Algorithm::Sha256,
                offset: 0,
                hash_state: vec![0; 200],
                created_at: 0,
                updated_at: 0,
            };
            store.create_upload(&s).await.expect("create");
            store.advance_upload(&s.id, 0, 1, &[1; 200], 1).await.expect("advance");
        }
        // Let the last background checkpoint finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let wal = std::fs::metadata(dir.path().join("meta.db-wal")).map_or(0, |m| m.len());
        // Without checkpoints this is 8,000 transactions of a few 4 KiB pages each (over 30 MiB).
        assert!(wal < 8 * 1024 * 1024, "the WAL grew to {wal} bytes over {writes} × 2 writes");
        let n = store.stale_uploads(i64::MAX).await.expect("stale");
        assert_eq!(n.len() as u64, writes);
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let repo = RepoName::parse("a/b").expect("name");
        let d = Digest::sha256(b"x");
        {
            let store = SqliteMetaStore::open(&path).await.expect("open");
            store.link_blob(&repo, &d, 1, crate::no_check()).await.expect("link");
        }
        let store = SqliteMetaStore::open(&path).await.expect("reopen");
        assert_eq!(store.repo_blob_size(&repo, &d).await.expect("size"), Some(1));
    }
}
