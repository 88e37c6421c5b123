//! Debian version order, as `dpkg --compare-versions` (dpkg's `parseversion` and `verrevcmp`).
//!
//! `[epoch:]upstream[-revision]`: `~` sorts before everything (even the end of the string), letters sort before
//! other non-digits, digit runs compare numerically. Parsing refuses what dpkg refuses with an error (empty, embedded
//! spaces, bad epoch, empty upstream or revision) and accepts what dpkg only warns about (bad characters, an upstream
//! not starting with a digit), exactly as `dpkg --compare-versions` does. Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::VersionError;

const SCHEME: &str = "dpkg";

/// A parsed Debian version.
#[derive(Debug, Clone)]
pub struct Version {
    epoch: u32,
    upstream: String,
    revision: String,
}

impl Version {
    /// Parses like dpkg's `parseversion`; leading and trailing blanks are trimmed.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        let err = |reason| VersionError::new(SCHEME, input, reason);
        let is_blank = |c: char| c == ' ' || c == '\t';
        let s = input.trim_matches(is_blank);
        if s.is_empty() {
            return Err(err("version string is empty"));
        }
        if s.contains(is_blank) {
            return Err(err("version string has embedded spaces"));
        }
        let (epoch, rest) = match s.find(':') {
            Some(colon) => {
                let epoch = parse_epoch(&s[..colon]).map_err(err)?;
                let rest = &s[colon + 1..];
                if rest.is_empty() {
                    return Err(err("nothing after colon in version number"));
                }
                (epoch, rest)
            }
            None => (0, s),
        };
        let (upstream, revision) = match rest.rfind('-') {
            Some(hyphen) => {
                if hyphen + 1 == rest.len() {
                    return Err(err("revision number is empty"));
                }
                (&rest[..hyphen], &rest[hyphen + 1..])
            }
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(err("upstream version is empty"));
        }
        Ok(Version { epoch, upstream: upstream.to_owned(), revision: revision.to_owned() })
    }

    /// The epoch (0 when absent).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The upstream part.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The Debian revision ("" when absent).
    pub fn revision(&self) -> &str {
        &self.revision
    }
}

/// `strtol` semantics as dpkg uses them: optional sign, decimal digits, then exactly the colon.
fn parse_epoch(s: &str) -> Result<u32, &'static str> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err(if s.is_empty() { "epoch in version is empty" } else { "epoch in version is not number" });
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        // strtol stops at the first non-digit, which is then not the colon.
        return Err(if digits.as_bytes()[0].is_ascii_digit() {
            "epoch in version is not number"
        } else {
            "epoch in version is empty"
        });
    }
    let value = digits.trim_start_matches('0');
    if negative && !value.is_empty() {
        return Err("epoch in version is negative");
    }
    if value.len() > 10 {
        return Err("epoch in version is too big");
    }
    let n: u64 = if value.is_empty() { 0 } else { value.parse().map_err(|_| "epoch in version is too big")? };
    if n > i32::MAX as u64 {
        return Err("epoch in version is too big");
    }
    Ok(n as u32)
}

/// dpkg's `order()`: digits 0, letters their code, `~` -1, end 0, anything else code + 256. Bytes are C `char`,
/// which is signed on the platforms dpkg's reference runs on, so a byte >= 0x80 maps to `(i8) + 256`.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => (c as i8) as i32 + 256,
    }
}

/// dpkg's `verrevcmp`.
pub fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    let at = |k: usize| a.get(k).copied();
    let bt = |k: usize| b.get(k).copied();
    let is_digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        let mut first_diff: i32 = 0;
        while (at(i).is_some() && !is_digit(at(i))) || (bt(j).is_some() && !is_digit(bt(j))) {
            let ac = order(at(i));
            let bc = order(bt(j));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(i) == Some(b'0') {
            i += 1;
        }
        while bt(j) == Some(b'0') {
            j += 1;
        }
        while is_digit(at(i)) && is_digit(bt(j)) {
            if first_diff == 0 {
                first_diff = a[i] as i32 - b[j] as i32;
            }
            i += 1;
            j += 1;
        }
        if is_digit(at(i)) {
            return Ordering::Greater;
        }
        if is_digit(bt(j)) {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
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
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        Version::parse(a).unwrap().cmp(&Version::parse(b).unwrap())
    }

    #[test]
    fn tilde_letters_digits() {
        assert_eq!(cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(cmp("1.0~~", "1.0~"), Ordering::Less);
        assert_eq!(cmp("1.0a", "1.0+"), Ordering::Less);
        assert_eq!(cmp("1a", "1a0"), Ordering::Equal);
        assert_eq!(cmp("1:0.1", "2.0"), Ordering::Greater);
        assert_eq!(cmp("1.0-1", "1.0-1+b1"), Ordering::Less);
        assert_eq!(cmp("0:1.0", "1.0"), Ordering::Equal);
        assert_eq!(cmp("1.0-0", "1.0"), Ordering::Equal);
    }

    #[test]
    fn errors_dpkg_refuses() {
        for bad in ["", "  ", "1 0", ":1", "a:1", "1:", "1.0-", "-1", "-1:1.0", "99999999999:1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?} should be refused");
        }
        for warn_only in ["a1.0", "1.0_1", "1:2:3"] {
            assert!(Version::parse(warn_only).is_ok(), "{warn_only:?} is only a dpkg warning");
        }
    }
}
