//! Alpine version order, as apk-tools' `version.c` (the tokenizer of apk-tools 2.14 / 3).
//!
//! `digit{.digit}...{letter}{_suffix{#}}...{~hash}{-r#}`: the first number and suffix/revision numbers compare as
//! integers, later dotted numbers compare as strings when either has a leading zero (Gentoo's rule), suffixes order
//! `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p`. [`compare`] orders any two strings
//! exactly as apk does (invalid tails included); [`Version::parse`] refuses what `apk_version_validate` refuses.
//! Must never panic on any input.

use std::cmp::Ordering;
use std::fmt;

use super::VersionError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
    Invalid,
}

/// Suffix ranks: pre-release suffixes below `NONE`, post-release above.
const SUFFIX_INVALID: u8 = 0;
const SUFFIX_NONE: u8 = 5;

fn suffix_value(s: &[u8]) -> u8 {
    match s {
        b"alpha" => 1,
        b"beta" => 2,
        b"pre" => 3,
        b"rc" => 4,
        b"cvs" => 6,
        b"svn" => 7,
        b"git" => 8,
        b"hg" => 9,
        b"p" => 10,
        _ => SUFFIX_INVALID,
    }
}

struct State<'a> {
    token: Token,
    suffix: u8,
    number: u64,
    value: &'a [u8],
    rest: &'a [u8],
}

impl<'a> State<'a> {
    fn first(s: &'a [u8]) -> Self {
        let mut st = State { token: Token::InitialDigit, suffix: 0, number: 0, value: &[], rest: s };
        st.parse_digits();
        st
    }

    /// apk_blob_pull_uint (wrapping like the C code) and the digits consumed.
    fn parse_digits(&mut self) {
        let n = self.rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let (digits, rest) = self.rest.split_at(n);
        self.number = digits.iter().fold(0u64, |acc, d| acc.wrapping_mul(10).wrapping_add(u64::from(d - b'0')));
        self.value = digits;
        self.rest = rest;
        if n == 0 {
            self.token = Token::Invalid;
        }
    }

    fn next(&mut self) {
        let Some(&c) = self.rest.first() else {
            self.token = Token::End;
            return;
        };
        match c {
            b'a'..=b'z' => {
                if self.token > Token::Digit {
                    return self.invalid();
                }
                self.value = &self.rest[..1];
                self.rest = &self.rest[1..];
                self.token = Token::Letter;
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if self.token > Token::Digit {
                        return self.invalid();
                    }
                    self.rest = &self.rest[1..];
                }
                self.token = match self.token {
                    Token::InitialDigit | Token::Digit => Token::Digit,
                    Token::Suffix => Token::SuffixNo,
                    _ => return self.invalid(),
                };
                self.parse_digits();
            }
            b'_' => {
                if self.token > Token::SuffixNo {
                    return self.invalid();
                }
                let rest = &self.rest[1..];
                let n = rest.iter().take_while(|c| c.is_ascii_lowercase()).count();
                self.value = &rest[..n];
                self.rest = &rest[n..];
                self.suffix = suffix_value(self.value);
                if self.suffix == SUFFIX_INVALID {
                    return self.invalid();
                }
                self.token = Token::Suffix;
            }
            b'~' => {
                if self.token >= Token::CommitHash {
                    return self.invalid();
                }
                let rest = &self.rest[1..];
                let n = rest.iter().take_while(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')).count();
                self.value = &rest[..n];
                self.rest = &rest[n..];
                if n == 0 {
                    return self.invalid();
                }
                self.token = Token::CommitHash;
            }
            b'-' => {
                if self.token >= Token::RevisionNo || !self.rest.starts_with(b"-r") {
                    return self.invalid();
                }
                self.rest = &self.rest[2..];
                self.token = Token::RevisionNo;
                self.parse_digits();
            }
            _ => self.invalid(),
        }
    }

    fn invalid(&mut self) {
        self.token = Token::Invalid;
    }
}

fn token_cmp(a: &State<'_>, b: &State<'_>) -> Ordering {
    let numeric = |a: &State<'_>, b: &State<'_>| a.number.cmp(&b.number);
    match a.token {
        Token::Digit if a.value.first() == Some(&b'0') || b.value.first() == Some(&b'0') => a.value.cmp(b.value),
        Token::Digit | Token::InitialDigit | Token::SuffixNo | Token::RevisionNo => numeric(a, b),
        Token::Letter => a.value.first().cmp(&b.value.first()),
        Token::Suffix => a.suffix.cmp(&b.suffix),
        _ => a.value.cmp(b.value),
    }
}

/// Orders two version strings exactly as `apk_version_compare` does, valid or not.
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut ta = State::first(a.as_bytes());
    let mut tb = State::first(b.as_bytes());
    while ta.token == tb.token && ta.token < Token::End {
        let r = token_cmp(&ta, &tb);
        if r != Ordering::Equal {
            return r;
        }
        ta.next();
        tb.next();
    }
    if ta.token == tb.token {
        return Ordering::Equal;
    }
    if ta.token == Token::Suffix && ta.suffix < SUFFIX_NONE {
        return Ordering::Less;
    }
    if tb.token == Token::Suffix && tb.suffix < SUFFIX_NONE {
        return Ordering::Greater;
    }
    // The version whose next token comes later in the grammar (or that ended) is the smaller one.
    tb.token.cmp(&ta.token)
}

/// Whether apk would accept `v` as a package version (`apk_version_validate`).
pub fn is_valid(v: &str) -> bool {
    let mut t = State::first(v.as_bytes());
    while t.token < Token::End {
        t.next();
    }
    t.token == Token::End
}

/// A valid apk version.
#[derive(Debug, Clone)]
pub struct Version(String);

impl Version {
    /// Accepts what apk-tools accepts as a package version.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        if is_valid(input) {
            Ok(Version(input.to_owned()))
        } else {
            Err(VersionError::new("apk", input, "not an apk version (digit{.digit}{letter}{_suf{#}}{~hash}{-r#})"))
        }
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
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
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in ["1", "1.2.3", "1.2a", "1.2_alpha1_p3", "1.0~abc123-r4", "20240101-r0", "1.0_git20240101"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "a1", "1.0bc", "1.0_foo", "1.0-r", "1.0-x1", "1..2", "1.0~", "1.0~XYZ", "1.0A"] {
            assert!(!is_valid(bad), "{bad}");
            assert!(Version::parse(bad).is_err());
        }
    }

    #[test]
    fn order() {
        assert_eq!(compare("1.0_rc1", "1.0"), Ordering::Less);
        assert_eq!(compare("1.0_p1", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.0-r1", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.02", "1.1"), Ordering::Less);
        assert_eq!(compare("1.0a", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.0~abc-r1", "1.0-r1"), Ordering::Greater);
    }
}
