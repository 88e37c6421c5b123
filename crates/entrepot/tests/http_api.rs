//! The OCI Distribution API over HTTP, endpoint by endpoint and error by error, against a real
//! `entrepot serve` process on an ephemeral port.

mod support;

use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};
use support::Server;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn sha256(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    format!("sha256:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn sha512(data: &[u8]) -> String {
    let h = Sha512::digest(data);
    format!("sha512:{}", h.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

struct Api {
    server: Server,
    http: Http,
    _auth_dir: Option<tempfile::TempDir>,
}

impl Api {
    fn start() -> Api {
        Api::start_with(&[])
    }

    /// With `ENTREPOT_TEST_AUTH=token` (CI runs this suite both ways), the server runs with
    /// `--htpasswd` and every request carries a bearer token fetched from the token endpoint, as clients
    /// do it.
    fn start_with(args: &[&str]) -> Api {
        if std::env::var("ENTREPOT_TEST_AUTH").as_deref() != Ok("token") {
            return Api { server: Server::start_with(args), http: Http::new(None), _auth_dir: None };
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let mut child = std::process::Command::new(support::entrepot_bin())
            .args(["user", "add", "tester", "--cost", "4", "--htpasswd"])
            .arg(&htpasswd)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("user add");
        {
            use std::io::Write;
            writeln!(child.stdin.take().expect("stdin"), "tester-pw").expect("password");
        }
        assert!(child.wait().expect("user add").success());
        // The tester is an admin, so that a mount without `from` (admin-only with auth on) still works.
        let config = dir.path().join("auth.toml");
        std::fs::write(&config, "[auth.policy]\nadmins = [\"tester\"]\n").expect("config");
        let mut all: Vec<&str> = vec!["--htpasswd", htpasswd.to_str().expect("utf8")];
        if !args.contains(&"--config") {
            all.extend(["--config", config.to_str().expect("utf8")]);
        }
        all.extend_from_slice(args);
        let server = Server::start_with(&all);
        let auth = TokenAuth { base: server.url(), tokens: Default::default() };
        Api { server, http: Http::new(Some(std::sync::Arc::new(auth))), _auth_dir: Some(dir) }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.server.url(), path) }
    }

    async fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).await
    }

    async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).await.send().await.expect("GET")
    }

    async fn head(&self, path: &str) -> Response {
        self.http.head(self.url(path)).await.send().await.expect("HEAD")
    }

    async fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).await.send().await.expect("DELETE")
    }

    /// Monolithic upload; returns the digest.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self
            .http
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
            .await
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), StatusCode::CREATED, "push blob: {}", r.text().await.unwrap_or_default());
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .await
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Pushes a config and a layer, then an image manifest under `reference`; returns (manifest bytes, digest).
    async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (Vec<u8>, String) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer-of-{seed}");
        let cd = self.push_blob(repo, config.as_bytes()).await;
        let ld = self.push_blob(repo, layer.as_bytes()).await;
        let m = image_manifest(&cd, config.len(), &ld, layer.len(), None);
        let r = self.put_manifest(repo, reference, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap_or_default());
        let d = sha256(&m);
        (m, d)
    }
}

/// Fetches and caches bearer tokens the way a registry client does: the realm from the challenge of
/// `GET /v2/`, one token per repository (with the `from` repository of a mount).
struct TokenAuth {
    base: String,
    tokens: std::sync::Mutex<std::collections::HashMap<String, Option<String>>>,
}

impl TokenAuth {
    /// The scopes a request to `url` needs.
    fn scopes(url: &str) -> Vec<String> {
        let path_query = url.split_once("://").map_or(url, |(_, r)| r.split_once('/').map_or("", |(_, p)| p));
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        let Some(rest) = path.strip_prefix("v2/") else { return vec![] };
        if rest.is_empty() {
            return vec![];
        }
        if rest.starts_with("_catalog") {
            return vec!["registry:catalog:*".into()];
        }
        let cut = ["/blobs/", "/manifests/", "/tags/", "/referrers/"].iter().filter_map(|m| rest.rfind(m)).max();
        let Some(cut) = cut else { return vec![] };
        let mut scopes = vec![format!("repository:{}:pull,push,delete", &rest[..cut])];
        for (k, v) in form_pairs(query) {
            if k == "from" {
                scopes.push(format!("repository:{v}:pull"));
            }
        }
        scopes
    }

    async fn token_for(&self, client: &Client, url: &str) -> Option<String> {
        let scopes = Self::scopes(url);
        let key = scopes.join(" ");
        if let Some(t) = self.tokens.lock().expect("lock").get(&key) {
            return t.clone();
        }
        let challenge = client.get(format!("{}/v2/", self.base)).send().await.expect("challenge");
        let header =
            challenge.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let param = |name: &str| {
            header.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string()
        };
        let mut query = vec![("service".to_string(), param("service"))];
        query.extend(scopes.iter().map(|s| ("scope".to_string(), s.clone())));
        let qs: String = query.iter().map(|(k, v)| format!("{k}={}", pct(v))).collect::<Vec<_>>().join("&");
        let req = client.get(format!("{}?{qs}", param("realm"))).basic_auth("tester", Some("tester-pw"));
        let r = req.send().await.expect("token request");
        // An invalid name in a scope (tests of invalid names) gets no token: the request goes without one.
        let token = if r.status().is_success() {
            let body: Value = r.json().await.expect("token json");
            body["token"].as_str().map(String::from)
        } else {
            None
        };
        self.tokens.lock().expect("lock").insert(key, token.clone());
        token
    }
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%2f", "/")))
        .collect()
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The test's HTTP client: plain, or with a bearer token on every request in token mode.
struct Http {
    client: Client,
    auth: Option<std::sync::Arc<TokenAuth>>,
}

impl Http {
    fn new(auth: Option<std::sync::Arc<TokenAuth>>) -> Http {
        Http { client: support::http_client(), auth }
    }

    /// A fresh connection pool (after a server restart), same credentials.
    fn reset(&mut self) {
        self.client = support::http_client();
    }

    async fn request(&self, method: Method, url: String) -> reqwest::RequestBuilder {
        let token = match &self.auth {
            Some(a) => a.token_for(&self.client, &url).await,
            None => None,
        };
        let req = self.client.request(method, url);
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::GET, url).await
    }
    async fn head(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::HEAD, url).await
    }
    async fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::POST, url).await
    }
    async fn put(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::PUT, url).await
    }
    async fn patch(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::PATCH, url).await
    }
    async fn delete(&self, url: String) -> reqwest::RequestBuilder {
        self.request(Method::DELETE, url).await
    }
}

fn image_manifest(config: &str, config_len: usize, layer: &str, layer_len: usize, extra: Option<Value>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_len},
        "layers": [{"mediaType": LAYER, "digest": layer, "size": layer_len}],
    });
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    serde_json::to_vec_pretty(&m).expect("json")
}

async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(ct.starts_with("application/json"), "error content type {ct}");
    let code = body["errors"][0]["code"].as_str().unwrap_or_else(|| panic!("no error envelope: {body}")).to_string();
    assert!(body["errors"][0]["message"].is_string(), "message in {body}");
    (status, code)
}

/// A GET sent byte for byte as given (no URL normalisation); returns the status and the body.
fn raw_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

// ---------------------------------------------------------------------------------------------- base

#[tokio::test]
async fn api_version_endpoint() {
    let api = Api::start();
    let r = api.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
    let r = api.req(Method::POST, "/v2/").await.send().await.expect("POST");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = api.get("/v2/no/such/endpoint").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn plain_port_answers_a_tls_client_hello_with_http_400() {
    use std::io::{Read, Write};
    let api = Api::start();
    // The registry's own listener (in scale-out mode an instance's, not the load balancer's).
    let mut s = std::net::TcpStream::connect(api.server.backend_addr()).expect("connect");
    // The start of a TLS 1.2 ClientHello record.
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]).expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .expect("content length");
    assert_eq!(len, body.len());
}

// ---------------------------------------------------------------------------------------------- blobs

#[tokio::test]
async fn blob_get_head_range_delete() {
    let api = Api::start();
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let d = api.push_blob("team/app", &data).await;
    let path = format!("/v2/team/app/blobs/{d}");

    let r = api.head(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "1000");
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(r.bytes().await.expect("body").len(), 0);

    let r = api.get(&path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[..]);

    let r = api.http.get(api.url(&path)).await.header("range", "bytes=10-19").send().await.expect("range");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/1000");
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[10..20]);

    let r = api.http.get(api.url(&path)).await.header("range", "bytes=-5").send().await.expect("suffix");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[995..]);

    let r = api.http.get(api.url(&path)).await.header("range", "bytes=1000-").send().await.expect("416");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */1000");
    let declared: usize = header(&r, "content-length").parse().expect("content-length");
    assert_eq!(r.bytes().await.expect("body").len(), declared);

    // The blob is visible only in the repository it was pushed to.
    assert_eq!(error_code(api.get(&format!("/v2/team/other/blobs/{d}")).await).await.1, "BLOB_UNKNOWN");

    let r = api.delete(&path).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(error_code(api.get(&path).await).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
    assert_eq!(error_code(api.delete(&path).await).await, (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into()));
}

#[tokio::test]
async fn malformed_digests_are_400_never_500() {
    let api = Api::start();
    for bad in ["sha256:bogus", "sha256:ABC", "md5:abc", "sha256", &format!("sha256:{}", "g".repeat(64))] {
        let mut paths = vec![format!("/v2/a/blobs/{bad}"), format!("/v2/a/referrers/{bad}")];
        if bad.contains(':') {
            // Without a colon it is a (valid) tag.
            paths.push(format!("/v2/a/manifests/{bad}"));
        }
        for path in paths {
            let (status, code) = error_code(api.get(&path).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            assert_eq!(code, "DIGEST_INVALID", "{path}");
        }
    }
    let r =
        api.http.post(api.url("/v2/a/blobs/uploads/?digest=sha256:nope")).await.body("x").send().await.expect("post");
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
}

#[tokio::test]
async fn names_and_tags_are_validated() {
    let api = Api::start();
    let long = "a".repeat(256);
    for name in ["A/b", "a//b", "a/../b", "a/./b", "-a", "a%2fb", "a%2F..%2Fb", "a/b_", long.as_str()] {
        // Sent raw: an HTTP client library would normalise the dots away.
        let (status, body) = raw_get(&api.server.addr, &format!("/v2/{name}/tags/list"));
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("\"NAME_INVALID\""), "{name}: {body}");
    }
    let ok_long = "a".repeat(255);
    assert_eq!(error_code(api.get(&format!("/v2/{ok_long}/tags/list")).await).await.1, "NAME_UNKNOWN");
    let long_tag = "t".repeat(129);
    let (status, code) = error_code(api.get(&format!("/v2/a/manifests/{long_tag}")).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "TAG_INVALID"));
    let (status, code) = error_code(api.put_manifest("a", ".hidden", OCI_MANIFEST, b"{}").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::BAD_REQUEST, "TAG_INVALID"));
}

// ---------------------------------------------------------------------------------------------- uploads

#[tokio::test]
async fn chunked_upload_with_recovery() {
    let api = Api::start();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let d = sha256(&data);

    let r = api.req(Method::POST, "/v2/team/app/blobs/uploads/").await.send().await.expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/team/app/blobs/uploads/"), "{loc}");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    assert_eq!(header(&r, "range"), "0-0");
    assert_eq!(header(&r, "content-length"), "0");

    let patch = async |range: &str, body: &[u8]| {
        api.http
            .patch(api.url(&loc))
            .await
            .header("content-type", "application/octet-stream")
            .header("content-range", range.to_string())
            .body(body.to_vec())
            .send()
            .await
    };
    let r = patch("0-99999", &data[..100_000]).await.expect("patch 1");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-99999");
    assert!(header(&r, "location").starts_with("/v2/team/app/blobs/uploads/"));

    // Out of order: a gap, and an overlap.
    let r = patch("150000-199999", &data[150_000..200_000]).await.expect("gap");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = patch("50000-149999", &data[50_000..150_000]).await.expect("overlap");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // The client recovers by asking where the upload stands.
    let r = api.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-99999");
    assert_eq!(header(&r, "location"), loc);

    // A streamed PATCH (no Content-Range) appends.
    let r = api.http.patch(api.url(&loc)).await.body(data[100_000..250_000].to_vec()).send().await.expect("stream");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-249999");

    // The last chunk rides on the PUT.
    let r = api
        .http
        .put(api.url(&format!("{loc}?digest={d}")))
        .await
        .header("content-range", "250000-299999")
        .body(data[250_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let got = api.get(&format!("/v2/team/app/blobs/{d}")).await.bytes().await.expect("blob");
    assert_eq!(got.as_ref(), &data[..]);
    // The session is gone once completed.
    assert_eq!(error_code(api.get(&loc).await).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
}

#[tokio::test]
async fn put_without_body_digest_mismatch_and_cancel() {
    let api = Api::start();
    let start = || async {
        let r = api.req(Method::POST, "/v2/up/app/blobs/uploads/").await.send().await.expect("POST");
        header(&r, "location")
    };
    // PATCH then an empty PUT.
    let loc = start().await;
    api.http.patch(api.url(&loc)).await.body("abc").send().await.expect("patch");
    let r = api.http.put(api.url(&format!("{loc}?digest={}", sha256(b"abc")))).await.send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), sha256(b"abc"));

    // Wrong digest: refused, and nothing becomes visible.
    let loc = start().await;
    api.http.patch(api.url(&loc)).await.body("xyz").send().await.expect("patch");
    let wrong = sha256(b"not xyz");
    let r = api.http.put(api.url(&format!("{loc}?digest={wrong}"))).await.send().await.expect("put");
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    assert_eq!(api.head(&format!("/v2/up/app/blobs/{wrong}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.head(&format!("/v2/up/app/blobs/{}", sha256(b"xyz"))).await.status(), StatusCode::NOT_FOUND);

    // PUT without a digest.
    let loc = start().await;
    let r = api.http.put(api.url(&loc)).await.send().await.expect("put");
    assert_eq!(error_code(r).await.1, "DIGEST_INVALID");

    // Cancel.
    let r = api.delete(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(error_code(api.get(&loc).await).await, (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into()));
    let r = api.http.patch(api.url(&loc)).await.body("x").send().await.expect("patch");
    assert_eq!(error_code(r).await.1, "BLOB_UPLOAD_UNKNOWN");

    // A session belongs to its repository.
    let loc = start().await;
    let other = loc.replace("/v2/up/app/", "/v2/up/other/");
    assert_eq!(error_code(api.get(&other).await).await.1, "BLOB_UPLOAD_UNKNOWN");
    // An id that is not even well-formed.
    assert_eq!(error_code(api.get("/v2/up/app/blobs/uploads/..%2f..").await).await.1, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn sha512_digests() {
    let api = Api::start();
    let data = b"sha512 content".to_vec();
    let d = sha512(&data);
    // Monolithic.
    let r = api
        .http
        .post(api.url(&format!("/v2/s/blobs/uploads/?digest={d}")))
        .await
        .body(data.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.get(&format!("/v2/s/blobs/{d}")).await;
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[..]);
    // Session with digest-algorithm.
    let r = api.req(Method::POST, "/v2/s/blobs/uploads/?digest-algorithm=sha512").await.send().await.expect("post");
    let loc = header(&r, "location");
    let data2 = b"second sha512 blob".to_vec();
    api.http.patch(api.url(&loc)).await.body(data2.clone()).send().await.expect("patch");
    let r = api.http.put(api.url(&format!("{loc}?digest={}", sha512(&data2)))).await.send().await.expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    // Unknown algorithm.
    let r = api.req(Method::POST, "/v2/s/blobs/uploads/?digest-algorithm=md5").await.send().await.expect("post");
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
    // A manifest addressed by a sha512 digest.
    let cd = api.push_blob("s", b"{}").await;
    let m = image_manifest(&cd, 2, &cd, 2, None);
    let md = sha512(&m);
    let r = api.put_manifest("s", &md, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), md);
    assert_eq!(api.get(&format!("/v2/s/manifests/{md}")).await.bytes().await.expect("m").as_ref(), &m[..]);
}

#[tokio::test]
async fn upload_session_survives_a_restart() {
    let mut api = Api::start();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let r = api.req(Method::POST, "/v2/r/app/blobs/uploads/").await.send().await.expect("post");
    let loc = header(&r, "location");
    let r = api
        .http
        .patch(api.url(&loc))
        .await
        .header("content-range", "0-99999")
        .body(data[..100_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    api.server.restart();
    api.http.reset();
    let r = api.get(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-99999");
    let r = api
        .http
        .put(api.url(&format!("{loc}?digest={}", sha256(&data))))
        .await
        .header("content-range", "100000-199999")
        .body(data[100_000..].to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let got = api.get(&format!("/v2/r/app/blobs/{}", sha256(&data))).await.bytes().await.expect("get");
    assert_eq!(got.as_ref(), &data[..]);
}

#[tokio::test]
async fn abandoned_upload_sessions_expire() {
    let api = Api::start_with(&["--upload-expiry-secs", "1"]);
    let r = api.req(Method::POST, "/v2/x/blobs/uploads/").await.send().await.expect("post");
    let loc = header(&r, "location");
    api.http.patch(api.url(&loc)).await.body("partial").send().await.expect("patch");
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if api.get(&loc).await.status() == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
    }
    assert!(gone, "session still there");
    // DATA_DIR/uploads, or in scale-out mode the uploads staged in S3. The session goes first, then its
    // bytes (on S3 a few requests later): give those a moment.
    let mut staged = api.server.staged_uploads();
    for _ in 0..50 {
        if staged == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        staged = api.server.staged_uploads();
    }
    assert_eq!(staged, 0, "staged bytes removed with the session");
}

#[tokio::test]
async fn cross_repository_mount() {
    let api = Api::start();
    let d = api.push_blob("src/app", b"shared layer").await;
    let r = api
        .req(Method::POST, &format!("/v2/dst/app/blobs/uploads/?mount={d}&from=src/app"))
        .await
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/app/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(api.get(&format!("/v2/dst/app/blobs/{d}")).await.bytes().await.expect("b").as_ref(), b"shared layer");

    // Not in `from`: a normal upload session instead.
    let r = api
        .req(Method::POST, &format!("/v2/dst/two/blobs/uploads/?mount={d}&from=nowhere/app"))
        .await
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/dst/two/blobs/uploads/"));

    // Without `from`: any blob the registry holds (the default).
    let r =
        api.req(Method::POST, &format!("/v2/dst/three/blobs/uploads/?mount={d}")).await.send().await.expect("mount");
    assert_eq!(r.status(), StatusCode::CREATED);

    // An unknown digest: a session.
    let r = api
        .req(Method::POST, &format!("/v2/dst/four/blobs/uploads/?mount={}&from=src/app", sha256(b"nope")))
        .await
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn mount_without_from_can_be_disabled() {
    let api = Api::start_with(&["--mount-without-from", "false"]);
    let d = api.push_blob("src/app", b"shared layer").await;
    let r = api.req(Method::POST, &format!("/v2/dst/app/blobs/uploads/?mount={d}")).await.send().await.expect("mount");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------------- manifests

#[tokio::test]
async fn manifest_put_get_head_byte_exact() {
    let api = Api::start();
    let cd = api.push_blob("team/app", b"{\"os\":\"linux\"}").await;
    let ld = api.push_blob("team/app", b"layer bytes").await;
    // Odd formatting must survive byte for byte.
    let m = format!(
        "{{\n  \"schemaVersion\" : 2,\t\"mediaType\": \"{OCI_MANIFEST}\",\n\"config\": {{\"mediaType\": \"{OCI_CONFIG}\", \"digest\": \"{cd}\", \"size\": 14}},\n\"layers\": [{{\"mediaType\": \"{LAYER}\", \"digest\": \"{ld}\", \"size\": 11}}]   }}\n\n"
    );
    let d = sha256(m.as_bytes());
    let r = api.put_manifest("team/app", "1.0", OCI_MANIFEST, m.as_bytes()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/team/app/manifests/{d}"));

    for reference in ["1.0", d.as_str()] {
        let r = api.get(&format!("/v2/team/app/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.expect("body").as_ref(), m.as_bytes());
        let r = api.head(&format!("/v2/team/app/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), m.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), d);
    }
    let (status, code) = error_code(api.get("/v2/team/app/manifests/2.0").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"));
    assert_eq!(api.head("/v2/team/app/manifests/2.0").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn manifest_push_by_digest_with_tags() {
    let api = Api::start();
    let cd = api.push_blob("t/app", b"{}").await;
    let m = image_manifest(&cd, 2, &cd, 2, None);
    let d = sha256(&m);
    let r = api.put_manifest("t/app", &format!("{d}?tag=v1&tag=latest"), OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut tags: Vec<String> =
        r.headers().get_all("oci-tag").iter().filter_map(|v| v.to_str().ok().map(String::from)).collect();
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);
    let list: Value = api.get("/v2/t/app/tags/list").await.json().await.expect("json");
    assert_eq!(list["tags"], json!(["latest", "v1"]));

    // The digest in the URL must match the content.
    let r = api.put_manifest("t/app", &sha256(b"other"), OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into()));
}

#[tokio::test]
async fn manifest_validation_errors() {
    let api = Api::start();
    let cd = api.push_blob("v/app", b"{}").await;
    let missing = sha256(b"never pushed");
    let m = image_manifest(&cd, 2, &missing, 5, None);
    let r = api.put_manifest("v/app", "x", OCI_MANIFEST, &m).await;
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["detail"]["digest"], missing);
    assert_eq!(api.get("/v2/v/app/manifests/x").await.status(), StatusCode::NOT_FOUND, "nothing stored");

    // Content-Type must match mediaType.
    let ok = image_manifest(&cd, 2, &cd, 2, None);
    let r = api.put_manifest("v/app", "x", OCI_INDEX, &ok).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()));
    // Not JSON; wrong shape.
    for bad in
        [&b"not json"[..], b"[]", br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#]
    {
        let r = api.put_manifest("v/app", "x", OCI_MANIFEST, bad).await;
        assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_INVALID".into()));
    }
    // Schema 1 is refused with a message that says so.
    let s1 = br#"{"schemaVersion":1,"name":"v/app","tag":"x","fsLayers":[],"history":[]}"#;
    let r = api.put_manifest("v/app", "x", "application/vnd.docker.distribution.manifest.v1+prettyjws", s1).await;
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").contains("schema 1"), "{body}");
}

#[tokio::test]
async fn manifest_size_limit() {
    let api = Api::start_with(&["--max-manifest-bytes", "1000"]);
    let cd = api.push_blob("big/app", b"{}").await;
    let pad = "x".repeat(2000);
    let m = image_manifest(&cd, 2, &cd, 2, Some(json!({"annotations": {"pad": pad}})));
    let r = api.put_manifest("big/app", "x", OCI_MANIFEST, &m).await;
    assert_eq!(error_code(r).await, (StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID".into()));
    let small = image_manifest(&cd, 2, &cd, 2, None);
    assert_eq!(api.put_manifest("big/app", "x", OCI_MANIFEST, &small).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn indexes_and_docker_types() {
    let api = Api::start();
    let (m1, d1) = api.push_image("multi/app", "amd64", "a").await;
    let (_, d2) = api.push_image("multi/app", "arm64", "b").await;
    let index = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": d2, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}
        ]
    });
    let ib = serde_json::to_vec(&index).expect("json");
    let r = api.put_manifest("multi/app", "latest", OCI_INDEX, &ib).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.get("/v2/multi/app/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);

    // A child that is not there.
    let sparse = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"absent"), "size": 1}]});
    let sb = serde_json::to_vec(&sparse).expect("json");
    let r = api.put_manifest("multi/app", "sparse", OCI_INDEX, &sb).await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into()));

    // Docker schema 2 and manifest list.
    let cd = api.push_blob("docker/app", b"{\"os\":\"linux\"}").await;
    let ld = api.push_blob("docker/app", b"gzip layer").await;
    let dm = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": 14},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": 10}]});
    let dmb = serde_json::to_vec(&dm).expect("json");
    assert_eq!(api.put_manifest("docker/app", "v2", DOCKER_MANIFEST, &dmb).await.status(), StatusCode::CREATED);
    let dl = json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256(&dmb), "size": dmb.len(), "platform": {"os": "linux", "architecture": "amd64"}}]});
    let dlb = serde_json::to_vec(&dl).expect("json");
    assert_eq!(api.put_manifest("docker/app", "list", DOCKER_LIST, &dlb).await.status(), StatusCode::CREATED);
    let r = api.get("/v2/docker/app/manifests/list").await;
    assert_eq!(header(&r, "content-type"), DOCKER_LIST);
    assert_eq!(r.bytes().await.expect("b").as_ref(), &dlb[..]);
}

#[tokio::test]
async fn sparse_indexes_when_allowed() {
    let api = Api::start_with(&["--allow-sparse-index"]);
    let sparse = json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"absent"), "size": 1}]});
    let r = api.put_manifest("multi/app", "sparse", OCI_INDEX, &serde_json::to_vec(&sparse).expect("json")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

// ---------------------------------------------------------------------------------------------- referrers

#[tokio::test]
async fn subject_and_referrers() {
    let api = Api::start();
    let (subject_bytes, subject) = api.push_image("ref/app", "v1", "s").await;
    let empty = api.push_blob("ref/app", b"{}").await;
    let mut referrers = Vec::new();
    for (i, at) in ["application/vnd.example.sbom", "application/vnd.example.sig", "application/vnd.example.sig"]
        .iter()
        .enumerate()
    {
        let art = api.push_blob("ref/app", format!("artifact {i}").as_bytes()).await;
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": at,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": art, "size": format!("artifact {i}").len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_bytes.len()},
            "annotations": {"org.example.n": i.to_string()}});
        let mb = serde_json::to_vec(&m).expect("json");
        let md = sha256(&mb);
        let r = api.put_manifest("ref/app", &md, OCI_MANIFEST, &mb).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), subject);
        referrers.push((md, mb.len(), at.to_string()));
    }

    let r = api.get(&format!("/v2/ref/app/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let idx: Value = r.json().await.expect("json");
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    let list = idx["manifests"].as_array().expect("manifests");
    assert_eq!(list.len(), 3);
    for (d, size, at) in &referrers {
        let entry = list.iter().find(|e| e["digest"] == *d).expect("listed");
        assert_eq!(entry["size"], *size);
        assert_eq!(entry["artifactType"], *at);
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        assert!(entry["annotations"]["org.example.n"].is_string());
    }

    let r = api.get(&format!("/v2/ref/app/referrers/{subject}?artifactType=application/vnd.example.sig")).await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let idx: Value = r.json().await.expect("json");
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(2));

    // Pagination.
    let r = api.get(&format!("/v2/ref/app/referrers/{subject}?n=2")).await;
    let link = header(&r, "link");
    let idx: Value = r.json().await.expect("json");
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(2));
    let next = link.trim_start_matches('<').split('>').next().expect("link target").to_string();
    assert!(link.ends_with("rel=\"next\""), "{link}");
    let idx: Value = api.get(&next).await.json().await.expect("json");
    assert_eq!(idx["manifests"].as_array().map(Vec::len), Some(1));

    // None: an empty index, never 404.
    let r = api.get(&format!("/v2/ref/app/referrers/{}", sha256(b"no such subject"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let idx: Value = r.json().await.expect("json");
    assert_eq!(idx["manifests"], json!([]));
    let r = api.get(&format!("/v2/no/repo/referrers/{}", sha256(b"x"))).await;
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------- listings

#[tokio::test]
async fn tags_list_and_catalog_pagination() {
    let api = Api::start();
    let cd = api.push_blob("list/app", b"{}").await;
    let m = image_manifest(&cd, 2, &cd, 2, None);
    let tags = ["v10", "v2", "latest", "A", "v1", "_x"];
    for t in tags {
        assert_eq!(api.put_manifest("list/app", t, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    }
    let mut sorted: Vec<&str> = tags.to_vec();
    sorted.sort();
    let r = api.get("/v2/list/app/tags/list").await;
    assert!(r.headers().get("link").is_none());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["name"], "list/app");
    assert_eq!(body["tags"], json!(sorted));

    // Walk the pages.
    let mut seen = Vec::new();
    let mut next = Some("/v2/list/app/tags/list?n=4".to_string());
    while let Some(path) = next.take() {
        let r = api.get(&path).await;
        let link = header(&r, "link");
        let body: Value = r.json().await.expect("json");
        seen.extend(body["tags"].as_array().expect("tags").iter().map(|t| t.as_str().unwrap_or("").to_string()));
        if !link.is_empty() {
            next = Some(link.trim_start_matches('<').split('>').next().unwrap_or("").to_string());
        }
    }
    assert_eq!(seen, sorted);

    let body: Value = api.get("/v2/list/app/tags/list?n=2&last=v1").await.json().await.expect("json");
    assert_eq!(body["tags"], json!(["v10", "v2"]));
    let body: Value = api.get("/v2/list/app/tags/list?n=0").await.json().await.expect("json");
    assert_eq!(body["tags"], json!([]));
    let r = api.get("/v2/list/app/tags/list?n=abc").await;
    assert_eq!(error_code(r).await, (StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID".into()));
    let r = api.get("/v2/list/nothing/tags/list").await;
    assert_eq!(error_code(r).await, (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into()));

    for repo in ["b/one", "a/two", "c/three"] {
        api.push_blob(repo, b"x").await;
    }
    let body: Value = api.get("/v2/_catalog").await.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["a/two", "b/one", "c/three", "list/app"]));
    let r = api.get("/v2/_catalog?n=2").await;
    assert_eq!(header(&r, "link"), "</v2/_catalog?n=2&last=b%2Fone>; rel=\"next\"");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["a/two", "b/one"]));
    let body: Value = api.get("/v2/_catalog?n=2&last=b%2Fone").await.json().await.expect("json");
    assert_eq!(body["repositories"], json!(["c/three", "list/app"]));
}

// ---------------------------------------------------------------------------------------------- deletes

#[tokio::test]
async fn delete_tags_and_manifests() {
    let api = Api::start();
    let (_, d) = api.push_image("del/app", "v1", "x").await;
    let cd = sha256(br#"{"architecture":"amd64","os":"linux","seed":"x"}"#);
    let m = api.get(&format!("/v2/del/app/manifests/{d}")).await.bytes().await.expect("m");
    for t in ["v2", "v3"] {
        assert_eq!(api.put_manifest("del/app", t, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    }
    // Deleting a tag removes only that tag.
    assert_eq!(api.delete("/v2/del/app/manifests/v1").await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.get("/v2/del/app/manifests/v1").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v2/del/app/manifests/v2").await.status(), StatusCode::OK);
    assert_eq!(api.get(&format!("/v2/del/app/manifests/{d}")).await.status(), StatusCode::OK);
    assert_eq!(error_code(api.delete("/v2/del/app/manifests/v1").await).await.1, "MANIFEST_UNKNOWN");

    // Deleting by digest removes the manifest and every tag on it, not its blobs.
    assert_eq!(api.delete(&format!("/v2/del/app/manifests/{d}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.get(&format!("/v2/del/app/manifests/{d}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.get("/v2/del/app/manifests/v3").await.status(), StatusCode::NOT_FOUND);
    let body: Value = api.get("/v2/del/app/tags/list").await.json().await.expect("json");
    assert_eq!(body["tags"], json!([]));
    assert_eq!(api.head(&format!("/v2/del/app/blobs/{cd}")).await.status(), StatusCode::OK);
    assert_eq!(error_code(api.delete(&format!("/v2/del/app/manifests/{d}")).await).await.1, "MANIFEST_UNKNOWN");
}
