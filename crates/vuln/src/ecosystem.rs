//! OSV ecosystem strings (`Debian:12`, `Alpine:v3.19`, `Ubuntu:22.04:LTS`, `Red Hat:enterprise_linux:9::appstream`,
//! `PyPI`, …) parsed into an [`Ecosystem`] plus an optional distribution release, and release normalization so an
//! advisory's release can be compared with an image's `os-release` `VERSION_ID`.
//!
//! Unknown ecosystems are kept as [`Ecosystem::Unknown`] (stored, counted, never matched); parsing never fails.

use std::fmt;

use crate::version::{Scheme, semver::Flavor};

/// A package ecosystem, as OSV names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ecosystem {
    Debian,
    Ubuntu,
    Alpine,
    Wolfi,
    Chainguard,
    RedHat,
    RockyLinux,
    AlmaLinux,
    Suse,
    OpenSuse,
    PyPI,
    Npm,
    Go,
    CratesIo,
    Maven,
    RubyGems,
    /// Any other ecosystem string (its part before the first `:`), kept verbatim and never matched.
    Unknown(String),
}

const KNOWN: [(&str, Ecosystem); 16] = [
    ("Debian", Ecosystem::Debian),
    ("Ubuntu", Ecosystem::Ubuntu),
    ("Alpine", Ecosystem::Alpine),
    ("Wolfi", Ecosystem::Wolfi),
    ("Chainguard", Ecosystem::Chainguard),
    ("Red Hat", Ecosystem::RedHat),
    ("Rocky Linux", Ecosystem::RockyLinux),
    ("AlmaLinux", Ecosystem::AlmaLinux),
    ("SUSE", Ecosystem::Suse),
    ("openSUSE", Ecosystem::OpenSuse),
    ("PyPI", Ecosystem::PyPI),
    ("npm", Ecosystem::Npm),
    ("Go", Ecosystem::Go),
    ("crates.io", Ecosystem::CratesIo),
    ("Maven", Ecosystem::Maven),
    ("RubyGems", Ecosystem::RubyGems),
];

impl Ecosystem {
    /// Splits an OSV ecosystem string into the ecosystem and its normalized release (if the string has one).
    ///
    /// `Debian:12` → (Debian, "12"); `Alpine:v3.19` → (Alpine, "3.19"); `Ubuntu:Pro:22.04:LTS` → (Ubuntu,
    /// "22.04"); `Red Hat:enterprise_linux:9::appstream` → (RedHat, "9"); `SUSE:Linux Enterprise Server 15 SP5` →
    /// (Suse, "15.5"). Language ecosystems never carry a release (`Maven:https://…` repositories are dropped).
    pub fn parse(s: &str) -> (Ecosystem, Option<String>) {
        let s = s.trim();
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        let eco = KNOWN
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| Ecosystem::Unknown(name.to_owned()));
        let release = match (&eco, rest) {
            (_, None) => None,
            (e, Some(r)) if e.is_distro() => normalize_release(e, r),
            (Ecosystem::Unknown(_), Some(r)) => Some(r.to_owned()),
            _ => None,
        };
        (eco, release)
    }

    /// The OSV spelling of the ecosystem's name (without release).
    pub fn name(&self) -> &str {
        match self {
            Ecosystem::Unknown(s) => s,
            known => KNOWN.iter().find(|(_, e)| e == known).map_or("", |(k, _)| k),
        }
    }

    /// Whether this is an operating-system distribution (whose advisories are per release).
    pub fn is_distro(&self) -> bool {
        matches!(
            self,
            Ecosystem::Debian
                | Ecosystem::Ubuntu
                | Ecosystem::Alpine
                | Ecosystem::Wolfi
                | Ecosystem::Chainguard
                | Ecosystem::RedHat
                | Ecosystem::RockyLinux
                | Ecosystem::AlmaLinux
                | Ecosystem::Suse
                | Ecosystem::OpenSuse
        )
    }

    /// Whether advisories of this ecosystem name source packages (Debian and Ubuntu source packages, Alpine
    /// origins) rather than binary packages.
    pub fn names_source_packages(&self) -> bool {
        matches!(
            self,
            Ecosystem::Debian | Ecosystem::Ubuntu | Ecosystem::Alpine | Ecosystem::Wolfi | Ecosystem::Chainguard
        )
    }

    /// The version order of the ecosystem; `None` for unknown ecosystems.
    pub fn scheme(&self) -> Option<Scheme> {
        Some(match self {
            Ecosystem::Debian | Ecosystem::Ubuntu => Scheme::Dpkg,
            Ecosystem::Alpine | Ecosystem::Wolfi | Ecosystem::Chainguard => Scheme::Apk,
            Ecosystem::RedHat
            | Ecosystem::RockyLinux
            | Ecosystem::AlmaLinux
            | Ecosystem::Suse
            | Ecosystem::OpenSuse => Scheme::Rpm,
            Ecosystem::PyPI => Scheme::Pep440,
            Ecosystem::Npm => Scheme::Semver(Flavor::Npm),
            Ecosystem::Go => Scheme::Semver(Flavor::Go),
            Ecosystem::CratesIo => Scheme::Semver(Flavor::Cargo),
            Ecosystem::Maven => Scheme::Maven,
            Ecosystem::RubyGems => Scheme::RubyGems,
            Ecosystem::Unknown(_) => return None,
        })
    }

    /// The order for an OSV `SEMVER` range in this ecosystem: its own flavour when it is a SemVer ecosystem.
    pub fn semver_scheme(&self) -> Scheme {
        match self.scheme() {
            Some(s @ Scheme::Semver(_)) => s,
            _ => Scheme::Semver(Flavor::Spec),
        }
    }

    /// Normalizes a package name the way the ecosystem considers names equal (PEP 503 for PyPI, case and `-`/`_`
    /// for crates.io); others are case-sensitive and kept.
    pub fn normalize_name(&self, name: &str) -> String {
        match self {
            Ecosystem::PyPI => {
                let mut out = String::with_capacity(name.len());
                let mut in_sep = false;
                for c in name.trim().chars() {
                    if matches!(c, '-' | '_' | '.') {
                        if !in_sep {
                            out.push('-');
                        }
                        in_sep = true;
                    } else {
                        out.extend(c.to_lowercase());
                        in_sep = false;
                    }
                }
                out
            }
            Ecosystem::CratesIo => name.trim().to_ascii_lowercase().replace('_', "-"),
            _ => name.trim().to_owned(),
        }
    }

    /// Normalizes an image's `VERSION_ID` (or an advisory's release) for this distribution; see [`Ecosystem::parse`].
    pub fn normalize_release(&self, release: &str) -> Option<String> {
        normalize_release(self, release)
    }
}

/// Serialized as the OSV ecosystem name (`"Debian"`, `"crates.io"`); any string deserializes (unknown kept).
impl serde::Serialize for Ecosystem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Ecosystem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Ecosystem::parse(&s).0)
    }
}

impl fmt::Display for Ecosystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn numeric_parts(s: &str) -> Vec<&str> {
    s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).collect()
}

fn normalize_release(eco: &Ecosystem, raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    match eco {
        // "12", "12.4" (a point release) → "12"
        Ecosystem::Debian => numeric_parts(raw).first().map(|m| m.to_string()),
        // "22.04:LTS", "Pro:18.04:LTS", "22.04.3" → "22.04"
        Ecosystem::Ubuntu => {
            let part = raw.split(':').find(|p| p.starts_with(|c: char| c.is_ascii_digit()))?;
            let nums = numeric_parts(part);
            match nums.as_slice() {
                [major, minor, ..] => Some(format!("{major}.{minor}")),
                _ => None,
            }
        }
        // "v3.19", "3.19.1" → "3.19"; "edge" stays
        Ecosystem::Alpine => {
            let r = raw.trim_start_matches('v');
            let nums = numeric_parts(r);
            match nums.as_slice() {
                [major, minor, ..] => Some(format!("{major}.{minor}")),
                _ => Some(r.to_owned()),
            }
        }
        // Wolfi and Chainguard are rolling: no release.
        Ecosystem::Wolfi | Ecosystem::Chainguard => None,
        // "enterprise_linux:9::appstream", "9", "9.3" → "9"
        Ecosystem::RedHat | Ecosystem::RockyLinux | Ecosystem::AlmaLinux => {
            raw.split(':').find_map(|p| numeric_parts(p).first().map(|m| m.to_string()))
        }
        // "Linux Enterprise Server 15 SP5" → "15.5"; "Leap 15.5" → "15.5"; "15-SP5" → "15.5"
        Ecosystem::Suse | Ecosystem::OpenSuse => {
            let nums = numeric_parts(raw);
            match nums.as_slice() {
                [major] => Some(major.to_string()),
                [major, minor, ..] => Some(format!("{major}.{minor}")),
                [] => Some(raw.to_owned()),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osv_ecosystem_strings() {
        let cases = [
            ("Debian:12", Ecosystem::Debian, Some("12")),
            ("Debian", Ecosystem::Debian, None),
            ("Alpine:v3.19", Ecosystem::Alpine, Some("3.19")),
            ("Ubuntu:22.04:LTS", Ecosystem::Ubuntu, Some("22.04")),
            ("Ubuntu:Pro:18.04:LTS", Ecosystem::Ubuntu, Some("18.04")),
            ("Red Hat:enterprise_linux:9::appstream", Ecosystem::RedHat, Some("9")),
            ("Rocky Linux:9", Ecosystem::RockyLinux, Some("9")),
            ("AlmaLinux:8", Ecosystem::AlmaLinux, Some("8")),
            ("SUSE:Linux Enterprise Server 15 SP5", Ecosystem::Suse, Some("15.5")),
            ("PyPI", Ecosystem::PyPI, None),
            ("npm", Ecosystem::Npm, None),
            ("crates.io", Ecosystem::CratesIo, None),
            ("Maven:https://repo.example", Ecosystem::Maven, None),
            ("Hex", Ecosystem::Unknown("Hex".into()), None),
        ];
        for (s, eco, rel) in cases {
            assert_eq!(Ecosystem::parse(s), (eco, rel.map(str::to_owned)), "{s}");
        }
        assert_eq!(Ecosystem::Alpine.normalize_release("3.19.1").as_deref(), Some("3.19"));
        assert_eq!(Ecosystem::Debian.normalize_release("12").as_deref(), Some("12"));
        assert_eq!(Ecosystem::RedHat.normalize_release("9.3").as_deref(), Some("9"));
        assert_eq!(Ecosystem::Ubuntu.normalize_release("22.04").as_deref(), Some("22.04"));
        assert_eq!(Ecosystem::Suse.normalize_release("15.5").as_deref(), Some("15.5"));
        assert!(Ecosystem::Unknown("Hex".into()).scheme().is_none());
        assert_eq!(Ecosystem::PyPI.normalize_name("Zope.Interface__x"), "zope-interface-x");
        assert_eq!(Ecosystem::Go.name(), "Go");
    }
}
