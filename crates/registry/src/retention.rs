//! Retention: which tags the `[[retention]]` rules delete, as a plan a person can read before
//! enabling it (`entrepot retention --dry-run`), and applying that plan (by garbage collection runs
//! when configured, or `entrepot retention` without `--dry-run`).
//!
//! For each repository the most specific rule decides alone. Within it, a tag is **kept** when it is
//! immutable (an `[[immutable_tags]]` rule protects it), matches `keep_tags`, is one of the `keep_last`
//! most recently pushed of the remaining tags, or is younger than `older_than`; every other tag is
//! **deleted**. Deleting a tag is conditional on it still pointing where the plan saw it (a push that
//! moves the tag meanwhile wins). Only tags are deleted here; the manifests and blobs they leave
//! unreferenced are garbage collection's to reclaim. Must never delete a tag no rule selects.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use entrepot_meta::TagRecord;
use entrepot_oci::{Digest, RepoName, Tag};

use crate::error::Result;
use crate::policy::{Policies, RetentionRule, format_duration};
use crate::service::Registry;

/// What the plan does with a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionAction {
    Keep,
    Delete,
}

/// The plan for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionDecision {
    pub repo: String,
    pub tag: String,
    pub digest: Digest,
    /// Unix seconds of the push that last set the tag.
    pub updated_at: i64,
    pub age: Duration,
    pub action: RetentionAction,
    /// The rule's repository pattern.
    pub rule: String,
    /// Why, in words.
    pub reason: String,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The plan for the tags of one repository under `rule` (tags newest first, as the store lists them).
pub fn plan_repository(
    repo: &RepoName,
    tags: &[TagRecord],
    rule: &RetentionRule,
    policies: &Policies,
    now: i64,
) -> Vec<RetentionDecision> {
    let mut out = Vec::with_capacity(tags.len());
    let mut rank = 0usize;
    let mut ordered: Vec<&TagRecord> = tags.iter().collect();
    ordered.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| a.tag.cmp(&b.tag)));
    for t in ordered {
        let age = Duration::from_secs(now.saturating_sub(t.updated_at).max(0) as u64);
        let decide = |action, reason: String| RetentionDecision {
            repo: repo.to_string(),
            tag: t.tag.clone(),
            digest: t.digest.clone(),
            updated_at: t.updated_at,
            age,
            action,
            rule: rule.repository.to_string(),
            reason,
        };
        if let Some(im) = policies.immutable_rule(repo, &t.tag) {
            out.push(decide(RetentionAction::Keep, format!("immutable (immutable_tags `{}`)", im.repository)));
            continue;
        }
        if let Some(p) = rule.keep_tags.iter().find(|p| p.matches(&t.tag)) {
            out.push(decide(RetentionAction::Keep, format!("matches keep_tags `{p}`")));
            continue;
        }
        let in_last = rule.keep_last.is_some_and(|n| rank < n);
        rank += 1;
        if in_last {
            let n = rule.keep_last.unwrap_or(0);
            out.push(decide(RetentionAction::Keep, format!("one of the {n} most recent")));
            continue;
        }
        if let Some(limit) = rule.older_than
            && age <= limit.0
        {
            out.push(decide(RetentionAction::Keep, format!("younger than {limit}")));
            continue;
        }
        let mut why = Vec::new();
        if let Some(n) = rule.keep_last {
            why.push(format!("not one of the {n} most recent"));
        }
        if let Some(limit) = rule.older_than {
            why.push(format!("older than {limit} ({} old)", format_duration(age)));
        }
        out.push(decide(RetentionAction::Delete, why.join(", ")));
    }
    out
}

/// The result of applying a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub deleted: u64,
    /// Tags the plan selected that a concurrent push moved (or a delete removed) first.
    pub skipped: u64,
}

impl Registry {
    /// The retention plan of every repository a rule matches.
    pub async fn retention_plan(&self) -> Result<Vec<RetentionDecision>> {
        let policies = self.policies();
        if policies.retention.is_empty() {
            return Ok(Vec::new());
        }
        let now = unix_now();
        let mut out = Vec::new();
        for name in self.all_repositories().await? {
            let Some(rule) = policies.retention_for(&name) else { continue };
            let tags = self.meta.tag_records(&name).await?;
            out.extend(plan_repository(&name, &tags, rule, &policies, now));
        }
        Ok(out)
    }

    /// Deletes the tags the plan selects, each only if it has not moved since the plan saw it.
    pub async fn apply_retention(&self, plan: &[RetentionDecision]) -> Result<RetentionOutcome> {
        let mut outcome = RetentionOutcome::default();
        for d in plan.iter().filter(|d| d.action == RetentionAction::Delete) {
            let (Ok(repo), Ok(tag)) = (RepoName::parse(&d.repo), Tag::parse(&d.tag)) else { continue };
            if self.meta.delete_tag_if(&repo, &tag, &d.digest, d.updated_at).await? {
                outcome.deleted += 1;
            } else {
                outcome.skipped += 1;
            }
        }
        Ok(outcome)
    }

    /// Every repository name, in order.
    pub(crate) async fn all_repositories(&self) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.meta.list_repositories(last.as_deref(), 1000).await?;
            let Some(end) = page.last().cloned() else { break };
            out.extend(page.iter().filter_map(|r| RepoName::parse(r).ok()));
            last = Some(end);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{HumanDuration, ImmutableRule};
    use entrepot_oci::{RepoPattern, TagPattern};

    fn rec(tag: &str, age_days: i64, now: i64) -> TagRecord {
        TagRecord { tag: tag.into(), digest: Digest::sha256(tag.as_bytes()), updated_at: now - age_days * 86_400 }
    }

    fn rule(keep_last: Option<usize>, keep: &[&str], older_than_days: Option<u64>) -> RetentionRule {
        RetentionRule {
            repository: RepoPattern::parse("team/*").expect("pattern"),
            keep_last,
            keep_tags: keep.iter().map(|p| TagPattern::parse(p).expect("tag pattern")).collect(),
            older_than: older_than_days.map(|d| HumanDuration(Duration::from_secs(d * 86_400))),
        }
    }

    fn deleted(plan: &[RetentionDecision]) -> Vec<&str> {
        let mut v: Vec<&str> =
            plan.iter().filter(|d| d.action == RetentionAction::Delete).map(|d| d.tag.as_str()).collect();
        v.sort();
        v
    }

    #[test]
    fn keep_last_keep_tags_and_age_combine() {
        let now = 1_000_000_000;
        let repo = RepoName::parse("team/app").expect("repo");
        let tags: Vec<TagRecord> =
            [("latest", 0), ("b1", 1), ("b2", 2), ("b3", 40), ("v1.0", 100), ("b4", 50), ("b5", 60)]
                .iter()
                .map(|(t, a)| rec(t, *a, now))
                .collect();
        let none = Policies::default();

        // Keep the 2 most recent besides `latest` and `v*`.
        let plan = plan_repository(&repo, &tags, &rule(Some(2), &["latest", "v*"], None), &none, now);
        assert_eq!(deleted(&plan), vec!["b3", "b4", "b5"]);
        let b1 = plan.iter().find(|d| d.tag == "b1").expect("b1");
        assert_eq!(b1.reason, "one of the 2 most recent");
        let v = plan.iter().find(|d| d.tag == "v1.0").expect("v1.0");
        assert_eq!((v.action, v.reason.as_str()), (RetentionAction::Keep, "matches keep_tags `v*`"));

        // Age only: everything older than 45 days that no pattern keeps.
        let plan = plan_repository(&repo, &tags, &rule(None, &["v*"], Some(45)), &none, now);
        assert_eq!(deleted(&plan), vec!["b4", "b5"]);
        let b5 = plan.iter().find(|d| d.tag == "b5").expect("b5");
        assert_eq!(b5.reason, "older than 45d (60d old)");

        // Both: beyond the 1 most recent AND older than 30 days.
        let plan = plan_repository(&repo, &tags, &rule(Some(1), &[], Some(30)), &none, now);
        assert_eq!(deleted(&plan), vec!["b3", "b4", "b5", "v1.0"]);

        // Immutable tags are never deleted by retention.
        let immutable = Policies {
            immutable: vec![ImmutableRule {
                repository: RepoPattern::parse("team/**").expect("pattern"),
                tags: vec![TagPattern::parse("v*").expect("tag")],
            }],
            ..Default::default()
        };
        let plan = plan_repository(&repo, &tags, &rule(Some(1), &[], Some(30)), &immutable, now);
        assert_eq!(deleted(&plan), vec!["b3", "b4", "b5"]);
        assert!(plan.iter().any(|d| d.tag == "v1.0" && d.reason.starts_with("immutable")));
    }
}
