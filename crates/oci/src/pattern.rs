//! Patterns over repository names and tags, for the rules an operator writes (retention, immutable
//! tags, quotas): `team/*`, `public/**`, `v*`, `release-?.?`.
//!
//! A [`RepoPattern`] works on whole path components, with the same grammar and the same
//! "most specific wins" order as the access policies of `entrepot-auth` (`*` is exactly one
//! component, `**` any number, even none). A [`TagPattern`] is a shell-style glob over one tag (`*`
//! any run of characters, `?` exactly one). Both are checked when parsed, so a pattern can only match
//! what `RepoName` / `Tag` accept. Pure: no I/O. Must never match a name partially (every pattern is
//! anchored at both ends).

use std::cmp::Reverse;
use std::fmt;

use crate::name::{MAX_NAME_LEN, MAX_TAG_LEN, RepoName};

/// A pattern that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

/// One component of a repository pattern, ordered by specificity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    DoubleStar = 0,
    Star = 1,
    Literal = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Component {
    Literal(String),
    Star,
    DoubleStar,
}

impl Component {
    fn kind(&self) -> Kind {
        match self {
            Component::Literal(_) => Kind::Literal,
            Component::Star => Kind::Star,
            Component::DoubleStar => Kind::DoubleStar,
        }
    }
}

/// A repository pattern such as `team/*` or `public/**`.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoPattern {
    text: String,
    components: Vec<Component>,
}

/// How specific a repository pattern is; greater is more specific: more literal components, then
/// fewer `**`, then, left to right, the first component that differs in kind (literal > `*` > `**`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    literals: usize,
    fewer_double_stars: Reverse<usize>,
    kinds: Vec<Kind>,
}

impl RepoPattern {
    pub fn parse(s: &str) -> Result<RepoPattern, PatternError> {
        let err = |reason| PatternError { pattern: s.chars().take(300).collect(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(err("longer than a repository name can be"));
        }
        let mut components = Vec::new();
        for c in s.split('/') {
            let comp = match c {
                "**" => Component::DoubleStar,
                "*" => Component::Star,
                lit if lit.contains('*') => {
                    return Err(err("`*` and `**` must be a whole path component (`team/*`, not `team/app-*`)"));
                }
                lit => {
                    RepoName::parse(lit).map_err(|_| {
                        err("each component must be `*`, `**` or a repository-name component ([a-z0-9] with . _ __ - separators)")
                    })?;
                    Component::Literal(lit.to_string())
                }
            };
            if comp == Component::DoubleStar && components.last() == Some(&Component::DoubleStar) {
                return Err(err("`**/**` is the same as `**`; write it once"));
            }
            components.push(comp);
        }
        Ok(RepoPattern { text: s.to_string(), components })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches the whole name.
    pub fn matches(&self, repo: &RepoName) -> bool {
        let name: Vec<&str> = repo.as_str().split('/').collect();
        let p = &self.components;
        // m[i][j]: the first i pattern components match the first j name components.
        let mut m = vec![vec![false; name.len() + 1]; p.len() + 1];
        m[0][0] = true;
        for i in 1..=p.len() {
            for j in 0..=name.len() {
                m[i][j] = match &p[i - 1] {
                    Component::DoubleStar => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                    Component::Star => j > 0 && m[i - 1][j - 1],
                    Component::Literal(l) => j > 0 && m[i - 1][j - 1] && l == name[j - 1],
                };
            }
        }
        m[p.len()][name.len()]
    }

    pub fn specificity(&self) -> Specificity {
        let kinds: Vec<Kind> = self.components.iter().map(Component::kind).collect();
        Specificity {
            literals: kinds.iter().filter(|k| **k == Kind::Literal).count(),
            fewer_double_stars: Reverse(kinds.iter().filter(|k| **k == Kind::DoubleStar).count()),
            kinds,
        }
    }
}

/// The index of the most specific pattern of `patterns` that matches `repo` (the first written wins
/// a tie), if any matches.
pub fn most_specific<'a>(patterns: impl IntoIterator<Item = &'a RepoPattern>, repo: &RepoName) -> Option<usize> {
    let mut best: Option<(usize, Specificity)> = None;
    for (i, p) in patterns.into_iter().enumerate() {
        if !p.matches(repo) {
            continue;
        }
        let s = p.specificity();
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoPattern({})", self.text)
    }
}

impl<'de> serde::Deserialize<'de> for RepoPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RepoPattern, D::Error> {
        let s = String::deserialize(d)?;
        RepoPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A glob over a tag: `v*`, `release-?.?`, `latest`.
#[derive(Clone, PartialEq, Eq)]
pub struct TagPattern(String);

impl TagPattern {
    pub fn parse(s: &str) -> Result<TagPattern, PatternError> {
        let err = |reason| PatternError { pattern: s.chars().take(300).collect(), reason };
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.len() > MAX_TAG_LEN * 2 {
            return Err(err("longer than a tag can be"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*' | b'?')) {
            return Err(err("a tag pattern may hold [a-zA-Z0-9._-] and the wildcards `*` and `?`"));
        }
        Ok(TagPattern(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the glob matches the whole tag.
    pub fn matches(&self, tag: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), tag.as_bytes());
        // Iterative glob with backtracking to the last `*`: linear in practice, no recursion.
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

impl fmt::Display for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagPattern({})", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TagPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TagPattern, D::Error> {
        let s = String::deserialize(d)?;
        TagPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).expect("repo")
    }

    #[test]
    fn repo_patterns_match_whole_components() {
        let p = |s: &str| RepoPattern::parse(s).expect("pattern");
        assert!(p("team/*").matches(&repo("team/app")));
        assert!(!p("team/*").matches(&repo("team/app/sub")));
        assert!(!p("team/*").matches(&repo("team")));
        assert!(p("team/**").matches(&repo("team")));
        assert!(p("team/**").matches(&repo("team/a/b")));
        assert!(!p("team/**").matches(&repo("teams/a")));
        assert!(p("**").matches(&repo("x/y/z")));
        assert!(p("**/app").matches(&repo("a/b/app")));
        assert!(RepoPattern::parse("team/app-*").is_err());
        assert!(RepoPattern::parse("Team/app").is_err());
        assert!(RepoPattern::parse("**/**").is_err());
        assert!(RepoPattern::parse("").is_err());
    }

    #[test]
    fn most_specific_wins() {
        let ps: Vec<RepoPattern> = ["**", "team/**", "team/*", "team/app", "*/app"]
            .iter()
            .map(|s| RepoPattern::parse(s).expect("p"))
            .collect();
        assert_eq!(most_specific(&ps, &repo("team/app")), Some(3));
        assert_eq!(most_specific(&ps, &repo("team/web")), Some(2));
        assert_eq!(most_specific(&ps, &repo("team/a/b")), Some(1));
        assert_eq!(most_specific(&ps, &repo("other/app")), Some(4));
        assert_eq!(most_specific(&ps, &repo("x")), Some(0));
        assert_eq!(most_specific(&ps[1..2], &repo("x")), None);
    }

    #[test]
    fn tag_globs() {
        let t = |s: &str| TagPattern::parse(s).expect("pattern");
        assert!(t("v*").matches("v1.2.3"));
        assert!(t("v*").matches("v"));
        assert!(!t("v*").matches("latest"));
        assert!(t("release-?.?").matches("release-1.2"));
        assert!(!t("release-?.?").matches("release-10.2"));
        assert!(t("*-rc*").matches("1.0-rc2"));
        assert!(t("*").matches("anything"));
        assert!(t("latest").matches("latest"));
        assert!(!t("latest").matches("latest2"));
        assert!(t("a*b*c").matches("aXXbYYc"));
        assert!(!t("a*b*c").matches("aXXbYY"));
        assert!(TagPattern::parse("v/1").is_err());
        assert!(TagPattern::parse("").is_err());
    }
}
