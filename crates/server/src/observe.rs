//! What happens around every request, whatever it is: a request id, a tracing span carrying it (so every
//! log line of the request names it), the actor slot that authentication fills, byte counting both ways,
//! the metrics, and one access-log line when the response has been sent.
//!
//! The id is the client's `X-Request-Id` when it is well-formed (1–128 of `A-Z a-z 0-9 - _ . :`),
//! otherwise a fresh one; either way it is returned in the response's `X-Request-Id`. The access line
//! (target `entrepot::access`, level info) is written when the response body ends or is dropped, so its
//! byte count and duration cover a streamed blob: method, path, redacted query, status, bytes in and
//! out, duration, remote address, user (if authentication named one), route.
//!
//! Must never log a header value or a secret: the query's credential-like parameters (`password`,
//! `token`, …) are replaced by `REDACTED`, and nothing else from the request is logged.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use entrepot_registry::events::{Actor, with_actor};
use http::{HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use tracing::Instrument;

use crate::metrics::{self, HttpMetrics};

/// The header carrying the request id both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Names the user of the request for the access log and for the registry's events (an empty name —
/// anonymous — is ignored). Authentication calls this once it knows who the caller is.
pub fn set_user(extensions: &http::Extensions, name: &str) {
    if name.is_empty() {
        return;
    }
    if let Some(actor) = extensions.get::<Actor>() {
        actor.set(name);
    }
}

/// Query parameters never logged as they are.
const SECRET_PARAMS: &[&str] =
    &["password", "passwd", "token", "access_token", "refresh_token", "id_token", "secret", "client_secret", "key"];

/// The query with the value of every credential-like parameter replaced by `REDACTED`.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            let decoded = percent_encoding::percent_decode_str(key).decode_utf8_lossy().to_ascii_lowercase();
            if SECRET_PARAMS.contains(&decoded.as_str()) { format!("{key}=REDACTED") } else { pair.to_string() }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn well_formed_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then_some(s)
}

/// A new request id: 16 hex digits, unique within the process and hard to guess across processes.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().build_hasher().finish());
    // splitmix64 over seed + counter: a bijection of the counter, so ids never repeat in a process.
    let mut z = seed.wrapping_add(COUNTER.fetch_add(1, Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// The route label of a request, for metrics and the access log.
fn route_of(method: &Method, path: &str) -> usize {
    let label = match path {
        "/metrics" => "metrics",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        crate::auth::TOKEN_PATH => "token",
        _ => match crate::route::parse(method, path) {
            Ok(action) => metrics::action_label(&action),
            Err(_) => "unknown",
        },
    };
    metrics::route_index(label)
}

/// The middleware (see the module documentation).
pub async fn observe(State(http): State<Arc<HttpMetrics>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id: Arc<str> = match req.headers().get(REQUEST_ID).and_then(well_formed_id) {
        Some(s) => s.into(),
        None => new_request_id().into(),
    };
    let method = req.method().clone();
    let route = route_of(&method, req.uri().path());
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(redact_query);
    let remote = req.extensions().get::<crate::auth::ConnInfo>().map(|c| c.peer.to_string());
    let actor = Actor::default();
    req.extensions_mut().insert(actor.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let received = Arc::new(AtomicU64::new(0));
    let req = req.map(|b| Body::new(Counted { inner: b, on_end: None, seen: 0, shared: Some(received.clone()) }));

    let in_flight = http.start(route);
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = with_actor(actor.clone(), next.run(req)).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status();
    let done = Finish { http, route, method, status, started, received, path, query, remote, actor, span, in_flight };
    resp.map(|b| Body::new(Counted { inner: b, on_end: Some(done), seen: 0, shared: None }))
}

/// What is recorded once the response is over.
struct Finish {
    http: Arc<HttpMetrics>,
    route: usize,
    method: Method,
    status: StatusCode,
    started: Instant,
    received: Arc<AtomicU64>,
    path: String,
    query: Option<String>,
    remote: Option<String>,
    actor: Actor,
    span: tracing::Span,
    /// Dropped with this, when the response is over.
    in_flight: metrics::InFlight,
}

impl Finish {
    fn run(self, sent: u64) {
        let _in_flight = self.in_flight;
        let took = self.started.elapsed();
        let received = self.received.load(Relaxed);
        self.http.record(self.route, &self.method, self.status, took, received, sent);
        let _in_span = self.span.enter();
        tracing::info!(
            target: "entrepot::access",
            method = %self.method,
            path = %self.path,
            query = self.query.as_deref().unwrap_or(""),
            status = self.status.as_u16(),
            bytes_in = received,
            bytes_out = sent,
            duration_ms = took.as_secs_f64() * 1000.0,
            remote = self.remote.as_deref().unwrap_or(""),
            user = self.actor.get().unwrap_or(""),
            route = metrics::ROUTES[self.route],
            "access"
        );
    }
}

/// A body that counts its data bytes: the request body (into `shared`) or the response body (then
/// `on_end` runs once, at its end or when it is dropped unfinished).
struct Counted {
    inner: Body,
    on_end: Option<Finish>,
    seen: u64,
    shared: Option<Arc<AtomicU64>>,
}

impl Counted {
    fn finish(&mut self) {
        if let Some(f) = self.on_end.take() {
            f.run(self.seen);
        }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.seen += n;
                    if let Some(s) = &self.shared {
                        s.fetch_add(n, Relaxed);
                    }
                }
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let ok = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(well_formed_id(&ok), Some("abc-123_x.y:z"));
        for bad in ["", "has space", "semi;colon", "new\tline"] {
            assert_eq!(well_formed_id(&HeaderValue::from_str(bad).expect("header")), None, "{bad:?}");
        }
        assert_eq!(well_formed_id(&HeaderValue::from_str(&"a".repeat(129)).expect("header")), None);
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn queries_are_redacted() {
        assert_eq!(redact_query("n=10&last=a"), "n=10&last=a");
        assert_eq!(
            redact_query("account=bob&password=hunter2&Token=t&access%5Ftoken=z&scope=repository:a:pull"),
            "account=bob&password=REDACTED&Token=REDACTED&access%5Ftoken=REDACTED&scope=repository:a:pull"
        );
    }

    #[test]
    fn routes_are_labels_not_paths() {
        let d = format!("sha256:{}", "a".repeat(64));
        let label = |m: Method, p: &str| metrics::ROUTES[route_of(&m, p)];
        assert_eq!(label(Method::GET, &format!("/v2/team/app/blobs/{d}")), "get_blob");
        assert_eq!(label(Method::PUT, "/v2/a/b/c/manifests/v1"), "put_manifest");
        assert_eq!(label(Method::GET, "/metrics"), "metrics");
        assert_eq!(label(Method::GET, "/anything/else"), "unknown");
        assert_eq!(label(Method::GET, "/v2/INVALID/manifests/x"), "unknown");
    }
}
