//! The advisory database: OSV records persisted in one SQLite file, indexed by (ecosystem, package name, release).
//!
//! Imports run in one transaction and replace a record only when its `modified` time is newer than the stored
//! one; `status()` reports counts per ecosystem, the last import time and the newest `modified`. The schema is
//! versioned with `PRAGMA user_version`; a database written by a newer schema is refused, never rewritten.
//! The API is synchronous and blocking (call it from `spawn_blocking` in async code); it never touches HTTP.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::ecosystem::Ecosystem;
use crate::import::{self, ImportError, Malformed};
use crate::matcher::{Finding, PackageQuery, match_advisory};
use crate::osv::Advisory;
use crate::time;

/// The schema this code writes.
pub const SCHEMA_VERSION: i64 = 1;

/// At most this many malformed records are kept in an [`ImportReport`] (all are counted).
const MALFORMED_SAMPLES: usize = 200;

/// Parsed advisories kept in memory between lookups (cleared on import).
const CACHE_LIMIT: usize = 50_000;

/// Errors of the advisory database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("advisory database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("advisory database schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored advisory {id} is corrupt: {source}")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// JSON files (or zip entries) read.
    pub files: u64,
    /// Records parsed.
    pub records: u64,
    /// New ids.
    pub inserted: u64,
    /// Existing ids replaced by a newer `modified`.
    pub replaced: u64,
    /// Records not newer than the stored copy.
    pub unchanged: u64,
    /// Records skipped as malformed (files that are not JSON, records that do not fit the schema).
    pub malformed_count: u64,
    /// The first malformed records, with reasons.
    pub malformed: Vec<Malformed>,
}

/// What the database holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub schema_version: i64,
    /// Stored records, withdrawn included.
    pub advisories: u64,
    pub withdrawn: u64,
    /// Records per ecosystem name (a record naming several ecosystems counts in each).
    pub by_ecosystem: BTreeMap<String, u64>,
    /// When the last import finished (Unix seconds).
    pub last_import: Option<i64>,
    /// The newest `modified` among stored records, as written in the record.
    pub newest_modified: Option<String>,
}

/// The SQLite-backed advisory database.
pub struct AdvisoryDb {
    conn: Connection,
    cache: RefCell<HashMap<String, Rc<Advisory>>>,
}

impl AdvisoryDb {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        Self::init(Connection::open(path)?)
    }

    /// A database that lives in memory only (tests, benchmarks).
    pub fn open_in_memory() -> Result<Self, DbError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, DbError> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
        }
        if version < 1 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS advisories (
                     id TEXT PRIMARY KEY,
                     modified TEXT,
                     modified_key INTEGER NOT NULL,
                     withdrawn INTEGER NOT NULL,
                     record TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS affected (
                     ecosystem TEXT NOT NULL,
                     name TEXT NOT NULL,
                     release TEXT NOT NULL,
                     advisory_id TEXT NOT NULL REFERENCES advisories(id) ON DELETE CASCADE,
                     PRIMARY KEY (ecosystem, name, release, advisory_id)
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS affected_by_advisory ON affected(advisory_id);
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        }
        Ok(AdvisoryDb { conn, cache: RefCell::new(HashMap::new()) })
    }

    /// Imports every `*.json` file under `dir` (recursively).
    pub fn import_dir(&mut self, dir: impl AsRef<Path>) -> Result<ImportReport, DbError> {
        let dir = dir.as_ref();
        self.import_with(|sink, malformed| import::walk_dir(dir, sink, malformed))
    }

    /// Imports an OSV `all.zip` archive (a zip of JSON records).
    pub fn import_zip(&mut self, path: impl AsRef<Path>) -> Result<ImportReport, DbError> {
        let path = path.as_ref();
        self.import_with(|sink, malformed| import::walk_zip(path, sink, malformed))
    }

    /// Imports already-parsed records (e.g. fetched by a caller).
    pub fn import_records(&mut self, records: impl IntoIterator<Item = Advisory>) -> Result<ImportReport, DbError> {
        let mut report = ImportReport::default();
        let tx = self.conn.transaction()?;
        for a in records {
            report.records += 1;
            upsert(&tx, &a, &mut report)?;
        }
        finish(&tx)?;
        tx.commit()?;
        self.cache.borrow_mut().clear();
        Ok(report)
    }

    fn import_with(
        &mut self,
        walk: impl FnOnce(&mut dyn FnMut(String, Vec<u8>), &mut Vec<Malformed>) -> Result<(), ImportError>,
    ) -> Result<ImportReport, DbError> {
        let mut report = ImportReport::default();
        let mut malformed = Vec::new();
        let mut unreadable = Vec::new();
        let tx = self.conn.transaction()?;
        let mut failure: Option<rusqlite::Error> = None;
        {
            let mut sink = |source: String, bytes: Vec<u8>| {
                if failure.is_some() {
                    return;
                }
                report.files += 1;
                for a in import::parse_document(&source, &bytes, &mut malformed) {
                    report.records += 1;
                    if let Err(e) = upsert(&tx, &a, &mut report) {
                        failure = Some(e);
                        return;
                    }
                }
            };
            walk(&mut sink, &mut unreadable)?;
        }
        if let Some(e) = failure {
            return Err(e.into());
        }
        malformed.extend(unreadable);
        finish(&tx)?;
        tx.commit()?;
        self.cache.borrow_mut().clear();
        report.malformed_count = malformed.len() as u64;
        malformed.truncate(MALFORMED_SAMPLES);
        report.malformed = malformed;
        Ok(report)
    }

    /// Counts per ecosystem, last import time, newest `modified`.
    pub fn status(&self) -> Result<Status, DbError> {
        let (advisories, withdrawn): (i64, i64) =
            self.conn.query_row("SELECT COUNT(*), COALESCE(SUM(withdrawn), 0) FROM advisories", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let mut by_ecosystem = BTreeMap::new();
        let mut stmt =
            self.conn.prepare("SELECT ecosystem, COUNT(DISTINCT advisory_id) FROM affected GROUP BY ecosystem")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (eco, n) = row?;
            by_ecosystem.insert(eco, n as u64);
        }
        let last_import = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'last_import'", [], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|s| s.parse().ok());
        let newest_modified = self
            .conn
            .query_row(
                "SELECT modified FROM advisories WHERE modified IS NOT NULL ORDER BY modified_key DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?;
        Ok(Status {
            schema_version: SCHEMA_VERSION,
            advisories: advisories as u64,
            withdrawn: withdrawn as u64,
            by_ecosystem,
            last_import,
            newest_modified,
        })
    }

    /// How many imports this database has seen (0 for a new one): a cheap freshness stamp for stored matches.
    pub fn generation(&self) -> Result<i64, DbError> {
        let value = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| r.get::<_, String>(0))
            .optional()?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The stored record with this id.
    pub fn get(&self, id: &str) -> Result<Option<Advisory>, DbError> {
        Ok(self.load(id)?.map(|a| (*a).clone()))
    }

    fn load(&self, id: &str) -> Result<Option<Rc<Advisory>>, DbError> {
        if let Some(a) = self.cache.borrow().get(id) {
            return Ok(Some(a.clone()));
        }
        let mut stmt = self.conn.prepare_cached("SELECT record FROM advisories WHERE id = ?1")?;
        let Some(json) = stmt.query_row([id], |r| r.get::<_, String>(0)).optional()? else {
            return Ok(None);
        };
        let a: Advisory =
            serde_json::from_str(&json).map_err(|source| DbError::Corrupt { id: id.to_owned(), source })?;
        let a = Rc::new(a);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(id.to_owned(), a.clone());
        Ok(Some(a))
    }

    fn candidate_ids(&self, q: &PackageQuery) -> Result<Vec<String>, DbError> {
        let (eco, name) = q.lookup_key();
        let release = q.normalized_release().unwrap_or_default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT f.advisory_id FROM affected f JOIN advisories a ON a.id = f.advisory_id
             WHERE f.ecosystem = ?1 AND f.name = ?2 AND (f.release = '' OR f.release = ?3) AND a.withdrawn = 0
             ORDER BY f.advisory_id",
        )?;
        let ids = stmt.query_map(params![eco, name, release], |r| r.get::<_, String>(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }

    /// The advisories affecting one installed package, in advisory id order.
    pub fn matches(&self, q: &PackageQuery) -> Result<Vec<Finding>, DbError> {
        self.matches_with(q, &mut HashMap::new())
    }

    /// Like [`AdvisoryDb::matches`], remembering the candidate advisories of each (ecosystem, name, release) in
    /// `candidates`, so that many inventories naming the same packages look each name up once.
    fn matches_with(&self, q: &PackageQuery, candidates: &mut Candidates) -> Result<Vec<Finding>, DbError> {
        if q.ecosystem.scheme().is_none() {
            return Ok(Vec::new());
        }
        let (eco, name) = q.lookup_key();
        let key = (eco, name, q.normalized_release().unwrap_or_default());
        let ids = match candidates.get(&key) {
            Some(ids) => ids.clone(),
            None => {
                let ids = Rc::new(self.candidate_ids(q)?);
                if candidates.len() >= CACHE_LIMIT {
                    candidates.clear();
                }
                candidates.insert(key, ids.clone());
                ids
            }
        };
        let mut out = Vec::new();
        for id in ids.iter() {
            if let Some(a) = self.load(id)?
                && let Some(f) = match_advisory(&a, q)
            {
                out.push(f);
            }
        }
        Ok(out)
    }

    /// The findings for a whole inventory (one image), each advisory reported once per package.
    pub fn matches_inventory(&self, packages: &[PackageQuery]) -> Result<Vec<Finding>, DbError> {
        self.matches_inventory_with(packages, &mut HashMap::new())
    }

    fn matches_inventory_with(
        &self,
        packages: &[PackageQuery],
        candidates: &mut Candidates,
    ) -> Result<Vec<Finding>, DbError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for q in packages {
            for f in self.matches_with(q, candidates)? {
                if seen.insert((f.id.clone(), f.package.clone(), f.installed.clone())) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }
}

/// Re-matches stored inventories against the current advisories (after an import), without touching layers.
/// Returns the findings of each inventory in order. This is the function the re-match benchmark times.
/// Candidate advisories are looked up once per (ecosystem, package name, release) for the whole call, since
/// images share most of their packages.
pub fn rematch(db: &AdvisoryDb, inventories: &[Vec<PackageQuery>]) -> Result<Vec<Vec<Finding>>, DbError> {
    let mut candidates = Candidates::new();
    inventories.iter().map(|inv| db.matches_inventory_with(inv, &mut candidates)).collect()
}

/// Candidate advisory ids by (ecosystem, normalized name, normalized release).
type Candidates = HashMap<(String, String, String), Rc<Vec<String>>>;

fn upsert(tx: &rusqlite::Transaction<'_>, a: &Advisory, report: &mut ImportReport) -> Result<(), rusqlite::Error> {
    let key = a.modified.as_deref().and_then(time::parse_rfc3339).unwrap_or(i64::MIN);
    let existing: Option<i64> = tx
        .prepare_cached("SELECT modified_key FROM advisories WHERE id = ?1")?
        .query_row([&a.id], |r| r.get(0))
        .optional()?;
    match existing {
        Some(old) if key <= old => {
            report.unchanged += 1;
            return Ok(());
        }
        Some(_) => {
            report.replaced += 1;
            tx.prepare_cached("DELETE FROM affected WHERE advisory_id = ?1")?.execute([&a.id])?;
        }
        None => report.inserted += 1,
    }
    // Serializing our own structs cannot fail (no maps with non-string keys); fall back to an empty record.
    let record = serde_json::to_string(a).unwrap_or_else(|_| format!("{{\"id\":{:?}}}", a.id));
    tx.prepare_cached(
        "INSERT OR REPLACE INTO advisories (id, modified, modified_key, withdrawn, record) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![a.id, a.modified, key, a.is_withdrawn(), record])?;
    let mut index = tx.prepare_cached(
        "INSERT OR IGNORE INTO affected (ecosystem, name, release, advisory_id) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for affected in &a.affected {
        let Some(pkg) = &affected.package else { continue };
        let (eco, release) = Ecosystem::parse(&pkg.ecosystem);
        index.execute(params![eco.name(), eco.normalize_name(&pkg.name), release.unwrap_or_default(), a.id])?;
    }
    Ok(())
}

fn finish(tx: &rusqlite::Transaction<'_>) -> Result<(), rusqlite::Error> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_import', ?1)", [now.to_string()])?;
    // A counter bumped by every import, so that results matched before an import can tell they are stale
    // (two imports can finish within the same second).
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('generation', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        [],
    )?;
    Ok(())
}
