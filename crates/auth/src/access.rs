//! The Docker token protocol's vocabulary: actions (`pull`, `push`, `delete`, `*`), scopes as clients
//! write them (`repository:<name>:<actions>`, `registry:catalog:*`), the `access` claim of a token,
//! and [`Grant`], the set of what a caller may do.
//!
//! The one rule of the protocol lives here: what is granted is what was requested intersected with
//! what is allowed ([`Grant::intersect`]); a partial grant is not an error.
//!
//! Must never: accept a scope whose name is not a valid `RepoName` (no `..`, no upper case, no encoded
//! characters reach a pattern), turn an unknown action or resource type into a permission, or grant
//! anything that was not requested.

use std::collections::BTreeMap;
use std::fmt;

use entrepot_oci::RepoName;
use serde::{Deserialize, Serialize};

/// One thing a caller can do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// `*`: every action (the only action of `registry:catalog`).
    All,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action, ScopeError> {
        match s {
            "pull" => Ok(Action::Pull),
            "push" => Ok(Action::Push),
            "delete" => Ok(Action::Delete),
            "*" => Ok(Action::All),
            other => Err(ScopeError::UnknownAction(truncate(other))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::All => "*",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions (`*` is the full set).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const ALL: Actions = Actions(7);

    pub fn of(action: Action) -> Actions {
        match action {
            Action::Pull => Actions::PULL,
            Action::Push => Actions::PUSH,
            Action::Delete => Actions::DELETE,
            Action::All => Actions::ALL,
        }
    }

    /// Parses a comma-separated list such as `pull,push` or `*`; empty items, unknown actions and an
    /// empty list are errors.
    pub fn parse_list(s: &str) -> Result<Actions, ScopeError> {
        if s.is_empty() {
            return Err(ScopeError::NoActions);
        }
        let mut set = Actions::NONE;
        for item in s.split(',') {
            set = set.union(Actions::of(Action::parse(item)?));
        }
        Ok(set)
    }

    /// Whether every action of `action` is in the set (`All` needs the full set).
    pub fn contains(self, action: Action) -> bool {
        let a = Actions::of(action);
        self.0 & a.0 == a.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in canonical order (`pull`, `push`, `delete`).
    pub fn to_vec(self) -> Vec<Action> {
        [Action::Pull, Action::Push, Action::Delete].into_iter().filter(|a| self.contains(*a)).collect()
    }
}

impl fmt::Display for Actions {
    /// `pull,push,delete` in canonical order; the empty set prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.to_vec().into_iter().map(Action::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({self})")
    }
}

/// What a scope is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Repository(RepoName),
    /// `registry:catalog`, the `_catalog` endpoint.
    Catalog,
}

impl Resource {
    /// The `type` of the Docker `access` claim.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Repository(_) => "repository",
            Resource::Catalog => "registry",
        }
    }

    /// The `name` of the Docker `access` claim.
    pub fn name(&self) -> &str {
        match self {
            Resource::Repository(r) => r.as_str(),
            Resource::Catalog => "catalog",
        }
    }
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope must look like `repository:<name>:<actions>` or `registry:catalog:*`")]
    Malformed,
    #[error("unknown resource type `{0}` (expected `repository` or `registry`)")]
    UnknownType(String),
    #[error("invalid repository name in scope: {0}")]
    InvalidName(entrepot_oci::NameError),
    #[error("unknown registry resource `{0}` (only `registry:catalog:*` exists)")]
    UnknownRegistryResource(String),
    #[error("the catalog scope only has the action `*`")]
    CatalogActions,
    #[error("unknown action `{0}` (expected pull, push, delete or *)")]
    UnknownAction(String),
    #[error("scope has no actions")]
    NoActions,
}

/// Keeps an echoed piece of client input short in an error message.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A requested scope, such as `repository:team/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: Resource,
    pub actions: Actions,
}

impl Scope {
    pub fn repository(repo: RepoName, actions: Actions) -> Scope {
        Scope { resource: Resource::Repository(repo), actions }
    }

    pub fn catalog() -> Scope {
        Scope { resource: Resource::Catalog, actions: Actions::ALL }
    }

    /// Parses one scope. The type is before the first `:`, the actions after the last; a type with a
    /// class (`repository(plugin)`) is not supported and refused.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let (kind, rest) = s.split_once(':').ok_or(ScopeError::Malformed)?;
        let (name, actions) = rest.rsplit_once(':').ok_or(ScopeError::Malformed)?;
        match kind {
            "repository" => {
                let repo = RepoName::parse(name).map_err(ScopeError::InvalidName)?;
                Ok(Scope::repository(repo, Actions::parse_list(actions)?))
            }
            "registry" => {
                if name != "catalog" {
                    return Err(ScopeError::UnknownRegistryResource(truncate(name)));
                }
                if actions != "*" {
                    return Err(ScopeError::CatalogActions);
                }
                Ok(Scope::catalog())
            }
            other => Err(ScopeError::UnknownType(truncate(other))),
        }
    }

    /// Parses the scopes of a token request: each `scope` parameter may hold several scopes separated
    /// by spaces. Scopes for the same resource are merged.
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, ScopeError> {
        let mut merged: BTreeMap<Resource, Actions> = BTreeMap::new();
        for param in params {
            for s in param.split(' ').filter(|s| !s.is_empty()) {
                let scope = Scope::parse(s)?;
                let entry = merged.entry(scope.resource).or_default();
                *entry = entry.union(scope.actions);
            }
        }
        Ok(merged.into_iter().map(|(resource, actions)| Scope { resource, actions }).collect())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Resource::Repository(r) => write!(f, "repository:{r}:{}", self.actions),
            Resource::Catalog => f.write_str("registry:catalog:*"),
        }
    }
}

/// One entry of a token's `access` claim, in the Docker shape `{"type", "name", "actions"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// What a caller may do: actions per resource. Never holds an entry with no action.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    entries: BTreeMap<Resource, Actions>,
}

impl Grant {
    pub fn new() -> Grant {
        Grant::default()
    }

    /// Adds actions on a resource (nothing if `actions` is empty).
    pub fn add(&mut self, resource: Resource, actions: Actions) {
        if actions.is_empty() {
            return;
        }
        let entry = self.entries.entry(resource).or_default();
        *entry = entry.union(actions);
    }

    /// The protocol's rule: each requested scope, intersected with what `allowed` says the caller may
    /// do on that resource. Resources with nothing left are dropped (a partial grant, not an error).
    pub fn intersect(requested: &[Scope], mut allowed: impl FnMut(&Resource) -> Actions) -> Grant {
        let mut grant = Grant::new();
        for scope in requested {
            let actions = scope.actions.intersect(allowed(&scope.resource));
            grant.add(scope.resource.clone(), actions);
        }
        grant
    }

    /// What both grants allow (e.g. a robot token's scopes restricted to what was requested).
    pub fn restrict_to(&self, other: &Grant) -> Grant {
        let mut grant = Grant::new();
        for (resource, actions) in &self.entries {
            grant.add(resource.clone(), actions.intersect(other.actions_on(resource)));
        }
        grant
    }

    pub fn actions_on(&self, resource: &Resource) -> Actions {
        self.entries.get(resource).copied().unwrap_or_default()
    }

    /// Whether the grant covers `action` on `repo`.
    pub fn allows(&self, repo: &RepoName, action: Action) -> bool {
        self.actions_on(&Resource::Repository(repo.clone())).contains(action)
    }

    pub fn allows_catalog(&self) -> bool {
        self.actions_on(&Resource::Catalog).contains(Action::All)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Resource, Actions)> {
        self.entries.iter().map(|(r, a)| (r, *a))
    }

    /// The grant as scopes (e.g. for the `scope` field of a token response).
    pub fn scopes(&self) -> Vec<Scope> {
        self.iter().map(|(r, a)| Scope { resource: r.clone(), actions: a }).collect()
    }

    /// The `access` claim of a token.
    pub fn to_access_claim(&self) -> Vec<AccessEntry> {
        self.iter()
            .map(|(r, a)| AccessEntry {
                kind: r.kind().to_string(),
                name: r.name().to_string(),
                actions: match r {
                    Resource::Catalog => vec!["*".to_string()],
                    Resource::Repository(_) => a.to_vec().iter().map(|a| a.as_str().to_string()).collect(),
                },
            })
            .collect()
    }

    /// Reads a verified token's `access` claim. Anything not understood — an unknown type, an invalid
    /// name, an unknown action — grants nothing (it is skipped), so a claim can never grant more than
    /// what this crate can name.
    pub fn from_access_claim(entries: &[AccessEntry]) -> Grant {
        let mut grant = Grant::new();
        for e in entries {
            let resource = match e.kind.as_str() {
                "repository" => match RepoName::parse(&e.name) {
                    Ok(r) => Resource::Repository(r),
                    Err(_) => continue,
                },
                "registry" if e.name == "catalog" => Resource::Catalog,
                _ => continue,
            };
            let actions = e
                .actions
                .iter()
                .filter_map(|a| Action::parse(a).ok())
                .fold(Actions::NONE, |set, a| set.union(Actions::of(a)));
            if resource == Resource::Catalog && !actions.contains(Action::All) {
                continue;
            }
            grant.add(resource, actions);
        }
        grant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn parse_and_print_scopes() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s.resource, Resource::Repository(repo("team/app")));
        assert_eq!(s.actions, Actions::PULL.union(Actions::PUSH));
        assert_eq!(s.to_string(), "repository:team/app:pull,push");
        // Canonical order and deduplication when printing.
        assert_eq!(Scope::parse("repository:a:delete,pull,pull").unwrap().to_string(), "repository:a:pull,delete");
        assert_eq!(Scope::parse("repository:a:*").unwrap().actions, Actions::ALL);
        assert_eq!(Scope::parse("repository:a:*").unwrap().to_string(), "repository:a:pull,push,delete");
        assert_eq!(Scope::parse("registry:catalog:*").unwrap(), Scope::catalog());
        assert_eq!(Scope::catalog().to_string(), "registry:catalog:*");
    }

    #[test]
    fn strict_scope_errors() {
        use ScopeError::*;
        let err = |s: &str| Scope::parse(s).unwrap_err();
        assert_eq!(err("repository"), Malformed);
        assert_eq!(err("repository:a"), Malformed);
        assert_eq!(err(""), Malformed);
        assert!(matches!(err("repository:a/../b:pull"), InvalidName(_)));
        assert!(matches!(err("repository:Team/app:pull"), InvalidName(_)));
        assert!(matches!(err("repository:a%2fb:pull"), InvalidName(_)));
        assert!(matches!(err("repository::pull"), InvalidName(_)));
        assert!(matches!(err("repository:localhost:5000/a:pull"), InvalidName(_)));
        assert_eq!(err("repository:a:"), NoActions);
        assert_eq!(err("repository:a:pull,"), UnknownAction(String::new()));
        assert_eq!(err("repository:a:PULL"), UnknownAction("PULL".into()));
        assert_eq!(err("repository:a:pull push"), UnknownAction("pull push".into()));
        assert_eq!(err("repository(plugin):a:pull"), UnknownType("repository(plugin)".into()));
        assert_eq!(err("Repository:a:pull"), UnknownType("Repository".into()));
        assert_eq!(err("registry:catalog:pull"), CatalogActions);
        assert_eq!(err("registry:other:*"), UnknownRegistryResource("other".into()));
        // Error messages say what is expected.
        assert!(err("repository:a:write").to_string().contains("expected pull, push, delete or *"));
    }

    #[test]
    fn parse_all_merges() {
        let scopes =
            Scope::parse_all(["repository:a:pull repository:b:push", "repository:a:push  registry:catalog:*"]).unwrap();
        assert_eq!(scopes.len(), 3);
        assert_eq!(scopes[0], Scope::repository(repo("a"), Actions::PULL.union(Actions::PUSH)));
        assert_eq!(scopes[1], Scope::repository(repo("b"), Actions::PUSH));
        assert_eq!(scopes[2], Scope::catalog());
        assert!(Scope::parse_all(["repository:a:pull repository:B:pull"]).is_err());
        assert!(Scope::parse_all([""]).unwrap().is_empty());
    }

    #[test]
    fn actions_set() {
        assert!(Actions::ALL.contains(Action::Delete));
        assert!(Actions::ALL.contains(Action::All));
        assert!(!Actions::PULL.union(Actions::PUSH).contains(Action::All));
        assert!(!Actions::PULL.contains(Action::Push));
        assert_eq!(Actions::ALL.intersect(Actions::PULL), Actions::PULL);
        assert!(Actions::PUSH.intersect(Actions::PULL).is_empty());
        assert_eq!(Actions::NONE.to_string(), "");
        assert_eq!(format!("{:?}", Actions::PULL), "Actions(pull)");
    }

    #[test]
    fn grant_is_request_intersected_with_allowed() {
        let requested =
            Scope::parse_all(["repository:a:pull,push repository:b:pull,push,delete repository:c:push"]).unwrap();
        let grant = Grant::intersect(&requested, |r| match r.name() {
            "a" => Actions::PULL,
            "b" => Actions::ALL,
            _ => Actions::NONE,
        });
        assert!(grant.allows(&repo("a"), Action::Pull));
        assert!(!grant.allows(&repo("a"), Action::Push), "partial grant");
        assert!(grant.allows(&repo("b"), Action::Delete));
        assert!(!grant.allows(&repo("c"), Action::Push));
        assert!(!grant.allows(&repo("d"), Action::Pull), "never more than requested");
        assert_eq!(grant.scopes().len(), 2, "resources with nothing granted are dropped");
        // Allowed everything, asked for pull: only pull.
        let g = Grant::intersect(&[Scope::parse("repository:x:pull").unwrap()], |_| Actions::ALL);
        assert!(g.allows(&repo("x"), Action::Pull) && !g.allows(&repo("x"), Action::Push));
        assert!(!g.allows_catalog());
    }

    #[test]
    fn pull_grant_does_not_cover_push_or_another_repo() {
        let g = Grant::intersect(&[Scope::parse("repository:a:pull").unwrap()], |_| Actions::ALL);
        assert!(!g.allows(&repo("a"), Action::Push));
        assert!(!g.allows(&repo("a"), Action::Delete));
        assert!(!g.allows(&repo("b"), Action::Pull));
        assert!(!g.allows(&repo("a/b"), Action::Pull));
        assert!(!g.allows(&repo("a"), Action::All));
    }

    #[test]
    fn access_claim_round_trip() {
        let mut g = Grant::new();
        g.add(Resource::Repository(repo("team/app")), Actions::PULL.union(Actions::PUSH));
        g.add(Resource::Catalog, Actions::ALL);
        g.add(Resource::Repository(repo("empty")), Actions::NONE);
        let claim = g.to_access_claim();
        let json = serde_json::to_string(&claim).unwrap();
        assert_eq!(
            json,
            r#"[{"type":"repository","name":"team/app","actions":["pull","push"]},{"type":"registry","name":"catalog","actions":["*"]}]"#
        );
        assert_eq!(Grant::from_access_claim(&claim), g);
    }

    #[test]
    fn access_claim_unknowns_grant_nothing() {
        let entries: Vec<AccessEntry> = serde_json::from_str(
            r#"[{"type":"repository","name":"a/../b","actions":["pull"]},
                {"type":"repository","name":"A","actions":["pull"]},
                {"type":"repository","name":"ok","actions":["pull","admin","PUSH"]},
                {"type":"repository","name":"star","actions":["*"]},
                {"type":"registry","name":"catalog","actions":["pull"]},
                {"type":"registry","name":"other","actions":["*"]},
                {"type":"plugin","name":"x","actions":["*"]},
                {"type":"repository","name":"none"}]"#,
        )
        .unwrap();
        let g = Grant::from_access_claim(&entries);
        assert_eq!(
            g.scopes().iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["repository:ok:pull", "repository:star:pull,push,delete"]
        );
        assert!(!g.allows_catalog());
    }

    #[test]
    fn restrict_to() {
        let mut a = Grant::new();
        a.add(Resource::Repository(repo("x")), Actions::ALL);
        a.add(Resource::Repository(repo("y")), Actions::PULL);
        let mut b = Grant::new();
        b.add(Resource::Repository(repo("x")), Actions::PUSH);
        b.add(Resource::Repository(repo("z")), Actions::ALL);
        let r = a.restrict_to(&b);
        assert_eq!(r.scopes(), vec![Scope::repository(repo("x"), Actions::PUSH)]);
    }
}
