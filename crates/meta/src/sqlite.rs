//! The embedded backend: one SQLite database file in WAL mode.
//!
//! Writes go through a single connection (SQLite allows one writer; queuing in-process avoids
//! `SQLITE_BUSY` storms), reads through a small pool. WAL with `synchronous=NORMAL` keeps every
//! committed transaction across a process crash (kill -9); `--sync full` style durability against power
//! loss is a pragma away if ever wanted.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use entrepot_oci::{Algorithm, Digest, RepoName, Tag, UploadId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};

use crate::{ManifestRecord, MetaError, MetaStore, NewManifest, Referrer, Result, UploadSession};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS repositories (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at BIGINT NOT NULL,
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
    created_at BIGINT NOT NULL,
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
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_digest ON tags (repo, digest);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    hash_state BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#;

/// Metadata in an embedded SQLite database.
#[derive(Clone)]
pub struct SqliteMetaStore {
    reader: SqlitePool,
    writer: SqlitePool,
}

fn db(e: sqlx::Error) -> MetaError {
    MetaError::Db(e.to_string())
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

impl SqliteMetaStore {
    /// Opens (creating if needed) the database file at `path` and applies the schema.
    pub async fn open(path: &Path) -> Result<SqliteMetaStore> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(db)?;
        sqlx::raw_sql(SCHEMA).execute(&writer).await.map_err(db)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.read_only(true))
            .await
            .map_err(db)?;
        Ok(SqliteMetaStore { reader, writer })
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

async fn ensure_repo(tx: &mut Transaction<'static, Sqlite>, repo: &RepoName, at: i64) -> Result<()> {
    sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(repo.as_str())
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let at = now();
        let mut tx = self.begin().await?;
        ensure_repo(&mut tx, repo, at).await?;
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(to_i64(size))
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO repo_blobs (repo, digest, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (repo, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn repo_blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.reader)
        .await
        .map_err(db)?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let r = sqlx::query("DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.to_string())
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn put_manifest(&self, repo: &RepoName, m: &NewManifest, tags: &[Tag]) -> Result<()> {
        let at = now();
        let mut tx = self.begin().await?;
        for b in &m.blobs {
            let linked = sqlx::query("SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2")
                .bind(repo.as_str())
                .bind(b.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if linked.is_none() {
                return Err(MetaError::MissingBlob(b.clone()));
            }
        }
        if m.require_children {
            for c in &m.children {
                let found = sqlx::query("SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(c.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                if found.is_none() {
                    return Err(MetaError::MissingManifest(c.clone()));
                }
            }
        }
        ensure_repo(&mut tx, repo, at).await?;
        let digest = m.digest.to_string();
        let inserted = sqlx::query(
            "INSERT INTO manifests (repo, digest, media_type, content, artifact_type, subject, annotations, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (repo, digest) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(&digest)
        .bind(&m.media_type)
        .bind(&m.content)
        .bind(&m.artifact_type)
        .bind(m.subject.as_ref().map(Digest::to_string))
        .bind(&m.annotations)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() > 0 {
            let refs = m.blobs.iter().map(|d| (d, "blob")).chain(m.children.iter().map(|d| (d, "manifest")));
            for (target, kind) in refs {
                sqlx::query(
                    "INSERT INTO manifest_refs (repo, digest, target, kind) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(repo.as_str())
                .bind(&digest)
                .bind(target.to_string())
                .bind(kind)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        for t in tags {
            sqlx::query(
                "INSERT INTO tags (repo, tag, digest, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo.as_str())
            .bind(t.as_str())
            .bind(&digest)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn get_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        let row = sqlx::query("SELECT media_type, content FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.map(|r| ManifestRecord { digest: digest.clone(), media_type: r.get(0), content: r.get(1) }))
    }

    async fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        let row = sqlx::query("SELECT digest FROM tags WHERE repo = $1 AND tag = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        row.map(|r| parse_digest(r.get::<&str, _>(0))).transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let d = digest.to_string();
        let mut tx = self.begin().await?;
        let r = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(&d)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for q in [
            "DELETE FROM tags WHERE repo = $1 AND digest = $2",
            "DELETE FROM manifest_refs WHERE repo = $1 AND digest = $2",
        ] {
            sqlx::query(q).bind(repo.as_str()).bind(&d).execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        let r = sqlx::query("DELETE FROM tags WHERE repo = $1 AND tag = $2")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn list_tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3")
            .bind(repo.as_str())
            .bind(last.unwrap_or(""))
            .bind(to_i64(n as u64))
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn list_repositories(&self, last: Option<&str>, n: usize) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(last.unwrap_or(""))
            .bind(to_i64(n as u64))
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, length(content), artifact_type, annotations FROM manifests
             WHERE repo = $1 AND subject = $2 ORDER BY digest",
        )
        .bind(repo.as_str())
        .bind(subject.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(Referrer {
                    digest: parse_digest(r.get::<&str, _>(0))?,
                    media_type: r.get(1),
                    size: r.get::<i64, _>(2) as u64,
                    artifact_type: r.get(3),
                    annotations: r.get(4),
                })
            })
            .collect()
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repo, algorithm, byte_offset, hash_state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id.as_str())
        .bind(s.repo.as_str())
        .bind(s.algorithm.as_str())
        .bind(to_i64(s.offset))
        .bind(&s.hash_state)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_upload(&self, id: &UploadId) -> Result<Option<UploadSession>> {
        // Read through the writer: an upload is read right before it is advanced, and must see the
        // latest committed offset.
        let row = sqlx::query(
            "SELECT repo, algorithm, byte_offset, hash_state, created_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.writer)
        .await
        .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let repo = RepoName::parse(r.get::<&str, _>(0)).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let algorithm = Algorithm::parse(r.get::<&str, _>(1)).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        Ok(Some(UploadSession {
            id: id.clone(),
            repo,
            algorithm,
            offset: r.get::<i64, _>(2) as u64,
            hash_state: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
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
        let r = sqlx::query(
            "UPDATE uploads SET byte_offset = $1, hash_state = $2, updated_at = $3 WHERE id = $4 AND byte_offset = $5",
        )
        .bind(to_i64(offset))
        .bind(hash_state)
        .bind(now)
        .bind(id.as_str())
        .bind(to_i64(expected_offset))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn delete_upload(&self, id: &UploadId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id.as_str())
            .execute(&self.writer)
            .await
            .map_err(db)?;
        Ok(r.rows_affected() > 0)
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<UploadId>> {
        let rows = sqlx::query("SELECT id FROM uploads WHERE updated_at < $1")
            .bind(before)
            .fetch_all(&self.reader)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().filter_map(|r| UploadId::parse(r.get::<&str, _>(0))).collect())
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

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.db");
        let repo = RepoName::parse("a/b").expect("name");
        let d = Digest::sha256(b"x");
        {
            let store = SqliteMetaStore::open(&path).await.expect("open");
            store.link_blob(&repo, &d, 1).await.expect("link");
        }
        let store = SqliteMetaStore::open(&path).await.expect("reopen");
        assert_eq!(store.repo_blob_size(&repo, &d).await.expect("size"), Some(1));
    }
}
