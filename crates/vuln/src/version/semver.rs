//! SemVer 2.0 precedence with three parsing flavours: npm (node-semver's strict parser), crates.io, and Go modules
//! (`golang.org/x/mod/semver`: `v` prefix, `v1`/`v1.2` shorthands, `+incompatible` and other build metadata ignored).
//!
//! Build metadata never affects the order. Numbers are unbounded digit strings (npm additionally refuses main
//! numbers above `Number.MAX_SAFE_INTEGER`, as node-semver does). Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::{VersionError, cmp_digits};

/// How strictly a version string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// node-semver's strict `semver.parse(v)`: optional `v`, no surrounding blanks, at most 256 characters.
    Npm,
    /// The `semver` crate (crates.io): no prefix.
    Cargo,
    /// Go modules: `v` prefix (optional here, OSV records omit it), `vMAJOR` and `vMAJOR.MINOR` shorthands.
    Go,
    /// Plain SemVer 2.0 with an optional `v`, for OSV `SEMVER` ranges outside the ecosystems above.
    Spec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ident {
    Num(String),
    Alpha(String),
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Ident::Num(a), Ident::Num(b)) => cmp_digits(a, b),
            (Ident::Num(_), Ident::Alpha(_)) => Ordering::Less,
            (Ident::Alpha(_), Ident::Num(_)) => Ordering::Greater,
            (Ident::Alpha(a), Ident::Alpha(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed semantic version.
#[derive(Debug, Clone)]
pub struct Version {
    major: String,
    minor: String,
    patch: String,
    pre: Vec<Ident>,
    build: Option<String>,
}

const MAX_SAFE_INTEGER: &str = "9007199254740991";

fn numeric_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

impl Version {
    /// Parses `input` in the given flavour.
    pub fn parse(input: &str, flavor: Flavor) -> Result<Self, VersionError> {
        let err = |reason| VersionError::new("semver", input, reason);
        let mut s = input;
        if flavor == Flavor::Npm && input.len() > 256 {
            return Err(err("longer than 256 characters"));
        }
        if matches!(flavor, Flavor::Npm | Flavor::Go | Flavor::Spec) {
            s = s.strip_prefix('v').unwrap_or(s);
        }
        let (s, build) = match s.split_once('+') {
            Some((head, build)) => {
                if build.is_empty()
                    || build
                        .split('.')
                        .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                {
                    return Err(err("invalid build metadata"));
                }
                (head, Some(build.to_owned()))
            }
            None => (s, None),
        };
        let (core, pre) = match s.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (s, None),
        };
        let mut parts = core.split('.');
        let major = parts.next().unwrap_or("");
        let minor = parts.next();
        let patch = parts.next();
        if parts.next().is_some() {
            return Err(err("more than three numbers"));
        }
        let (minor, patch) = match (minor, patch) {
            (Some(mi), Some(pa)) => (mi, pa),
            // x/mod/semver: "v1" is v1.0.0 and "v1.2" is v1.2.0, but a shorthand takes no suffix.
            (None, None) if flavor == Flavor::Go && pre.is_none() && build.is_none() => ("0", "0"),
            (Some(mi), None) if flavor == Flavor::Go && pre.is_none() && build.is_none() => (mi, "0"),
            _ => return Err(err("expected MAJOR.MINOR.PATCH")),
        };
        for n in [major, minor, patch] {
            if !numeric_ok(n) {
                return Err(err("version numbers are digits without leading zeros"));
            }
            if flavor == Flavor::Npm && cmp_digits(n, MAX_SAFE_INTEGER) == Ordering::Greater {
                return Err(err("number larger than Number.MAX_SAFE_INTEGER"));
            }
        }
        let mut idents = Vec::new();
        if let Some(pre) = pre {
            for id in pre.split('.') {
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(err("invalid pre-release identifier"));
                }
                if id.bytes().all(|b| b.is_ascii_digit()) {
                    if !numeric_ok(id) {
                        return Err(err("numeric pre-release identifiers have no leading zeros"));
                    }
                    idents.push(Ident::Num(id.to_owned()));
                } else {
                    idents.push(Ident::Alpha(id.to_owned()));
                }
            }
        }
        Ok(Version { major: major.to_owned(), minor: minor.to_owned(), patch: patch.to_owned(), pre: idents, build })
    }

    /// Whether there is a pre-release part.
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }

    /// The build metadata, if any (ignored by the order).
    pub fn build(&self) -> Option<&str> {
        self.build.as_deref()
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(&self.major, &other.major)
            .then_with(|| cmp_digits(&self.minor, &other.minor))
            .then_with(|| cmp_digits(&self.patch, &other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                Ident::Num(s) | Ident::Alpha(s) => f.write_str(s)?,
            }
        }
        if let Some(b) = &self.build {
            write!(f, "+{b}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str, f: Flavor) -> Version {
        Version::parse(s, f).unwrap()
    }

    #[test]
    fn spec_precedence() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "2.0.0",
            "2.1.0",
            "2.1.1",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0], Flavor::Cargo) < v(w[1], Flavor::Cargo), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0+a", Flavor::Cargo), v("1.0.0+b", Flavor::Cargo));
    }

    #[test]
    fn go_flavour() {
        assert_eq!(v("v1", Flavor::Go), v("1.0.0", Flavor::Go));
        assert_eq!(v("v1.2", Flavor::Go), v("v1.2.0", Flavor::Go));
        assert_eq!(v("v2.0.0+incompatible", Flavor::Go), v("2.0.0", Flavor::Go));
        assert!(v("v0.0.0-20210101000000-abcdef123456", Flavor::Go) < v("v0.0.1", Flavor::Go));
        assert!(Version::parse("v1.2-pre", Flavor::Go).is_err());
        assert!(Version::parse("v1", Flavor::Cargo).is_err());
    }

    #[test]
    fn refusals() {
        for bad in ["", "1", "1.2", "01.2.3", "1.2.3-01", "1.2.3-", "1.2.3+", "1.2.3-a..b", "1.2.3.4", "1.2.3-é"] {
            assert!(Version::parse(bad, Flavor::Npm).is_err(), "{bad:?}");
        }
        assert!(Version::parse("9007199254740992.0.0", Flavor::Npm).is_err());
        assert!(Version::parse("v1.2.3", Flavor::Npm).is_ok());
        assert!(Version::parse(" 1.2.3", Flavor::Npm).is_err());
    }
}
