//! Access policies: which subject may pull, push or delete in which repositories, by repository
//! pattern, and the explained decision for one subject, repository and action.
//!
//! # The config shape
//!
//! ```toml
//! # Admins may do everything everywhere.
//! admins = ["alice", "group:ops"]
//!
//! [groups]
//! ops = ["alice"]
//! devs = ["bob", "carol"]
//!
//! [[rule]]
//! repository = "public/**"     # `*` = exactly one path component, `**` = any number (even none)
//! pull = ["anonymous"]         # everybody, logged in or not
//! push = ["group:devs"]
//!
//! [[rule]]
//! repository = "team/*"
//! pull = ["authenticated"]     # every logged-in user
//! push = ["group:devs"]
//! delete = ["carol"]           # a bare name is a user (`user:carol` works too)
//! ```
//!
//! # How a decision is made
//!
//! 1. An admin is allowed everything (rule `admins`).
//! 2. Otherwise, among the rules whose pattern matches the repository, the most specific one decides
//!    alone — a less specific rule never adds to it nor takes from it. The subject is allowed if one
//!    of the principals listed for the action covers it: `anonymous` covers everybody,
//!    `authenticated` every logged-in user, `group:NAME` the members of that group, a name that user.
//! 3. No rule matches: denied.
//!
//! **Specificity** (the higher wins), compared in this order:
//! 1. more literal components (`team/app` > `team/*` > `*/*`);
//! 2. fewer `**` components (`team/*/*` > `team/**` for `team/a/b`);
//! 3. left to right, the first component where the patterns differ in kind, literal > `*` > `**`
//!    (`team/*/x` > `*/app/x`: the left-most literal is worth most, like a directory tree);
//! 4. still tied (e.g. `**/a/**` and `**/b/**` on `a/b`): the rule written first in the file.
//!
//! The same pattern twice is a config error. Patterns are checked at load: each literal component
//! must be a valid repository-name component (lower case), so a pattern can only match what
//! `RepoName` accepts, and a repository name like `a/../b` or `Team/app` never reaches matching.
//!
//! With `--htpasswd` and no policy, [`Policy::authenticated_full_access`] applies: every logged-in user
//! may pull, push and delete everything, anonymous users nothing.
//!
//! Must never: let a less specific rule override the most specific one, treat a name with different
//! case as the same user, or allow anything when no rule matches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use entrepot_oci::RepoName;
use serde::Deserialize;

use crate::access::{Action, Actions, Resource};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Anonymous,
    /// A logged-in user, by exact (case-sensitive) name.
    User(String),
}

impl Subject {
    pub fn user(name: impl Into<String>) -> Subject {
        Subject::User(name.into())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Anonymous => f.write_str("anonymous"),
            Subject::User(u) => write!(f, "user {u}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid repository pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("the pattern `{0}` appears in more than one rule")]
    DuplicatePattern(String),
    #[error("invalid principal `{0}`: expected a user name, `user:NAME`, `group:NAME`, `anonymous` or `authenticated`")]
    Principal(String),
    #[error("unknown group `{0}` (define it under [groups])")]
    UnknownGroup(String),
    #[error("`{0}` cannot be an admin")]
    Admin(String),
}

/// A repository pattern such as `team/*` or `public/**` (one grammar for the whole registry: policies,
/// robots, retention, quotas, immutable tags).
pub use entrepot_oci::pattern::{RepoPattern as Pattern, Specificity};

impl From<entrepot_oci::PatternError> for PolicyError {
    fn from(e: entrepot_oci::PatternError) -> PolicyError {
        PolicyError::Pattern { pattern: e.pattern, reason: e.reason.to_string() }
    }
}

/// Who a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    Anonymous,
    Authenticated,
    User(String),
    Group(String),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.contains(':') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Principal {
    pub fn parse(s: &str) -> Result<Principal, PolicyError> {
        let p = match s {
            "anonymous" => Principal::Anonymous,
            "authenticated" => Principal::Authenticated,
            _ => match s.split_once(':') {
                Some(("group", g)) if valid_name(g) => Principal::Group(g.to_string()),
                Some(("user", u)) if valid_name(u) => Principal::User(u.to_string()),
                None if valid_name(s) => Principal::User(s.to_string()),
                _ => return Err(PolicyError::Principal(s.chars().take(100).collect())),
            },
        };
        Ok(p)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Anonymous => f.write_str("anonymous"),
            Principal::Authenticated => f.write_str("authenticated"),
            Principal::User(u) => write!(f, "user:{u}"),
            Principal::Group(g) => write!(f, "group:{g}"),
        }
    }
}

/// The policy as written in the config file (see the module doc).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub repository: String,
    #[serde(default)]
    pub pull: Vec<String>,
    #[serde(default)]
    pub push: Vec<String>,
    #[serde(default)]
    pub delete: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    /// 1-based position in the file.
    number: usize,
    pattern: Pattern,
    pull: Vec<Principal>,
    push: Vec<Principal>,
    delete: Vec<Principal>,
}

impl Rule {
    fn principals(&self, action: Action) -> &[Principal] {
        match action {
            Action::Pull => &self.pull,
            Action::Push => &self.push,
            Action::Delete => &self.delete,
            Action::All => &[],
        }
    }

    fn describe(&self) -> String {
        format!("rule {} (repository = \"{}\")", self.number, self.pattern)
    }
}

/// A validated policy. Deserializes from the TOML shape of the module doc.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "PolicyConfig")]
pub struct Policy {
    admins: Vec<Principal>,
    groups: BTreeMap<String, BTreeSet<String>>,
    rules: Vec<Rule>,
}

/// The outcome of [`Policy::decide`], with the rule that decided (`None`: no rule matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub rule: Option<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rule, self.allowed) {
            (Some(r), true) => write!(f, "allowed by {r}"),
            (Some(r), false) => write!(f, "denied by {r}"),
            (None, _) => f.write_str("denied: no rule matches this repository"),
        }
    }
}

impl TryFrom<PolicyConfig> for Policy {
    type Error = PolicyError;

    fn try_from(cfg: PolicyConfig) -> Result<Policy, PolicyError> {
        let mut groups = BTreeMap::new();
        for (name, members) in cfg.groups {
            if !valid_name(&name) {
                return Err(PolicyError::Principal(format!("group:{name}")));
            }
            let mut set = BTreeSet::new();
            for m in members {
                match Principal::parse(&m)? {
                    Principal::User(u) => set.insert(u),
                    _ => return Err(PolicyError::Principal(m)),
                };
            }
            groups.insert(name, set);
        }
        let principals = |list: Vec<String>| -> Result<Vec<Principal>, PolicyError> {
            list.iter()
                .map(|s| {
                    let p = Principal::parse(s)?;
                    match &p {
                        Principal::Group(g) if !groups.contains_key(g) => Err(PolicyError::UnknownGroup(g.clone())),
                        _ => Ok(p),
                    }
                })
                .collect()
        };
        let admins = principals(cfg.admins)?;
        if let Some(p) = admins.iter().find(|p| matches!(p, Principal::Anonymous | Principal::Authenticated)) {
            return Err(PolicyError::Admin(p.to_string()));
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.into_iter().enumerate() {
            let pattern = Pattern::parse(&r.repository)?;
            if !seen.insert(pattern.as_str().to_string()) {
                return Err(PolicyError::DuplicatePattern(pattern.as_str().to_string()));
            }
            rules.push(Rule {
                number: i + 1,
                pattern,
                pull: principals(r.pull)?,
                push: principals(r.push)?,
                delete: principals(r.delete)?,
            });
        }
        Ok(Policy { admins, groups, rules })
    }
}

impl Policy {
    /// Parses the TOML shape of the module doc.
    pub fn from_toml(s: &str) -> Result<Policy, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    /// The policy of `--htpasswd` without a configured policy: every logged-in user may pull, push and
    /// delete everything; anonymous users nothing.
    pub fn authenticated_full_access() -> Policy {
        let all = vec![Principal::Authenticated];
        Policy {
            admins: Vec::new(),
            groups: BTreeMap::new(),
            rules: vec![Rule {
                number: 1,
                pattern: Pattern::parse("**").expect("valid pattern"),
                pull: all.clone(),
                push: all.clone(),
                delete: all,
            }],
        }
    }

    fn covers(&self, principal: &Principal, subject: &Subject) -> bool {
        match (principal, subject) {
            (Principal::Anonymous, _) => true,
            (_, Subject::Anonymous) => false,
            (Principal::Authenticated, Subject::User(_)) => true,
            (Principal::User(u), Subject::User(s)) => u == s,
            (Principal::Group(g), Subject::User(s)) => self.groups.get(g).is_some_and(|m| m.contains(s)),
        }
    }

    /// Whether the subject has the admin role.
    pub fn is_admin(&self, subject: &Subject) -> bool {
        self.admins.iter().any(|p| self.covers(p, subject))
    }

    /// The most specific rule matching `repo` (ties: the first in the file).
    fn rule_for(&self, repo: &RepoName) -> Option<&Rule> {
        let mut best: Option<(&Rule, Specificity)> = None;
        for rule in self.rules.iter().filter(|r| r.pattern.matches(repo)) {
            let spec = rule.pattern.specificity();
            if best.as_ref().is_none_or(|(_, b)| spec > *b) {
                best = Some((rule, spec));
            }
        }
        best.map(|(r, _)| r)
    }

    /// Whether `subject` may do `action` on `repo`, and which rule says so. `Action::All` needs pull,
    /// push and delete.
    pub fn decide(&self, subject: &Subject, repo: &RepoName, action: Action) -> Decision {
        if self.is_admin(subject) {
            return Decision { allowed: true, rule: Some("admins".to_string()) };
        }
        let Some(rule) = self.rule_for(repo) else { return Decision { allowed: false, rule: None } };
        let allowed = self.rule_actions(rule, subject).contains(action);
        Decision { allowed, rule: Some(rule.describe()) }
    }

    fn rule_actions(&self, rule: &Rule, subject: &Subject) -> Actions {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(|a| rule.principals(*a).iter().any(|p| self.covers(p, subject)))
            .fold(Actions::NONE, |set, a| set.union(Actions::of(a)))
    }

    /// Every action `subject` may do on `repo` (for intersecting with a token request).
    pub fn allowed_actions(&self, subject: &Subject, repo: &RepoName) -> Actions {
        if self.is_admin(subject) {
            return Actions::ALL;
        }
        self.rule_for(repo).map_or(Actions::NONE, |r| self.rule_actions(r, subject))
    }

    /// What `subject` may do on a resource. The catalog is open to everybody: the server filters its
    /// list to the repositories the caller may pull.
    pub fn allowed_on(&self, subject: &Subject, resource: &Resource) -> Actions {
        match resource {
            Resource::Repository(r) => self.allowed_actions(subject, r),
            Resource::Catalog => Actions::ALL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn pattern_matching() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("team/app", &["team/app"], &["team", "team/app/x", "team/apps", "xteam/app"]),
            ("team/*", &["team/app", "team/x"], &["team", "team/a/b", "other/app"]),
            ("team/**", &["team", "team/a", "team/a/b/c"], &["teams/a", "other"]),
            ("**", &["a", "a/b", "a/b/c/d"], &[]),
            ("*", &["a"], &["a/b"]),
            ("*/app", &["x/app"], &["app", "x/y/app"]),
            ("**/app", &["app", "x/app", "x/y/app"], &["app/x", "apps"]),
            ("a/**/b", &["a/b", "a/x/b", "a/x/y/b"], &["a", "b", "a/b/c"]),
            ("**/x/**", &["x", "a/x", "x/a", "a/x/b"], &["a/b"]),
        ];
        for (p, yes, no) in cases {
            let p = pat(p);
            for y in *yes {
                assert!(p.matches(&repo(y)), "{p} should match {y}");
            }
            for n in *no {
                assert!(!p.matches(&repo(n)), "{p} should not match {n}");
            }
        }
    }

    #[test]
    fn pattern_errors() {
        for bad in ["", "Team/*", "team/app-*", "team/*x", "/team", "team/", "a//b", "a/../b", "a/./b", "**/**", "a b"]
        {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        let e = Pattern::parse("team/app-*").unwrap_err().to_string();
        assert!(e.contains("whole path component"), "{e}");
    }

    #[test]
    fn specificity_order() {
        // Each pattern is strictly more specific than the next, and all match `a/b/c`.
        let ordered = ["a/b/c", "a/b/*", "a/*/c", "*/b/c", "a/b/**", "a/*/*", "a/**", "**/c", "*/*/*", "**"];
        for w in ordered.windows(2) {
            assert!(pat(w[0]).matches(&repo("a/b/c")) && pat(w[1]).matches(&repo("a/b/c")));
            assert!(pat(w[0]).specificity() > pat(w[1]).specificity(), "{} > {}", w[0], w[1]);
        }
    }

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml).unwrap()
    }

    const EXAMPLE: &str = r#"
        admins = ["alice", "group:ops"]

        [groups]
        ops = ["olga"]
        devs = ["bob", "carol"]

        [[rule]]
        repository = "public/**"
        pull = ["anonymous"]
        push = ["group:devs"]

        [[rule]]
        repository = "team/*"
        pull = ["authenticated"]
        push = ["group:devs"]
        delete = ["carol"]

        [[rule]]
        repository = "team/secret"
        pull = ["user:carol"]
    "#;

    #[test]
    fn decisions_of_the_documented_example() {
        let p = policy(EXAMPLE);
        let anon = Subject::Anonymous;
        let bob = Subject::user("bob");
        let carol = Subject::user("carol");
        let dave = Subject::user("dave");
        let d = |s: &Subject, r: &str, a: Action| p.decide(s, &repo(r), a);

        assert_eq!(
            d(&anon, "public/x/y", Action::Pull),
            Decision { allowed: true, rule: Some("rule 1 (repository = \"public/**\")".into()) }
        );
        assert!(!d(&anon, "public/x", Action::Push).allowed);
        assert!(d(&bob, "public/x", Action::Pull).allowed, "anonymous covers logged-in users");
        assert!(d(&bob, "public/x", Action::Push).allowed);
        assert!(!d(&anon, "team/app", Action::Pull).allowed);
        assert!(d(&dave, "team/app", Action::Pull).allowed);
        assert!(!d(&dave, "team/app", Action::Push).allowed);
        assert!(d(&carol, "team/app", Action::Delete).allowed);
        assert!(!d(&bob, "team/app", Action::Delete).allowed);
        // The most specific rule decides alone: bob may pull team/* but not team/secret.
        let sec = d(&bob, "team/secret", Action::Pull);
        assert_eq!(sec, Decision { allowed: false, rule: Some("rule 3 (repository = \"team/secret\")".into()) });
        assert_eq!(sec.to_string(), "denied by rule 3 (repository = \"team/secret\")");
        assert!(!d(&carol, "team/secret", Action::Delete).allowed, "not inherited from team/*");
        // No rule: denied, and said so.
        let none = d(&bob, "other", Action::Pull);
        assert_eq!(none, Decision { allowed: false, rule: None });
        assert_eq!(none.to_string(), "denied: no rule matches this repository");
        // Admins, directly and through a group.
        for admin in [Subject::user("alice"), Subject::user("olga")] {
            let a = d(&admin, "anything/at/all", Action::Delete);
            assert_eq!(a, Decision { allowed: true, rule: Some("admins".into()) });
            assert!(p.is_admin(&admin));
        }
        assert!(!p.is_admin(&bob) && !p.is_admin(&anon));
        // `All` needs every action.
        assert!(!d(&bob, "team/app", Action::All).allowed);
        assert!(d(&carol, "team/app", Action::All).allowed);
        assert!(d(&Subject::user("alice"), "team/app", Action::All).allowed);
        assert_eq!(p.allowed_actions(&carol, &repo("team/app")), Actions::ALL);
        assert_eq!(p.allowed_actions(&bob, &repo("team/app")), Actions::PULL.union(Actions::PUSH));
        assert_eq!(p.allowed_actions(&anon, &repo("nothing")), Actions::NONE);
        assert_eq!(p.allowed_on(&anon, &Resource::Catalog), Actions::ALL);
    }

    #[test]
    fn case_tricks_and_escapes() {
        let p = policy(EXAMPLE);
        // User names are case-sensitive: `Alice` is not the admin `alice`, `Carol` not `carol`.
        assert!(!p.is_admin(&Subject::user("Alice")));
        assert!(!p.decide(&Subject::user("Carol"), &repo("team/app"), Action::Delete).allowed);
        assert!(!p.decide(&Subject::user("alice "), &repo("team/app"), Action::Delete).allowed);
        // Names that could escape a pattern never become a RepoName, so they never reach matching.
        for bad in ["team/../secret", "TEAM/secret", "team/Secret", "team%2fsecret", "team//secret", "public/../team/x"]
        {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        // The pattern `team/*` does not reach into sub-repositories.
        assert!(p.decide(&Subject::user("dave"), &repo("team/a/b"), Action::Pull).rule.is_none());
    }

    #[test]
    fn ties_are_broken_by_file_order() {
        let p = policy(
            r#"
            [[rule]]
            repository = "**/a/**"
            pull = ["first"]
            [[rule]]
            repository = "**/b/**"
            pull = ["second"]
        "#,
        );
        let d = p.decide(&Subject::user("first"), &repo("a/b"), Action::Pull);
        assert_eq!(d, Decision { allowed: true, rule: Some("rule 1 (repository = \"**/a/**\")".into()) });
        assert!(!p.decide(&Subject::user("second"), &repo("a/b"), Action::Pull).allowed);
        assert!(p.decide(&Subject::user("second"), &repo("b"), Action::Pull).allowed);
        // Same specificity, order swapped: the other one wins.
        let p = policy(
            r#"
            [[rule]]
            repository = "**/b/**"
            pull = ["second"]
            [[rule]]
            repository = "**/a/**"
            pull = ["first"]
        "#,
        );
        assert!(p.decide(&Subject::user("second"), &repo("a/b"), Action::Pull).allowed);
        // Different specificity: order does not matter.
        let p = policy(
            r#"
            [[rule]]
            repository = "**"
            pull = ["everyone-rule"]
            [[rule]]
            repository = "a/*"
            pull = ["a-rule"]
        "#,
        );
        assert!(p.decide(&Subject::user("a-rule"), &repo("a/b"), Action::Pull).allowed);
        assert!(!p.decide(&Subject::user("everyone-rule"), &repo("a/b"), Action::Pull).allowed);
        assert!(p.decide(&Subject::user("everyone-rule"), &repo("b"), Action::Pull).allowed);
    }

    #[test]
    fn default_policy_for_htpasswd() {
        let p = Policy::authenticated_full_access();
        let u = Subject::user("anyone");
        for a in [Action::Pull, Action::Push, Action::Delete, Action::All] {
            assert!(p.decide(&u, &repo("x/y/z"), a).allowed);
            assert!(!p.decide(&Subject::Anonymous, &repo("x/y/z"), a).allowed);
        }
        assert_eq!(p.decide(&u, &repo("x"), Action::Pull).rule.as_deref(), Some("rule 1 (repository = \"**\")"));
        assert!(!p.is_admin(&u));
    }

    #[test]
    fn config_errors() {
        let err = |s: &str| Policy::from_toml(s).unwrap_err();
        assert!(err("[[rule]]\nrepository = \"Team/*\"\n").contains("invalid repository pattern"));
        assert!(err("[[rule]]\nrepository = \"a\"\n[[rule]]\nrepository = \"a\"\n").contains("more than one rule"));
        assert!(err("[[rule]]\nrepository = \"a\"\npull = [\"group:nope\"]\n").contains("unknown group `nope`"));
        assert!(err("admins = [\"anonymous\"]\n").contains("cannot be an admin"));
        assert!(err("admins = [\"authenticated\"]\n").contains("cannot be an admin"));
        assert!(err("[[rule]]\nrepository = \"a\"\npull = [\"robot:x\"]\n").contains("invalid principal"));
        assert!(err("[[rule]]\nrepository = \"a\"\npull = [\"\"]\n").contains("invalid principal"));
        assert!(err("[[rule]]\nrepository = \"a\"\npul = [\"x\"]\n").contains("unknown field"), "typos are caught");
        assert!(err("[groups]\nx = [\"group:y\"]\n").contains("invalid principal"));
        // An empty policy denies everything.
        let p = policy("");
        assert!(!p.decide(&Subject::user("x"), &repo("a"), Action::Pull).allowed);
    }
}
