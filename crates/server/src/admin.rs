//! Operator endpoints outside the distribution API: `GET|PUT /_entrepot/admin/read-only` shows or
//! switches the read-only maintenance mode while the server runs. PUT `{"read_only": true|false}`
//! switches it for every instance sharing the metadata store, persistently (the fleet flag; switching
//! off also clears this process's local flag). Both answer `{"read_only": effective, "local": ..,
//! "fleet": ..}`, where `local` is this process's flag (configuration, signals).
//!
//! With authentication on, only admins may use them; with it off, only clients on the loopback
//! interface. Must never: change anything for a caller that is neither.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use entrepot_oci::ErrorCode;
use entrepot_registry::Registry;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt;

use crate::auth::{ConnInfo, EdgeAuth};
use crate::error::ApiError;

pub const READ_ONLY_PATH: &str = "/_entrepot/admin/read-only";

pub async fn read_only(registry: &Registry, auth: Option<&EdgeAuth>, parts: &Parts, body: Body) -> Response {
    match read_only_inner(registry, auth, parts, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn read_only_inner(
    registry: &Registry,
    auth: Option<&EdgeAuth>,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    match auth {
        Some(a) => {
            a.require_admin(parts).await?;
        }
        None if ConnInfo::of(parts).peer.ip().is_loopback() => {}
        None => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                "admin endpoints answer only loopback clients when authentication is off",
            ));
        }
    }
    match parts.method {
        Method::GET => {}
        Method::PUT => {
            let bytes = http_body_util::Limited::new(body, 4096)
                .collect()
                .await
                .map_err(|_| ApiError::bad_request(ErrorCode::Unsupported, "body too large or unreadable"))?
                .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(ErrorCode::Unsupported, format!("expected {{\"read_only\": BOOL}}: {e}"))
            })?;
            let on = v["read_only"]
                .as_bool()
                .ok_or_else(|| ApiError::bad_request(ErrorCode::Unsupported, "expected {\"read_only\": true|false}"))?;
            registry.set_read_only_fleet(on).await?;
            tracing::warn!(read_only = on, "fleet-wide read-only mode switched through the admin endpoint");
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    let state = serde_json::json!({
        "read_only": registry.is_read_only(),
        "local": registry.is_read_only_local(),
        "fleet": registry.is_read_only_fleet(),
    });
    let mut r = (StatusCode::OK, state.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}
