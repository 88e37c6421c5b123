//! The one place where errors become HTTP responses: a status and the spec's JSON error envelope.

use axum::response::{IntoResponse, Response};
use entrepot_oci::{DigestError, ErrorCode, ErrorEnvelope, NameError};
use entrepot_registry::RegistryError;
use http::{HeaderValue, StatusCode, header};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub detail: Option<serde_json::Value>,
    /// Extra headers (e.g. `Range` on a 416 of an upload, `Content-Range` on a 416 of a blob).
    pub headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: None, headers: Vec::new() }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> ApiError {
        self.detail = Some(detail);
        self
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, "no such endpoint")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::Unsupported, "method not allowed on this endpoint")
    }

    pub fn upload_unknown() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUploadUnknown, "upload session unknown")
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn from_name(e: NameError) -> ApiError {
        match e {
            NameError::InvalidName(_) => ApiError::bad_request(ErrorCode::NameInvalid, e.to_string()),
            NameError::InvalidTag => ApiError::bad_request(ErrorCode::TagInvalid, e.to_string()),
            NameError::InvalidDigest(d) => ApiError::from_digest(d),
        }
    }

    pub fn from_digest(e: DigestError) -> ApiError {
        ApiError::bad_request(ErrorCode::DigestInvalid, e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        use RegistryError as R;
        let status = match &e {
            R::BlobUnknown(_) | R::UploadUnknown | R::ManifestUnknown(_) | R::NameUnknown(_) => StatusCode::NOT_FOUND,
            R::ChunkOutOfOrder { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            R::ManifestTooLarge { .. } | R::BlobTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            R::Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            R::Denied(_) => StatusCode::FORBIDDEN,
            R::Storage(_) | R::Meta(_) => StatusCode::INTERNAL_SERVER_ERROR,
            R::UploadInvalid(_)
            | R::DigestInvalid(_)
            | R::SizeInvalid(_)
            | R::ManifestInvalid(_)
            | R::ManifestBlobUnknown { .. }
            | R::NameInvalid(_)
            | R::TagInvalid(_) => StatusCode::BAD_REQUEST,
        };
        if e.is_internal() {
            // The cause goes to the log, not to the client.
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), "internal error");
            return ApiError::new(status, ErrorCode::Unsupported, "internal server error; see the registry log");
        }
        let mut api = ApiError::new(status, e.code(), e.to_string());
        match &e {
            R::ManifestBlobUnknown { digest, .. } => api = api.with_detail(serde_json::json!({ "digest": digest })),
            R::BlobUnknown(d) => api = api.with_detail(serde_json::json!({ "digest": d })),
            R::ChunkOutOfOrder { offset } => {
                api = api.with_header(header::RANGE, crate::handlers::range_header(*offset));
            }
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope::single(self.code, self.message, self.detail).to_json();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}
