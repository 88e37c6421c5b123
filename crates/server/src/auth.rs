//! Authentication and authorization at the HTTP edge: reading the `Authorization` header, deciding
//! whether a parsed [`Action`] may run, answering with the Docker token protocol's challenges, and the
//! token endpoint (`GET` and OAuth2 `POST` on `/auth/token`).
//!
//! What an action needs: reads (blobs, manifests, tags, referrers) need `pull`; uploads and manifest
//! pushes need `push`; deletes need `delete`; a cross-repository mount also needs `pull` on `from` (if
//! it is missing, the mount is dropped and a normal upload starts, as in distribution); `_catalog` and
//! `/v2/` need a logged-in caller or a token, and the catalog lists only what the caller may pull.
//!
//! Answers: no credentials and not allowed → 401 `UNAUTHORIZED` with a `Bearer` challenge naming the
//! scope to ask for; wrong password or invalid token → 401 `UNAUTHORIZED`; a valid token that does not
//! cover the request → 401 with `error="insufficient_scope"` (clients then ask for a new token); a
//! logged-in user or robot without the right → 403 `DENIED`; too many failed logins → 429
//! `TOOMANYREQUESTS` with `Retry-After`.
//!
//! Must never: log or echo a credential, let an unparsed name reach the policy (names are validated
//! `RepoName`s by then), or run bcrypt on an async worker thread.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use entrepot_auth::{Action as Perm, AuthError, Authenticator, Identity, Scope, Secret};
use entrepot_oci::{ErrorCode, RepoName};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::handlers::Query;
use crate::route::Action;

/// The path of the built-in token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";
/// Largest token request body.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Connection facts the listener attaches to every request.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

impl ConnInfo {
    pub fn of(parts: &Parts) -> ConnInfo {
        parts
            .extensions
            .get::<ConnInfo>()
            .copied()
            .unwrap_or(ConnInfo { peer: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), tls: false })
    }
}

/// Authentication as the server runs it.
pub struct EdgeAuth {
    pub auth: Arc<Authenticator>,
    /// The token endpoint's absolute URL for challenges; derived from the request's `Host` if unset.
    pub realm: Option<String>,
}

/// Who made a request, once it is allowed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
}

enum Credentials {
    None,
    Basic(String, Secret),
    Bearer(String),
}

fn credentials(headers: &HeaderMap) -> Result<Credentials, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Credentials::None) };
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m);
    let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(|| unauthorized("malformed Authorization header"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        Ok(Credentials::Basic(user.to_string(), Secret::new(password)))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credentials::Bearer(rest.to_string()))
    } else {
        Err(unauthorized("unsupported authorization scheme (use Basic or Bearer)"))
    }
}

impl EdgeAuth {
    fn realm(&self, parts: &Parts) -> String {
        if let Some(r) = &self.realm {
            return r.clone();
        }
        let conn = ConnInfo::of(parts);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
            })
            .map(str::to_string)
            .unwrap_or_else(|| conn.peer.to_string());
        format!("{}://{host}{TOKEN_PATH}", if conn.tls { "https" } else { "http" })
    }

    fn challenge(&self, parts: &Parts, scope: &str, error: Option<&str>) -> String {
        let mut c = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(parts), self.auth.service());
        if !scope.is_empty() {
            c.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(e) = error {
            c.push_str(&format!(",error=\"{e}\""));
        }
        c
    }

    /// Turns an authentication failure into its response.
    fn login_error(&self, parts: &Parts, e: AuthError, scope: &str) -> ApiError {
        match e {
            AuthError::RateLimited(wait) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests, e.to_string())
                    .with_header(header::RETRY_AFTER, wait.as_secs().max(1).to_string())
            }
            AuthError::Token(_) => ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, e.to_string())
                .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, scope, Some("invalid_token"))),
            AuthError::Load { .. } => {
                tracing::error!(error = %e, "authentication unavailable");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unsupported, "authentication unavailable")
            }
            _ => ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, e.to_string())
                .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, scope, None)),
        }
    }

    /// Establishes who is calling (bcrypt, when needed, runs on a blocking thread).
    async fn identify(&self, parts: &Parts, scope: &str) -> Result<Identity, ApiError> {
        let addr = ConnInfo::of(parts).peer.ip();
        match credentials(&parts.headers) {
            Err(e) => {
                if let Err(limited) = self.auth.failed_attempt(addr) {
                    return Err(self.login_error(parts, limited, scope));
                }
                Err(e.with_header(header::WWW_AUTHENTICATE, self.challenge(parts, scope, None)))
            }
            Ok(Credentials::None) => Ok(Identity::Anonymous),
            Ok(Credentials::Bearer(t)) => self.auth.bearer(&t).map_err(|e| self.login_error(parts, e, scope)),
            Ok(Credentials::Basic(user, password)) => {
                if let Some(id) = self.auth.login_cached(&user, &password) {
                    return Ok(id);
                }
                let auth = self.auth.clone();
                let r =
                    tokio::task::spawn_blocking(move || auth.login(&user, &password, addr)).await.map_err(|_| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Unsupported, "login failed")
                    })?;
                r.map_err(|e| self.login_error(parts, e, scope))
            }
        }
    }

    /// The caller, if it is an admin (admin endpoints); 401 with a challenge for no or bad
    /// credentials, 403 for anybody else.
    pub async fn require_admin(&self, parts: &Parts) -> Result<Identity, ApiError> {
        let identity = self.identify(parts, "").await?;
        if self.auth.is_admin(&identity) {
            return Ok(identity);
        }
        Err(if identity.is_anonymous() {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "authentication required")
                .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, "", None))
        } else {
            ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, "admins only")
        })
    }

    /// Decides whether `action` may run; may drop a mount the caller may not do from `query`.
    pub async fn authorize(&self, parts: &Parts, action: &Action, query: &mut Query) -> Result<Caller, ApiError> {
        let needs = requirements(action);
        let scope = challenge_scope(action, &needs);
        let identity = self.identify(parts, &scope).await?;
        let allowed = match action {
            Action::ApiVersion | Action::Catalog => !identity.is_anonymous(),
            _ => needs.iter().all(|(repo, perm)| self.auth.may(&identity, repo, *perm)),
        };
        let allowed = allowed
            && (!matches!(action, Action::Catalog)
                || match &identity {
                    Identity::Token { grant, .. } => grant.allows_catalog(),
                    _ => true,
                });
        if !allowed {
            return Err(match &identity {
                Identity::Anonymous => {
                    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "authentication required")
                        .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, &scope, None))
                }
                Identity::Token { .. } => ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::Unauthorized,
                    "the token does not grant access to this resource",
                )
                .with_detail(serde_json::json!({ "scope": scope }))
                .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, &scope, Some("insufficient_scope"))),
                _ => ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Denied,
                    "requested access to the resource is denied",
                )
                .with_detail(serde_json::json!({ "scope": scope })),
            });
        }
        if let Action::StartUpload { .. } = action
            && query.get("mount").is_some()
        {
            let from_ok = match query.get("from").map(RepoName::parse) {
                Some(Ok(from)) => self.auth.may(&identity, &from, Perm::Pull),
                // Without `from`, a mount could reach any blob of the registry: admins only.
                None => self.auth.is_admin(&identity),
                Some(Err(_)) => true, // the handler reports the invalid name
            };
            if !from_ok {
                query.remove("mount");
                query.remove("from");
            }
        }
        Ok(Caller { identity })
    }

    /// Whether the caller may see `repo` in the catalog.
    pub fn catalog_filter(&self, caller: &Caller) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let subject = self.auth.catalog_subject(&caller.identity);
        let auth = self.auth.clone();
        move |name: &str| RepoName::parse(name).is_ok_and(|r| auth.may(&subject, &r, Perm::Pull))
    }

    /// `GET|POST /auth/token`.
    pub async fn token_endpoint(&self, parts: &Parts, body: Body) -> Response {
        match self.token_inner(parts, body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn token_inner(&self, parts: &Parts, body: Body) -> Result<Response, ApiError> {
        let bad = |m: String| ApiError::bad_request(ErrorCode::Unsupported, m);
        let (params, post) = match parts.method {
            Method::GET => (Query::parse(parts.uri.query()), false),
            Method::POST => {
                let limited = http_body_util::Limited::new(body, MAX_FORM_BYTES);
                let bytes = limited
                    .collect()
                    .await
                    .map_err(|_| bad("token request body too large or unreadable".into()))?
                    .to_bytes();
                let text = std::str::from_utf8(&bytes).map_err(|_| bad("token request body is not UTF-8".into()))?;
                (Query::parse(Some(text)), true)
            }
            _ => return Err(ApiError::method_not_allowed()),
        };
        if let Some(s) = params.get("service")
            && s != self.auth.service()
        {
            return Err(bad(format!("unknown service `{}`; this registry is `{}`", truncate(s), self.auth.service())));
        }
        let scopes = Scope::parse_all(params.all("scope").flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()))
            .map_err(|e| ApiError::bad_request(ErrorCode::Unsupported, format!("invalid scope: {e}")))?;
        let addr = ConnInfo::of(parts).peer.ip();
        let (identity, want_refresh) = if post {
            match params.get("grant_type") {
                Some("password") => {
                    let user = params.get("username").unwrap_or("").to_string();
                    let password = Secret::new(params.get("password").unwrap_or(""));
                    let auth = self.auth.clone();
                    let id = tokio::task::spawn_blocking(move || auth.login(&user, &password, addr))
                        .await
                        .map_err(|_| bad("login failed".into()))?
                        .map_err(|e| self.login_error(parts, e, ""))?;
                    (id, params.get("access_type") == Some("offline"))
                }
                Some("refresh_token") => {
                    let t = params.get("refresh_token").unwrap_or("");
                    let id = self.auth.refresh(t, addr).map_err(|e| self.login_error(parts, e, ""))?;
                    (id, true)
                }
                other => {
                    return Err(bad(format!(
                        "unsupported grant_type `{}` (expected password or refresh_token)",
                        truncate(other.unwrap_or(""))
                    )));
                }
            }
        } else {
            let id = match self.identify(parts, "").await? {
                // A token cannot be exchanged for another one here.
                Identity::Token { .. } => {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::Unauthorized,
                        "use Basic credentials or none at the token endpoint",
                    ));
                }
                id => id,
            };
            (id, params.get("offline_token") == Some("true"))
        };
        let issued = self.auth.issue(&identity, &scopes);
        let refresh = if want_refresh { self.auth.issue_refresh(&identity) } else { None };
        let issued_at = crate::time::rfc3339(issued.claims.iat.unwrap_or(0));
        let mut body = serde_json::json!({
            "token": issued.token.expose(),
            "access_token": issued.token.expose(),
            "expires_in": issued.expires_in,
            "issued_at": issued_at,
            "scope": issued.claims.grant().scopes().iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
        });
        if let Some(r) = refresh {
            body["refresh_token"] = serde_json::Value::String(r.expose().to_string());
        }
        let mut resp = (StatusCode::OK, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }
}

/// Most request body bytes read (and dropped) before an authentication error is answered.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;

/// Reads and drops up to [`DRAIN_LIMIT`] bytes of a refused request's body, for at most two seconds
/// (HTTP/1.1 can only keep the connection, and the client only reads the answer, once the body is in).
pub async fn drain(body: Body) {
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    })
    .await;
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The repository rights an action needs.
fn requirements(action: &Action) -> Vec<(RepoName, Perm)> {
    match action {
        Action::ApiVersion | Action::Catalog => Vec::new(),
        Action::GetBlob { repo, .. }
        | Action::GetManifest { repo, .. }
        | Action::ListTags { repo }
        | Action::Referrers { repo, .. }
        | Action::ScanReport { repo, .. } => vec![(repo.clone(), Perm::Pull)],
        Action::StartUpload { repo }
        | Action::UploadStatus { repo, .. }
        | Action::PatchUpload { repo, .. }
        | Action::FinishUpload { repo, .. }
        | Action::CancelUpload { repo, .. }
        | Action::PutManifest { repo, .. } => vec![(repo.clone(), Perm::Push)],
        Action::DeleteBlob { repo, .. } | Action::DeleteManifest { repo, .. } => vec![(repo.clone(), Perm::Delete)],
    }
}

/// The scope a challenge names: what a client should ask the token endpoint for. Pushes ask for
/// `pull,push`, as docker and podman do.
fn challenge_scope(action: &Action, needs: &[(RepoName, Perm)]) -> String {
    match action {
        Action::ApiVersion => String::new(),
        Action::Catalog => "registry:catalog:*".to_string(),
        _ => needs
            .iter()
            .map(|(repo, perm)| match perm {
                Perm::Push => format!("repository:{repo}:pull,push"),
                p => format!("repository:{repo}:{}", p.as_str()),
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}
