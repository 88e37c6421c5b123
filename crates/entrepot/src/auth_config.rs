//! The `[auth]` section of the configuration file and how it, `--htpasswd` and the data directory
//! become the server's [`Authenticator`]. Authentication is on when `htpasswd` is set or an `[auth]`
//! section exists; otherwise the registry is open (as `registry:2` is without `auth:`).
//!
//! ```toml
//! htpasswd = "/etc/entrepot/htpasswd"
//!
//! [auth]
//! service = "registry.example.com"   # the audience of our tokens and `service` of challenges
//! realm = "https://registry.example.com/auth/token"   # default: derived from the request's Host
//! token_ttl_secs = 300
//!
//! [auth.policy]            # default with htpasswd and no policy: logged-in users may do everything
//! admins = ["alice"]
//! [[auth.policy.rule]]
//! repository = "public/**"
//! pull = ["anonymous"]
//! push = ["authenticated"]
//!
//! [[auth.external]]        # tokens of another issuer (docker_auth, Keycloak...)
//! issuer = "https://auth.example.com"
//! audience = "registry.example.com"
//! jwks_file = "/etc/entrepot/issuer-jwks.json"
//! algorithms = ["RS256"]
//! ```
//!
//! The auth state the commands write — robot accounts (`robots.json`) and the token signing keys
//! (`keys/`) — lives in the *auth directory*: `auth_dir` (`ENTREPOT_AUTH_DIR`, `--auth-dir`), by
//! default `DATA_DIR/auth`. Several instances behind a load balancer point it at one shared volume, so
//! a token signed by one instance verifies on every other and a robot created once works everywhere.
//!
//! Must never: turn authentication off because a part of this section is invalid (an invalid section
//! is a start-up error).

use std::path::{Path, PathBuf};
use std::time::Duration;

use entrepot_auth::policy::PolicyConfig;
use entrepot_auth::token::{Algorithm, DEFAULT_LEEWAY, KeySet, Validation};
use entrepot_auth::{AuthSettings, ExternalIssuer, Policy};
use serde::Deserialize;

/// `[auth]` as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthFileConfig {
    pub service: Option<String>,
    pub issuer: Option<String>,
    pub realm: Option<String>,
    pub token_ttl_secs: Option<u64>,
    pub refresh_ttl_secs: Option<u64>,
    pub policy: Option<PolicyConfig>,
    #[serde(default)]
    pub external: Vec<ExternalConfig>,
}

/// `[[auth.external]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExternalConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks_file: PathBuf,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    pub leeway_secs: Option<u64>,
}

/// What the server needs to run with authentication.
#[derive(Debug, Clone)]
pub struct AuthRuntime {
    pub settings: AuthSettings,
    pub realm: Option<String>,
}

/// The auth directory when `auth_dir` is not set: `DATA_DIR/auth`.
pub fn default_auth_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("auth")
}

/// Where robots and keys live in the auth directory.
pub fn robots_file(auth_dir: &Path) -> PathBuf {
    auth_dir.join("robots.json")
}

pub fn keys_dir(auth_dir: &Path) -> PathBuf {
    auth_dir.join("keys")
}

/// The authentication settings, or `None` when authentication is off.
pub fn build(
    section: Option<&AuthFileConfig>,
    htpasswd: Option<&Path>,
    auth_dir: &Path,
) -> Result<Option<AuthRuntime>, String> {
    if section.is_none() && htpasswd.is_none() {
        return Ok(None);
    }
    let default = AuthFileConfig::default();
    let s = section.unwrap_or(&default);
    if let Some(h) = htpasswd
        && !h.exists()
    {
        return Err(format!("htpasswd: file {} does not exist", h.display()));
    }
    let policy = match &s.policy {
        Some(p) => Policy::try_from(p.clone()).map_err(|e| format!("auth.policy: {e}"))?,
        None => Policy::authenticated_full_access(),
    };
    let mut external = Vec::new();
    for (i, e) in s.external.iter().enumerate() {
        let key = format!("auth.external[{i}]");
        let jwks = std::fs::read_to_string(&e.jwks_file)
            .map_err(|err| format!("{key}.jwks_file: cannot read {}: {err}", e.jwks_file.display()))?;
        let keys = KeySet::from_jwks(&jwks).map_err(|err| format!("{key}.jwks_file: {err}"))?;
        let algorithms = match &e.algorithms {
            None => vec![Algorithm::Es256, Algorithm::Rs256],
            Some(list) => list
                .iter()
                .map(|a| {
                    Algorithm::parse(a).ok_or_else(|| format!("{key}.algorithms: expected ES256 or RS256, got `{a}`"))
                })
                .collect::<Result<_, _>>()?,
        };
        if e.issuer.is_empty() || e.audience.is_empty() {
            return Err(format!("{key}: issuer and audience must not be empty"));
        }
        external.push(ExternalIssuer {
            validation: Validation {
                issuer: e.issuer.clone(),
                audience: e.audience.clone(),
                leeway: e.leeway_secs.map_or(DEFAULT_LEEWAY, Duration::from_secs),
                algorithms,
            },
            keys,
        });
    }
    let token_ttl = s.token_ttl_secs.unwrap_or(300);
    if token_ttl == 0 || token_ttl > 24 * 3600 {
        return Err(format!("auth.token_ttl_secs: expected 1 to 86400, got {token_ttl}"));
    }
    if let Some(r) = &s.realm
        && !(r.starts_with("http://") || r.starts_with("https://"))
    {
        return Err(format!("auth.realm: expected an absolute http(s) URL, got `{r}`"));
    }
    Ok(Some(AuthRuntime {
        settings: AuthSettings {
            service: s.service.clone().unwrap_or_else(|| "entrepot".into()),
            issuer: s.issuer.clone().unwrap_or_else(|| "entrepot".into()),
            token_ttl: Duration::from_secs(token_ttl),
            refresh_ttl: Duration::from_secs(s.refresh_ttl_secs.unwrap_or(30 * 24 * 3600)),
            htpasswd: htpasswd.map(Path::to_path_buf),
            robots_file: robots_file(auth_dir),
            keys_dir: keys_dir(auth_dir),
            policy,
            external,
            rate_limit: Default::default(),
        },
        realm: s.realm.clone(),
    }))
}
