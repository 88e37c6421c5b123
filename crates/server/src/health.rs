//! The operations endpoints, outside `/v2/`: `/metrics` (Prometheus text format), `/healthz` (the
//! process is serving: always 200) and `/readyz` (the metadata store and the blob storage answer: 200,
//! or 503 with a JSON reason naming the failing component).
//!
//! They form their own [`Router`], merged beside the registry API in `lib.rs`, so whoever decides that
//! `/metrics` needs credentials can wrap this router alone. Must never expose registry content
//! (repository names, digests) or a storage path.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use entrepot_registry::Registry;
use http::{StatusCode, header};

use crate::metrics::HttpMetrics;

#[derive(Clone)]
struct Ops {
    registry: Registry,
    http: Arc<HttpMetrics>,
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Registry, http: Arc<HttpMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, http })
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    r
}

async fn metrics(State(ops): State<Ops>) -> Response {
    let page = ops.http.render(ops.registry.metrics());
    text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", page)
}

async fn healthz() -> Response {
    text(StatusCode::OK, "application/json", r#"{"status":"ok"}"#)
}

async fn readyz(State(ops): State<Ops>) -> Response {
    match ops.registry.check_ready().await {
        Ok(()) => text(StatusCode::OK, "application/json", r#"{"status":"ready"}"#),
        Err(e) => {
            tracing::warn!(component = e.component(), error = %e, "not ready");
            let body = serde_json::json!({"status": "not ready", "component": e.component(), "reason": e.to_string()});
            text(StatusCode::SERVICE_UNAVAILABLE, "application/json", body.to_string())
        }
    }
}
