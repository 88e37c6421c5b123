//! What the storage lifecycle (garbage collection, retention, quotas, scrub) needs from the metadata
//! store: the types of the [`crate::MetaStore`] methods it uses, the reachability rules every backend
//! shares ([`collectable`]), and their SQLite statements.
//!
//! The reachability rules of garbage collection are evaluated here, inside one write transaction per
//! repository, so that no push, tag or delete can interleave with a decision (see `entrepot-registry`'s
//! `gc` module for the whole argument). The policy (grace cutoff, whether untagged manifests are
//! collected) comes from the caller; this module never decides policy, never touches blob bytes
//! except through the caller's [`LockedSweep`], and never knows about HTTP.

use std::collections::{HashMap, HashSet};

use entrepot_oci::Digest;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{MetaError, Result};

/// A check of the world outside the metadata store (typically: the blob's bytes are present with the
/// expected size), run while a write transaction holds the store's write lock. `Err(reason)` aborts
/// the transaction with [`MetaError::Precondition`]. Garbage collection deletes bytes only under the
/// same lock, so what the check sees cannot change before the transaction commits.
pub type LockedCheck = Box<dyn FnOnce() -> std::result::Result<(), String> + Send>;

/// Called under the write lock by [`crate::MetaStore::sweep_blob`] once the blob is known to be linked
/// nowhere: removes the bytes and returns `Ok(true)` if they are gone (so the blob's row may go too), or
/// `Ok(false)` to keep the blob (e.g. its bytes were written too recently).
pub type LockedSweep = Box<dyn FnOnce() -> std::result::Result<bool, String> + Send>;

/// A check that always passes (for stores whose callers have nothing to verify, and tests).
pub fn no_check() -> LockedCheck {
    Box::new(|| Ok(()))
}

/// What garbage collection may collect among the manifests of one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestGcPolicy {
    /// Manifests pushed (or pushed again) at or after this unix second are kept whatever else holds.
    pub cutoff: i64,
    /// Collect manifests that no tag reaches. When `false`, every manifest without a subject is kept.
    pub delete_untagged: bool,
    /// Report what would be collected without changing anything.
    pub dry_run: bool,
}

/// Why a manifest was collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectReason {
    /// No tag reaches it (directly, as the child of an index, or through its subject).
    Untagged,
    /// It refers (`subject`) to a manifest that is gone or itself collected.
    SubjectGone,
}

/// A manifest garbage collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedManifest {
    pub digest: Digest,
    /// Length of the manifest's bytes.
    pub size: u64,
    pub reason: CollectReason,
}

/// A blob link garbage collection removed (or would remove) from a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedLink {
    pub digest: Digest,
    pub size: u64,
}

/// A blob the registry records, with how many repositories link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: u64,
    /// Unix seconds of the first record.
    pub created_at: i64,
    pub links: u64,
}

/// What [`crate::MetaStore::sweep_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOutcome {
    /// The blob is linked somewhere: nothing was touched.
    Linked,
    /// The sweep callback chose to keep the bytes.
    Kept,
    /// The bytes are gone and the blob's record removed.
    Removed,
}

/// A tag with its target and when it was last pointed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRecord {
    pub tag: String,
    pub digest: Digest,
    /// Unix seconds of the last push that set this tag.
    pub updated_at: i64,
}

/// What one repository holds, as quotas count it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoUsage {
    pub repo: String,
    /// Sum of the sizes of the distinct blobs linked in the repository.
    pub bytes: u64,
    pub blobs: u64,
    pub tags: u64,
    pub manifests: u64,
}

fn parse_digest(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

/// Adds `manifests.pushed_at` (the last time a manifest was pushed, which garbage collection's grace
/// period counts from) to databases created before it existed. Idempotent; safe when several
/// processes open the same database at once (the check and the change are one write transaction).
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let has: bool =
        tx.query_row("SELECT COUNT(*) FROM pragma_table_info('manifests') WHERE name = 'pushed_at'", [], |r| {
            r.get::<_, i64>(0)
        })? > 0;
    if !has {
        tx.execute_batch(
            "ALTER TABLE manifests ADD COLUMN pushed_at INTEGER NOT NULL DEFAULT 0;
             UPDATE manifests SET pushed_at = created_at;",
        )?;
    }
    tx.execute_batch("CREATE INDEX IF NOT EXISTS repo_blobs_repo_created ON repo_blobs (repo, created_at);")?;
    tx.commit()
}

/// The manifests of `repo` garbage collection may remove under `policy`, computed and removed inside
/// the caller's write transaction (which a dry run rolls back, so that [`gc_links`] after it sees what
/// a real run would).
pub(crate) fn gc_manifests(
    tx: &Transaction<'_>,
    repo: &str,
    policy: &ManifestGcPolicy,
) -> Result<Vec<CollectedManifest>> {
    let mut all: HashMap<String, ManifestRow> = HashMap::new();
    {
        let mut st =
            tx.prepare_cached("SELECT digest, subject, pushed_at, length(content) FROM manifests WHERE repo = ?1")?;
        let rows = st.query_map(params![repo], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
        })?;
        for row in rows {
            let (digest, subject, pushed_at, size) = row?;
            all.insert(digest, ManifestRow { subject, pushed_at, size: size.max(0) as u64 });
        }
    }
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let mut children: HashMap<String, Vec<String>> = HashMap::new();
    {
        let mut st =
            tx.prepare_cached("SELECT digest, target FROM manifest_refs WHERE repo = ?1 AND kind = 'manifest'")?;
        let rows = st.query_map(params![repo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (parent, child) = row?;
            children.entry(parent).or_default().push(child);
        }
    }
    let tagged: HashSet<String> = {
        let mut st = tx.prepare_cached("SELECT DISTINCT digest FROM tags WHERE repo = ?1")?;
        let rows = st.query_map(params![repo], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let dead = collectable(&all, &children, &tagged, policy)?;
    {
        let mut del_m = tx.prepare_cached("DELETE FROM manifests WHERE repo = ?1 AND digest = ?2")?;
        let mut del_t = tx.prepare_cached("DELETE FROM tags WHERE repo = ?1 AND digest = ?2")?;
        let mut del_r = tx.prepare_cached("DELETE FROM manifest_refs WHERE repo = ?1 AND digest = ?2")?;
        for m in &dead {
            let d = m.digest.to_string();
            del_m.execute(params![repo, d])?;
            del_t.execute(params![repo, d])?;
            del_r.execute(params![repo, d])?;
        }
    }
    Ok(dead)
}

/// A manifest of a repository as garbage collection sees it.
pub(crate) struct ManifestRow {
    pub(crate) subject: Option<String>,
    pub(crate) pushed_at: i64,
    /// Length of its bytes.
    pub(crate) size: u64,
}

/// The reachability rules of garbage collection, on one repository's manifests (by digest), index
/// children (parent → children) and tagged digests: what `policy` lets it collect, by digest. Pure, so
/// every backend decides alike.
pub(crate) fn collectable(
    all: &HashMap<String, ManifestRow>,
    children: &HashMap<String, Vec<String>>,
    tagged: &HashSet<String>,
    policy: &ManifestGcPolicy,
) -> Result<Vec<CollectedManifest>> {
    let mut referrers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (digest, row) in all {
        if let Some(s) = &row.subject {
            referrers.entry(s.as_str()).or_default().push(digest.as_str());
        }
    }

    // Mark: roots are tagged manifests, manifests inside the grace period and, unless untagged
    // manifests are collected, every manifest without a subject. Liveness flows from an index to its
    // children and from a subject to its referrers.
    let mut live: HashSet<&str> = HashSet::new();
    let mut work: Vec<&str> = Vec::new();
    for (digest, row) in all {
        let root = tagged.contains(digest)
            || row.pushed_at >= policy.cutoff
            || (!policy.delete_untagged && row.subject.is_none());
        if root && live.insert(digest.as_str()) {
            work.push(digest.as_str());
        }
    }
    while let Some(d) = work.pop() {
        let next = children
            .get(d)
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(referrers.get(d).into_iter().flatten().copied());
        for n in next {
            if let Some((key, _)) = all.get_key_value(n)
                && live.insert(key.as_str())
            {
                work.push(key.as_str());
            }
        }
    }

    let mut dead: Vec<CollectedManifest> = Vec::new();
    for (digest, row) in all {
        if live.contains(digest.as_str()) {
            continue;
        }
        // A live subject makes its referrers live, so a dead referrer's subject is gone or dead too.
        let reason = if row.subject.is_some() { CollectReason::SubjectGone } else { CollectReason::Untagged };
        dead.push(CollectedManifest { digest: parse_digest(digest)?, size: row.size, reason });
    }
    dead.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(dead)
}

/// Links of `repo` that no manifest of the repository references and that were made before `cutoff`,
/// removed. Run in the same transaction as (and after) [`gc_manifests`].
pub(crate) fn gc_links(tx: &Transaction<'_>, repo: &str, cutoff: i64) -> Result<Vec<CollectedLink>> {
    let mut out = Vec::new();
    {
        let mut st = tx.prepare_cached(
            "SELECT rb.digest, COALESCE(b.size, 0) FROM repo_blobs rb LEFT JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = ?1 AND rb.created_at < ?2
               AND NOT EXISTS (SELECT 1 FROM manifest_refs mr
                               WHERE mr.target = rb.digest AND mr.repo = rb.repo AND mr.kind = 'blob')
             ORDER BY rb.digest",
        )?;
        let rows = st.query_map(params![repo, cutoff], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (digest, size) = row?;
            out.push(CollectedLink { digest: parse_digest(&digest)?, size: size.max(0) as u64 });
        }
    }
    {
        let mut del = tx.prepare_cached("DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2")?;
        for l in &out {
            del.execute(params![repo, l.digest.to_string()])?;
        }
    }
    Ok(out)
}

fn blob_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_records(rows: Vec<(String, i64, i64, i64)>) -> Result<Vec<BlobRecord>> {
    rows.into_iter()
        .map(|(d, size, created_at, links)| {
            Ok(BlobRecord {
                digest: parse_digest(&d)?,
                size: size.max(0) as u64,
                created_at,
                links: links.max(0) as u64,
            })
        })
        .collect()
}

/// Every recorded blob with its number of links; only the unlinked ones when `unlinked_only`.
pub(crate) fn blob_records(conn: &Connection, unlinked_only: bool) -> Result<Vec<BlobRecord>> {
    let sql = if unlinked_only {
        "SELECT b.digest, b.size, b.created_at, 0 FROM blobs b
         WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest) ORDER BY b.digest"
    } else {
        "SELECT b.digest, b.size, b.created_at, (SELECT COUNT(*) FROM repo_blobs rb WHERE rb.digest = b.digest)
         FROM blobs b ORDER BY b.digest"
    };
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map([], blob_record)?.collect::<rusqlite::Result<Vec<_>>>()?;
    to_records(rows)
}

/// Removes a blob's record if, inside the caller's write transaction, no repository links it and
/// `sweep` reports its bytes gone.
pub(crate) fn sweep_blob(tx: &Transaction<'_>, digest: &str, sweep: LockedSweep) -> Result<SweepOutcome> {
    if tx.prepare_cached("SELECT 1 FROM repo_blobs WHERE digest = ?1")?.exists(params![digest])? {
        return Ok(SweepOutcome::Linked);
    }
    if !sweep().map_err(MetaError::Precondition)? {
        return Ok(SweepOutcome::Kept);
    }
    tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1")?.execute(params![digest])?;
    Ok(SweepOutcome::Removed)
}

/// Removes every link to a blob and its record (scrub's repair of corrupt bytes). Returns the
/// repositories that linked it.
pub(crate) fn forget_blob(tx: &Transaction<'_>, digest: &str) -> Result<Vec<String>> {
    let repos: Vec<String> = {
        let mut st = tx.prepare_cached("SELECT repo FROM repo_blobs WHERE digest = ?1 ORDER BY repo")?;
        st.query_map(params![digest], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<_>>()?
    };
    tx.prepare_cached("DELETE FROM repo_blobs WHERE digest = ?1")?.execute(params![digest])?;
    tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1")?.execute(params![digest])?;
    Ok(repos)
}

/// Tags of `repo` with their targets and times, most recently updated first (then by name).
pub(crate) fn tag_records(conn: &Connection, repo: &str) -> Result<Vec<TagRecord>> {
    let mut st =
        conn.prepare_cached("SELECT tag, digest, updated_at FROM tags WHERE repo = ?1 ORDER BY updated_at DESC, tag")?;
    let rows = st
        .query_map(params![repo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(tag, digest, updated_at)| Ok(TagRecord { tag, digest: parse_digest(&digest)?, updated_at }))
        .collect()
}

/// Deletes a tag only if it still points at `digest` since `updated_at` (a concurrent push wins).
pub(crate) fn delete_tag_if(conn: &Connection, repo: &str, tag: &str, digest: &str, updated_at: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM tags WHERE repo = ?1 AND tag = ?2 AND digest = ?3 AND updated_at = ?4")?
        .execute(params![repo, tag, digest, updated_at])?
        > 0)
}

const USAGE_SQL: &str = "SELECT r.name,
        (SELECT COALESCE(SUM(b.size), 0) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM repo_blobs rb WHERE rb.repo = r.name),
        (SELECT COUNT(*) FROM tags t WHERE t.repo = r.name),
        (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name)
     FROM repositories r";

fn usage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RepoUsage> {
    let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
    Ok(RepoUsage { repo: r.get(0)?, bytes: n(1)?, blobs: n(2)?, tags: n(3)?, manifests: n(4)? })
}

/// What `repo` holds (all zero for an unknown repository).
pub(crate) fn repo_usage(conn: &Connection, repo: &str) -> Result<RepoUsage> {
    let sql = format!("{USAGE_SQL} WHERE r.name = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![repo], usage_row)
        .optional()?
        .unwrap_or_else(|| RepoUsage { repo: repo.to_string(), ..Default::default() }))
}

/// What every repository holds, by name.
pub(crate) fn all_usage(conn: &Connection) -> Result<Vec<RepoUsage>> {
    let sql = format!("{USAGE_SQL} ORDER BY r.name");
    let mut st = conn.prepare_cached(&sql)?;
    Ok(st.query_map([], usage_row)?.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The manifests of `repo` (digest and length), by digest.
pub(crate) fn manifest_digests(conn: &Connection, repo: &str) -> Result<Vec<(Digest, u64)>> {
    let mut st =
        conn.prepare_cached("SELECT digest, length(content) FROM manifests WHERE repo = ?1 ORDER BY digest")?;
    let rows = st
        .query_map(params![repo], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(|(d, n)| Ok((parse_digest(&d)?, n.max(0) as u64))).collect()
}
