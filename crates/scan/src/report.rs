//! The scan report: one JSON shape served by `GET /v2/<name>/_entrepot/vulnerabilities/<ref>` and printed by
//! `entrepot scan --format json`, and the human-readable table of `entrepot scan` (a header with the OS and the
//! counts by severity, then PACKAGE INSTALLED FIXED VULNERABILITY SEVERITY rows, most severe first).
//!
//! Pure functions over stored records: nothing here reads layers, advisories or the network.

use std::fmt::Write as _;

use entrepot_inventory::{OsRelease, Package};
use entrepot_vuln::{Finding, Severity};
use serde::Serialize;

use crate::store::{RecordKind, ScanRecord};

/// Counts of findings by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct Summary {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub negligible: u64,
    pub unknown: u64,
    #[serde(rename = "total")]
    pub total: u64,
}

impl Summary {
    pub fn of<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Summary {
        let mut s = Summary::default();
        for f in findings {
            s.total += 1;
            match f.severity {
                Severity::Critical => s.critical += 1,
                Severity::High => s.high += 1,
                Severity::Medium => s.medium += 1,
                Severity::Low => s.low += 1,
                Severity::None => s.negligible += 1,
                Severity::Unknown => s.unknown += 1,
            }
        }
        s
    }
}

/// One package of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PackageEntry {
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    pub purl: String,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One finding of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VulnerabilityEntry {
    pub id: String,
    pub aliases: Vec<String>,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    pub package: String,
    pub installed: String,
    pub fixed: Option<String>,
    /// The package the advisory names (the source package for Debian, Ubuntu, Alpine).
    pub advisory_package: String,
    pub ecosystem: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One platform of an index.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformEntry {
    pub digest: String,
    pub platform: Option<String>,
    pub status: String,
    pub os: Option<OsRelease>,
    pub summary: Summary,
}

/// The report of one manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    /// `complete`, `not_applicable` (not an image) or `failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub os: Option<OsRelease>,
    pub scanned_at: String,
    pub matched_at: String,
    pub summary: Summary,
    pub packages: Vec<PackageEntry>,
    pub vulnerabilities: Vec<VulnerabilityEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformEntry>,
    pub warnings: Vec<String>,
}

fn time(secs: i64) -> String {
    entrepot_vuln::time::format_unix(secs)
}

fn package_entry(p: &Package, platform: Option<&str>) -> PackageEntry {
    PackageEntry {
        name: p.name.clone(),
        version: p.version.clone(),
        kind: p.kind.as_str().to_string(),
        arch: p.arch.clone(),
        source_name: p.source_name.clone(),
        source_version: p.source_version.clone(),
        purl: p.purl.clone(),
        path: p.path.clone(),
        platform: platform.map(str::to_string),
    }
}

fn vuln_entry(f: &Finding, platform: Option<&str>) -> VulnerabilityEntry {
    VulnerabilityEntry {
        id: f.id.clone(),
        aliases: f.aliases.clone(),
        severity: f.severity,
        score: f.score,
        package: f.package.clone(),
        installed: f.installed.clone(),
        fixed: f.fixed.clone(),
        advisory_package: f.matched_name.clone(),
        ecosystem: f.ecosystem.clone(),
        summary: f.summary.clone(),
        platform: platform.map(str::to_string),
    }
}

/// Most severe first, then by package and advisory id.
pub fn sort_findings(v: &mut [VulnerabilityEntry]) {
    v.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.platform.cmp(&b.platform))
    });
}

fn status_of(kind: &RecordKind) -> (String, Option<String>) {
    match kind {
        RecordKind::Image | RecordKind::Index => ("complete".into(), None),
        RecordKind::NotApplicable(why) => ("not_applicable".into(), Some(why.clone())),
        RecordKind::Failed(why) => ("failed".into(), Some(why.clone())),
    }
}

/// The report of an image record, or of an index record with the records of its platforms (in the index's
/// order; a platform without a record yet is listed as `pending`).
pub fn build(repository: &str, record: &ScanRecord, children: &[(Option<String>, Option<ScanRecord>)]) -> Report {
    let (status, message) = status_of(&record.kind);
    let mut report = Report {
        repository: repository.to_string(),
        digest: record.digest.to_string(),
        media_type: record.media_type.clone(),
        status,
        message,
        os: None,
        scanned_at: time(record.scanned_at),
        matched_at: time(record.matched_at),
        summary: Summary::default(),
        packages: Vec::new(),
        vulnerabilities: Vec::new(),
        platforms: Vec::new(),
        warnings: Vec::new(),
    };
    match &record.kind {
        RecordKind::Image => {
            if let Some(inv) = &record.inventory {
                report.os = inv.os.clone();
                report.packages = inv.packages.iter().map(|p| package_entry(p, None)).collect();
                report.warnings = inv.warnings.clone();
            }
            report.vulnerabilities = record.findings.iter().map(|f| vuln_entry(f, None)).collect();
        }
        RecordKind::Index => {
            let mut oses = Vec::new();
            for (platform, child) in children {
                let p = platform.as_deref();
                let Some(child) = child else {
                    report.platforms.push(PlatformEntry {
                        digest: String::new(),
                        platform: platform.clone(),
                        status: "pending".into(),
                        os: None,
                        summary: Summary::default(),
                    });
                    continue;
                };
                let (status, _) = status_of(&child.kind);
                let os = child.inventory.as_ref().and_then(|i| i.os.clone());
                if let Some(o) = &os {
                    oses.push(o.clone());
                }
                report.platforms.push(PlatformEntry {
                    digest: child.digest.to_string(),
                    platform: platform.clone(),
                    status,
                    os,
                    summary: Summary::of(&child.findings),
                });
                if let Some(inv) = &child.inventory {
                    report.packages.extend(inv.packages.iter().map(|pk| package_entry(pk, p)));
                    let tag = p.unwrap_or("?");
                    report.warnings.extend(inv.warnings.iter().map(|w| format!("{tag}: {w}")));
                }
                report.vulnerabilities.extend(child.findings.iter().map(|f| vuln_entry(f, p)));
                report.matched_at = time(child.matched_at.max(record.matched_at));
            }
            // One OS for the whole index when every platform agrees.
            if let Some(first) = oses.first()
                && oses.iter().all(|o| o == first)
            {
                report.os = Some(first.clone());
            }
        }
        RecordKind::NotApplicable(_) | RecordKind::Failed(_) => {}
    }
    sort_findings(&mut report.vulnerabilities);
    report.summary = Summary {
        critical: count(&report.vulnerabilities, Severity::Critical),
        high: count(&report.vulnerabilities, Severity::High),
        medium: count(&report.vulnerabilities, Severity::Medium),
        low: count(&report.vulnerabilities, Severity::Low),
        negligible: count(&report.vulnerabilities, Severity::None),
        unknown: count(&report.vulnerabilities, Severity::Unknown),
        total: report.vulnerabilities.len() as u64,
    };
    report
}

fn count(v: &[VulnerabilityEntry], s: Severity) -> u64 {
    v.iter().filter(|f| f.severity == s).count() as u64
}

impl Report {
    /// Whether any finding is at or above `threshold`.
    pub fn has_at_least(&self, threshold: Severity) -> bool {
        self.vulnerabilities.iter().any(|v| v.severity >= threshold)
    }
}

fn os_label(os: Option<&OsRelease>) -> String {
    match os {
        Some(o) => match (&o.id, &o.version_id) {
            (Some(id), Some(v)) => format!("{id} {v}"),
            (Some(id), None) => id.clone(),
            _ => o.pretty_name.clone().unwrap_or_else(|| "unknown OS".into()),
        },
        None => "unknown OS".into(),
    }
}

/// The table `entrepot scan` prints by default.
pub fn render_table(r: &Report) -> String {
    let mut out = String::new();
    let s = &r.summary;
    let _ = writeln!(out, "{}@{} ({})", r.repository, r.digest, os_label(r.os.as_ref()));
    if let Some(m) = &r.message {
        let _ = writeln!(out, "{}: {m}", r.status);
    }
    let _ = writeln!(
        out,
        "Packages: {}  Vulnerabilities: {} (CRITICAL: {}, HIGH: {}, MEDIUM: {}, LOW: {}, NEGLIGIBLE: {}, UNKNOWN: {})",
        r.packages.len(),
        s.total,
        s.critical,
        s.high,
        s.medium,
        s.low,
        s.negligible,
        s.unknown
    );
    for p in &r.platforms {
        let _ = writeln!(
            out,
            "  {} {} ({}): {} vulnerabilities",
            p.platform.as_deref().unwrap_or("?"),
            p.digest,
            p.status,
            p.summary.total
        );
    }
    if r.vulnerabilities.is_empty() {
        let _ = writeln!(out, "\nNo known vulnerabilities.");
        return out;
    }
    let with_platform = !r.platforms.is_empty();
    let mut header = vec!["PACKAGE", "INSTALLED", "FIXED", "VULNERABILITY", "SEVERITY"];
    if with_platform {
        header.push("PLATFORM");
    }
    let rows: Vec<Vec<String>> = r
        .vulnerabilities
        .iter()
        .map(|v| {
            let mut row = vec![
                v.package.clone(),
                v.installed.clone(),
                v.fixed.clone().unwrap_or_default(),
                v.id.clone(),
                v.severity.as_str().to_string(),
            ];
            if with_platform {
                row.push(v.platform.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out.push('\n');
    let line = |cells: &[&str], out: &mut String| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(&header, &mut out);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells, &mut out);
    }
    out
}
