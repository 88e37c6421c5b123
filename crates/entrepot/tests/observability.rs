//! Observability of a real `entrepot serve`: `/metrics` in Prometheus text format with bounded labels,
//! `/healthz` and `/readyz` (503 naming the component when blob storage breaks), request ids, JSON logs
//! with the request id on every line of a request and no secret in them; and `entrepot config check` /
//! `config print` as an operator runs them.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::{Server, entrepot_bin};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

async fn push_image(http: &Client, base: &str, repo: &str, tag: &str) -> Vec<u8> {
    let config = b"{\"architecture\":\"amd64\"}".to_vec();
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={}", sha256(&config)))
        .body(config.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": []
    })
    .to_string()
    .into_bytes();
    let r = http
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::CREATED);
    manifest
}

/// `name{labels} value` lines of a metrics page, by series.
fn samples(page: &str) -> std::collections::HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {l:?}"));
            (series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("value in {l:?}")))
        })
        .collect()
}

#[tokio::test]
async fn metrics_health_and_request_ids() {
    let server = Server::start();
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());

    let r = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["status"], "ready");

    let manifest = push_image(&http, &base, "team/app", "1.0").await;
    for _ in 0..3 {
        let r = http.get(format!("{base}/v2/team/app/manifests/1.0")).header("accept", OCI_MANIFEST).send().await;
        assert_eq!(r.expect("GET").status(), StatusCode::OK);
    }
    let r = http.get(format!("{base}/v2/team/app/manifests/missing")).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http.get(format!("{base}/some/random/path/12345")).send().await.expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Request ids: generated, or the client's when well-formed.
    let r = http.get(format!("{base}/v2/")).send().await.expect("GET");
    let id = r.headers()["x-request-id"].to_str().expect("ascii").to_string();
    assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let r = http.get(format!("{base}/v2/")).header("x-request-id", "client-id.42").send().await.expect("GET");
    assert_eq!(r.headers()["x-request-id"], "client-id.42");
    let r = http.get(format!("{base}/v2/")).header("x-request-id", "no spaces allowed").send().await.expect("GET");
    assert_ne!(r.headers()["x-request-id"], "no spaces allowed");

    let r = http.get(format!("{base}/metrics")).send().await.expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let page = r.text().await.expect("text");
    let s = samples(&page);
    let get = |k: &str| s.get(k).copied().unwrap_or_else(|| panic!("no {k} in\n{page}"));
    assert_eq!(get("entrepot_http_requests_total{route=\"put_manifest\",method=\"PUT\",status=\"201\"}"), 1.0);
    assert_eq!(get("entrepot_http_requests_total{route=\"get_manifest\",method=\"GET\",status=\"200\"}"), 3.0);
    assert_eq!(get("entrepot_http_requests_total{route=\"get_manifest\",method=\"GET\",status=\"404\"}"), 1.0);
    assert_eq!(get("entrepot_http_requests_total{route=\"start_upload\",method=\"POST\",status=\"201\"}"), 1.0);
    assert_eq!(get("entrepot_http_requests_total{route=\"unknown\",method=\"GET\",status=\"404\"}"), 1.0);
    assert_eq!(get("entrepot_http_requests_total{route=\"healthz\",method=\"GET\",status=\"200\"}"), 1.0);
    assert_eq!(get("entrepot_http_request_duration_seconds_count{route=\"get_manifest\",method=\"GET\"}"), 4.0);
    assert_eq!(
        get("entrepot_http_request_duration_seconds_bucket{route=\"get_manifest\",method=\"GET\",le=\"+Inf\"}"),
        4.0
    );
    // Three manifests, plus the 404's error body.
    assert!(get("entrepot_http_response_bytes_total{route=\"get_manifest\"}") as usize > 3 * manifest.len());
    assert_eq!(get("entrepot_http_request_bytes_total{route=\"put_manifest\"}") as usize, manifest.len());
    assert_eq!(get("entrepot_uploads_in_flight"), 0.0);
    assert_eq!(get("entrepot_http_requests_in_flight"), 1.0, "this scrape");
    assert_eq!(get("entrepot_gc_runs_total"), 0.0);
    assert_eq!(get("entrepot_webhook_deliveries_total{outcome=\"delivered\"}"), 0.0);
    assert!(!page.contains("team/app") && !page.contains("/some/random"), "labels never carry paths or names");
}

#[tokio::test]
async fn readyz_names_broken_storage() {
    let server = Server::start();
    if !server.managed() {
        return;
    }
    let (http, base) = (support::http_client(), server.url());
    let blobs = server.data_dir().join("blobs");
    let aside = server.data_dir().join("blobs.aside");
    // A file where the blob directory should be: stat fails with ENOTDIR (root ignores permissions).
    std::fs::rename(&blobs, &aside).expect("move blobs aside");
    std::fs::write(&blobs, b"not a directory").expect("write");
    let r = http.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["component"], "storage", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| !r.contains(&server.data_dir().display().to_string())), "{body}");
    let r = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), StatusCode::OK, "alive while not ready");

    std::fs::remove_file(&blobs).expect("remove");
    std::fs::rename(&aside, &blobs).expect("restore");
    let r = http.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_no_secret() {
    let data = tempfile::tempdir().expect("tempdir");
    let log_path = data.path().join("stderr.log");
    let mut child = Command::new(entrepot_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log", "info,entrepot_server=debug"])
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
    let http = support::http_client();
    let r = http
        .get(format!("http://{addr}/v2/_catalog?n=5&password=hunter2&token=tok-secret"))
        .header("x-request-id", "trace-abc-1")
        .header("authorization", "Basic dXNlcjpodW50ZXIy")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(format!("http://{addr}/v2/nope/manifests/x")).header("x-request-id", "trace-abc-2").send().await;
    assert_eq!(r.expect("GET").status(), StatusCode::NOT_FOUND);
    // The access line is written when the response ends; give it a moment, then stop the server.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log_path).expect("log");
    for secret in ["hunter2", "tok-secret", "dXNlcjpodW50ZXIy"] {
        assert!(!text.contains(secret), "{secret} logged:\n{text}");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let of = |id: &str| lines.iter().filter(|l| l["request_id"] == id).cloned().collect::<Vec<_>>();
    let first = of("trace-abc-1");
    assert!(first.len() >= 2, "the handler's debug line and the access line: {first:#?}\n{text}");
    let access = first.iter().find(|l| l["target"] == "entrepot::access").expect("access line");
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/v2/_catalog");
    assert_eq!(access["query"], "n=5&password=REDACTED&token=REDACTED");
    assert_eq!(access["status"], 200);
    assert_eq!(access["route"], "catalog");
    assert!(access["bytes_out"].as_u64().is_some_and(|n| n > 0), "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
    assert!(access["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:")), "{access}");
    assert!(access["time"].as_str().is_some());
    let second = of("trace-abc-2");
    assert!(second.iter().any(|l| l["target"] == "entrepot::access" && l["status"] == 404), "{second:#?}");
    // Every line logged inside a request carries its id.
    for l in lines.iter().filter(|l| l["target"] == "entrepot::access") {
        assert!(l["request_id"].as_str().is_some(), "{l}");
    }
}

fn entrepot(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(entrepot_bin());
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ENTREPOT_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run entrepot");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_lists_every_problem_precisely() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"
listen = "x"
lisen = "127.0.0.1:1"
max_blob_bytes = "big"
log_format = "xml"
upload_expiry_secs = 0

[[webhooks]]
url = "ftp://example"
events = ["push", "pushed"]
max_attempts = 0

[[webhooks]]
url = "http://127.0.0.1:9/"
secrett = "typo"
"#,
    )
    .expect("write");
    let (code, out, err) = entrepot(&["config", "check", "--config", "bad.toml"], &[], dir.path());
    assert_eq!(code, 2, "{out}{err}");
    for expected in [
        "bad.toml: lisen: unknown field `lisen`",
        "bad.toml: max_blob_bytes: invalid type: string \"big\", expected u64",
        "bad.toml: webhooks[1]: unknown field `secrett`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    // With the file's syntax right, the values are checked, all of them at once.
    let text = std::fs::read_to_string(dir.path().join("bad.toml")).expect("read");
    let text: String = text
        .lines()
        .filter(|l| !l.contains("lisen") && !l.contains("big") && !l.contains("secrett"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("bad.toml"), text).expect("write");
    let (code, _, err) = entrepot(&["config", "check", "--config", "bad.toml"], &[], dir.path());
    assert_eq!(code, 2);
    for expected in [
        "listen: expected ADDR:PORT (e.g. 127.0.0.1:5000, [::]:5000), got 'x'",
        "log_format: expected 'text' or 'json', got 'xml'",
        "upload_expiry_secs: expected a number of seconds greater than 0, got 0",
        "webhooks[0].url: expected http://HOST[:PORT]/PATH, got 'ftp://example'",
        "webhooks[0].events[1]: expected one of push, pull, delete, gc, got 'pushed'",
        "webhooks[0].max_attempts: expected at least 1, got 0",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("6 configuration problems"), "{err}");

    // The environment is checked too; and `serve` refuses to start with the same message.
    let (code, _, err) = entrepot(&["config", "check"], &[("ENTREPOT_LISTEN", "nowhere")], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("listen: expected ADDR:PORT"), "{err}");
    let (code, _, err) = entrepot(&["serve", "--log-format", "yaml"], &[], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("log_format: expected 'text' or 'json', got 'yaml'"), "{err}");

    let (code, out, err) = entrepot(&["config", "check"], &[], dir.path());
    assert_eq!((code, out.trim()), (0, "configuration OK"), "{err}");
}

#[test]
fn config_print_shows_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("entrepot.toml"),
        r#"
listen = "127.0.0.1:7000"
max_manifest_bytes = 1000
log_format = "json"

[[webhooks]]
name = "ci"
url = "http://robot:url-password@127.0.0.1:9/hook"
secret = "hmac-secret-value"
events = ["push"]
"#,
    )
    .expect("write");
    let (code, out, err) = entrepot(
        &["config", "print", "--config", "entrepot.toml", "--max-manifest-bytes", "2000"],
        &[("ENTREPOT_LISTEN", "127.0.0.1:7001"), ("ENTREPOT_LOG", "debug")],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hmac-secret-value") && !out.contains("url-password"), "secret printed:\n{out}");
    let printed: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(printed["listen"].as_str(), Some("127.0.0.1:7001"), "env beats the file");
    assert_eq!(printed["max_manifest_bytes"].as_integer(), Some(2000), "flags beat the env and the file");
    assert_eq!(printed["log"].as_str(), Some("debug"));
    assert_eq!(printed["log_format"].as_str(), Some("json"), "from the file");
    assert_eq!(printed["upload_expiry_secs"].as_integer(), Some(86400), "defaults are shown");
    assert_eq!(printed["data_dir"].as_str(), Some("./entrepot-data"));
    let hook = &printed["webhooks"].as_array().expect("webhooks")[0];
    assert_eq!(hook["secret"].as_str(), Some("<redacted>"));
    assert_eq!(hook["max_attempts"].as_integer(), Some(12), "the webhook's defaults are shown");
    assert_eq!(hook["events"].as_array().map(Vec::len), Some(1));

    // What is printed is itself a valid configuration file.
    std::fs::write(dir.path().join("printed.toml"), &out).expect("write");
    let (code, out, err) = entrepot(&["config", "check", "--config", "printed.toml"], &[], dir.path());
    assert_eq!((code, out.trim()), (0, "configuration OK"), "{err}");
}
