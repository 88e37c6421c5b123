//! One function per [`Action`]: read what the request carries (headers, query, body), call the
//! registry service, and shape the response the spec prescribes. No protocol rule that is not about
//! HTTP lives here.

use std::io;

use axum::body::Body;
use axum::response::Response;
use entrepot_oci::{
    Algorithm, ByteRange, ContentRange, Digest, ErrorCode, RangeError, Reference, RepoName, Tag, UploadId, media,
};
use entrepot_registry::{ByteStream, Registry, UploadStatus};
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

use crate::error::ApiError;
use crate::route::Action;

pub type ApiResult = Result<Response, ApiError>;

/// Default and maximum page size of `tags/list`, `_catalog` and the referrers list.
const MAX_PAGE: usize = 10_000;

/// The parsed query string (`?a=1&b=2&b=3`).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Drops every value of `key`.
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }
}

/// Which repositories a caller may see in `_catalog` (`None`: all of them).
pub type CatalogFilter = Option<Box<dyn Fn(&str) -> bool + Send + Sync>>;

/// Serves one action.
pub async fn dispatch(
    registry: &Registry,
    action: Action,
    query: Query,
    headers: &HeaderMap,
    body: Body,
    catalog_filter: CatalogFilter,
) -> ApiResult {
    match action {
        Action::ApiVersion => Ok(empty(StatusCode::OK, "application/json", Body::from("{}"))),
        Action::Catalog => catalog(registry, &query, catalog_filter).await,
        Action::GetBlob { repo, digest, head } => get_blob(registry, &repo, &digest, head, headers).await,
        Action::DeleteBlob { repo, digest } => {
            registry.delete_blob(&repo, &digest).await?;
            Ok(accepted_empty(&[]))
        }
        Action::StartUpload { repo } => start_upload(registry, &repo, &query, headers, body).await,
        Action::UploadStatus { repo, id } => {
            let status = registry.upload_status(&repo, &id).await?;
            Ok(upload_response(StatusCode::NO_CONTENT, &status))
        }
        Action::PatchUpload { repo, id } => patch_upload(registry, &repo, &id, headers, body).await,
        Action::FinishUpload { repo, id } => finish_upload(registry, &repo, &id, &query, headers, body).await,
        Action::CancelUpload { repo, id } => {
            registry.cancel_upload(&repo, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT, "", Body::empty()))
        }
        Action::GetManifest { repo, reference, head } => get_manifest(registry, &repo, &reference, head).await,
        Action::PutManifest { repo, reference } => {
            put_manifest(registry, &repo, &reference, &query, headers, body).await
        }
        Action::DeleteManifest { repo, reference } => {
            registry.delete_manifest(&repo, &reference).await?;
            Ok(accepted_empty(&[]))
        }
        Action::ListTags { repo } => list_tags(registry, &repo, &query).await,
        Action::Referrers { repo, digest } => referrers(registry, &repo, &digest, &query).await,
        // Served by `scan_api::intercept` when the scanner is installed.
        Action::ScanReport { .. } => {
            Err(ApiError::new(StatusCode::NOT_FOUND, ErrorCode::Unsupported, "security scanning is not enabled"))
        }
    }
}

// ------------------------------------------------------------------------------------------ helpers

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn empty(status: StatusCode, content_type: &str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if !content_type.is_empty() {
        r.headers_mut().insert(header::CONTENT_TYPE, hv(content_type));
    }
    r
}

fn accepted_empty(extra: &[(header::HeaderName, String)]) -> Response {
    let mut r = empty(StatusCode::ACCEPTED, "", Body::empty());
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    for (k, v) in extra {
        r.headers_mut().insert(k.clone(), hv(v));
    }
    r
}

/// The `Range` header of an upload that has received `offset` bytes: `0-<last byte>`. Like
/// distribution, an empty upload reports `0-0`.
pub fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn upload_location(repo: &RepoName, id: &UploadId) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, s: &UploadStatus) -> Response {
    let mut r = empty(status, "", Body::empty());
    let h = r.headers_mut();
    h.insert(header::LOCATION, hv(&upload_location(&s.repo, &s.id)));
    h.insert("docker-upload-uuid", hv(s.id.as_str()));
    h.insert(header::RANGE, hv(&range_header(s.offset)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn blob_created(repo: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED, "", Body::empty());
    let h = r.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{repo}/blobs/{digest}")));
    h.insert("docker-content-digest", hv(&digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(TryStreamExt::map_err(body.into_data_stream(), io::Error::other))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(ErrorCode::SizeInvalid, "invalid Content-Length")),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_range(headers: &HeaderMap) -> Result<Option<ContentRange>, ApiError> {
    match headers.get(header::CONTENT_RANGE) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| range_invalid())?;
            ContentRange::parse(s).map(Some).map_err(|_| range_invalid())
        }
    }
}

fn range_invalid() -> ApiError {
    ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, ErrorCode::BlobUploadInvalid, "invalid Content-Range")
}

fn query_digest(query: &Query, key: &str) -> Result<Option<Digest>, ApiError> {
    query.get(key).map(|s| Digest::parse(s).map_err(ApiError::from_digest)).transpose()
}

/// `n` and `last` of a paginated listing.
fn pagination(query: &Query) -> Result<(Option<String>, usize), ApiError> {
    let n = match query.get("n") {
        None | Some("") => MAX_PAGE,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(ErrorCode::PaginationNumberInvalid, "n must be a non-negative integer"))?
            .min(MAX_PAGE),
    };
    let last = query.get("last").filter(|s| !s.is_empty()).map(str::to_string);
    Ok((last, n))
}

fn json_response(value: &serde_json::Value, content_type: &str, link: Option<String>) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = empty(StatusCode::OK, content_type, Body::from(body));
    if let Some(l) = link {
        r.headers_mut().insert(header::LINK, hv(&l));
    }
    r
}

fn next_link(path: &str, n: usize, last: &str, extra: &str) -> String {
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    format!("<{path}?n={n}&last={last}{extra}>; rel=\"next\"")
}

// ------------------------------------------------------------------------------------------ blobs

async fn get_blob(registry: &Registry, repo: &RepoName, digest: &Digest, head: bool, headers: &HeaderMap) -> ApiResult {
    let size = registry.blob_size(repo, digest).await?;
    // An object store that hands out presigned URLs serves the bytes (and any Range) itself.
    if !head && let Some(url) = registry.blob_redirect_url(digest) {
        let mut resp = empty(StatusCode::TEMPORARY_REDIRECT, "", Body::empty());
        resp.headers_mut().insert(header::LOCATION, hv(&url));
        resp.headers_mut().insert("docker-content-digest", hv(&digest.to_string()));
        return Ok(resp);
    }
    let range = match header_str(headers, "range") {
        None => None,
        Some(r) => match ByteRange::resolve(r, size) {
            Ok(br) => Some(br),
            Err(RangeError::Malformed) => None,
            Err(RangeError::Unsatisfiable) => {
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    ErrorCode::RangeInvalid,
                    format!("range not satisfiable for a blob of {size} bytes"),
                )
                .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
        },
    };
    let (status, len) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.len),
        None => (StatusCode::OK, size),
    };
    // `blob_size` above checked that the blob is readable in `repo`.
    let body = if head { Body::empty() } else { Body::from_stream(registry.read_sized_blob(digest, range).await?) };
    let mut resp = empty(status, "application/octet-stream", body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&digest.to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, hv(&format!("\"{digest}\"")));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    if let Some(r) = range {
        h.insert(header::CONTENT_RANGE, hv(&format!("bytes {}-{}/{size}", r.start, r.end_inclusive())));
    }
    Ok(resp)
}

// ------------------------------------------------------------------------------------------ uploads

async fn start_upload(
    registry: &Registry,
    repo: &RepoName,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    // Cross-repository mount.
    if let Some(mount) = query_digest(query, "mount")? {
        let from = match query.get("from") {
            Some(f) => Some(RepoName::parse(f).map_err(ApiError::from_name)?),
            None => None,
        };
        if registry.mount_blob(repo, &mount, from.as_ref()).await? {
            return Ok(blob_created(repo, &mount));
        }
    }
    // Monolithic upload in the POST itself.
    if let Some(digest) = query_digest(query, "digest")? {
        let status = registry.start_upload(repo, digest.algorithm()).await?;
        let len = content_length(headers)?;
        let result =
            registry.finish_upload(repo, &status.id, &digest, None, len, Some(body_stream(body))).await.map(|_| ());
        if let Err(e) = result {
            // Never leave a half-written monolithic upload behind.
            let _ = registry.cancel_upload(repo, &status.id).await;
            return Err(e.into());
        }
        return Ok(blob_created(repo, &digest));
    }
    let algorithm = match query.get("digest-algorithm") {
        Some(a) => Algorithm::parse(a).map_err(ApiError::from_digest)?,
        None => Algorithm::Sha256,
    };
    let status = registry.start_upload(repo, algorithm).await?;
    Ok(upload_response(StatusCode::ACCEPTED, &status))
}

async fn patch_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let range = content_range(headers)?;
    let len = content_length(headers)?;
    let status = registry.upload_chunk(repo, id, range, len, body_stream(body)).await?;
    Ok(upload_response(StatusCode::ACCEPTED, &status))
}

async fn finish_upload(
    registry: &Registry,
    repo: &RepoName,
    id: &UploadId,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let digest = query_digest(query, "digest")?
        .ok_or_else(|| ApiError::bad_request(ErrorCode::DigestInvalid, "the digest query parameter is required"))?;
    let range = content_range(headers)?;
    let len = content_length(headers)?;
    // A PUT without a body (Content-Length 0 or absent and not chunked) only completes the upload.
    let has_body = len.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING) || range.is_some();
    let body = has_body.then(|| body_stream(body));
    registry.finish_upload(repo, id, &digest, range, len, body).await?;
    Ok(blob_created(repo, &digest))
}

// ------------------------------------------------------------------------------------------ manifests

async fn get_manifest(registry: &Registry, repo: &RepoName, reference: &Reference, head: bool) -> ApiResult {
    // A GET is a pull (an event, when wanted); a HEAD only looks.
    let m = if head {
        registry.get_manifest(repo, reference).await?
    } else {
        registry.pull_manifest(repo, reference).await?
    };
    let len = m.content.len();
    let body = if head { Body::empty() } else { Body::from(m.content) };
    let mut resp = empty(StatusCode::OK, &m.media_type, body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert("docker-content-digest", hv(&m.digest.to_string()));
    h.insert(header::ETAG, hv(&format!("\"{}\"", m.digest)));
    Ok(resp)
}

async fn put_manifest(
    registry: &Registry,
    repo: &RepoName,
    reference: &Reference,
    query: &Query,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let limit = registry.config().max_manifest_bytes;
    let too_large = |size: u64| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ManifestInvalid,
            format!("manifest of {size} bytes exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(n) = content_length(headers)?.filter(|&n| n > limit) {
        return Err(too_large(n));
    }
    let bytes = match http_body_util::Limited::new(body, limit as usize).collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit + 1)),
        Err(e) => return Err(ApiError::bad_request(ErrorCode::ManifestInvalid, format!("reading the body: {e}"))),
    };
    let tags = query.all("tag").map(|t| Tag::parse(t).map_err(ApiError::from_name)).collect::<Result<Vec<_>, _>>()?;
    let content_type = header_str(headers, "content-type");
    let put = registry.put_manifest(repo, reference, content_type, bytes, tags).await?;

    let mut resp = empty(StatusCode::CREATED, "", Body::empty());
    let h = resp.headers_mut();
    h.insert(header::LOCATION, hv(&format!("/v2/{repo}/manifests/{}", put.digest)));
    h.insert("docker-content-digest", hv(&put.digest.to_string()));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    if let Some(s) = &put.subject {
        h.insert("oci-subject", hv(&s.to_string()));
    }
    if matches!(reference, Reference::Digest(_)) {
        for t in &put.tags {
            h.append("oci-tag", hv(t.as_str()));
        }
    }
    Ok(resp)
}

// ------------------------------------------------------------------------------------------ listings

async fn list_tags(registry: &Registry, repo: &RepoName, query: &Query) -> ApiResult {
    let (last, n) = pagination(query)?;
    let mut tags = registry.list_tags(repo, last.as_deref(), n + 1).await?;
    let link = if tags.len() > n {
        tags.truncate(n);
        tags.last().map(|l| next_link(&format!("/v2/{repo}/tags/list"), n, l, ""))
    } else {
        None
    };
    Ok(json_response(&serde_json::json!({ "name": repo.as_str(), "tags": tags }), "application/json", link))
}

async fn catalog(registry: &Registry, query: &Query, filter: CatalogFilter) -> ApiResult {
    let (last, n) = pagination(query)?;
    let mut repos = match filter {
        None => registry.catalog(last.as_deref(), n + 1).await?,
        Some(visible) => {
            // Page through the whole list until n + 1 visible names are found, so that pages stay full
            // and `Link` stays right whatever the caller may not see.
            let mut found = Vec::new();
            let mut cursor = last.clone();
            loop {
                let page = registry.catalog(cursor.as_deref(), MAX_PAGE).await?;
                let done = page.len() < MAX_PAGE;
                cursor = page.last().cloned();
                found.extend(page.into_iter().filter(|r| visible(r)));
                if done || found.len() > n {
                    break;
                }
            }
            found.truncate(n + 1);
            found
        }
    };
    let link = if repos.len() > n {
        repos.truncate(n);
        repos.last().map(|l| next_link("/v2/_catalog", n, l, ""))
    } else {
        None
    };
    Ok(json_response(&serde_json::json!({ "repositories": repos }), "application/json", link))
}

async fn referrers(registry: &Registry, repo: &RepoName, subject: &Digest, query: &Query) -> ApiResult {
    let artifact_type = query.get("artifactType").filter(|s| !s.is_empty());
    let (last, n) = pagination(query)?;
    let all = registry.referrers(repo, subject, artifact_type).await?;
    let mut page: Vec<_> =
        all.into_iter().filter(|r| last.as_deref().is_none_or(|l| r.digest.to_string().as_str() > l)).collect();
    let link = if page.len() > n {
        page.truncate(n);
        let extra = artifact_type
            .map(|t| format!("&artifactType={}", form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>()))
            .unwrap_or_default();
        page.last().map(|l| next_link(&format!("/v2/{repo}/referrers/{subject}"), n, &l.digest.to_string(), &extra))
    } else {
        None
    };
    let manifests: Vec<serde_json::Value> = page
        .into_iter()
        .map(|r| {
            let mut d = serde_json::json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = t.into();
            }
            if let Some(a) = r.annotations.and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok()) {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    let mut resp = json_response(&index, media::OCI_INDEX, link);
    if artifact_type.is_some() {
        resp.headers_mut().insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    Ok(resp)
}
