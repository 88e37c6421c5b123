//! Scrub: re-hashes every stored blob and checks the metadata against the storage in both directions,
//! then reports — and with `repair`, quarantines what is corrupt and unlinks it.
//!
//! Findings:
//! - a recorded blob whose bytes are missing, or hold a different size or hash than their digest
//!   (repair: the file, if any, is moved to the blob store's quarantine and every link to the digest
//!   is removed, so the registry answers `BLOB_UNKNOWN` instead of serving bad bytes and a client can
//!   push the blob again);
//! - stored bytes no metadata records (older than an hour, so an upload being committed is not
//!   reported; garbage collection reclaims them, scrub does not touch them);
//! - a manifest whose stored bytes do not hash to its digest (repair: the manifest and its tags are
//!   removed; its bytes are returned in the finding so that the caller can keep them).
//!
//! Scrub reads while the registry runs. A finding is re-checked right before it is reported or
//! repaired (a blob collected by a concurrent garbage collection is not "missing"). Must never modify
//! anything without `repair`, and never remove a blob whose bytes hash correctly.

use std::time::{Duration, SystemTime};

use entrepot_oci::{Digest, Digester, RepoName};
use futures_util::StreamExt;

use crate::error::Result;
use crate::gc::GcProgress;
use crate::service::Registry;

/// What scrub found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    MissingBytes { digest: Digest, size: u64, links: u64 },
    WrongSize { digest: Digest, recorded: u64, actual: u64 },
    WrongHash { digest: Digest, actual: Digest },
    Unrecorded { digest: Digest, size: u64 },
    ManifestCorrupt { repo: String, digest: Digest, actual: Digest, content: Vec<u8> },
}

/// What repair did about a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    None,
    /// Bytes moved to this place (if there were any) and links removed from these repositories.
    Quarantined {
        to: Option<String>,
        unlinked: Vec<String>,
    },
    ManifestRemoved,
}

/// The outcome of a scrub.
#[derive(Debug, Clone, Default)]
pub struct ScrubReport {
    pub blobs_checked: u64,
    pub bytes_hashed: u64,
    pub manifests_checked: u64,
    pub findings: Vec<(Finding, Repair)>,
}

/// Stored bytes younger than this and unrecorded are an upload being committed, not a finding.
const UNRECORDED_GRACE: Duration = Duration::from_secs(3600);

impl Registry {
    /// The digest of a stored blob's bytes, and how many there were.
    async fn rehash(&self, digest: &Digest) -> Result<Option<(Digest, u64)>> {
        let mut stream = match self.blobs.read(digest, None).await {
            Ok(s) => s,
            Err(entrepot_storage::StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut h = Digester::new(digest.algorithm());
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(entrepot_storage::StorageError::Io)?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok(Some((h.finish(), n)))
    }

    /// Quarantines the bytes of `digest` (if any) and forgets every link to it.
    async fn quarantine_blob(&self, digest: &Digest) -> Result<Repair> {
        let to = self.blobs.quarantine(digest).await?;
        let unlinked = self.meta.forget_blob(digest).await?;
        tracing::warn!(%digest, to = ?to, ?unlinked, "scrub quarantined a corrupt blob");
        Ok(Repair::Quarantined { to, unlinked })
    }

    /// Checks everything; repairs what is corrupt when `repair` is set.
    pub async fn scrub(&self, repair: bool, progress: &dyn GcProgress) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let records = self.meta.blob_records(false).await?;
        progress.phase("blobs", Some(records.len() as u64));
        for r in &records {
            progress.step();
            report.blobs_checked += 1;
            let finding = match self.rehash(&r.digest).await? {
                None => Finding::MissingBytes { digest: r.digest.clone(), size: r.size, links: r.links },
                Some((_, n)) if n != r.size => {
                    Finding::WrongSize { digest: r.digest.clone(), recorded: r.size, actual: n }
                }
                Some((actual, n)) => {
                    report.bytes_hashed += n;
                    if actual == r.digest {
                        continue;
                    }
                    Finding::WrongHash { digest: r.digest.clone(), actual }
                }
            };
            // Re-check: garbage collection may have removed the blob (record and bytes) meanwhile, or
            // a push may just have replaced the bytes with good ones.
            if self.meta.blob_size(&r.digest).await?.is_none() {
                continue;
            }
            if let Some((actual, n)) = self.rehash(&r.digest).await?
                && actual == r.digest
                && n == r.size
            {
                continue;
            }
            let fix = if repair { self.quarantine_blob(&r.digest).await? } else { Repair::None };
            report.findings.push((finding, fix));
        }

        let recorded: std::collections::HashSet<&Digest> = records.iter().map(|r| &r.digest).collect();
        let files = self.blobs.list().await?;
        progress.phase("files", Some(files.len() as u64));
        let young = SystemTime::now().checked_sub(UNRECORDED_GRACE).unwrap_or(SystemTime::UNIX_EPOCH);
        for d in files {
            progress.step();
            if recorded.contains(&d) {
                continue;
            }
            let Some(info) = self.blobs.blob_info(&d).await? else { continue };
            if info.modified > young || self.meta.blob_size(&d).await?.is_some() {
                continue;
            }
            report.findings.push((Finding::Unrecorded { digest: d, size: info.size }, Repair::None));
        }

        let repos = self.all_repositories().await?;
        progress.phase("manifests", Some(repos.len() as u64));
        for repo in &repos {
            progress.step();
            for (digest, _) in self.meta.manifest_digests(repo).await? {
                let Some(m) = self.meta.get_manifest(repo, &digest).await? else { continue };
                report.manifests_checked += 1;
                let actual = Digest::of(digest.algorithm(), &m.content);
                if actual == digest {
                    continue;
                }
                let fix = if repair { self.remove_corrupt_manifest(repo, &digest).await? } else { Repair::None };
                report.findings.push((
                    Finding::ManifestCorrupt { repo: repo.to_string(), digest, actual, content: m.content },
                    fix,
                ));
            }
        }
        Ok(report)
    }

    async fn remove_corrupt_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Repair> {
        self.meta.delete_manifest(repo, digest).await?;
        tracing::warn!(%repo, %digest, "scrub removed a manifest whose bytes do not match its digest");
        Ok(Repair::ManifestRemoved)
    }
}
