//! RPM version order: librpm's `rpmvercmp` over `[epoch:]version[-release]`, as `rpm.labelCompare` applies it.
//!
//! Separators are any non-alphanumeric ASCII except `~` (sorts before everything, even the end) and `^` (sorts
//! after the end but before anything else); digit runs compare numerically and beat letter runs. The epoch is
//! split off like librpm's `parseEVR` (leading digits then `:`), the release at the last `-`. A missing release
//! sorts before any release, as `labelCompare` does with `None`. Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::VersionError;

/// A parsed epoch:version-release.
#[derive(Debug, Clone)]
pub struct Evr {
    epoch: Option<String>,
    version: String,
    release: Option<String>,
}

impl Evr {
    /// Splits like librpm's `parseEVR` (after trimming surrounding blanks); only an empty version is refused.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let s = input.trim();
        let digits_end = s.bytes().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
        let (epoch, rest) = if s.as_bytes().get(digits_end) == Some(&b':') {
            let e = &s[..digits_end];
            (Some(if e.is_empty() { "0".to_owned() } else { e.to_owned() }), &s[digits_end + 1..])
        } else {
            (None, s)
        };
        // librpm splits the release off at the last '-' (the leading epoch digits never hold one).
        let (version, release) = match rest.rfind('-') {
            Some(h) => (&rest[..h], Some(rest[h + 1..].to_owned())),
            None => (rest, None),
        };
        if version.is_empty() {
            return Err(VersionError::new("rpm", input, "version is empty"));
        }
        Ok(Evr { epoch, version: version.to_owned(), release })
    }

    /// Builds from the three header fields of an RPM package (epoch absent = 0).
    pub fn from_parts(epoch: Option<&str>, version: &str, release: Option<&str>) -> Self {
        Evr { epoch: epoch.map(str::to_owned), version: version.to_owned(), release: release.map(str::to_owned) }
    }

    /// The epoch as written, if any.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The version part.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The release part, if any.
    pub fn release(&self) -> Option<&str> {
        self.release.as_deref()
    }
}

/// librpm's `rpmvercmp`.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let (start_a, start_b) = (i, j);
        let isnum = a[i].is_ascii_digit();
        let class = |c: u8| if isnum { c.is_ascii_digit() } else { c.is_ascii_alphabetic() };
        while i < a.len() && class(a[i]) {
            i += 1;
        }
        while j < b.len() && class(b[j]) {
            j += 1;
        }
        if j == start_b {
            // Different segment types: numeric beats alpha.
            return if isnum { Ordering::Greater } else { Ordering::Less };
        }
        let (seg_a, seg_b) = (&a[start_a..i], &b[start_b..j]);
        let ord = if isnum {
            let ta = trim_zeros(seg_a);
            let tb = trim_zeros(seg_b);
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            seg_a.cmp(seg_b)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b'0').count();
    &s[n..]
}

impl Ord for Evr {
    fn cmp(&self, other: &Self) -> Ordering {
        let ea = self.epoch.as_deref().unwrap_or("0");
        let eb = other.epoch.as_deref().unwrap_or("0");
        rpmvercmp(ea, eb).then_with(|| rpmvercmp(&self.version, &other.version)).then_with(|| {
            match (&self.release, &other.release) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (Some(a), Some(b)) => rpmvercmp(a, b),
            }
        })
    }
}

impl PartialOrd for Evr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Evr {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Evr {}

impl fmt::Display for Evr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.epoch {
            write!(f, "{e}:")?;
        }
        f.write_str(&self.version)?;
        if let Some(r) = &self.release {
            write!(f, "-{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpmvercmp_basics() {
        assert_eq!(rpmvercmp("1.0", "1.0"), Ordering::Equal);
        assert_eq!(rpmvercmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(rpmvercmp("1.0^git1", "1.0"), Ordering::Greater);
        assert_eq!(rpmvercmp("1.0^git1", "1.0.1"), Ordering::Less);
        assert_eq!(rpmvercmp("1a", "1.0"), Ordering::Less);
        assert_eq!(rpmvercmp("1.010", "1.9"), Ordering::Greater);
        assert_eq!(rpmvercmp("1_0", "1.0"), Ordering::Equal);
        assert_eq!(rpmvercmp("a", "1"), Ordering::Less);
    }

    #[test]
    fn evr_split() {
        let v = Evr::parse("2:1.2.3-4.el9").unwrap();
        assert_eq!((v.epoch(), v.version(), v.release()), (Some("2"), "1.2.3", Some("4.el9")));
        let v = Evr::parse("1.2").unwrap();
        assert_eq!((v.epoch(), v.release()), (None, None));
        assert!(Evr::parse("1:1.0-1").unwrap() > Evr::parse("1.1-1").unwrap());
        assert!(Evr::parse("").is_err());
    }
}
