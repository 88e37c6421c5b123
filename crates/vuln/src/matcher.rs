//! Matching one installed package against one OSV advisory, with OSV's semantics.
//!
//! An `affected` entry applies when its ecosystem is the package's, its package name is the package's (the
//! *source* package for Debian, Ubuntu and Alpine when the source is known), and its distribution release (if
//! any) is the image's. It affects the installed version when the version is listed in `versions`, or falls in an
//! `ECOSYSTEM`/`SEMVER` range: events sorted in the ecosystem's order, `introduced: "0"` meaning from the start,
//! `fixed` and `last_affected` closing, `limit` bounding the range. `GIT` ranges are ignored; a range with an
//! event the ecosystem cannot parse is skipped; withdrawn advisories and unknown ecosystems never match.
//! Pure functions: no I/O, no panics.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::cvss::Severity;
use crate::ecosystem::Ecosystem;
use crate::osv::{Advisory, Affected, Range};
use crate::version::{AnyVersion, Scheme};

/// One installed package to look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageQuery {
    pub ecosystem: Ecosystem,
    /// The image's distribution release (`VERSION_ID` from os-release, e.g. `12`, `3.19.1`, `22.04`, `9.3`), for
    /// distribution ecosystems. Advisories tied to a release never match a package whose release is unknown.
    pub release: Option<String>,
    pub name: String,
    pub version: String,
    /// The source package (dpkg `Source:`, apk origin, rpm source RPM name), when known.
    pub source_name: Option<String>,
    /// The source package's version, when it differs from the binary's.
    pub source_version: Option<String>,
}

impl PackageQuery {
    /// A language-ecosystem package (no release, no source package).
    pub fn new(ecosystem: Ecosystem, name: impl Into<String>, version: impl Into<String>) -> Self {
        PackageQuery {
            ecosystem,
            release: None,
            name: name.into(),
            version: version.into(),
            source_name: None,
            source_version: None,
        }
    }

    /// Sets the distribution release.
    pub fn with_release(mut self, release: impl Into<String>) -> Self {
        self.release = Some(release.into());
        self
    }

    /// Sets the source package and (optionally) its version.
    pub fn with_source(mut self, name: impl Into<String>, version: Option<String>) -> Self {
        self.source_name = Some(name.into());
        self.source_version = version;
        self
    }

    /// The (name, version) that advisories of this ecosystem are written against.
    pub fn match_target(&self) -> (&str, &str) {
        if self.ecosystem.names_source_packages()
            && let Some(src) = self.source_name.as_deref().filter(|s| !s.is_empty())
        {
            return (src, self.source_version.as_deref().unwrap_or(&self.version));
        }
        (&self.name, &self.version)
    }

    /// The key the advisory index is looked up by: (ecosystem name, normalized package name).
    pub fn lookup_key(&self) -> (String, String) {
        let (name, _) = self.match_target();
        (self.ecosystem.name().to_owned(), self.ecosystem.normalize_name(name))
    }

    /// The normalized release of the image, for this ecosystem.
    pub fn normalized_release(&self) -> Option<String> {
        self.release.as_deref().and_then(|r| self.ecosystem.normalize_release(r))
    }
}

/// An advisory that affects an installed package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The advisory id (`DSA-…`, `GHSA-…`, `CVE-…`, …).
    pub id: String,
    /// Other ids of the same vulnerability (CVE ids, …).
    pub aliases: Vec<String>,
    pub summary: Option<String>,
    pub severity: Severity,
    /// The CVSS base score behind `severity`, when it came from a vector.
    pub score: Option<f64>,
    /// The vector or database field `severity` was read from.
    pub severity_source: String,
    /// The OSV ecosystem string of the matching `affected` entry (e.g. `Debian:12`).
    pub ecosystem: String,
    /// The installed package's name.
    pub package: String,
    /// The package name the advisory is written against (the source package for Debian/Ubuntu/Alpine).
    pub matched_name: String,
    /// The installed version that was evaluated (the source version when matching a source package).
    pub installed: String,
    /// The first fixed version after the installed one, when the advisory names one.
    pub fixed: Option<String>,
}

/// Evaluates `advisory` against `query`; `None` when it does not affect the installed version.
pub fn match_advisory(advisory: &Advisory, query: &PackageQuery) -> Option<Finding> {
    if advisory.is_withdrawn() {
        return None;
    }
    let scheme = query.ecosystem.scheme()?;
    let (name, version) = query.match_target();
    let wanted_name = query.ecosystem.normalize_name(name);
    let release = query.normalized_release();
    let installed = scheme.parse(version).ok();
    let semver_scheme = query.ecosystem.semver_scheme();
    let installed_semver = if semver_scheme == scheme { installed.clone() } else { semver_scheme.parse(version).ok() };

    for affected in &advisory.affected {
        let Some(pkg) = &affected.package else { continue };
        let (eco, adv_release) = Ecosystem::parse(&pkg.ecosystem);
        if eco != query.ecosystem || eco.normalize_name(&pkg.name) != wanted_name {
            continue;
        }
        if let Some(r) = &adv_release
            && release.as_ref() != Some(r)
        {
            continue;
        }
        let hit = evaluate(affected, scheme, version, installed.as_ref(), semver_scheme, installed_semver.as_ref());
        if let Some(fixed) = hit {
            let rated = advisory.rating(Some(affected));
            return Some(Finding {
                id: advisory.id.clone(),
                aliases: advisory.aliases.clone(),
                summary: advisory.summary.clone(),
                severity: rated.severity,
                score: rated.score,
                severity_source: rated.source,
                ecosystem: pkg.ecosystem.clone(),
                package: query.name.clone(),
                matched_name: name.to_owned(),
                installed: version.to_owned(),
                fixed,
            });
        }
    }
    None
}

/// `Some(fixed)` when the entry affects the version.
fn evaluate(
    affected: &Affected,
    scheme: Scheme,
    raw: &str,
    installed: Option<&AnyVersion>,
    semver_scheme: Scheme,
    installed_semver: Option<&AnyVersion>,
) -> Option<Option<String>> {
    let listed = affected.versions.iter().any(|v| {
        v == raw
            || installed
                .is_some_and(|i| scheme.parse(v).ok().and_then(|p| p.partial_cmp_same(i)) == Some(Ordering::Equal))
    });
    let ranges = || {
        affected.ranges.iter().filter_map(move |range| match range.kind.as_str() {
            "ECOSYSTEM" => installed.map(|v| (range, scheme, v)),
            "SEMVER" => installed_semver.map(|v| (range, semver_scheme, v)),
            _ => None,
        })
    };
    for (range, s, v) in ranges() {
        if let RangeOutcome::Affected { fixed } = eval_range(range, s, v) {
            return Some(fixed);
        }
    }
    // Listed explicitly: report the fix a range names after this version, if any.
    listed.then(|| ranges().find_map(|(range, s, v)| next_fix(range, s, v)))
}

/// The outcome of one range for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    NotAffected,
    /// Affected; `fixed` is the first `fixed` event after the version, when there is one before any
    /// `last_affected`.
    Affected {
        fixed: Option<String>,
    },
    /// An event version could not be parsed in the range's order.
    Unevaluable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Introduced,
    LastAffected,
    Fixed,
    Limit,
}

struct Ev<'a> {
    kind: Kind,
    raw: &'a str,
    /// `None` for `introduced: "0"` and `limit: "*"`.
    version: Option<AnyVersion>,
}

fn events(range: &Range, scheme: Scheme) -> Option<Vec<Ev<'_>>> {
    let mut out = Vec::with_capacity(range.events.len());
    for e in &range.events {
        let (kind, raw) = match (&e.introduced, &e.fixed, &e.last_affected, &e.limit) {
            (Some(v), _, _, _) => (Kind::Introduced, v),
            (_, Some(v), _, _) => (Kind::Fixed, v),
            (_, _, Some(v), _) => (Kind::LastAffected, v),
            (_, _, _, Some(v)) => (Kind::Limit, v),
            _ => continue,
        };
        let version = match (kind, raw.as_str()) {
            (Kind::Introduced, "0") | (Kind::Limit, "*") => None,
            _ => Some(scheme.parse(raw).ok()?),
        };
        out.push(Ev { kind, raw, version });
    }
    // Sort by version in the ecosystem's order ("0" first); at equal versions introduced comes first.
    out.sort_by(|a, b| {
        let by_version = match (&a.version, &b.version) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.partial_cmp_same(y).unwrap_or(Ordering::Equal),
        };
        by_version.then(a.kind.cmp(&b.kind))
    });
    Some(out)
}

fn cmp(v: &AnyVersion, e: &Ev<'_>) -> Ordering {
    match &e.version {
        None => Ordering::Greater,
        Some(ev) => v.partial_cmp_same(ev).unwrap_or(Ordering::Less),
    }
}

/// Evaluates one `ECOSYSTEM`/`SEMVER` range as the OSV specification's pseudo-code does.
pub fn eval_range(range: &Range, scheme: Scheme, v: &AnyVersion) -> RangeOutcome {
    let Some(evs) = events(range, scheme) else { return RangeOutcome::Unevaluable };
    let limits: Vec<&Ev<'_>> = evs.iter().filter(|e| e.kind == Kind::Limit).collect();
    if !limits.is_empty() && !limits.iter().any(|l| l.version.is_none() || cmp(v, l) == Ordering::Less) {
        return RangeOutcome::NotAffected;
    }
    let mut vulnerable = false;
    for e in evs.iter() {
        match e.kind {
            Kind::Introduced if e.version.is_none() || cmp(v, e) != Ordering::Less => vulnerable = true,
            Kind::Fixed if cmp(v, e) != Ordering::Less => vulnerable = false,
            Kind::LastAffected if cmp(v, e) == Ordering::Greater => vulnerable = false,
            _ => {}
        }
    }
    if !vulnerable {
        return RangeOutcome::NotAffected;
    }
    RangeOutcome::Affected { fixed: next_fix_in(&evs, v) }
}

fn next_fix_in(evs: &[Ev<'_>], v: &AnyVersion) -> Option<String> {
    // The first closing event at or after the version: a fix, or a last_affected (no known fix).
    evs.iter()
        .find(|e| matches!(e.kind, Kind::Fixed | Kind::LastAffected) && cmp(v, e) != Ordering::Greater)
        .filter(|e| e.kind == Kind::Fixed)
        .map(|e| e.raw.to_owned())
}

fn next_fix(range: &Range, scheme: Scheme, v: &AnyVersion) -> Option<String> {
    events(range, scheme).and_then(|evs| next_fix_in(&evs, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osv::Event;

    fn range(kind: &str, events: &[(&str, &str)]) -> Range {
        Range {
            kind: kind.into(),
            repo: None,
            database_specific: None,
            events: events
                .iter()
                .map(|(k, v)| {
                    let mut e = Event::default();
                    let v = Some(v.to_string());
                    match *k {
                        "introduced" => e.introduced = v,
                        "fixed" => e.fixed = v,
                        "last_affected" => e.last_affected = v,
                        _ => e.limit = v,
                    }
                    e
                })
                .collect(),
        }
    }

    fn eval(events: &[(&str, &str)], v: &str) -> RangeOutcome {
        let s = Scheme::Dpkg;
        eval_range(&range("ECOSYSTEM", events), s, &s.parse(v).unwrap())
    }

    #[test]
    fn osv_range_semantics() {
        let r = [("introduced", "0"), ("fixed", "1.2-1")];
        assert_eq!(eval(&r, "1.1-3"), RangeOutcome::Affected { fixed: Some("1.2-1".into()) });
        assert_eq!(eval(&r, "1.2-1"), RangeOutcome::NotAffected);
        assert_eq!(eval(&r, "1.2~rc1-1"), RangeOutcome::Affected { fixed: Some("1.2-1".into()) });
        // Events out of order in the record are sorted by the ecosystem's order.
        let multi = [("fixed", "3.1"), ("introduced", "3.0"), ("fixed", "2.0"), ("introduced", "1.0")];
        assert_eq!(eval(&multi, "0.9"), RangeOutcome::NotAffected);
        assert_eq!(eval(&multi, "1.5"), RangeOutcome::Affected { fixed: Some("2.0".into()) });
        assert_eq!(eval(&multi, "2.5"), RangeOutcome::NotAffected);
        assert_eq!(eval(&multi, "3.0"), RangeOutcome::Affected { fixed: Some("3.1".into()) });
        assert_eq!(eval(&multi, "3.1"), RangeOutcome::NotAffected);
        let la = [("introduced", "1.0"), ("last_affected", "1.4")];
        assert_eq!(eval(&la, "1.4"), RangeOutcome::Affected { fixed: None });
        assert_eq!(eval(&la, "1.4.1"), RangeOutcome::NotAffected);
        let lim = [("introduced", "0"), ("limit", "2.0")];
        assert_eq!(eval(&lim, "1.0"), RangeOutcome::Affected { fixed: None });
        assert_eq!(eval(&lim, "2.0"), RangeOutcome::NotAffected);
        assert_eq!(eval(&[("introduced", "0"), ("fixed", "not a version")], "1.0"), RangeOutcome::Unevaluable);
        assert_eq!(eval(&[("introduced", "0")], "1:0"), RangeOutcome::Affected { fixed: None });
    }
}
