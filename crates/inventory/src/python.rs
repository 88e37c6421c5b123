//! Python distribution metadata (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`, single-file `*.egg-info`):
//! the core-metadata header block (RFC 822 style, ends at the first blank line). Names are normalised per
//! PEP 503. Must never read the description body.

use crate::{Package, PackageKind};

/// PEP 503: lowercase, and every run of `-`, `_`, `.` becomes one `-`.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_run = false;
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.extend(c.to_lowercase());
            in_run = false;
        }
    }
    out
}

pub fn parse_metadata(text: &str, path: &str) -> Option<Package> {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else { continue };
        match key.trim().to_ascii_lowercase().as_str() {
            "name" if name.is_none() => name = Some(value.trim()),
            "version" if version.is_none() => version = Some(value.trim()),
            _ => {}
        }
    }
    let (name, version) = (name.filter(|n| !n.is_empty())?, version.filter(|v| !v.is_empty())?);
    Some(Package::new(PackageKind::Python, normalise_name(name), version, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pep503() {
        assert_eq!(normalise_name("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalise_name("FRIENDLY-BARD"), "friendly-bard");
        assert_eq!(normalise_name("friendly.bard"), "friendly-bard");
        assert_eq!(normalise_name("friendly_bard"), "friendly-bard");
        assert_eq!(normalise_name("friendly--bard"), "friendly-bard");
        assert_eq!(normalise_name("FrIeNdLy-._.-bArD"), "friendly-bard");
    }

    #[test]
    fn wheel_metadata() {
        // Head of requests-2.31.0.dist-info/METADATA (Metadata-Version 2.1).
        let text = "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\n\
                    Requires-Dist: charset-normalizer (<4,>=2)\n\nName: not-this\nVersion: 0\n";
        let p = parse_metadata(text, "usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("requests", "2.31.0"));
        let p = parse_metadata("Metadata-Version: 1.1\nName: Zope.Interface\nVersion: 5.5.2\n", "x.egg-info/PKG-INFO")
            .unwrap();
        assert_eq!(p.name, "zope-interface");
        assert!(parse_metadata("Metadata-Version: 2.1\nName: x\n", "m").is_none());
    }
}
