//! The HTTP edge of Entrepôt: the OCI Distribution API over HTTP/1.1.
//!
//! A request is first parsed into an [`route::Action`] (typed, validated), then served by one handler
//! in [`handlers`] that calls the `entrepot_registry` service; errors become the spec's JSON envelope
//! in exactly one place ([`error`]). [`listener`] owns connections: TCP_NODELAY, timeouts, and an HTTP
//! answer to a TLS ClientHello on the plain port. Nothing here touches storage directly.

pub mod admin;
pub mod auth;
pub mod error;
pub mod handlers;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod observe;
pub mod route;
pub mod scan_api;
pub mod time;
pub mod tls;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use entrepot_registry::Registry;
use http::HeaderValue;

pub use auth::{ConnInfo, EdgeAuth};
pub use listener::{serve, serve_with};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    /// `None`: authentication is off and every request is allowed.
    pub auth: Option<Arc<EdgeAuth>>,
}

/// The application: every path goes through [`handle`], which routes by parsing the path itself
/// (repository names contain `/`, which path-pattern routers cannot place in the middle of a route).
pub fn router(registry: Registry) -> Router {
    router_with_auth(registry, None)
}

/// The application with authentication on (`Some`) or off.
pub fn router_with_auth(registry: Registry, auth: Option<EdgeAuth>) -> Router {
    let http_metrics = Arc::new(metrics::HttpMetrics::default());
    // The operations endpoints (/metrics, /healthz, /readyz) are their own router, outside /v2/.
    let ops = health::router(registry.clone(), http_metrics.clone());
    let api = Router::new().fallback(handle).with_state(AppState { registry, auth: auth.map(Arc::new) });
    // Request id, access log and metrics around everything.
    ops.merge(api).layer(axum::middleware::from_fn_with_state(http_metrics, observe::observe))
}

async fn serve_action(
    state: &AppState,
    parts: &http::request::Parts,
    action: route::Action,
    body: axum::body::Body,
) -> handlers::ApiResult {
    let mut query = handlers::Query::parse(parts.uri.query());
    let filter: handlers::CatalogFilter = match &state.auth {
        None => None,
        Some(auth) => {
            let caller = match auth.authorize(parts, &action, &mut query).await {
                Ok(c) => c,
                Err(e) => {
                    // Clients that send credentials only after a 401 (oras, curl --anyauth) are still
                    // writing the body: read a bounded amount of it, so they see the answer instead of
                    // a connection closed under them.
                    auth::drain(body).await;
                    return Err(e);
                }
            };
            // The access log's `user` and the registry events' actor.
            observe::set_user(&parts.extensions, caller.identity.name());
            matches!(action, route::Action::Catalog).then(|| Box::new(auth.catalog_filter(&caller)) as _)
        }
    };
    // The scanning extension's endpoint and pull policy gate (when the binary installed a scanner).
    if let Some(resp) = scan_api::intercept(&state.registry, parts, &action, &query).await? {
        return Ok(resp);
    }
    handlers::dispatch(&state.registry, action, query, &parts.headers, body, filter).await
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let mut resp = match (&state.auth, parts.uri.path()) {
        (Some(auth), auth::TOKEN_PATH) => auth.token_endpoint(&parts, body).await,
        (auth, admin::READ_ONLY_PATH) => admin::read_only(&state.registry, auth.as_deref(), &parts, body).await,
        _ => match route::parse(&parts.method, parts.uri.path()) {
            Ok(action) => serve_action(&state, &parts, action, body).await.unwrap_or_else(IntoResponse::into_response),
            Err(e) => e.into_response(),
        },
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
