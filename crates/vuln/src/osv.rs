//! The OSV schema (https://ossf.github.io/osv-schema/) as tolerant serde structs, and the severity of a record.
//!
//! Unknown fields are ignored, unknown enum values (range types, severity types, ecosystems) are kept as strings,
//! `ecosystem_specific` / `database_specific` stay free-form JSON. Only `id` is required. This module never does
//! I/O and never rejects a record for a field it does not understand.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cvss::{self, Severity};

/// One OSV advisory record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityEntry>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<Affected>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

/// `severity[]`: a scoring system and its score (a CVSS vector, or a word for `Ubuntu`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityEntry {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub score: String,
}

/// `affected[]`: one package and the versions of it that are affected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Affected {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<Package>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<SeverityEntry>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecosystem_specific: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

/// `affected[].package`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    #[serde(default)]
    pub ecosystem: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
}

/// `affected[].ranges[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// `SEMVER`, `ECOSYSTEM` or `GIT` (others are kept and ignored).
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_specific: Option<Value>,
}

/// One range event; exactly one field is set in a valid record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// `references[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub url: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Where a finding's severity came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rated {
    pub severity: Severity,
    /// The CVSS base score, when the rating comes from a vector.
    pub score: Option<f64>,
    /// The vector or the database field the rating was read from.
    pub source: String,
}

fn rate_entries(entries: &[SeverityEntry]) -> Option<Rated> {
    // Prefer the newest CVSS version present, then a distribution's own word.
    for kind in ["CVSS_V4", "CVSS_V3"] {
        for e in entries.iter().filter(|e| e.kind == kind) {
            if let Ok(score) = cvss::score(&e.score) {
                return Some(Rated {
                    severity: Severity::from_score(score),
                    score: Some(score),
                    source: e.score.clone(),
                });
            }
        }
    }
    entries.iter().find_map(|e| {
        Severity::from_word(&e.score).map(|s| Rated {
            severity: s,
            score: None,
            source: format!("{}:{}", e.kind, e.score),
        })
    })
}

fn rate_value(v: Option<&Value>, field_path: &str) -> Option<Rated> {
    let v = v?;
    for key in ["severity", "cvss_severity", "urgency", "ubuntu_priority"] {
        if let Some(word) = v.get(key).and_then(Value::as_str)
            && let Some(s) = Severity::from_word(word)
        {
            return Some(Rated { severity: s, score: None, source: format!("{field_path}.{key}:{word}") });
        }
    }
    None
}

impl Advisory {
    /// The severity of this advisory for one of its `affected` entries: a CVSS vector (v4, then v3) on the entry or
    /// the record, else the database's own rating (`database_specific.severity`, Ubuntu priorities, Debian
    /// urgencies), else [`Severity::Unknown`].
    pub fn rating(&self, affected: Option<&Affected>) -> Rated {
        affected
            .and_then(|a| rate_entries(&a.severity))
            .or_else(|| rate_entries(&self.severity))
            .or_else(|| affected.and_then(|a| rate_value(a.ecosystem_specific.as_ref(), "ecosystem_specific")))
            .or_else(|| affected.and_then(|a| rate_value(a.database_specific.as_ref(), "affected.database_specific")))
            .or_else(|| rate_value(self.database_specific.as_ref(), "database_specific"))
            .unwrap_or(Rated { severity: Severity::Unknown, score: None, source: String::new() })
    }

    /// Whether the record has been withdrawn.
    pub fn is_withdrawn(&self) -> bool {
        self.withdrawn.as_deref().is_some_and(|w| !w.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_parsing_and_rating() {
        let json = r#"{
            "id": "GHSA-xxxx", "modified": "2024-01-01T00:00:00Z", "aliases": null, "brand_new_field": [1, 2],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected": [{"package": {"ecosystem": "Hackage", "name": "x"},
                          "ranges": [{"type": "WEIRD", "events": [{"introduced": "0"}]}],
                          "database_specific": {"anything": true}}],
            "database_specific": {"severity": "MODERATE"}
        }"#;
        let a: Advisory = serde_json::from_str(json).unwrap();
        assert!(a.aliases.is_empty());
        let r = a.rating(a.affected.first());
        assert_eq!((r.severity, r.score), (Severity::Critical, Some(9.8)));
        let b: Advisory = serde_json::from_str(r#"{"id":"X","database_specific":{"severity":"MODERATE"}}"#).unwrap();
        assert_eq!(b.rating(None).severity, Severity::Medium);
        assert_eq!(serde_json::from_str::<Advisory>(r#"{"id":"Y"}"#).unwrap().rating(None).severity, Severity::Unknown);
        assert!(serde_json::from_str::<Advisory>(r#"{"summary":"no id"}"#).is_err());
    }
}
