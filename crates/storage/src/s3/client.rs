//! A small S3 client on `reqwest`: the dozen S3 calls the blob store needs (objects, listings,
//! multipart uploads, copies), each signed with SigV4 ([`super::sigv4`]), with path-style or
//! virtual-host-style addressing, bounded retries with exponential backoff and jitter, and timeouts.
//!
//! It only ever sends bodies it holds in memory (`Bytes`, at most one part), so any request can be
//! retried as is. It knows object keys, never digests or uploads; it must never log credentials or
//! signatures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::{Method, Response, StatusCode, Url};

use super::S3Config;
use super::sigv4::{self, Credentials, EMPTY_SHA256, Stamp, uri_encode};

/// Errors of S3 requests.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("S3 answered {status} {code}: {message}")]
    Status { status: u16, code: String, message: String },
    #[error("unexpected S3 response: {0}")]
    Protocol(String),
    #[error("S3 configuration: {0}")]
    Config(String),
}

impl S3Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3Error::Status { status: 404, .. })
    }
}

pub type S3Result<T> = std::result::Result<T, S3Error>;

/// An object of a listing.
#[derive(Debug, Clone)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// A multipart upload in progress.
#[derive(Debug, Clone)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// An uploaded part of a multipart upload.
#[derive(Debug, Clone)]
pub struct PartEntry {
    pub number: u32,
    pub etag: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// One S3 request before signing.
struct Call<'a> {
    method: Method,
    /// `None`: the bucket itself.
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Safe to send twice. Non-idempotent calls are retried only when the server surely did not act
    /// (connection refused, 429, 503).
    idempotent: bool,
    /// A whole-request deadline; `None` for streamed responses (the read timeout still applies).
    deadline: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, key: Option<&'a str>) -> Call<'a> {
        Call {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            idempotent: true,
            deadline: true,
        }
    }

    fn query(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_string(), v.into()));
        self
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Self {
        self.headers.push((k.to_string(), v.into()));
        self
    }

    fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }
}

/// The S3 client of one store (cheap to clone: `reqwest::Client` is shared inside).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: std::sync::Arc<S3Config>,
    scheme: String,
    /// Host (with port when not the scheme's default) that requests are addressed to.
    host: String,
    /// Path of the endpoint, without a trailing `/` (usually empty).
    base: String,
    retries: std::sync::Arc<AtomicU64>,
}

impl Client {
    pub fn new(cfg: std::sync::Arc<S3Config>) -> S3Result<Client> {
        let url = Url::parse(&cfg.endpoint).map_err(|e| S3Error::Config(format!("endpoint {}: {e}", cfg.endpoint)))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(S3Error::Config(format!("endpoint {}: expected http:// or https://", cfg.endpoint)));
        }
        let host = url.host_str().ok_or_else(|| S3Error::Config(format!("endpoint {}: no host", cfg.endpoint)))?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let host = if cfg.path_style { host } else { format!("{}.{host}", cfg.bucket) };
        let base = url.path().trim_end_matches('/').to_string();
        // When reqwest is built with rustls (the binary enables it, for https endpoints), it needs a
        // process-wide crypto provider: ring, as the server's TLS uses. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        for (name, addr) in &cfg.resolve {
            builder = builder.resolve(name, *addr);
        }
        #[cfg(not(feature = "https"))]
        if url.scheme() == "https" || cfg.ca_bundle.is_some() {
            return Err(S3Error::Config("built without the `https` feature: http:// endpoints only".into()));
        }
        #[cfg(feature = "https")]
        if let Some(path) = &cfg.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| S3Error::Config(format!("CA bundle {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| S3Error::Config(format!("CA bundle {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(S3Error::Config(format!("CA bundle {}: no certificate in it", path.display())));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| S3Error::Config(format!("HTTP client: {e}")))?;
        Ok(Client {
            http,
            scheme: url.scheme().to_string(),
            host,
            base,
            cfg,
            retries: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many requests were retried so far (for tests and metrics).
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The URI-encoded path of `key` (or of the bucket).
    fn path(&self, key: Option<&str>) -> String {
        let mut p = self.base.clone();
        if self.cfg.path_style {
            p.push('/');
            p.push_str(&uri_encode(&self.cfg.bucket, true));
            if let Some(k) = key {
                p.push('/');
                p.push_str(&uri_encode(k, false));
            }
        } else {
            p.push('/');
            if let Some(k) = key {
                p.push_str(&uri_encode(k, false));
            }
        }
        p
    }

    fn build(&self, call: &Call<'_>) -> S3Result<reqwest::Request> {
        let path = self.path(call.key);
        let query = sigv4::canonical_query(&call.query);
        let mut url = format!("{}://{}{path}", self.scheme, self.host);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let url = Url::parse(&url).map_err(|e| S3Error::Protocol(format!("bad request URL: {e}")))?;
        let stamp = Stamp::at(SystemTime::now());
        let payload = if call.body.is_empty() { EMPTY_SHA256.to_string() } else { sigv4::sha256_hex(&call.body) };
        let creds: &Credentials = &self.cfg.credentials;
        let mut headers = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-content-sha256".to_string(), payload.clone()),
            ("x-amz-date".to_string(), stamp.datetime.clone()),
        ];
        if let Some(t) = &creds.session_token {
            headers.push(("x-amz-security-token".to_string(), t.clone()));
        }
        headers.extend(call.headers.iter().filter(|(k, _)| k.starts_with("x-amz-")).cloned());
        let auth = sigv4::authorization(
            creds,
            &self.cfg.region,
            &stamp,
            &sigv4::Request {
                method: call.method.as_str(),
                canonical_uri: &path,
                canonical_query: &query,
                headers: &headers,
                payload_hash: &payload,
            },
        );
        let mut rb = self.http.request(call.method.clone(), url).header("authorization", auth);
        for (k, v) in headers.iter().chain(call.headers.iter().filter(|(k, _)| !k.starts_with("x-amz-"))) {
            if k != "host" {
                rb = rb.header(k.as_str(), v.as_str());
            }
        }
        if call.deadline {
            rb = rb.timeout(self.cfg.request_timeout);
        }
        if !call.body.is_empty() || matches!(call.method, Method::PUT | Method::POST) {
            rb = rb.body(call.body.clone());
        }
        rb.build().map_err(S3Error::Transport)
    }

    /// Sends `call`, retrying throttling, server errors and connection failures with exponential
    /// backoff and jitter, up to the configured number of attempts.
    async fn send(&self, call: &Call<'_>) -> S3Result<Response> {
        let attempts = self.cfg.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let req = self.build(call)?;
            let result = self.http.execute(req).await;
            let retry = match &result {
                Ok(r) => {
                    let s = r.status();
                    let throttled = s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::SERVICE_UNAVAILABLE;
                    throttled || (call.idempotent && s.is_server_error())
                }
                Err(e) => call.idempotent || e.is_connect(),
            };
            if !retry || attempt >= attempts {
                return Ok(result?);
            }
            match &result {
                Ok(r) => tracing::debug!(status = %r.status(), attempt, "S3 request will be retried"),
                Err(e) => tracing::debug!(error = %e, attempt, "S3 request will be retried"),
            }
            drop(result);
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(self.cfg.retry_base, attempt)).await;
            attempt += 1;
        }
    }

    /// [`Client::send`], then turns a non-2xx answer into [`S3Error::Status`].
    async fn ok(&self, call: &Call<'_>) -> S3Result<Response> {
        let resp = self.send(call).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(status_error(resp).await)
    }

    /// [`Client::ok`] and the whole (small) body as text; an `<Error>` document in a 200 answer (S3
    /// does that for long copies and completions) is an error too.
    async fn ok_text(&self, call: &Call<'_>) -> S3Result<String> {
        let resp = self.ok(call).await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if let Some(err) = xml::block(&text, "Error") {
            return Err(S3Error::Status {
                status,
                code: xml::text(err, "Code").unwrap_or_default(),
                message: xml::text(err, "Message").unwrap_or_default(),
            });
        }
        Ok(text)
    }

    /// Size and last-modified time of an object, or `None`.
    pub async fn head(&self, key: &str) -> S3Result<Option<(u64, SystemTime)>> {
        let resp = self.send(&Call::new(Method::HEAD, Some(key))).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let size = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| S3Error::Protocol("HEAD without Content-Length".into()))?;
        let modified = resp
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok())
            .and_then(sigv4::parse_http_date)
            .unwrap_or_else(SystemTime::now);
        Ok(Some((size, modified)))
    }

    /// Starts a GET of an object (or of `len` bytes from `start`); `None` if there is no such object.
    /// The body is streamed by the caller.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> S3Result<Option<Response>> {
        let mut call = Call::new(Method::GET, Some(key));
        call.deadline = false;
        if let Some((start, len)) = range {
            call = call.header("range", format!("bytes={start}-{}", start + len.saturating_sub(1)));
        }
        let resp = self.send(&call).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        if range.is_some() && resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(S3Error::Protocol(format!("range GET answered {}", resp.status())));
        }
        Ok(Some(resp))
    }

    pub async fn put(&self, key: &str, body: Bytes) -> S3Result<()> {
        self.ok(&Call::new(Method::PUT, Some(key)).body(body)).await.map(drop)
    }

    /// Deletes an object; deleting a missing object is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> S3Result<()> {
        match self.ok(&Call::new(Method::DELETE, Some(key))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn copy_source(&self, key: &str) -> String {
        format!("/{}/{}", self.cfg.bucket, uri_encode(key, false))
    }

    /// Server-side copy of a whole object (up to 5 GiB).
    pub async fn copy(&self, from: &str, to: &str) -> S3Result<()> {
        let call = Call::new(Method::PUT, Some(to)).header("x-amz-copy-source", self.copy_source(from));
        self.ok_text(&call).await.map(drop)
    }

    /// Every object under `prefix` (all pages), and with a delimiter the common prefixes.
    pub async fn list(&self, prefix: &str, delimiter: Option<&str>) -> S3Result<(Vec<ObjectEntry>, Vec<String>)> {
        let (mut objects, mut prefixes) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, None).query("list-type", "2").query("prefix", prefix);
            if let Some(d) = delimiter {
                call = call.query("delimiter", d);
            }
            if let Some(t) = &token {
                call = call.query("continuation-token", t.clone());
            }
            let doc = self.ok_text(&call).await?;
            for c in xml::blocks(&doc, "Contents") {
                let key = xml::text(c, "Key").ok_or_else(|| S3Error::Protocol("listed object without Key".into()))?;
                let size = xml::text(c, "Size").and_then(|s| s.parse().ok()).unwrap_or(0);
                let modified = xml::text(c, "LastModified")
                    .and_then(|t| sigv4::parse_iso8601(&t))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                objects.push(ObjectEntry { key, size, modified });
            }
            for c in xml::blocks(&doc, "CommonPrefixes") {
                if let Some(p) = xml::text(c, "Prefix") {
                    prefixes.push(p);
                }
            }
            token = xml::text(&doc, "NextContinuationToken");
            if xml::text(&doc, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                return Ok((objects, prefixes));
            }
        }
    }

    /// Starts a multipart upload to `key`; returns its id.
    pub async fn create_multipart(&self, key: &str) -> S3Result<String> {
        let mut call = Call::new(Method::POST, Some(key)).query("uploads", "");
        call.idempotent = false;
        let doc = self.ok_text(&call).await?;
        xml::text(&doc, "UploadId").ok_or_else(|| S3Error::Protocol("CreateMultipartUpload without UploadId".into()))
    }

    /// Multipart uploads in progress under `prefix`, oldest first for each key.
    pub async fn list_multipart(&self, prefix: &str) -> S3Result<Vec<UploadEntry>> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut call = Call::new(Method::GET, None).query("uploads", "").query("prefix", prefix);
            if let Some((k, u)) = &markers {
                call = call.query("key-marker", k.clone()).query("upload-id-marker", u.clone());
            }
            let doc = self.ok_text(&call).await?;
            for u in xml::blocks(&doc, "Upload") {
                let (Some(key), Some(upload_id)) = (xml::text(u, "Key"), xml::text(u, "UploadId")) else {
                    return Err(S3Error::Protocol("listed upload without Key or UploadId".into()));
                };
                let initiated =
                    xml::text(u, "Initiated").and_then(|t| sigv4::parse_iso8601(&t)).unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(UploadEntry { key, upload_id, initiated });
            }
            let next = (xml::text(&doc, "NextKeyMarker"), xml::text(&doc, "NextUploadIdMarker"));
            match (xml::text(&doc, "IsTruncated").as_deref(), next) {
                (Some("true"), (Some(k), Some(u))) if markers.as_ref() != Some(&(k.clone(), u.clone())) => {
                    markers = Some((k, u))
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.key, a.initiated, &a.upload_id).cmp(&(&b.key, b.initiated, &b.upload_id)));
        Ok(out)
    }

    /// Uploads part `number`; returns its ETag.
    pub async fn upload_part(&self, key: &str, upload_id: &str, number: u32, body: Bytes) -> S3Result<String> {
        let call = Call::new(Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id)
            .body(body);
        let resp = self.ok(&call).await?;
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| S3Error::Protocol("UploadPart without ETag".into()))
    }

    /// Server-side copy of `len` bytes from `start` of object `from` as part `number`; returns its ETag.
    pub async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        from: &str,
        (start, len): (u64, u64),
    ) -> S3Result<String> {
        let call = Call::new(Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id)
            .header("x-amz-copy-source", self.copy_source(from))
            .header("x-amz-copy-source-range", format!("bytes={start}-{}", start + len - 1));
        let doc = self.ok_text(&call).await?;
        xml::text(&doc, "ETag").ok_or_else(|| S3Error::Protocol("UploadPartCopy without ETag".into()))
    }

    /// The parts uploaded so far, or `None` if the upload does not exist (any more).
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> S3Result<Option<Vec<PartEntry>>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, Some(key)).query("uploadId", upload_id);
            if let Some(m) = &marker {
                call = call.query("part-number-marker", m.clone());
            }
            let doc = match self.ok_text(&call).await {
                Ok(d) => d,
                Err(S3Error::Status { status: 404, .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            for p in xml::blocks(&doc, "Part") {
                let number = xml::text(p, "PartNumber").and_then(|n| n.parse().ok());
                let (Some(number), Some(etag)) = (number, xml::text(p, "ETag")) else {
                    return Err(S3Error::Protocol("listed part without PartNumber or ETag".into()));
                };
                let size = xml::text(p, "Size").and_then(|s| s.parse().ok()).unwrap_or(0);
                let modified = xml::text(p, "LastModified")
                    .and_then(|t| sigv4::parse_iso8601(&t))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push(PartEntry { number, etag, size, modified });
            }
            let next = xml::text(&doc, "NextPartNumberMarker");
            match (xml::text(&doc, "IsTruncated").as_deref(), next) {
                (Some("true"), Some(n)) if marker.as_ref() != Some(&n) => marker = Some(n),
                _ => break,
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(Some(out))
    }

    /// Completes a multipart upload with exactly `parts` (number, ETag), in order.
    pub async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> S3Result<()> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            body.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>", xml::escape(etag)));
        }
        body.push_str("</CompleteMultipartUpload>");
        let call = Call::new(Method::POST, Some(key)).query("uploadId", upload_id).body(Bytes::from(body));
        self.ok_text(&call).await.map(drop)
    }

    /// Aborts a multipart upload; an unknown upload is not an error.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> S3Result<()> {
        match self.ok(&Call::new(Method::DELETE, Some(key)).query("uploadId", upload_id)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates the bucket; one that exists already (and is ours) is fine.
    pub async fn create_bucket(&self) -> S3Result<()> {
        match self.ok(&Call::new(Method::PUT, None)).await {
            Ok(_) => Ok(()),
            Err(S3Error::Status { code, .. }) if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A URL that lets anyone GET `key` for `ttl` without credentials.
    pub fn presign_get(&self, key: &str, ttl: Duration, now: SystemTime) -> String {
        let path = self.path(Some(key));
        let q = sigv4::presigned_query(
            &self.cfg.credentials,
            &self.cfg.region,
            &Stamp::at(now),
            "GET",
            &self.host,
            &path,
            ttl,
        );
        format!("{}://{}{path}?{q}", self.scheme, self.host)
    }
}

async fn status_error(resp: Response) -> S3Error {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    S3Error::Status {
        status,
        code: xml::text(&text, "Code").unwrap_or_else(|| "-".into()),
        message: xml::text(&text, "Message").unwrap_or_default(),
    }
}

/// `base · 2^(attempt-1)`, capped at 10 s, with "equal jitter" (half fixed, half random) so that
/// instances throttled together do not retry together.
fn backoff(base: Duration, attempt: u32) -> Duration {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(Duration::from_secs(10));
    let mut x = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        ^ SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(1);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let half = exp / 2;
    half + half.mul_f64((x % 1_000_000) as f64 / 1_000_000.0)
}

/// Just enough XML for S3's flat response documents: elements by name, their text, entities.
mod xml {
    /// The inner text of every `<tag>…</tag>` element in `doc` (not nested in one another).
    pub fn blocks<'a>(doc: &'a str, tag: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut rest = doc;
        while let Some((inner, after)) = next(rest, tag) {
            out.push(inner);
            rest = after;
        }
        out
    }

    /// The first `<tag>…</tag>` element's inner text, raw.
    pub fn block<'a>(doc: &'a str, tag: &str) -> Option<&'a str> {
        next(doc, tag).map(|(inner, _)| inner)
    }

    /// The first `<tag>…</tag>` element's text, entities decoded.
    pub fn text(doc: &str, tag: &str) -> Option<String> {
        block(doc, tag).map(unescape)
    }

    fn next<'a>(doc: &'a str, tag: &str) -> Option<(&'a str, &'a str)> {
        let open = format!("<{tag}");
        let close = format!("</{tag}>");
        let mut from = 0;
        loop {
            let at = from + doc[from..].find(&open)?;
            let after = &doc[at + open.len()..];
            match after.as_bytes().first() {
                Some(b'>') => {
                    let body = &after[1..];
                    let end = body.find(&close)?;
                    return Some((&body[..end], &body[end + close.len()..]));
                }
                Some(b'/') if after.starts_with("/>") => return Some(("", &after[2..])),
                Some(c) if c.is_ascii_whitespace() => {
                    let gt = after.find('>')?;
                    if after[..gt].ends_with('/') {
                        return Some(("", &after[gt + 1..]));
                    }
                    let body = &after[gt + 1..];
                    let end = body.find(&close)?;
                    return Some((&body[..end], &body[end + close.len()..]));
                }
                _ => from = at + open.len(),
            }
        }
    }

    pub fn unescape(s: &str) -> String {
        if !s.contains('&') {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('&') {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            let Some(semi) = rest.find(';') else { break };
            let ent = &rest[1..semi];
            let ch = match ent {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ if ent.starts_with("#x") => u32::from_str_radix(&ent[2..], 16).ok().and_then(char::from_u32),
                _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
                _ => None,
            };
            match ch {
                Some(c) => {
                    out.push(c);
                    rest = &rest[semi + 1..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    pub fn escape(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn s3_documents() {
            let doc = r#"<?xml version="1.0"?><ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
              <Bucket>b</Bucket><Key>k</Key><UploadId>u</UploadId><PartNumberMarker/>
              <Part><PartNumber>1</PartNumber><ETag>&quot;a1&quot;</ETag><Size>5</Size></Part>
              <Part><PartNumber>2</PartNumber><ETag>&#34;b2&#x22;</ETag><Size>3</Size></Part>
              <IsTruncated>false</IsTruncated></ListPartsResult>"#;
            let parts = blocks(doc, "Part");
            assert_eq!(parts.len(), 2, "<PartNumberMarker/> is not a <Part>");
            assert_eq!(text(parts[0], "ETag").as_deref(), Some("\"a1\""));
            assert_eq!(text(parts[1], "ETag").as_deref(), Some("\"b2\""));
            assert_eq!(text(parts[1], "PartNumber").as_deref(), Some("2"));
            assert_eq!(text(doc, "Key").as_deref(), Some("k"));
            assert_eq!(text(doc, "PartNumberMarker").as_deref(), Some(""));
            assert_eq!(text(doc, "Missing"), None);
            assert_eq!(unescape("a &amp;&lt; &bogus; b"), "a &< &bogus; b");
            assert_eq!(escape("\"x\"&"), "&quot;x&quot;&amp;");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let base = Duration::from_millis(100);
        for attempt in 1..6 {
            let full = base * (1 << (attempt - 1));
            let d = backoff(base, attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(base, 40) <= Duration::from_secs(10));
    }

    #[test]
    fn addressing_styles() {
        let mut cfg = S3Config::new("http://127.0.0.1:9000/", "bkt", Credentials::new("AK", "SK"));
        let c = Client::new(std::sync::Arc::new(cfg.clone())).expect("client");
        assert_eq!(c.host, "127.0.0.1:9000");
        assert_eq!(c.path(Some("a b/c")), "/bkt/a%20b/c");
        assert_eq!(c.path(None), "/bkt");
        cfg.path_style = false;
        cfg.endpoint = "https://s3.example.test".into();
        let c = Client::new(std::sync::Arc::new(cfg.clone())).expect("client");
        assert_eq!(c.host, "bkt.s3.example.test");
        assert_eq!(c.path(Some("x/y")), "/x/y");
        assert_eq!(c.path(None), "/");
        let url = c.presign_get("x/y", Duration::from_secs(60), SystemTime::UNIX_EPOCH);
        assert!(url.starts_with("https://bkt.s3.example.test/x/y?X-Amz-Algorithm=AWS4-HMAC-SHA256&"), "{url}");
        cfg.endpoint = "ftp://x".into();
        assert!(matches!(Client::new(std::sync::Arc::new(cfg)), Err(S3Error::Config(_))));
    }
}
