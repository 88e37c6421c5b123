//! A minimal OCI distribution client: one keep-alive HTTP/1.1 connection per [`Conn`], driven by
//! hyper's low-level `client::conn::http1` (no pool, no retries, `TCP_NODELAY` on).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::data::{BlobSpec, ReqBody};
use crate::{Result, err};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCTET: &str = "application/octet-stream";

pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    tx: Option<SendRequest<ReqBody>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let mut c = Conn { addr, host: HeaderValue::from_str(&addr.to_string())?, tx: None };
        c.ensure().await?;
        Ok(c)
    }

    async fn ensure(&mut self) -> Result<&mut SendRequest<ReqBody>> {
        if self.tx.as_ref().is_none_or(|t| t.is_closed()) {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.tx = Some(tx);
        }
        let tx = self.tx.as_mut().expect("connection just ensured");
        if tx.ready().await.is_err() {
            self.tx = None;
            return Box::pin(self.ensure()).await;
        }
        Ok(self.tx.as_mut().expect("connection just ensured"))
    }

    /// Sends one request; the caller must consume the response body before the next call.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        let mut req = Request::builder().method(method).uri(path_and_query).body(body)?;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        for (k, v) in headers {
            h.insert(k.clone(), HeaderValue::from_str(v)?);
        }
        let tx = self.ensure().await?;
        let resp = tx.send_request(req).await.map_err(|e| err(format!("{path_and_query}: {e}")))?;
        Ok(resp)
    }

    /// Sends a request and collects the whole response.
    pub async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        body: ReqBody,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let resp = self.send(method, path_and_query, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    async fn expect(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, &str)],
        body: ReqBody,
        want: StatusCode,
    ) -> Result<(HeaderMap, Bytes)> {
        let what = format!("{method} {path_and_query}");
        let (status, h, b) = self.call(method, path_and_query, headers, body).await?;
        if status != want {
            return Err(err(format!(
                "{what}: expected {want}, got {status}: {}",
                String::from_utf8_lossy(&b[..b.len().min(400)])
            )));
        }
        Ok((h, b))
    }

    // ---- registry operations -------------------------------------------------------------

    pub async fn ping(&mut self) -> Result<StatusCode> {
        Ok(self.call(Method::GET, "/v2/", &[], ReqBody::Empty).await?.0)
    }

    /// `POST /v2/<repo>/blobs/uploads/` → upload location (path and query).
    pub async fn start_upload(&mut self, repo: &str) -> Result<String> {
        let (h, _) = self
            .expect(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[(header::CONTENT_LENGTH, "0")],
                ReqBody::Empty,
                StatusCode::ACCEPTED,
            )
            .await?;
        location(&h)
    }

    /// POST, then one `PUT ?digest=` carrying the whole blob (streamed).
    pub async fn push_monolithic(&mut self, repo: &str, spec: &BlobSpec) -> Result<()> {
        let loc = self.start_upload(repo).await?;
        let len = spec.size.to_string();
        self.expect(
            Method::PUT,
            &with_digest(&loc, &spec.digest),
            &[(header::CONTENT_LENGTH, &len), (header::CONTENT_TYPE, OCTET)],
            ReqBody::Blob(spec.range(0, spec.size)),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// POST, `PATCH` chunks with `Content-Range`, then a closing empty `PUT ?digest=`.
    pub async fn push_chunked(&mut self, repo: &str, spec: &BlobSpec, chunk: u64) -> Result<()> {
        let mut loc = self.start_upload(repo).await?;
        let mut start = 0;
        while start < spec.size {
            let end = (start + chunk).min(spec.size);
            let range = format!("{}-{}", start, end - 1);
            let len = (end - start).to_string();
            let (h, _) = self
                .expect(
                    Method::PATCH,
                    &loc,
                    &[(header::CONTENT_LENGTH, &len), (header::CONTENT_RANGE, &range), (header::CONTENT_TYPE, OCTET)],
                    ReqBody::Blob(spec.range(start, end)),
                    StatusCode::ACCEPTED,
                )
                .await?;
            loc = location(&h)?;
            start = end;
        }
        self.expect(
            Method::PUT,
            &with_digest(&loc, &spec.digest),
            &[(header::CONTENT_LENGTH, "0")],
            ReqBody::Empty,
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// Pushes a small in-memory blob the way `docker push` does: HEAD, then POST + PUT if absent.
    pub async fn push_small(&mut self, repo: &str, digest: &str, data: &Bytes) -> Result<()> {
        if self.head_blob(repo, digest).await? == StatusCode::OK {
            return Ok(());
        }
        let loc = self.start_upload(repo).await?;
        let len = data.len().to_string();
        self.expect(
            Method::PUT,
            &with_digest(&loc, digest),
            &[(header::CONTENT_LENGTH, &len), (header::CONTENT_TYPE, OCTET)],
            ReqBody::full(data.clone()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    pub async fn head_blob(&mut self, repo: &str, digest: &str) -> Result<StatusCode> {
        Ok(self.call(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), &[], ReqBody::Empty).await?.0)
    }

    /// `GET` a blob, discarding the bytes; returns (bytes received, Docker-Content-Digest).
    pub async fn pull_blob(&mut self, repo: &str, digest: &str) -> Result<(u64, Option<String>)> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(Method::GET, &path, &[], ReqBody::Empty).await?;
        if resp.status() != StatusCode::OK {
            return Err(err(format!("GET {path}: {}", resp.status())));
        }
        let dcd = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame?.into_data() {
                n += d.len() as u64;
            }
        }
        Ok((n, dcd))
    }

    pub async fn put_manifest(&mut self, repo: &str, reference: &str, manifest: &Bytes) -> Result<()> {
        let len = manifest.len().to_string();
        self.expect(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[(header::CONTENT_TYPE, OCI_MANIFEST), (header::CONTENT_LENGTH, &len)],
            ReqBody::full(manifest.clone()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    pub async fn get_manifest(&mut self, repo: &str, reference: &str) -> Result<Bytes> {
        let (_, b) = self
            .expect(
                Method::GET,
                &format!("/v2/{repo}/manifests/{reference}"),
                &[(header::ACCEPT, OCI_MANIFEST)],
                ReqBody::Empty,
                StatusCode::OK,
            )
            .await?;
        Ok(b)
    }

    /// Lists every tag of `repo`, following `Link: <…>; rel="next"` pages if the server paginates.
    /// Returns (number of tags, number of requests).
    pub async fn list_tags(&mut self, repo: &str) -> Result<(usize, usize)> {
        let mut next = Some(format!("/v2/{repo}/tags/list"));
        let (mut tags, mut requests) = (0, 0);
        while let Some(path) = next.take() {
            let (h, b) = self.expect(Method::GET, &path, &[], ReqBody::Empty, StatusCode::OK).await?;
            requests += 1;
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            tags += v.get("tags").and_then(|t| t.as_array()).map_or(0, |a| a.len());
            if let Some(link) = h.get(header::LINK).and_then(|v| v.to_str().ok())
                && link.contains("rel=\"next\"")
                && let (Some(s), Some(e)) = (link.find('<'), link.find('>'))
                && s < e
            {
                next = Some(strip_origin(&link[s + 1..e]).to_string());
            }
        }
        Ok((tags, requests))
    }
}

/// Size of [`RawConn`]'s receive buffer: each `read` may take up to this much from the socket.
const RAW_READ: usize = 4 << 20;

/// The largest response head [`RawConn`] accepts.
const RAW_MAX_HEAD: usize = 64 * 1024;

/// A download-only HTTP/1.1 client on one keep-alive `TcpStream`, for the pull rows: the body is read
/// with large `read`s into one reused buffer and discarded, so the client spends as little CPU per
/// byte as a client can (one copy out of the kernel, no frames, no allocation), and the rows measure
/// the servers rather than the client. Only `Content-Length` responses are accepted (both servers
/// send it for blobs); anything else is an error, never a silent mis-count.
pub struct RawConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// What a [`RawConn::get`] received.
pub struct RawResponse {
    pub status: u16,
    /// Body bytes received (and discarded).
    pub body_len: u64,
    pub docker_content_digest: Option<String>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Result<RawConn> {
        let mut c = RawConn { addr, stream: None, buf: vec![0; RAW_READ] };
        c.stream().await?;
        Ok(c)
    }

    async fn stream(&mut self) -> Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("stream just connected"))
    }

    /// `GET path`, reading and discarding the body.
    pub async fn get(&mut self, path: &str) -> Result<RawResponse> {
        let r = self.get_once(path).await;
        if r.is_err() {
            // Never reuse a connection left in an unknown state.
            self.stream = None;
        }
        r
    }

    async fn get_once(&mut self, path: &str) -> Result<RawResponse> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n", self.addr);
        let mut buf = std::mem::take(&mut self.buf);
        let result = async {
            let stream = self.stream().await?;
            stream.write_all(req.as_bytes()).await?;
            // The head, and whatever part of the body came with it.
            let mut have = 0;
            let head_end = loop {
                if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if have >= RAW_MAX_HEAD {
                    return Err(err(format!("GET {path}: response head larger than {RAW_MAX_HEAD} bytes")));
                }
                let n = stream.read(&mut buf[have..]).await?;
                if n == 0 {
                    return Err(err(format!("GET {path}: connection closed before the response head")));
                }
                have += n;
            };
            let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| err("response head is not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| err(format!("GET {path}: malformed status line")))?;
            let (mut length, mut dcd, mut close) = (None, None, false);
            for line in lines {
                let Some((k, v)) = line.split_once(':') else { continue };
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.parse::<u64>().ok(),
                    "docker-content-digest" => dcd = Some(v.to_string()),
                    "transfer-encoding" => {
                        return Err(err(format!("GET {path}: Transfer-Encoding {v} is not supported here")));
                    }
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
            let length = length.ok_or_else(|| err(format!("GET {path}: {status} without Content-Length")))?;
            let mut got = (have - head_end) as u64;
            while got < length {
                let want = ((length - got) as usize).min(buf.len());
                let n = stream.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(err(format!("GET {path}: connection closed after {got} of {length} bytes")));
                }
                got += n as u64;
            }
            if got > length {
                return Err(err(format!("GET {path}: {got} bytes received for a Content-Length of {length}")));
            }
            Ok((RawResponse { status, body_len: got, docker_content_digest: dcd }, close))
        }
        .await;
        self.buf = buf;
        let (resp, close) = result?;
        if close {
            self.stream = None;
        }
        Ok(resp)
    }

    /// `GET` a blob that must be answered 200, discarding the bytes.
    pub async fn pull_blob(&mut self, repo: &str, digest: &str) -> Result<RawResponse> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self.get(&path).await?;
        if r.status != 200 {
            return Err(err(format!("GET {path}: {}", r.status)));
        }
        Ok(r)
    }
}

/// The `Location` header as a path-and-query (distribution answers with an absolute URL).
fn location(h: &HeaderMap) -> Result<String> {
    let loc = h.get(header::LOCATION).ok_or_else(|| err("response without Location"))?.to_str()?;
    Ok(strip_origin(loc).to_string())
}

fn strip_origin(url: &str) -> &str {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            return rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    url
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={}", digest.replace(':', "%3A"))
}

/// An OCI image manifest referencing one config and the given layers.
pub fn manifest(config: (&str, u64), layers: &[(&str, u64)]) -> Bytes {
    let layers: Vec<_> =
        layers.iter().map(|(d, s)| serde_json::json!({"mediaType": OCI_LAYER, "digest": d, "size": s})).collect();
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    });
    Bytes::from(serde_json::to_vec(&m).expect("manifest serialises"))
}

/// A small, plausible image config, made unique by `id`.
pub fn config_blob(id: u64, layer_diff: &str) -> Bytes {
    let c = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [format!("BENCH_ID={id}")], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_diff]},
    });
    Bytes::from(serde_json::to_vec(&c).expect("config serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_stripped() {
        assert_eq!(
            strip_origin("http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1"),
            "/v2/a/blobs/uploads/x?_state=1"
        );
        assert_eq!(strip_origin("/v2/a/blobs/uploads/x"), "/v2/a/blobs/uploads/x");
        assert_eq!(with_digest("/u?x=1", "sha256:ab"), "/u?x=1&digest=sha256%3Aab");
        assert_eq!(with_digest("/u", "sha256:ab"), "/u?digest=sha256%3Aab");
    }
}
