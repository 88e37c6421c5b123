//! The HTTP edge of Entrepôt: the OCI Distribution API over HTTP/1.1.
//!
//! A request is first parsed into an [`route::Action`] (typed, validated), then served by one handler
//! in [`handlers`] that calls the `entrepot_registry` service; errors become the spec's JSON envelope
//! in exactly one place ([`error`]). [`listener`] owns connections: TCP_NODELAY, timeouts, and an HTTP
//! answer to a TLS ClientHello on the plain port. Nothing here touches storage directly.

pub mod error;
pub mod handlers;
pub mod listener;
pub mod route;

use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use entrepot_registry::Registry;
use http::HeaderValue;

pub use listener::serve;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
}

/// The application: every path goes through [`handle`], which routes by parsing the path itself
/// (repository names contain `/`, which path-pattern routers cannot place in the middle of a route).
pub fn router(registry: Registry) -> Router {
    Router::new().fallback(handle).with_state(AppState { registry })
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let mut resp = match route::parse(&parts.method, parts.uri.path()) {
        Ok(action) => {
            let query = handlers::Query::parse(parts.uri.query());
            handlers::dispatch(&state.registry, action, query, &parts.headers, body)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    tracing::debug!(
        method = %parts.method,
        path = parts.uri.path(),
        status = resp.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}
