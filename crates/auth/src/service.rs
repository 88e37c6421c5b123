//! The `Authenticator`: what a server consults on every request when authentication is on — who the
//! caller is (HTTP Basic credentials of a user or robot, a bearer token of ours or of an external
//! issuer, or nobody), what the caller may do on a resource, and the tokens and refresh tokens the
//! token endpoint hands out.
//!
//! The htpasswd file, the robot file and the signing keys are re-read when they change on disk (checked
//! at most once a second), so `entrepot user add`, `entrepot robot revoke` or a key rotation take effect
//! in a running server without a restart.
//!
//! bcrypt costs tens of milliseconds; clients that send Basic credentials on every request would pay
//! it each time, so a successful login is remembered for a minute under a keyed SHA-256 of the user and
//! password (the key is random per process; the cache is emptied whenever the htpasswd file changes).
//! Verified bearer tokens are likewise remembered until they expire.
//!
//! Must never: know about HTTP, keep a password or token in clear, accept a refresh token as an access
//! token (they have different audiences), or let a failed login skip the rate limiter.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use entrepot_oci::RepoName;
use sha2::{Digest as _, Sha256};

use crate::access::{Action, Actions, Grant, Resource, Scope};
use crate::policy::{Decision, Policy, Subject};
use crate::ratelimit::{self, LoginLimiter};
use crate::robot::{RobotError, RobotRecord, Robots};
use crate::secret::{Secret, random_bytes};
use crate::token::{self, IssuedToken, KeySet, KeyStore, TokenError, Validation};
use crate::users::Users;

/// How long a successful password check is remembered.
const LOGIN_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most entries of each cache before it is emptied.
const CACHE_MAX: usize = 10_000;
/// How often the files behind users, robots and keys are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// A token issuer we trust besides ourselves.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    pub validation: Validation,
    pub keys: KeySet,
}

/// How the authenticator is set up.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The `service` of challenges and the audience of our tokens.
    pub service: String,
    /// The `iss` of our tokens.
    pub issuer: String,
    pub token_ttl: Duration,
    pub refresh_ttl: Duration,
    /// The htpasswd file of local users (none: only robots and external tokens log in).
    pub htpasswd: Option<PathBuf>,
    /// Robot accounts (JSON, created on first `robot create`).
    pub robots_file: PathBuf,
    /// Our signing keys (created on first start).
    pub keys_dir: PathBuf,
    pub policy: Policy,
    pub external: Vec<ExternalIssuer>,
    pub rate_limit: ratelimit::Config,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
    Robot(RobotRecord),
    /// A bearer token: what it grants, for whom it was issued, and whether we issued it (its subject
    /// is then one of our users or robots; an external issuer's subject means nothing here).
    Token {
        subject: String,
        grant: Grant,
        ours: bool,
    },
}

impl Identity {
    /// The name to log and to put in a token's `sub` (empty for anonymous).
    pub fn name(&self) -> &str {
        match self {
            Identity::Anonymous => "",
            Identity::User(u) => u,
            Identity::Robot(r) => &r.name,
            Identity::Token { subject, .. } => subject,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadCredentials,
    #[error("{0}")]
    Robot(RobotError),
    #[error("too many failed logins; retry in {} s", .0.as_secs())]
    RateLimited(Duration),
    #[error("invalid token: {0}")]
    Token(TokenError),
    #[error("invalid refresh token")]
    BadRefreshToken,
    #[error("cannot load {what}: {message}")]
    Load { what: &'static str, message: String },
}

/// When a file was last seen changed: modification time and size.
type FileStamp = Option<(SystemTime, u64)>;

/// A file re-read when its modification time or size changes: the value, the file's stamp when it
/// was loaded, and when the stamp was last checked.
struct Reloading<T> {
    path: Option<PathBuf>,
    load: fn(&Path) -> Result<T, String>,
    state: RwLock<(Arc<T>, FileStamp, Instant)>,
}

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl<T> Reloading<T> {
    fn new(path: Option<PathBuf>, load: fn(&Path) -> Result<T, String>, empty: T) -> Result<Reloading<T>, String> {
        let (value, st) = match &path {
            Some(p) if p.exists() => (load(p)?, stamp(p)),
            _ => (empty, None),
        };
        Ok(Reloading { path, load, state: RwLock::new((Arc::new(value), st, Instant::now())) })
    }

    /// The current value; `true` in the second place if it was just reloaded.
    fn get(&self) -> (Arc<T>, bool) {
        let now = Instant::now();
        {
            let s = self.state.read().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(s.2) < RELOAD_EVERY || self.path.is_none() {
                return (s.0.clone(), false);
            }
        }
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(s.2) < RELOAD_EVERY {
            return (s.0.clone(), false);
        }
        s.2 = now;
        let Some(path) = &self.path else { return (s.0.clone(), false) };
        let st = stamp(path);
        if st == s.1 {
            return (s.0.clone(), false);
        }
        match (self.load)(path) {
            Ok(v) => {
                tracing::info!(file = %path.display(), "reloaded");
                s.0 = Arc::new(v);
                s.1 = st;
                (s.0.clone(), true)
            }
            Err(e) => {
                // Keep serving with what we had: a half-written file must not lock everybody out.
                tracing::warn!(file = %path.display(), error = %e, "cannot reload; keeping the previous version");
                (s.0.clone(), false)
            }
        }
    }
}

fn load_users(p: &Path) -> Result<Users, String> {
    Users::load(p).map_err(|e| e.to_string())
}

fn load_robots(p: &Path) -> Result<Robots, String> {
    let bytes = std::fs::read(p).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))
}

fn load_keys(dir: &Path) -> Result<KeyStore, String> {
    KeyStore::open_or_create(dir.parent().unwrap_or(dir)).map_err(|e| e.to_string())
}

/// Reads the robot accounts of a file (none if it does not exist).
pub fn read_robots(path: &Path) -> Result<Robots, String> {
    if path.exists() { load_robots(path) } else { Ok(Robots::new()) }
}

/// Writes the robot accounts (mode 0600, atomically).
pub fn write_robots(path: &Path, robots: &Robots) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(robots).map_err(std::io::Error::other)?;
    crate::htpasswd::write_private_file(path, &json)
}

/// See the module doc.
pub struct Authenticator {
    settings: AuthSettings,
    users: Reloading<Users>,
    robots: Reloading<Robots>,
    /// Watched through its `keys.json`.
    keys: Reloading<KeyStore>,
    limiter: LoginLimiter,
    cache_key: [u8; 32],
    logins: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    tokens: Mutex<HashMap<[u8; 32], (Identity, u64)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("service", &self.settings.service).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads users, robots and keys (creating the signing key on first start).
    pub fn new(settings: AuthSettings) -> Result<Authenticator, AuthError> {
        let users = Reloading::new(settings.htpasswd.clone(), load_users, Users::default())
            .map_err(|message| AuthError::Load { what: "the htpasswd file", message })?;
        let robots = Reloading::new(Some(settings.robots_file.clone()), load_robots, Robots::new())
            .map_err(|message| AuthError::Load { what: "the robot accounts", message })?;
        let first = KeyStore::open_or_create(&settings.keys_dir)
            .map_err(|e| AuthError::Load { what: "the signing keys", message: e.to_string() })?;
        let keys = Reloading {
            path: Some(settings.keys_dir.join("keys.json")),
            load: load_keys,
            state: RwLock::new((Arc::new(first), stamp(&settings.keys_dir.join("keys.json")), Instant::now())),
        };
        Ok(Authenticator {
            limiter: LoginLimiter::new(settings.rate_limit),
            settings,
            users,
            robots,
            keys,
            cache_key: random_bytes::<32>(),
            logins: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn service(&self) -> &str {
        &self.settings.service
    }

    fn login_key(&self, user: &str, password: &Secret) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.expose().as_bytes());
        h.finalize().into()
    }

    /// The identity of cached credentials, without any slow hashing (`None`: call [`Self::login`]).
    pub fn login_cached(&self, user: &str, password: &Secret) -> Option<Identity> {
        if Robots::looks_like_token(password.expose()) {
            return None;
        }
        let (_, reloaded) = self.users.get();
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        if reloaded {
            logins.clear();
            return None;
        }
        let key = self.login_key(user, password);
        match logins.get(&key) {
            Some((name, at)) if at.elapsed() < LOGIN_CACHE_TTL && name == user => Some(Identity::User(name.clone())),
            Some(_) => {
                logins.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Checks a user's (or robot's) credentials, rate-limited per user and per client address. Slow
    /// (bcrypt): call from a blocking thread.
    pub fn login(&self, user: &str, password: &Secret, addr: IpAddr) -> Result<Identity, AuthError> {
        let now = Instant::now();
        self.limiter.check(Some(user), addr, now).map_err(AuthError::RateLimited)?;
        let result = if Robots::looks_like_token(password.expose()) {
            let (robots, _) = self.robots.get();
            robots.verify(user, password, token::now_unix()).cloned().map(Identity::Robot).map_err(AuthError::Robot)
        } else {
            let (users, _) = self.users.get();
            match users.authenticate(user, password) {
                Some(_) => {
                    let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
                    if logins.len() >= CACHE_MAX {
                        logins.clear();
                    }
                    logins.insert(self.login_key(user, password), (user.to_string(), Instant::now()));
                    Ok(Identity::User(user.to_string()))
                }
                None => Err(AuthError::BadCredentials),
            }
        };
        match &result {
            Ok(_) => self.limiter.success(user),
            Err(_) => self.limiter.failure(Some(user), addr, now),
        }
        result
    }

    /// Records a failed attempt that carried no usable user name (e.g. malformed credentials).
    pub fn failed_attempt(&self, addr: IpAddr) -> Result<(), AuthError> {
        let now = Instant::now();
        self.limiter.check(None, addr, now).map_err(AuthError::RateLimited)?;
        self.limiter.failure(None, addr, now);
        Ok(())
    }

    fn our_validation(&self, audience: String) -> Validation {
        Validation::new(self.settings.issuer.clone(), audience)
    }

    /// Verifies a bearer token: ours first, then each external issuer's.
    pub fn bearer(&self, token: &str) -> Result<Identity, AuthError> {
        let now = token::now_unix();
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let (keys, reloaded) = self.keys.get();
        {
            let mut cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            if reloaded {
                cache.clear();
            }
            if let Some((id, exp)) = cache.get(&key) {
                if now < *exp {
                    return Ok(id.clone());
                }
                cache.remove(&key);
            }
        }
        let ours = token::verify(token, &keys.verification_keys(), &self.our_validation(self.service().into()), now);
        let (claims, ours) = match ours {
            Ok(c) => (c, true),
            Err(first) => {
                let mut found = None;
                for ext in &self.settings.external {
                    if let Ok(c) = token::verify(token, &ext.keys, &ext.validation, now) {
                        found = Some(c);
                        break;
                    }
                }
                (found.ok_or(AuthError::Token(first))?, false)
            }
        };
        let id = Identity::Token { subject: claims.sub.clone(), grant: claims.grant(), ours };
        // Remember it until its expiry, minus the clock-skew tolerance that verify granted.
        let mut cache = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (id.clone(), claims.exp));
        Ok(id)
    }

    /// What `identity` may do on `resource`. The catalog is open to every identity that may use it;
    /// its list is filtered with [`Self::may`] for each repository.
    pub fn allowed(&self, identity: &Identity, resource: &Resource) -> Actions {
        match identity {
            Identity::Anonymous => self.settings.policy.allowed_on(&Subject::Anonymous, resource),
            Identity::User(u) => self.settings.policy.allowed_on(&Subject::User(u.clone()), resource),
            Identity::Robot(r) => match resource {
                Resource::Repository(repo) => r.allowed_actions(repo),
                Resource::Catalog => Actions::ALL,
            },
            Identity::Token { grant, .. } => grant.actions_on(resource),
        }
    }

    /// Whether `identity` may do `action` on `repo`.
    pub fn may(&self, identity: &Identity, repo: &RepoName, action: Action) -> bool {
        match identity {
            // A token only carries what it was granted; for the catalog filter of one of our tokens,
            // the subject's current rights apply (as they would for a fresh token).
            Identity::Token { grant, .. } => grant.allows(repo, action),
            other => self.allowed(other, &Resource::Repository(repo.clone())).contains(action),
        }
    }

    /// Whether the catalog list of a token's holder should be filtered with the holder's current rights
    /// (our tokens name a local user) rather than with the token's grant.
    pub fn catalog_subject(&self, identity: &Identity) -> Identity {
        match identity {
            Identity::Token { subject, grant, ours: true } if grant.allows_catalog() => {
                if subject.is_empty() {
                    Identity::Anonymous
                } else if let Some(id) = subject.strip_prefix("robot:") {
                    let (robots, _) = self.robots.get();
                    let now = token::now_unix();
                    match robots.list().iter().find(|r| r.id == id && r.is_active(now)) {
                        Some(r) => Identity::Robot(r.clone()),
                        None => identity.clone(),
                    }
                } else if self.users.get().0.file().get(subject).is_some() {
                    Identity::User(subject.clone())
                } else {
                    identity.clone()
                }
            }
            other => other.clone(),
        }
    }

    /// Whether the identity is an admin: a local user with the admin role, directly or through one
    /// of our tokens (never through an external issuer's token, whose subjects are not our users).
    pub fn is_admin(&self, identity: &Identity) -> bool {
        let user = match identity {
            Identity::User(u) => u,
            Identity::Token { subject, ours: true, .. } if !subject.starts_with("robot:") => subject,
            _ => return false,
        };
        self.settings.policy.is_admin(&Subject::User(user.clone())) && self.users.get().0.file().get(user).is_some()
    }

    /// The policy's decision for a person, with the rule that made it.
    pub fn explain(&self, subject: &Subject, repo: &RepoName, action: Action) -> Decision {
        self.settings.policy.decide(subject, repo, action)
    }

    fn token_subject(identity: &Identity) -> String {
        match identity {
            Identity::Robot(r) => format!("robot:{}", r.id),
            other => other.name().to_string(),
        }
    }

    /// A token for `identity`: what it asked for, intersected with what it may do (a partial or empty
    /// grant is not an error).
    pub fn issue(&self, identity: &Identity, requested: &[Scope]) -> IssuedToken {
        let grant = Grant::intersect(requested, |r| self.allowed(identity, r));
        let (keys, _) = self.keys.get();
        token::issue(
            keys.active(),
            &self.settings.issuer,
            &Self::token_subject(identity),
            &self.settings.service,
            &grant,
            self.settings.token_ttl,
            token::now_unix(),
        )
    }

    fn refresh_audience(&self) -> String {
        format!("refresh:{}", self.settings.service)
    }

    /// A long-lived refresh token for a logged-in user or robot (`None` for anonymous or a token).
    pub fn issue_refresh(&self, identity: &Identity) -> Option<Secret> {
        if !matches!(identity, Identity::User(_) | Identity::Robot(_)) {
            return None;
        }
        let (keys, _) = self.keys.get();
        let t = token::issue(
            keys.active(),
            &self.settings.issuer,
            &Self::token_subject(identity),
            &self.refresh_audience(),
            &Grant::new(),
            self.settings.refresh_ttl,
            token::now_unix(),
        );
        Some(t.token)
    }

    /// The identity behind a refresh token, if it is valid and its user or robot still exists.
    pub fn refresh(&self, refresh_token: &str, addr: IpAddr) -> Result<Identity, AuthError> {
        let now = token::now_unix();
        self.limiter.check(None, addr, Instant::now()).map_err(AuthError::RateLimited)?;
        let (keys, _) = self.keys.get();
        let result =
            token::verify(refresh_token, &keys.verification_keys(), &self.our_validation(self.refresh_audience()), now)
                .map_err(|_| AuthError::BadRefreshToken)
                .and_then(|claims| {
                    if let Some(id) = claims.sub.strip_prefix("robot:") {
                        let (robots, _) = self.robots.get();
                        robots
                            .list()
                            .iter()
                            .find(|r| r.id == id && r.is_active(now))
                            .map(|r| Identity::Robot(r.clone()))
                            .ok_or(AuthError::BadRefreshToken)
                    } else if !claims.sub.is_empty() && self.users.get().0.file().get(&claims.sub).is_some() {
                        Ok(Identity::User(claims.sub))
                    } else {
                        Err(AuthError::BadRefreshToken)
                    }
                });
        if result.is_err() {
            self.limiter.failure(None, addr, Instant::now());
        }
        result
    }

    /// Our public keys as a JWKS (for other instances or services that verify our tokens).
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.get().0.verification_keys().to_jwks()
    }
}
