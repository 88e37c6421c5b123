//! The security scanning extension of the HTTP API, under the registry's extension namespace (OCI distribution
//! spec, "Extensions": `/v2/<name>/_<extension>/...`), and the pull policy gate on manifest GETs.
//!
//! `GET /v2/<name>/_entrepot/vulnerabilities/<tag or digest>` returns the scan report as JSON (the same
//! document as `entrepot scan --format json`), `?format=spdx` or `?format=cyclonedx` the SBOM; 202 with
//! `{"status":"pending"}` while the scan is queued; 404 `MANIFEST_UNKNOWN` for no such manifest. The scanner is
//! installed by the binary as an axum `Extension<ScanExtension>`; without it the endpoint answers 404
//! `UNSUPPORTED`. Must never parse paths (route.rs does) nor reach storage other than through the registry
//! and the scanner.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use entrepot_oci::{ErrorCode, Reference, RepoName};
use entrepot_registry::Registry;
use entrepot_scan::{ReportState, Scanner, sbom};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};

use crate::error::ApiError;
use crate::handlers::{ApiResult, Query};
use crate::route::Action;

/// The scanner, as the binary installs it (`router.layer(Extension(ScanExtension(..)))`).
#[derive(Clone)]
pub struct ScanExtension(pub Arc<Scanner>);

/// Installs the scanner on the application: every request then carries it.
pub fn install(app: axum::Router, scanner: Arc<Scanner>) -> axum::Router {
    app.layer(axum::Extension(ScanExtension(scanner)))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "scan extension failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unsupported,
        "internal server error; see the registry log",
    )
}

fn json(status: StatusCode, content_type: &str, value: &serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec_pretty(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

/// Serves what the scanning extension owns before the ordinary handlers run: the report endpoint, and the
/// policy gate on a manifest GET. `Ok(None)`: carry on with the ordinary handler.
pub async fn intercept(
    registry: &Registry,
    parts: &Parts,
    action: &Action,
    query: &Query,
) -> Result<Option<Response>, ApiError> {
    let scanner = parts.extensions.get::<ScanExtension>().map(|s| s.0.clone());
    match action {
        Action::ScanReport { repo, reference } => {
            let Some(scanner) = scanner else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::Unsupported,
                    "security scanning is not enabled",
                ));
            };
            report(registry, &scanner, repo, reference, query).await.map(Some)
        }
        Action::GetManifest { repo, reference, head: false } => {
            let Some(scanner) = scanner else { return Ok(None) };
            if !scanner.settings().policy.applies_to(repo) {
                return Ok(None);
            }
            // An unknown reference falls through to the handler's own 404.
            let Ok(digest) = registry.resolve(repo, reference).await else { return Ok(None) };
            match scanner.check_pull(repo, &digest).await {
                Ok(Ok(())) => Ok(None),
                Ok(Err(refusal)) => Err(ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Denied, refusal.message)
                    .with_detail(serde_json::json!({
                        "digest": digest,
                        "policy": refusal.rule,
                        "advisories": refusal.advisories,
                    }))),
                Err(entrepot_scan::ScanError::Registry(e)) => Err(e.into()),
                Err(e) => Err(internal(e)),
            }
        }
        _ => Ok(None),
    }
}

async fn report(
    registry: &Registry,
    scanner: &Scanner,
    repo: &RepoName,
    reference: &Reference,
    query: &Query,
) -> ApiResult {
    let format = query.get("format").unwrap_or("json");
    if !matches!(format, "json" | "spdx" | "cyclonedx") {
        return Err(ApiError::bad_request(ErrorCode::Unsupported, "format must be json, spdx or cyclonedx"));
    }
    // 404 MANIFEST_UNKNOWN for a tag or digest that is not in the repository.
    let manifest = registry.get_manifest(repo, reference).await?;
    let state = match scanner.report(repo, &manifest.digest).await {
        Ok(s) => s,
        Err(entrepot_scan::ScanError::Registry(e)) => return Err(e.into()),
        Err(e) => return Err(internal(e)),
    };
    let report = match state {
        ReportState::Ready(r) => r,
        ReportState::Pending => {
            let body = serde_json::json!({
                "repository": repo.as_str(),
                "digest": manifest.digest,
                "status": "pending",
                "message": "the scan is queued; ask again shortly",
            });
            let mut r = json(StatusCode::ACCEPTED, "application/json", &body);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return Ok(r);
        }
    };
    let (content_type, value) = match format {
        "spdx" => (sbom::SPDX_MEDIA_TYPE, sbom::spdx(&report)),
        "cyclonedx" => (sbom::CYCLONEDX_MEDIA_TYPE, sbom::cyclonedx(&report)),
        _ => ("application/json", serde_json::to_value(&*report).map_err(internal)?),
    };
    let mut r = json(StatusCode::OK, content_type, &value);
    if let Ok(v) = HeaderValue::from_str(&manifest.digest.to_string()) {
        r.headers_mut().insert("docker-content-digest", v);
    }
    Ok(r)
}
