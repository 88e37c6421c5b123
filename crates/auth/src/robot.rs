//! Robot accounts (API tokens): long random secrets shown once at creation, stored only as a hash,
//! scoped to repository patterns and actions, with an expiry, revocable. A robot logs in with its
//! name as the user and the token as the password (`podman login -u ci -p ert_…`).
//!
//! A token is `ert_<id>_<secret>`: the 16 hex digits of `id` find the record without comparing
//! against every stored hash; the secret is 32 random bytes from the OS RNG. The record keeps
//! SHA-256 of the whole token. bcrypt is not needed: its slowness protects low-entropy human passwords
//! from offline guessing, but a 256-bit random secret cannot be guessed at any hashing speed, and a
//! fast hash lets every request be checked without a 50–100 ms bcrypt. Hashes are compared in
//! constant time.
//!
//! A robot may do an action on a repository if any of its scopes matches the repository and lists the
//! action (scopes add up; unlike policy rules there is no "most specific" here).
//!
//! Must never: store or print a token (records hold only the hash; `Debug` hides it), accept an
//! expired or revoked token, or grant beyond the robot's scopes.

use std::fmt;

use entrepot_oci::RepoName;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::access::{Action, Actions};
use crate::policy::Pattern;
use crate::secret::{Secret, ct_eq, random_bytes, random_token};

const PREFIX: &str = "ert_";

/// What a robot may do in the repositories matching one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotScope {
    pub pattern: Pattern,
    pub actions: Actions,
}

impl RobotScope {
    /// Parses `<pattern>:<actions>`, e.g. `team/**:pull,push`.
    pub fn parse(s: &str) -> Result<RobotScope, String> {
        let (p, a) = s.rsplit_once(':').ok_or("a robot scope looks like `<pattern>:<actions>`, e.g. `team/**:pull`")?;
        let pattern = Pattern::parse(p).map_err(|e| e.to_string())?;
        let actions = Actions::parse_list(a).map_err(|e| e.to_string())?;
        Ok(RobotScope { pattern, actions })
    }
}

impl fmt::Display for RobotScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pattern, self.actions)
    }
}

impl Serialize for RobotScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RobotScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RobotScope, D::Error> {
        RobotScope::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A stored robot account. Holds the token's hash, never the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotRecord {
    /// 16 hex digits, public (it is in the token and in listings).
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the whole token.
    token_sha256: String,
    pub scopes: Vec<RobotScope>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

impl fmt::Debug for RobotRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RobotRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token_sha256", &"***")
            .field("scopes", &self.scopes.iter().map(ToString::to_string).collect::<Vec<_>>())
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish()
    }
}

impl RobotRecord {
    /// The actions the robot may do on `repo`: the union over its matching scopes.
    pub fn allowed_actions(&self, repo: &RepoName) -> Actions {
        self.scopes.iter().filter(|s| s.pattern.matches(repo)).fold(Actions::NONE, |a, s| a.union(s.actions))
    }

    pub fn allows(&self, repo: &RepoName, action: Action) -> bool {
        self.allowed_actions(repo).contains(action)
    }

    pub fn is_active(&self, now: u64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RobotError {
    /// Not a robot token, unknown id, wrong secret or wrong robot name: all the same to the caller.
    #[error("invalid robot token")]
    Invalid,
    #[error("robot token has expired")]
    Expired,
    #[error("robot token has been revoked")]
    Revoked,
    #[error("invalid robot name: use 1 to 64 of [a-z0-9._-], starting with a letter or digit")]
    InvalidName,
    #[error("a robot named `{0}` already exists")]
    Exists(String),
    #[error("no robot `{0}`")]
    NotFound(String),
    #[error("a robot needs at least one scope")]
    NoScopes,
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits `ert_<16 hex>_<secret>` into the id.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok =
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) && secret.len() == 43;
    ok.then_some(id)
}

/// Robot names: 1–64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn valid_robot_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
}

/// The robot accounts, in memory; persisted by the caller (it serializes with serde).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Robots {
    records: Vec<RobotRecord>,
}

impl Robots {
    pub fn new() -> Robots {
        Robots::default()
    }

    /// Creates a robot and returns its record and its token, which exists nowhere else: show it once.
    pub fn create(
        &mut self,
        name: &str,
        scopes: Vec<RobotScope>,
        expires_at: Option<u64>,
        now: u64,
    ) -> Result<(RobotRecord, Secret), RobotError> {
        if !valid_robot_name(name) {
            return Err(RobotError::InvalidName);
        }
        if scopes.is_empty() {
            return Err(RobotError::NoScopes);
        }
        if self.records.iter().any(|r| r.name == name && r.revoked_at.is_none()) {
            return Err(RobotError::Exists(name.to_string()));
        }
        let id: String = random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
        let token = Secret::new(format!("{PREFIX}{id}_{}", random_token::<32>()));
        let record = RobotRecord {
            id,
            name: name.to_string(),
            token_sha256: sha256_hex(token.expose()),
            scopes,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.records.push(record.clone());
        Ok((record, token))
    }

    /// Revokes the active robot of that name (its record stays, for the audit trail).
    pub fn revoke(&mut self, name: &str, now: u64) -> Result<(), RobotError> {
        let r = self
            .records
            .iter_mut()
            .find(|r| r.name == name && r.revoked_at.is_none())
            .ok_or_else(|| RobotError::NotFound(name.to_string()))?;
        r.revoked_at = Some(now);
        Ok(())
    }

    pub fn list(&self) -> &[RobotRecord] {
        &self.records
    }

    /// Whether a password looks like a robot token (so a login can be routed here, not to bcrypt).
    pub fn looks_like_token(password: &str) -> bool {
        token_id(password).is_some()
    }

    /// Checks a login: `user` must be the robot's name and `token` its token, not expired nor revoked.
    pub fn verify(&self, user: &str, token: &Secret, now: u64) -> Result<&RobotRecord, RobotError> {
        let id = token_id(token.expose()).ok_or(RobotError::Invalid)?;
        let record = self.records.iter().find(|r| r.id == id).ok_or(RobotError::Invalid)?;
        let hash = sha256_hex(token.expose());
        if !ct_eq(hash.as_bytes(), record.token_sha256.as_bytes()) || record.name != user {
            return Err(RobotError::Invalid);
        }
        if record.revoked_at.is_some() {
            return Err(RobotError::Revoked);
        }
        if !record.is_active(now) {
            return Err(RobotError::Expired);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn scopes(list: &[&str]) -> Vec<RobotScope> {
        list.iter().map(|s| RobotScope::parse(s).unwrap()).collect()
    }

    #[test]
    fn create_verify_scopes() {
        let mut robots = Robots::new();
        let (rec, token) =
            robots.create("ci", scopes(&["team/**:pull,push", "base/*:pull"]), Some(NOW + 3600), NOW).unwrap();
        assert!(token.expose().starts_with("ert_"));
        assert_eq!(token.expose().len(), 4 + 16 + 1 + 43);
        assert!(Robots::looks_like_token(token.expose()));
        assert!(!Robots::looks_like_token("hunter2"));
        let r = robots.verify("ci", &token, NOW + 10).unwrap();
        assert_eq!(r.id, rec.id);
        assert!(r.allows(&repo("team/app"), Action::Push));
        assert!(r.allows(&repo("base/alpine"), Action::Pull));
        assert!(!r.allows(&repo("base/alpine"), Action::Push), "pull-only scope used to push");
        assert!(!r.allows(&repo("other"), Action::Pull), "repository outside the scopes");
        assert!(!r.allows(&repo("team/app"), Action::Delete));
        assert_eq!(r.allowed_actions(&repo("team/x/y")), Actions::PULL.union(Actions::PUSH));
    }

    #[test]
    fn wrong_tokens_expiry_revocation() {
        let mut robots = Robots::new();
        let (_, token) = robots.create("ci", scopes(&["**:pull"]), Some(NOW + 100), NOW).unwrap();
        let t = token.expose();
        // Wrong robot name, flipped secret character, another id, garbage: all the same error.
        assert_eq!(robots.verify("other", &token, NOW), Err(RobotError::Invalid));
        let last = t.chars().last().unwrap();
        let flipped = format!("{}{}", &t[..t.len() - 1], if last == 'A' { 'B' } else { 'A' });
        assert_eq!(robots.verify("ci", &flipped.into(), NOW), Err(RobotError::Invalid));
        let other_id = format!("ert_0000000000000000{}", &t[20..]);
        assert_eq!(robots.verify("ci", &other_id.into(), NOW), Err(RobotError::Invalid));
        assert_eq!(robots.verify("ci", &t.to_uppercase().into(), NOW), Err(RobotError::Invalid));
        for junk in ["", "ert_", "ert__", "password"] {
            assert_eq!(robots.verify("ci", &junk.into(), NOW), Err(RobotError::Invalid));
        }
        // Expiry (exclusive) and revocation.
        assert!(robots.verify("ci", &token, NOW + 99).is_ok());
        assert_eq!(robots.verify("ci", &token, NOW + 100), Err(RobotError::Expired));
        robots.revoke("ci", NOW + 1).unwrap();
        assert_eq!(robots.verify("ci", &token, NOW + 2), Err(RobotError::Revoked));
        assert_eq!(robots.revoke("ci", NOW + 3), Err(RobotError::NotFound("ci".into())));
        // The name can be reused after revocation, with a new token; the old one stays revoked.
        let (_, token2) = robots.create("ci", scopes(&["**:pull"]), None, NOW + 5).unwrap();
        assert!(robots.verify("ci", &token2, NOW + 10_000_000).is_ok(), "no expiry");
        assert_eq!(robots.verify("ci", &token, NOW + 6), Err(RobotError::Revoked));
    }

    #[test]
    fn creation_errors() {
        let mut robots = Robots::new();
        assert_eq!(robots.create("CI", scopes(&["**:pull"]), None, NOW).unwrap_err(), RobotError::InvalidName);
        assert_eq!(robots.create("ci", vec![], None, NOW).unwrap_err(), RobotError::NoScopes);
        robots.create("ci", scopes(&["**:pull"]), None, NOW).unwrap();
        assert_eq!(robots.create("ci", scopes(&["**:pull"]), None, NOW).unwrap_err(), RobotError::Exists("ci".into()));
        for bad in ["team", "Team/*:pull", "team/*:write", "team/*:", ":pull"] {
            assert!(RobotScope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn persisted_form_holds_only_the_hash() {
        let mut robots = Robots::new();
        let (rec, token) = robots.create("ci", scopes(&["team/*:pull,push"]), Some(NOW + 10), NOW).unwrap();
        let json = serde_json::to_string(&robots).unwrap();
        let secret_part = &token.expose()[21..];
        assert!(!json.contains(secret_part));
        assert!(json.contains(&sha256_hex(token.expose())));
        assert!(json.contains("\"team/*:pull,push\""));
        let back: Robots = serde_json::from_str(&json).unwrap();
        assert_eq!(back.list(), robots.list());
        assert!(back.verify("ci", &token, NOW).is_ok());
        let dbg = format!("{rec:?} {robots:?}");
        assert!(!dbg.contains(secret_part) && !dbg.contains(&rec.token_sha256), "{dbg}");
        assert_eq!(format!("{token:?}"), "Secret(***)");
    }
}
