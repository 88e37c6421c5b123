//! The pull policy gate: per repository pattern, refuse pulls of images with findings at or above a
//! severity, except advisories on an allow-list (matched by advisory id or any alias, e.g. a CVE id).
//!
//! The most specific matching pattern decides alone (the same grammar and order as the retention rules:
//! `*` is one path component, `**` any number). Images not scanned yet (or whose scan failed) are allowed
//! unless the rule, or the default, says `unscanned = "deny"`. Pure decisions over a report: this module never
//! reads storage, never knows about HTTP.

use entrepot_oci::{RepoName, RepoPattern, pattern::most_specific};
use entrepot_vuln::Severity;
use serde::Deserialize;

use crate::report::Report;

/// What to do with an image that has no complete scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unscanned {
    #[default]
    Allow,
    Deny,
}

impl Unscanned {
    pub fn parse(s: &str) -> Result<Unscanned, String> {
        match s {
            "allow" => Ok(Unscanned::Allow),
            "deny" => Ok(Unscanned::Deny),
            other => Err(format!("expected allow or deny, got {other:?}")),
        }
    }
}

/// Reads a severity word (`critical`, `high`, `medium`, `low`, `negligible`/`none`, `unknown`), any case.
pub fn parse_severity(s: &str) -> Result<Severity, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "critical" => Ok(Severity::Critical),
        "high" => Ok(Severity::High),
        "medium" | "moderate" => Ok(Severity::Medium),
        "low" => Ok(Severity::Low),
        "negligible" | "none" => Ok(Severity::None),
        "unknown" => Ok(Severity::Unknown),
        other => Err(format!("unknown severity {other:?} (critical, high, medium, low, negligible, unknown)")),
    }
}

fn de_severity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    let s = String::deserialize(d)?;
    parse_severity(&s).map_err(serde::de::Error::custom)
}

/// One `[[scan.policy]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub repository: RepoPattern,
    /// Refuse pulls of images with a finding at or above this severity.
    #[serde(deserialize_with = "de_severity")]
    pub block_at: Severity,
    /// Accepted advisories (ids or aliases), never a reason to refuse.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Overrides the default for images without a complete scan.
    #[serde(default)]
    pub unscanned: Option<Unscanned>,
}

/// The rules and the default for unscanned images.
#[derive(Debug, Clone, Default)]
pub struct PullPolicy {
    pub rules: Vec<PolicyRule>,
    pub unscanned: Unscanned,
}

/// Why a pull is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The rule's repository pattern.
    pub rule: String,
    pub message: String,
    /// The advisories that block the pull (empty when the image is unscanned).
    pub advisories: Vec<String>,
}

impl PullPolicy {
    /// The rule that decides for `repo`, if any.
    pub fn rule_for(&self, repo: &RepoName) -> Option<&PolicyRule> {
        most_specific(self.rules.iter().map(|r| &r.repository), repo).map(|i| &self.rules[i])
    }

    /// Whether any rule could refuse a pull from `repo` (when none can, the gate costs nothing).
    pub fn applies_to(&self, repo: &RepoName) -> bool {
        self.rule_for(repo).is_some()
    }

    /// Decides a pull of the image or index behind `report` (`None`: not scanned yet, or failed).
    pub fn check(&self, repo: &RepoName, report: Option<&Report>) -> Result<(), Refusal> {
        let Some(rule) = self.rule_for(repo) else { return Ok(()) };
        let complete = report.filter(|r| r.status == "complete" && r.platforms.iter().all(|p| p.status != "pending"));
        let Some(report) = complete else {
            if report.is_some_and(|r| r.status == "not_applicable") {
                return Ok(());
            }
            return match rule.unscanned.unwrap_or(self.unscanned) {
                Unscanned::Allow => Ok(()),
                Unscanned::Deny => Err(Refusal {
                    rule: rule.repository.as_str().to_string(),
                    message: format!(
                        "the image has not been scanned yet and the policy for {} refuses unscanned images",
                        rule.repository.as_str()
                    ),
                    advisories: Vec::new(),
                }),
            };
        };
        let accepted = |id: &str, aliases: &[String]| {
            rule.allow.iter().any(|a| a.eq_ignore_ascii_case(id) || aliases.iter().any(|x| x.eq_ignore_ascii_case(a)))
        };
        let mut blocking: Vec<String> = Vec::new();
        for v in &report.vulnerabilities {
            if v.severity >= rule.block_at && !accepted(&v.id, &v.aliases) {
                let label = format!("{} ({}, {} {})", v.id, v.severity, v.package, v.installed);
                if !blocking.contains(&label) {
                    blocking.push(label);
                }
            }
        }
        if blocking.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = {
            let mut ids: Vec<String> = report
                .vulnerabilities
                .iter()
                .filter(|v| v.severity >= rule.block_at && !accepted(&v.id, &v.aliases))
                .map(|v| v.id.clone())
                .collect();
            ids.dedup();
            ids.sort();
            ids.dedup();
            ids
        };
        const SHOWN: usize = 10;
        let more = blocking.len().saturating_sub(SHOWN);
        let mut list = blocking.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        Err(Refusal {
            rule: rule.repository.as_str().to_string(),
            message: format!(
                "pull refused by the vulnerability policy for {}: findings at or above {}: {list}",
                rule.repository.as_str(),
                rule.block_at
            ),
            advisories: ids,
        })
    }
}
