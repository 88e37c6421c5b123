//! PyPI version order: PEP 440 as Python's `packaging.version.Version` parses, normalizes and orders it.
//!
//! `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, case-insensitive, with the spelling variants PEP 440 allows
//! (`alpha`, `c`, `pre`, `preview`, `rev`, `r`, `-N` post releases, `-`/`_`/`.` separators, a leading `v`,
//! implicit numbers). Ordering follows `packaging`'s `_cmpkey`: a dev release without pre/post sorts before
//! pre-releases, trailing zeros of the release are ignored, numeric local segments beat alphanumeric ones.
//! Numbers are unbounded (compared as digit strings). Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::{VersionError, canonical_digits, cmp_digits};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PreLabel {
    A,
    B,
    Rc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LocalSegment {
    Num(String),
    Str(String),
}

impl Ord for LocalSegment {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (LocalSegment::Num(a), LocalSegment::Num(b)) => cmp_digits(a, b),
            (LocalSegment::Num(_), LocalSegment::Str(_)) => Ordering::Greater,
            (LocalSegment::Str(_), LocalSegment::Num(_)) => Ordering::Less,
            (LocalSegment::Str(a), LocalSegment::Str(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for LocalSegment {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A parsed, normalized PEP 440 version.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: String,
    release: Vec<String>,
    pre: Option<(PreLabel, String)>,
    post: Option<String>,
    dev: Option<String>,
    local: Option<Vec<LocalSegment>>,
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).map(|c| c.to_ascii_lowercase())
    }

    fn digits(&mut self) -> Option<&'a str> {
        let n = self.s[self.pos..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let d = &self.s[self.pos..self.pos + n];
        self.pos += n;
        std::str::from_utf8(d).ok()
    }

    /// Consumes the longest of `words` (case-insensitive) at the cursor.
    fn word(&mut self, words: &[&'static str]) -> Option<&'static str> {
        let rest = &self.s[self.pos..];
        let found = words.iter().find(|w| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w.as_bytes()));
        if let Some(w) = found {
            self.pos += w.len();
        }
        found.copied()
    }

    fn sep(&mut self) -> bool {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `[-_.]?` + one of `words` + `[-_.]?` + `[0-9]*`, or nothing (cursor unchanged).
    fn labelled(&mut self, words: &[&'static str]) -> Option<(&'static str, Option<&'a str>)> {
        let start = self.pos;
        self.sep();
        let Some(label) = self.word(words) else {
            self.pos = start;
            return None;
        };
        // A separator after the label is consumed even when no number follows, as the regex does.
        self.sep();
        Some((label, self.digits()))
    }
}

impl Version {
    /// Parses like `packaging.version.Version(...)`.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let err = |reason| VersionError::new("pep440", input, reason);
        let trimmed = input.trim_matches(|c: char| c.is_whitespace());
        let mut c = Cursor { s: trimmed.as_bytes(), pos: 0 };
        if matches!(c.peek(), Some(b'v')) {
            c.pos += 1;
        }
        let first = c.digits().ok_or_else(|| err("a version starts with a number"))?;
        let (epoch, first) = if c.peek() == Some(b'!') {
            c.pos += 1;
            (canonical_digits(first), c.digits().ok_or_else(|| err("the epoch must be followed by a release"))?)
        } else {
            ("0".to_owned(), first)
        };
        let mut release = vec![canonical_digits(first)];
        while c.peek() == Some(b'.') && c.s.get(c.pos + 1).is_some_and(|d| d.is_ascii_digit()) {
            c.pos += 1;
            let d = c.digits().ok_or_else(|| err("empty release segment"))?;
            release.push(canonical_digits(d));
        }
        let pre = c.labelled(&["alpha", "a", "beta", "b", "preview", "pre", "c", "rc"]).map(|(label, n)| {
            let label = match label {
                "alpha" | "a" => PreLabel::A,
                "beta" | "b" => PreLabel::B,
                _ => PreLabel::Rc,
            };
            (label, n.map(canonical_digits).unwrap_or_else(|| "0".to_owned()))
        });
        let post = if c.peek() == Some(b'-') && c.s.get(c.pos + 1).is_some_and(|d| d.is_ascii_digit()) {
            c.pos += 1;
            c.digits().map(canonical_digits)
        } else {
            c.labelled(&["post", "rev", "r"]).map(|(_, n)| n.map(canonical_digits).unwrap_or_else(|| "0".to_owned()))
        };
        let dev = c.labelled(&["dev"]).map(|(_, n)| n.map(canonical_digits).unwrap_or_else(|| "0".to_owned()));
        let local = if c.peek() == Some(b'+') {
            c.pos += 1;
            let mut segments = Vec::new();
            loop {
                let n = c.s[c.pos..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
                if n == 0 {
                    return Err(err("empty local version segment"));
                }
                let seg = &trimmed[c.pos..c.pos + n];
                c.pos += n;
                segments.push(if seg.bytes().all(|b| b.is_ascii_digit()) {
                    LocalSegment::Num(canonical_digits(seg))
                } else {
                    LocalSegment::Str(seg.to_ascii_lowercase())
                });
                if !c.sep() {
                    break;
                }
            }
            Some(segments)
        } else {
            None
        };
        if c.pos != c.s.len() {
            return Err(err("unexpected characters"));
        }
        Ok(Version { epoch, release, pre, post, dev, local })
    }

    /// Whether this is a pre-release or development release.
    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some() || self.dev.is_some()
    }

    fn release_trimmed(&self) -> &[String] {
        let n = self.release.iter().rposition(|s| s != "0").map_or(0, |i| i + 1);
        &self.release[..n]
    }
}

/// `packaging`'s sort key pieces: `None` as minus infinity or plus infinity depending on the field.
fn cmp_release(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = cmp_digits(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum PreKey<'a> {
    NegInf,
    Some(PreLabel, Num<'a>),
    PosInf,
}

#[derive(PartialEq, Eq)]
struct Num<'a>(&'a str);

impl Ord for Num<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(self.0, other.0)
    }
}

impl PartialOrd for Num<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        fn pre_key(v: &Version) -> PreKey<'_> {
            match (&v.pre, &v.post, &v.dev) {
                (None, None, Some(_)) => PreKey::NegInf,
                (None, _, _) => PreKey::PosInf,
                (Some((l, n)), _, _) => PreKey::Some(*l, Num(n)),
            }
        }
        // post: None is -inf; dev: None is +inf; local: None is -inf.
        fn post(v: &Version) -> Option<Num<'_>> {
            v.post.as_deref().map(Num)
        }
        let dev = |a: &Version, b: &Version| match (&a.dev, &b.dev) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => cmp_digits(x, y),
        };
        cmp_digits(&self.epoch, &other.epoch)
            .then_with(|| cmp_release(self.release_trimmed(), other.release_trimmed()))
            .then_with(|| pre_key(self).cmp(&pre_key(other)))
            .then_with(|| post(self).cmp(&post(other)))
            .then_with(|| dev(self, other))
            .then_with(|| self.local.cmp(&other.local))
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
    /// The normalized form, as `str(packaging.version.Version(...))`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != "0" {
            write!(f, "{}!", self.epoch)?;
        }
        f.write_str(&self.release.join("."))?;
        if let Some((l, n)) = &self.pre {
            let l = match l {
                PreLabel::A => "a",
                PreLabel::B => "b",
                PreLabel::Rc => "rc",
            };
            write!(f, "{l}{n}")?;
        }
        if let Some(p) = &self.post {
            write!(f, ".post{p}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, ".dev{d}")?;
        }
        if let Some(local) = &self.local {
            let parts: Vec<&str> = local
                .iter()
                .map(|s| match s {
                    LocalSegment::Num(n) | LocalSegment::Str(n) => n.as_str(),
                })
                .collect();
            write!(f, "+{}", parts.join("."))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn normalization() {
        assert_eq!(v("1.0-1").to_string(), "1.0.post1");
        assert_eq!(v("V1.0ALPHA").to_string(), "1.0a0");
        assert_eq!(v(" 1.0.c1 ").to_string(), "1.0rc1");
        assert_eq!(v("1!2.0-preview-3.rev_4-dev5+Ubuntu-1_a").to_string(), "1!2.0rc3.post4.dev5+ubuntu.1.a");
        assert_eq!(v("1.0a-").to_string(), "1.0a0");
        for bad in ["", "1.0+", "1.0.", "a1", "1.0-", "1.0ab", "1.0+a..b", "1!", "1.0 1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ordering() {
        let ordered = [
            "1.0.dev0",
            "1.0a1.dev1",
            "1.0a1",
            "1.0a1.post1",
            "1.0b1",
            "1.0rc1",
            "1.0",
            "1.0+abc",
            "1.0+1",
            "1.0.post1.dev1",
            "1.0.post1",
            "1.1",
            "1!0.1",
        ];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0.0"), v("1"));
    }
}
