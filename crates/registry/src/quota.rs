//! Quotas: limits on the bytes and the tags of repositories, checked when a push would add to them,
//! and the usage report.
//!
//! **Usage** of a repository is the sum of the sizes of the distinct blobs linked in it (layers and
//! configs uploaded or mounted; manifests themselves are not counted — they are small and bounded by
//! `max_manifest_bytes`). A blob shared by two repositories counts in each: that is what each
//! repository's owner controls, and it does not change when somebody else deletes their copy. A
//! `scope = "total"` quota adds up the usage of every repository its pattern matches.
//!
//! Checks run on the write path only — starting an upload (refused once the repository is full),
//! finishing an upload, mounting, and a manifest push that creates tags — and only when a quota
//! applies to the repository; pulls never look at quotas. A check reads the usage and then the push
//! proceeds, so pushes racing each other can together overshoot a limit by what they add at once; the
//! next push is refused. Must never refuse a push that adds nothing (an existing blob, an existing tag).

use entrepot_meta::RepoUsage;
use entrepot_oci::{Digest, RepoName, Tag};

use crate::error::{Denied, RegistryError, Result};
use crate::policy::{QuotaRule, QuotaScope, format_bytes};
use crate::service::Registry;

/// One line of the usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageLine {
    pub usage: RepoUsage,
    /// The `each` quota that applies to the repository, if any: (pattern, max bytes, max tags).
    pub quota: Option<(String, Option<u64>, Option<u64>)>,
}

/// A `total` quota with the usage it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalLine {
    pub pattern: String,
    pub bytes: u64,
    pub tags: u64,
    pub repositories: u64,
    pub max_bytes: Option<u64>,
    pub max_tags: Option<u64>,
}

/// Usage of every repository and of every `total` quota.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    pub repositories: Vec<UsageLine>,
    pub totals: Vec<TotalLine>,
    /// Sum of the sizes of the distinct blobs stored (what the disk holds for blobs).
    pub stored_bytes: u64,
}

/// `2.0 KiB (2000 bytes)`: readable and exact.
fn exact(n: u64) -> String {
    if n < 1024 { format!("{n} bytes") } else { format!("{} ({n} bytes)", format_bytes(n)) }
}

impl Registry {
    async fn usage_for(&self, rule: &QuotaRule, repo: &RepoName) -> Result<(u64, u64)> {
        Ok(match rule.scope {
            QuotaScope::Each => {
                let u = self.meta.repo_usage(repo).await?;
                (u.bytes, u.tags)
            }
            QuotaScope::Total => {
                let mut bytes = 0u64;
                let mut tags = 0u64;
                for u in self.meta.all_usage().await? {
                    if RepoName::parse(&u.repo).is_ok_and(|r| rule.repository.matches(&r)) {
                        bytes = bytes.saturating_add(u.bytes);
                        tags = tags.saturating_add(u.tags);
                    }
                }
                (bytes, tags)
            }
        })
    }

    /// Refuses adding `add_bytes` bytes and `add_tags` tags to `repo` beyond any quota that applies.
    pub(crate) async fn check_quota(&self, repo: &RepoName, add_bytes: u64, add_tags: u64) -> Result<()> {
        let policies = self.policies();
        for rule in policies.quotas_for(repo) {
            let wants_bytes = add_bytes > 0 && rule.max_bytes.is_some();
            let wants_tags = add_tags > 0 && rule.max_tags.is_some();
            if !wants_bytes && !wants_tags {
                continue;
            }
            let (bytes, tags) = self.usage_for(rule, repo).await?;
            if let Some(max) = rule.max_bytes.map(|b| b.0).filter(|_| wants_bytes)
                && bytes.saturating_add(add_bytes) > max
            {
                return Err(RegistryError::denied(Denied::Quota {
                    what: "storage",
                    rule: rule.repository.to_string(),
                    scope: rule.scope.describe(),
                    usage: exact(bytes),
                    adding: exact(add_bytes),
                    limit: exact(max),
                }));
            }
            if let Some(max) = rule.max_tags.filter(|_| wants_tags)
                && tags.saturating_add(add_tags) > max
            {
                return Err(RegistryError::denied(Denied::Quota {
                    what: "tag",
                    rule: rule.repository.to_string(),
                    scope: rule.scope.describe(),
                    usage: format!("{tags} tags"),
                    adding: format!("{add_tags}"),
                    limit: format!("{max} tags"),
                }));
            }
        }
        Ok(())
    }

    /// The byte check for linking `digest` (of `size` bytes) into `repo`: free if already linked.
    pub(crate) async fn check_blob_quota(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        if self.policies().quotas_for(repo).iter().all(|q| q.max_bytes.is_none()) {
            return Ok(());
        }
        if self.meta.repo_blob_size(repo, digest).await?.is_some() {
            return Ok(());
        }
        self.check_quota(repo, size, 0).await
    }

    /// The tag check for a manifest push pointing `tags` in `repo`: only tags that do not exist yet count.
    pub(crate) async fn check_tag_quota(&self, repo: &RepoName, tags: &[Tag]) -> Result<()> {
        if tags.is_empty() || self.policies().quotas_for(repo).iter().all(|q| q.max_tags.is_none()) {
            return Ok(());
        }
        let mut new = 0u64;
        for t in tags {
            if self.meta.resolve_tag(repo, t).await?.is_none() {
                new += 1;
            }
        }
        self.check_quota(repo, 0, new).await
    }

    /// What every repository holds, against its quotas.
    pub async fn usage_report(&self) -> Result<UsageReport> {
        let policies = self.policies();
        let all = self.meta.all_usage().await?;
        let mut report = UsageReport::default();
        let mut totals: Vec<TotalLine> = policies
            .quotas
            .iter()
            .filter(|q| q.scope == QuotaScope::Total)
            .map(|q| TotalLine {
                pattern: q.repository.to_string(),
                bytes: 0,
                tags: 0,
                repositories: 0,
                max_bytes: q.max_bytes.map(|b| b.0),
                max_tags: q.max_tags,
            })
            .collect();
        let total_rules: Vec<&QuotaRule> = policies.quotas.iter().filter(|q| q.scope == QuotaScope::Total).collect();
        for u in all {
            let Ok(name) = RepoName::parse(&u.repo) else { continue };
            let quota = policies
                .quotas_for(&name)
                .into_iter()
                .find(|q| q.scope == QuotaScope::Each)
                .map(|q| (q.repository.to_string(), q.max_bytes.map(|b| b.0), q.max_tags));
            for (line, rule) in totals.iter_mut().zip(&total_rules) {
                if rule.repository.matches(&name) {
                    line.bytes = line.bytes.saturating_add(u.bytes);
                    line.tags = line.tags.saturating_add(u.tags);
                    line.repositories += 1;
                }
            }
            report.repositories.push(UsageLine { usage: u, quota });
        }
        report.totals = totals;
        report.stored_bytes = self.meta.blob_records(false).await?.iter().map(|b| b.size).sum();
        Ok(report)
    }
}
