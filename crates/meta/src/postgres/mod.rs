//! The shared backend: metadata in PostgreSQL, for several stateless Entrepôt instances behind a load
//! balancer (and `entrepot gc` / `scrub` beside them).
//!
//! Same semantics as the SQLite backend, which is the reference: every multi-row change is one
//! transaction; upload offsets advance by compare-and-swap (`UPDATE … WHERE byte_offset = expected`),
//! so consecutive PATCHes of one upload may reach different instances; tags are moved inside the
//! manifest transaction (immutable tags checked there).
//!
//! # Locking: the equivalent of SQLite's single write lock
//! SQLite serialises every write; the garbage collection argument (`entrepot-registry`'s `gc` module)
//! relies on two consequences of it, which here come from transaction-level advisory locks, taken in a
//! fixed order (repository, then blob) so that they cannot deadlock:
//! - **Per repository** (`NS_REPO`): every transaction that changes a repository's links, manifests,
//!   references or tags holds its repository's lock, so [`MetaStore::gc_repository`]'s marking and
//!   deleting sees no push, tag or delete interleave — each is entirely before or after it, as with
//!   SQLite. A manifest push checks its blobs and children under the same lock.
//! - **Per blob** (`NS_BLOB`): recording a blob ([`MetaStore::link_blob`], [`MetaStore::complete_upload`]
//!   — their [`LockedCheck`] that the bytes are present runs while the lock is held) and sweeping it
//!   ([`MetaStore::sweep_blob`], whose [`LockedSweep`] deletes the bytes under the lock after checking
//!   no repository links it) exclude each other. So the store never records a link to bytes a sweep
//!   removed, and never sweeps a linked blob — across every instance.
//!
//! Locks are keyed by a 32-bit FNV-1a hash of the name: a collision only serialises two unrelated
//! names. The garbage collection *run* lock ([`MetaStore::try_gc_lock`]) is a session-level
//! `pg_try_advisory_lock` on a dedicated connection, released when the lock is dropped or the holder's
//! connection dies. Must never know about HTTP, nor hold a lock across anything but the callbacks.

mod outbox;
mod pool;
mod schema;

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use entrepot_oci::{Algorithm, Digest, RepoName, Tag, UploadId};

use crate::lifecycle::{
    BlobRecord, CollectedLink, CollectedManifest, LockedCheck, LockedSweep, ManifestGcPolicy, ManifestRow, RepoUsage,
    SweepOutcome, TagRecord,
};
use crate::{GcLock, ManifestRecord, MetaError, MetaStore, NewManifest, Referrer, Result, UploadSession};

/// Advisory lock namespaces (the first key of `pg_advisory_xact_lock(int, int)`): "En" then a kind.
pub(crate) const NS_GLOBAL: i32 = 0x456e_7400;
const NS_REPO: i32 = 0x456e_7401;
const NS_BLOB: i32 = 0x456e_7402;
/// The garbage collection run, in `NS_GLOBAL`.
const GC_LOCK: i32 = 2;

/// Connections a store keeps at most (per instance).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

const LOCK: &str = "SELECT pg_advisory_xact_lock($1, $2)";

impl From<tokio_postgres::Error> for MetaError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => MetaError::Db(format!("{}: {} ({})", db.severity(), db.message(), db.code().code())),
            None => {
                // The causes (a refused certificate, a refused connection) are in the source chain.
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text.push_str(": ");
                    text.push_str(&c.to_string());
                    cause = c.source();
                }
                MetaError::Db(text)
            }
        }
    }
}

/// 32-bit FNV-1a: the same key for the same name in every instance and every version.
fn key(s: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// Runs a caller's check on a blocking thread (it touches the blob store) while the transaction holds
/// its locks.
async fn run_check(check: LockedCheck) -> Result<()> {
    tokio::task::spawn_blocking(check).await.map_err(|e| MetaError::Db(e.to_string()))?.map_err(MetaError::Precondition)
}

/// Metadata in a PostgreSQL database shared by every instance.
#[derive(Clone)]
pub struct PgMetaStore {
    pool: std::sync::Arc<pool::Pool>,
}

impl std::fmt::Debug for PgMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.write_str("PgMetaStore")
    }
}

impl PgMetaStore {
    /// Runs `sql` (a `DELETE … WHERE repo = $1 AND … = $2`) in a transaction holding the repository's
    /// advisory lock, as every change to a repository does; whether a row went.
    async fn delete_under_repo_lock(&self, repo: &RepoName, sql: &'static str, second: &str) -> Result<bool> {
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let del = c.prep(sql).await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo.as_str())]).await?;
        let n = tx.execute(&del, &[&repo.as_str(), &second]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Connects to the database `url` names (`postgres://user[:password]@host[:port]/db[?sslmode=…]`)
    /// with at most [`DEFAULT_MAX_CONNECTIONS`] connections, and applies the migrations it lacks.
    pub async fn connect(url: &str) -> Result<PgMetaStore> {
        PgMetaStore::connect_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// As [`PgMetaStore::connect`], with at most `max_connections` connections.
    pub async fn connect_with(url: &str, max_connections: usize) -> Result<PgMetaStore> {
        let pool = pool::Pool::new(url, max_connections)?;
        let mut conn = pool.get().await?;
        schema::migrate(&mut conn.client).await?;
        drop(conn);
        Ok(PgMetaStore { pool: std::sync::Arc::new(pool) })
    }

    /// Whether the database holds no registry data at all (no repository, blob, manifest, tag, upload
    /// or outbox row): the precondition of copying another registry's metadata into it.
    pub async fn is_empty(&self) -> Result<bool> {
        let c = self.pool.get().await?;
        let row = c
            .client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM repositories) AND NOT EXISTS (SELECT 1 FROM blobs)
                    AND NOT EXISTS (SELECT 1 FROM repo_blobs) AND NOT EXISTS (SELECT 1 FROM manifests)
                    AND NOT EXISTS (SELECT 1 FROM tags) AND NOT EXISTS (SELECT 1 FROM uploads)
                    AND NOT EXISTS (SELECT 1 FROM event_outbox)",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    pub(crate) async fn conn(&self) -> Result<pool::Pooled> {
        self.pool.get().await
    }
}

/// Inserts the repository if it is new.
const ENSURE_REPO: &str = "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const INSERT_BLOB: &str =
    "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING";
const UPSERT_LINK: &str = "INSERT INTO repo_blobs (repo, digest, created_at) VALUES ($1, $2, $3)
     ON CONFLICT (repo, digest) DO UPDATE SET created_at = excluded.created_at";

/// The statements that record a blob and link it: [`ENSURE_REPO`], [`INSERT_BLOB`], [`UPSERT_LINK`].
async fn link_statements(c: &mut pool::Conn) -> Result<[tokio_postgres::Statement; 3]> {
    Ok([c.prep(ENSURE_REPO).await?, c.prep(INSERT_BLOB).await?, c.prep(UPSERT_LINK).await?])
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT size FROM blobs WHERE digest = $1").await?;
        let row = c.client.query_opt(&st, &[&digest.to_string()]).await?;
        row.map(|r| r.try_get::<_, i64>(0).map(to_u64)).transpose().map_err(Into::into)
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64, check: LockedCheck) -> Result<()> {
        let (repo, digest) = (repo.as_str(), digest.to_string());
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let [ensure, blob, upsert] = link_statements(&mut c).await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo)]).await?;
        tx.execute(&lock, &[&NS_BLOB, &key(&digest)]).await?;
        run_check(check).await?;
        let at = now();
        tx.execute(&ensure, &[&repo, &at]).await?;
        tx.execute(&blob, &[&digest, &to_i64(size), &at]).await?;
        tx.execute(&upsert, &[&repo, &digest, &at]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let mut c = self.conn().await?;
        let st = c
            .prep(
                "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = $1 AND rb.digest = $2",
            )
            .await?;
        let row = c.client.query_opt(&st, &[&repo.as_str(), &digest.to_string()]).await?;
        row.map(|r| r.try_get::<_, i64>(0).map(to_u64)).transpose().map_err(Into::into)
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.delete_under_repo_lock(repo, "DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2", &digest.to_string())
            .await
    }

    async fn put_manifest(&self, repo: &RepoName, m: &NewManifest, tags: &[Tag], protected: &[Tag]) -> Result<()> {
        let repo = repo.as_str();
        let digest = m.digest.to_string();
        let blobs: Vec<String> = m.blobs.iter().map(Digest::to_string).collect();
        let children: Vec<String> = m.children.iter().map(Digest::to_string).collect();
        let mut tag_names: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            if !tag_names.iter().any(|x| x == t.as_str()) {
                tag_names.push(t.to_string());
            }
        }
        let protected: Vec<String> = protected.iter().map(|t| t.to_string()).collect();

        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let linked = c.prep("SELECT digest FROM repo_blobs WHERE repo = $1 AND digest = ANY($2)").await?;
        let present = c.prep("SELECT digest FROM manifests WHERE repo = $1 AND digest = ANY($2)").await?;
        let current = c.prep("SELECT tag, digest FROM tags WHERE repo = $1 AND tag = ANY($2)").await?;
        let ensure = c.prep(ENSURE_REPO).await?;
        let insert = c
            .prep(
                "INSERT INTO manifests (repo, digest, media_type, content, artifact_type, subject, annotations, created_at, pushed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (repo, digest) DO NOTHING",
            )
            .await?;
        let renew = c.prep("UPDATE manifests SET pushed_at = $3 WHERE repo = $1 AND digest = $2").await?;
        let refs = c
            .prep(
                "INSERT INTO manifest_refs (repo, digest, target, kind) SELECT $1, $2, t, $4 FROM unnest($3::text[]) AS t
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        let set_tags = c
            .prep(
                "INSERT INTO tags (repo, tag, digest, updated_at) SELECT $1, t, $3, $4 FROM unnest($2::text[]) AS t
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .await?;

        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo)]).await?;
        let at = now();
        if !blobs.is_empty() {
            let found: HashSet<String> = tx
                .query(&linked, &[&repo, &blobs])
                .await?
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<std::result::Result<_, _>>()?;
            if let Some(missing) = m.blobs.iter().zip(&blobs).find(|(_, s)| !found.contains(*s)) {
                return Err(MetaError::MissingBlob(missing.0.clone()));
            }
        }
        if m.require_children && !children.is_empty() {
            let found: HashSet<String> = tx
                .query(&present, &[&repo, &children])
                .await?
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<std::result::Result<_, _>>()?;
            if let Some(missing) = m.children.iter().zip(&children).find(|(_, s)| !found.contains(*s)) {
                return Err(MetaError::MissingManifest(missing.0.clone()));
            }
        }
        if !protected.is_empty() {
            let now_at: HashMap<String, String> = tx
                .query(&current, &[&repo, &protected])
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
                .collect::<std::result::Result<_, tokio_postgres::Error>>()?;
            for t in &protected {
                if let Some(d) = now_at.get(t).filter(|d| **d != digest) {
                    return Err(MetaError::TagProtected { tag: t.clone(), current: parse_digest(d)? });
                }
            }
        }
        tx.execute(&ensure, &[&repo, &at]).await?;
        let subject = m.subject.as_ref().map(Digest::to_string);
        let inserted = tx
            .execute(
                &insert,
                &[&repo, &digest, &m.media_type, &m.content, &m.artifact_type, &subject, &m.annotations, &at],
            )
            .await?;
        if inserted == 0 {
            // Pushed again: garbage collection's grace period starts over.
            tx.execute(&renew, &[&repo, &digest, &at]).await?;
        } else {
            if !blobs.is_empty() {
                tx.execute(&refs, &[&repo, &digest, &blobs, &"blob"]).await?;
            }
            if !children.is_empty() {
                tx.execute(&refs, &[&repo, &digest, &children, &"manifest"]).await?;
            }
        }
        if !tag_names.is_empty() {
            tx.execute(&set_tags, &[&repo, &tag_names, &digest, &at]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT media_type, content FROM manifests WHERE repo = $1 AND digest = $2").await?;
        let Some(row) = c.client.query_opt(&st, &[&repo.as_str(), &digest.to_string()]).await? else {
            return Ok(None);
        };
        Ok(Some(ManifestRecord { digest: digest.clone(), media_type: row.try_get(0)?, content: row.try_get(1)? }))
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT digest FROM tags WHERE repo = $1 AND tag = $2").await?;
        let row = c.client.query_opt(&st, &[&repo.as_str(), &tag.as_str()]).await?;
        row.map(|r| parse_digest(&r.try_get::<_, String>(0)?)).transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let (repo, d) = (repo.as_str(), digest.to_string());
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let del_m = c.prep("DELETE FROM manifests WHERE repo = $1 AND digest = $2").await?;
        let del_t = c.prep("DELETE FROM tags WHERE repo = $1 AND digest = $2").await?;
        let del_r = c.prep("DELETE FROM manifest_refs WHERE repo = $1 AND digest = $2").await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo)]).await?;
        let n = tx.execute(&del_m, &[&repo, &d]).await?;
        tx.execute(&del_t, &[&repo, &d]).await?;
        tx.execute(&del_r, &[&repo, &d]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        self.delete_under_repo_lock(repo, "DELETE FROM tags WHERE repo = $1 AND tag = $2", tag.as_str()).await
    }

    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3").await?;
        let rows = c.client.query(&st, &[&repo.as_str(), &last.unwrap_or(""), &to_i64(n as u64)]).await?;
        rows.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2").await?;
        let rows = c.client.query(&st, &[&last.unwrap_or(""), &to_i64(n as u64)]).await?;
        rows.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT 1 FROM repositories WHERE name = $1").await?;
        Ok(c.client.query_opt(&st, &[&repo.as_str()]).await?.is_some())
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let mut c = self.conn().await?;
        let st = c
            .prep(
                "SELECT digest, media_type, octet_length(content)::BIGINT, artifact_type, annotations FROM manifests
                 WHERE repo = $1 AND subject = $2 ORDER BY digest",
            )
            .await?;
        let rows = c.client.query(&st, &[&repo.as_str(), &subject.to_string()]).await?;
        rows.iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse_digest(&r.try_get::<_, String>(0)?)?,
                    media_type: r.try_get(1)?,
                    size: to_u64(r.try_get(2)?),
                    artifact_type: r.try_get(3)?,
                    annotations: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<()> {
        let mut c = self.conn().await?;
        let st = c
            .prep(
                "INSERT INTO uploads (id, repo, algorithm, byte_offset, hash_state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        c.client
            .execute(
                &st,
                &[
                    &s.id.as_str(),
                    &s.repo.as_str(),
                    &s.algorithm.as_str(),
                    &to_i64(s.offset),
                    &s.hash_state,
                    &s.created_at,
                    &s.updated_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        let mut c = self.conn().await?;
        let st = c
            .prep("SELECT repo, algorithm, byte_offset, hash_state, created_at, updated_at FROM uploads WHERE id = $1")
            .await?;
        let Some(r) = c.client.query_opt(&st, &[&id.as_str()]).await? else { return Ok(None) };
        let (repo, algorithm): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        Ok(Some(UploadSession {
            id: id.clone(),
            repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
            algorithm: Algorithm::parse(&algorithm).map_err(|e| MetaError::Corrupt(e.to_string()))?,
            offset: to_u64(r.try_get(2)?),
            hash_state: r.try_get(3)?,
            created_at: r.try_get(4)?,
            updated_at: r.try_get(5)?,
        }))
    }

    async fn advance_upload(
        &self,
        id: &UploadId,
        expected_offset: u64,
        offset: u64,
        hash_state: &[u8],
        now: i64,
    ) -> Result<bool> {
        let mut c = self.conn().await?;
        // Compare-and-swap: of two instances advancing from the same offset, the second finds the row
        // changed (PostgreSQL re-checks the condition after the first commits) and updates nothing.
        let st = c
            .prep(
                "UPDATE uploads SET byte_offset = $1, hash_state = $2, updated_at = $3 WHERE id = $4 AND byte_offset = $5",
            )
            .await?;
        let n = c
            .client
            .execute(&st, &[&to_i64(offset), &hash_state, &now, &id.as_str(), &to_i64(expected_offset)])
            .await?;
        Ok(n > 0)
    }

    async fn complete_upload(
        &self,
        id: &UploadId,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        check: LockedCheck,
    ) -> Result<()> {
        let (repo, digest) = (repo.as_str(), digest.to_string());
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let [ensure, blob, upsert] = link_statements(&mut c).await?;
        let del = c.prep("DELETE FROM uploads WHERE id = $1").await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo)]).await?;
        tx.execute(&lock, &[&NS_BLOB, &key(&digest)]).await?;
        run_check(check).await?;
        let at = now();
        tx.execute(&ensure, &[&repo, &at]).await?;
        tx.execute(&blob, &[&digest, &to_i64(size), &at]).await?;
        tx.execute(&upsert, &[&repo, &digest, &at]).await?;
        tx.execute(&del, &[&id.as_str()]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let mut c = self.conn().await?;
        let st = c.prep("DELETE FROM uploads WHERE id = $1").await?;
        Ok(c.client.execute(&st, &[&id.as_str()]).await? > 0)
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadId>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT id FROM uploads WHERE updated_at < $1").await?;
        let rows = c.client.query(&st, &[&before]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(id) = UploadId::parse(&r.try_get::<_, String>(0)?) {
                out.push(id);
            }
        }
        Ok(out)
    }

    async fn gc_repository(
        &self,
        repo: &RepoName,
        policy: &ManifestGcPolicy,
    ) -> Result<(Vec<CollectedManifest>, Vec<CollectedLink>)> {
        let repo = repo.as_str();
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let manifests = c
            .prep("SELECT digest, subject, pushed_at, octet_length(content)::BIGINT FROM manifests WHERE repo = $1")
            .await?;
        let child_refs =
            c.prep("SELECT digest, target FROM manifest_refs WHERE repo = $1 AND kind = 'manifest'").await?;
        let tagged = c.prep("SELECT DISTINCT digest FROM tags WHERE repo = $1").await?;
        let del_m = c.prep("DELETE FROM manifests WHERE repo = $1 AND digest = ANY($2)").await?;
        let del_t = c.prep("DELETE FROM tags WHERE repo = $1 AND digest = ANY($2)").await?;
        let del_r = c.prep("DELETE FROM manifest_refs WHERE repo = $1 AND digest = ANY($2)").await?;
        let unused = c
            .prep(
                "SELECT rb.digest, COALESCE(b.size, 0) FROM repo_blobs rb LEFT JOIN blobs b ON b.digest = rb.digest
                 WHERE rb.repo = $1 AND rb.created_at < $2
                   AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                                   WHERE mr.target = rb.digest AND mr.repo = rb.repo AND mr.kind = 'blob')
                 ORDER BY rb.digest",
            )
            .await?;
        let del_l = c.prep("DELETE FROM repo_blobs WHERE repo = $1 AND digest = ANY($2)").await?;

        let tx = c.client.transaction().await?;
        // Every push, tag and delete in this repository waits for this transaction (see the module docs).
        tx.execute(&lock, &[&NS_REPO, &key(repo)]).await?;
        let mut all: HashMap<String, ManifestRow> = HashMap::new();
        for r in tx.query(&manifests, &[&repo]).await? {
            let size: i64 = r.try_get(3)?;
            all.insert(
                r.try_get(0)?,
                ManifestRow { subject: r.try_get(1)?, pushed_at: r.try_get(2)?, size: to_u64(size) },
            );
        }
        let mut dead = Vec::new();
        if !all.is_empty() {
            let mut children: HashMap<String, Vec<String>> = HashMap::new();
            for r in tx.query(&child_refs, &[&repo]).await? {
                children.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
            }
            let tagged: HashSet<String> = tx
                .query(&tagged, &[&repo])
                .await?
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<std::result::Result<_, _>>()?;
            dead = crate::lifecycle::collectable(&all, &children, &tagged, policy)?;
            if !dead.is_empty() {
                let ds: Vec<String> = dead.iter().map(|m| m.digest.to_string()).collect();
                tx.execute(&del_m, &[&repo, &ds]).await?;
                tx.execute(&del_t, &[&repo, &ds]).await?;
                tx.execute(&del_r, &[&repo, &ds]).await?;
            }
        }
        let mut links = Vec::new();
        for r in tx.query(&unused, &[&repo, &policy.cutoff]).await? {
            links.push(CollectedLink {
                digest: parse_digest(&r.try_get::<_, String>(0)?)?,
                size: to_u64(r.try_get(1)?),
            });
        }
        if !links.is_empty() {
            let ds: Vec<String> = links.iter().map(|l| l.digest.to_string()).collect();
            tx.execute(&del_l, &[&repo, &ds]).await?;
        }
        if policy.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok((dead, links))
    }

    async fn blob_records(&self, unlinked_only: bool) -> Result<Vec<BlobRecord>> {
        let mut c = self.conn().await?;
        let st = if unlinked_only {
            c.prep(
                "SELECT b.digest, b.size, b.created_at, 0::BIGINT FROM blobs b
                 WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest) ORDER BY b.digest",
            )
            .await?
        } else {
            c.prep(
                "SELECT b.digest, b.size, b.created_at, (SELECT COUNT(*) FROM repo_blobs rb WHERE rb.digest = b.digest)
                 FROM blobs b ORDER BY b.digest",
            )
            .await?
        };
        let rows = c.client.query(&st, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(BlobRecord {
                    digest: parse_digest(&r.try_get::<_, String>(0)?)?,
                    size: to_u64(r.try_get(1)?),
                    created_at: r.try_get(2)?,
                    links: to_u64(r.try_get(3)?),
                })
            })
            .collect()
    }

    async fn sweep_blob(&self, digest: &Digest, sweep: LockedSweep) -> Result<SweepOutcome> {
        let d = digest.to_string();
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let linked = c.prep("SELECT 1 FROM repo_blobs WHERE digest = $1 LIMIT 1").await?;
        let del = c.prep("DELETE FROM blobs WHERE digest = $1").await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_BLOB, &key(&d)]).await?;
        if tx.query_opt(&linked, &[&d]).await?.is_some() {
            return Ok(SweepOutcome::Linked);
        }
        let gone = tokio::task::spawn_blocking(sweep)
            .await
            .map_err(|e| MetaError::Db(e.to_string()))?
            .map_err(MetaError::Precondition)?;
        if !gone {
            return Ok(SweepOutcome::Kept);
        }
        tx.execute(&del, &[&d]).await?;
        tx.commit().await?;
        Ok(SweepOutcome::Removed)
    }

    async fn forget_blob(&self, digest: &Digest) -> Result<Vec<String>> {
        let d = digest.to_string();
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let unlink = c.prep("DELETE FROM repo_blobs WHERE digest = $1 RETURNING repo").await?;
        let del = c.prep("DELETE FROM blobs WHERE digest = $1").await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_BLOB, &key(&d)]).await?;
        let mut repos: Vec<String> = tx
            .query(&unlink, &[&d])
            .await?
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<std::result::Result<_, _>>()?;
        tx.execute(&del, &[&d]).await?;
        tx.commit().await?;
        repos.sort();
        Ok(repos)
    }

    async fn tag_records(&self, repo: &RepoName) -> Result<Vec<TagRecord>> {
        let mut c = self.conn().await?;
        let st =
            c.prep("SELECT tag, digest, updated_at FROM tags WHERE repo = $1 ORDER BY updated_at DESC, tag").await?;
        let rows = c.client.query(&st, &[&repo.as_str()]).await?;
        rows.iter()
            .map(|r| {
                Ok(TagRecord {
                    tag: r.try_get(0)?,
                    digest: parse_digest(&r.try_get::<_, String>(1)?)?,
                    updated_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn delete_tag_if(&self, repo: &RepoName, tag: &Tag, digest: &Digest, updated_at: i64) -> Result<bool> {
        let mut c = self.conn().await?;
        let lock = c.prep(LOCK).await?;
        let del = c.prep("DELETE FROM tags WHERE repo = $1 AND tag = $2 AND digest = $3 AND updated_at = $4").await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&NS_REPO, &key(repo.as_str())]).await?;
        let n = tx.execute(&del, &[&repo.as_str(), &tag.as_str(), &digest.to_string(), &updated_at]).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn repo_usage(&self, repo: &RepoName) -> Result<RepoUsage> {
        let mut c = self.conn().await?;
        let st = c.prep(USAGE_ONE).await?;
        match c.client.query_opt(&st, &[&repo.as_str()]).await? {
            Some(r) => usage_row(&r),
            None => Ok(RepoUsage { repo: repo.to_string(), ..Default::default() }),
        }
    }

    async fn all_usage(&self) -> Result<Vec<RepoUsage>> {
        let mut c = self.conn().await?;
        let st = c.prep(USAGE_ALL).await?;
        c.client.query(&st, &[]).await?.iter().map(usage_row).collect()
    }

    async fn manifest_digests(&self, repo: &RepoName) -> Result<Vec<(Digest, u64)>> {
        let mut c = self.conn().await?;
        let st = c
            .prep("SELECT digest, octet_length(content)::BIGINT FROM manifests WHERE repo = $1 ORDER BY digest")
            .await?;
        let rows = c.client.query(&st, &[&repo.as_str()]).await?;
        rows.iter().map(|r| Ok((parse_digest(&r.try_get::<_, String>(0)?)?, to_u64(r.try_get(1)?)))).collect()
    }

    async fn try_gc_lock(&self) -> Result<Option<GcLock>> {
        // A session-level lock on a connection of its own, outside the pool: it lives exactly as long as
        // the returned guard (dropping the guard closes the connection, which releases the lock), and the
        // server releases it too if this process dies.
        let conn = self.pool.connect().await?;
        let got: bool =
            conn.client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&NS_GLOBAL, &GC_LOCK]).await?.try_get(0)?;
        Ok(got.then(|| GcLock::new(conn)))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT value FROM settings WHERE key = $1").await?;
        let row = c.client.query_opt(&st, &[&key]).await?;
        row.map(|r| r.try_get::<_, String>(0)).transpose().map_err(Into::into)
    }

    async fn set_setting(&self, key: &str, value: Option<&str>) -> Result<()> {
        let mut c = self.conn().await?;
        match value {
            Some(v) => {
                let st = c
                    .prep(
                        "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    )
                    .await?;
                c.client.execute(&st, &[&key, &v, &now()]).await?;
            }
            None => {
                let st = c.prep("DELETE FROM settings WHERE key = $1").await?;
                c.client.execute(&st, &[&key]).await?;
            }
        }
        Ok(())
    }
}

const USAGE_ONE: &str = "SELECT r.name,
        (SELECT COALESCE(SUM(b.size), 0)::BIGINT FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM repo_blobs rb WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM tags t WHERE t.repo = r.name),
        (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name)
     FROM repositories r WHERE r.name = $1";

const USAGE_ALL: &str = "SELECT r.name,
        (SELECT COALESCE(SUM(b.size), 0)::BIGINT FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM repo_blobs rb WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM tags t WHERE t.repo = r.name),
        (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name)
     FROM repositories r ORDER BY r.name";

fn usage_row(r: &tokio_postgres::Row) -> Result<RepoUsage> {
    let n = |i: usize| r.try_get::<_, i64>(i).map(to_u64);
    Ok(RepoUsage { repo: r.try_get(0)?, bytes: n(1)?, blobs: n(2)?, tags: n(3)?, manifests: n(4)? })
}

#[async_trait]
impl crate::MetaStats for PgMetaStore {
    async fn stored_bytes(&self) -> Result<u64> {
        let mut c = self.conn().await?;
        let st = c.prep("SELECT COALESCE(SUM(size), 0)::BIGINT FROM blobs").await?;
        Ok(to_u64(c.client.query_one(&st, &[]).await?.try_get(0)?))
    }
}
