//! Where scan results live: one record per manifest digest (an image's inventory and findings, an index's
//! children, or why a manifest is not scanned) and which SBOM referrer was attached in which repository.
//!
//! The storage sits behind the small [`ScanStore`] trait so that a shared PostgreSQL implementation can come
//! later beside the metadata store's; today there is [`SqliteScanStore`], one SQLite file (`scan.db` in the data
//! directory) in WAL mode, which several processes (a server and the `entrepot scan` CLI) open at once. A
//! record is keyed by digest only: the same content pushed to two repositories is scanned once. This module
//! must never read layers or advisories, and never knows about HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use entrepot_inventory::Inventory;
use entrepot_oci::{Digest, RepoName};
use entrepot_vuln::Finding;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Errors of a scan store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("scan database: {0}")]
    Db(String),
    #[error("scan database row for {digest} is corrupt: {reason}")]
    Corrupt { digest: String, reason: String },
    #[error("scan database schema version {0} is newer than this build supports")]
    SchemaTooNew(i64),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// What a record describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    /// An image manifest whose layers were read.
    Image,
    /// An index: its platforms are scanned as separate image records.
    Index,
    /// Not an image (an SBOM, a signature, a Helm chart, …): nothing to scan; the reason says why.
    NotApplicable(String),
    /// Reading the layers failed (a corrupt layer, a missing blob); the message says why.
    Failed(String),
}

impl RecordKind {
    fn tag(&self) -> &'static str {
        match self {
            RecordKind::Image => "image",
            RecordKind::Index => "index",
            RecordKind::NotApplicable(_) => "n/a",
            RecordKind::Failed(_) => "failed",
        }
    }

    fn note(&self) -> Option<&str> {
        match self {
            RecordKind::NotApplicable(s) | RecordKind::Failed(s) => Some(s),
            _ => None,
        }
    }

    fn from_parts(tag: &str, note: Option<String>) -> Option<RecordKind> {
        Some(match tag {
            "image" => RecordKind::Image,
            "index" => RecordKind::Index,
            "n/a" => RecordKind::NotApplicable(note.unwrap_or_default()),
            "failed" => RecordKind::Failed(note.unwrap_or_default()),
            _ => return None,
        })
    }
}

/// One platform of an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRef {
    pub digest: Digest,
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
}

/// A stored scan result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRecord {
    pub digest: Digest,
    /// The repository the manifest was read from (any repository holding it gives the same result).
    pub repository: String,
    pub media_type: String,
    pub kind: RecordKind,
    /// The image's inventory (images only).
    pub inventory: Option<Inventory>,
    /// The platforms (indexes only).
    pub children: Vec<ChildRef>,
    /// The findings of the last match (images only).
    pub findings: Vec<Finding>,
    /// Unix seconds: when the layers were read.
    pub scanned_at: i64,
    /// Unix seconds: when the inventory was last matched against the advisories.
    pub matched_at: i64,
    /// The advisory database's import generation the findings were matched against.
    pub db_generation: i64,
}

/// The findings of one image after a re-match.
#[derive(Debug, Clone)]
pub struct Rematched {
    pub digest: Digest,
    pub findings: Vec<Finding>,
}

/// Storage of scan results.
#[async_trait]
pub trait ScanStore: Send + Sync + 'static {
    async fn get(&self, digest: &Digest) -> Result<Option<ScanRecord>, StoreError>;
    /// Inserts or replaces the record of `record.digest`.
    async fn put(&self, record: &ScanRecord) -> Result<(), StoreError>;
    /// Which of `digests` have a record that needs no new scan (anything but `Failed`).
    async fn settled(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError>;
    /// Image records with digests after `after`, in digest order, at most `limit`, with their inventories:
    /// the pages a re-match walks.
    async fn inventories(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, Inventory)>, StoreError>;
    /// Replaces the findings of many images at once (one transaction).
    async fn update_findings(&self, batch: &[Rematched], generation: i64, matched_at: i64) -> Result<(), StoreError>;
    /// The SBOM referrer attached to `subject` in `repo`, if any.
    async fn sbom(&self, repo: &RepoName, subject: &Digest) -> Result<Option<Digest>, StoreError>;
    async fn record_sbom(&self, repo: &RepoName, subject: &Digest, sbom: &Digest) -> Result<(), StoreError>;
    /// Number of records of each kind (`image`, `index`, `n/a`, `failed`).
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

const SCHEMA_VERSION: i64 = 1;

/// The SQLite scan store.
#[derive(Clone)]
pub struct SqliteScanStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteScanStore {
    /// Opens (creating if needed) the database at `path`. Blocking: call it before serving or in
    /// `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteScanStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew(version));
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS scans (
                     digest TEXT PRIMARY KEY,
                     repository TEXT NOT NULL,
                     media_type TEXT NOT NULL,
                     kind TEXT NOT NULL,
                     note TEXT,
                     inventory TEXT,
                     children TEXT,
                     findings TEXT,
                     scanned_at INTEGER NOT NULL,
                     matched_at INTEGER NOT NULL,
                     db_generation INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS sboms (
                     repository TEXT NOT NULL,
                     subject TEXT NOT NULL,
                     sbom TEXT NOT NULL,
                     PRIMARY KEY (repository, subject)
                 ) WITHOUT ROWID;
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(SqliteScanStore { conn: Arc::new(Mutex::new(conn)), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Db("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Db(format!("blocking task failed: {e}")))?
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Db(format!("cannot encode: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(digest: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt { digest: digest.to_string(), reason: e.to_string() })
}

fn parse_digest(s: &str) -> Result<Digest, StoreError> {
    Digest::parse(s).map_err(|e| StoreError::Corrupt { digest: s.to_string(), reason: e.to_string() })
}

type Row =
    (String, String, String, String, Option<String>, Option<String>, Option<String>, Option<String>, i64, i64, i64);

fn record_from_row(r: Row) -> Result<ScanRecord, StoreError> {
    let (digest, repository, media_type, kind, note, inventory, children, findings, scanned_at, matched_at, generation) =
        r;
    let kind = RecordKind::from_parts(&kind, note)
        .ok_or_else(|| StoreError::Corrupt { digest: digest.clone(), reason: format!("unknown kind {kind:?}") })?;
    Ok(ScanRecord {
        inventory: inventory.as_deref().map(|s| from_json(&digest, s)).transpose()?,
        children: children.as_deref().map(|s| from_json(&digest, s)).transpose()?.unwrap_or_default(),
        findings: findings.as_deref().map(|s| from_json(&digest, s)).transpose()?.unwrap_or_default(),
        digest: parse_digest(&digest)?,
        repository,
        media_type,
        kind,
        scanned_at,
        matched_at,
        db_generation: generation,
    })
}

#[async_trait]
impl ScanStore for SqliteScanStore {
    async fn get(&self, digest: &Digest) -> Result<Option<ScanRecord>, StoreError> {
        let key = digest.to_string();
        self.with(move |c| {
            let row: Option<Row> = c
                .prepare_cached(
                    "SELECT digest, repository, media_type, kind, note, inventory, children, findings, scanned_at,
                            matched_at, db_generation FROM scans WHERE digest = ?1",
                )?
                .query_row([&key], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                        r.get(10)?,
                    ))
                })
                .optional()?;
            row.map(record_from_row).transpose()
        })
        .await
    }

    async fn put(&self, record: &ScanRecord) -> Result<(), StoreError> {
        let inventory = record.inventory.as_ref().map(to_json).transpose()?;
        let children = if record.children.is_empty() { None } else { Some(to_json(&record.children)?) };
        let findings = to_json(&record.findings)?;
        let r = record.clone();
        self.with(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO scans (digest, repository, media_type, kind, note, inventory, children,
                     findings, scanned_at, matched_at, db_generation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                r.digest.to_string(),
                r.repository,
                r.media_type,
                r.kind.tag(),
                r.kind.note(),
                inventory,
                children,
                findings,
                r.scanned_at,
                r.matched_at,
                r.db_generation
            ])?;
            Ok(())
        })
        .await
    }

    async fn settled(&self, digests: &[Digest]) -> Result<Vec<Digest>, StoreError> {
        let keys: Vec<Digest> = digests.to_vec();
        self.with(move |c| {
            let mut stmt = c.prepare_cached("SELECT kind FROM scans WHERE digest = ?1")?;
            let mut out = Vec::new();
            for d in keys {
                let kind: Option<String> = stmt.query_row([d.to_string()], |r| r.get(0)).optional()?;
                if kind.is_some_and(|k| k != "failed") {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn inventories(&self, after: Option<&Digest>, limit: usize) -> Result<Vec<(Digest, Inventory)>, StoreError> {
        let after = after.map(ToString::to_string).unwrap_or_default();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT digest, inventory FROM scans WHERE kind = 'image' AND inventory IS NOT NULL AND digest > ?1
                 ORDER BY digest LIMIT ?2",
            )?;
            let rows =
                stmt.query_map(params![after, limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (d, inv) = row?;
                out.push((parse_digest(&d)?, from_json(&d, &inv)?));
            }
            Ok(out)
        })
        .await
    }

    async fn update_findings(&self, batch: &[Rematched], generation: i64, matched_at: i64) -> Result<(), StoreError> {
        let rows: Vec<(String, String)> = batch
            .iter()
            .map(|r| Ok((r.digest.to_string(), to_json(&r.findings)?)))
            .collect::<Result<_, StoreError>>()?;
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE scans SET findings = ?2, matched_at = ?3, db_generation = ?4 WHERE digest = ?1",
                )?;
                for (d, f) in &rows {
                    stmt.execute(params![d, f, matched_at, generation])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn sbom(&self, repo: &RepoName, subject: &Digest) -> Result<Option<Digest>, StoreError> {
        let (repo, subject) = (repo.to_string(), subject.to_string());
        self.with(move |c| {
            let s: Option<String> = c
                .prepare_cached("SELECT sbom FROM sboms WHERE repository = ?1 AND subject = ?2")?
                .query_row(params![repo, subject], |r| r.get(0))
                .optional()?;
            s.as_deref().map(parse_digest).transpose()
        })
        .await
    }

    async fn record_sbom(&self, repo: &RepoName, subject: &Digest, sbom: &Digest) -> Result<(), StoreError> {
        let (repo, subject, sbom) = (repo.to_string(), subject.to_string(), sbom.to_string());
        self.with(move |c| {
            c.prepare_cached("INSERT OR REPLACE INTO sboms (repository, subject, sbom) VALUES (?1, ?2, ?3)")?
                .execute(params![repo, subject, sbom])?;
            Ok(())
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT kind, COUNT(*) FROM scans GROUP BY kind ORDER BY kind")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
