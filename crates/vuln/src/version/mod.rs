//! Version orders, one small module per ecosystem, and the dispatch from an [`Ecosystem`] to its order.
//!
//! Each module mirrors its reference implementation (dpkg, librpm, apk-tools, Python's `packaging`, node-semver /
//! SemVer 2.0, Maven's `ComparableVersion`, RubyGems' `Gem::Version`) and is checked against it in `tests/`.
//! Parsing rejects, with a typed [`VersionError`], what the ecosystem itself rejects; it never panics on any input
//! and never allocates in proportion to anything but the input.

pub mod apk;
pub mod dpkg;
pub mod maven;
pub mod pep440;
pub mod rpm;
pub mod rubygems;
pub mod semver;

use std::cmp::Ordering;

use crate::ecosystem::Ecosystem;

/// A version string the ecosystem's own tooling would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {scheme} version {version:?}: {reason}")]
pub struct VersionError {
    /// The version order that refused it (`dpkg`, `rpm`, `apk`, `pep440`, `semver`, `maven`, `rubygems`).
    pub scheme: &'static str,
    /// The input, as given.
    pub version: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl VersionError {
    pub(crate) fn new(scheme: &'static str, version: &str, reason: &'static str) -> Self {
        VersionError { scheme, version: version.to_owned(), reason }
    }
}

/// The version orders this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Debian and Ubuntu: `dpkg --compare-versions`.
    Dpkg,
    /// Red Hat, Rocky, AlmaLinux, SUSE: librpm's `rpmvercmp` over epoch:version-release.
    Rpm,
    /// Alpine, Wolfi: apk-tools.
    Apk,
    /// PyPI: PEP 440 as Python's `packaging` implements it.
    Pep440,
    /// SemVer 2.0 precedence, with the given flavour of parsing.
    Semver(semver::Flavor),
    /// Maven's `ComparableVersion`.
    Maven,
    /// RubyGems' `Gem::Version`.
    RubyGems,
}

impl Scheme {
    /// Compares two versions in this order; either failing to parse is an error.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        Ok(match self {
            Scheme::Dpkg => dpkg::Version::parse(a)?.cmp(&dpkg::Version::parse(b)?),
            Scheme::Rpm => rpm::Evr::parse(a)?.cmp(&rpm::Evr::parse(b)?),
            Scheme::Apk => apk::Version::parse(a)?.cmp(&apk::Version::parse(b)?),
            Scheme::Pep440 => pep440::Version::parse(a)?.cmp(&pep440::Version::parse(b)?),
            Scheme::Semver(flavor) => semver::Version::parse(a, flavor)?.cmp(&semver::Version::parse(b, flavor)?),
            Scheme::Maven => maven::Version::parse(a)?.cmp(&maven::Version::parse(b)?),
            Scheme::RubyGems => rubygems::Version::parse(a)?.cmp(&rubygems::Version::parse(b)?),
        })
    }

    /// Parses once so that a version compared many times is not re-parsed each time.
    pub fn parse(self, v: &str) -> Result<AnyVersion, VersionError> {
        Ok(match self {
            Scheme::Dpkg => AnyVersion::Dpkg(dpkg::Version::parse(v)?),
            Scheme::Rpm => AnyVersion::Rpm(rpm::Evr::parse(v)?),
            Scheme::Apk => AnyVersion::Apk(apk::Version::parse(v)?),
            Scheme::Pep440 => AnyVersion::Pep440(pep440::Version::parse(v)?),
            Scheme::Semver(flavor) => AnyVersion::Semver(semver::Version::parse(v, flavor)?),
            Scheme::Maven => AnyVersion::Maven(maven::Version::parse(v)?),
            Scheme::RubyGems => AnyVersion::RubyGems(rubygems::Version::parse(v)?),
        })
    }
}

/// A parsed version of any scheme; only versions of the same scheme are comparable.
#[derive(Debug, Clone)]
pub enum AnyVersion {
    Dpkg(dpkg::Version),
    Rpm(rpm::Evr),
    Apk(apk::Version),
    Pep440(pep440::Version),
    Semver(semver::Version),
    Maven(maven::Version),
    RubyGems(rubygems::Version),
}

impl AnyVersion {
    /// Orders two versions of the same scheme; `None` when the schemes differ.
    pub fn partial_cmp_same(&self, other: &AnyVersion) -> Option<Ordering> {
        Some(match (self, other) {
            (AnyVersion::Dpkg(a), AnyVersion::Dpkg(b)) => a.cmp(b),
            (AnyVersion::Rpm(a), AnyVersion::Rpm(b)) => a.cmp(b),
            (AnyVersion::Apk(a), AnyVersion::Apk(b)) => a.cmp(b),
            (AnyVersion::Pep440(a), AnyVersion::Pep440(b)) => a.cmp(b),
            (AnyVersion::Semver(a), AnyVersion::Semver(b)) => a.cmp(b),
            (AnyVersion::Maven(a), AnyVersion::Maven(b)) => a.cmp(b),
            (AnyVersion::RubyGems(a), AnyVersion::RubyGems(b)) => a.cmp(b),
            _ => return None,
        })
    }
}

/// The error for an ecosystem that has no version order here (unknown ecosystems are never matched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    #[error("ecosystem {0:?} has no known version order")]
    UnknownEcosystem(String),
    #[error(transparent)]
    Invalid(#[from] VersionError),
}

/// Compares two versions in `ecosystem`'s own order.
pub fn compare(ecosystem: &Ecosystem, a: &str, b: &str) -> Result<Ordering, CompareError> {
    let scheme = ecosystem.scheme().ok_or_else(|| CompareError::UnknownEcosystem(ecosystem.name().to_owned()))?;
    Ok(scheme.compare(a, b)?)
}

/// Compares two strings of ASCII digits as unbounded non-negative integers (leading zeros ignored).
pub(crate) fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Strips leading zeros, keeping one `0` for zero, so equal numbers have equal strings.
pub(crate) fn canonical_digits(s: &str) -> String {
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".to_owned() } else { t.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_strings_compare_as_numbers() {
        assert_eq!(cmp_digits("010", "9"), Ordering::Greater);
        assert_eq!(cmp_digits("000", ""), Ordering::Equal);
        assert_eq!(cmp_digits("123456789012345678901234567890", "123456789012345678901234567891"), Ordering::Less);
        assert_eq!(canonical_digits("000"), "0");
        assert_eq!(canonical_digits("0120"), "120");
    }

    #[test]
    fn dispatch_uses_the_ecosystem_order() {
        let debian = Ecosystem::parse("Debian:12").0;
        assert_eq!(compare(&debian, "1.0~rc1", "1.0"), Ok(Ordering::Less));
        let pypi = Ecosystem::parse("PyPI").0;
        assert_eq!(compare(&pypi, "1.0.dev1", "1.0a1"), Ok(Ordering::Less));
        let unknown = Ecosystem::parse("Hackage").0;
        assert!(matches!(compare(&unknown, "1", "2"), Err(CompareError::UnknownEcosystem(_))));
    }
}
