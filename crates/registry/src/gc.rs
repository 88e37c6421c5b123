//! Online garbage collection: reclaims what no tag reaches while pushes and pulls go on, in this
//! process or another one sharing the data directory (`entrepot gc` beside `entrepot serve`).
//!
//! # What is collected, in order
//! 1. **Upload sessions** idle for longer than `upload_expiry`, with their staged bytes, and staged
//!    bytes no session owns that were last written before the grace period.
//! 2. **Tags** selected by the retention rules, when [`GcOptions::apply_retention`] is set.
//! 3. Per repository, in **one write transaction** of the metadata store
//!    ([`entrepot_meta::MetaStore::gc_repository`]): the **manifests** no tag reaches — roots are the
//!    tagged manifests, the manifests pushed within the grace period and, unless untagged manifests
//!    are collected ([`GcOptions::delete_untagged`]), every manifest without a subject; an index keeps
//!    its children, a live manifest keeps its referrers (signatures, SBOMs), and a referrer whose
//!    subject is gone goes too — then the repository's **blob links** that no remaining manifest
//!    references and that were made (uploaded or mounted) before the grace period.
//! 4. **Blobs** linked in no repository (and files with no record at all): their bytes and record.
//!
//! # Why a push racing the collector never loses a blob
//! The metadata store is the source of truth, and it has one write lock (SQLite's, shared by every
//! process on the data directory). Every decision to delete is made *under that lock, against the
//! current state*, and every creation of a reference is checked *under that lock* too:
//! - Manifests and links: step 3 reads the tags, manifests and references and deletes inside one write
//!   transaction, so a concurrent tag, manifest push or mount is entirely before it (and seen) or
//!   entirely after it. A manifest push checks, in its own transaction, that every blob it references
//!   is linked and every child is present — so it either sees the link and the link is then
//!   referenced (never collected), or it fails cleanly with `MANIFEST_BLOB_UNKNOWN`.
//! - Blob bytes: step 4 deletes a blob's file only inside [`entrepot_meta::MetaStore::sweep_blob`],
//!   i.e. holding the write lock, after re-checking that no repository links the digest. Linking a
//!   blob (finishing an upload, mounting) passes a [`entrepot_meta::LockedCheck`] that verifies, under
//!   the same lock, that the file is present with the right size. So either the sweep comes first and
//!   the link sees the file missing (the upload or mount fails cleanly and is retried; nothing
//!   dangling is recorded), or the link comes first and the sweep sees the link and keeps the file.
//!   **The store never records a link to a blob whose bytes are gone, and a blob that is linked is
//!   never deleted.**
//! - The grace period is not needed for correctness, only to avoid those clean failures: the sweep
//!   keeps files written within the grace period (a blob just committed and about to be linked), and
//!   step 3 keeps links and manifests younger than it (blobs uploaded for a manifest not pushed yet,
//!   children of an index not pushed yet, a referrer pushed before its subject). A push whose
//!   manifest arrives more than the grace period after its blobs may fail and must be retried.
//!   Re-pushing a manifest or re-uploading / re-mounting a blob renews its time.
//!
//! One collector runs at a time over a registry's metadata, across processes and instances: a run holds
//! the store's garbage collection lock ([`entrepot_meta::MetaStore::try_gc_lock`] — a lock file beside
//! the SQLite database, a `pg_try_advisory_lock` with PostgreSQL). [`Registry::collect_garbage`] waits
//! for it; [`Registry::try_collect_garbage`] (the scheduled collection of each instance) skips the run
//! instead. The lock only saves duplicated work: each step above is safe beside another collector too.
//! With PostgreSQL the store's per-repository and per-blob locks play the part of SQLite's write lock
//! (see `entrepot_meta::postgres`). A dry run changes nothing and reports what a real run would remove
//! now. Must never delete bytes without
//! holding the metadata store's write lock, nor a manifest or link outside the repository transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use entrepot_meta::{CollectReason, LockedCheck, ManifestGcPolicy, SweepOutcome};
use entrepot_oci::Digest;

use crate::error::Result;
use crate::events::{EventKind, RegistryEvent};
use crate::metrics::GcRun;
use crate::service::Registry;

/// How a collection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Data younger than this is kept whatever else holds.
    pub grace: Duration,
    /// Collect manifests no tag reaches (otherwise every manifest without a subject is kept).
    pub delete_untagged: bool,
    /// Delete the tags the retention rules select first.
    pub apply_retention: bool,
    /// Report without changing anything.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(24 * 3600),
            delete_untagged: false,
            apply_retention: false,
            dry_run: false,
        }
    }
}

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: u64,
    /// Tags deleted by retention rules.
    pub tags: u64,
    pub manifests: u64,
    /// Of which referrers that went with their subject.
    pub referrers: u64,
    pub manifest_bytes: u64,
    /// Blob links removed from repositories.
    pub links: u64,
    /// Blobs whose bytes were removed.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Unlinked blobs kept because their bytes were written within the grace period.
    pub blobs_recent: u64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub elapsed: Duration,
}

impl GcReport {
    /// Bytes reclaimed (blobs and staged uploads).
    pub fn bytes(&self) -> u64 {
        self.blob_bytes + self.upload_bytes
    }
}

/// Where a collection reports its progress (the command line draws it; the server logs).
pub trait GcProgress: Send + Sync {
    /// A new phase begins, with the number of items when known.
    fn phase(&self, name: &'static str, total: Option<u64>);
    /// One more item of the current phase is done.
    fn step(&self);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl GcProgress for NoProgress {
    fn phase(&self, _: &'static str, _: Option<u64>) {}
    fn step(&self) {}
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Registry {
    /// A [`LockedCheck`] that the bytes of `digest` are stored with `size` bytes.
    pub(crate) fn bytes_present(&self, digest: &Digest, size: u64) -> LockedCheck {
        let (blobs, d) = (self.blobs.clone(), digest.clone());
        Box::new(move || match blobs.blob_info_blocking(&d) {
            Ok(Some(info)) if info.size == size => Ok(()),
            Ok(Some(info)) => Err(format!("blob {d} holds {} bytes, not {size}", info.size)),
            Ok(None) => Err(format!("the bytes of blob {d} are gone")),
            Err(e) => Err(format!("cannot check blob {d}: {e}")),
        })
    }

    /// Runs one garbage collection, first waiting while another one runs (in this process or another
    /// sharing the metadata).
    pub async fn collect_garbage(&self, opts: &GcOptions, progress: &dyn GcProgress) -> Result<GcReport> {
        let mut waiting = false;
        loop {
            if let Some(lock) = self.meta.try_gc_lock().await? {
                return self.collect_locked(opts, progress, lock).await;
            }
            if !waiting {
                progress.phase("waiting for another garbage collection to finish", None);
                waiting = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one garbage collection unless another one is running (in this process or another sharing
    /// the metadata): `None` then, and nothing was done.
    pub async fn try_collect_garbage(&self, opts: &GcOptions, progress: &dyn GcProgress) -> Result<Option<GcReport>> {
        match self.meta.try_gc_lock().await? {
            Some(lock) => self.collect_locked(opts, progress, lock).await.map(Some),
            None => Ok(None),
        }
    }

    async fn collect_locked(
        &self,
        opts: &GcOptions,
        progress: &dyn GcProgress,
        lock: entrepot_meta::GcLock,
    ) -> Result<GcReport> {
        let result = self.collect(opts, progress).await;
        drop(lock);
        match &result {
            Ok(r) if !r.dry_run => self.metrics.gc_run(GcRun {
                manifests_deleted: r.manifests,
                blobs_deleted: r.blobs,
                bytes_reclaimed: r.bytes(),
            }),
            Ok(_) => {}
            Err(_) => self.metrics.gc_failed(),
        }
        result
    }

    async fn collect(&self, opts: &GcOptions, progress: &dyn GcProgress) -> Result<GcReport> {
        let started = Instant::now();
        let mut report = GcReport { dry_run: opts.dry_run, ..Default::default() };
        let cutoff = unix_now() - i64::try_from(opts.grace.as_secs()).unwrap_or(i64::MAX);
        let cutoff_time = SystemTime::now().checked_sub(opts.grace).unwrap_or(UNIX_EPOCH);

        self.collect_uploads(opts, cutoff_time, progress, &mut report).await?;

        if opts.apply_retention {
            let plan = self.retention_plan().await?;
            let deletes = plan.iter().filter(|d| d.action == crate::retention::RetentionAction::Delete).count();
            progress.phase("retention", Some(deletes as u64));
            if opts.dry_run {
                report.tags = deletes as u64;
            } else {
                report.tags = self.apply_retention(&plan).await?.deleted;
            }
        }

        let repos = self.all_repositories().await?;
        progress.phase("repositories", Some(repos.len() as u64));
        report.repositories = repos.len() as u64;
        // In a dry run the links are not removed, so count what the blob phase would then find.
        let mut dry_unlinked: std::collections::HashMap<Digest, u64> = std::collections::HashMap::new();
        let policy = ManifestGcPolicy { cutoff, delete_untagged: opts.delete_untagged, dry_run: opts.dry_run };
        for repo in &repos {
            let (manifests, links) = self.meta.gc_repository(repo, &policy).await?;
            report.manifests += manifests.len() as u64;
            report.referrers += manifests.iter().filter(|m| m.reason == CollectReason::SubjectGone).count() as u64;
            report.manifest_bytes += manifests.iter().map(|m| m.size).sum::<u64>();
            report.links += links.len() as u64;
            if opts.dry_run {
                for l in &links {
                    *dry_unlinked.entry(l.digest.clone()).or_default() += 1;
                }
            } else if !manifests.is_empty() && self.wants_event(EventKind::Gc, repo) {
                let events = manifests
                    .iter()
                    .map(|m| RegistryEvent {
                        size: Some(m.size),
                        ..RegistryEvent::now(EventKind::Gc, repo.clone(), m.digest.clone())
                    })
                    .collect();
                self.emit(events).await;
            }
            if !manifests.is_empty() || !links.is_empty() {
                tracing::debug!(%repo, manifests = manifests.len(), links = links.len(), dry_run = opts.dry_run, "collected");
            }
            progress.step();
        }

        self.collect_blobs(opts, cutoff_time, &dry_unlinked, progress, &mut report).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn collect_uploads(
        &self,
        opts: &GcOptions,
        cutoff_time: SystemTime,
        progress: &dyn GcProgress,
        report: &mut GcReport,
    ) -> Result<()> {
        let expiry = unix_now() - i64::try_from(self.config.upload_expiry.as_secs()).unwrap_or(i64::MAX);
        let stale = self.meta.stale_uploads(expiry).await?;
        let staged = self.blobs.list_uploads().await?;
        progress.phase("uploads", Some((stale.len() + staged.len()) as u64));
        for id in &stale {
            let size = self.blobs.upload_info(id).await?.map(|i| i.size).unwrap_or(0);
            if !opts.dry_run {
                self.expire_upload(id).await?;
            }
            report.uploads += 1;
            report.upload_bytes += size;
            progress.step();
        }
        // Staged bytes without a session: left by a crash between creating the two, or by a session
        // removed by another process. Only old ones: a session is created just after its staging area.
        for id in &staged {
            progress.step();
            if stale.contains(id) || self.meta.get_upload(id).await?.is_some() {
                continue;
            }
            let Some(info) = self.blobs.upload_info(id).await? else { continue };
            if info.modified > cutoff_time {
                continue;
            }
            if !opts.dry_run {
                self.blobs.upload_abort(id).await?;
            }
            report.uploads += 1;
            report.upload_bytes += info.size;
        }
        Ok(())
    }

    async fn collect_blobs(
        &self,
        opts: &GcOptions,
        cutoff_time: SystemTime,
        dry_unlinked: &std::collections::HashMap<Digest, u64>,
        progress: &dyn GcProgress,
        report: &mut GcReport,
    ) -> Result<()> {
        let records = self.meta.blob_records(false).await?;
        let mut recorded: std::collections::HashSet<&Digest> = std::collections::HashSet::new();
        let mut candidates: Vec<Digest> = Vec::new();
        for r in &records {
            recorded.insert(&r.digest);
            let links = r.links.saturating_sub(dry_unlinked.get(&r.digest).copied().unwrap_or(0));
            if links == 0 {
                candidates.push(r.digest.clone());
            }
        }
        // Files with no record at all (a crash between commit and link, or a failed link).
        for d in self.blobs.list().await? {
            if !recorded.contains(&d) {
                candidates.push(d);
            }
        }
        progress.phase("blobs", Some(candidates.len() as u64));
        for digest in candidates {
            progress.step();
            if opts.dry_run {
                match self.blobs.blob_info(&digest).await? {
                    Some(info) if info.modified > cutoff_time => report.blobs_recent += 1,
                    Some(info) => {
                        report.blobs += 1;
                        report.blob_bytes += info.size;
                    }
                    None => {}
                }
                continue;
            }
            let freed = Arc::new(AtomicU64::new(0));
            let recent = Arc::new(AtomicU64::new(0));
            let (blobs, d, f, rec) = (self.blobs.clone(), digest.clone(), freed.clone(), recent.clone());
            // Runs under the metadata store's write lock, once no link to the digest exists.
            let sweep = Box::new(move || match blobs.blob_info_blocking(&d) {
                Ok(None) => Ok(true),
                Ok(Some(info)) if info.modified > cutoff_time => {
                    rec.fetch_add(1, Ordering::Relaxed);
                    Ok(false)
                }
                Ok(Some(info)) => match blobs.delete_blocking(&d) {
                    Ok(_) => {
                        f.store(info.size, Ordering::Relaxed);
                        Ok(true)
                    }
                    Err(e) => Err(format!("cannot delete blob {d}: {e}")),
                },
                Err(e) => Err(format!("cannot check blob {d}: {e}")),
            });
            match self.meta.sweep_blob(&digest, sweep).await {
                Ok(SweepOutcome::Removed) => {
                    let n = freed.load(Ordering::Relaxed);
                    if n > 0 {
                        report.blobs += 1;
                        report.blob_bytes += n;
                    }
                }
                Ok(SweepOutcome::Kept) => report.blobs_recent += recent.load(Ordering::Relaxed),
                Ok(SweepOutcome::Linked) => {}
                Err(entrepot_meta::MetaError::Precondition(why)) => {
                    tracing::warn!(%digest, %why, "blob kept: could not be removed");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
