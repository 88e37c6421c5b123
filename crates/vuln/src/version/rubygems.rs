//! RubyGems version order: `Gem::Version` (RubyGems 3.3, as shipped with Ruby 3.1).
//!
//! Accepts `[0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?` around optional blanks (blank = "0");
//! `-` becomes `.pre.`; segments are digit runs (numbers) and letter runs (strings, prerelease markers that sort
//! before numbers); trailing zeros of the numeric and of the string part are ignored. Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::{VersionError, canonical_digits, cmp_digits};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Num(String),
    Str(String),
}

/// A parsed gem version.
#[derive(Debug, Clone)]
pub struct Version {
    raw: String,
    canonical: Vec<Segment>,
}

fn is_ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn matches_pattern(s: &str) -> bool {
    // [0-9]+ (\.[0-9a-zA-Z]+)* (-[0-9A-Za-z-]+ (\.[0-9A-Za-z-]+)*)?
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if i == 0 {
        return false;
    }
    while i < b.len() && b[i] == b'.' {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric()).count();
        if n == 0 {
            return false;
        }
        i += 1 + n;
    }
    if i == b.len() {
        return true;
    }
    if b[i] != b'-' {
        return false;
    }
    // "-" then dot-separated parts of [0-9A-Za-z-]+; the first part starts right after the '-'.
    let tail = &s[i + 1..];
    !tail.is_empty()
        && tail.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
}

impl Version {
    /// Parses like `Gem::Version.new(v)`.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let trimmed = input.trim_matches(is_ruby_space);
        let body = if trimmed.is_empty() { "0" } else { trimmed };
        if !matches_pattern(body) {
            return Err(VersionError::new("rubygems", input, "malformed version number string"));
        }
        let normalized = body.replace('-', ".pre.");
        let mut segments = Vec::new();
        let b = normalized.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                segments.push(Segment::Num(canonical_digits(&normalized[i..i + n])));
                i += n;
            } else if b[i].is_ascii_alphabetic() {
                let n = b[i..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
                segments.push(Segment::Str(normalized[i..i + n].to_owned()));
                i += n;
            } else {
                i += 1;
            }
        }
        let string_start = segments.iter().position(|s| matches!(s, Segment::Str(_))).unwrap_or(segments.len());
        let strings = segments.split_off(string_start);
        let mut canonical = drop_trailing_zeros(segments);
        canonical.extend(drop_trailing_zeros(strings));
        Ok(Version { raw: normalized, canonical })
    }

    /// Whether the version has a letter segment (a prerelease to RubyGems).
    pub fn is_prerelease(&self) -> bool {
        self.canonical.iter().any(|s| matches!(s, Segment::Str(_)))
    }
}

fn drop_trailing_zeros(mut v: Vec<Segment>) -> Vec<Segment> {
    while matches!(v.last(), Some(Segment::Num(n)) if n == "0") {
        v.pop();
    }
    v
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.raw == other.raw || self.canonical == other.canonical {
            return Ordering::Equal;
        }
        let zero = Segment::Num("0".to_owned());
        for i in 0..self.canonical.len().max(other.canonical.len()) {
            let l = self.canonical.get(i).unwrap_or(&zero);
            let r = other.canonical.get(i).unwrap_or(&zero);
            let o = match (l, r) {
                (Segment::Num(a), Segment::Num(b)) => cmp_digits(a, b),
                (Segment::Str(_), Segment::Num(_)) => Ordering::Less,
                (Segment::Num(_), Segment::Str(_)) => Ordering::Greater,
                (Segment::Str(a), Segment::Str(b)) => a.cmp(b),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
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
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn order_and_shape() {
        let ordered = ["1.0.a", "1.0.b1", "1.0.pre", "1.0.rc1", "1.0", "1.0.1", "1.1.a", "1.1", "2-x"];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0"), v("1"));
        assert_eq!(v(""), v("0"));
        assert_eq!(v("1-1"), v("1.pre.1"));
        for bad in ["a", "1..2", "1.0-", "1.0 1", "1.0_1", "-1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }
}
